"""rgmtest: integration-test library for regmirror (Python 3 standard library only).

Everything listens on 127.0.0.1, lives in one temporary directory (kept when RGM_KEEP=1)
and every child process is killed (by process group) when the test exits, crashes, is
signalled or times out.  See README.md in this directory for how to write a test.
"""

import atexit
import base64
import collections
import gzip
import hashlib
import http.client as _httpclient
import io
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import traceback
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = [
    "TAP", "Workspace", "Proc", "free_port", "run", "RunError", "make_ca", "make_cert",
    "Registry", "TokenServer", "make_image", "make_index_image", "push", "http", "raw",
    "auth_request", "Headers", "Containerd", "write_hosts_toml", "Mirror", "wait_for",
    "sha256_digest", "MT_OCI_MANIFEST", "MT_OCI_INDEX", "MT_DOCKER_MANIFEST",
    "MT_DOCKER_LIST", "MANIFEST_ACCEPT", "RGM_BIN", "RGM_SRCDIR", "RGM_BUILDDIR",
    "HeaderSpy", "private_netns",
]

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_ACCEPT = ", ".join([MT_OCI_INDEX, MT_OCI_MANIFEST, MT_DOCKER_LIST, MT_DOCKER_MANIFEST])

_HERE = os.path.dirname(os.path.abspath(__file__))
RGM_SRCDIR = os.environ.get("RGM_SRCDIR") or os.path.normpath(os.path.join(_HERE, "..", ".."))
RGM_BUILDDIR = os.environ.get("RGM_BUILDDIR") or RGM_SRCDIR
RGM_BIN = os.environ.get("RGM_BIN") or os.path.join(RGM_BUILDDIR, "src", "regmirror")
KEEP = os.environ.get("RGM_KEEP", "") not in ("", "0")


def sha256_digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------
# Cleanup registry: one per test process.  Callbacks run in reverse order, once.

class _Cleanup:
    def __init__(self):
        self.lock = threading.RLock()
        self.items = []
        self.done = False
        self.installed = False

    def install(self):
        if self.installed:
            return
        self.installed = True
        atexit.register(self.run)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, _on_signal)

    def add(self, fn):
        with self.lock:
            self.items.append(fn)
        return fn

    def remove(self, fn):
        with self.lock:
            try:
                self.items.remove(fn)
            except ValueError:
                pass

    def run(self):
        with self.lock:
            if self.done:
                return
            self.done = True
            items, self.items = self.items[::-1], []
        for fn in items:
            try:
                fn()
            except Exception as e:   # keep cleaning up
                sys.stdout.write("# cleanup error: %r\n" % (e,))


_cleanup = _Cleanup()


class Terminated(BaseException):
    pass


class TestTimeout(Exception):
    pass


class ProcessExited(Exception):
    """Raised by readiness checks: the process died; wait_for() does not retry it."""


def _on_signal(signum, frame):
    raise Terminated("killed by signal %d" % signum)


def _on_alarm(signum, frame):
    raise TestTimeout("test exceeded its time limit")


# --------------------------------------------------------------------------------------
# TAP

class TAP:
    """TAP producer.  t.ok(), t.is_(), t.skip(), t.done().

    Installs a global alarm (timeout seconds, env RGM_TEST_TIMEOUT overrides) and an
    exception hook: an uncaught exception prints "not ok - crashed: ..." with the
    traceback as comments, the plan, then everything is cleaned up (exit status 1).
    """

    def __init__(self, timeout=300):
        self.n = 0
        self.failed = 0
        self.finished = False
        self.lock = threading.Lock()
        timeout = int(os.environ.get("RGM_TEST_TIMEOUT", timeout))
        _cleanup.install()
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.alarm(timeout)
        sys.excepthook = self._excepthook
        # line-buffered stdout so the TAP driver sees progress
        try:
            sys.stdout.reconfigure(line_buffering=True)
        except Exception:
            pass

    def _emit(self, ok, name, directive=""):
        with self.lock:
            self.n += 1
            if not ok:
                self.failed += 1
            name = str(name).replace("\n", " ").replace("#", "\\#")
            sys.stdout.write("%s %d - %s%s\n" % ("ok" if ok else "not ok", self.n, name,
                                                 directive))
            sys.stdout.flush()

    def diag(self, msg):
        for line in str(msg).splitlines() or [""]:
            sys.stdout.write("# %s\n" % line)
        sys.stdout.flush()

    def ok(self, cond, name, diag=None):
        self._emit(bool(cond), name)
        if not cond and diag is not None:
            self.diag(diag)
        return bool(cond)

    def is_(self, got, want, name):
        good = got == want
        self._emit(good, name)
        if not good:
            self.diag("     got: %r\nexpected: %r" % (got, want))
        return good

    def isnt(self, got, notwant, name):
        good = got != notwant
        self._emit(good, name)
        if not good:
            self.diag("     got: %r\nexpected anything else" % (got,))
        return good

    def like(self, got, regex, name):
        good = re.search(regex, got or "") is not None
        self._emit(good, name)
        if not good:
            self.diag("     got: %r\ndoesn't match: %r" % (got, regex))
        return good

    def skip(self, name, why):
        self._emit(True, name, " # SKIP %s" % why)

    def todo(self, cond, name, why):
        self._emit(bool(cond), name, " # TODO %s" % why)

    def bail(self, why):
        sys.stdout.write("Bail out! %s\n" % why)
        sys.stdout.flush()
        _cleanup.run()
        os._exit(1)

    def done(self):
        """Print the plan, clean up, exit 0."""
        signal.alarm(0)
        self.finished = True
        sys.stdout.write("1..%d\n" % self.n)
        sys.stdout.flush()
        _cleanup.run()
        sys.exit(0)

    def _excepthook(self, etype, value, tb):
        signal.alarm(0)
        first = (str(value).splitlines() or [""])[0][:200]
        self._emit(False, "crashed: %s: %s" % (etype.__name__, first))
        self.diag("".join(traceback.format_exception(etype, value, tb)))
        if not self.finished:
            sys.stdout.write("1..%d\n" % self.n)
            sys.stdout.flush()
        _cleanup.run()


# --------------------------------------------------------------------------------------
# processes, ports, workspace

def free_port():
    """A free TCP port on 127.0.0.1 (closed again: small race with other tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunError(Exception):
    def __init__(self, cmd, rc, out):
        self.cmd, self.rc, self.out = cmd, rc, out
        super().__init__("command %r exited %s\n%s" % (cmd, rc, out))


Result = collections.namedtuple("Result", "rc out")


def run(cmd, timeout=60, check=True, input=None, env=None, cwd=None, stderr=True):
    """Run cmd (list) with a timeout; returns Result(rc, out) with stdout+stderr merged
    (stderr=False: stderr is discarded).  check=True raises RunError on rc != 0.
    The child runs in its own process group which is killed on timeout."""
    if isinstance(input, str):
        input = input.encode()
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                         stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT if stderr else subprocess.DEVNULL,
                         env=env, cwd=cwd, start_new_session=True)
    killer = _cleanup.add(lambda: _kill_group(p, 0))
    try:
        out, _ = p.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(p, 0)
        out, _ = p.communicate()
        raise RunError(cmd, "timeout after %ss" % timeout, out.decode(errors="replace"))
    finally:
        _cleanup.remove(killer)
        if p.poll() is None:
            _kill_group(p, 0)
    out = out.decode(errors="replace")
    if check and p.returncode != 0:
        raise RunError(cmd, p.returncode, out)
    return Result(p.returncode, out)


def _kill_group(p, grace=3.0, sig=signal.SIGTERM):
    """Signal p's process group, wait up to grace seconds, then SIGKILL the group."""
    if p.returncode is None and p.poll() is None:
        try:
            os.killpg(p.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # the group may have members left even after the leader died
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    return p.returncode


def wait_for(fn, timeout=10.0, interval=0.05, what="condition"):
    """Poll fn() until it returns a true value (returned); raise TimeoutError."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = fn()
            if v:
                return v
        except ProcessExited:
            raise
        except Exception as e:   # noqa: connection refused etc.
            last_exc = e
        if time.monotonic() > deadline:
            raise TimeoutError("timed out waiting for %s (last error: %r)" % (what, last_exc))
        time.sleep(interval)


class Proc:
    """A child process in its own process group, output to a log file."""

    def __init__(self, cmd, log, env=None, cwd=None):
        self.cmd = list(cmd)
        self.log = log
        self.env = env
        self.cwd = cwd
        self.p = None
        self._cleanup_fn = None

    def start(self, stdout_log=None):
        f = open(self.log, "ab")
        fo = open(stdout_log, "ab") if stdout_log else f
        try:
            self.p = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=fo, stderr=f,
                                      env=self.env, cwd=self.cwd, start_new_session=True)
        finally:
            f.close()
            if fo is not f:
                fo.close()
        self._cleanup_fn = _cleanup.add(self.kill)
        return self

    @property
    def pid(self):
        return self.p.pid if self.p else None

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Send sig to the process (not the group), wait up to timeout; then kill the group.
        Returns the exit code (negative signal number if killed by a signal)."""
        if self.p is None:
            return None
        if self.p.poll() is None:
            try:
                self.p.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        rc = self.p.poll()
        _kill_group(self.p, 0)
        if rc is None:
            rc = self.p.returncode
        if self._cleanup_fn:
            _cleanup.remove(self._cleanup_fn)
            self._cleanup_fn = None
        return rc

    def kill(self):
        if self.p is not None:
            _kill_group(self.p, 3.0)

    def log_text(self):
        try:
            with open(self.log, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""


class Workspace:
    """Fresh temp directory removed at exit (unless RGM_KEEP=1), plus process tracking."""

    def __init__(self, prefix="rgm-it-"):
        _cleanup.install()
        base = os.environ.get("RGM_TMPDIR") or None
        self.dir = tempfile.mkdtemp(prefix=prefix, dir=base)
        self._counter = 0
        self._held = []
        _cleanup.add(self._remove)

    def _remove(self):
        for s in self._held:
            s.close()
        if KEEP:
            sys.stdout.write("# RGM_KEEP: kept %s\n" % self.dir)
            return
        shutil.rmtree(self.dir, ignore_errors=True)
        if os.path.exists(self.dir):   # e.g. a stray mount from containerd
            run(["rm", "-rf", "--one-file-system", self.dir], check=False)

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def mkdir(self, *parts):
        p = self.path(*parts)
        os.makedirs(p, exist_ok=True)
        return p

    def unique(self, stem):
        """A new unique directory name under the workspace, created."""
        self._counter += 1
        return self.mkdir("%s-%d" % (stem, self._counter))

    def write(self, rel, data, mode=0o644):
        p = self.path(rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        os.chmod(p, mode)
        return p

    def spawn(self, cmd, log, env=None, cwd=None, stdout_log=None):
        return Proc(cmd, log, env=env, cwd=cwd).start(stdout_log=stdout_log)

    def add_cleanup(self, fn):
        return _cleanup.add(fn)

    def closed_port(self):
        """A loopback port that refuses connections for the workspace's lifetime: the
        socket is bound (so nobody else gets the port) but never listens."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        self._held.append(s)
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------
# certificates (openssl CLI)

CA = collections.namedtuple("CA", "cert key dir")
Cert = collections.namedtuple("Cert", "cert key chain ca dir")


def make_ca(directory, cn="rgmtest CA"):
    os.makedirs(directory, exist_ok=True)
    key = os.path.join(directory, "ca.key")
    cert = os.path.join(directory, "ca.crt")
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", key, "-out", cert, "-days", "30", "-subj", "/CN=" + cn,
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    return CA(cert, key, directory)


def make_cert(ca, directory, names=("127.0.0.1", "localhost"), cn=None, stem="server"):
    """Leaf certificate signed by ca, subjectAltName from names (IPs and DNS names).
    Returns Cert(cert, key, chain=cert+ca, ca=ca.cert, dir)."""
    os.makedirs(directory, exist_ok=True)
    key = os.path.join(directory, stem + ".key")
    csr = os.path.join(directory, stem + ".csr")
    cert = os.path.join(directory, stem + ".crt")
    chain = os.path.join(directory, stem + "-chain.crt")
    ext = os.path.join(directory, stem + ".ext")
    sans = []
    for n in names:
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in n else socket.AF_INET, n)
            sans.append("IP:" + n)
        except OSError:
            sans.append("DNS:" + n)
    with open(ext, "w") as f:
        f.write("subjectAltName=%s\nbasicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth,clientAuth\n" % ",".join(sans))
    run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=" + (cn or names[0])])
    run(["openssl", "x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key,
         "-CAcreateserial", "-out", cert, "-days", "30", "-extfile", ext])
    with open(chain, "w") as out:
        for p in (cert, ca.cert):
            with open(p) as f:
                out.write(f.read())
    return Cert(cert, key, chain, ca.cert, directory)


# --------------------------------------------------------------------------------------
# HTTP client helpers

class Headers(dict):
    """Case-insensitive response headers; duplicates are joined with ', ' and available
    one by one through .all(name)."""

    def __init__(self, pairs=()):
        super().__init__()
        self._all = collections.defaultdict(list)
        for k, v in pairs:
            k = k.lower()
            self._all[k].append(v)
            super().__setitem__(k, ", ".join(self._all[k]))

    def __getitem__(self, k):
        return super().__getitem__(k.lower())

    def __contains__(self, k):
        return super().__contains__(k.lower())

    def get(self, k, default=None):
        return super().get(k.lower(), default)

    def all(self, k):
        return list(self._all.get(k.lower(), []))


def _conn_for(url, timeout, ca=None, verify=True):
    u = urllib.parse.urlsplit(url)
    host = u.hostname
    port = u.port
    if u.scheme == "https":
        if ca:
            ctx = ssl.create_default_context(cafile=ca)
        elif verify:
            ctx = ssl.create_default_context()
        else:
            ctx = ssl._create_unverified_context()
        conn = _httpclient.HTTPSConnection(host, port or 443, timeout=timeout, context=ctx)
    else:
        conn = _httpclient.HTTPConnection(host, port or 80, timeout=timeout)
    path = u.path or "/"
    if u.query:
        path += "?" + u.query
    return conn, path


def http(method, url, headers=None, body=None, timeout=30, ca=None, verify=True):
    """One HTTP request (new connection, never a proxy).
    Returns (status, Headers, body bytes).  For https, ca= a CA file; verify=False to
    skip verification.  Redirects are not followed."""
    conn, path = _conn_for(url, timeout, ca=ca, verify=verify)
    try:
        if isinstance(body, str):
            body = body.encode()
        conn.request(method, path, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, Headers(resp.getheaders()), data
    finally:
        conn.close()


def raw(host, port, data, timeout=5.0, tls=None, shutdown_write=False):
    """Send raw bytes; return everything received until the peer closes or timeout
    (seconds of silence).  tls: None, True (no verification) or an ssl.SSLContext."""
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        if tls:
            ctx = tls if isinstance(tls, ssl.SSLContext) else ssl._create_unverified_context()
            s = ctx.wrap_socket(s, server_hostname=host)
        if data:
            s.sendall(data)
        if shutdown_write:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            except (ConnectionResetError, ssl.SSLError):
                break
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks)
    finally:
        s.close()


def parse_challenge(value):
    """'Bearer realm="x",service="y"' → ('bearer', {'realm': 'x', 'service': 'y'})."""
    if not value:
        return None, {}
    scheme, _, rest = value.strip().partition(" ")
    params = {}
    for m in re.finditer(r'(\w+)=(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))', rest):
        params[m.group(1).lower()] = m.group(2) if m.group(2) is not None else m.group(3)
    return scheme.lower(), params


def basic_header(user, password):
    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


def auth_request(method, url, headers=None, creds=None, timeout=30, ca=None, body=None):
    """http() that answers a 401 challenge like a registry client: Basic → retry with
    creds; Bearer → fetch a token from the realm (with Basic creds if given) and retry.
    Returns (status, headers, body) of the final response."""
    headers = dict(headers or {})
    st, h, b = http(method, url, headers=headers, timeout=timeout, ca=ca, body=body)
    if st != 401:
        return st, h, b
    scheme, p = parse_challenge(h.get("www-authenticate"))
    if scheme == "basic":
        if not creds:
            return st, h, b
        headers["Authorization"] = basic_header(*creds)
    elif scheme == "bearer":
        q = {}
        if p.get("service"):
            q["service"] = p["service"]
        if p.get("scope"):
            q["scope"] = p["scope"]
        turl = p["realm"] + ("&" if "?" in p["realm"] else "?") + urllib.parse.urlencode(q)
        th = {"Authorization": basic_header(*creds)} if creds else {}
        tst, _, tb = http("GET", turl, headers=th, timeout=timeout, ca=ca)
        if tst != 200:
            return st, h, b
        tok = json.loads(tb)
        headers["Authorization"] = "Bearer " + (tok.get("token") or tok.get("access_token"))
    else:
        return st, h, b
    return http(method, url, headers=headers, timeout=timeout, ca=ca, body=body)


# --------------------------------------------------------------------------------------
# docker-registry 2.8

_ACCESS_RE = re.compile(r'^(\S+) \S+ \S+ \[[^\]]*\] "(\S+) (\S+) [^"]*" (\d{3}) (\d+|-)')
AccessLine = collections.namedtuple("AccessLine", "method path status size line")


class Registry:
    """A real docker-registry (distribution 2.8) on 127.0.0.1:random.

    tls: None or a Cert from make_cert().  auth: None, ("htpasswd", {user: password}) or
    ("token", TokenServer).  Its access log (Apache combined format, which the registry
    writes to stdout) goes to access.log; everything else to registry.log."""

    def __init__(self, ws, tls=None, auth=None, name="registry", log_level="info",
                 start=True, extra_config=None):
        self.ws = ws
        self.tls = tls
        self.auth = auth
        self.dir = ws.unique(name)
        self.storage = os.path.join(self.dir, "storage")
        self.config = os.path.join(self.dir, "config.yml")
        self.access_log = os.path.join(self.dir, "access.log")
        self.log = os.path.join(self.dir, "registry.log")
        self.log_level = log_level
        self.extra_config = extra_config or ""
        self.port = None
        self.proc = None
        if start:
            self.start()

    @property
    def scheme(self):
        return "https" if self.tls else "http"

    @property
    def host(self):
        return "127.0.0.1:%d" % self.port

    @property
    def url(self):
        return "%s://%s" % (self.scheme, self.host)

    @property
    def ca(self):
        return self.tls.ca if self.tls else None

    def _write_config(self):
        lines = [
            "version: 0.1",
            "log:",
            "  level: %s" % self.log_level,
            "  accesslog:",
            "    disabled: false",
            "storage:",
            "  filesystem:",
            "    rootdirectory: %s" % self.storage,
            "  delete:",
            "    enabled: true",
            "  maintenance:",
            "    uploadpurging:",
            "      enabled: false",
            "http:",
            "  addr: 127.0.0.1:%d" % self.port,
            "  secret: rgmtest-secret",
            "  draintimeout: 1s",
        ]
        if self.tls:
            lines += ["  tls:", "    certificate: %s" % self.tls.chain,
                      "    key: %s" % self.tls.key]
        if self.auth:
            kind, arg = self.auth
            if kind == "htpasswd":
                pw = os.path.join(self.dir, "htpasswd")
                with open(pw, "w") as f:
                    for user, password in arg.items():
                        f.write(run(["htpasswd", "-Bbn", user, password]).out.strip() + "\n")
                lines += ["auth:", "  htpasswd:", "    realm: rgmtest-basic",
                          "    path: %s" % pw]
            elif kind == "token":
                lines += ["auth:", "  token:",
                          "    realm: %s" % arg.realm,
                          "    service: %s" % arg.service,
                          "    issuer: %s" % arg.issuer,
                          "    rootcertbundle: %s" % arg.cert]
            else:
                raise ValueError("unknown auth kind %r" % kind)
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n" + self.extra_config)

    def start(self, timeout=20):
        """Start (again, on the same storage and, if possible, the same port)."""
        attempts = 3
        for attempt in range(attempts):
            if self.port is None or attempt > 0:
                self.port = free_port()
            self._write_config()
            self.proc = self.ws.spawn(["docker-registry", "serve", self.config], self.log,
                                      stdout_log=self.access_log)
            try:
                wait_for(self._ready, timeout=timeout, what="docker-registry on %s" % self.url)
                return self
            except (TimeoutError, ProcessExited) as e:
                self.proc.stop(timeout=1)
                inuse = "address already in use" in self.log_text().lower()
                if not inuse or attempt == attempts - 1:
                    raise RuntimeError("docker-registry did not start (%s):\n%s"
                                       % (e, self.log_text()[-4000:]))

    def _ready(self):
        if not self.proc.alive():
            raise ProcessExited("docker-registry exited (rc %s)" % self.proc.p.returncode)
        st, _, _ = http("GET", self.url + "/v2/", timeout=2, ca=self.ca)
        return st in (200, 401)

    def stop(self, timeout=10):
        if self.proc:
            rc = self.proc.stop(timeout=timeout)
            self.proc = None
            return rc

    def log_text(self):
        with open(self.log, "rb") as f:
            return f.read().decode(errors="replace")

    def access_log_lines(self):
        """Parsed access log: list of AccessLine(method, path, status, size, line).
        path includes the query string."""
        out = []
        try:
            with open(self.access_log, "rb") as f:
                data = f.read().decode(errors="replace")
        except FileNotFoundError:
            return out
        for line in data.splitlines():
            m = _ACCESS_RE.match(line)
            if m:
                size = m.group(5)
                out.append(AccessLine(m.group(2), m.group(3), int(m.group(4)),
                                      0 if size == "-" else int(size), line))
        return out

    def count_requests(self, method, path_substring, status=None):
        """How many requests with this method (or list/tuple of methods, or None = any)
        whose path contains path_substring (a str, or a compiled regex searched in the
        path) — and status, if given — the registry has logged so far.
        The log is written after the response: allow a few ms, or use wait_count()."""
        if isinstance(method, str):
            method = (method,)
        n = 0
        for a in self.access_log_lines():
            if method and a.method not in method:
                continue
            if hasattr(path_substring, "search"):
                if not path_substring.search(a.path):
                    continue
            elif path_substring not in a.path:
                continue
            if status is not None and a.status != status:
                continue
            n += 1
        return n

    def wait_count(self, method, path_substring, want, timeout=3.0, status=None):
        """Wait (bounded) until count_requests reaches want; returns the last count."""
        deadline = time.monotonic() + timeout
        while True:
            n = self.count_requests(method, path_substring, status=status)
            if n >= want or time.monotonic() > deadline:
                return n
            time.sleep(0.05)

    def request(self, method, path, headers=None, creds=None, timeout=30):
        """HTTP to this registry answering auth challenges (see auth_request)."""
        return auth_request(method, self.url + path, headers=headers, creds=creds,
                            timeout=timeout, ca=self.ca)

    def manifest_digest(self, name, ref, creds=None):
        st, h, b = self.request("HEAD", "/v2/%s/manifests/%s" % (name, ref),
                                headers={"Accept": MANIFEST_ACCEPT}, creds=creds)
        if st != 200:
            raise RuntimeError("HEAD manifest %s:%s on %s: %d" % (name, ref, self.url, st))
        return h["docker-content-digest"]


# --------------------------------------------------------------------------------------
# Token server (docker token auth, RS256 JWTs signed with the openssl CLI)

def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


TokenRequest = collections.namedtuple("TokenRequest", "method user ok scopes granted status")


class TokenServer:
    """Token endpoint for docker-registry `auth: token`, in a thread of the test process.

    users: {user: password} checked with Basic auth on GET /token (and the OAuth2
    password grant on POST /token).  refresh_tokens: {token: user} for the OAuth2
    refresh_token grant on POST /token (what docker sends for a credential helper's identity
    token); an unknown one gets 400 invalid_grant (RFC 6749 §5.2).  Default policy: repository `public/*` → pull to
    anyone, push too to valid users; anything else (`private/*` included) → whatever a
    valid user asks, nothing to anonymous.  policy=callable(user|None, type, name,
    actions) → granted actions overrides it.  expires_in is the lifetime announced to the
    client (and put in the exp claim, plus exp_offset; note the registry accepts tokens up
    to 60 s after exp — use exp_offset=-60 to make it reject them right at expires_in).
    Every request is recorded in .requests (TokenRequest); every POST's form also in .forms
    ({field: first value}, secrets included: for the test's eyes only)."""

    def __init__(self, ws, users=None, policy=None, expires_in=300, service="rgmtest-registry",
                 issuer="rgmtest-issuer", exp_offset=0, refresh_tokens=None):
        self.ws = ws
        self.users = dict(users or {})
        self.refresh_tokens = dict(refresh_tokens or {})
        self.forms = []
        self.policy = policy
        self.expires_in = expires_in
        self.exp_offset = exp_offset
        self.service = service
        self.issuer = issuer
        self.requests = []
        self.fail_status = None     # set to e.g. 500 to make the endpoint fail
        self.dir = ws.unique("token")
        self.key = os.path.join(self.dir, "token.key")
        self.cert = os.path.join(self.dir, "token.crt")
        run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.key,
             "-out", self.cert, "-days", "30", "-subj", "/CN=rgmtest token signer"])
        der = subprocess.run(["openssl", "x509", "-in", self.cert, "-outform", "DER"],
                             capture_output=True, check=True, timeout=30).stdout
        self.x5c = base64.b64encode(der).decode()
        self._lock = threading.Lock()
        server = self
        self.httpd = _QuietServer(("127.0.0.1", 0), _make_token_handler(server))
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        _cleanup.add(self.stop)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    @property
    def realm(self):
        return self.url + "/token"

    def stop(self):
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def grant(self, user, rtype, name, actions):
        if self.policy:
            return list(self.policy(user, rtype, name, list(actions)))
        if rtype != "repository":
            return list(actions) if user else []
        if name.startswith("public/"):
            return list(actions) if user else [a for a in actions if a == "pull"]
        return list(actions) if user else []

    def sign(self, claims):
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing_input = (_b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         _b64url(json.dumps(claims, separators=(",", ":")).encode()))
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key],
                             input=signing_input.encode(), capture_output=True, check=True,
                             timeout=30).stdout
        return signing_input + "." + _b64url(sig)

    def issue(self, user, scopes, service=None):
        """Returns (token, granted access list) for user (None = anonymous)."""
        now = int(time.time())
        access = []
        for rtype, name, actions in scopes:
            granted = self.grant(user, rtype, name, actions)
            if granted:
                access.append({"type": rtype, "name": name, "actions": granted})
        claims = {"iss": self.issuer, "sub": user or "", "aud": service or self.service,
                  "exp": now + self.expires_in + self.exp_offset, "nbf": now - 10,
                  "iat": now, "jti": uuid.uuid4().hex, "access": access}
        return self.sign(claims), access

    def count(self, user=Ellipsis, ok=None):
        """Number of recorded token requests (optionally by user, by success)."""
        return sum(1 for r in self.requests
                   if (user is Ellipsis or r.user == user) and (ok is None or r.ok == ok))


def parse_scopes(scope_strings):
    scopes = []
    for s in scope_strings:
        for one in s.split(" "):
            if not one:
                continue
            parts = one.split(":")
            if len(parts) < 3:
                continue
            # the name may contain a port (host:port/name): type:name...:actions
            rtype, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1]
            scopes.append((rtype, name, [a for a in actions.split(",") if a]))
    return scopes


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass


def _make_token_handler(ts):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def _reply(self, status, obj, extra=None):
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _basic_user(self):
            h = self.headers.get("Authorization", "")
            if not h.lower().startswith("basic "):
                return None, False
            try:
                u, _, p = base64.b64decode(h[6:].strip()).decode().partition(":")
            except Exception:
                return None, True
            return (u if ts.users.get(u) == p and u in ts.users else None), True

        def _finish(self, method, user, tried, scope_strings, service, oauth):
            scopes = parse_scopes(scope_strings)
            if ts.fail_status:
                with ts._lock:
                    ts.requests.append(TokenRequest(method, user, False, scopes, [],
                                                    ts.fail_status))
                return self._reply(ts.fail_status, {"error": "configured failure"})
            if tried and user is None:
                with ts._lock:
                    ts.requests.append(TokenRequest(method, None, False, scopes, [], 401))
                return self._reply(401, {"errors": [{"code": "UNAUTHORIZED",
                                                     "message": "bad credentials"}]},
                                   {"WWW-Authenticate": 'Basic realm="rgmtest-token"'})
            token, access = ts.issue(user, scopes, service)
            with ts._lock:
                ts.requests.append(TokenRequest(method, user, True, scopes, access, 200))
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            obj = {"token": token, "access_token": token, "expires_in": ts.expires_in,
                   "issued_at": now}
            if oauth:
                obj["scope"] = " ".join(scope_strings)
            return self._reply(200, obj)

        def do_GET(self):
            u = urllib.parse.urlsplit(self.path)
            if u.path != "/token":
                return self._reply(404, {"error": "not found"})
            q = urllib.parse.parse_qs(u.query)
            user, tried = self._basic_user()
            self._finish("GET", user, tried, q.get("scope", []),
                         (q.get("service") or [None])[0], False)

        def do_POST(self):
            u = urllib.parse.urlsplit(self.path)
            n = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(n).decode(errors="replace"))
            with ts._lock:
                ts.forms.append({k: v[0] for k, v in form.items()})
            if u.path != "/token":
                return self._reply(404, {"error": "not found"})
            grant = (form.get("grant_type") or [""])[0]
            user, tried = None, False
            if grant == "password":
                tried = True
                un = (form.get("username") or [""])[0]
                pw = (form.get("password") or [None])[0]
                if un in ts.users and ts.users[un] == pw:
                    user = un
            elif grant == "refresh_token":
                tried = True   # we never hand out refresh tokens; the test gives them
                rt = (form.get("refresh_token") or [""])[0]
                user = ts.refresh_tokens.get(rt) if rt else None
                if user is None and not ts.fail_status:
                    with ts._lock:
                        ts.requests.append(TokenRequest("POST", None, False,
                                                        parse_scopes(form.get("scope", [])),
                                                        [], 400))
                    return self._reply(400, {"error": "invalid_grant"})
            else:
                user, tried = self._basic_user()
            self._finish("POST", user, tried, form.get("scope", []),
                         (form.get("service") or [None])[0], True)
    return H


# --------------------------------------------------------------------------------------
# synthetic images (OCI image layout) and pushing them with skopeo

def _random_layer(size, seed=None):
    """A gzip'd tar with one file of `size` random bytes.  Returns (gz bytes, diff_id)."""
    data = os.urandom(size)
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("data/" + uuid.uuid4().hex + ".bin")
        ti.size = size
        ti.mtime = 0
        ti.mode = 0o644
        tf.addfile(ti, io.BytesIO(data))
    tar = tbuf.getvalue()
    gz = gzip.compress(tar, compresslevel=1, mtime=0)
    return gz, sha256_digest(tar)


def _put_blob(layout, data):
    d = sha256_digest(data)
    p = os.path.join(layout, "blobs", "sha256", d[7:])
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)
    return d


def _json_bytes(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def _split_name_tag(name_tag):
    name, sep, tag = name_tag.rpartition(":")
    if not sep or "/" in tag:
        return name_tag, "latest"
    return name, tag


def _new_layout(ws, name_tag):
    d = ws.unique("image-" + re.sub(r"[^A-Za-z0-9_.-]", "_", name_tag))
    with open(os.path.join(d, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    return d


def _build_manifest(layout, layers, platform):
    os_, arch = platform[0], platform[1]
    variant = platform[2] if len(platform) > 2 else None
    descs, diff_ids, layer_info = [], [], []
    for size in layers:
        gz, diff_id = _random_layer(size)
        d = _put_blob(layout, gz)
        descs.append({"mediaType": MT_OCI_LAYER, "digest": d, "size": len(gz)})
        diff_ids.append(diff_id)
        layer_info.append({"digest": d, "size": len(gz), "diff_id": diff_id,
                           "path": os.path.join(layout, "blobs", "sha256", d[7:])})
    config = {"architecture": arch, "os": os_, "created": "2024-01-01T00:00:00Z",
              "config": {"Env": ["PATH=/bin"], "Labels": {"rgmtest": uuid.uuid4().hex}},
              "rootfs": {"type": "layers", "diff_ids": diff_ids},
              "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "rgmtest"}
                          for _ in layers]}
    if variant:
        config["variant"] = variant
    cb = _json_bytes(config)
    cd = _put_blob(layout, cb)
    manifest = {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
                "config": {"mediaType": MT_OCI_CONFIG, "digest": cd, "size": len(cb)},
                "layers": descs}
    mb = _json_bytes(manifest)
    md = _put_blob(layout, mb)
    plat = {"os": os_, "architecture": arch}
    if variant:
        plat["variant"] = variant
    return {"manifest": md, "manifest_bytes": mb, "manifest_size": len(mb),
            "media_type": MT_OCI_MANIFEST, "config": cd, "config_size": len(cb),
            "layers": layer_info, "platform": plat}


def _write_index_json(layout, tag, digest, size, media_type):
    idx = {"schemaVersion": 2, "manifests": [{
        "mediaType": media_type, "digest": digest, "size": size,
        "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    with open(os.path.join(layout, "index.json"), "wb") as f:
        f.write(_json_bytes(idx))


def make_image(ws, name_tag, layers=(1024, 2048), platform=("linux", "amd64")):
    """Single-platform image as an OCI layout directory.  Layers are gzip'd tars each
    holding one file of the given number of random bytes.  Returns a dict:
    name, tag, dir, src ('oci:DIR:TAG'), manifest (digest), manifest_bytes, media_type,
    config, config_size, layers [{digest, size, diff_id, path}], platform, blobs
    (digest → path of every blob, manifest included), kind='image'."""
    name, tag = _split_name_tag(name_tag)
    layout = _new_layout(ws, name_tag)
    m = _build_manifest(layout, layers, platform)
    _write_index_json(layout, tag, m["manifest"], m["manifest_size"], MT_OCI_MANIFEST)
    m.update({"name": name, "tag": tag, "dir": layout, "src": "oci:%s:%s" % (layout, tag),
              "kind": "image", "blobs": _blob_paths(layout)})
    return m


def make_index_image(ws, name_tag, platforms=(("linux", "amd64"), ("linux", "arm64")),
                     layers=(1024, 2048)):
    """Multi-arch image index, each platform with its own random layers.  Returns a dict:
    name, tag, dir, src, manifest (index digest), manifest_bytes, media_type (OCI index),
    images [per-platform dicts as make_image's], blobs, kind='index'."""
    name, tag = _split_name_tag(name_tag)
    layout = _new_layout(ws, name_tag)
    images = [_build_manifest(layout, layers, p) for p in platforms]
    index = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": [
        {"mediaType": MT_OCI_MANIFEST, "digest": im["manifest"], "size": im["manifest_size"],
         "platform": im["platform"]} for im in images]}
    ib = _json_bytes(index)
    idig = _put_blob(layout, ib)
    _write_index_json(layout, tag, idig, len(ib), MT_OCI_INDEX)
    return {"name": name, "tag": tag, "dir": layout, "src": "oci:%s:%s" % (layout, tag),
            "manifest": idig, "manifest_bytes": ib, "manifest_size": len(ib),
            "media_type": MT_OCI_INDEX, "images": images, "kind": "index",
            "blobs": _blob_paths(layout)}


def _blob_paths(layout):
    out = {}
    root = os.path.join(layout, "blobs", "sha256")
    for fn in os.listdir(root):
        out["sha256:" + fn] = os.path.join(root, fn)
    return out


def push(image, registry, name_tag=None, fmt=None, creds=None, timeout=120):
    """Push an image from make_image/make_index_image to a Registry with skopeo.
    fmt: None (keep OCI), 'v2s2' (Docker schema 2; for an index: a Docker manifest list)
    or 'oci'.  creds: (user, password).  Returns a dict: ref ('HOST/name:tag'), name, tag,
    digest (Docker-Content-Digest of the tag as the registry serves it), media_type,
    manifest_bytes (as the registry serves them), image (the source dict)."""
    name, tag = _split_name_tag(name_tag) if name_tag else (image["name"], image["tag"])
    dest = "docker://%s/%s:%s" % (registry.host, name, tag)
    cmd = ["skopeo", "copy", "--quiet", "--retry-times", "2"]
    if image.get("kind") == "index":
        cmd.append("--all")
    if fmt:
        cmd += ["--format", fmt]
    if registry.tls:
        certdir = os.path.join(registry.dir, "skopeo-certs")
        if not os.path.isdir(certdir):
            os.makedirs(certdir)
            shutil.copy(registry.tls.ca, os.path.join(certdir, "ca.crt"))
        cmd += ["--dest-cert-dir", certdir]
    else:
        cmd.append("--dest-tls-verify=false")
    if creds:
        cmd += ["--dest-creds", "%s:%s" % creds]
    else:
        cmd.append("--dest-no-creds")
    env = dict(os.environ)
    env["REGISTRY_AUTH_FILE"] = os.path.join(registry.ws.dir, "no-auth.json")
    env.pop("http_proxy", None)
    env.pop("https_proxy", None)
    env.pop("HTTP_PROXY", None)
    env.pop("HTTPS_PROXY", None)
    cmd += [image["src"], dest]
    run(cmd, timeout=timeout, env=env)
    st, h, body = registry.request("GET", "/v2/%s/manifests/%s" % (name, tag),
                                   headers={"Accept": MANIFEST_ACCEPT}, creds=creds)
    if st != 200:
        raise RuntimeError("pushed %s but GET manifest answered %d: %r" % (dest, st, body))
    return {"ref": "%s/%s:%s" % (registry.host, name, tag), "name": name, "tag": tag,
            "digest": h["docker-content-digest"],
            "media_type": h.get("content-type", "").split(";")[0],
            "manifest_bytes": body, "image": image}


# --------------------------------------------------------------------------------------
# containerd 1.6 + ctr

CONTAINERD_DISABLED = [
    "io.containerd.grpc.v1.cri",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
]


class Containerd:
    """A private containerd (root, state, grpc socket in the workspace), namespace 'test'.
    A second node is just another Containerd(ws)."""

    def __init__(self, ws, name="containerd", namespace="test"):
        self.ws = ws
        self.dir = ws.unique(name)
        self.root = os.path.join(self.dir, "root")
        self.state = os.path.join(self.dir, "state")
        self.address = os.path.join(self.dir, "c.sock")
        self.config = os.path.join(self.dir, "config.toml")
        self.log = os.path.join(self.dir, "containerd.log")
        self.namespace = namespace
        with open(self.config, "w") as f:
            f.write('version = 2\nroot = "%s"\nstate = "%s"\n' % (self.root, self.state))
            f.write("disabled_plugins = [%s]\n" % ", ".join('"%s"' % p
                                                           for p in CONTAINERD_DISABLED))
            f.write('[grpc]\n  address = "%s"\n' % self.address)
            f.write('[ttrpc]\n  address = "%s.ttrpc"\n' % self.address)
            f.write('[debug]\n  address = ""\n  level = "info"\n')
            f.write('[metrics]\n  address = ""\n')
            f.write('[plugins]\n  [plugins."io.containerd.internal.v1.opt"]\n'
                    '    path = "%s"\n' % os.path.join(self.dir, "opt"))
        self.proc = ws.spawn(["containerd", "--config", self.config], self.log)
        try:
            wait_for(self._ready, timeout=30, what="containerd socket")
        except (TimeoutError, ProcessExited):
            raise RuntimeError("containerd did not start:\n" + self.proc.log_text()[-4000:])

    def _ready(self):
        if not self.proc.alive():
            raise ProcessExited("containerd exited (rc %s)" % self.proc.p.returncode)
        if not os.path.exists(self.address):
            return False
        return run(["ctr", "--address", self.address, "version"], timeout=10,
                   check=False).rc == 0

    def ctr(self, *args, timeout=120):
        """Run ctr against this containerd; returns Result(rc, out)."""
        return run(["ctr", "--address", self.address, "-n", self.namespace] + list(args),
                   timeout=timeout, check=False)

    def fetch(self, ref, hosts_dir, user=None, timeout=120, extra=()):
        """`ctr content fetch --hosts-dir DIR [--user u:p] REF`; returns (rc, output).
        user: 'u:p' or (u, p)."""
        args = ["content", "fetch", "--hosts-dir", hosts_dir]
        if user:
            args += ["--user", user if isinstance(user, str) else "%s:%s" % tuple(user)]
        args += list(extra) + [ref]
        r = self.ctr(*args, timeout=timeout)
        return r.rc, r.out

    def content_digests(self):
        """Digests of the blobs in this containerd's content store."""
        r = self.ctr("content", "ls", "-q", timeout=30)
        return set(l.strip() for l in r.out.splitlines() if l.strip().startswith("sha256:"))

    def stop(self):
        return self.proc.stop(timeout=10)

    def log_text(self):
        return self.proc.log_text()


def write_hosts_toml(directory, registry, server_url, mirror_url,
                     capabilities=("pull", "resolve"), ca=None, skip_verify=False,
                     override_path=False):
    """Write DIRECTORY/<registry>/hosts.toml by hand: `server` = server_url (tests must
    make it a CLOSED loopback port, see Workspace.closed_port()), one [host] = mirror_url
    (a plain http:// URL works with containerd 1.6 as is).  Returns the file path."""
    d = os.path.join(directory, registry)
    os.makedirs(d, exist_ok=True)
    lines = ['server = "%s"' % server_url, "", '[host."%s"]' % mirror_url,
             "  capabilities = [%s]" % ", ".join('"%s"' % c for c in capabilities)]
    if ca:
        lines.append('  ca = "%s"' % ca)
    if skip_verify:
        lines.append("  skip_verify = true")
    if override_path:
        lines.append("  override_path = true")
    p = os.path.join(d, "hosts.toml")
    with open(p, "w") as f:
        f.write("\n".join(lines) + "\n")
    return p


# --------------------------------------------------------------------------------------
# the mirror under test

class Mirror:
    """`$RGM_BIN serve --listen 127.0.0.1:PORT --storage DIR [--config FILE] args...`.
    config: a dict written as JSON to a file passed with --config.  Output (stdout and
    stderr) goes to mirror.log."""

    def __init__(self, ws, args=(), config=None, name="mirror", storage=None, start=True,
                 env=None, wait_path="/v2/"):
        self.ws = ws
        self.dir = ws.unique(name)
        self.storage = storage or os.path.join(self.dir, "storage")
        self.log = os.path.join(self.dir, "mirror.log")
        self.args = list(args)
        self.config = config
        self.config_file = None
        self.env = env
        self.wait_path = wait_path
        self.port = None
        self.proc = None
        if start:
            self.start()

    @property
    def host(self):
        return "127.0.0.1:%d" % self.port

    @property
    def url(self):
        return "http://%s" % self.host

    def command(self):
        cmd = [RGM_BIN, "serve", "--listen", self.host, "--storage", self.storage]
        if self.config is not None:
            self.config_file = os.path.join(self.dir, "config.json")
            with open(self.config_file, "w") as f:
                json.dump(self.config, f, indent=2)
            cmd += ["--config", self.config_file]
        return cmd + self.args

    def start(self, timeout=20, same_port=True):
        if not (os.path.isfile(RGM_BIN) and os.access(RGM_BIN, os.X_OK)):
            raise RuntimeError("regmirror binary not found: %s (set RGM_BIN)" % RGM_BIN)
        for attempt in range(3):
            if self.port is None or attempt > 0 or not same_port:
                self.port = free_port()
            # The mirror honours HTTPS_PROXY & co. (issue 14): a proxy set where the tests run
            # would take their loopback upstreams away; a test that wants one passes it in env.
            env = {k: v for k, v in os.environ.items()
                   if k.lower() not in ("http_proxy", "https_proxy", "no_proxy")}
            env.update(self.env or {})
            self.proc = self.ws.spawn(self.command(), self.log, env=env)
            try:
                wait_for(self._ready, timeout=timeout, what="regmirror on %s" % self.url)
                return self
            except (TimeoutError, ProcessExited) as e:
                self.proc.stop(timeout=1)
                self.proc = None
                log = self.log_text()
                inuse = re.search(r"address already in use|EADDRINUSE", log, re.I)
                if not inuse or attempt == 2:
                    raise RuntimeError("regmirror did not start (%s):\n%s" % (e, log[-4000:]))

    def _ready(self):
        if not self.proc.alive():
            raise ProcessExited("regmirror exited (rc %s)" % self.proc.p.returncode)
        st, _, _ = http("GET", self.url + self.wait_path, timeout=2)
        return st == 200

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Stop with sig; returns the exit code (negative: killed by that signal)."""
        if self.proc is None:
            return None
        rc = self.proc.stop(sig=sig, timeout=timeout)
        self.proc = None
        return rc

    def restart(self, **kw):
        self.stop()
        return self.start(**kw)

    def alive(self):
        return self.proc is not None and self.proc.alive()

    def log_text(self):
        try:
            with open(self.log, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def get(self, path, headers=None, method="GET", timeout=30):
        """http() to this mirror; returns (status, headers, body)."""
        return http(method, self.url + path, headers=headers, timeout=timeout)

    def metrics(self):
        """/metrics parsed as {'name{labels}': float}."""
        st, _, b = self.get("/metrics")
        out = {}
        if st != 200:
            return out
        for line in b.decode(errors="replace").splitlines():
            if not line or line.startswith("#"):
                continue
            k, _, v = line.rpartition(" ")
            try:
                out[k] = float(v)
            except ValueError:
                pass
        return out

    def hosts(self, out_dir, registries=(), extra=()):
        """Run `regmirror hosts --mirror URL --registry R... --out DIR`; returns Result."""
        cmd = [RGM_BIN, "hosts", "--mirror", self.url, "--out", out_dir]
        for r in registries:
            cmd += ["--registry", r]
        return run(cmd + list(extra), timeout=30, check=False)


# --------------------------------------------------------------------------------------
# what a real client sent: a recording forwarder in front of a server

SpyRequest = collections.namedtuple("SpyRequest", "method path headers status")


class HeaderSpy:
    """HTTP/1.1 forwarder on 127.0.0.1:random in front of target_url (e.g. the mirror):
    every request is passed on unchanged (hop-by-hop headers aside, one upstream connection
    per request) and recorded in .requests as SpyRequest(method, path with query, headers
    with lower-case names, status answered).  For checking what a real client sends, e.g.
    whether it sends Authorization to a mirror at all."""

    HOP = ("connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
           "trailer", "upgrade")

    def __init__(self, ws, target_url):
        self.ws = ws
        self.target = target_url.rstrip("/")
        self.requests = []
        self._lock = threading.Lock()
        self.httpd = _QuietServer(("127.0.0.1", 0), _make_spy_handler(self))
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        _cleanup.add(self.stop)

    @property
    def host(self):
        return "127.0.0.1:%d" % self.port

    @property
    def url(self):
        return "http://" + self.host

    def stop(self):
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def with_header(self, name):
        """The recorded requests that carried header name."""
        with self._lock:
            return [r for r in self.requests if name.lower() in r.headers]

    def clear(self):
        with self._lock:
            self.requests = []


def _make_spy_handler(spy):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def _forward(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n > 0 else None
            hdrs = {k: v for k, v in self.headers.items() if k.lower() not in spy.HOP}
            conn, _ = _conn_for(spy.target + "/", 60)
            try:
                conn.request(self.command, self.path, body=body, headers=hdrs)
                resp = conn.getresponse()
                data = resp.read()
                with spy._lock:
                    spy.requests.append(SpyRequest(self.command, self.path,
                                                   {k.lower(): v for k, v in self.headers.items()},
                                                   resp.status))
                self.send_response_only(resp.status, resp.reason)
                clen = None
                for k, v in resp.getheaders():
                    if k.lower() in spy.HOP:
                        continue
                    if k.lower() == "content-length":
                        clen = v
                        continue
                    self.send_header(k, v)
                if self.command == "HEAD":
                    if clen is not None:
                        self.send_header("Content-Length", clen)
                else:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
            finally:
                conn.close()

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    return H


# --------------------------------------------------------------------------------------
# a network namespace of the test's own

def private_netns():
    """Move this test process, and so every process it starts from now on, into a new
    network namespace with only loopback, and bring it up: a client with a built-in
    fallback to the internet (Docker falls back to registry-1.docker.io when its mirror
    fails) then reaches nothing.  Call it first, before any thread or child process
    exists (unshare(2) moves the calling thread only).  Nothing to clean up: the namespace
    goes away with the last process in it, whatever way the test ends.  Returns the
    output of `ip -o link` and `ip route` inside it, for the test to check."""
    import ctypes
    if threading.active_count() != 1:
        raise RuntimeError("private_netns() must run before any thread is started")
    libc = ctypes.CDLL(None, use_errno=True)
    clone_newnet = 0x40000000
    if libc.unshare(clone_newnet) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "unshare(CLONE_NEWNET): %s" % os.strerror(e))
    run(["ip", "link", "set", "lo", "up"], timeout=10)
    links = run(["ip", "-o", "link"], timeout=10).out
    routes = run(["ip", "route"], timeout=10).out
    return links, routes


# ---- the mirror's access log, as the client tests read it ----

ACCESS_LINE = re.compile(r'\bmod=access method=(\S+) path="((?:[^"\\]|\\.)*)" status=(\d+)'
                         r'(?:.*?\bcache=(\S+))?')


def mirror_access(m):
    """The access-log lines of Mirror m: [(method, path, status, cache)]."""
    out = []
    for line in m.log_text().splitlines():
        mm = ACCESS_LINE.search(line)
        if mm:
            out.append((mm.group(1), mm.group(2), int(mm.group(3)), mm.group(4)))
    return out


def access_route(method, path):
    """"GET blobs", "HEAD manifests", "GET base" ...: a request line by route kind."""
    p = path.split("?")[0]
    kind = "other"
    for k in ("manifests", "blobs", "tags"):
        if "/%s/" % k in p:
            kind = k
    if p in ("/v2", "/v2/"):
        kind = "base"
    return "%s %s" % (method, kind)
