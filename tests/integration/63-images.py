#!/usr/bin/env python3
"""The cache by image: five images share a base layer, the limit fits three; eviction takes
the least recently used images whole and keeps the shared layer; pins; purge; ls --images;
repository filters; back-fill of a store written without references."""
import json
import os
import sqlite3
import time

import fakeup
from rgmtest import *

t = TAP(timeout=240)
ws = Workspace()
up = fakeup.FakeUpstream()
base = os.urandom(400_000)
imgs = []
for i in range(5):
    imgs.append(up.add_image("library/app%d" % i, "v1", layers=(base, os.urandom(100_000))))
base_d = imgs[0]["layers"][0]


def blob_path(storage, d):
    h = d.split(":")[1]
    return os.path.join(storage, "blobs", "sha256", h[:2], h)


def pull(m, i, by_digest=False):
    ref = imgs[i]["manifest"] if by_digest else "v1"
    st, _, _ = m.get("/v2/library/app%d/manifests/%s" % (i, ref),
                     headers={"Accept": MANIFEST_ACCEPT})
    ok = st == 200
    for d in [imgs[i]["config"]] + imgs[i]["layers"]:
        st, _, b = m.get("/v2/library/app%d/blobs/%s" % (i, d))
        ok = ok and st == 200 and sha256_digest(b) == d
    return ok


reg = {"docker.io": {"endpoint": up.url, "tag_ttl": "1s"}}
m = Mirror(ws, config={"registries": reg})
for i in range(5):
    t.ok(pull(m, i), "image %d pulled" % i)
    time.sleep(0.02)
time.sleep(0.1)
for i in (0, 1):  # re-pull two: now the most recent
    t.ok(pull(m, i, by_digest=True), "image %d pulled again" % i)
    time.sleep(0.02)
t.is_(m.stop(), 0, "mirror stopped cleanly")
time.sleep(1.1)  # past tag_ttl

r = run([RGM_BIN, "ls", "--images", "--json", "--storage", m.storage], check=False)
t.is_(r.rc, 0, "ls --images --json exits 0")
try:
    listing = json.loads(r.out)
except ValueError:
    listing = []
t.is_(len(listing), 5, "five images listed")
one = [x for x in listing if x["digest"] == imgs[2]["manifest"]]
t.ok(one and one[0]["reference"] == "docker.io/library/app2:v1" and
     one[0]["platforms"] == ["linux/amd64"] and one[0]["shared_bytes"] >= 400_000 and
     100_000 <= one[0]["unique_bytes"] < 110_000 and one[0]["pinned"] is False and
     one[0]["last_used"].endswith("Z"),
     "an image's line: reference, platforms, unique and shared bytes, last use", diag=r.out)
r = run([RGM_BIN, "ls", "--images", "--storage", m.storage], check=False)
t.like(r.out, r"docker\.io/library/app0:v1\s+sha256:\S+\s+linux/amd64", "ls --images table")

# Limit for base + three images: 900 kB cached, target 90 % of 790 kB.
r = run([RGM_BIN, "gc", "--storage", m.storage, "--max-size", "790000",
         "--config", ws.write("gc.json", json.dumps({"registries": reg}))], check=False)
t.is_(r.rc, 0, "gc exits 0")
t.ok(os.path.exists(blob_path(m.storage, base_d)), "the shared base layer stays")
for i in (2, 3):
    t.ok(not os.path.exists(blob_path(m.storage, imgs[i]["manifest"])) and
         not os.path.exists(blob_path(m.storage, imgs[i]["layers"][1])),
         "least recent image %d is gone whole (manifest and unique layer)" % i)
for i in (4, 0, 1):
    t.ok(os.path.exists(blob_path(m.storage, imgs[i]["manifest"])) and
         os.path.exists(blob_path(m.storage, imgs[i]["layers"][1])),
         "more recent image %d stays" % i)

m.start()
up.requests.clear()
for i in (0, 1):
    t.ok(pull(m, i, by_digest=True), "recent image %d pulls" % i)
t.is_(len(up.requests), 0, "the two most recent images pull with 0 upstream requests")
t.ok(pull(m, 2), "an evicted image is fetched again")
t.ok(up.count("GET", "/library/app2/blobs/" + imgs[2]["layers"][1]) == 1 and
     up.count("GET", base_d) == 0, "only its unique layer is fetched again")

# Purge through the store (no server running: tests/65-adminsock covers the socket), pinned
# refusal, --force.
t.is_(m.stop(), 0, "mirror stopped")
r = run([RGM_BIN, "pin", "--storage", m.storage, "app2:v1"], check=False)
t.ok(r.rc == 0 and "docker.io/library/app2:v1" in r.out, "pin normalises the reference")
r = run([RGM_BIN, "purge", "--storage", m.storage, "app2:v1"], check=False)
t.ok(r.rc == 1 and "pinned" in r.out and os.path.exists(blob_path(m.storage, imgs[2]["manifest"])),
     "purge of a pinned image is refused", diag=r.out)
r = run([RGM_BIN, "purge", "--storage", m.storage, "--force", "app2:v1"], check=False)
t.ok(r.rc == 0 and not os.path.exists(blob_path(m.storage, imgs[2]["manifest"])) and
     os.path.exists(blob_path(m.storage, base_d)), "purge --force removes it, keeps the base",
     diag=r.out)
r = run([RGM_BIN, "unpin", "--storage", m.storage, "app2:v1"], check=False)
t.is_(r.rc, 1, "purge --force unpinned it")

# Pins: a pinned least recent image survives; pins over the limit WARN once, no thrash.
r = run([RGM_BIN, "pin", "--storage", m.storage, "app4:v1"], check=False)
t.is_(r.rc, 0, "pin app4")
r = run([RGM_BIN, "gc", "--storage", m.storage, "--max-size", "600000"], check=False)
t.ok(os.path.exists(blob_path(m.storage, imgs[4]["manifest"])), "the pinned image survives gc")
cfg = {"registries": reg, "max_cache_bytes": "1000", "pin": ["docker.io/library/**"]}
m2 = Mirror(ws, config=cfg, storage=m.storage, name="mirror-pins")
before = sorted(os.listdir(os.path.join(m.storage, "blobs", "sha256")))
wait_for(lambda: "nothing more may go" in m2.log_text(), timeout=15, what="the WARN")
time.sleep(5.5)  # one more eviction tick
t.is_(m2.log_text().count("nothing more may go"), 1, "pins over the limit: one WARN")
t.is_(sorted(os.listdir(os.path.join(m.storage, "blobs", "sha256"))), before, "nothing evicted")
t.is_(m2.stop(), 0, "mirror stopped")

# Back-fill: a store whose references table is gone gets its references again.
db = sqlite3.connect(os.path.join(m.storage, "index.db"))
nobj = db.execute("SELECT COUNT(*) FROM objects").fetchone()[0]
nedges = db.execute("SELECT COUNT(*) FROM refs").fetchone()[0]
nman = db.execute("SELECT COUNT(*) FROM objects WHERE kind = 'manifest'").fetchone()[0]
db.execute("DROP TABLE refs")
db.execute("DROP TABLE refs_scanned")
db.commit()
db.close()
m3 = Mirror(ws, config={"registries": reg}, storage=m.storage, name="mirror-backfill")
wait_for(lambda: "references back-filled" in m3.log_text(), timeout=10, what="back-fill")
t.is_(m3.stop(), 0, "mirror stopped")
db = sqlite3.connect(os.path.join(m.storage, "index.db"))
edges = db.execute("SELECT COUNT(*) FROM refs WHERE child = ?", (base_d,)).fetchone()[0]
t.ok(nman >= 1 and edges == nman, "back-filled: every manifest names the base layer again (%d of %d)"
     % (edges, nman))
t.is_(db.execute("SELECT COUNT(*) FROM refs").fetchone()[0], nedges, "every edge is back")
t.is_(db.execute("SELECT COUNT(*) FROM objects").fetchone()[0], nobj, "no object lost")
db.close()

# Filters: deny beats allow, * is one segment, ** any depth; the 403 names the rule.
freg = {"docker.io": {"endpoint": up.url, "repositories": {
    "allow": ["library/*", "org/**"], "deny": ["library/app1", "org/secret/**"]}}}
m4 = Mirror(ws, config={"registries": freg}, storage=m.storage, name="mirror-filters")
st, _, b = m4.get("/v2/library/app0/manifests/" + imgs[0]["manifest"],
                  headers={"Accept": MANIFEST_ACCEPT})
t.is_(st, 200, "allowed by library/*")
st, _, b = m4.get("/v2/library/app1/manifests/" + imgs[1]["manifest"],
                  headers={"Accept": MANIFEST_ACCEPT})
t.ok(st == 403 and b"DENIED" in b and b"repositories.deny[0]" in b and b"library/app1" in b,
     "deny beats allow, even cached; the body names the rule", diag=b)
for path, want in (("org/a/b/c", 404), ("org/secret/x", 403), ("library/a/b", 403)):
    st, _, b = m4.get("/v2/%s/manifests/v1" % path, headers={"Accept": MANIFEST_ACCEPT})
    t.is_(st, want, "%s: %d" % (path, want))
t.is_(m4.stop(), 0, "mirror stopped")
t.done()
