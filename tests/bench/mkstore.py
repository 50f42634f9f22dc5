#!/usr/bin/env python3
"""mkstore.py STORAGE N [--files] -> a regmirror storage with N objects (the `startup` scenario): one
small file per object under blobs/sha256/<aa>/<hex> and its rows in index.db (objects and
origins), as a mirror that had pulled them would leave them. The schema must exist already
(start and stop regmirror on the empty storage first). Files hold 16..80 bytes; digests are
real SHA-256 of the content, so that `regmirror verify` would agree. Object i was last accessed
at (an hour ago + i ms), so eviction takes them in order. --files only writes the files that are
missing and leaves index.db alone (the `evict` scenario restores the store between runs)."""
import hashlib
import os
import sqlite3
import sys
import time

storage, n = sys.argv[1], int(sys.argv[2])
files_only = "--files" in sys.argv[3:]
blobs = os.path.join(storage, "blobs", "sha256")
for i in range(256):
    os.makedirs(os.path.join(blobs, "%02x" % i), exist_ok=True)
if files_only:
    made = 0
    for i in range(n):
        data = b"startup object %d " % i + b"x" * (i % 64)
        hx = hashlib.sha256(data).hexdigest()
        p = os.path.join(blobs, hx[:2], hx)
        if not os.path.exists(p):
            with open(p, "wb") as f:
                f.write(data)
            made += 1
    print(made)
    sys.exit(0)
db = sqlite3.connect(os.path.join(storage, "index.db"))
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=OFF")
now = int(time.time() * 1000) - 3600_000
rows, origins = [], []
for i in range(n):
    data = b"startup object %d " % i + b"x" * (i % 64)
    hx = hashlib.sha256(data).hexdigest()
    fd = os.open(os.path.join(blobs, hx[:2], hx), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data)
    os.close(fd)
    d = "sha256:" + hx
    rows.append((d, len(data), "application/octet-stream", "blob", now, now + i, 0))
    origins.append((d, "docker.io", "library/startup", 1))
    if len(rows) >= 50000:
        db.executemany("INSERT OR REPLACE INTO objects VALUES (?,?,?,?,?,?,?)", rows)
        db.executemany("INSERT OR REPLACE INTO origins VALUES (?,?,?,?)", origins)
        db.commit()
        rows, origins = [], []
db.executemany("INSERT OR REPLACE INTO objects VALUES (?,?,?,?,?,?,?)", rows)
db.executemany("INSERT OR REPLACE INTO origins VALUES (?,?,?,?)", origins)
db.commit()
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
db.close()
print(n)
