#!/usr/bin/env python3
"""evictprobe.py URL PATH LOG MAX_S -> one JSON line (the `evict` scenario).

HEADs PATH (a cached object) on one keep-alive connection, one at a time, from now until the
mirror's eviction is over, and times each: the latency of a lone HEAD is how long the loop was
busy with something else. Eviction is followed through the mirror's log (LOG, --log-level
info): its `mod=gc msg="evicted N objects (B bytes)"` lines, one per batch. It is over when no
such line has come for 2 s after the first (or MAX_S passes); the HEADs go on for AFTER_S more,
with nothing to do in the mirror: the same machine's latency at rest, for comparison (the box
is shared). Also reports the HEADs while the start-up reconcile ran (until `mod=reconcile
msg="done in`), and those of the eviction after the reconcile was over (evict_only_*)."""
import datetime
import http.client
import json
import re
import sys
import time
import urllib.parse

url, path, logf, max_s = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
AFTER_S = 3.0
u = urllib.parse.urlsplit(url)
GC = re.compile(r'^time=(\S+) .*mod=gc msg="evicted (\d+) objects \((\d+) bytes\)')
REC = re.compile(r'^time=(\S+) .*mod=reconcile msg="done in (\d+) ms')


def ts(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


class Scan:
    """What the log says so far; each call reads only the lines added since the last (the
    mirror logs every HEAD at info: a whole read per call grew with the run)."""
    def __init__(self):
        self.f = open(logf, errors="replace")
        self.part = ""
        self.first = self.last = self.rec_end = None
        self.objs = self.nbytes = self.batches = 0

    def __call__(self):
        for line in self.f:
            if not line.endswith("\n"):
                self.part += line  # a line still being written: finished by the next read
                break
            line, self.part = self.part + line, ""
            m = GC.match(line)
            if m:
                t = ts(m.group(1))
                self.first = t if self.first is None else self.first
                self.last = t
                self.objs += int(m.group(2))
                self.nbytes += int(m.group(3))
                self.batches += 1
                continue
            m = REC.match(line)
            if m:
                self.rec_end = ts(m.group(1))
        return self.first, self.last, self.objs, self.nbytes, self.batches, self.rec_end


scan = Scan()


def pct(v, p):
    if not v:
        return None
    v = sorted(v)
    return round(v[min(len(v) - 1, int(len(v) * p))] * 1000, 3)


samples = []  # (start wall time, latency s, status)
t_start = time.time()
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
errors = 0
first = last = rec_end = None
objs = nbytes = batches = 0
last_scan = 0.0
while time.time() - t_start < max_s:
    t0 = time.time()
    try:
        conn.request("HEAD", path)
        r = conn.getresponse()
        r.read()
        st = r.status
    except (OSError, http.client.HTTPException):
        errors += 1
        conn.close()
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        st = 0
    t1 = time.time()
    samples.append((t0, t1 - t0, st))
    if t1 - last_scan > 0.5:
        last_scan = t1
        first, last, objs, nbytes, batches, rec_end = scan()
        if first is not None and t1 - last > 2.0 + AFTER_S:
            break
conn.close()
first, last, objs, nbytes, batches, rec_end = scan()
during = [lat for (t, lat, st) in samples if first is not None and first <= t <= last]
rec = [lat for (t, lat, st) in samples if rec_end is not None and t <= rec_end]
only = [lat for (t, lat, st) in samples
        if first is not None and first <= t <= last and (rec_end is None or t > rec_end)]
rest = [lat for (t, lat, st) in samples if last is not None and t > last + 2.0]
bad = sum(1 for (t, lat, st) in samples if st != 200)
out = {
    "ok": first is not None and bad == 0 and bool(during),
    "evicted_objects": objs, "evicted_bytes": nbytes, "batches": batches,
    "evict_s": round(last - first, 3) if first is not None else None,
    "evict_per_s": round(objs / (last - first), 1) if first is not None and last > first else None,
    "heads": len(samples), "heads_not_200": bad, "errors": errors,
    "evict_heads": len(during), "evict_p50_ms": pct(during, 0.5), "evict_p99_ms": pct(during, 0.99),
    "evict_max_ms": round(max(during) * 1000, 3) if during else None,
    "evict_only_heads": len(only), "evict_only_p99_ms": pct(only, 0.99),
    "rest_heads": len(rest), "rest_p50_ms": pct(rest, 0.5), "rest_p99_ms": pct(rest, 0.99),
    "reconcile_heads": len(rec), "reconcile_p99_ms": pct(rec, 0.99),
    "reconcile_max_ms": round(max(rec) * 1000, 3) if rec else None,
}
print(json.dumps(out))
