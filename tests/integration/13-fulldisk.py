#!/usr/bin/env python3
"""Store write errors never cut a client that keeps up (issue 12). The store sits on a small
tmpfs this test mounts (tests run as root); a blob larger than its free space is served
complete and correct from the fetch's memory window, nothing is cached, the log names ENOSPC,
/metrics counts regmirror_store_errors_total{op="write",error="ENOSPC"} and /readyz stays 200.
Then the same with an injected EIO (RGM_FAULT=store.write) on an ordinary disk. fakeup is the
upstream: the fault is the mirror's disk, not the registry."""
import hashlib
import os
import re
import subprocess
import threading

import fakeup
from rgmtest import TAP, Mirror, Workspace, http

t = TAP(timeout=180)
ws = Workspace()
MB = 1 << 20
REPO = "it/disk"

up = fakeup.FakeUpstream()
big = os.urandom(40 * MB)
d_big = up.add_blob(big)
small = os.urandom(1 * MB)
d_small = up.add_blob(small)

mnt = ws.mkdir("small")
r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", mnt],
                   capture_output=True, text=True)
if r.returncode != 0:
    t.skip("full disk: tmpfs store", "cannot mount a tmpfs: %s" % r.stderr.strip())
    t.done()
ws.add_cleanup(lambda: subprocess.run(["umount", "-l", mnt], capture_output=True))


def stored(m, digest):
    return os.path.exists(os.path.join(m.storage, "blobs", "sha256", digest[7:9], digest[7:]))


def tmp_files(m):
    try:
        return sorted(os.listdir(os.path.join(m.storage, "tmp")))
    except FileNotFoundError:
        return []


def get(m, digest, out):
    """GET the blob on its own connection; out gets (status, x-cache, length, digest)."""
    st, h, b = http("GET", m.url + "/v2/%s/blobs/%s?ns=fake.test" % (REPO, digest), timeout=60)
    out.append((st, h.get("x-cache"), len(b), "sha256:" + hashlib.sha256(b).hexdigest()))


# ---------------------------------------------------------------------------------------
# 1. ENOSPC: a 40 MB blob into a 16 MB store

m = Mirror(ws, args=["--registry", "fake.test=" + up.url, "--log-level", "info"],
           storage=os.path.join(mnt, "storage"))
body = m.get("/metrics")[2].decode()
t.like(body, r"# TYPE regmirror_store_errors_total counter",
       "metrics: regmirror_store_errors_total has HELP/TYPE from the start")

res = []
get(m, d_big, res)
st, xc, n, dg = res[0]
t.is_(st, 200, "full disk: the client gets 200")
t.ok(n == len(big) and dg == d_big, "full disk: the body is complete and correct (%d bytes)" % n)
t.ok(not stored(m, d_big), "full disk: nothing cached")
t.like(m.log_text(), r"level=warn mod=fetch msg=\"store write failed for %s: no space left "
       r"on device \(ENOSPC\); serving it uncached from memory" % d_big,
       "full disk: one WARN names the error (no space left on device, ENOSPC)")
t.is_(m.log_text().count("store write failed for " + d_big), 1, "full disk: logged once")
t.ok(not re.search(r"fetch of %s .*failed|upstream fetch failed" % d_big, m.log_text()),
     "full disk: not called an upstream (or fetch) failure")
mt = m.metrics()
t.ok(mt.get('regmirror_store_errors_total{op="write",error="ENOSPC"}', 0) >= 1,
     "metrics: regmirror_store_errors_total{op=write,error=ENOSPC} counted (%s)"
     % mt.get('regmirror_store_errors_total{op="write",error="ENOSPC"}'))
st, _, _ = m.get("/readyz")
t.is_(st, 200, "full disk: /readyz stays 200")
t.is_(tmp_files(m), [], "full disk: tmp/ empty afterwards")

# two clients at once: each gets a complete, correct body (joined, or its own pass-through)
res = []
ths = [threading.Thread(target=get, args=(m, d_big, res)) for _ in range(2)]
for th in ths:
    th.start()
for th in ths:
    th.join(90)
t.is_(sorted((r[0], r[2], r[3]) for r in res), [(200, len(big), d_big)] * 2,
      "full disk: two clients at once both get the whole blob right")
t.ok(not stored(m, d_big), "full disk: still nothing cached")

# the disk has room again once the fetch is over: a small blob is cached as usual
res = []
get(m, d_small, res)
get(m, d_small, res)
t.is_([(r[0], r[1], r[3]) for r in res], [(200, "MISS", d_small), (200, "HIT", d_small)],
      "after: a blob that fits is cached (MISS, then HIT)")
t.is_(m.stop(), 0, "full disk: mirror stopped cleanly")

# ---------------------------------------------------------------------------------------
# 2. EIO, injected (RGM_FAULT=store.write fails every write, the retry too)

mid = os.urandom(6 * MB)
d_mid = up.add_blob(mid)
m2 = Mirror(ws, args=["--registry", "fake.test=" + up.url, "--log-level", "info"],
            name="mirror-eio", env={"RGM_FAULT": "store.write"})
res = []
get(m2, d_mid, res)
st, xc, n, dg = res[0]
t.ok(st == 200 and n == len(mid) and dg == d_mid, "EIO: complete, correct 200 (%s, %d)" % (st, n))
t.ok(not stored(m2, d_mid), "EIO: nothing cached")
t.like(m2.log_text(), r"store write failed for %s: i/o error \(EIO\)" % d_mid,
       "EIO: the log names EIO")
t.ok(m2.metrics().get('regmirror_store_errors_total{op="write",error="EIO"}', 0) >= 1,
     "EIO: counted in /metrics")
t.is_(m2.stop(), 0, "EIO: mirror stopped cleanly")
t.done()
