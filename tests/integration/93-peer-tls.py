#!/usr/bin/env python3
"""TLS among the replicas of a cluster tier (issue 14): cluster.peer_ca_file, peer_cert_file
and peer_key_file.

- two replicas serve mutual TLS (tls.client_ca_file) and list each other as https peers by
  address, with certificates that name only the Service (peer_server_name): the probes see
  both up, a blob owned by the other replica is forwarded over mutual TLS (its log
  names the forwarding replica's certificate subject), every byte right, one upstream GET;
- peer_cert_file without peer_key_file, and a mismatched pair, are refused at start (exit 2,
  the file and the reason).
"""

import hashlib
import http.client
import os
import re
import ssl

import rgmtest
from rgmtest import MANIFEST_ACCEPT, http as plain_http, sha256_digest

t = rgmtest.TAP(timeout=200)
ws = rgmtest.Workspace()

ca = rgmtest.make_ca(ws.path("ca"))
# No IP address in them: the peers are URLs with addresses (as peers_dns members are), the
# certificates name the Service, and peer_server_name says which name to check.
PEER_NAME = "regmirror-peers.test"
certs = [rgmtest.make_cert(ca, ws.path("r%d" % i), names=(PEER_NAME,), cn="replica-%d" % i)
         for i in range(2)]


def score(key, url):
    return int.from_bytes(hashlib.sha256((key + "\n" + url).encode()).digest()[:8], "big")


def owner(key, urls):
    return sorted(urls, key=lambda u: (-score(key, u), u))[0]


class Replica(rgmtest.Mirror):
    """HTTPS with client certificates required; probed on a plain health listener."""

    def __init__(self, ws, cert, **kw):
        self.cert = cert
        self.health_port = rgmtest.free_port()
        super().__init__(ws, **kw)

    @property
    def url(self):
        return "https://%s" % self.host

    def command(self):
        return super().command() + ["--health-listen", "127.0.0.1:%d" % self.health_port]

    def _ready(self):
        if not self.proc.alive():
            raise rgmtest.ProcessExited("regmirror exited (rc %s)" % self.proc.p.returncode)
        st, _, _ = plain_http("GET", "http://127.0.0.1:%d/readyz" % self.health_port, timeout=2)
        return st == 200

    def get(self, path, headers=None, method="GET", timeout=30):
        ctx = ssl.create_default_context(cafile=ca.cert)
        ctx.check_hostname = False  # the certificate names PEER_NAME, not 127.0.0.1
        ctx.load_cert_chain(self.cert.chain, self.cert.key)
        c = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=ctx)
        try:
            c.request(method, path, headers=dict(headers or {}))
            r = c.getresponse()
            return r.status, rgmtest.Headers(r.getheaders()), r.read()
        finally:
            c.close()

    def hmetric(self, name):
        st, _, b = plain_http("GET", "http://127.0.0.1:%d/metrics" % self.health_port)
        for line in b.decode(errors="replace").splitlines():
            if line.startswith(name + " "):
                return float(line.rpartition(" ")[2])
        return 0.0


up = rgmtest.Registry(ws, name="hub")
im = rgmtest.make_image(ws, "library/app:v1", layers=[3_000, 40_000, 90_000, 120_000])
rgmtest.push(im, up)

ports = [rgmtest.free_port() for _ in range(2)]
URLS = ["https://127.0.0.1:%d" % p for p in ports]


def config(i, **cluster):
    c = {"peers": URLS, "peer_ca_file": ca.cert, "peer_cert_file": certs[i].chain,
         "peer_key_file": certs[i].key, "peer_server_name": PEER_NAME}
    c.update(cluster)
    return {"registries": {"docker.io": {"endpoint": up.url, "tag_ttl": "1h"}},
            "tls": {"cert_file": certs[i].chain, "key_file": certs[i].key,
                    "client_ca_file": ca.cert},
            "cluster": {k: v for k, v in c.items() if v is not None}}


reps = []
for i in range(2):
    m = Replica(ws, certs[i], config=config(i), name="r%d" % i, start=False)
    m.port = ports[i]
    reps.append(m)
for m in reps:
    m.start()

ok = rgmtest.wait_for(lambda: all(m.hmetric('regmirror_cluster_peers{state="up"}') == 2
                                  for m in reps), timeout=20, what="both peers up")
t.ok(ok, "the replicas probe each other over mutual TLS, checking peer_server_name: 2 up on each")

blobs = [im["config"]] + [L["digest"] for L in im["layers"]]
far = [(d, i) for d in blobs for i in range(2) if owner(d, URLS) != URLS[i]]
t.ok(far, "some blob is owned by the other replica of the one asked (%d)" % len(far))
bad = []
for d, i in far:
    st, _, body = reps[i].get("/v2/library/app/blobs/%s" % d)
    if st != 200 or sha256_digest(body) != d:
        bad.append((d[:19], i, st))
t.is_(bad, [], "blobs asked of the non-owner: forwarded to the owner, every byte right")
fw = sum(m.hmetric('regmirror_cluster_requests_total{path="forwarded"}') for m in reps)
t.ok(fw >= len(far), "forwarded requests counted (%d)" % fw)
t.is_(sorted({up.count_requests("GET", "/blobs/" + d) for d, _ in far}), [1],
      "one upstream GET per forwarded blob")
logs = [m.log_text() for m in reps]
t.ok(any(re.search(r"subject=\S*CN ?= ?replica-%d" % (1 - i), logs[i]) for i in range(2)),
     "a replica's log names the other replica's certificate subject (the forward's handshake)")

# ---- refused at start
d = ws.mkdir("bad")
for label, cluster, want in (
        ("peer_cert_file without peer_key_file", {"peer_key_file": None},
         r"peer_cert_file and peer_key_file go together"),
        ("a mismatched pair", {"peer_key_file": certs[1].key}, r"cluster: peer: TLS client files: .*")):
    m = Replica(ws, certs[0], config=config(0, **cluster), name="bad", start=False)
    m.port = rgmtest.free_port()
    r = rgmtest.run(m.command(), timeout=20, check=False)
    t.ok(r.rc == 2 and re.search(want, r.out), "%s: exit 2 with the reason" % label,
         diag=(r.rc, r.out[-600:]))
# ---- without peer_server_name, the address is checked: the certificate does not name it
reps[0].stop()
m = Replica(ws, certs[0], config=config(0, peer_server_name=None), name="noname", start=False)
m.port = ports[0]
m.start()
mine = [d for d, i in far if i == 0]  # asked of replica 0, owned by replica 1
# Until the restarted replica has a view of its peer it serves locally: keep asking (each poll
# asks the blobs the peer owns) until a forward or a probe has met the refused certificate.
# The blobs' owners follow the ports, so in some runs replica 1 owns none of them (mine is
# empty): then the probes alone mark the peer down.


def peer_down():
    for d in mine:
        m.get("/v2/library/app/blobs/%s" % d)
    return m.hmetric('regmirror_cluster_peers{state="up"}') == 1.0


try:
    down = rgmtest.wait_for(peer_down, timeout=60, interval=0.5, what="the peer marked down")
except TimeoutError:
    down = False
t.ok(down, "without peer_server_name the peer's certificate (no address in it) is "
     "refused: the peer is down", diag=(len(mine), m.log_text()[-1500:]))
m.stop()
reps[1].stop()

t.done()
