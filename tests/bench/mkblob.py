#!/usr/bin/env python3
"""mkblob.py STORE REPO MiB -> prints the digest. Writes a MiB-sized incompressible blob
straight into a docker-registry filesystem storage (blob data + the repository's layer
link), which is much faster than pushing 500 MB through the registry API. Each MiB differs
(its first 32 bytes are a hash of its index), so no two blobs share content."""
import hashlib
import os
import sys

store, repo, mb = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.makedirs(store, exist_ok=True)
h = hashlib.sha256()
tmp = os.path.join(store, "tmpblob.%d" % os.getpid())
base = os.urandom(1 << 20)
with open(tmp, "wb") as f:
    for i in range(mb):
        c = hashlib.sha256(i.to_bytes(8, "little")).digest() + base[32:]
        h.update(c)
        f.write(c)
hx = h.hexdigest()
d = os.path.join(store, "docker/registry/v2/blobs/sha256", hx[:2], hx)
os.makedirs(d, exist_ok=True)
os.replace(tmp, os.path.join(d, "data"))
link = os.path.join(store, "docker/registry/v2/repositories", repo, "_layers/sha256", hx)
os.makedirs(link, exist_ok=True)
with open(os.path.join(link, "link"), "w") as f:
    f.write("sha256:" + hx)
print("sha256:" + hx)
