#!/usr/bin/env python3
"""Single-flight blob fetches (issue 4): one upstream fetch per digest, fanned out live to
every client; slow or vanishing clients never slow anyone; memory stays flat.

Real docker-registry behind a throttling TCP relay (written here) for the fan-out,
slow-client, late-joiner and Range checks; fakeup for upstream faults (truncation with and
without resume, wrong digest) and for the max_parallel_fetches check."""
import glob
import hashlib
import http.client
import os
import socket
import threading
import time
import urllib.parse

import fakeup
import rgmtest
from rgmtest import TAP, Workspace, Registry, Mirror, wait_for

t = TAP(timeout=240)
ws = Workspace()

MB = 1 << 20
ASAN = bool(os.environ.get("ASAN_OPTIONS"))


# ---------------------------------------------------------------------------------------
# helpers

class Relay:
    """TCP relay 127.0.0.1:port → 127.0.0.1:target.  The target→client direction of every
    connection is throttled to `rate` bytes/s; client→target is not."""

    def __init__(self, target_port, rate):
        self.target = target_port
        self.rate = rate
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.conns = 0
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(128)
        self.port = self.ls.getsockname()[1]
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()
        ws.add_cleanup(self.stop)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def stop(self):
        self.stopping.set()
        for s in [self.ls] + self.socks:
            try:
                s.close()
            except OSError:
                pass

    def _accept(self):
        while not self.stopping.is_set():
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.target), timeout=10)
                u.settimeout(None)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.conns += 1
                self.socks += [c, u]
            threading.Thread(target=self._pipe, args=(c, u, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(u, c, True), daemon=True).start()

    def _pipe(self, src, dst, throttled):
        # rate read on every chunk (tests change it; the mirror may reuse a pooled
        # connection); no credit builds up while the connection is idle
        nxt = time.monotonic()
        try:
            while not self.stopping.is_set():
                b = src.recv(65536)
                if not b:
                    break
                dst.sendall(b)
                if throttled:
                    now = time.monotonic()
                    nxt = max(nxt, now) + len(b) / self.rate
                    if nxt > now:
                        self.stopping.wait(nxt - now)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def push_blob(reg, repo, data):
    """Monolithic blob upload to the real registry; returns the digest."""
    d = rgmtest.sha256_digest(data)
    st, h, b = rgmtest.http("POST", reg.url + "/v2/%s/blobs/uploads/" % repo)
    if st != 202:
        raise RuntimeError("upload start: %d %r" % (st, b))
    loc = h["location"]
    if loc.startswith("/"):
        loc = reg.url + loc
    loc += ("&" if "?" in loc else "?") + "digest=" + urllib.parse.quote(d)
    st, h, b = rgmtest.http("PUT", loc, body=data, timeout=120,
                            headers={"Content-Type": "application/octet-stream"})
    if st != 201:
        raise RuntimeError("upload put: %d %r" % (st, b))
    return d


class Client(threading.Thread):
    """GET path from the mirror on its own connection, streaming the body through sha256.
    stall: (after_bytes, event, max_wait): stop reading after that many bytes until event
    is set.  drop_after: close the connection after that many bytes."""

    def __init__(self, m, path, headers=None, stall=None, drop_after=None, timeout=60,
                 barrier=None, chunk=MB):
        super().__init__(daemon=True)
        self.m, self.path, self.headers = m, path, headers or {}
        self.stall, self.drop_after, self.timeout = stall, drop_after, timeout
        self.barrier, self.chunk = barrier, chunk
        self.status = None
        self.h = {}
        self.n = 0
        self.digest = None
        self.err = None
        self.t_start = self.t_head = self.t_first = self.t_end = self.t_resume = None
        self.stall_timed_out = False

    def run(self):
        conn = None
        try:
            if self.barrier:
                self.barrier.wait(30)
            self.t_start = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", self.m.port, timeout=self.timeout)
            conn.request("GET", self.path, headers=self.headers)
            r = conn.getresponse()
            self.t_head = time.monotonic()
            self.status = r.status
            self.h = rgmtest.Headers(r.getheaders())
            hs = hashlib.sha256()
            buf = memoryview(bytearray(self.chunk))
            while True:
                want = self.chunk
                if self.stall and self.n < self.stall[0]:
                    want = min(want, self.stall[0] - self.n)
                if self.drop_after is not None:
                    want = min(want, self.drop_after - self.n)
                    if want <= 0:
                        break
                k = r.readinto(buf[:want])
                if not k:
                    break
                hs.update(buf[:k])
                self.n += k
                if self.t_first is None:
                    self.t_first = time.monotonic()
                if self.stall and self.n == self.stall[0] and self.t_resume is None:
                    self.stall_timed_out = not self.stall[1].wait(self.stall[2])
                    self.t_resume = time.monotonic()
            self.digest = "sha256:" + hs.hexdigest()
        except Exception as e:   # noqa: record, the test asserts on it
            self.err = "%s: %s" % (type(e).__name__, e)
        finally:
            self.t_end = time.monotonic()
            if conn is not None:
                conn.close()

    def xcache(self):
        return self.h.get("x-cache")


def run_clients(clients, timeout=90):
    for c in clients:
        c.start()
    deadline = time.monotonic() + timeout
    for c in clients:
        c.join(max(0.1, deadline - time.monotonic()))
    return [c for c in clients if c.is_alive()]


def partials(m):
    return glob.glob(os.path.join(m.storage, "tmp", "*.partial"))


def partial_size(m):
    sizes = []
    for p in partials(m):
        try:
            sizes.append(os.path.getsize(p))
        except OSError:
            pass
    return max(sizes) if sizes else None


def stored(m, digest):
    return os.path.exists(os.path.join(m.storage, "blobs", "sha256", digest[7:9], digest[7:]))


def tmp_entries(m):
    try:
        return os.listdir(os.path.join(m.storage, "tmp"))
    except FileNotFoundError:
        return []


def xcache_of(m, path, method="HEAD"):
    st, h, _ = m.get(path, method=method)
    return st, h.get("x-cache")


def status_file(pid):
    with open("/proc/%d/status" % pid) as f:
        return dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)


def kb(v):
    return int(v.strip().split()[0])


def log_tail(m, n=2500):
    return m.log_text()[-n:]


# ---------------------------------------------------------------------------------------
# setup: real registry behind a throttled relay, fakeup, the mirror

reg = Registry(ws)
up = fakeup.FakeUpstream()

# 100 MB even under ASan: the mirror sends with sendfile, so the 32 x 100 MB fan-out takes
# about 4 s there too (RGM_SF_BIG_MB overrides, e.g. for a very slow machine)
BIG = int(os.environ.get("RGM_SF_BIG_MB", "100")) * MB
BIG_RATE = 64 * MB                       # ~1.6 s upstream fetch
if BIG != 100 * MB:
    t.diag("RGM_SF_BIG_MB: 32-client blob is %d MB instead of 100 MB" % (BIG // MB))

relay = Relay(reg.port, BIG_RATE)
m = Mirror(ws, args=["--registry", "docker.io=" + relay.url,
                     "--registry", "fake.test=" + up.url])
if not ASAN:
    try:
        with open("/proc/%d/maps" % m.proc.pid) as f:
            if "libasan" in f.read():
                ASAN = True
                t.diag("mirror is linked with libasan: treating this as an ASan run")
    except OSError:
        pass

REPO = "it/sf"
data = os.urandom(BIG)
d_big = push_blob(reg, REPO, data)
del data

# ---------------------------------------------------------------------------------------
# 1. 32 concurrent clients, one uncached blob, throttled upstream

pid = m.proc.pid
try:
    with open("/proc/%d/clear_refs" % pid, "w") as f:
        f.write("5")
    rss_reset = True
except OSError as e:
    rss_reset = False
    t.diag("cannot reset VmHWM: %s" % e)
hwm0 = kb(status_file(pid)["VmHWM"])

N = 32
bar = threading.Barrier(N)
path = "/v2/%s/blobs/%s" % (REPO, d_big)
cl = [Client(m, path, barrier=bar, timeout=90) for _ in range(N)]
t0 = time.monotonic()
stuck = run_clients(cl, timeout=120)
wall = time.monotonic() - t0
hwm = kb(status_file(pid)["VmHWM"])
t.diag("32 clients x %d MB: %.1f s wall; mirror VmHWM %d kB (before: %d kB)"
       % (BIG // MB, wall, hwm, hwm0))
t.is_(len(stuck), 0, "32 clients: all finished")
t.is_([c.err for c in cl if c.err], [], "32 clients: no client errors")
t.is_(sorted(set(c.status for c in cl), key=str), [200], "32 clients: all 200")
good = [c for c in cl if c.digest == d_big and c.n == BIG]
t.is_(len(good), N, "32 clients: every body hashes to the digest (%d bytes)" % BIG)
if len(good) != N:
    t.diag("bytes received: %s" % sorted(set(c.n for c in cl)))
reg.wait_count("GET", "/blobs/" + d_big, 1, timeout=5)
t.is_(reg.count_requests("GET", "/blobs/" + d_big), 1,
      "32 clients: the upstream saw exactly one GET for the blob")
xc = [c.xcache() for c in cl]
t.is_((xc.count("MISS"), xc.count("JOIN")), (1, N - 1),
      "32 clients: one MISS, %d JOIN" % (N - 1))
t.is_(sorted(set(c.h.get("content-length") for c in cl), key=str), [str(BIG)],
      "32 clients: every response has Content-Length %d" % BIG)
heads = sorted(c.t_head - t0 for c in cl if c.t_head)
if heads:
    t.diag("response heads after %.2f..%.2f s; bodies done after %.2f..%.2f s"
           % (heads[0], heads[-1], min(c.t_end for c in cl) - t0,
              max(c.t_end for c in cl) - t0))
# the relay cannot deliver the blob faster than BIG / BIG_RATE: a client that has bytes
# well before that was served live, not after the download
min_fetch = BIG / BIG_RATE
firsts = [c.t_first - t0 for c in cl if c.t_first]
t.ok(len(firsts) == N and max(firsts) < 0.8 * min_fetch,
     "32 clients: every client had its first MB before the upstream fetch could end",
     diag="first MB after %.2f..%.2f s; the fetch takes at least %.2f s"
     % (min(firsts or [0]), max(firsts or [0]), min_fetch))
if ASAN:
    t.skip("32 clients: mirror peak RSS under 64 MB", "ASan shadow memory inflates RSS")
elif not rss_reset:
    t.skip("32 clients: mirror peak RSS under 64 MB", "cannot reset VmHWM")
else:
    t.ok(hwm < 64 * 1024, "32 clients: mirror peak RSS (VmHWM) %d kB < 64 MB" % hwm)
st, h, b = m.get(path)
t.ok(st == 200 and h.get("x-cache") == "HIT" and rgmtest.sha256_digest(b) == d_big,
     "after the fan-out the blob is a HIT with the right bytes",
     diag="status %s x-cache %s" % (st, h.get("x-cache")))
t.is_(reg.count_requests("GET", "/blobs/" + d_big), 1, "the HIT did not go upstream")
del b

# ---------------------------------------------------------------------------------------
# 2. a stalled client, normal clients and a late joiner at ~90% (throttled upstream)

MID = 40 * MB
MID_RATE = MID // 2                       # ~2 s fetch
relay.rate = MID_RATE

data = os.urandom(MID)
d_mid = push_blob(reg, REPO, data)
del data
path = "/v2/%s/blobs/%s" % (REPO, d_mid)
others_done = threading.Event()
staller = Client(m, path, stall=(64 * 1024, others_done, 40), chunk=64 * 1024)
normal = [Client(m, path) for _ in range(4)]
staller.start()
time.sleep(0.05)
for c in normal:
    c.start()
late = None
try:
    wait_for(lambda: (partial_size(m) or 0) >= 0.9 * MID, timeout=30, interval=0.005,
             what="the temp file to reach 90%")
    late = Client(m, path)
    late.start()
except TimeoutError as e:
    t.diag(str(e))
for c in normal:
    c.join(60)
t_normal_done = time.monotonic()
still_stalled = staller.t_resume is None
others_done.set()
staller.join(60)
if late:
    late.join(60)

t.ok(all(c.digest == d_mid and c.n == MID and not c.err for c in normal),
     "slow client: 4 other clients got the whole blob right",
     diag="%r" % [(c.n, c.err) for c in normal])
t.ok(still_stalled and not staller.stall_timed_out and staller.n <= MID,
     "slow client: the others finished while it was still stalled after 64 KB",
     diag="stalled=%s stall_timed_out=%s" % (still_stalled, staller.stall_timed_out))
t.ok(staller.digest == d_mid and staller.n == MID and not staller.err,
     "slow client: once it reads again it gets the whole blob right",
     diag="n=%d err=%s" % (staller.n, staller.err))
t.ok(late is not None and late.xcache() == "JOIN",
     "late joiner at ~90%: X-Cache JOIN",
     diag="x-cache %s" % (late.xcache() if late else None))
t.ok(late is not None and late.digest == d_mid and late.n == MID and not late.err,
     "late joiner at ~90%: catches up with correct bytes",
     diag="n=%s err=%s" % (late.n if late else None, late.err if late else None))
reg.wait_count("GET", "/blobs/" + d_mid, 1, timeout=5)
t.is_(reg.count_requests("GET", "/blobs/" + d_mid), 1,
      "slow client + late joiner: one upstream GET")

# ---------------------------------------------------------------------------------------
# 3. the only client disconnects midway: the fetch still completes into the cache

SMALL = 16 * MB
relay.rate = SMALL                        # ~1 s fetch
data = os.urandom(SMALL)
d_drop = push_blob(reg, REPO, data)
del data
path = "/v2/%s/blobs/%s" % (REPO, d_drop)
c = Client(m, path, drop_after=2 * MB)
c.start()
c.join(30)
t.ok(c.n == 2 * MB and partials(m),
     "disconnect: the client hung up after 2 MB while the fetch was running",
     diag="n=%d err=%s partials=%s" % (c.n, c.err, partials(m)))
try:
    wait_for(lambda: stored(m, d_drop), timeout=20, what="the blob in the store")
except TimeoutError:
    pass
st, xc = xcache_of(m, path, method="GET")
t.ok(st == 200 and xc == "HIT", "disconnect: the fetch went on; a later GET is a HIT",
     diag="status %s x-cache %s\n%s" % (st, xc, log_tail(m)))
reg.wait_count("GET", "/blobs/" + d_drop, 1, timeout=5)
t.is_(reg.count_requests("GET", "/blobs/" + d_drop), 1,
      "disconnect: the upstream saw one GET")

# ---------------------------------------------------------------------------------------
# 4. Range requests on a fetch in flight

data = os.urandom(MID)
relay.rate = MID_RATE                     # ~2 s fetch
d_rng = push_blob(reg, REPO, data)
path = "/v2/%s/blobs/%s" % (REPO, d_rng)
full = Client(m, path)
full.start()
wait_for(lambda: (partial_size(m) or 0) >= MID // 4, timeout=30, interval=0.005,
         what="the temp file to reach 25%")
a, b_ = 1 * MB, 2 * MB - 1                 # already written
t1 = time.monotonic()
st, h, body = m.get(path, headers={"Range": "bytes=%d-%d" % (a, b_)})
dt_near = time.monotonic() - t1
written_after = partial_size(m)
t.ok(st == 206 and body == data[a:b_ + 1]
     and h.get("content-range") == "bytes %d-%d/%d" % (a, b_, MID),
     "range: a part already written is 206 with the right bytes",
     diag="status %s content-range %s len %d" % (st, h.get("content-range"), len(body)))
t.ok(dt_near < 1.0 and written_after is not None and written_after < MID,
     "range: ... served at once, while the fetch is running (%.2f s)" % dt_near,
     diag="took %.2f s; temp file size after: %s" % (dt_near, written_after))
t.is_(h.get("x-cache"), "JOIN", "range on a fetch in flight: X-Cache JOIN")
a, b_ = int(MID * 0.75), int(MID * 0.75) + MB - 1       # not written yet
w0 = partial_size(m)
t1 = time.monotonic()
st, h, body = m.get(path, headers={"Range": "bytes=%d-%d" % (a, b_)})
t_far = time.monotonic()
t.ok(w0 is not None and w0 < a, "range: the far part was not written when asked for",
     diag="written %s, range starts at %d" % (w0, a))
t.ok(st == 206 and body == data[a:b_ + 1]
     and h.get("content-range") == "bytes %d-%d/%d" % (a, b_, MID),
     "range: a part beyond what is written is 206 with the right bytes",
     diag="status %s content-range %s len %d" % (st, h.get("content-range"), len(body)))
full.join(60)
t.ok(full.digest == d_rng and full.t_end is not None and t_far < full.t_end,
     "range: the far part is served as bytes land, before the whole fetch ends",
     diag="range done %.2f s after asking; full client done %s s later" % (
         t_far - t1, None if full.t_end is None else round(full.t_end - t_far, 2)))
reg.wait_count("GET", "/blobs/" + d_rng, 1, timeout=5)
t.is_(reg.count_requests("GET", "/blobs/" + d_rng), 1, "range: one upstream GET")
del data

# ---------------------------------------------------------------------------------------
# 5. upstream cuts the connection midway and honours Range: the fetch resumes

FAULT = 8 * MB
CUT = 3 * MB + 12345
data = os.urandom(FAULT)
d_res = up.add_blob(data)
up.behave("/blobs/" + d_res, truncate=CUT, throttle=8 * MB, times=1)
up.behave("/blobs/" + d_res, throttle=8 * MB)
path = "/v2/%s/blobs/%s?ns=fake.test" % (REPO, d_res)
bar = threading.Barrier(6)
cl = [Client(m, path, barrier=bar, timeout=30) for _ in range(6)]
stuck = run_clients(cl, timeout=60)
t.ok(not stuck and all(c.digest == d_res and c.n == FAULT and not c.err for c in cl),
     "resume: all 6 clients got correct bytes",
     diag="%r\n%s" % ([(c.status, c.n, c.err) for c in cl], log_tail(m)))
reqs = up.requests_for("/blobs/" + d_res, method="GET")
t.is_([r.headers.get("range") for r in reqs], [None, "bytes=%d-" % CUT],
      "resume: upstream saw a plain GET, then one with Range: bytes=%d-" % CUT)
xc = [c.xcache() for c in cl]
t.is_((xc.count("MISS"), xc.count("JOIN")), (1, 5), "resume: one MISS, 5 JOIN")
st, xc = xcache_of(m, path, method="GET")
t.is_((st, xc), (200, "HIT"), "resume: the blob was cached")
del data

# ---------------------------------------------------------------------------------------
# 6. upstream cuts the connection and cannot resume (ignores Range, truncates again)

CUT2 = 1 * MB
data = os.urandom(4 * MB)
d_cut = up.add_blob(data)
up.behave("/blobs/" + d_cut, truncate=CUT2, no_range=True)
path = "/v2/%s/blobs/%s?ns=fake.test" % (REPO, d_cut)
bar = threading.Barrier(4)
cl = [Client(m, path, barrier=bar, timeout=30) for _ in range(4)]
stuck = run_clients(cl, timeout=60)
t.ok(not stuck and all(c.status == 200 and c.n < len(data) and not
                       (c.err or "").startswith("TimeoutError") for c in cl),
     "no resume: every reader's connection closed before its last byte",
     diag="%r" % [(c.status, c.n, c.err) for c in cl])
t.is_(sorted(set(c.h.get("content-length") for c in cl), key=str), [str(len(data))],
      "no resume: the responses announced the full length (so clients see the cut)")
try:
    wait_for(lambda: not tmp_entries(m), timeout=15, what="storage/tmp empty")
except TimeoutError:
    pass
t.is_(tmp_entries(m), [], "no resume: the temp file was removed")
t.ok(not stored(m, d_cut), "no resume: nothing in the store")
st, xc = xcache_of(m, path)
t.isnt(xc, "HIT", "no resume: not cached (HEAD is not a HIT)")
t.diag("no resume: upstream GETs: %d" % up.count("GET", "/blobs/" + d_cut))
del data

# ---------------------------------------------------------------------------------------
# 7. wrong digest: every joiner cut short, nothing cached

data = os.urandom(4 * MB)
d_bad = up.add_blob(data)
up.behave("/blobs/" + d_bad, corrupt=True, throttle=4 * MB)
path = "/v2/%s/blobs/%s?ns=fake.test" % (REPO, d_bad)
bar = threading.Barrier(8)
cl = [Client(m, path, barrier=bar, timeout=30) for _ in range(8)]
stuck = run_clients(cl, timeout=60)
t.ok(not stuck and all(c.status == 200 and c.n < len(data) and not
                       (c.err or "").startswith("TimeoutError") for c in cl),
     "wrong digest: all 8 clients cut short before the last byte",
     diag="%r" % [(c.status, c.n, c.err) for c in cl])
xc = [c.xcache() for c in cl]
t.is_((xc.count("MISS"), xc.count("JOIN")), (1, 7), "wrong digest: one MISS, 7 JOIN")
t.is_(up.count("GET", "/blobs/" + d_bad), 1, "wrong digest: one upstream GET")
try:
    wait_for(lambda: not tmp_entries(m), timeout=10, what="storage/tmp empty")
except TimeoutError:
    pass
t.ok(not stored(m, d_bad) and not tmp_entries(m),
     "wrong digest: nothing in the store, temp file removed",
     diag="stored %s tmp %s" % (stored(m, d_bad), tmp_entries(m)))
st, xc = xcache_of(m, path)
t.isnt(xc, "HIT", "wrong digest: not cached (HEAD is not a HIT)")
del data

# ---------------------------------------------------------------------------------------
# 8. max_parallel_fetches: 2

up2 = fakeup.FakeUpstream(name="slow")
intervals = []
ilock = threading.Lock()
H = up2.httpd.RequestHandlerClass
_orig_handle = H._handle


def _timed_handle(self, method):
    # local helper: fakeup has no in-flight counter; time each blob request
    t_in = time.monotonic()
    try:
        _orig_handle(self, method)
    finally:
        if "/blobs/" in self.path:
            with ilock:
                intervals.append((t_in, time.monotonic()))


H._handle = _timed_handle
blobs4 = [os.urandom(MB + i) for i in range(4)]
d4 = [up2.add_blob(x) for x in blobs4]
up2.behave("/blobs/", stall=1.0)
m2 = Mirror(ws, name="mirror-par", config={
    "max_parallel_fetches": 2, "default_registry": "slow.test",
    "registries": {"slow.test": {"endpoint": up2.url}}})
bar = threading.Barrier(4)
cl = [Client(m2, "/v2/it/p/blobs/" + d, barrier=bar, timeout=30) for d in d4]
for c in cl:
    c.start()
queued = []
deadline = time.monotonic() + 1.5
while time.monotonic() < deadline and any(c.is_alive() for c in cl):
    mt = m2.metrics()
    queued.append((mt.get("regmirror_fetches_in_flight"), mt.get("regmirror_fetches_queued")))
    time.sleep(0.1)
for c in cl:
    c.join(30)
t.ok(all(c.digest == d and c.n == len(x) for c, d, x in zip(cl, d4, blobs4)),
     "max_parallel_fetches=2: all four blobs complete with correct bytes",
     diag="%r" % [(c.status, c.n, c.err) for c in cl])
t.is_(len(intervals), 4, "max_parallel_fetches=2: four upstream blob GETs")


def peak(ivs, slack):
    ev = []
    for a, b in ivs:
        ev += [(a, 1), (max(a, b - slack), -1)]
    cur = best = 0
    for _, k in sorted(ev, key=lambda e: (e[0], e[1])):
        cur += k
        best = max(best, cur)
    return best


t.diag("upstream intervals (s from first): %s" % [
    (round(a - intervals[0][0], 2), round(b - intervals[0][0], 2))
    for a, b in sorted(intervals)] if intervals else "none")
t.ok(peak(intervals, 0.1) <= 2,
     "max_parallel_fetches=2: at most 2 upstream GETs in flight at once",
     diag="peak %d (raw %d)" % (peak(intervals, 0.1), peak(intervals, 0)))
t.ok(peak(intervals, 0.1) == 2, "max_parallel_fetches=2: two did run in parallel")
t.ok(any(q == 2 for _, q in queued),
     "max_parallel_fetches=2: /metrics showed regmirror_fetches_queued 2 while waiting",
     diag="(in_flight, queued) samples: %r" % queued)

t.done()
