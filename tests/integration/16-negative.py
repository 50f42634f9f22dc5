#!/usr/bin/env python3
"""Negative caching (issue 12): an upstream 404 to the mirror's own identity is remembered
for negative_ttl and answers requests without credentials (404, X-Cache: NEGATIVE); 20
clients asking for a missing tag cost one upstream request, and after the TTL a new one goes
upstream. A request with a client's Authorization always gets its own try, and a 404 never
opens private content. Concurrent HEAD misses of one uncached tag share one upstream HEAD."""

import threading
import time

import fakeup
import rgmtest

t = rgmtest.TAP(timeout=120)
ws = rgmtest.Workspace()

up = fakeup.FakeUpstream(name="up")
off = fakeup.FakeUpstream(name="off")
img = up.add_image("lib/app", "1")
ALICE = rgmtest.basic_header("alice", "pw")
# a private repository that answers 404 to strangers, like many registries
up.behave(lambda m, p, h: "/lib/priv/" in p and h.get("authorization") != ALICE, status=404)
priv = up.add_image("lib/priv", "1", layers=[b"private layer bytes"])
m = rgmtest.Mirror(ws, config={"negative_ttl": "2s", "registries": {
    "docker.io": {"endpoint": up.url},
    "off.test": {"endpoint": off.url, "negative_ttl": "0"}}})
ACC = {"Accept": rgmtest.MANIFEST_ACCEPT}


def many(n, method, path, headers=None):
    out = [None] * n

    def one(i):
        try:
            out[i] = m.get(path, method=method, headers=headers or ACC)
        except OSError as e:
            out[i] = (None, {}, str(e).encode())
    ths = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(30)
    return out


# 20 clients at once for a missing tag
res = many(20, "GET", "/v2/lib/app/manifests/typo")
t.ok(all(r[0] == 404 for r in res), "20 clients for a missing tag: all 404",
     diag=[r[0] for r in res])
t.is_(up.count(None, "/lib/app/manifests/typo"), 1, "20 concurrent clients: one upstream request")
t0 = time.monotonic()
res = [m.get("/v2/lib/app/manifests/typo", headers=ACC) for _ in range(20)]
t.ok(all(r[0] == 404 and r[1].get("x-cache") == "NEGATIVE" for r in res),
     "20 more, one after another within negative_ttl: 404, X-Cache: NEGATIVE",
     diag=[(r[0], r[1].get("x-cache")) for r in res][:3])
t.ok(b"MANIFEST_UNKNOWN" in res[0][2], "the negative answer is an OCI error (MANIFEST_UNKNOWN)")
st, h, _ = m.get("/v2/lib/app/manifests/typo", method="HEAD", headers=ACC)
t.ok(st == 404 and h.get("x-cache") == "NEGATIVE", "a HEAD takes the same answer", diag=(st, dict(h)))
in_ttl = time.monotonic() - t0 < 1.8
t.ok(not in_ttl or up.count(None, "/lib/app/manifests/typo") == 1,
     "still one upstream request within negative_ttl")
# a client's credentials always get their own try
n0 = up.count(None, "/lib/app/manifests/typo")
st, h, _ = m.get("/v2/lib/app/manifests/typo", headers=dict(ACC, Authorization=ALICE))
t.ok(st == 404 and h.get("x-cache") != "NEGATIVE" and up.count(None, "/lib/app/manifests/typo") > n0,
     "with a client's Authorization: its own upstream try", diag=(st, dict(h)))
# after the TTL
time.sleep(max(0.0, 2.2 - (time.monotonic() - t0)))
n0 = up.count(None, "/lib/app/manifests/typo")
st, h, _ = m.get("/v2/lib/app/manifests/typo", headers=ACC)
t.ok(st == 404 and h.get("x-cache") != "NEGATIVE" and up.count(None, "/lib/app/manifests/typo") == n0 + 1,
     "after negative_ttl: a new upstream request", diag=(st, dict(h)))

# blobs
missing = "sha256:" + "cd" * 32
st, _, _ = m.get("/v2/lib/app/blobs/" + missing)
st2, h2, b2 = m.get("/v2/lib/app/blobs/" + missing)
t.ok(st == 404 and st2 == 404 and h2.get("x-cache") == "NEGATIVE" and b"BLOB_UNKNOWN" in b2,
     "missing blob: the second GET is NEGATIVE (BLOB_UNKNOWN)", diag=(st, st2, dict(h2)))
t.is_(up.count(None, "/blobs/" + missing), 1, "missing blob: one upstream request")

# a private repository's 404 to the mirror's own identity opens nothing
st, h, b = m.get("/v2/lib/priv/manifests/1", headers=ACC)
t.ok(st == 404, "private tag, anonymous: 404 (what the upstream says to strangers)", diag=(st,))
st, h, b = m.get("/v2/lib/priv/manifests/1", headers=dict(ACC, Authorization=ALICE))
t.ok(st == 200 and b == priv["manifest_bytes"],
     "private tag with alice's credentials: 200 despite the negative entry", diag=(st, dict(h)))
st, h, b = m.get("/v2/lib/priv/blobs/" + priv["layers"][0], headers={"Authorization": ALICE})
t.ok(st == 200 and b == b"private layer bytes", "alice's private blob", diag=(st,))
st, h, b = m.get("/v2/lib/priv/manifests/1", headers=ACC)
t.ok(st == 404 and priv["manifest_bytes"] not in b, "anonymous again: still 404, no content",
     diag=(st, dict(h)))
st, h, b = m.get("/v2/lib/priv/manifests/" + priv["manifest"], headers=ACC)
t.ok(st == 404 and priv["manifest_bytes"] not in b, "anonymous by digest: 404, no content",
     diag=(st, dict(h)))
st, h, b = m.get("/v2/lib/priv/blobs/" + priv["layers"][0])
t.ok(st == 404 and b"private layer" not in b, "anonymous private blob: 404, no content",
     diag=(st, dict(h)))

# negative_ttl "0": off
for _ in range(3):
    m.get("/v2/lib/x/manifests/nope?ns=off.test", headers=ACC)
t.is_(off.count(None, "/lib/x/manifests/nope"), 3, "negative_ttl \"0\": every request goes upstream")

# concurrent HEAD misses of one uncached tag share one upstream HEAD
up.add_image("lib/heads", "7", layers=[b"heads"])
up.behave("/lib/heads/manifests/7", stall=0.5, times=1)
res = many(12, "HEAD", "/v2/lib/heads/manifests/7")
t.ok(all(r[0] == 200 and r[1].get("docker-content-digest") for r in res),
     "12 concurrent HEADs of an uncached tag: all 200 with the digest", diag=[r[0] for r in res])
t.is_(up.count("HEAD", "/lib/heads/manifests/7"), 1, "... one upstream HEAD")
t.is_(up.count("GET", "/lib/heads/manifests/7"), 0, "... and no GET")
mt = m.metrics()
t.ok(mt.get('regmirror_cache_requests_total{cache="NEGATIVE"}', 0) >= 22,
     "regmirror_cache_requests_total{cache=\"NEGATIVE\"} counts them",
     diag=mt.get('regmirror_cache_requests_total{cache="NEGATIVE"}'))
t.ok(m.alive(), "mirror alive")
t.done()
