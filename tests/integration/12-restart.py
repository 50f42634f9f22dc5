#!/usr/bin/env python3
"""Restart on a store that disagrees with its index, with the reconcile running in the
background (slowed down with RGM_RECONCILE_BATCH=1 and RGM_RECONCILE_INTERVAL_MS so that it
is still running while we pull): /v2/ answers at once; rows whose files were deleted are
misses (fetched again, correct bytes); a file without a row is never served, even under the
name of a digest the upstream has (its bytes are garbage here); after the reconcile, files
without rows are gone. Also: partial fetches with a valid .keep sidecar survive the restart, other
tmp/ files (no sidecar, a sidecar that does not parse or names another digest) do not."""

import os
import re
import time

from rgmtest import (MANIFEST_ACCEPT, TAP, Mirror, Registry, Workspace, make_image, push,
                     sha256_digest, wait_for)

t = TAP(timeout=240)
ws = Workspace()
up = Registry(ws)
up.start()
img = make_image(ws, "library/app:v1", layers=(200_000, 210_000, 220_000, 230_000))
pushed = push(img, up)
# a second image whose layer the mirror never pulls: its digest names an orphan file below
other = make_image(ws, "library/other:v1", layers=(150_000,))
push(other, up)
other_layer = other["layers"][0]

m = Mirror(ws, args=["--registry", "docker.io=" + up.url])
st, _, mbody = m.get("/v2/library/app/manifests/v1", headers={"Accept": MANIFEST_ACCEPT})
t.is_(st, 200, "manifest pulled through the mirror")
layers = img["layers"]
for L in layers:
    st, _, b = m.get("/v2/library/app/blobs/" + L["digest"])
    t.ok(st == 200 and sha256_digest(b) == L["digest"], "layer %s cached" % L["digest"][:19])
t.is_(m.stop(), 0, "mirror stopped cleanly")


def blob_path(digest):
    hexd = digest.split(":")[1]
    return os.path.join(m.storage, "blobs", "sha256", hexd[:2], hexd)


# rows whose files are gone: layers 0 and 1 (1 is left alone during the reconcile), the
# manifest; layer 2's file is truncated (wrong size)
for d in (layers[0]["digest"], layers[1]["digest"], pushed["digest"]):
    os.unlink(blob_path(d))
with open(blob_path(layers[2]["digest"]), "r+b") as f:
    f.truncate(1000)
# files without rows: garbage under the upstream's digest of other's layer, and two digests
# nobody knows
orphans = [other_layer["digest"]] + ["sha256:" + ("%02x" % i) * 32 for i in (0xab, 0xcd)]
for d in orphans:
    os.makedirs(os.path.dirname(blob_path(d)), exist_ok=True)
    with open(blob_path(d), "wb") as f:
        f.write(b"not the blob " * 100)
# tmp/: a partial kept by its (valid) sidecar; a partial without one, a sidecar without
# partial, a partial whose sidecar does not parse, one whose sidecar names another digest
tmp = os.path.join(m.storage, "tmp")


def sidecar(hexd):
    return ("regmirror-partial 1\ndigest sha256:%s\nsize 100\nwritten 1\nprefix sha256:%s\n"
            "registry docker.io\nrepo library/app\n" % (hexd, "00" * 32)).encode()


kept = ["aa" * 32 + ".0.partial", "aa" * 32 + ".0.partial.keep"]
gone = ["bb.1.partial", "cc.2.partial.keep", "stray", "dd.3.partial", "dd.3.partial.keep",
        "ee.4.partial", "ee.4.partial.keep"]
contents = {kept[1]: sidecar("aa" * 32), "dd.3.partial.keep": b"x",
            "ee.4.partial.keep": sidecar("ff" * 32)}
for n in kept + gone:
    with open(os.path.join(tmp, n), "wb") as f:
        f.write(contents.get(n, b"x"))
# the reconcile judges only files older than its start (fetches of the run are newer)
time.sleep(2.5)

env = {"RGM_RECONCILE_BATCH": "1", "RGM_RECONCILE_INTERVAL_MS": "250"}
m2 = Mirror(ws, args=["--registry", "docker.io=" + up.url, "--log-level", "info"],
            storage=m.storage, name="mirror-restart", start=False, env=env)
t0 = time.monotonic()
m2.start()
t.ok(time.monotonic() - t0 < 5, "/v2/ answers at once (%.2f s), reconcile in the background"
     % (time.monotonic() - t0))
t.ok(sorted(os.listdir(tmp)) == sorted(kept),
     "tmp/: the partial with a valid sidecar and its sidecar kept, the rest deleted (%s)"
     % sorted(os.listdir(tmp)))


def reconcile_done():
    return re.search(r'mod=reconcile msg="done in (\d+) ms: (\d+) rows without file dropped, '
                     r'(\d+) of (\d+) files without row deleted', m2.log_text())


t.ok(not reconcile_done(), "the reconcile is still running while we pull")
gets0 = up.count_requests("GET", "/blobs/")
st, _, b = m2.get("/v2/library/other/blobs/" + other_layer["digest"])
t.ok(st == 200 and sha256_digest(b) == other_layer["digest"],
     "a file without a row is not served: correct bytes from the upstream")
st, _, b = m2.get("/v2/library/app/blobs/" + layers[0]["digest"])
t.ok(st == 200 and sha256_digest(b) == layers[0]["digest"],
     "a row whose file was deleted is a miss: fetched again, correct bytes")
st, _, b = m2.get("/v2/library/app/blobs/" + layers[2]["digest"])
t.ok(st == 200 and sha256_digest(b) == layers[2]["digest"] and len(b) == layers[2]["size"],
     "a row whose file has the wrong size is a miss: fetched again")
st, _, b = m2.get("/v2/library/app/blobs/" + layers[3]["digest"])
t.ok(st == 200 and sha256_digest(b) == layers[3]["digest"], "an intact layer is served")
up.wait_count("GET", "/blobs/", gets0 + 3)
t.is_(up.count_requests("GET", "/blobs/") - gets0, 3,
      "three upstream blob GETs (the orphan, the deleted and the truncated layer)")
st, h, b = m2.get("/v2/library/app/manifests/" + pushed["digest"], method="HEAD",
                  headers={"Accept": MANIFEST_ACCEPT})
t.is_(st, 200, "HEAD of the manifest whose file was deleted answers")
st, _, b = m2.get("/v2/library/app/manifests/v1", headers={"Accept": MANIFEST_ACCEPT})
t.ok(st == 200 and sha256_digest(b) == pushed["digest"],
     "the manifest whose file was deleted is fetched again by tag")
t.ok(not reconcile_done(), "... and all that while the reconcile was running")

try:
    wait_for(reconcile_done, timeout=60, interval=0.2, what="reconcile")
except TimeoutError:
    pass
r = reconcile_done()
t.ok(r is not None, "the reconcile finished and logged its counts")
if r:
    t.diag(r.group(0))
    t.ok(int(r.group(2)) >= 1, "rows without file dropped (%s)" % r.group(2))
    t.ok(int(r.group(3)) == 2, "the two unknown orphan files deleted (%s)" % r.group(3))
for d in orphans[1:]:
    t.ok(not os.path.exists(blob_path(d)), "orphan %s removed" % d[:19])
t.ok(os.path.exists(blob_path(other_layer["digest"])),
     "the orphan's digest fetched during the reconcile is kept (its row is there)")
st, _, b = m2.get("/v2/library/app/blobs/" + layers[1]["digest"])
t.ok(st == 200 and sha256_digest(b) == layers[1]["digest"],
     "after the reconcile: the row dropped by it is a miss, fetched again")
for L in layers:
    st, _, b = m2.get("/v2/library/app/blobs/" + L["digest"])
    t.ok(st == 200 and sha256_digest(b) == L["digest"], "after: %s served" % L["digest"][:19])
t.is_(m2.stop(), 0, "mirror stopped cleanly")

# a restart with the default knobs: fast, and a stop during the reconcile is clean
m3 = Mirror(ws, args=["--registry", "docker.io=" + up.url, "--log-level", "info"],
            storage=m.storage, name="mirror-again", start=False,
            env={"RGM_RECONCILE_INTERVAL_MS": "1000", "RGM_RECONCILE_BATCH": "1"})
m3.start()
t.is_(m3.stop(), 0, "a stop while the reconcile runs is clean")
t.like(m3.log_text(), r"stopped cleanly", "stopped cleanly with the reconcile unfinished")
t.done()
