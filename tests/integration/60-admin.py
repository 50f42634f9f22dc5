"""regmirror ls, verify and gc on a real storage directory, and eviction by a running
mirror over max_cache_bytes."""
import glob
import os
import time

from rgmtest import *

t = TAP(timeout=240)
ws = Workspace()
up = Registry(ws)
up.start()
img = make_image(ws, "library/app:v1", layers=(200_000, 300_000, 400_000))
pushed = push(img, up)

m = Mirror(ws, args=["--registry", "docker.io=" + up.url])
st, h, _ = m.get("/v2/library/app/manifests/v1", headers={"Accept": MANIFEST_ACCEPT})
t.is_(st, 200, "manifest pulled through the mirror")
for L in img["layers"] + [{"digest": img["config"]}]:
    st, _, b = m.get("/v2/library/app/blobs/" + L["digest"])
    t.ok(st == 200 and sha256_digest(b) == L["digest"], "blob %s pulled" % L["digest"][:19])
t.is_(m.stop(), 0, "mirror stopped cleanly")

r = run([RGM_BIN, "ls", "--storage", m.storage], check=False)
t.is_(r.rc, 0, "ls exits 0")
t.like(r.out, r"tag\s+docker\.io/library/app:v1 -> " + pushed["digest"], "ls shows the tag")
for L in img["layers"]:
    t.ok(L["digest"] in r.out, "ls lists layer %s" % L["digest"][:19])

r = run([RGM_BIN, "verify", "--storage", m.storage], check=False)
t.is_(r.rc, 0, "verify of an intact cache exits 0")
t.like(r.out, r"5 objects verified, 0 corrupt", "verify counts manifest, config and layers")

victim = img["layers"][0]["digest"]
hexd = victim.split(":")[1]
path = os.path.join(m.storage, "blobs", "sha256", hexd[:2], hexd)
with open(path, "r+b") as f:
    f.seek(100)
    f.write(b"corrupted!")
r = run([RGM_BIN, "verify", "--storage", m.storage], check=False)
t.is_(r.rc, 1, "verify finds the corrupt blob and exits 1")
t.ok(victim in r.out and not os.path.exists(path), "the corrupt blob is removed")

r = run([RGM_BIN, "gc", "--storage", m.storage], check=False)
t.is_(r.rc, 2, "gc without a limit is a usage error")
r = run([RGM_BIN, "gc", "--storage", m.storage, "--max-size", "500000"], check=False)
t.is_(r.rc, 0, "gc with a limit exits 0")
left = sum(os.path.getsize(p) for p in glob.glob(os.path.join(m.storage, "blobs", "*", "*", "*")))
t.ok(left <= 500000, "gc brought the store under the limit (%d bytes left)" % left)
r = run([RGM_BIN, "ls", "--storage", m.storage, "--bogus"], check=False)
t.is_(r.rc, 2, "unknown flag exits 2")

# The running mirror evicts on its own: a 600 kB limit and ~900 kB of layers.
# Blobs fetched without their manifest are orphans: orphan_grace 0 lets them go at once.
m2 = Mirror(ws, config={"max_cache_bytes": "600000", "orphan_grace": "0",
                        "registries": {"docker.io": {"endpoint": up.url}}},
            name="mirror-gc")
for L in img["layers"]:
    st, _, b = m2.get("/v2/library/app/blobs/" + L["digest"])
    t.ok(st == 200 and sha256_digest(b) == L["digest"], "pulled %s" % L["digest"][:19])


def store_bytes():
    return sum(os.path.getsize(p)
               for p in glob.glob(os.path.join(m2.storage, "blobs", "*", "*", "*")))


try:
    wait_for(lambda: store_bytes() <= 600000, timeout=15, what="eviction")
    t.ok(True, "the running mirror evicted down to max_cache_bytes")
except TimeoutError:
    t.ok(False, "the running mirror evicted down to max_cache_bytes (%d)" % store_bytes())
st, _, b = m2.get("/v2/library/app/blobs/" + img["layers"][0]["digest"])
t.ok(st == 200 and sha256_digest(b) == img["layers"][0]["digest"],
     "an evicted blob is fetched again")
t.like(m2.log_text(), r"mod=gc msg=\"evicted", "eviction is logged")
t.is_(m2.stop(), 0, "mirror stopped cleanly")
t.done()
