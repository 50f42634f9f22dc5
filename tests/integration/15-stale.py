#!/usr/bin/env python3
"""Stale serving, bounded (issue 12): while an upstream fails (5xx, 429, timeout, refused
connection) a cached tag is served with X-Cache: STALE up to max_stale past its tag_ttl, then
503; content by digest is always served. Deleted upstream: stale_on_not_found on serves a
public cached tag the upstream now answers 404 for, off relays the 404, and never opens
private content.  Upstreams are fakeup (docker-registry cannot fail on demand)."""

import json
import time

import fakeup
import rgmtest

t = rgmtest.TAP(timeout=120)
ws = rgmtest.Workspace()

FAULTS = ("5xx", "429", "timeout", "refused")
ups = {f: fakeup.FakeUpstream(name=f) for f in FAULTS}
free = fakeup.FakeUpstream(name="free")
never = fakeup.FakeUpstream(name="never")
don = fakeup.FakeUpstream(name="del-on")
doff = fakeup.FakeUpstream(name="del-off")
imgs = {}
for name, u in list(ups.items()) + [("free", free), ("never", never), ("del-on", don),
                                   ("del-off", doff)]:
    imgs[name] = u.add_image("lib/app", "1", layers=[name.encode() * 10])
# private content on del-on: anonymous requests get 404 there, alice's get the content
ALICE = rgmtest.basic_header("alice", "pw")
don.behave(lambda m, p, h: "/lib/priv/" in p and h.get("authorization") != ALICE, status=404)
priv = don.add_image("lib/priv", "1", layers=[b"private-layer"])

regs = {"%s.test" % f: {"endpoint": u.url, "tag_ttl": "1s"} for f, u in ups.items()}
regs["free.test"] = {"endpoint": free.url, "tag_ttl": "1s", "max_stale": "365d"}
regs["never.test"] = {"endpoint": never.url, "tag_ttl": "1s", "max_stale": "0"}
regs["del-on.test"] = {"endpoint": don.url, "tag_ttl": "1s", "stale_on_not_found": True}
regs["del-off.test"] = {"endpoint": doff.url, "tag_ttl": "1s"}
regs["docker.io"] = {"endpoint": free.url}
# max_stale at the top level is the fault registries' (they set none)
m = rgmtest.Mirror(ws, config={"upstream_timeout": "1s", "max_stale": "2s",
                               "negative_ttl": "0", "registries": regs})


def get(reg, ref="1", repo="lib/app", headers=None):
    h = {"Accept": rgmtest.MANIFEST_ACCEPT}
    h.update(headers or {})
    return m.get("/v2/%s/manifests/%s?ns=%s" % (repo, ref, reg), headers=h)


def code(body):
    try:
        return json.loads(body)["errors"][0]
    except (ValueError, KeyError, IndexError):
        return {}


# fill every cache
for reg in list(regs):
    if reg == "docker.io":
        continue
    st, h, _ = get(reg)
    t.ok(st == 200 and h.get("x-cache") == "MISS", "%s: first GET cached" % reg, diag=(st, dict(h)))
st, h, _ = get("del-on.test", repo="lib/priv", headers={"Authorization": ALICE})
t.ok(st == 200, "del-on.test: alice's private tag cached", diag=(st, dict(h)))
filled = time.monotonic()

# the faults
ups["5xx"].behave("/manifests/", status=503)
ups["429"].behave("/manifests/", status=429, retry_after=1)
ups["timeout"].behave("/manifests/", stall=4)
ups["refused"].kill()
free.behave("/manifests/", status=500)
never.behave("/manifests/", status=502)
with don.lock:
    del don.manifests[("lib/app", "1")]
    del don.manifests[("lib/priv", "1")]
with doff.lock:
    del doff.manifests[("lib/app", "1")]

time.sleep(max(0.0, 1.3 - (time.monotonic() - filled)))
# within max_stale (1.3 s + up to 1 s of upstream timeout past a 1 s TTL, bound 2 s)
for f in FAULTS:
    st, h, b = get("%s.test" % f)
    t.ok(st == 200 and h.get("x-cache") == "STALE"
         and h.get("docker-content-digest") == imgs[f]["manifest"],
         "%s: within max_stale the cached tag is served STALE" % f, diag=(st, dict(h), b[:200]))
st, h, b = get("never.test")
t.ok(st == 503 and code(b).get("code") == "UNAVAILABLE" and "max_stale" in code(b).get("message", ""),
     "max_stale \"0\": never stale (503, says why)", diag=(st, b[:300]))

# deleted upstream
st, h, b = get("del-on.test")
t.ok(st == 200 and h.get("x-cache") == "STALE" and b == imgs["del-on"]["manifest_bytes"],
     "stale_on_not_found on: a public tag deleted upstream is served STALE", diag=(st, dict(h)))
st, h, b = get("del-off.test")
t.ok(st == 404 and code(b).get("code") == "MANIFEST_UNKNOWN",
     "stale_on_not_found off: the upstream's 404", diag=(st, dict(h), b[:200]))
st, h, b = get("del-on.test", repo="lib/priv")
t.ok(st == 404 and priv["manifest_bytes"] not in b,
     "stale_on_not_found on: a private tag is not opened by a 404 (anonymous)", diag=(st, b[:200]))
st, h, b = get("del-on.test", repo="lib/priv", headers={"Authorization": ALICE})
t.ok(st == 404 and priv["manifest_bytes"] not in b,
     "stale_on_not_found on: a private tag deleted upstream is 404 for its owner too",
     diag=(st, b[:200]))

# beyond max_stale: 1 s TTL + 2 s bound
time.sleep(max(0.0, 3.4 - (time.monotonic() - filled)))
for f in FAULTS:
    st, h, b = get("%s.test" % f)
    t.ok(st == 503 and code(b).get("code") == "UNAVAILABLE"
         and "max_stale" in code(b).get("message", ""),
         "%s: beyond max_stale: 503, the cached copy is too old" % f, diag=(st, dict(h), b[:300]))
    st, h, b = get("%s.test" % f, ref=imgs[f]["manifest"])
    t.ok(st == 200 and h.get("x-cache") == "HIT" and b == imgs[f]["manifest_bytes"],
         "%s: content by digest is always served" % f, diag=(st, dict(h)))
st, h, b = get("free.test")
t.ok(st == 200 and h.get("x-cache") == "STALE", "max_stale 365d: still STALE", diag=(st, dict(h)))
st, h, b = get("del-on.test")
t.ok(st == 200 and h.get("x-cache") == "STALE",
     "stale_on_not_found is not bounded by max_stale (the upstream answered)", diag=(st, dict(h)))
mt = m.metrics()
t.ok(mt.get("regmirror_stale_refused_total", 0) >= 5, "regmirror_stale_refused_total counts the 503s",
     diag=mt.get("regmirror_stale_refused_total"))
t.ok(m.alive(), "mirror alive")
t.done()
