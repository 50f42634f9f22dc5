#!/usr/bin/env python3
"""Bench of eviction by image (issue 16), standalone: `make bench-evict` or
   PYTHONPATH=tests/integration RGM_BIN=src/regmirror python3 tests/bench/evict.py
Knobs (environment): IMAGES=100000, BENCH_WORK (default /tmp/regmirror-bench/work),
RESULTS_DIR (default /tmp/regmirror-bench/results), KEEP_PCT=10 (max_cache_bytes as a share of
the store).

A store of IMAGES images is written straight into a storage directory (for each image: a
manifest and a config file, one base layer shared by all; their rows in objects, origins,
tags, and the references table, back-fill marked done), every image last used over a day
ago except one hot image. regmirror serve then runs on it, first without a limit (baseline:
cached HEADs of the hot tag for 5 s), then with max_cache_bytes at KEEP_PCT % of the store:
eviction takes the images in batches (100 objects per timer tick) while one keep-alive client
HEADs the hot tag in a loop. Reported: the batches' times (from serve's "evicted N objects
(B bytes) in T ms" lines), the images evicted per second, and the cached HEAD latency
(p50, p99, max) during eviction beside the baseline; the target is p99 < 5 ms.

Prints a JSON line per measurement and a Markdown table at the end (also written to
RESULTS_DIR/evict.md).
"""

import hashlib
import http.client
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time

import rgmtest
from rgmtest import MANIFEST_ACCEPT

IMAGES = int(os.environ.get("IMAGES", "100000"))
KEEP_PCT = float(os.environ.get("KEEP_PCT", "10"))
WORK = os.environ.get("BENCH_WORK", "/tmp/regmirror-bench/work")
RESULTS = os.environ.get("RESULTS_DIR", "/tmp/regmirror-bench/results")
DAY_MS = 86400_000
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

rows = []


def emit(**kw):
    print(json.dumps(kw), flush=True)
    rows.append(kw)


def put_file(blobs, data):
    hx = hashlib.sha256(data).hexdigest()
    fd = os.open(os.path.join(blobs, hx[:2], hx), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data)
    os.close(fd)
    return "sha256:" + hx


def make_store(storage, n):
    """n images in storage (schema made by regmirror first). Returns (total bytes, hot repo)."""
    shutil.rmtree(storage, ignore_errors=True)
    os.makedirs(storage)
    rgmtest.run([rgmtest.RGM_BIN, "ls", "--images", "--storage", storage])  # the schema
    blobs = os.path.join(storage, "blobs", "sha256")
    for i in range(256):
        os.makedirs(os.path.join(blobs, "%02x" % i), exist_ok=True)
    db = sqlite3.connect(os.path.join(storage, "index.db"))
    db.execute("PRAGMA synchronous=OFF")
    now = int(time.time() * 1000)
    old = now - 2 * DAY_MS - n * 1000
    base = b"base layer " * 100
    base_d = put_file(blobs, base)
    objs = [(base_d, len(base), OCI_LAYER, "blob", old, now - 2 * DAY_MS, 0)]
    origins, tags, refs, scanned = [], [], [], []
    total = len(base)
    for i in range(n):
        last = now if i == n - 1 else old + i * 1000
        repo = "library/img%d" % i
        cfg = json.dumps({"architecture": "amd64", "os": "linux", "i": i}).encode()
        cfg_d = put_file(blobs, cfg)
        man = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                          "config": {"mediaType": OCI_CONFIG, "digest": cfg_d, "size": len(cfg)},
                          "layers": [{"mediaType": OCI_LAYER, "digest": base_d,
                                      "size": len(base)}]}).encode()
        man_d = put_file(blobs, man)
        total += len(cfg) + len(man)
        objs.append((cfg_d, len(cfg), OCI_CONFIG, "blob", last, last, 0))
        objs.append((man_d, len(man), OCI_MANIFEST, "manifest", last, last, 1))
        for d in (cfg_d, man_d):
            origins.append((d, "docker.io", repo, 1))
        origins.append((base_d, "docker.io", repo, 1))
        tags.append(("docker.io", repo, "v1", man_d, now if i == n - 1 else last))
        refs += [(man_d, cfg_d, 0), (man_d, base_d, 0)]
        scanned.append((man_d,))
        if len(objs) >= 50000 or i == n - 1:
            db.executemany("INSERT OR REPLACE INTO objects VALUES (?,?,?,?,?,?,?)", objs)
            db.executemany("INSERT OR REPLACE INTO origins VALUES (?,?,?,?)", origins)
            db.executemany("INSERT OR REPLACE INTO tags VALUES (?,?,?,?,?)", tags)
            db.executemany("INSERT OR REPLACE INTO refs VALUES (?,?,?)", refs)
            db.executemany("INSERT OR REPLACE INTO refs_scanned VALUES (?)", scanned)
            db.commit()
            objs, origins, tags, refs, scanned = [], [], [], [], []
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return total, "library/img%d" % (n - 1)


class Header:
    """One keep-alive client HEADing the hot tag in a loop; latencies in ms."""

    def __init__(self, port, repo):
        self.port, self.path = port, "/v2/%s/manifests/v1" % repo
        self.lat, self.errors, self.stop = [], 0, False
        self.t = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self.stop:
            t0 = time.perf_counter()
            try:
                c.request("HEAD", self.path, headers={"Accept": MANIFEST_ACCEPT})
                r = c.getresponse()
                r.read()
                ok = r.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            dt = (time.perf_counter() - t0) * 1000
            if ok:
                self.lat.append((time.time(), dt))
            else:
                self.errors += 1
        c.close()


def pct(v, p):
    if not v:
        return float("nan")
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p / 100))]


def metric(port, name):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/metrics")
    b = c.getresponse().read().decode()
    c.close()
    m = re.search(r"^%s (\d+)$" % re.escape(name), b, re.M)
    return int(m.group(1)) if m else None


def main():
    os.makedirs(WORK, exist_ok=True)
    os.makedirs(RESULTS, exist_ok=True)
    ws = rgmtest.Workspace(prefix="rgm-bench-evict-")
    storage = os.path.join(WORK, "evict-store")
    t0 = time.time()
    total, hot = make_store(storage, IMAGES)
    emit(step="store", images=IMAGES, bytes=total, seconds=round(time.time() - t0, 1))
    reg = {"docker.io": {"endpoint": "http://127.0.0.1:9", "tag_ttl": "24h"}}
    cfg = {"registries": reg, "access_log": False}

    m = rgmtest.Mirror(ws, config=cfg, storage=storage, name="baseline",
                       args=["--log-level", "info"])
    time.sleep(2)  # the start-up reconcile and back-fill check
    h = Header(m.port, hot)
    h.t.start()
    time.sleep(5)
    h.stop = True
    h.t.join()
    base = [d for (_, d) in h.lat]
    emit(step="baseline", heads=len(base), errors=h.errors, p50_ms=round(pct(base, 50), 3),
         p99_ms=round(pct(base, 99), 3), max_ms=round(max(base), 3))
    m.stop()

    limit = int(total * KEEP_PCT / 100)
    cfg["max_cache_bytes"] = str(limit)
    m = rgmtest.Mirror(ws, config=cfg, storage=storage, name="evict",
                       args=["--log-level", "info"])
    h = Header(m.port, hot)
    h.t.start()
    t_start = time.time()
    deadline = t_start + 900
    while time.time() < deadline:
        b = metric(m.port, "regmirror_cache_bytes")
        if b is not None and b <= limit:
            break
        time.sleep(5)  # a scrape reads every row's size (index stats): Prometheus' pace
    t_end = time.time()
    h.stop = True
    h.t.join()
    evicted = metric(m.port, 'regmirror_evicted_images_total{reason="lru-image"}')
    hot_ok = metric(m.port, "regmirror_cache_objects")
    m.stop()
    log = open(m.log).read()
    batches = [float(x) for x in re.findall(r'evicted \d+ objects \(\d+ bytes\) in ([0-9.]+) ms',
                                            log)]
    first = log.find("evicted ")
    during = [d for (t, d) in h.lat if t_start <= t <= t_end]
    emit(step="evict", limit=limit, images_evicted=evicted, seconds=round(t_end - t_start, 1),
         images_per_s=round((evicted or 0) / max(t_end - t_start, 0.001), 1),
         batches=len(batches), batch_p50_ms=round(pct(batches, 50), 2),
         batch_p99_ms=round(pct(batches, 99), 2),
         batch_max_ms=round(max(batches), 2) if batches else None,
         heads=len(during), head_errors=h.errors, p50_ms=round(pct(during, 50), 3),
         p99_ms=round(pct(during, 99), 3), max_ms=round(max(during), 3) if during else None,
         objects_left=hot_ok, target_met=bool(during) and pct(during, 99) < 5.0 and first >= 0)

    b, e = rows[1], rows[2]
    md = ["# eviction by image: %d images (tests/bench/evict.py)" % IMAGES, "",
          "| measure | value |", "|---|---|",
          "| store | %d images, %d bytes, written in %s s |" % (IMAGES, total, rows[0]["seconds"]),
          "| limit | %d bytes (%g %% of the store) |" % (limit, KEEP_PCT),
          "| images evicted | %s in %s s (%s images/s) |" % (e["images_evicted"], e["seconds"],
                                                          e["images_per_s"]),
          "| batches (100 objects) | %d; p50 %s ms, p99 %s ms, max %s ms |" % (
              e["batches"], e["batch_p50_ms"], e["batch_p99_ms"], e["batch_max_ms"]),
          "| cached HEAD, no eviction | %d HEADs; p50 %s ms, p99 %s ms, max %s ms |" % (
              b["heads"], b["p50_ms"], b["p99_ms"], b["max_ms"]),
          "| cached HEAD, during eviction | %d HEADs (%d errors); p50 %s ms, p99 %s ms, max %s ms |"
          % (e["heads"], e["head_errors"], e["p50_ms"], e["p99_ms"], e["max_ms"]),
          "| target: p99 < 5 ms during eviction | %s |" % ("met" if e["target_met"] else "MISSED"),
          ""]
    text = "\n".join(md)
    print(text)
    with open(os.path.join(RESULTS, "evict.md"), "w") as f:
        f.write(text)
    return 0 if e["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
