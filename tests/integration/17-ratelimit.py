#!/usr/bin/env python3
"""Upstream economics (issue 12), with fakeup: a tag that moves to an already-cached digest
costs a HEAD and no GET (also a new tag naming a digest cached under another repository);
after a 429 with Retry-After: 5 no manifest request reaches the upstream for 5 s, cached
tags are STALE and misses get 429; RateLimit-Remaining below ratelimit_reserve gives the
gauge and one WARN, and prewarm is refused (429). The metric families are there from start."""

import os
import re
import signal
import subprocess
import time

import fakeup
import rgmtest

t = rgmtest.TAP(timeout=120)
ws = rgmtest.Workspace()

eco = fakeup.FakeUpstream(name="eco")
rl = fakeup.FakeUpstream(name="rl")
rs = fakeup.FakeUpstream(name="rs")
m = rgmtest.Mirror(ws, config={"registries": {
    "docker.io": {"endpoint": eco.url, "tag_ttl": "1s"},
    "rl.test": {"endpoint": rl.url, "tag_ttl": "1s"},
    "rs.test": {"endpoint": rs.url, "ratelimit_reserve": 10}}})
ACC = {"Accept": rgmtest.MANIFEST_ACCEPT}

# ---- metric families from start-up
st, _, body = m.get("/metrics")
text = body.decode()
for fam, typ in (("regmirror_upstream_pulls_total", "counter"),
                 ("regmirror_upstream_pulls_avoided_total", "counter"),
                 ("regmirror_upstream_ratelimit_reserve", "gauge")):
    t.ok("# TYPE %s %s" % (fam, typ) in text and "# HELP %s " % fam in text
         and '%s{registry="rs.test"} 0' % fam in text,
         "%s: HELP, TYPE and a zero series per registry from start-up" % fam)

# ---- resolve by digest first
i1 = eco.add_image("lib/a", "t1", layers=[b"one"])
i2 = eco.add_image("lib/a", "t2", layers=[b"two"])
for tag, i in (("t1", i1), ("t2", i2)):
    st, h, b = m.get("/v2/lib/a/manifests/" + tag, headers=ACC)
    t.ok(st == 200 and b == i["manifest_bytes"], "lib/a:%s cached" % tag, diag=(st, dict(h)))
filled = time.monotonic()
gets0 = eco.count("GET", "/manifests/")
t.is_(gets0, 2, "two manifest GETs (pulls) so far")
eco.add_manifest("lib/a", "t1", i2["manifest_bytes"])  # t1 moves to t2's digest
time.sleep(max(0.0, 1.2 - (time.monotonic() - filled)))
heads0 = eco.count("HEAD", "/lib/a/manifests/t1")
st, h, b = m.get("/v2/lib/a/manifests/t1", headers=ACC)
t.ok(st == 200 and h.get("docker-content-digest") == i2["manifest"] and b == i2["manifest_bytes"],
     "tag moved to a cached digest: served the new manifest", diag=(st, dict(h)))
t.is_((eco.count("HEAD", "/lib/a/manifests/t1") - heads0, eco.count("GET", "/manifests/") - gets0),
      (1, 0), "... for one HEAD and no GET")
eco.add_manifest("lib/b", "x", i1["manifest_bytes"])  # another repository, same digest
st, h, b = m.get("/v2/lib/b/manifests/x", headers=ACC)
t.ok(st == 200 and b == i1["manifest_bytes"] and h.get("x-cache") == "HIT",
     "a new tag naming a digest cached under another repository: HIT", diag=(st, dict(h)))
t.is_(eco.count("GET", "/manifests/") - gets0, 0, "... no GET (one HEAD)")
mt = m.metrics()
t.is_(mt.get('regmirror_upstream_pulls_total{registry="docker.io"}'), 2.0, "pulls_total: 2")
t.is_(mt.get('regmirror_upstream_pulls_avoided_total{registry="docker.io"}'), 2.0,
      "pulls_avoided_total: 2")

# ---- a 429 opens the circuit
ic = rl.add_image("lib/c", "1", layers=[b"cached"])
rl.add_image("lib/c", "2", layers=[b"uncached"])
st, h, _ = m.get("/v2/lib/c/manifests/1?ns=rl.test", headers=ACC)
t.is_(st, 200, "rl.test lib/c:1 cached")
time.sleep(1.1)  # past tag_ttl
rl.behave("/manifests/", status=429, retry_after=5, times=1)
st, h, b = m.get("/v2/lib/c/manifests/2?ns=rl.test", headers=ACC)
t0 = time.monotonic()
n429 = rl.count(None, "/manifests/")
t.ok(st == 429 and h.get("retry-after") == "5", "the upstream's 429 relayed with Retry-After",
     diag=(st, dict(h), b[:200]))
ok_stale, ok_miss, ras = True, True, []
while time.monotonic() - t0 < 4.0:
    st, h, b = m.get("/v2/lib/c/manifests/1?ns=rl.test", headers=ACC)
    ok_stale = ok_stale and st == 200 and h.get("x-cache") == "STALE" and b == ic["manifest_bytes"]
    st, h, b = m.get("/v2/lib/c/manifests/2?ns=rl.test", headers=ACC)
    ok_miss = ok_miss and st == 429 and b"TOOMANYREQUESTS" in b
    ras.append(h.get("retry-after"))
    time.sleep(0.3)
busy = time.monotonic() - t0 < 4.8
t.ok(ok_stale, "while the circuit is open: the cached tag is STALE")
t.ok(ok_miss, "while the circuit is open: a miss gets 429")
t.ok(all(r and 1 <= int(r) <= 5 for r in ras) and int(ras[-1]) <= int(ras[0]),
     "... with the remaining Retry-After", diag=ras)
if busy:
    t.is_(rl.count(None, "/manifests/"), n429, "no manifest request reached the upstream for 5 s")
else:
    t.skip("no manifest request reached the upstream for 5 s", "machine too slow")
time.sleep(max(0.0, 5.2 - (time.monotonic() - t0)))
st, h, b = m.get("/v2/lib/c/manifests/2?ns=rl.test", headers=ACC)
t.ok(st == 200, "after Retry-After the miss is fetched", diag=(st, dict(h), b[:200]))
t.like(m.log_text(), r"registry rl\.test answered 429", "the circuit is logged")

# ---- the reserve
rs.behave("/manifests/", headers={"RateLimit-Limit": "100;w=21600",
                                 "RateLimit-Remaining": "5;w=21600"})
rs.add_image("lib/d", "1", layers=[b"d1"])
rs.add_image("lib/d", "2", layers=[b"d2"])
rs.add_image("lib/d", "3", layers=[b"d3"])
for tag in ("1", "2"):
    st, _, _ = m.get("/v2/lib/d/manifests/%s?ns=rs.test" % tag, headers=ACC)
    t.is_(st, 200, "rs.test lib/d:%s fetched (5 pulls left)" % tag)
mt = m.metrics()
t.is_(mt.get('regmirror_upstream_ratelimit_reserve{registry="rs.test"}'), 1.0,
      "remaining below the reserve: the gauge is 1")
t.is_(mt.get('regmirror_upstream_ratelimit_reserve{registry="docker.io"}'), 0.0,
      "other registries' gauge stays 0")
warns = re.findall(r"level=warn.*registry rs\.test: 5 pulls left.*ratelimit_reserve", m.log_text(),
                   re.I)
t.is_(len(warns), 1, "one WARN, not one per request")
gets = rs.count("GET", "/lib/d/manifests/3")
st, h, b = m.get("/v2/lib/d/manifests/3?ns=rs.test", headers=dict(ACC, **{"X-Regmirror-Prewarm": "1"}))
t.ok(st == 429 and b"ratelimit_reserve" in b, "a prewarm request for an uncached tag: 429",
     diag=(st, b[:200]))
st, h, b = m.get("/v2/lib/d/manifests/1?ns=rs.test", headers=dict(ACC, **{"X-Regmirror-Prewarm": "1"}))
t.ok(st == 200, "a prewarm request for a cached tag is still served", diag=(st, dict(h)))
p = subprocess.run([rgmtest.RGM_BIN, "prewarm", "--mirror", m.url, "-"], timeout=60,
                   input=b"rs.test/lib/d:3\n", capture_output=True)
t.ok(p.returncode == 1 and b"429" in p.stdout + p.stderr, "regmirror prewarm is refused",
     diag=(p.returncode, (p.stdout + p.stderr)[-400:]))
t.is_(rs.count("GET", "/lib/d/manifests/3"), gets, "... and spent no pull upstream")
st, _, _ = m.get("/v2/lib/d/manifests/3?ns=rs.test", headers=ACC)
t.is_(st, 200, "a node's request for it still goes through")
# prewarm marks its requests (seen at a fakeup standing in for the mirror)
spy = fakeup.FakeUpstream(name="spy")
subprocess.run([rgmtest.RGM_BIN, "prewarm", "--mirror", spy.url, "-"], timeout=60,
               input=b"lib/none:1\n", capture_output=True)
t.ok(spy.count(None, "/manifests/", header="X-Regmirror-Prewarm") >= 1,
     "prewarm's requests carry X-Regmirror-Prewarm")
t.ok(m.alive(), "mirror alive")
t.done()
