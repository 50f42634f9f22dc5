#!/usr/bin/env python3
"""mkstore.py STORAGE N -> a regmirror storage with N objects (the `startup` scenario): one
small file per object under blobs/sha256/<aa>/<hex> and its rows in index.db (objects and
origins), as a mirror that had pulled them would leave them. The schema must exist already
(start and stop regmirror on the empty storage first). Files hold 16..80 bytes; digests are
real SHA-256 of the content, so that `regmirror verify` would agree."""
import hashlib
import os
import sqlite3
import sys
import time

storage, n = sys.argv[1], int(sys.argv[2])
blobs = os.path.join(storage, "blobs", "sha256")
for i in range(256):
    os.makedirs(os.path.join(blobs, "%02x" % i), exist_ok=True)
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
