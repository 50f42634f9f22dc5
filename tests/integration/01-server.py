#!/usr/bin/env python3
"""01-server: the real binary's HTTP front end, driven with curl and raw sockets.

No real upstream is needed: docker.io points at a closed loopback port, and a fakeup
upstream ("fake.example") serves a small image and two big throttled blobs (the only way to
have a response in flight long enough for the SIGTERM checks).

Checks: /v2/ (curl), every route and error code (OCI JSON bodies, X-Cache), write methods,
name/digest/tag validation, request limits (414, 431, body on GET, malformed request line),
registry selection (403 DENIED, --allow-any-registry), keep-alive and pipelining, a request
split byte by byte, slowloris (header_timeout), 1000 idle connections, max_connections,
SIGTERM with a response in flight (completes / is cut after shutdown_timeout), SIGHUP log
reopening, config and flag errors (exit 2), the access log's fields and that Authorization
never reaches the log or the store.
"""

import hashlib
import json
import os
import re
import resource
import select
import signal
import socket
import threading
import time

import fakeup
import rgmtest
from rgmtest import Headers, http, run, wait_for

t = rgmtest.TAP(timeout=240)
ws = rgmtest.Workspace()
T0 = time.monotonic()

CLOSED = ws.closed_port()
SECRET = "SECRET-TOKEN-123"
XCACHE = ("HIT", "MISS", "JOIN", "STALE")

up = fakeup.FakeUpstream()
img = up.add_image("lib/app", "1", layers=(b"layer-one" * 100, b"layer-two" * 50))
BIG1 = os.urandom(1_000_000)   # SIGTERM: completes within shutdown_timeout
BIG2 = os.urandom(1_000_000)   # SIGTERM: cut after shutdown_timeout
D1 = up.add_blob(BIG1)
D2 = up.add_blob(BIG2)
up.behave("/blobs/" + D1, throttle=300_000)
up.behave("/blobs/" + D2, throttle=150_000)


def config(**extra):
    """Only loopback registries: nothing can reach the internet, even by mistake."""
    c = {"registries": {"docker.io": {"endpoint": "http://127.0.0.1:%d" % CLOSED},
                        "fake.example": {"endpoint": up.url}}}
    c.update(extra)
    return c


def oci_code(body):
    """The first OCI error code of body, or None when it is not an OCI error body."""
    try:
        j = json.loads(body)
        e = j["errors"][0]
        if not isinstance(e.get("message"), str):
            return None
        return e["code"]
    except Exception:
        return None


# --------------------------------------------------------------------------------------
# raw-socket helpers

class RawConn:
    """One client connection; parses responses with Content-Length framing."""

    def __init__(self, port, timeout=5.0, nodelay=False):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if nodelay:
            self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False

    def send(self, data):
        self.s.sendall(data)

    def _fill(self):
        try:
            d = self.s.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            d = b""
        if not d:
            self.eof = True
        self.buf += d
        return bool(d)

    def response(self, head=False):
        """(status, Headers, body) of the next response; None if the peer closed first.
        Raises socket.timeout on silence."""
        while b"\r\n\r\n" not in self.buf:
            if self.eof or not self._fill():
                return None
        hb, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = hb.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        h = Headers([(k.strip(), v.strip()) for k, _, v in
                     (ln.partition(":") for ln in lines[1:])])
        if "chunked" in h.get("transfer-encoding", ""):
            raise RuntimeError("chunked response not expected here")
        n = 0 if head else int(h.get("content-length", "0"))
        while len(self.buf) < n:
            if self.eof or not self._fill():
                break
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, h, body

    def closed_within(self, seconds):
        """True when the peer closes (EOF or reset) within seconds; bytes go to buf."""
        end = time.monotonic() + seconds
        while not self.eof and time.monotonic() < end:
            self.s.settimeout(max(0.01, end - time.monotonic()))
            try:
                self._fill()
            except socket.timeout:
                break
        return self.eof

    def close(self):
        self.s.close()


def raw_exchange(port, data, timeout=3.0):
    """Send data on a new connection; return (parsed first response or None, closed?)."""
    c = RawConn(port, timeout=timeout)
    try:
        c.send(data)
        try:
            r = c.response()
        except socket.timeout:
            r = None
        closed = c.closed_within(timeout)
        return r, closed
    finally:
        c.close()


def req(method, path, extra=b""):
    return (b"%s %s HTTP/1.1\r\nHost: mirror\r\n" % (method.encode(), path.encode())) + \
        extra + b"\r\n"


def access_lines(text):
    """The access-log lines of a log text, each as {key: value} (quotes removed)."""
    out = []
    for line in text.splitlines():
        if "mod=access" not in line:
            continue
        kv = {}
        for m in re.finditer(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)', line):
            v = m.group(2)
            if v.startswith('"'):
                v = v[1:-1]
            kv[m.group(1)] = v
        kv["_line"] = line
        out.append(kv)
    return out


xcache_missing = []   # /v2 responses from the router without X-Cache


# distribution-spec v1.1, "Error Codes": a 4XX JSON body's code MUST be one of these
SPEC_CODES = {"BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID",
              "MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "NAME_INVALID",
              "NAME_UNKNOWN", "SIZE_INVALID", "UNAUTHORIZED", "DENIED", "UNSUPPORTED",
              "TOOMANYREQUESTS"}
codes_seen = []   # (status, code, name) of every error answer checked here


def check_error(st, h, body, want_status, want_code, name, v2=True):
    codes_seen.append((st, oci_code(body), name))
    ok = t.ok(st == want_status and oci_code(body) == want_code, name,
              diag="got %r %r, want %d %s" % (st, body[:200], want_status, want_code))
    if v2 and h is not None and h.get("x-cache") not in XCACHE:
        xcache_missing.append((name, st, h.get("x-cache")))
    return ok


# ======================================================================================
# the main mirror: routes, errors, limits, curl

m = rgmtest.Mirror(ws, config=config(), args=["--log-level", "debug"])
U = m.url
t.diag("main mirror on %s" % U)

env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
r = run(["curl", "-sS", "-i", "--noproxy", "*", "--max-time", "10", U + "/v2/"], env=env,
        check=False)
head, _, body = r.out.replace("\r\n", "\n").partition("\n\n")
t.ok(r.rc == 0 and head.startswith("HTTP/1.1 200"), "curl -i /v2/: 200", diag=r.out)
t.ok(re.search(r"(?im)^docker-distribution-api-version: registry/2\.0$", head),
     "curl: Docker-Distribution-Api-Version: registry/2.0", diag=head)
t.is_(body, "{}", "curl: body is {}")
t.ok(re.search(r"(?im)^x-cache: (HIT|MISS|JOIN|STALE)$", head), "curl: X-Cache on /v2/",
     diag=head)
t.ok(re.search(r"(?im)^content-type: application/json", head), "curl: JSON content type",
     diag=head)

# curl reuses one connection for three URLs: keep-alive works for a real client
r = run(["curl", "-sS", "--noproxy", "*", "--max-time", "10", "-o", "/dev/null", "-o",
         "/dev/null", "-o", "/dev/null", "-w", "%{http_code} %{num_connects}\\n",
         U + "/v2/", U + "/healthz", U + "/v2/library/app/manifests/-bad"], env=env,
        check=False)
t.is_(r.out.split("\n")[:3], ["200 1", "200 0", "404 0"],
      "curl: three requests over one kept-alive connection")

r = run(["curl", "-sS", "--noproxy", "*", "--max-time", "10", "-X", "DELETE", "-w",
         "\\n%{http_code}", U + "/v2/library/app/manifests/1"], env=env, check=False)
cbody, _, ccode = r.out.rpartition("\n")
t.ok(ccode == "405" and oci_code(cbody) == "UNSUPPORTED", "curl -X DELETE: 405 UNSUPPORTED",
     diag=r.out)

st, h, b = m.get("/v2/", method="HEAD")
t.ok(st == 200 and b == b"" and h.get("content-length") == "2", "HEAD /v2/: 200, no body",
     diag=(st, dict(h)))
st, h, b = m.get("/v2")
t.ok(st == 200 and b == b"{}", "GET /v2 (no slash): 200 {}", diag=(st, b))

# -- unknown paths → 404 UNSUPPORTED (OCI error body; distribution answers a bare 404 and the
# spec has no NOT_FOUND; UNSUPPORTED is also what a registry without the referrers API gets)
for p in ("/", "/foo", "/v2/_catalog", "/v2/library/app", "/v2/library/app/tags",
          "/v2/library/app/blobs/uploads/", "/v2/library/app/blobs", "/v3/",
          "/v2x/library/app/manifests/1"):
    st, h, b = m.get(p)
    check_error(st, h, b, 404, "UNSUPPORTED", "unknown path %s: 404 UNSUPPORTED" % p,
                v2=p.startswith("/v2"))

# -- health endpoints
st, h, b = m.get("/healthz")
t.ok(st == 200, "/healthz 200", diag=st)
st, h, b = m.get("/readyz")
t.ok(st == 200, "/readyz 200", diag=(st, b))
st, h, b = m.get("/metrics")
t.ok(st == 200 and b"regmirror_requests_total" in b, "/metrics 200 Prometheus text",
     diag=(st, b[:200]))

# -- write methods → 405 UNSUPPORTED
for meth in ("PUT", "POST", "PATCH", "DELETE"):
    for p in ("/v2/", "/v2/library/app/manifests/1", "/v2/library/app/blobs/uploads/",
              "/v2/library/app/blobs/" + D1):
        st, h, b = m.get(p, method=meth)
        check_error(st, h, b, 405, "UNSUPPORTED", "%s %s: 405 UNSUPPORTED" % (meth, p))
st, h, b = http("PUT", U + "/v2/library/app/manifests/1", body=b'{"x":1}',
                headers={"Content-Type": "application/json"})
check_error(st, h, b, 405, "UNSUPPORTED", "PUT with a body: 405 UNSUPPORTED", v2=False)
conn_level = [("PUT with a body", h)]

# -- names → 400 NAME_INVALID
HEX = hashlib.sha256(b"x").hexdigest()
for name in ("Library/app", "library/APP", "a//b", "../x", "a/../b", "./a", "a/", "-a",
             "a" * 300, "/".join(["abcdefghij"] * 28), "a%2fb", "a_-b"):
    for route in ("/manifests/latest", "/blobs/sha256:" + HEX, "/tags/list"):
        p = "/v2/" + name + route
        st, h, b = m.get(p)
        if st == 404 and name.startswith("..") and oci_code(b) == "UNSUPPORTED":
            # "/v2/../x/..." could also be read as a non-route; 404 refuses it too
            t.ok(True, "name %r%s: refused (404 UNSUPPORTED)" % (name[:40], route))
            continue
        check_error(st, h, b, 400, "NAME_INVALID",
                    "name %r%s: 400 NAME_INVALID" % (name[:40], route))

# -- digests → 400 DIGEST_INVALID
BAD_DIGESTS = ["sha256:totallywrong", "..%2Fx", "..", "sha256:..%2F..%2Fx",
               "sha256:" + HEX.upper(), "sha256:" + HEX[:63], "sha256:" + HEX + "0",
               "sha256:", "md5:d41d8cd98f00b204e9800998ecf8427e", "sha512:" + HEX,
               "sha1:" + HEX[:40], "SHA256:" + HEX, "sha256:" + HEX[:60] + "zzzz",
               "sha256:%20" + HEX]
for d in BAD_DIGESTS:
    st, h, b = m.get("/v2/library/app/blobs/" + d)
    check_error(st, h, b, 400, "DIGEST_INVALID", "blob digest %r: 400 DIGEST_INVALID" % d[:50])
for d in ("sha256:totallywrong", "sha256:" + HEX.upper(), "md5:abc", "sha256:" + HEX[:63]):
    st, h, b = m.get("/v2/library/app/manifests/" + d)
    check_error(st, h, b, 400, "DIGEST_INVALID",
                "manifest digest %r: 400 DIGEST_INVALID" % d[:50])
# "../x" written with a real slash: either a bad digest or no route; never anything else
r, _ = raw_exchange(m.port, req("GET", "/v2/library/app/blobs/../x"))
t.ok(r is not None and (r[0], oci_code(r[2])) in ((400, "DIGEST_INVALID"), (404, "UNSUPPORTED")),
     "blob digest ../x (raw path): 400 DIGEST_INVALID or 404 UNSUPPORTED", diag=r)

# -- tags outside the grammar → 404 MANIFEST_UNKNOWN (no manifest can have them; the OCI
# conformance suite's ".INVALID_MANIFEST_NAME" wants 404; TAG_INVALID is no spec code)
for tag in ("", "-bad", ".x", "a" * 129, "a%20b", "tag!", "%2e%2e", "t~1",
            ".INVALID_MANIFEST_NAME"):
    for meth in ("GET", "HEAD"):
        st, h, b = m.get("/v2/library/app/manifests/" + tag, method=meth)
        if meth == "HEAD":
            t.is_(st, 404, "HEAD tag %r: 404" % tag[:40])
            continue
        check_error(st, h, b, 404, "MANIFEST_UNKNOWN", "tag %r: 404 MANIFEST_UNKNOWN" % tag[:40])
st, h, b = m.get("/v2/library/app/manifests/" + "a" * 128 + "?ns=docker.io")
t.ok(st != 400, "128-char tag is valid (not 400)", diag=(st, b))

# -- registry selection
st, h, b = m.get("/v2/library/app/manifests/1?ns=evil.example.com")
check_error(st, h, b, 403, "DENIED", "?ns=evil.example.com: 403 DENIED")
st, h, b = m.get("/v2/library/app/blobs/sha256:%s?ns=evil.example.com" % HEX)
check_error(st, h, b, 403, "DENIED", "blob ?ns=evil.example.com: 403 DENIED")
st, h, b = m.get("/v2/library/app/tags/list?ns=evil.example.com")
check_error(st, h, b, 403, "DENIED", "tags/list ?ns=evil.example.com: 403 DENIED")
NS_LOOP = "127.0.0.1:%d" % CLOSED     # not configured; with allow-any: refused connection
st, h, b = m.get("/v2/library/app/manifests/1?ns=" + NS_LOOP)
check_error(st, h, b, 403, "DENIED", "?ns=%s (not configured): 403 DENIED" % NS_LOOP)

# -- the real routes (fake.example = fakeup; docker.io = closed port)
st, h, b = m.get("/v2/lib/app/manifests/1?ns=fake.example",
                 headers={"Accept": rgmtest.MANIFEST_ACCEPT})
t.ok(st == 200 and b == img["manifest_bytes"] and h.get("docker-content-digest") ==
     img["manifest"], "GET manifest by tag via ?ns=fake.example: 200, same bytes",
     diag=(st, b[:200]))
t.is_(h.get("x-cache"), "MISS", "first manifest GET: X-Cache MISS")
st, h, b = m.get("/v2/fake.example/lib/app/manifests/" + img["manifest"],
                 headers={"Accept": rgmtest.MANIFEST_ACCEPT})
t.ok(st == 200 and b == img["manifest_bytes"], "manifest by digest via path prefix: 200",
     diag=(st, b[:200]))
t.is_(h.get("x-cache"), "HIT", "manifest by digest after the tag GET: X-Cache HIT")
layer = img["layers"][0]
st, h, b = m.get("/v2/lib/app/blobs/%s?ns=fake.example" % layer, method="HEAD")
t.ok(st == 200 and b == b"" and h.get("content-length") == "900",
     "HEAD blob: 200 with Content-Length", diag=(st, dict(h)))
if h.get("x-cache") not in XCACHE:
    xcache_missing.append(("HEAD blob", st, h.get("x-cache")))
st, h, b = m.get("/v2/lib/app/blobs/%s?ns=fake.example" % layer)
t.ok(st == 200 and rgmtest.sha256_digest(b) == layer, "GET blob: 200, right bytes",
     diag=(st, len(b)))
st, h, b = m.get("/v2/lib/app/blobs/%s?ns=fake.example" % layer, headers={"Range": "bytes=10-19"})
t.ok(st == 206 and b == (b"layer-one" * 100)[10:20], "GET blob Range: 206", diag=(st, b))
st, h, b = m.get("/v2/lib/app/blobs/sha256:%s?ns=fake.example" % HEX)
check_error(st, h, b, 404, "BLOB_UNKNOWN", "unknown blob: 404 BLOB_UNKNOWN")
st, h, b = m.get("/v2/lib/app/manifests/nope?ns=fake.example")
check_error(st, h, b, 404, "MANIFEST_UNKNOWN", "unknown tag: 404 MANIFEST_UNKNOWN")
for q in ("n=abc", "n=-1", "n=100001", "n="):
    st, h, b = m.get("/v2/lib/app/tags/list?ns=fake.example&" + q)
    check_error(st, h, b, 400, "UNSUPPORTED",
                "tags/list ?%s: 400 UNSUPPORTED (PAGINATION_NUMBER_INVALID is no spec code)" % q)
st, h, b = m.get("/v2/lib/app/tags/list?ns=fake.example", method="HEAD")
t.is_(st, 405, "HEAD tags/list: 405")
# upstream 4xx other than 401/403/404/429 keep their status, with a code of the spec's table
for ust, want in ((400, "UNSUPPORTED"), (405, "UNSUPPORTED"), (406, "UNSUPPORTED"),
                  (410, "MANIFEST_UNKNOWN"), (413, "UNSUPPORTED"), (451, "UNSUPPORTED")):
    up.behave("/manifests/st%d" % ust, status=ust)
    st, h, b = m.get("/v2/lib/app/manifests/st%d?ns=fake.example" % ust)
    check_error(st, h, b, ust, want, "upstream %d for a manifest: %d %s" % (ust, ust, want))
up.behave("/blobs/sha256:" + "e" * 64, status=410)
st, h, b = m.get("/v2/lib/app/blobs/sha256:%s?ns=fake.example" % ("e" * 64))
check_error(st, h, b, 410, "BLOB_UNKNOWN", "upstream 410 for a blob: 410 BLOB_UNKNOWN")
st, h, b = m.get("/v2/library/app/manifests/1")
t.ok(st in (502, 503, 504) and oci_code(b) is not None,
     "default registry unreachable: 502/503/504 with an OCI body", diag=(st, b))
if h.get("x-cache") not in XCACHE:
    xcache_missing.append(("upstream down", st, h.get("x-cache")))
st, h, b = m.get("/v2/library/app/tags/list")
t.ok(st in (502, 503, 504) and oci_code(b) is not None,
     "tags/list with the upstream down: 5xx OCI body", diag=(st, b))

# -- request limits (connection-level answers); max_url_length 4096 by default
def limit_check(data, want_status, want_code, name):
    r, closed = raw_exchange(m.port, data)
    if r is not None:
        codes_seen.append((r[0], oci_code(r[2]), name))
    good = r is not None and r[0] == want_status and oci_code(r[2]) == want_code
    t.ok(good, name, diag=r if r is None else (r[0], r[2][:200]))
    t.ok(closed, name + ": connection closed after it")
    if r is not None:
        conn_level.append((name, r[1]))
    return r


PFX = "/v2/library/app/manifests/"
r, _ = raw_exchange(m.port, req("GET", PFX + "a" * (4096 - len(PFX))))
t.ok(r is not None and r[0] == 404 and oci_code(r[2]) == "MANIFEST_UNKNOWN",
     "request target of exactly max_url_length (4096): not 414 (404 MANIFEST_UNKNOWN)",
     diag=r and r[:1])
limit_check(req("GET", PFX + "a" * (4097 - len(PFX))), 414, "UNSUPPORTED",
            "target of 4097 bytes: 414")
limit_check(req("GET", "/v2/library/app/manifests/" + "a" * 20000), 414, "UNSUPPORTED",
            "20 KB request target: 414")
limit_check(req("GET", "/v2/", b"X-Big: " + b"b" * 20000 + b"\r\n"), 431, "UNSUPPORTED",
            "20 KB header (> max_header_bytes 16KiB): 431")
limit_check(req("GET", "/v2/", b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 400) for i in range(50))),
            431, "UNSUPPORTED", "50 x 400-byte headers (20 KB total): 431")
many = b"".join(b"X-H%d: v\r\n" % i for i in range(63))   # + Host = 64 = max_headers
r, _ = raw_exchange(m.port, req("GET", "/v2/", many))
t.ok(r is not None and r[0] == 200, "64 header fields (= max_headers): 200", diag=r and r[:1])
limit_check(req("GET", "/v2/", many + b"X-One-More: v\r\n"), 431, "UNSUPPORTED",
            "65 header fields (> max_headers 64): 431")
limit_check(req("GET", "/v2/", b"Content-Length: 5\r\n") + b"hello", 400, "UNSUPPORTED",
            "GET with Content-Length: 5 and a body: 400")
limit_check(req("GET", "/v2/library/app/manifests/1",
                b"Transfer-Encoding: chunked\r\n") + b"5\r\nhello\r\n0\r\n\r\n",
            400, "UNSUPPORTED", "GET with a chunked body: 400")
for bad in (b"GARBAGE\r\n\r\n", b"GET /v2/ HTTP/9.9\r\nHost: x\r\n\r\n",
            b"GET\r\n\r\n", b"GET /v2/ HTTP/1.1 extra\r\nHost: x\r\n\r\n",
            b"G\x01T /v2/ HTTP/1.1\r\n\r\n"):
    r, closed = raw_exchange(m.port, bad)
    t.ok(r is not None and r[0] == 400 and oci_code(r[2]) == "UNSUPPORTED",
         "malformed request line %r: 400 UNSUPPORTED" % bad[:24],
         diag=r if r is None else (r[0], r[2][:200]))
    t.ok(closed, "malformed request line %r: connection closed" % bad[:24])

# every /v2 response carries X-Cache: those of the router...
t.ok(not xcache_missing, "every /v2 response of the router carries X-Cache",
     diag="\n".join("%s (status %s): X-Cache=%r" % x for x in xcache_missing))
# ... and the server's own answers to /v2 requests it refused before routing
nox = [name for name, hh in conn_level if hh.get("x-cache") not in XCACHE]
t.ok(not nox, "connection-level errors to /v2 requests (405 body, 414, 431, 400) carry X-Cache",
     diag="no X-Cache on: " + "; ".join(nox))

# -- keep-alive and pipelining over one raw socket
c = RawConn(m.port)
c.send(req("GET", "/v2/") + req("GET", "/v2/library/app/manifests/-bad") +
       req("GET", "/healthz"))
rs = [c.response() for _ in range(3)]
t.ok(all(rs), "pipelining: three responses to three requests in one send",
     diag=[x and x[0] for x in rs])
if all(rs):
    t.is_([x[0] for x in rs], [200, 404, 200], "pipelining: statuses in request order")
    t.ok(rs[0][2] == b"{}" and oci_code(rs[1][2]) == "MANIFEST_UNKNOWN" and rs[2][2] == b"ok\n",
         "pipelining: bodies in request order", diag=[x[2][:60] for x in rs])
    t.ok(all(x[1].get("connection", "").lower() == "keep-alive" for x in rs),
         "pipelining: Connection: keep-alive on each")
c.send(req("HEAD", "/v2/"))
r4 = c.response(head=True)
t.ok(r4 is not None and r4[0] == 200 and r4[2] == b"", "4th request on the same connection",
     diag=r4)
c.send(req("GET", "/v2/", b"Connection: close\r\n"))
r5 = c.response()
t.ok(r5 is not None and r5[0] == 200 and r5[1].get("connection") == "close",
     "Connection: close is honoured", diag=r5)
t.ok(c.closed_within(3), "server closes after Connection: close")
c.close()

# -- a request split byte by byte
c = RawConn(m.port, nodelay=True)
for i, ch in enumerate(req("GET", "/v2/library/app/manifests/-bad", b"X-A: b\r\n")):
    c.send(bytes([ch]))
    time.sleep(0.004)
r1 = c.response()
t.ok(r1 is not None and r1[0] == 404 and oci_code(r1[2]) == "MANIFEST_UNKNOWN",
     "request sent byte by byte: answered correctly", diag=r1)
c.send(req("GET", "/v2/"))
r2 = c.response()
t.ok(r2 is not None and r2[0] == 200 and r2[2] == b"{}",
     "byte-by-byte connection stays usable", diag=r2)
c.close()

# -- Authorization is never logged nor stored; the access log's fields
auth = {"Authorization": "Bearer " + SECRET}
st1, _, _ = m.get("/v2/", headers=auth)
st2, _, _ = m.get("/v2/lib/app/manifests/1?ns=fake.example", headers=auth)
st3, _, _ = m.get("/v2/lib/app/blobs/%s?ns=fake.example" % img["layers"][1], headers=auth)
st4, _, _ = m.get("/v2/library/secretcheck/manifests/1", headers=auth)
st5, _, _ = m.get("/v2/library/secretcheck/manifests/-bad", headers=auth)
t.ok((st1, st2, st3, st5) == (200, 200, 200, 404) and st4 >= 500,
     "requests with Authorization answered", diag=(st1, st2, st3, st4, st5))
time.sleep(0.3)
logtext = m.log_text()
t.ok(SECRET not in logtext, "Authorization value never in the log (debug level)",
     diag="\n".join(l for l in logtext.splitlines() if SECRET in l)[:2000])
leaked = []
for root, _, files in os.walk(m.storage):
    for fn in files:
        try:
            with open(os.path.join(root, fn), "rb") as f:
                if SECRET.encode() in f.read():
                    leaked.append(os.path.join(root, fn))
        except OSError:
            pass
t.ok(not leaked, "Authorization value never written to the store", diag=leaked)

acc = access_lines(logtext)
t.ok(any("/v2/library/secretcheck/manifests/1" == a.get("path") for a in acc),
     "the Authorization requests have access-log lines (the secret check means something)")
mine = [a for a in acc if a.get("path") == "/v2/library/secretcheck/manifests/-bad"]
t.is_(len(mine), 1, "one access line for one request")
if mine:
    a = mine[0]
    missing = [k for k in ("time", "method", "path", "status", "bytes", "dur_ms", "client",
                           "cache") if k not in a]
    t.ok(not missing, "access line has time method path status bytes dur_ms client cache",
         diag="missing %s in %s" % (missing, a["_line"]))
    t.like(a.get("time", ""), r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", "access: time ISO 8601")
    t.is_(a.get("method"), "GET", "access: method")
    t.is_(a.get("status"), "404", "access: status")
    t.is_(a.get("bytes"), str(len(json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message":
          "manifest unknown: no tag can be named so ([A-Za-z0-9_][A-Za-z0-9._-]{0,127})"}]}, separators=(",", ":")))),
          "access: bytes = body length")
    t.like(a.get("dur_ms", ""), r"^\d+(\.\d+)?$", "access: dur_ms is a number")
    t.like(a.get("client", ""), r"^127\.0\.0\.1:\d+$", "access: client address")
    t.ok(a.get("cache") in XCACHE + ("-",), "access: cache", diag=a.get("cache"))
blobline = [a for a in acc if ("/blobs/" + layer) in a.get("path", "")
            and a.get("status") == "200" and a.get("method") == "GET"]
t.ok(blobline and blobline[0].get("bytes") == "900",
     "access: bytes of a blob GET = blob size", diag=blobline[:1])

# ======================================================================================
# --allow-any-registry: an unconfigured ?ns= is not refused, unless it is loopback (no SSRF:
# 91-ssrf has the rest) and allow_upstream_networks does not name it

ma = rgmtest.Mirror(ws, config=config(allow_any_registry=True,
                                      allow_upstream_networks=["127.0.0.0/8"]), name="anyreg")
st, h, b = ma.get("/v2/library/app/manifests/1?ns=" + NS_LOOP)
t.ok(st != 403 and st >= 500 and oci_code(b) is not None,
     "--allow-any-registry: ?ns=%s is fetched (5xx: port closed), not 403" % NS_LOOP,
     diag=(st, b))
ma.stop()
ma2 = rgmtest.Mirror(ws, config=config(), args=["--allow-any-registry"], name="anyflag")
st, h, b = ma2.get("/v2/library/app/manifests/1?ns=" + NS_LOOP)
t.ok(st == 403 and oci_code(b) == "DENIED",
     "--allow-any-registry flag: a loopback ?ns= without allow_upstream_networks: 403",
     diag=(st, b))
ma2.stop()

# ======================================================================================
# slowloris: header_timeout 1s

ms = rgmtest.Mirror(ws, config=config(header_timeout="1s"), name="slowloris")
stop_normal = threading.Event()
normal = {"ok": 0, "bad": [], "maxdur": 0.0}


def normal_client():
    kc = RawConn(ms.port)
    n = 0
    while not stop_normal.is_set() and n < 40:
        n += 1
        t1 = time.monotonic()
        try:
            st, _, b = http("GET", ms.url + "/v2/", timeout=5)   # a new connection
            kc.send(req("GET", "/v2/"))                          # and a kept-alive one
            r = kc.response()
            good = st == 200 and b == b"{}" and r is not None and r[0] == 200
        except Exception as e:
            good = False
            normal["bad"].append(repr(e))
        normal["maxdur"] = max(normal["maxdur"], time.monotonic() - t1)
        if good:
            normal["ok"] += 1
        else:
            normal["bad"].append("request %d failed" % n)
        stop_normal.wait(0.2)
    kc.close()


nt = threading.Thread(target=normal_client, daemon=True)
nt.start()
sc = RawConn(ms.port, nodelay=True)
sc.send(b"GET /v2/ HTTP/1.1\r\nHost: mirror\r\nX-Slow: ")
tstart = time.monotonic()
cut_at = None
for i in range(20):           # at most 6 s of trickling
    try:
        sc.send(b"x")
    except (BrokenPipeError, ConnectionResetError):
        cut_at = time.monotonic() - tstart
        break
    if sc.closed_within(0.3):
        cut_at = time.monotonic() - tstart
        break
t.ok(cut_at is not None and 0.7 <= cut_at <= 2.5,
     "slowloris: trickling client cut off after ~1 s (header_timeout)", diag=cut_at)
if sc.buf:
    rr = sc.buf.split(b"\r\n\r\n", 1)
    t.ok(sc.buf.startswith(b"HTTP/1.1 408") and len(rr) == 2 and oci_code(rr[1]) == "UNSUPPORTED",
         "slowloris: answered 408 UNSUPPORTED before the close", diag=sc.buf[:300])
else:
    t.ok(True, "slowloris: closed without an answer")
sc.close()
# a kept-alive connection idle longer than header_timeout is not a slowloris
kc = RawConn(ms.port)
kc.send(req("GET", "/v2/"))
r1 = kc.response()
time.sleep(1.6)
kc.send(req("GET", "/v2/"))
r2 = kc.response()
t.ok(r1 and r2 and r1[0] == 200 and r2[0] == 200,
     "idle keep-alive longer than header_timeout keeps being served",
     diag=(r1 and r1[0], r2 and r2[0]))
kc.close()
stop_normal.set()
nt.join(10)
t.ok(normal["ok"] >= 5 and not normal["bad"] and normal["maxdur"] < 1.5,
     "slowloris: normal clients served meanwhile (%d requests, max %.2f s)"
     % (normal["ok"], normal["maxdur"]), diag=normal["bad"][:5])
ms.stop()

# ======================================================================================
# 1000 concurrent idle connections

N = 1000
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if hard != resource.RLIM_INFINITY and hard < N + 64:
    t.skip("1000 idle connections", "RLIMIT_NOFILE hard limit %d too low" % hard)
else:
    # Start the mirror the way CI shells often do (soft limit 1024): it should raise its
    # own soft limit to the hard one.
    mirror_soft = 1024 if hard == resource.RLIM_INFINITY or hard > 1024 else hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (mirror_soft, hard))
    try:
        mk = rgmtest.Mirror(ws, config=config(), name="thousand")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY
                                                    else max(soft, 65536), hard))
    with open("/proc/%d/limits" % mk.proc.pid) as f:
        lim = re.search(r"Max open files\s+(\S+)\s+(\S+)", f.read())
    t.ok(lim and lim.group(1) == lim.group(2),
         "mirror raises its RLIMIT_NOFILE soft limit to the hard limit (started with %d)"
         % mirror_soft, diag=lim and lim.groups())
    conns = []
    err = None
    try:
        for i in range(N):
            conns.append(RawConn(mk.port, timeout=10))
    except OSError as e:
        err = e
    t.ok(len(conns) == N, "1000 connections opened", diag=(len(conns), err))
    try:
        wait_for(lambda: mk.metrics().get("regmirror_open_connections", 0) >= N, timeout=10,
                 what="1000 connections accepted")
        accepted = True
    except TimeoutError:
        accepted = False
    t.ok(accepted, "the mirror holds 1000 idle connections at once",
         diag=mk.metrics().get("regmirror_open_connections"))
    rl, _, _ = select.select([c.s for c in conns], [], [], 0.3)
    t.is_(len(rl), 0, "no idle connection was closed")
    sent = 0
    for c in conns:
        try:
            c.send(req("GET", "/v2/"))
            sent += 1
        except OSError:
            pass
    good = 0
    bad = []
    deadline = time.monotonic() + 30
    for c in conns:
        c.s.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            r = c.response()
        except (socket.timeout, OSError) as e:
            r = None
        if r and r[0] == 200 and r[2] == b"{}" and r[1].get("x-cache") in XCACHE:
            good += 1
        elif len(bad) < 5:
            bad.append(r and r[:2])
    t.is_(good, N, "each of the 1000 connections answered GET /v2/ correctly")
    if bad:
        t.diag("bad answers: %r" % bad)
    for c in conns:
        c.close()
    conns = []
    lt = mk.log_text()
    t.ok(not re.search(r"EMFILE|too many open files", lt, re.I), "no EMFILE in the log",
         diag="\n".join(l for l in lt.splitlines() if re.search("emfile|too many", l, re.I))[:1500])
    mk.stop()

# ======================================================================================
# max_connections 5: "more are accepted and closed at once" (src/http/server.c on_connection)

mm = rgmtest.Mirror(ws, config=config(max_connections=5), name="maxconn")
time.sleep(0.3)   # the readiness probe's connection is gone
five = [RawConn(mm.port) for _ in range(5)]
time.sleep(0.2)
sixth = RawConn(mm.port)
t6 = time.monotonic()
try:
    sixth.send(req("GET", "/v2/"))
except OSError:
    pass
closed = sixth.closed_within(3)
t.ok(closed and time.monotonic() - t6 < 1.5, "6th connection closed at once",
     diag=(closed, time.monotonic() - t6))
t.ok(b"HTTP/" not in sixth.buf, "6th connection got no response", diag=sixth.buf[:200])
sixth.close()
answers = []
for c in five:
    c.send(req("GET", "/v2/"))
    r = c.response()
    answers.append(r and r[0])
t.is_(answers, [200] * 5, "the 5 admitted connections are served")
five.pop().close()
time.sleep(0.3)
c = RawConn(mm.port)
c.send(req("GET", "/v2/"))
r = c.response()
t.ok(r is not None and r[0] == 200, "after one closes, a new connection is served",
     diag=r and r[:1])
c.close()
for c in five:
    c.close()
t.like(mm.log_text(), r"refused: max_connections \(5\) reached", "refusal is logged")
mm.stop()

# ======================================================================================
# SIGTERM with a response in flight


class Streamer(threading.Thread):
    """GET path on a raw socket, recording header and body bytes as they arrive."""

    def __init__(self, port, path, mark=100_000):
        super().__init__(daemon=True)
        self.port, self.path, self.mark = port, path, mark
        self.status = None
        self.length = None
        self.body = bytearray()
        self.started = threading.Event()
        self.ended_by = None

    def run(self):
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=20)
            s.sendall(req("GET", self.path))
            buf = b""
            while b"\r\n\r\n" not in buf:
                d = s.recv(65536)
                if not d:
                    self.ended_by = "eof in head"
                    return
                buf += d
            hb, _, rest = buf.partition(b"\r\n\r\n")
            self.status = int(hb.split()[1])
            mm_ = re.search(rb"(?im)^content-length:\s*(\d+)", hb)
            self.length = int(mm_.group(1)) if mm_ else None
            self.body += rest
            while self.length is None or len(self.body) < self.length:
                if len(self.body) >= self.mark:
                    self.started.set()
                try:
                    d = s.recv(65536)
                except ConnectionResetError:
                    self.ended_by = "reset"
                    return
                if not d:
                    self.ended_by = "eof"
                    return
                self.body += d
            self.ended_by = "complete"
        except Exception as e:
            self.ended_by = repr(e)
        finally:
            self.started.set()


def refused(port):
    """No new connection: refused, or reset when the listener closed with the SYN in its
    backlog (a race with the close, not a served connection)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except (ConnectionRefusedError, ConnectionResetError):
        return True


# (a) the response completes within shutdown_timeout (10 s)
mt = rgmtest.Mirror(ws, config=config(shutdown_timeout="10s"), name="sigterm")
stream = Streamer(mt.port, "/v2/lib/big/blobs/%s?ns=fake.example" % D1)
stream.start()
stream.started.wait(15)
t.ok(stream.is_alive() and len(stream.body) < len(BIG1),
     "SIGTERM test: response in flight", diag=(stream.ended_by, len(stream.body)))
mt.proc.p.send_signal(signal.SIGTERM)
tsig = time.monotonic()
ref = False
for _ in range(40):
    if refused(mt.port):
        ref = True
        break
    time.sleep(0.05)
t.ok(ref, "after SIGTERM new connections are refused")
t.ok(stream.is_alive(), "... while the in-flight response is still going")
stream.join(20)
t.ok(stream.ended_by == "complete" and stream.status == 200 and
     hashlib.sha256(stream.body).digest() == hashlib.sha256(BIG1).digest(),
     "in-flight response completes after SIGTERM: all bytes, right sha256",
     diag=(stream.ended_by, stream.status, len(stream.body)))
try:
    rc = mt.proc.p.wait(timeout=15)
except Exception:
    rc = None
dt = time.monotonic() - tsig
t.is_(rc, 0, "exit status 0 after SIGTERM")
t.ok(dt < 10 + 3, "exited within shutdown_timeout + slack (%.1f s)" % dt)
lt = mt.log_text()
t.like(lt, r"stopped cleanly", "log says 'stopped cleanly' (uv_loop_close() == 0)")
if "stopped cleanly" not in lt:
    t.diag(lt[-2000:])
mt.stop()

# (b) a response longer than shutdown_timeout (1 s) is cut
mc = rgmtest.Mirror(ws, config=config(shutdown_timeout="1s"), name="sigterm-cut")
stream = Streamer(mc.port, "/v2/lib/big/blobs/%s?ns=fake.example" % D2, mark=50_000)
stream.start()
stream.started.wait(15)
t.ok(stream.is_alive(), "cut test: response in flight", diag=stream.ended_by)
mc.proc.p.send_signal(signal.SIGTERM)
tsig = time.monotonic()
stream.join(15)
tcut = time.monotonic() - tsig
t.ok(stream.ended_by in ("eof", "reset") and len(stream.body) < len(BIG2),
     "response longer than shutdown_timeout is cut (%d of %d bytes)"
     % (len(stream.body), len(BIG2)), diag=stream.ended_by)
t.ok(bytes(stream.body) == BIG2[:len(stream.body)], "bytes received before the cut are right")
t.ok(0.7 <= tcut <= 3.5, "cut after ~shutdown_timeout (%.1f s)" % tcut)
try:
    rc = mc.proc.p.wait(timeout=10)
except Exception:
    rc = None
dt = time.monotonic() - tsig
t.is_(rc, 0, "cut case: exit status 0")
t.ok(dt < 1 + 4, "cut case: exited within shutdown_timeout + slack (%.1f s)" % dt)
lt = mc.log_text()
t.like(lt, r"stopped cleanly", "cut case: log says 'stopped cleanly'")
if "stopped cleanly" not in lt:
    t.diag(lt[-2000:])
mc.stop()

# ======================================================================================
# SIGHUP reopens the log file

lf = ws.path("hup", "regmirror.log")
os.makedirs(os.path.dirname(lf), exist_ok=True)
mh = rgmtest.Mirror(ws, config=config(), args=["--log-file", lf], name="sighup")
mh.get("/v2/hup-before/manifests/-x")
wait_for(lambda: os.path.exists(lf) and "hup-before" in open(lf).read(), timeout=5,
         what="access line in the log file")
os.rename(lf, lf + ".1")
mh.proc.p.send_signal(signal.SIGHUP)
try:
    wait_for(lambda: os.path.exists(lf), timeout=5, what="a new log file after SIGHUP")
    reopened = True
except TimeoutError:
    reopened = False
t.ok(reopened, "SIGHUP: a new log file appears")
st, _, _ = mh.get("/v2/hup-after/manifests/-x")
t.is_(st, 404, "request after SIGHUP answered")
time.sleep(0.2)
new = open(lf).read() if os.path.exists(lf) else ""
old = open(lf + ".1").read()
t.ok(any(a.get("path") == "/v2/hup-after/manifests/-x" for a in access_lines(new)),
     "SIGHUP: the access line goes to the new file", diag=new[-1000:])
t.ok("hup-after" not in old and "hup-before" in old, "the renamed file keeps only the old lines")
t.ok(mh.alive(), "mirror still running after SIGHUP")
t.is_(mh.stop(), 0, "SIGHUP mirror stops with status 0")

# ======================================================================================
# configuration and flag errors: exit 2, naming the key

def serve(args, name):
    cmd = [rgmtest.RGM_BIN, "serve", "--listen", "127.0.0.1:%d" % rgmtest.free_port(),
           "--storage", ws.path("badcfg-storage")] + args
    try:
        return run(cmd, timeout=10, check=False)
    except rgmtest.RunError as e:   # still running after 10 s: it accepted the config
        return rgmtest.Result("timeout", str(e))


def badcfg(fn, content, key_re, name):
    p = ws.write("cfg/" + fn, content)
    r = serve(["--config", p], name)
    t.is_(r.rc, 2, name + ": exit 2")
    t.like(r.out, key_re, name + ": the message names it")


badcfg("regttl.json", json.dumps({"registries": {"docker.io": {
    "endpoint": "http://127.0.0.1:%d" % CLOSED, "tag_ttl": "5x"}}}), r"tag_ttl",
    "registry tag_ttl \"5x\"")
badcfg("unknown.json", json.dumps({"bogus_key": 1}), r"bogus_key", "unknown top-level key")
badcfg("regunknown.json", json.dumps({"registries": {"docker.io": {
    "endpoint": "http://127.0.0.1:%d" % CLOSED, "bogus_reg_key": 1}}}), r"bogus_reg_key",
    "unknown registry key")
badcfg("toplevelttl.json", json.dumps({"tag_ttl": "5x"}), r"tag_ttl",
       "tag_ttl at top level (a registry key)")
badcfg("syntax.json", '{"max_connections": 5,,\n}', r"syntax\.json.*(?i:syntax|json)",
       "JSON syntax error")
badcfg("badsize.json", json.dumps({"max_header_bytes": "12 parsecs"}), r"max_header_bytes",
       "bad size")
badcfg("range.json", json.dumps({"max_connections": 0}), r"max_connections",
       "max_connections out of range")
r = serve(["--config", ws.path("cfg", "does-not-exist.json")], "missing config")
t.is_(r.rc, 2, "missing config file: exit 2")
r = serve(["--bogus-flag"], "unknown flag")
t.is_(r.rc, 2, "unknown flag: exit 2")
t.like(r.out, r"bogus-flag", "unknown flag: named")
r = serve(["--log-level", "loud"], "bad log level")
t.is_(r.rc, 2, "bad --log-level: exit 2")
r = serve(["--registry", "NoEquals"], "bad --registry")
t.is_(r.rc, 2, "bad --registry: exit 2")
r = serve(["stray-argument"], "stray argument")
t.is_(r.rc, 2, "stray argument: exit 2")
r = run([rgmtest.RGM_BIN, "serve", "--help"], timeout=10, check=False)
t.is_(r.rc, 0, "serve --help: exit 0")
t.like(r.out, r"(?i)usage: regmirror serve", "serve --help prints the usage")

bad_codes = [(s, c, n) for s, c, n in codes_seen if s < 500 and c not in SPEC_CODES]
t.ok(codes_seen and not bad_codes,
     "every 4xx error answered here (%d) has a code of the spec's table" % len(codes_seen),
     diag=bad_codes[:10])
t.is_(m.stop(), 0, "main mirror stops with status 0")
san = []
for mir in (m, ma, ma2, ms, mm, mt, mc, mh) + ((mk,) if "mk" in globals() else ()):
    for line in mir.log_text().splitlines():
        if re.search(r"Sanitizer|runtime error:", line):
            san.append("%s: %s" % (os.path.basename(mir.dir), line))
t.ok(not san, "no sanitizer reports in any mirror's output", diag="\n".join(san[:20]))
t.diag("elapsed %.1f s" % (time.monotonic() - T0))
t.done()
