#!/usr/bin/env python3
"""Bench of the cluster tier (issue 13), standalone: `make bench-cluster` or
   PYTHONPATH=tests/integration RGM_BIN=src/regmirror python3 tests/bench/cluster.py
Knobs (environment): SCENARIOS=cluster,capacity RUNS=1 CLIENTS=12 LAYER_MB=8 RATE_MBIT=200
RTT_MS=50 CAP_MB=150 (the issue's capacity figure is CAP_MB=500).

- cluster: 3 replicas (static peers) and 12 clients, each pulling the same 5-layer image
  through a different replica, the upstream behind relay.py's emulated WAN (RATE_MBIT,
  RTT_MS). Reported: upstream bytes / image bytes and the time, beside one replica (the 12
  clients on it) and two plain replicas without "cluster" (the distribution-style baseline,
  6 clients each).
- capacity: 3 different images (CAP_MB each) through 3 replicas at once, one client per
  image and replica, unthrottled, against the same through one replica. Reported: the
  speed-up (a figure, not a target: the machine may have 2 cores).

Prints a JSON line per measurement and a Markdown table at the end. Uses the integration
library (tests/integration/rgmtest.py) for the registry, the images and the mirrors.
"""

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

import rgmtest
from rgmtest import MANIFEST_ACCEPT

RATE_MBIT = float(os.environ.get("RATE_MBIT", "200"))
RTT_MS = float(os.environ.get("RTT_MS", "50"))
LAYER_MB = float(os.environ.get("LAYER_MB", "8"))
CAP_MB = float(os.environ.get("CAP_MB", "150"))
CLIENTS = int(os.environ.get("CLIENTS", "12"))
RUNS = int(os.environ.get("RUNS", "1"))
SCENARIOS = os.environ.get("SCENARIOS", "cluster,capacity").split(",")
HERE = os.path.dirname(os.path.abspath(__file__))
MiB = 1 << 20

ws = rgmtest.Workspace(prefix="rgm-bench-cluster-")
rows = []


def emit(**kw):
    print(json.dumps(kw), flush=True)
    rows.append(kw)


def relay_start(upstream):
    port, ctl = rgmtest.free_port(), rgmtest.free_port()
    p = ws.spawn([sys.executable, os.path.join(HERE, "relay.py"), "--listen", str(port),
                  "--control", str(ctl), "--upstream", upstream.host,
                  "--rate-mbit", str(RATE_MBIT), "--rtt-ms", str(RTT_MS), "--burst-ms", "5"],
                 ws.path("relay-%d.log" % port))
    rgmtest.wait_for(lambda: rgmtest.http("GET", "http://127.0.0.1:%d/stats" % ctl,
                                          timeout=2)[0] == 200, timeout=10, what="relay")
    return p, port, ctl


def relay_stats(ctl, reset=False):
    path = "/reset" if reset else "/stats"
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (ctl, path), timeout=10) as r:
        return json.loads(r.read() or b"{}") if not reset else None


def pull_whole(base, im):
    """Manifest, then every blob (3 at a time, like containerd); sha256 checked."""
    st, h, body = rgmtest.http("GET", "%s/v2/%s/manifests/%s" % (base, im["name"], im["tag"]),
                               headers={"Accept": MANIFEST_ACCEPT}, timeout=300)
    if st != 200:
        return False
    digests = [im["config"]] + [L["digest"] for L in im["layers"]]
    ok = [True]

    def one(d):
        st, _, b = rgmtest.http("GET", "%s/v2/%s/blobs/%s" % (base, im["name"], d), timeout=600)
        if st != 200 or "sha256:" + hashlib.sha256(b).hexdigest() != d:
            ok[0] = False
    for i in range(0, len(digests), 3):
        ts = [threading.Thread(target=one, args=(d,)) for d in digests[i:i + 3]]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    return ok[0]


def image_bytes(im):
    return len(im["manifest_bytes"]) + sum(os.path.getsize(p) for d, p in im["blobs"].items()
                                           if d != im["manifest"])


def replicas(n, endpoint, cluster=True, tag="r"):
    ports = [rgmtest.free_port() for _ in range(n)]
    urls = ["http://127.0.0.1:%d" % p for p in ports]
    cfg = {"registries": {"docker.io": {"endpoint": endpoint, "tag_ttl": "1h"}},
           "log_level": "warn", "access_log": False}
    out = []
    for i in range(n):
        args = []
        if cluster and n > 1:
            for u in urls:
                args += ["--peer", u]
        m = rgmtest.Mirror(ws, args=args, config=cfg, name="%s%d" % (tag, i), start=False)
        m.port = ports[i]
        m.start()
        out.append(m)
    return out, urls


def clients_pull(urls, images, n_clients):
    """n_clients threads, client i pulls images[i % len] through urls[i % len(urls)]."""
    results = [None] * n_clients

    def run(i):
        results[i] = pull_whole(urls[i % len(urls)], images[i % len(images)])
    ts = [threading.Thread(target=run, args=(i,)) for i in range(n_clients)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return time.monotonic() - t0, all(results)


# ---------------------------------------------------------------------------------------

up = rgmtest.Registry(ws, name="upstream")
relay, relay_port, relay_ctl = relay_start(up)
WAN = "http://127.0.0.1:%d" % relay_port

for run in range(RUNS if "cluster" in SCENARIOS else 0):
    for setup in ("cluster3", "single", "plain2"):
        im = rgmtest.make_image(ws, "library/bench%s%d:v1" % (setup, run),
                                layers=[int(LAYER_MB * MiB) + i for i in range(5)])
        rgmtest.push(im, up)
        n, cl = {"cluster3": (3, True), "single": (1, False), "plain2": (2, False)}[setup]
        ms, urls = replicas(n, WAN, cluster=cl, tag=setup)
        relay_stats(relay_ctl, reset=True)
        secs, ok = clients_pull(urls, [im], CLIENTS)
        st = relay_stats(relay_ctl)
        blob_gets = sum(1 for r in st["requests"] if "/blobs/" in r.get("path", ""))
        emit(scenario="cluster", setup=setup, run=run, replicas=n, clients=CLIENTS,
             seconds=round(secs, 3), ok=ok, upstream_bytes=st["bytes_down"],
             image_bytes=image_bytes(im),
             upstream_ratio=round(st["bytes_down"] / image_bytes(im), 3),
             upstream_blob_gets=blob_gets)
        for m in ms:
            m.stop()

relay.stop()
for run in range(RUNS if "capacity" in SCENARIOS else 0):
    imgs = [rgmtest.make_image(ws, "library/cap%d-%d:v1" % (run, i),
                               layers=[int(CAP_MB * MiB / 3) + j for j in range(3)])
            for i in range(3)]
    for im in imgs:
        rgmtest.push(im, up)
    # warm nothing: each setup pulls from the (local, unthrottled) upstream cold, then warm
    for setup in ("cluster3", "single"):
        n = 3 if setup == "cluster3" else 1
        ms, urls = replicas(n, up.url, cluster=(n > 1), tag="cap" + setup)
        cold, ok1 = clients_pull(urls, imgs, 3)
        warm, ok2 = clients_pull(urls, imgs, 3)
        emit(scenario="capacity", setup=setup, run=run, replicas=n, mb=3 * CAP_MB,
             cold_seconds=round(cold, 3), warm_seconds=round(warm, 3), ok=ok1 and ok2,
             warm_mb_per_s=round(3 * CAP_MB / warm, 1))
        for m in ms:
            m.stop()
        # the next setup must not be served by this one's page cache alone: same files
        # upstream, different mirror stores, so both read the upstream cold the same way

# ---------------------------------------------------------------------------------------
print("\n| scenario | setup | replicas | seconds | upstream / image | blob GETs upstream | ok |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    if r["scenario"] == "cluster":
        print("| cluster | %s | %d | %.2f | %.2f | %d | %s |" % (
            r["setup"], r["replicas"], r["seconds"], r["upstream_ratio"],
            r["upstream_blob_gets"], r["ok"]))
print("\n| scenario | setup | replicas | MB | cold s | warm s | warm MB/s | ok |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    if r["scenario"] == "capacity":
        print("| capacity | %s | %d | %d | %.2f | %.2f | %.1f | %s |" % (
            r["setup"], r["replicas"], r["mb"], r["cold_seconds"], r["warm_seconds"],
            r["warm_mb_per_s"], r["ok"]))
