#!/usr/bin/env python3
"""Upstream faults the real registry cannot produce (fakeup): chunked bodies, a cross-origin
307 after a Basic challenge (the client's Authorization must not follow), a body with the
wrong digest, 5xx / 429 / 404 relays, a stalled upstream (504 after upstream_timeout, the
mirror stays responsive) and an upstream that does not speak HTTP at all."""

import os
import socket
import threading
import time

import fakeup
import rgmtest
from rgmtest import MANIFEST_ACCEPT, sha256_digest

t = rgmtest.TAP(timeout=180)
ws = rgmtest.Workspace()
T0 = time.monotonic()


# ------------------------------------------------------------------------------------
# local helpers (candidates for rgmtest)

class GarbageServer:
    """Raw TCP server on 127.0.0.1: reads a little of each request, answers with bytes that
    are not HTTP, closes.  Daemon thread, stopped at cleanup."""

    JUNK = b"\x00\xff\xfeSSH-2.0-nope \x1b[31m garbage \x07\r\n\r\n" + bytes(range(256)) * 4

    def __init__(self, ws):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        ws.add_cleanup(self.stop)

    def _loop(self):
        while not self.stopping.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            try:
                c.settimeout(2)
                try:
                    c.recv(4096)
                except OSError:
                    pass
                c.sendall(self.JUNK)
            except OSError:
                pass
            finally:
                c.close()

    def stop(self):
        self.stopping.set()
        try:
            self.sock.close()
        except OSError:
            pass


def raw_get(m, path, headers=()):
    """GET over a raw socket with Connection: close; returns (status, headers dict,
    body bytes, announced length or None, chunked)."""
    req = "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n" % (path, m.host)
    for k, v in headers:
        req += "%s: %s\r\n" % (k, v)
    data = rgmtest.raw("127.0.0.1", m.port, (req + "\r\n").encode(), timeout=10)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        status = None
    hdrs = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    cl = int(hdrs["content-length"]) if "content-length" in hdrs else None
    chunked = "chunked" in hdrs.get("transfer-encoding", "").lower()
    return status, hdrs, body, cl, chunked


def blob_path(storage, digest):
    h = digest.split(":", 1)[1]
    return os.path.join(storage, "blobs", "sha256", h[:2], h)


def files_named(storage, hexd):
    out = []
    for root, _, files in os.walk(storage):
        out += [os.path.join(root, f) for f in files if hexd in f]
    return out


def err_code(body):
    import json
    try:
        return json.loads(body)["errors"][0]["code"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None


# ------------------------------------------------------------------------------------
# upstreams and the mirror

up = fakeup.FakeUpstream(name="up")                          # docker.io
upauth = fakeup.FakeUpstream(auth=fakeup.basic_auth({"alice": "s3cret"}), name="auth")
cdn = fakeup.FakeUpstream(name="cdn")                        # another origin
uperr = fakeup.FakeUpstream(name="err")
upslow = fakeup.FakeUpstream(name="slow")
junk = GarbageServer(ws)

m = rgmtest.Mirror(ws, config={
    "upstream_timeout": "2s",
    "registries": {
        "docker.io": {"endpoint": up.url},
        "auth.test": {"endpoint": upauth.url},
        "err.test": {"endpoint": uperr.url},
        # the same upstream under a second name: err.test's 429 closes its manifests (issue 12)
        "err2.test": {"endpoint": uperr.url},
        "slow.test": {"endpoint": upslow.url},
        "junk.test": {"endpoint": "http://127.0.0.1:%d" % junk.port},
        "down.test": {"endpoint": "http://127.0.0.1:%d" % ws.closed_port()},
    }})

# ------------------------------------------------------------------------------------
# chunked blob body

chunky = os.urandom(300_000)
dc = up.add_blob(chunky)
up.behave("/blobs/" + dc, chunked=True, chunk_size=7000)
st, h, b = m.get("/v2/library/chunky/blobs/" + dc)
t.ok(st == 200 and b == chunky, "chunked upstream body: 200 and the right bytes",
     diag=(st, dict(h), len(b)))
t.ok(os.path.exists(blob_path(m.storage, dc))
     and sha256_digest(open(blob_path(m.storage, dc), "rb").read()) == dc,
     "chunked body cached, verified")
st, h, b = m.get("/v2/library/chunky/blobs/" + dc)
t.ok(st == 200 and b == chunky and h.get("x-cache") == "HIT"
     and h.get("content-length") == str(len(chunky)),
     "second GET: HIT with Content-Length", diag=(st, dict(h)))
t.is_(up.count("GET", "/blobs/" + dc), 1, "upstream asked once")

# ------------------------------------------------------------------------------------
# 401 Basic → retry with the client's Authorization → 307 to another origin

redir = os.urandom(120_000)
dr = upauth.add_blob(redir)
cdn.add_blob(redir)
upauth.behave("/blobs/" + dr, redirect=cdn)
cred = rgmtest.basic_header("alice", "s3cret")
st, h, b = m.get("/v2/private/app/blobs/%s?ns=auth.test" % dr,
                 headers={"Authorization": cred})
t.ok(st == 200 and b == redir, "401 Basic, client credentials, 307 to another origin: "
     "200 and the right bytes", diag=(st, dict(h), b[:200]))
with_auth = [r for r in upauth.requests_for("/blobs/" + dr)
             if r.headers.get("authorization") == cred]
t.ok(with_auth, "the first origin got the client's Authorization (after its 401)",
     diag=[(r.method, r.headers.get("authorization")) for r in
           upauth.requests_for("/blobs/" + dr)])
cdn_reqs = cdn.requests_for("/blobs/" + dr)
t.ok(cdn_reqs, "the mirror followed the redirect to the other origin")
t.ok(cdn_reqs and not any("authorization" in r.headers for r in cdn_reqs),
     "no Authorization arrived at the other origin",
     diag=[r.headers for r in cdn_reqs])
t.ok(cred not in m.log_text() and "YWxpY2U6czNjcmV0" not in m.log_text(),
     "the credentials are not in the mirror's log")

# ------------------------------------------------------------------------------------
# a body whose digest is wrong

bad = os.urandom(400_000)
dbad = up.add_blob(bad)
up.behave("/blobs/" + dbad, corrupt=True, times=1)
st, hd, body, cl, chunked = raw_get(m, "/v2/library/bad/blobs/" + dbad)
if st == 200:
    if cl is not None:
        short = len(body) < cl
    else:
        short = not body.endswith(b"0\r\n\r\n")
    t.ok(short, "wrong digest: the client is cut short before the end",
         diag=(len(body), cl, chunked))
else:
    t.ok(st is not None and st >= 500, "wrong digest: error status %s" % st)
try:
    rgmtest.wait_for(lambda: "mismatch" in m.log_text(), timeout=10, what="mismatch log")
except TimeoutError:
    pass
t.like(m.log_text(), r"(?i)digest mismatch", "the mirror logs the digest mismatch")
time.sleep(0.2)
t.is_(files_named(m.storage, dbad[7:]), [], "nothing cached (no store or tmp file)")
st, h, b = m.get("/v2/library/bad/blobs/" + dbad)
t.ok(st == 200 and b == bad and h.get("x-cache") != "HIT",
     "second request goes upstream again and gets the good bytes", diag=(st, dict(h)))
t.is_(up.count("GET", "/blobs/" + dbad), 2, "upstream asked twice")

# ------------------------------------------------------------------------------------
# 5xx, 429, 404

e_img = uperr.add_image("library/e", "v1")
uperr.behave("/blobs/" + e_img["layers"][0], status=500)
uperr.behave("/manifests/v1", status=503)
uperr.behave("/manifests/busy", status=429, retry_after=17)
uperr.behave("/blobs/" + e_img["layers"][1], status=429, retry_after="23")

st, h, b = m.get("/v2/library/e/blobs/%s?ns=err.test" % e_img["layers"][0])
t.ok(st == 502 and h.get("x-cache"), "blob: upstream 500 → 502", diag=(st, dict(h), b[:200]))
st, h, b = m.get("/v2/library/e/manifests/v1?ns=err.test", headers={"Accept": MANIFEST_ACCEPT})
t.is_(st, 502, "manifest: upstream 503 → 502")
st, h, b = m.get("/v2/library/e/manifests/busy?ns=err.test",
                 headers={"Accept": MANIFEST_ACCEPT})
t.ok(st == 429 and err_code(b) == "TOOMANYREQUESTS" and h.get("retry-after") == "17",
     "manifest: upstream 429 → 429 TOOMANYREQUESTS, Retry-After relayed",
     diag=(st, dict(h), b[:200]))
st, h, b = m.get("/v2/library/e/blobs/%s?ns=err.test" % e_img["layers"][1])
t.ok(st == 429 and err_code(b) == "TOOMANYREQUESTS" and h.get("retry-after") == "23",
     "blob: upstream 429 → 429 TOOMANYREQUESTS, Retry-After relayed",
     diag=(st, dict(h), b[:200]))
missing = "sha256:" + "ab" * 32
st, h, b = m.get("/v2/library/e/blobs/%s?ns=err.test" % missing)
t.ok(st == 404 and err_code(b) == "BLOB_UNKNOWN", "blob: upstream 404 → 404 BLOB_UNKNOWN",
     diag=(st, b[:200]))
st, h, b = m.get("/v2/library/e/manifests/nope?ns=err2.test",
                 headers={"Accept": MANIFEST_ACCEPT})
t.ok(st == 404 and err_code(b) == "MANIFEST_UNKNOWN",
     "manifest: upstream 404 → 404 MANIFEST_UNKNOWN", diag=(st, b[:200]))
st, h, b = m.get("/v2/library/e/manifests/%s?ns=err2.test" % missing,
                 headers={"Accept": MANIFEST_ACCEPT})
t.ok(st == 404 and err_code(b) == "MANIFEST_UNKNOWN",
     "manifest by digest: upstream 404 → 404 MANIFEST_UNKNOWN", diag=(st, b[:200]))
t.is_(files_named(m.storage, e_img["layers"][0][7:]), [], "failed blob not cached")

# ------------------------------------------------------------------------------------
# a stalled upstream: 504 after upstream_timeout (2 s); the mirror stays responsive

s_img = upslow.add_image("library/s", "v1")
upslow.behave("/blobs/" + s_img["layers"][0], stall=12)
upslow.behave("/manifests/v1", stall=12)
results = {}


def stalled(key, path, headers=None):
    t0 = time.monotonic()
    try:
        st, h, b = m.get(path, headers=headers, timeout=20)
        results[key] = (st, time.monotonic() - t0, err_code(b))
    except Exception as e:   # noqa
        results[key] = (repr(e), time.monotonic() - t0, None)


ths = [threading.Thread(target=stalled, daemon=True,
                        args=("blob", "/v2/library/s/blobs/%s?ns=slow.test"
                              % s_img["layers"][0])),
       threading.Thread(target=stalled, daemon=True,
                        args=("manifest", "/v2/library/s/manifests/v1?ns=slow.test",
                              {"Accept": MANIFEST_ACCEPT}))]
for th in ths:
    th.start()
time.sleep(0.7)
t0 = time.monotonic()
st1, _, _ = m.get("/v2/", timeout=5)
st2, h2, b2 = m.get("/v2/library/chunky/blobs/" + dc, timeout=5)
el = time.monotonic() - t0
t.ok(st1 == 200 and st2 == 200 and b2 == chunky and el < 2.0,
     "while upstream requests stall, the mirror answers others at once (%.2f s)" % el,
     diag=(st1, st2, el))
for th in ths:
    th.join(15)
for key in ("blob", "manifest"):
    st, el, code = results.get(key, (None, None, None))
    t.ok(st == 504 and el is not None and 1.5 <= el <= 8,
         "%s from a stalled upstream: 504 after the upstream timeout (%s s)"
         % (key, None if el is None else "%.1f" % el), diag=results.get(key))

# ------------------------------------------------------------------------------------
# an upstream that does not speak HTTP

st, h, b = m.get("/v2/library/j/manifests/v1?ns=junk.test", headers={"Accept": MANIFEST_ACCEPT})
t.ok(st == 502 and h.get("x-cache"), "garbage upstream, manifest: 502", diag=(st, dict(h)))
st, h, b = m.get("/v2/library/j/blobs/%s?ns=junk.test" % missing)
t.is_(st, 502, "garbage upstream, blob: 502")
st, h, b = m.get("/v2/library/j/blobs/%s?ns=junk.test" % missing, method="HEAD")
t.is_(st, 502, "garbage upstream, HEAD blob: 502")
t.ok(junk.connections >= 3, "the garbage server was really asked (%d)" % junk.connections)
st, _, _ = m.get("/v2/")
t.ok(m.alive() and st == 200, "the mirror is alive and answering")

# ------------------------------------------------------------------------------------
# upstream connections are reused after HEADs and error answers, not only after GETs

reuse = fakeup.FakeUpstream(name="reuse")
m_reuse = rgmtest.Mirror(ws, args=["--registry", "docker.io=" + reuse.url], name="m-reuse")
heads = [reuse.add_blob(os.urandom(2000 + i)) for i in range(4)]
for dh in heads:
    st, h, _ = m_reuse.get("/v2/library/r/blobs/" + dh, method="HEAD")
t.ok(st == 200 and reuse.httpd.connections == 1,
     "4 HEADs in a row went over one upstream connection (%d)" % reuse.httpd.connections)
st404, _, b404 = m_reuse.get("/v2/library/r/blobs/sha256:" + "0" * 64)
t.ok(st404 == 404 and err_code(b404) == "BLOB_UNKNOWN", "and a 404 through the pool: relayed")
m_reuse.stop()

# ------------------------------------------------------------------------------------
# Docker Hub's rate-limit headers become gauges

rl = os.urandom(1000)
drl = up.add_blob(rl)
up.behave("/blobs/" + drl, headers={"RateLimit-Limit": "100;w=21600",
                                    "RateLimit-Remaining": "76;w=21600"})
st, _, b = m.get("/v2/library/rl/blobs/" + drl)
met = m.metrics()
t.ok(st == 200 and b == rl
     and met.get('regmirror_upstream_ratelimit_remaining{registry="docker.io"}') == 76.0
     and met.get('regmirror_upstream_ratelimit_limit{registry="docker.io"}') == 100.0,
     "RateLimit-Remaining/-Limit exported per registry",
     diag={k: v for k, v in met.items() if "ratelimit" in k})

# ------------------------------------------------------------------------------------
# a dead upstream is not hammered: after 3 failures in a row the mirror backs off


def upstream_errors(reg):
    return m.metrics().get(
        'regmirror_upstream_http_requests_total{registry="%s",status="error"}' % reg)


sts = [m.get("/v2/library/d/blobs/%s?ns=down.test" % missing)[0] for _ in range(3)]
t.is_(sts, [502, 502, 502], "dead upstream: 502 three times")
t.is_(upstream_errors("down.test"), 3.0, "three upstream connection attempts counted")
st, h, b = m.get("/v2/library/d/blobs/%s?ns=down.test" % missing)
t.ok(st == 502 and err_code(b) == "UNAVAILABLE", "backing off: still 502 UNAVAILABLE",
     diag=(st, b))
t.is_(upstream_errors("down.test"), 3.0, "backing off: no fourth connection attempt")
t.like(m.log_text(), r"registry down\.test: 3 failures in a row .*backing off",
       "the back-off is logged")
time.sleep(1.2)
st, h, b = m.get("/v2/library/d/blobs/%s?ns=down.test" % missing)
t.ok(st == 502 and upstream_errors("down.test") == 4.0,
     "after the back-off the upstream is tried again", diag=upstream_errors("down.test"))
t.diag("elapsed %.1f s" % (time.monotonic() - T0))
t.done()
