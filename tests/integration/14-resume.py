#!/usr/bin/env python3
"""A restart mid-fetch resumes instead of starting over (issue 12). A 60 MB blob behind a
throttled link (fakeup's throttle); kill -9 of the mirror at about 50 %; the partial and its
sidecar survive the restart; a new request re-hashes the prefix, asks the upstream with
Range, and the upstream moves less than 60 % of the blob the second time. A partial corrupted
on disk fails the re-hash and is fetched from zero. A SIGTERM mid-fetch keeps the partial
too. fakeup is the upstream: it throttles and records Range headers."""
import glob
import hashlib
import os
import signal
import threading
import time

import fakeup
from rgmtest import TAP, Mirror, Workspace, http, wait_for

t = TAP(timeout=240)
ws = Workspace()
MB = 1 << 20
SIZE = 60 * MB
RATE = 24 * MB   # ~2.5 s for the whole blob
REPO = "it/resume"

up = fakeup.FakeUpstream()


def partials(m):
    return glob.glob(os.path.join(m.storage, "tmp", "*.partial"))


def partial_size(m):
    sizes = [os.path.getsize(p) for p in partials(m) if os.path.exists(p)]
    return max(sizes) if sizes else 0


def sidecar_written(m):
    for p in glob.glob(os.path.join(m.storage, "tmp", "*.partial.keep")):
        with open(p) as f:
            for line in f:
                if line.startswith("written "):
                    return int(line.split()[1])
    return None


def stored(m, digest):
    return os.path.exists(os.path.join(m.storage, "blobs", "sha256", digest[7:9], digest[7:]))


class Get(threading.Thread):
    def __init__(self, m, digest):
        super().__init__(daemon=True)
        self.url = m.url + "/v2/%s/blobs/%s?ns=fake.test" % (REPO, digest)
        self.res = None

    def run(self):
        try:
            st, h, b = http("GET", self.url, timeout=60)
            self.res = (st, len(b), "sha256:" + hashlib.sha256(b).hexdigest())
        except Exception as e:  # noqa: the client is cut by the kill
            self.res = ("error", type(e).__name__, "")


def cut_midway(m, digest, sig=signal.SIGKILL):
    """Start a GET, stop the mirror with sig once the partial is past 50 %."""
    g = Get(m, digest)
    g.start()
    try:
        wait_for(lambda: partial_size(m) >= SIZE // 2, timeout=30, interval=0.01,
                 what="the partial at 50 %")
    except TimeoutError as e:
        t.diag(str(e))
    at = partial_size(m)
    m.stop(sig=sig)
    g.join(30)
    return at


def blob_requests(digest):
    return up.requests_for("/blobs/" + digest, method="GET")


def upstream_bytes(m):
    return m.metrics().get("regmirror_upstream_bytes_total", -1)


# ---------------------------------------------------------------------------------------
# 1. kill -9 at ~50 %, restart, ask again: a Range request, < 60 % moved

data = os.urandom(SIZE)
d1 = up.add_blob(data)
up.behave("/blobs/", throttle=RATE)
m = Mirror(ws, args=["--registry", "fake.test=" + up.url, "--log-level", "info"])
at = cut_midway(m, d1)
t.ok(SIZE * 0.4 <= at < SIZE, "kill -9 with the partial at %.0f %%" % (100.0 * at / SIZE))
t.ok(len(partials(m)) == 1, "the partial survives the kill (%s)" % partials(m))
w = sidecar_written(m)
t.ok(w is not None and 0 < w <= at, "its sidecar vouches for %s bytes" % w)
n0 = len(blob_requests(d1))

log0 = len(m.log_text())
m.start()
t.like(m.log_text()[log0:], r"kept 1 partial fetches for resuming",
       "restart: the partial is kept, not emptied with tmp/")
g = Get(m, d1)
g.run()
t.is_(g.res, (200, SIZE, d1), "after the restart: the client gets the whole blob, right")
reqs = blob_requests(d1)[n0:]
rng = [r.headers.get("range") for r in reqs]
t.is_(len(reqs), 1, "one upstream GET the second time")
t.ok(rng and rng[0] == "bytes=%d-" % w, "... with Range: bytes=%d- (%s)" % (w or 0, rng))
moved = upstream_bytes(m)
t.ok(0 < moved < 0.6 * SIZE, "the upstream moved %.0f %% of the blob the second time (< 60 %%)"
     % (100.0 * moved / SIZE))
t.like(m.log_text()[log0:], r"resuming %s at %d of %d bytes \(prefix re-hashed, matches\)"
       % (d1, w or 0, SIZE), "the log says the prefix was re-hashed and matched")
t.ok(stored(m, d1), "the resumed blob is cached")
st, h, b = http("GET", m.url + "/v2/%s/blobs/%s?ns=fake.test" % (REPO, d1), timeout=60)
t.ok(st == 200 and h.get("x-cache") == "HIT" and len(b) == SIZE, "... and then a HIT")
del b
t.is_(glob.glob(os.path.join(m.storage, "tmp", "*")), [], "tmp/ empty after the resume")

# ---------------------------------------------------------------------------------------
# 2. a corrupted partial fails the re-hash and is fetched from zero

data2 = os.urandom(SIZE)
d2 = up.add_blob(data2)
at = cut_midway(m, d2)
p = partials(m)
t.ok(len(p) == 1 and sidecar_written(m), "second blob: killed at %.0f %% with a sidecar"
     % (100.0 * at / SIZE))
if p:
    with open(p[0], "r+b") as f:
        f.seek(MB)
        f.write(b"\0" * 4096)
n0 = len(blob_requests(d2))
log0 = len(m.log_text())
m.start()
g = Get(m, d2)
g.run()
t.is_(g.res, (200, SIZE, d2), "corrupted partial: the client still gets the right blob")
reqs = blob_requests(d2)[n0:]
t.ok(len(reqs) == 1 and "range" not in reqs[0].headers,
     "corrupted partial: fetched from zero (no Range: %s)" % [r.headers.get("range") for r in reqs])
t.like(m.log_text()[log0:], r"partial of %s does not match its sidecar \(re-hash\): fetching "
       r"it from zero" % d2, "corrupted partial: the re-hash caught it (logged)")
t.ok(upstream_bytes(m) >= SIZE, "corrupted partial: the whole blob moved again")
t.ok(stored(m, d2), "corrupted partial: the fetched blob is cached")

# ---------------------------------------------------------------------------------------
# 3. SIGTERM mid-fetch keeps the partial too; an old partial and a bare one are removed

# no grace for the response in flight: the fetch is cut by the stop, not finished in it
t.is_(m.stop(), 0, "mirror stopped cleanly")
m = Mirror(ws, args=["--registry", "fake.test=" + up.url, "--log-level", "info"],
           config={"shutdown_timeout": "0s"}, storage=m.storage, name="mirror-term")
data3 = os.urandom(SIZE)
d3 = up.add_blob(data3)
at = cut_midway(m, d3, sig=signal.SIGTERM)
t.like(m.log_text(), r"kept the partial of %s for a later resume" % d3,
       "SIGTERM: the fetch hands its partial back")
t.ok(len(partials(m)) == 1 and sidecar_written(m), "SIGTERM: the partial and its sidecar stay")
tmp = os.path.join(m.storage, "tmp")
with open(os.path.join(tmp, "ab.7.partial"), "wb") as f:
    f.write(b"no sidecar")
old = os.path.join(tmp, "cd.8.partial")
with open(old, "wb") as f:
    f.write(b"x")
with open(old + ".keep", "w") as f:
    f.write("regmirror-partial 1\ndigest sha256:%s\nsize 10\nwritten 1\nprefix sha256:%s\n"
            "registry fake.test\nrepo x\n" % ("cd" * 32, "00" * 32))
os.utime(old + ".keep", (time.time() - 2 * 86400, time.time() - 2 * 86400))
n0 = len(blob_requests(d3))
log0 = len(m.log_text())
m.start()
t.ok(not os.path.exists(os.path.join(tmp, "ab.7.partial")), "a partial without sidecar is removed")
t.ok(not os.path.exists(old) and not os.path.exists(old + ".keep"),
     "a partial older than a day is removed, with its sidecar")
g = Get(m, d3)
g.run()
t.is_(g.res, (200, SIZE, d3), "SIGTERM: after the restart the client gets the whole blob")
rng = [r.headers.get("range") for r in blob_requests(d3)[n0:]]
t.ok(len(rng) == 1 and rng[0] and rng[0].startswith("bytes="), "SIGTERM: resumed with %s" % rng)
t.ok(upstream_bytes(m) < 0.6 * SIZE, "SIGTERM: the upstream moved %.0f %% the second time"
     % (100.0 * upstream_bytes(m) / SIZE))
t.is_(m.stop(), 0, "mirror stopped cleanly")
t.done()
