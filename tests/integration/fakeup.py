"""fakeup: a scriptable fake upstream registry for faults a real registry cannot produce.

    up = fakeup.FakeUpstream()                 # HTTP/1.1 on 127.0.0.1:random, in a thread
    d = up.add_blob(b"...")                    # served under any repository name
    md = up.add_manifest("lib/app", "1", manifest_bytes, media_type)
    up.behave("/blobs/" + d, truncate=100)     # per-path behaviours (see behave())
    ... up.requests, up.count("GET", "/blobs/") ...
    up.stop()

With referrers=True it also implements the OCI 1.1 referrers API (GET
/v2/<repo>/referrers/<digest>[?artifactType=...]) over the manifests added with a `subject`:
filtering with OCI-Filters-Applied, and pages of referrers_page_size descriptors linked with
Link: <...>; rel="next".  Without it that route is a plain 404, as on docker-registry 2.8.

Standard library only.  Every FakeUpstream registers itself for cleanup with rgmtest's
registry, so a crashing test does not leave threads serving.
"""

import base64
import collections
import hashlib
import json
import re
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import rgmtest

Request = collections.namedtuple("Request", "method path headers time")


def digest_of(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Behaviour:
    """What to do for requests whose path matches.  Fields (all optional):

    status      int: answer this status (with an OCI error body) instead of the content
    code        str: the OCI error code of that body (default UNKNOWN, TOOMANYREQUESTS for 429)
    retry_after str/int: Retry-After header (use with status=429 or 503)
    www_authenticate  str or list of str: WWW-Authenticate header(s) (use with status=401)
    headers     dict: extra response headers
    redirect    FakeUpstream (or base URL str): answer 307 to the same path there
    redirect_status  int: 301/302/303/307/308 (default 307)
    chunked     bool: Transfer-Encoding: chunked instead of Content-Length
    chunk_size  int: size of chunks (default 4096)
    corrupt     bool: flip one byte of the body (→ wrong digest), same length
    body        bytes: send these bytes instead of the stored content
    truncate    int: announce the full length, send only N bytes, then close
    stall       float: sleep this long before sending the response headers
    stall_after (int, float): after N body bytes, sleep F seconds (then continue)
    throttle    int: send the body at about N bytes per second
    no_range    bool: ignore Range headers (always 200 with the full body)
    drop        bool: close the connection without answering
    times       int: apply this behaviour to the first N matching requests only
    """

    FIELDS = ("status", "retry_after", "www_authenticate", "headers", "redirect",
              "redirect_status", "chunked", "chunk_size", "corrupt", "body", "truncate",
              "stall", "stall_after", "throttle", "no_range", "drop", "times", "code")

    def __init__(self, **kw):
        for k in kw:
            if k not in self.FIELDS:
                raise TypeError("unknown behaviour %r" % k)
        for k in self.FIELDS:
            setattr(self, k, kw.get(k))
        self.used = 0


class FakeUpstream:
    """Fake OCI registry in a thread.  Serves /v2/, manifests (by tag or digest), blobs
    (content-addressed, any repository), tags/list; GET and HEAD; Range (bytes=N-, N-M).

    tls: None or an rgmtest Cert (make_cert) to serve HTTPS.
    auth: None, or a callable(handler) → True to allow, else the 401 challenge value to
    send (string).  Requests are recorded in .requests (Request(method, path, headers
    dict with lower-case names, time)) — the path includes the query string."""

    def __init__(self, tls=None, auth=None, name="fake", referrers=False):
        self.name = name
        self.referrers = referrers         # serve the referrers API
        self.referrers_page_size = 0       # >0: at most this many descriptors per page
        self.referrers_content_type = None  # override the index Content-Type (tests)
        self.referrers_filter = True        # apply artifactType (else ignore it)
        self.blobs = {}
        self.manifests = {}        # (repo, ref) → (bytes, media type); ref = tag or digest
        self.behaviours = []       # [(matcher, Behaviour)]
        self.requests = []
        self.auth = auth
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.tls = tls
        ctx = None
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls.chain, tls.key)
        self.httpd = _Server(("127.0.0.1", 0), _make_handler(self), ctx)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()
        self._cleanup_fn = rgmtest._cleanup.add(self.stop)

    # -- addresses
    @property
    def host(self):
        return "127.0.0.1:%d" % self.port

    @property
    def url(self):
        return "%s://%s" % ("https" if self.tls else "http", self.host)

    def stop(self):
        self.stopping.set()
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None
            rgmtest._cleanup.remove(self._cleanup_fn)

    def kill(self):
        """Stop, and also cut the keep-alive connections already open, so that the next
        request to this port is refused (stop() alone lets open connections go on)."""
        httpd = self.httpd
        self.stop()
        if httpd:
            for sock in list(httpd.open_socks):
                try:
                    sock.shutdown(2)
                except OSError:
                    pass

    # -- content
    def add_blob(self, data):
        d = digest_of(data)
        with self.lock:
            self.blobs[d] = bytes(data)
        return d

    def add_manifest(self, repo, ref, data, media_type=rgmtest.MT_OCI_MANIFEST):
        """Store a manifest under repo by digest and, if ref is a tag, that tag too.
        data may be a dict (serialized as JSON).  Returns its digest."""
        if isinstance(data, dict):
            data = json.dumps(data, separators=(",", ":")).encode()
        d = digest_of(data)
        with self.lock:
            self.manifests[(repo, d)] = (data, media_type)
            if ref and not ref.startswith("sha256:"):
                self.manifests[(repo, ref)] = (data, media_type)
        return d

    def add_image(self, repo, tag, layers=(b"layer-one", b"layer-two"), arch="amd64"):
        """Add a small OCI image (raw bytes as layers; clients that only fetch don't care
        that they're not tars).  Returns dict manifest, config, layers (digests), bytes."""
        cfg = json.dumps({"architecture": arch, "os": "linux",
                          "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        cd = self.add_blob(cfg)
        ls = [self.add_blob(l) for l in layers]
        m = {"schemaVersion": 2, "mediaType": rgmtest.MT_OCI_MANIFEST,
             "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": cd, "size": len(cfg)},
             "layers": [{"mediaType": rgmtest.MT_OCI_LAYER, "digest": d, "size": len(l)}
                        for d, l in zip(ls, layers)]}
        mb = json.dumps(m, separators=(",", ":")).encode()
        md = self.add_manifest(repo, tag, mb, rgmtest.MT_OCI_MANIFEST)
        return {"manifest": md, "manifest_bytes": mb, "config": cd, "layers": ls}

    def referrers_of(self, repo, subject, artifact_type=None):
        """The descriptors of repo's manifests whose subject is `subject` (sorted by
        digest), as the referrers API lists them."""
        out = []
        with self.lock:
            items = [(d, v) for (rp, d), v in self.manifests.items()
                     if rp == repo and d.startswith("sha256:")]
        for d, (data, mt) in sorted(items):
            try:
                m = json.loads(data)
            except ValueError:
                continue
            if not isinstance(m, dict) or (m.get("subject") or {}).get("digest") != subject:
                continue
            at = m.get("artifactType") or (m.get("config") or {}).get("mediaType")
            if artifact_type is not None and at != artifact_type:
                continue
            desc = {"mediaType": mt, "digest": d, "size": len(data)}
            if at:
                desc["artifactType"] = at
            if m.get("annotations"):
                desc["annotations"] = m["annotations"]
            out.append(desc)
        return out

    # -- behaviours
    def behave(self, match, **kw):
        """Add a behaviour for requests whose path contains `match` (str), matches it (a
        compiled regex), or for which match(method, path, headers) is true (callable).
        The first behaviour that matches and is not used up wins.  Returns it."""
        b = Behaviour(**kw)
        with self.lock:
            self.behaviours.append((match, b))
        return b

    def clear(self):
        with self.lock:
            self.behaviours = []

    def _behaviour_for(self, method, path, headers):
        with self.lock:
            for match, b in self.behaviours:
                if callable(match) and not hasattr(match, "search"):
                    hit = match(method, path, headers)
                elif hasattr(match, "search"):
                    hit = match.search(path) is not None
                else:
                    hit = match in path
                if not hit:
                    continue
                if b.times is not None and b.used >= b.times:
                    continue
                b.used += 1
                return b
        return None

    # -- assertions
    def count(self, method=None, path_substring="", header=None):
        """Recorded requests with this method (None = any) whose path contains the
        substring (and, if header is given, that carried this header)."""
        with self.lock:
            reqs = list(self.requests)
        return sum(1 for r in reqs
                   if (method is None or r.method == method) and path_substring in r.path
                   and (header is None or header.lower() in r.headers))

    def requests_for(self, path_substring="", method=None):
        with self.lock:
            return [r for r in self.requests
                    if path_substring in r.path and (method is None or r.method == method)]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, addr, handler, ctx):
        self.ctx = ctx
        self.connections = 0  # TCP connections accepted (keep-alive reuse checks)
        self.open_socks = set()  # accepted sockets not yet closed (kill())
        super().__init__(addr, handler)

    def finish_request(self, request, client_address):
        self.connections += 1
        self.open_socks.add(request)
        try:
            self._finish(request, client_address)
        finally:
            self.open_socks.discard(request)

    def _finish(self, request, client_address):
        # TLS handshake in the per-connection thread, not in the accept loop
        if self.ctx is not None:
            try:
                request.settimeout(10)
                request = self.ctx.wrap_socket(request, server_side=True)
                request.settimeout(None)
            except (OSError, ssl.SSLError):
                return
        self.RequestHandlerClass(request, client_address, self)

    def handle_error(self, request, client_address):
        pass


_MANIFEST_RE = re.compile(r"^/v2/(.+)/manifests/([^/]+)$")
_BLOB_RE = re.compile(r"^/v2/(.+)/blobs/([^/]+)$")
_TAGS_RE = re.compile(r"^/v2/(.+)/tags/list$")
_REFERRERS_RE = re.compile(r"^/v2/(.+)/referrers/(sha256:[0-9a-f]{64})$")
_RANGE_RE = re.compile(r"^bytes=(\d+)-(\d*)$")


def _make_handler(up):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "fakeup/1"
        timeout = 30

        def log_message(self, *a):
            pass

        def do_HEAD(self):
            self._handle("HEAD")

        def do_GET(self):
            self._handle("GET")

        def _any(self):
            n = int(self.headers.get("Content-Length") or 0)
            if n:
                self.rfile.read(n)
            self._handle(self.command)

        do_POST = do_PUT = do_PATCH = do_DELETE = _any

        def _handle(self, method):
            hdrs = {k.lower(): v for k, v in self.headers.items()}
            with up.lock:
                up.requests.append(Request(method, self.path, hdrs, time.time()))
            b = up._behaviour_for(method, self.path, hdrs)
            if b is not None and b.drop:
                self.close_connection = True
                return
            if b is not None and b.stall:
                up.stopping.wait(b.stall)
            if up.auth is not None and not (b is not None and b.status):
                verdict = up.auth(self)
                if verdict is not True:
                    return self._error(401, "UNAUTHORIZED", "authentication required",
                                       method, {"WWW-Authenticate": verdict})
            if b is not None and b.redirect is not None:
                base = b.redirect if isinstance(b.redirect, str) else b.redirect.url
                self.send_response(b.redirect_status or 307)
                self.send_header("Location", base + self.path)
                self.send_header("Content-Length", "0")
                self._extra(b)
                self.end_headers()
                return
            if b is not None and b.status:
                extra = {}
                if b.retry_after is not None:
                    extra["Retry-After"] = str(b.retry_after)
                code = b.code or ("UNKNOWN" if b.status != 429 else "TOOMANYREQUESTS")
                return self._error(b.status, code, "fakeup behaviour", method, extra, b)
            path = urllib.parse.urlsplit(self.path).path
            if path in ("/v2/", "/v2"):
                return self._send(method, 200, b"{}", "application/json", None, b)
            m = _TAGS_RE.match(path)
            if m:
                repo = m.group(1)
                with up.lock:
                    tags = sorted(r for (rp, r) in up.manifests
                                  if rp == repo and not r.startswith("sha256:"))
                if not tags:
                    return self._error(404, "NAME_UNKNOWN", "repository unknown", method)
                body = json.dumps({"name": repo, "tags": tags}).encode()
                return self._send(method, 200, body, "application/json", None, b)
            m = _REFERRERS_RE.match(path) if up.referrers else None
            if m:
                return self._referrers(method, m.group(1), m.group(2), b)
            m = _MANIFEST_RE.match(path)
            if m:
                with up.lock:
                    got = up.manifests.get((m.group(1), m.group(2)))
                if got is None:
                    return self._error(404, "MANIFEST_UNKNOWN", "manifest unknown", method)
                data, mt = got
                return self._send(method, 200, data, mt, digest_of(data), b)
            m = _BLOB_RE.match(path)
            if m:
                with up.lock:
                    data = up.blobs.get(m.group(2))
                if data is None:
                    return self._error(404, "BLOB_UNKNOWN", "blob unknown", method)
                return self._send(method, 200, data, "application/octet-stream",
                                  m.group(2), b, ranges=True)
            return self._error(404, "NOT_FOUND", "no route", method)

        def _referrers(self, method, repo, subject, b):
            q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            at = q.get("artifactType", [None])[0] if up.referrers_filter else None
            descs = up.referrers_of(repo, subject, at)
            page = int(q.get("page", ["1"])[0])
            size = up.referrers_page_size
            extra = {}
            if size > 0:
                if len(descs) > page * size:
                    nq = {"page": str(page + 1)}
                    if at is not None:
                        nq["artifactType"] = at
                    extra["Link"] = '<%s/v2/%s/referrers/%s?%s>; rel="next"' % (
                        up.url, repo, subject, urllib.parse.urlencode(nq))
                descs = descs[(page - 1) * size:page * size]
            if at is not None:
                extra["OCI-Filters-Applied"] = "artifactType"
            body = json.dumps({"schemaVersion": 2, "mediaType": rgmtest.MT_OCI_INDEX,
                               "manifests": descs}).encode()
            ctype = up.referrers_content_type or rgmtest.MT_OCI_INDEX
            if b is None:
                b = Behaviour(headers=extra)
            elif extra:
                b = Behaviour(**{k: getattr(b, k) for k in Behaviour.FIELDS if k != "headers"},
                              headers=dict(extra, **(b.headers or {})))
            return self._send(method, 200, body, ctype, None, b)

        def _extra(self, b):
            if b is None:
                return
            if b.headers:
                for k, v in b.headers.items():
                    self.send_header(k, v)
            if b.www_authenticate:
                vals = b.www_authenticate
                for v in ([vals] if isinstance(vals, str) else vals):
                    self.send_header("WWW-Authenticate", v)

        def _error(self, status, code, msg, method, extra=None, b=None):
            body = json.dumps({"errors": [{"code": code, "message": msg}]}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Docker-Distribution-API-Version", "registry/2.0")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self._extra(b)
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(body)

        def _send(self, method, status, data, ctype, digest, b, ranges=False):
            if b is not None and b.body is not None:
                data = b.body
            elif b is not None and b.corrupt and data:
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            total = len(data)
            start, end = 0, total
            rng = self.headers.get("Range")
            if ranges and rng and not (b is not None and b.no_range):
                mm = _RANGE_RE.match(rng.strip())
                if mm:
                    s = int(mm.group(1))
                    e = int(mm.group(2)) + 1 if mm.group(2) else total
                    if s >= total:
                        self.send_response(416)
                        self.send_header("Content-Range", "bytes */%d" % total)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    start, end, status = s, min(e, total), 206
            body = data[start:end]
            chunked = b is not None and b.chunked and method != "HEAD"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Docker-Distribution-API-Version", "registry/2.0")
            if digest:
                self.send_header("Docker-Content-Digest", digest)
            if ranges:
                self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end - 1, total))
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(len(body)))
            self._extra(b)
            self.end_headers()
            if method == "HEAD":
                return
            limit = len(body)
            if b is not None and b.truncate is not None:
                limit = min(limit, b.truncate)
            self._write_body(body[:limit], chunked, b)
            if limit < len(body):
                self.wfile.flush()
                self.close_connection = True
                try:
                    import socket as _s
                    self.connection.shutdown(_s.SHUT_RDWR)
                except OSError:
                    pass
                return
            if chunked:
                self.wfile.write(b"0\r\n\r\n")

        def _write_body(self, body, chunked, b):
            step = 65536
            if b is not None and chunked:
                step = b.chunk_size or 4096
            throttle = b.throttle if b is not None else None
            if throttle:
                step = max(1, min(step, throttle // 10 or 1))
            stall_after = b.stall_after if b is not None else None
            sent = 0
            t0 = time.monotonic()
            while sent < len(body):
                if up.stopping.is_set():
                    return
                n = step
                if stall_after and sent < stall_after[0]:
                    n = min(n, stall_after[0] - sent)
                piece = body[sent:sent + n]
                if chunked:
                    self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
                else:
                    self.wfile.write(piece)
                sent += len(piece)
                if stall_after and sent == stall_after[0]:
                    self.wfile.flush()
                    up.stopping.wait(stall_after[1])
                if throttle:
                    self.wfile.flush()
                    ahead = sent / throttle - (time.monotonic() - t0)
                    if ahead > 0:
                        up.stopping.wait(ahead)
    return H


def bearer_auth(realm, service="fake-registry", tokens=("good-token",)):
    """An auth callable for FakeUpstream: accepts 'Bearer <one of tokens>', else
    challenges with a Bearer realm (scope filled in from the request path)."""
    def check(h):
        got = h.headers.get("Authorization", "")
        if got.startswith("Bearer ") and got[7:] in tokens:
            return True
        m = re.match(r"^/v2/(.+)/(?:manifests|blobs|tags)/", h.path)
        scope = ',scope="repository:%s:pull"' % m.group(1) if m else ""
        return 'Bearer realm="%s",service="%s"%s' % (realm, service, scope)
    return check


def basic_auth(users, realm="fake"):
    """An auth callable for FakeUpstream: Basic auth against {user: password}."""
    def check(h):
        got = h.headers.get("Authorization", "")
        if got.startswith("Basic "):
            try:
                u, _, p = base64.b64decode(got[6:]).decode().partition(":")
                if users.get(u) == p and u in users:
                    return True
            except Exception:
                pass
        return 'Basic realm="%s"' % realm
    return check
