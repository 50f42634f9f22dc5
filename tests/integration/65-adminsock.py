#!/usr/bin/env python3
"""The admin socket: serve listens on <storage>/admin.sock (mode 0600); ls --images, pin,
unpin and purge go through it while the server runs; a purged image is fetched again; pinned
purges need --force; the admin API is not on the TCP listener; a peer of another uid is
refused (mode bits, and SO_PEERCRED when the mode is opened); bodies over 64 KiB get 413."""
import json
import re
import os
import socket
import stat
import subprocess
import time

import fakeup
from rgmtest import *

t = TAP(timeout=240)
ws = Workspace()
up = fakeup.FakeUpstream()
base = os.urandom(50_000)
imgs = [up.add_image("library/app%d" % i, "v1", layers=(base, os.urandom(20_000)))
        for i in range(3)]


def blob_path(storage, d):
    h = d.split(":")[1]
    return os.path.join(storage, "blobs", "sha256", h[:2], h)


def pull(m, i):
    st, _, _ = m.get("/v2/library/app%d/manifests/v1" % i, headers={"Accept": MANIFEST_ACCEPT})
    ok = st == 200
    for d in [imgs[i]["config"]] + imgs[i]["layers"]:
        st, _, b = m.get("/v2/library/app%d/blobs/%s" % (i, d))
        ok = ok and st == 200 and sha256_digest(b) == d
    return ok


def usock(path, data, timeout=10):
    """Send data on the unix socket at path; the answer until EOF (b"" if closed at once)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def req(method, path, body=None, extra=""):
    body = body if body is not None else b""
    return ("%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n%s\r\n" %
            (method, path, len(body), extra)).encode() + body


def status_of(answer):
    try:
        return int(answer.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


def body_of(answer):
    try:
        return json.loads(answer.split(b"\r\n\r\n", 1)[1])
    except (IndexError, ValueError):
        return None


reg = {"docker.io": {"endpoint": up.url, "tag_ttl": "1s"}}
m = Mirror(ws, config={"registries": reg}, env={"RGM_TALLY_INTERVAL_MS": "100"})
sock = os.path.join(m.storage, "admin.sock")
for i in range(3):
    t.ok(pull(m, i), "image %d pulled" % i)
st = os.lstat(sock) if os.path.exists(sock) else None
t.ok(st is not None and stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600,
     "serve listens on <storage>/admin.sock with mode 0600")

# The commands go through the socket while the server owns the storage.
r = run([RGM_BIN, "ls", "--images", "--json", "--storage", m.storage], check=False)
try:
    listing = json.loads(r.out[r.out.index("["):])
except ValueError:
    listing = []
t.ok(r.rc == 0 and len(listing) == 3, "ls --images beside the server lists 3 images",
     diag=r.out)
t.like(m.log_text(), r'mod=admin .*GET /images', "ls --images went through the admin socket")

r = run([RGM_BIN, "pin", "--storage", m.storage, "app1:v1"], check=False)
t.ok(r.rc == 0 and "pinned docker.io/library/app1:v1" in r.out, "pin through the socket",
     diag=r.out)
r = run([RGM_BIN, "purge", "--storage", m.storage, "app1:v1"], check=False)
t.ok(r.rc == 1 and "pinned" in r.out and os.path.exists(blob_path(m.storage, imgs[1]["manifest"])),
     "a pinned purge is refused without --force", diag=r.out)

n_manifest = up.count("GET", "/library/app0/manifests/")
r = run([RGM_BIN, "purge", "--storage", m.storage, "app0:v1"], check=False)
t.ok(r.rc == 0 and "purged app0:v1" in r.out and
     not os.path.exists(blob_path(m.storage, imgs[0]["manifest"])) and
     not os.path.exists(blob_path(m.storage, imgs[0]["layers"][1])) and
     os.path.exists(blob_path(m.storage, imgs[0]["layers"][0])),
     "purge against the running server removes the image, keeps the shared layer", diag=r.out)
t.like(m.log_text(), r'mod=admin .*POST /purge', "purge went through the admin socket")
time.sleep(1.1)  # past tag_ttl: the tag is checked upstream again
t.ok(pull(m, 0), "the purged image pulls again")
t.ok(up.count("GET", "/library/app0/manifests/") > n_manifest and
     up.count("GET", "/library/app0/blobs/" + imgs[0]["layers"][1]) == 2,
     "the purged image was fetched again from the upstream")

r = run([RGM_BIN, "purge", "--storage", m.storage, "--force", "app1:v1"], check=False)
t.ok(r.rc == 0 and "unpinned docker.io/library/app1:v1" in r.out and
     not os.path.exists(blob_path(m.storage, imgs[1]["manifest"])),
     "purge --force through the socket unpins and removes", diag=r.out)
r = run([RGM_BIN, "unpin", "--storage", m.storage, "app1:v1"], check=False)
t.ok(r.rc == 1 and "was not pinned" in r.out, "unpin through the socket: no pin left",
     diag=r.out)



def metric(name):
    st_, _, b = m.get("/metrics")
    mm = re.search(r"^%s (\d+)$" % re.escape(name), b.decode(), re.M)
    return int(mm.group(1)) if mm else None


t.is_(metric('regmirror_evicted_images_total{reason="purge"}'), 2,
      "/metrics: 2 images evicted by purge")
t.ok(metric('regmirror_evicted_objects_total{reason="purge"}') >= 4 and
     metric('regmirror_evicted_bytes_total{reason="purge"}') >= 40_000,
     "/metrics: objects and bytes evicted by purge")
try:
    wait_for(lambda: metric("regmirror_cache_images") == 2, timeout=5, what="tally")
    tally_ok = True
except TimeoutError:
    tally_ok = False
t.ok(tally_ok and metric('regmirror_cache_image_bytes{kind="shared"}') >= 2 * 50_000 and
     metric('regmirror_cache_image_bytes{kind="unique"}') >= 2 * 20_000,
     "/metrics: 2 images cached, the shared base counted per image, unique layers")
usock(sock, req("POST", "/pin", b'{"references": ["app2:v1"]}'))
try:
    wait_for(lambda: metric("regmirror_cache_pinned_images") == 1, timeout=5, what="pinned")
    pin_ok = True
except TimeoutError:
    pin_ok = False
t.ok(pin_ok and metric("regmirror_cache_pinned_bytes") >= 70_000,
     "/metrics: the pinned image and its bytes")

# The admin API itself.
a = usock(sock, req("GET", "/stats"))
s = body_of(a) or {}
t.ok(status_of(a) == 200 and s.get("images") == 2 and s["evictions"]["purge"]["images"] == 2,
     "GET /stats: 2 images, 2 purged", diag=a[:600])
a = usock(sock, req("GET", "/images"))
t.ok(status_of(a) == 200 and isinstance(body_of(a), list) and len(body_of(a)) == 2,
     "GET /images answers the listing")
a = usock(sock, req("DELETE", "/pin", b'{"references": ["app2:v1"]}'))
a = usock(sock, req("POST", "/pin", b'{"references": ["app2:v1"]}'))
t.ok(status_of(a) == 200 and body_of(a)["pinned"] == ["docker.io/library/app2:v1"],
     "POST /pin with a JSON body")
a = usock(sock, req("DELETE", "/pin", b'{"references": ["app2:v1"]}'))
t.ok(status_of(a) == 200 and body_of(a)["unpinned"] == ["docker.io/library/app2:v1"],
     "DELETE /pin")
t.is_(status_of(usock(sock, req("POST", "/purge", b'{"references": '))), 400,
      "a body that is not JSON: 400")
t.is_(status_of(usock(sock, req("POST", "/purge", b'{}'))), 400, "a purge naming nothing: 400")
a = usock(sock, req("POST", "/purge", b'{"older_than": "18446744073709551615ms"}'))
t.ok(status_of(a) == 200 and body_of(a)["purged"] == [] and
     os.path.exists(blob_path(m.storage, imgs[2]["manifest"])),
     "older_than near 2^64 ms purges nothing (no wrap to every image)", diag=a[:300])
t.is_(status_of(usock(sock, req("GET", "/v2/"))), 404, "the registry API is not on the socket")
t.is_(status_of(usock(sock, req("GET", "/purge"))), 405, "GET /purge: 405")

# Body limit: 64 KiB accepted, one byte more refused (Content-Length and chunked).
pre = b'{"registry": "nowhere.example", "x": "'
pad = pre + b"a" * (64 * 1024 - len(pre) - 2) + b'"}'
t.is_(len(pad), 64 * 1024, "a 64 KiB body")
a = usock(sock, req("POST", "/purge", pad))
t.ok(status_of(a) == 200 and body_of(a)["purged"] == [], "a 64 KiB body is accepted",
     diag=a[:300])
big = pad[:-2] + b'a"}'
t.is_(status_of(usock(sock, req("POST", "/purge", big))), 413,
      "a body of 64 KiB + 1 (Content-Length): 413")
chunks = b"%x\r\n%s\r\n0\r\n\r\n" % (len(big), big)
a = usock(sock, ("POST /purge HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n")
          .encode() + chunks)
t.is_(status_of(a), 413, "a chunked body over 64 KiB: 413")

# Not on TCP: the admin paths are unknown there and bodies are still refused.
st_, _, _ = m.get("/images")
t.is_(st_, 404, "GET /images on the TCP listener: 404")
st_, _, _ = m.get("/stats")
t.is_(st_, 404, "GET /stats on the TCP listener: 404")
a = raw("127.0.0.1", m.port, req("POST", "/purge", b'{"references": ["app2:v1"]}'))
t.ok(a.startswith(b"HTTP/1.1 405") and os.path.exists(blob_path(m.storage, imgs[2]["manifest"])),
     "POST /purge with a body on the TCP listener: 405, nothing purged", diag=a[:200])

# Another uid: the mode keeps it out; with the mode opened, SO_PEERCRED does.
probe = ("import socket,sys\n"
         "s=socket.socket(socket.AF_UNIX)\n"
         "s.settimeout(5)\n"
         "try:\n"
         "    s.connect(sys.argv[1])\n"
         "except OSError as e:\n"
         "    print('connect-failed', e.errno); sys.exit(0)\n"
         "try:\n"
         "    s.sendall(b'GET /images HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n')\n"
         "    d=s.recv(100)\n"
         "except OSError as e:\n"
         "    d=b''\n"
         "print('answer', repr(d))\n")
if os.geteuid() != 0:
    for _ in range(3):
        t.skip("peer uid checks", "needs root to run a client as nobody")
else:
    d = os.path.dirname(ws.path("x"))
    while d not in ("/", "/tmp"):  # let nobody reach the socket's directory
        os.chmod(d, os.stat(d).st_mode | 0o005)
        d = os.path.dirname(d)
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                 "/usr/bin/python3", "-c", probe, sock]
    r = run(as_nobody, check=False)
    t.ok("connect-failed 13" in r.out, "nobody cannot connect: mode 0600", diag=r.out)
    os.chmod(sock, 0o666)
    r = run(as_nobody, check=False)
    t.ok("answer b''" in r.out, "nobody with the mode opened: closed without an answer",
         diag=r.out)
    t.like(m.log_text(), r'client=unix:uid=65534[^ ]* refused: not the server.s uid or root',
           "the refusal is logged with the peer's uid")
    os.chmod(sock, 0o600)

t.is_(m.stop(), 0, "mirror stopped cleanly")
t.ok(not os.path.exists(sock), "the socket file is gone after the stop")

# No server: the commands use the store directly.
r = run([RGM_BIN, "purge", "--storage", m.storage, "app2:v1"], check=False)
t.ok(r.rc == 0 and "purged app2:v1" in r.out and "admin socket" not in r.out,
     "purge without a server acts on the store", diag=r.out)

# prewarm --pin pins what it cached, through the socket; a filtered reference is a failure
# that names the rule.
freg = {"docker.io": {"endpoint": up.url, "tag_ttl": "1s",
                      "repositories": {"deny": ["library/app1"]}}}
mf = Mirror(ws, config={"registries": freg}, name="mfilter")
sockf = os.path.join(mf.storage, "admin.sock")
lst = ws.write("list.txt", "docker.io/library/app2:v1\ndocker.io/library/app1:v1\n")
r = run([RGM_BIN, "prewarm", "--mirror", mf.url, "--pin", "--storage", mf.storage, lst],
        check=False)
t.ok(r.rc == 1 and re.search(r"app1.*403.*repositories\.deny\[0\]", r.out, re.S) and
     "pinned docker.io/library/app2:v1" in r.out,
     "prewarm --pin: the filtered image fails naming the rule, the cached one is pinned",
     diag=r.out)
a = usock(sockf, req("GET", "/images"))
t.ok(status_of(a) == 200 and [(x["reference"], x["pinned"]) for x in body_of(a)] ==
     [("docker.io/library/app2:v1", True)], "the prewarmed image is listed pinned",
     diag=a[:500])
t.like(mf.log_text(), r'mod=admin .*POST /pin', "prewarm --pin went through the admin socket")
r = run([RGM_BIN, "prewarm", "--storage", mf.storage, lst], check=False)
t.is_(r.rc, 2, "prewarm --storage without --pin: usage error")
t.is_(mf.stop(), 0, "filter mirror stopped")

# A stale socket file is replaced at start; a non-socket there stops serve.
m.start()
t.ok(os.path.exists(sock), "restart: the socket is there again")
t.is_(m.stop(), 0, "stopped")
with open(sock, "w") as f:
    f.write("not a socket")
m2 = Mirror(ws, config={"registries": reg}, storage=m.storage, name="m2", start=False)
try:
    m2.start(timeout=5)
    started = True
    m2.stop()
except RuntimeError:
    started = False
t.ok(not started and "cannot listen on the admin socket" in m2.log_text(),
     "a file that is not a socket at the path: serve refuses to start")
os.unlink(sock)
t.done()
