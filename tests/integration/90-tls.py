#!/usr/bin/env python3
"""TLS on the mirror's listeners (issue 14).

- curl with --cacert: /v2/ 200 over TLS 1.3, and over 1.2 when forced; ALPN http/1.1; no
  session ticket; TLS 1.1 refused; without the CA verification fails.
- client_ca_file: no client certificate, or one from another CA, is refused in the handshake;
  the right one gets 200.
- containerd pulls with hosts.toml `ca` (TLS) and `ca` + `client` (mutual TLS); skopeo with
  --src-cert-dir.
- a node-tier mirror (plain HTTP on loopback) pulls through a cluster-tier mirror over mutual
  TLS; the cluster tier logs the node's certificate subject; without the client pair the node
  gets nothing.
- health_listen: plain /healthz, /readyz, /metrics without a certificate; /v2/ is 404 there.
- a TCP connection that sends nothing is closed within header_timeout; garbage instead of a
  ClientHello and plain HTTP are closed; handshakes are counted by result; max_connections
  holds.
- allow_clients without 127.0.0.0/8: closed at accept, no HTTP answer, counted.
- rotation: SIGHUP with new files presents the new certificate while a download in progress
  completes; a bad pair at SIGHUP keeps the old one with an ERROR; a change of the files is
  picked up without a signal; a bad pair at start exits 2 naming the file and the reason.
"""

import hashlib
import os
import re
import shutil
import signal
import socket
import ssl
import time

import rgmtest
from rgmtest import MANIFEST_ACCEPT, http

t = rgmtest.TAP(timeout=280)
ws = rgmtest.Workspace()

ca = rgmtest.make_ca(ws.path("ca"))
srv = rgmtest.make_cert(ca, ws.path("srv"), names=("127.0.0.1", "localhost"), cn="mirror")
node_cert = rgmtest.make_cert(ca, ws.path("node"), names=("node-1.test",), cn="node-1",
                              stem="client")
other_ca = rgmtest.make_ca(ws.path("other-ca"), cn="other CA")
evil = rgmtest.make_cert(other_ca, ws.path("evil"), names=("evil.test",), cn="evil",
                         stem="client")


def curl(url, *extra, timeout=30):
    return rgmtest.run(["curl", "-sS", "-v", "--noproxy", "*", "-o", ws.path("curl.out"),
                        "-w", "HTTPCODE=%{http_code}"] + list(extra) + [url],
                       timeout=timeout, check=False)


def code(r):
    return r.out.rpartition("HTTPCODE=")[2][:3]


class TLSMirror(rgmtest.Mirror):
    """A mirror with TLS on its listener and a plain health listener it is probed on."""

    def __init__(self, ws, tls, health=True, **kw):
        self.tls = tls
        self.health_port = rgmtest.free_port() if health else None
        super().__init__(ws, **kw)

    @property
    def url(self):
        return "https://%s" % self.host

    @property
    def health_url(self):
        return "http://127.0.0.1:%d" % self.health_port

    def command(self):
        cmd = super().command()
        cmd += ["--tls-cert", self.tls["cert"], "--tls-key", self.tls["key"]]
        if self.tls.get("client_ca"):
            cmd += ["--tls-client-ca", self.tls["client_ca"]]
        if self.health_port:
            cmd += ["--health-listen", "127.0.0.1:%d" % self.health_port]
        return cmd

    def _ready(self):
        if not self.proc.alive():
            raise rgmtest.ProcessExited("regmirror exited (rc %s)" % self.proc.p.returncode)
        st, _, _ = http("GET", self.health_url + "/readyz", timeout=2)
        return st == 200

    def hmetrics(self):
        st, _, b = http("GET", self.health_url + "/metrics")
        out = {}
        for line in b.decode(errors="replace").splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                out[k] = float(v)
        return out


def tls_ctx(cafile=ca.cert, cert=None, maxv=None):
    ctx = ssl.create_default_context(cafile=cafile)
    if cert:
        ctx.load_cert_chain(cert.chain, cert.key)
    if maxv:
        ctx.maximum_version = maxv
    return ctx


def peer_der(port, ctx=None):
    """The DER certificate a new handshake presents."""
    ctx = ctx or tls_ctx()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="127.0.0.1") as ss:
            return ss.getpeercert(binary_form=True)


def der_of(pem_path):
    with open(pem_path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def closed_within(port, limit, data=b""):
    """Seconds until the mirror closes a connection that sent data (and nothing after), the
    bytes it answered, or (None, bytes) when still open after limit."""
    s = socket.create_connection(("127.0.0.1", port), timeout=limit)
    got = b""
    t0 = time.monotonic()
    try:
        if data:
            s.sendall(data)
        while True:
            try:
                b = s.recv(4096)
            except socket.timeout:
                return None, got
            except ConnectionResetError:
                return time.monotonic() - t0, got
            if not b:
                return time.monotonic() - t0, got
            got += b
    finally:
        s.close()


# ------------------------------------------------------------------------------------
# upstream

up = rgmtest.Registry(ws)
img = rgmtest.make_image(ws, "library/app:v1", layers=[40_000, 600_000])
p_img = rgmtest.push(img, up)
big = rgmtest.make_image(ws, "library/big:v1", layers=[24_000_000])
p_big = rgmtest.push(big, up)
big_layer = big["layers"][0]["digest"]

# ------------------------------------------------------------------------------------
# 1. TLS, no client certificates

m1 = TLSMirror(ws, {"cert": srv.chain, "key": srv.key}, name="tls",
               config={"header_timeout": "2s", "max_connections": 6},
               args=["--registry", "docker.io=" + up.url])
r = curl(m1.url + "/v2/", "--cacert", ca.cert)
t.is_(code(r), "200", "curl --cacert: /v2/ 200 over TLS") or t.diag(r.out[-1500:])
t.like(r.out, r"SSL connection using TLSv1\.3", "TLS 1.3 by default")
t.like(r.out, r"ALPN: server accepted http/1\.1", "ALPN http/1.1")
r = curl("https://localhost:%d/v2/" % m1.port, "--cacert", ca.cert, "--tlsv1.2",
         "--tls-max", "1.2")
t.is_(code(r), "200", "curl --tls-max 1.2: 200 (DNS SAN localhost)") or t.diag(r.out[-1500:])
t.like(r.out, r"SSL connection using TLSv1\.2 / ECDHE-\S+-(AES\d+-GCM|CHACHA20-POLY1305)",
       "TLS 1.2: an ECDHE AEAD suite")
r = curl(m1.url + "/v2/", "--cacert", ca.cert, "--tlsv1.1", "--tls-max", "1.1")
t.ok(r.rc != 0 and code(r) != "200", "TLS 1.1 refused", diag=r.out[-600:])
r = curl(m1.url + "/v2/")
t.ok(r.rc == 60 and code(r) != "200", "without the CA: verification fails (curl 60)",
     diag=r.out[-600:])

# no session ticket (TLS 1.3 sends them after the handshake, so read an answer first)
with socket.create_connection(("127.0.0.1", m1.port), timeout=5) as s:
    with tls_ctx().wrap_socket(s, server_hostname="127.0.0.1") as ss:
        ss.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        ans = b""
        while True:
            b = ss.recv(4096)
            if not b:
                break
            ans += b
        t.ok(ans.startswith(b"HTTP/1.1 200"), "python ssl: 200")
        t.ok(not ss.session.has_ticket, "no session ticket issued")

# a manifest and a blob over TLS, through the cache
st, h, body = http("GET", m1.url + "/v2/library/app/manifests/v1", ca=ca.cert,
                   headers={"Accept": MANIFEST_ACCEPT})
t.is_(st, 200, "manifest over TLS")
lay = img["layers"][1]["digest"]
for i in range(2):
    st, h, body = http("GET", m1.url + "/v2/library/app/blobs/" + lay, ca=ca.cert)
    t.ok(st == 200 and "sha256:" + hashlib.sha256(body).hexdigest() == lay,
         "blob over TLS (%s), digest verified" % ("miss", "hit")[i])

# handshake limits
dt, got = closed_within(m1.port, 6)
t.ok(dt is not None and 1.5 <= dt <= 4.5 and got == b"",
     "TCP that sends nothing: closed within header_timeout (2s) with no answer (%s s)" % dt)
dt, got = closed_within(m1.port, 6, data=b"\x16\x03\x01\x00\x30" + os.urandom(48) * 4)
t.ok(dt is not None and dt < 1.5 and not got.startswith(b"HTTP"),
     "garbage instead of a ClientHello: closed at once (%s s)" % dt)
dt, got = closed_within(m1.port, 6, data=os.urandom(3000))
t.ok(dt is not None and dt < 1.5, "random bytes: closed at once")
dt, got = closed_within(m1.port, 6, data=b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
t.ok(dt is not None and dt < 1.5 and not got.startswith(b"HTTP"),
     "plain HTTP to the TLS port: closed, no HTTP answer")
t.ok(m1.alive(), "the mirror is still running")
r = curl(m1.url + "/v2/", "--cacert", ca.cert)
t.is_(code(r), "200", "and still serves")

# max_connections (6) holds with TLS: 6 silent connections, then one more is closed at once
held = [socket.create_connection(("127.0.0.1", m1.port), timeout=5) for _ in range(6)]
time.sleep(0.2)
dt, got = closed_within(m1.port, 1.5)
t.ok(dt is not None and dt < 1.0, "max_connections: the 7th connection is closed at once")
for s in held:
    s.close()
time.sleep(0.3)
r = curl(m1.url + "/v2/", "--cacert", ca.cert)
t.is_(code(r), "200", "served again once they are gone")

mm = m1.hmetrics()
hs = 'regmirror_tls_handshakes_total{result="%s"}'
hf = 'regmirror_tls_handshakes_total{result="failed",reason="%s"}'
t.ok(mm.get(hs % "ok", 0) >= 8, "metrics: handshakes ok counted (%s)" % mm.get(hs % "ok"))
t.ok(mm.get(hf % "timeout", 0) >= 1, "metrics: failed by timeout counted")
t.ok(mm.get(hf % "not_tls", 0) >= 1, "metrics: plain HTTP counted as not_tls")
t.ok(mm.get(hf % "version", 0) >= 1, "metrics: TLS 1.1 counted as version")
t.ok(mm.get(hf % "protocol", 0) >= 2, "metrics: garbage counted as protocol")
t.ok(mm.get('regmirror_connections_refused_total{reason="max_connections"}', 0) >= 1,
     "metrics: the refused connection counted")

# containerd with hosts.toml ca
closed = ws.closed_port()
hosts_ca = ws.unique("hosts-ca")
rgmtest.write_hosts_toml(hosts_ca, "docker.io", "http://127.0.0.1:%d" % closed, m1.url,
                         ca=ca.cert)
cd1 = rgmtest.Containerd(ws, name="cd-ca")
rc, out = cd1.fetch("docker.io/library/app:v1", hosts_ca)
t.is_(rc, 0, "containerd pulls through the HTTPS mirror (hosts.toml ca)") or t.diag(out[-1500:])

# ------------------------------------------------------------------------------------
# 2. mutual TLS: the cluster tier

cl = TLSMirror(ws, {"cert": srv.chain, "key": srv.key, "client_ca": ca.cert}, name="cluster",
               args=["--registry", "docker.io=" + up.url])
r = curl(cl.url + "/v2/", "--cacert", ca.cert)
t.ok(code(r) != "200" and r.rc != 0, "mTLS: no client certificate: refused",
     diag=r.out[-600:])
r = curl(cl.url + "/v2/", "--cacert", ca.cert, "--cert", evil.chain, "--key", evil.key)
t.ok(code(r) != "200" and r.rc != 0, "mTLS: a certificate from another CA: refused",
     diag=r.out[-600:])
r = curl(cl.url + "/v2/", "--cacert", ca.cert, "--cert", node_cert.chain, "--key",
         node_cert.key)
t.is_(code(r), "200", "mTLS: the right certificate: 200") or t.diag(r.out[-1500:])
mm = cl.hmetrics()
t.ok(mm.get(hf % "no_client_cert", 0) >= 1, "metrics: no_client_cert counted")
t.ok(mm.get(hf % "bad_client_cert", 0) >= 1, "metrics: bad_client_cert counted")

# health listener: plain, no certificate, probes only
for path, want in (("/healthz", 200), ("/readyz", 200), ("/metrics", 200), ("/v2/", 404),
                   ("/v2/library/app/manifests/v1", 404)):
    st, _, _ = http("GET", cl.health_url + path)
    t.is_(st, want, "health listener: GET %s -> %d without a client certificate" % (path, want))

# containerd with ca + client
hosts_m = ws.unique("hosts-mtls")
d = os.path.join(hosts_m, "docker.io")
os.makedirs(d)
with open(os.path.join(d, "hosts.toml"), "w") as f:
    f.write('server = "http://127.0.0.1:%d"\n\n[host."%s"]\n  capabilities = ["pull", "resolve"]\n'
            '  ca = "%s"\n  client = [["%s", "%s"]]\n'
            % (closed, cl.url, ca.cert, node_cert.chain, node_cert.key))
cd2 = rgmtest.Containerd(ws, name="cd-mtls")
rc, out = cd2.fetch("docker.io/library/app:v1", hosts_m)
t.is_(rc, 0, "containerd pulls through the mTLS mirror (hosts.toml ca + client)") \
    or t.diag(out[-1500:])

# skopeo --src-cert-dir: *.crt CAs, *.cert + *.key client pair
cdir = ws.mkdir("skopeo-certs")
shutil.copy(ca.cert, os.path.join(cdir, "ca.crt"))
shutil.copy(node_cert.chain, os.path.join(cdir, "client.cert"))
shutil.copy(node_cert.key, os.path.join(cdir, "client.key"))
env = dict(os.environ, REGISTRY_AUTH_FILE=ws.path("no-auth.json"))
for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
    env.pop(k, None)
out_dir = ws.path("skopeo-out")
r = rgmtest.run(["skopeo", "copy", "--quiet", "--src-cert-dir", cdir,
                 "docker://%s/library/app:v1" % cl.host, "dir:" + out_dir], timeout=90,
                check=False, env=env)
t.ok(r.rc == 0 and os.path.exists(os.path.join(out_dir, lay[7:])),
     "skopeo copy --src-cert-dir through the mTLS mirror", diag=r.out[-1500:])

# node tier (plain, loopback) -> cluster tier (mTLS)
node = rgmtest.Mirror(ws, name="node", config={"registries": {"docker.io": {
    "endpoint": cl.url, "mirror": True, "ca_file": ca.cert,
    "client_cert_file": node_cert.chain, "client_key_file": node_cert.key}}})
st, h, body = node.get("/v2/library/app/manifests/v1", headers={"Accept": MANIFEST_ACCEPT})
t.is_(st, 200, "node tier -> cluster tier over mTLS: manifest")
cfg_d = img["config"]
st, h, body = node.get("/v2/library/app/blobs/" + cfg_d)
t.ok(st == 200 and "sha256:" + hashlib.sha256(body).hexdigest() == cfg_d,
     "node tier -> cluster tier over mTLS: blob verified")
t.like(cl.log_text(), r"mod=tls msg=\"client=127\.0\.0\.1:\d+ handshake TLSv1\.3 \S+ "
       r"subject=/CN=node-1\"", "the cluster tier's log shows the node's certificate subject")
node_nocert = rgmtest.Mirror(ws, name="node-nocert", config={"registries": {"docker.io": {
    "endpoint": cl.url, "mirror": True, "ca_file": ca.cert}}})
st, h, body = node_nocert.get("/v2/library/app/manifests/v1",
                              headers={"Accept": MANIFEST_ACCEPT})
t.ok(st >= 500, "a node without the client pair gets nothing from the cluster tier (%d)" % st)

# ------------------------------------------------------------------------------------
# 3. allow_clients

ap = rgmtest.free_port()
am = rgmtest.Mirror(ws, name="allow", start=False, config={
    "allow_clients": ["10.0.0.0/8", "::1/128"],
    "listen": ["127.0.0.1:%d" % ap, "[::1]:%d" % ap]})
am.port = ap
am.proc = ws.spawn([rgmtest.RGM_BIN, "serve", "--storage", am.storage, "--config",
                    am.command()[am.command().index("--config") + 1]], am.log)
rgmtest.wait_for(lambda: "listening on [::1]" in am.log_text(), timeout=10,
                 what="allow mirror")
dt, got = closed_within(ap, 3, data=b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
t.ok(dt is not None and dt < 1.0 and got == b"",
     "allow_clients without 127.0.0.0/8: closed at accept, no HTTP answer")
st, _, b = http("GET", "http://[::1]:%d/metrics" % ap)
t.ok(st == 200 and b'regmirror_connections_refused_total{reason="allow_clients"} 1' in b,
     "allowed from ::1; the refusal counted in /metrics")
t.like(am.log_text(), r"client=127\.0\.0\.1:\d+ refused: not in allow_clients",
       "and logged")

# ------------------------------------------------------------------------------------
# 4. rotation

rot = ws.mkdir("rot")
cert_a = rgmtest.make_cert(ca, ws.path("rot-a"), cn="mirror-a")
cert_b = rgmtest.make_cert(ca, ws.path("rot-b"), cn="mirror-b")
cert_c = rgmtest.make_cert(ca, ws.path("rot-c"), cn="mirror-c")
live_cert = os.path.join(rot, "tls.crt")
live_key = os.path.join(rot, "tls.key")


def install(cert):
    """Replace the live pair the way a Secret volume does: new files, renamed in."""
    for src, dst in ((cert.chain, live_cert), (cert.key, live_key)):
        shutil.copy(src, dst + ".new")
        os.rename(dst + ".new", dst)


install(cert_a)
rm = TLSMirror(ws, {"cert": live_cert, "key": live_key}, name="rotate",
               env={"RGM_TLS_CHECK_INTERVAL_MS": "300"},
               args=["--registry", "docker.io=" + up.url])
t.is_(peer_der(rm.port), der_of(cert_a.cert), "rotation: certificate A served at start")
st, _, body = http("GET", rm.url + "/v2/library/big/blobs/" + big_layer, ca=ca.cert)
t.is_(st, 200, "rotation: the big blob cached")

# a download in progress across the rotation
s = socket.create_connection(("127.0.0.1", rm.port), timeout=10)
ss = tls_ctx().wrap_socket(s, server_hostname="127.0.0.1")
ss.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
ss.sendall(("GET /v2/library/big/blobs/%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            % big_layer).encode())
first = ss.recv(65536)
install(cert_b)
os.kill(rm.proc.pid, signal.SIGHUP)
rgmtest.wait_for(lambda: "SIGHUP: TLS files re-read" in rm.log_text(), timeout=5,
                 what="SIGHUP reload")
t.is_(peer_der(rm.port), der_of(cert_b.cert), "rotation: after SIGHUP a new handshake "
      "presents certificate B")
data = first
while True:
    b = ss.recv(1 << 20)
    if not b:
        break
    data += b
ss.close()
head, _, body = data.partition(b"\r\n\r\n")
t.ok(head.startswith(b"HTTP/1.1 200") and
     "sha256:" + hashlib.sha256(body).hexdigest() == big_layer,
     "rotation: the download in progress completed (%d bytes), digest verified" % len(body))

# a bad pair at SIGHUP: the old certificate stays
shutil.copy(cert_c.chain, live_cert)
shutil.copy(cert_a.key, live_key)
os.kill(rm.proc.pid, signal.SIGHUP)
# The 30 s stat check (short here) may see the half-copied pair first and say so on its own
# line; wait for the SIGHUP's.
rgmtest.wait_for(lambda: re.search(r"SIGHUP: tls: .*keeping the certificate in use",
                                   rm.log_text()), timeout=5, what="bad pair reported")
t.like(rm.log_text(), r"level=error mod=serve msg=\"SIGHUP: tls: .*tls\.key: .*"
       r"keeping the certificate in use", "bad pair at SIGHUP: an ERROR naming the file")
t.is_(peer_der(rm.port), der_of(cert_b.cert), "bad pair at SIGHUP: certificate B still served")

# a change of the files, no signal (the stat check; 300 ms in this test)
install(cert_c)
deadline = time.monotonic() + 5
while time.monotonic() < deadline and peer_der(rm.port) != der_of(cert_c.cert):
    time.sleep(0.2)
t.is_(peer_der(rm.port), der_of(cert_c.cert), "a change of the files is picked up by itself")

# a bad pair at start: exit 2, with the file and OpenSSL's reason
shutil.copy(cert_a.key, live_key)
r = rgmtest.run([rgmtest.RGM_BIN, "serve", "--listen", "127.0.0.1:0", "--storage",
                 ws.path("bad-start"), "--tls-cert", live_cert, "--tls-key", live_key],
                timeout=20, check=False)
t.is_(r.rc, 2, "a mismatched pair at start: exit 2")
t.like(r.out, r"tls\.key: .*key values mismatch", "with the file and the OpenSSL reason")
with open(ws.path("not-pem"), "w") as f:
    f.write("not a certificate\n")
r = rgmtest.run([rgmtest.RGM_BIN, "serve", "--listen", "127.0.0.1:0", "--storage",
                 ws.path("bad-start2"), "--tls-cert", ws.path("not-pem"), "--tls-key",
                 live_key], timeout=20, check=False)
t.ok(r.rc == 2 and "not-pem" in r.out, "a file that is not PEM at start: exit 2 naming it",
     diag=r.out[-500:])
r = rgmtest.run([rgmtest.RGM_BIN, "serve", "--listen", "127.0.0.1:0", "--storage",
                 ws.path("bad-start3"), "--tls-cert", live_cert], timeout=20, check=False)
t.ok(r.rc == 2 and "cert_file and key_file go together" in r.out,
     "--tls-cert without --tls-key: exit 2", diag=r.out[-500:])

for m in (m1, cl, node, node_nocert, rm):
    t.is_(m.stop(), 0, "%s stopped cleanly" % os.path.basename(m.dir))
am.stop()
t.done()
