#!/usr/bin/env python3
"""Egress through an HTTP proxy (issue 14): HTTPS_PROXY / HTTP_PROXY / NO_PROXY.

A small proxy on loopback, written here: CONNECT tunnels and absolute-form forwarding, with an
optional Basic Proxy-Authorization, logging every request target it sees.
- an https upstream (docker-registry with the test CA, by name "localhost") through CONNECT:
  the proxy logs CONNECT localhost:PORT, the origin's certificate is verified inside the tunnel
  (without ca_file: 502);
- an http upstream through absolute-form GET http://127.0.0.1:PORT/v2/...;
- NO_PROXY (a name list with a CIDR) sends that upstream direct: the proxy sees nothing;
- the lower-case variable wins over the upper-case one;
- proxy credentials from the URL userinfo (percent-decoded) are sent and never logged; without
  them the proxy's 407 is a 502 naming the refusal in the mirror's log;
- the proxy down: 502 "connection refused" and a log line naming the proxy;
- an unsupported proxy scheme (socks5://) is an ERROR at start and a 502, never a direct
  connection;
- with allow_any_registry, ns=127.0.0.1:PORT, ns=localhost:PORT and ns=169.254.169.254 get 403
  without any CONNECT reaching the proxy.
"""

import base64
import json
import select
import socket
import socketserver
import threading
import urllib.parse

import rgmtest
from rgmtest import MANIFEST_ACCEPT, http, sha256_digest

t = rgmtest.TAP(timeout=240)
ws = rgmtest.Workspace()

ca = rgmtest.make_ca(ws.path("ca"))
cert = rgmtest.make_cert(ca, ws.path("reg"), names=("127.0.0.1", "localhost"), cn="registry")


class Proxy:
    """A threaded HTTP proxy on 127.0.0.1: CONNECT and absolute-form, one request per
    connection (forwarded with Connection: close). creds: (user, password) to require."""

    def __init__(self, creds=None):
        self.creds = creds
        self.log = []  # (method, target, proxy-authorization or None)
        self.lock = threading.Lock()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                proxy.handle(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request, client_address):
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        ws.add_cleanup(self.stop)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def targets(self, method=None):
        with self.lock:
            return [tg for (m, tg, _) in self.log if method is None or m == method]

    def auths(self):
        with self.lock:
            return [a for (_, _, a) in self.log]

    @staticmethod
    def _read_head(sock):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk or len(data) > 65536:
                return None, b""
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        return head.decode("latin-1"), rest

    @staticmethod
    def _pipe(a, b, limit_s=60):
        socks = [a, b]
        for _ in range(100000):
            r, _, _ = select.select(socks, [], [], limit_s)
            if not r:
                return
            for s in r:
                data = s.recv(65536)
                if not data:
                    return
                (b if s is a else a).sendall(data)

    def handle(self, c):
        c.settimeout(30)
        head, rest = self._read_head(c)
        if head is None:
            return
        lines = head.split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        hdrs = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        pauth = hdrs.get("proxy-authorization")
        with self.lock:
            self.log.append((method, target, pauth))
        if self.creds:
            want = "Basic " + base64.b64encode(("%s:%s" % self.creds).encode()).decode()
            if pauth != want:
                c.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                          b"Proxy-Authenticate: Basic realm=\"p\"\r\nContent-Length: 0\r\n"
                          b"Connection: close\r\n\r\n")
                return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            try:
                up = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
            except OSError:
                c.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if rest:
                up.sendall(rest)
            self._pipe(c, up)
            up.close()
            return
        u = urllib.parse.urlsplit(target)
        if u.scheme != "http":
            c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return
        path = u.path + ("?" + u.query if u.query else "")
        keep = ["%s %s HTTP/1.1" % (method, path)]
        for ln in lines[1:]:
            k = ln.partition(":")[0].strip().lower()
            if k not in ("proxy-authorization", "connection", "proxy-connection"):
                keep.append(ln)
        keep.append("Connection: close")
        up = socket.create_connection((u.hostname, u.port or 80), timeout=10)
        up.sendall(("\r\n".join(keep) + "\r\n\r\n").encode("latin-1") + rest)
        self._pipe(c, up)
        up.close()


def get(m, path):
    return m.get(path, headers={"Accept": MANIFEST_ACCEPT})


def pull(m, img, label):
    """Manifest and first layer of img through m: 200 with the right digests."""
    st, h, b = get(m, "/v2/%s/manifests/%s" % (img["name"], img["tag"]))
    t.ok(st == 200 and h.get("docker-content-digest") == img["digest"],
         "%s: manifest 200" % label, diag=(st, b[:300]))
    layer = img["image"]["layers"][0]["digest"]
    st, _, b = m.get("/v2/%s/blobs/%s" % (img["name"], layer))
    t.ok(st == 200 and sha256_digest(b) == layer, "%s: blob 200" % label, diag=(st, b[:300]))


def code_of(b):
    try:
        return json.loads(b)["errors"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return {}


NOPROXY_ENV = {k: "" for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                                "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY")}


def env(**kw):
    e = dict(NOPROXY_ENV)
    e.update(kw)
    return e


# ------------------------------------------------------------------------------------
# upstreams

treg = rgmtest.Registry(ws, tls=cert, name="tls-registry")
preg = rgmtest.Registry(ws, name="plain-registry")
timg = rgmtest.push(rgmtest.make_image(ws, "library/tapp:v1"), treg)
pimg = rgmtest.push(rgmtest.make_image(ws, "library/papp:v1"), preg)
TPORT = int(treg.host.rpartition(":")[2])
PPORT = int(preg.host.rpartition(":")[2])
T_URL = "https://localhost:%d" % TPORT

proxy = Proxy()
PROXY = "http://127.0.0.1:%d" % proxy.port

# ------------------------------------------------------------------------------------
# https through CONNECT, http through absolute-form

m = rgmtest.Mirror(ws, name="mirror", env=env(HTTPS_PROXY=PROXY, HTTP_PROXY=PROXY), config={
    "registries": {"docker.io": {"endpoint": T_URL, "ca_file": ca.cert},
                   "plain.test": {"endpoint": preg.url}}})
pull(m, timg, "https upstream through CONNECT")
want = "localhost:%d" % TPORT
t.ok(want in proxy.targets("CONNECT"), "the proxy saw CONNECT %s" % want,
     diag=proxy.targets())
t.ok(all(a is None for a in proxy.auths()), "no Proxy-Authorization without credentials")
n_before = len(proxy.targets())
pull(m, dict(pimg, name="plain.test/" + pimg["name"]), "http upstream through the proxy")
fwd = [tg for tg in proxy.targets()[n_before:] if tg.startswith("http://")]
t.ok(any(tg.startswith("http://127.0.0.1:%d/v2/" % PPORT) for tg in fwd),
     "the proxy saw absolute-form GET http://127.0.0.1:%d/v2/..." % PPORT, diag=fwd)
t.like(m.log_text(), r"https upstreams through the proxy 127\.0\.0\.1:%d" % proxy.port,
       "the mirror logs the proxy it uses")
m.stop()

# The origin is verified inside the tunnel: without ca_file the handshake fails.
n_before = len(proxy.targets("CONNECT"))
m = rgmtest.Mirror(ws, name="mirror-noca", env=env(HTTPS_PROXY=PROXY), config={
    "registries": {"docker.io": {"endpoint": T_URL}}})
st, _, b = get(m, "/v2/%s/manifests/%s" % (timg["name"], timg["tag"]))
t.is_(st, 502, "through the tunnel, an origin signed by an unknown CA: 502")
t.ok(len(proxy.targets("CONNECT")) > n_before, "... after a CONNECT (the tunnel was opened)")
m.stop()

# ------------------------------------------------------------------------------------
# NO_PROXY, and lower case first

n_before = len(proxy.targets())
m = rgmtest.Mirror(ws, name="mirror-noproxy",
                   env=env(HTTP_PROXY=PROXY, NO_PROXY="example.com, .corp.test,127.0.0.0/8"),
                   config={"registries": {"docker.io": {"endpoint": preg.url}}})
pull(m, pimg, "NO_PROXY 127.0.0.0/8")
t.is_(len(proxy.targets()), n_before, "NO_PROXY 127.0.0.0/8: the proxy saw nothing")
m.stop()

m = rgmtest.Mirror(ws, name="mirror-star", env=env(HTTP_PROXY=PROXY, no_proxy="*"),
                   config={"registries": {"docker.io": {"endpoint": preg.url}}})
pull(m, pimg, "no_proxy=*")
t.is_(len(proxy.targets()), n_before, "no_proxy=*: the proxy saw nothing")
m.stop()

dead = ws.closed_port()
m = rgmtest.Mirror(ws, name="mirror-lower",
                   env=env(http_proxy=PROXY, HTTP_PROXY="http://127.0.0.1:%d" % dead),
                   config={"registries": {"docker.io": {"endpoint": preg.url}}})
pull(m, pimg, "http_proxy wins over HTTP_PROXY")
t.ok(len(proxy.targets()) > n_before, "... through the lower-case one")
m.stop()

# ------------------------------------------------------------------------------------
# proxy credentials

aproxy = Proxy(creds=("puser", "p@ss:w"))
m = rgmtest.Mirror(ws, name="mirror-auth", env=env(
    HTTPS_PROXY="http://puser:p%%40ss%%3Aw@127.0.0.1:%d/" % aproxy.port), config={
    "log_level": "debug",
    "registries": {"docker.io": {"endpoint": T_URL, "ca_file": ca.cert}}})
pull(m, timg, "through a proxy that wants credentials (userinfo percent-decoded)")
secret_b64 = base64.b64encode(b"puser:p@ss:w").decode()
text = m.log_text()
t.ok("p@ss" not in text and "p%40ss" not in text and secret_b64 not in text,
     "the proxy password is not in the mirror's log (debug level)")
m.stop()

m = rgmtest.Mirror(ws, name="mirror-noauth",
                   env=env(HTTPS_PROXY="http://127.0.0.1:%d" % aproxy.port),
                   config={"registries": {"docker.io": {"endpoint": T_URL, "ca_file": ca.cert}}})
st, _, b = get(m, "/v2/%s/manifests/%s" % (timg["name"], timg["tag"]))
t.is_(st, 502, "without proxy credentials: 502")
t.like(m.log_text(), r"proxy 127\.0\.0\.1:%d for localhost:\d+: CONNECT refused with 407"
       % aproxy.port, "... and the log names the proxy's 407")
m.stop()

# ------------------------------------------------------------------------------------
# the proxy down, an unsupported proxy

m = rgmtest.Mirror(ws, name="mirror-down", env=env(HTTPS_PROXY="http://127.0.0.1:%d" % dead),
                   config={"registries": {"docker.io": {"endpoint": T_URL, "ca_file": ca.cert}}})
st, _, b = get(m, "/v2/%s/manifests/%s" % (timg["name"], timg["tag"]))
err = code_of(b)
t.ok(st == 502 and "connection refused" in err.get("message", ""),
     "proxy down: 502 with the reason", diag=(st, b[:300]))
t.like(m.log_text(), r"proxy 127\.0\.0\.1:%d for localhost:\d+: connection refused" % dead,
       "... and the log names the proxy")
m.stop()

n_reg = treg.count_requests("GET", "/v2/")
m = rgmtest.Mirror(ws, name="mirror-socks", env=env(HTTPS_PROXY="socks5://127.0.0.1:1080"),
                   config={"registries": {"docker.io": {"endpoint": T_URL, "ca_file": ca.cert}}})
st, _, b = get(m, "/v2/%s/manifests/%s" % (timg["name"], timg["tag"]))
t.is_(st, 502, "socks5:// proxy: 502, not a direct connection")
t.is_(treg.count_requests("GET", "/v2/"), n_reg, "... the registry saw nothing")
t.like(m.log_text(), r"level=error.*HTTPS_PROXY: only http:// proxies are supported",
       "... and an ERROR names the variable")
t.ok("socks5://127.0.0.1:1080" not in m.log_text(), "... not its value")
m.stop()

# ------------------------------------------------------------------------------------
# SSRF: a client-chosen host is checked before CONNECT

n_before = len(proxy.targets())
m = rgmtest.Mirror(ws, name="mirror-any", env=env(HTTPS_PROXY=PROXY, HTTP_PROXY=PROXY), config={
    "allow_any_registry": True,
    "registries": {"docker.io": {"endpoint": T_URL, "ca_file": ca.cert}}})
for ns in ("127.0.0.1:%d" % TPORT, "localhost:%d" % TPORT, "169.254.169.254", "[::1]:443",
           "10.0.0.1"):
    st, _, b = get(m, "/v2/library/app/manifests/v1?ns=" + ns)
    t.ok(st == 403 and code_of(b).get("code") == "DENIED", "via proxy, ns=%s: 403 DENIED" % ns,
         diag=(st, b[:200]))
t.is_(proxy.targets()[n_before:], [], "... and the proxy saw none of them")
m.stop()

t.done()
