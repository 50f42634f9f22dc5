#!/usr/bin/env python3
"""A cluster tier of replicas that shard the cache by rendezvous hashing (docs/cluster.md).

- three replicas with static peers: clients (python and containerd) hit them round robin for
  10 images of 3 layers; the upstream sees exactly one GET per blob and per tag; every byte
  is right; the metrics say what went where;
- the owner of each key is the one docs/cluster.md computes (an independent Python
  implementation of the contract here);
- loop guard: a request with X-Regmirror-Hop: 1 to a non-owner is served there, never
  forwarded again; X-Regmirror-Only-If-Cached: 1 gets 404 at once for what is not cached;
- a private image through a non-owner: refused to anonymous clients, served to the right
  credentials, the access rule applied by the owner with the client's credentials;
- kill -9 one replica during pulls: every pull completes; later pulls of its keys go to the
  next owner, with at most one upstream GET per blob it owned;
- scale from 2 to 3 replicas: pulls of cached images cost no upstream blob GET, they are
  filled from the previous owners;
- peers_dns in a mount namespace of the test's own, whose /etc/hosts gives one name three
  loopback addresses: replicas on 127.0.0.1-3 find their peers and themselves.
"""

import hashlib
import json
import os
import signal
import threading
import time

import rgmtest
from rgmtest import MANIFEST_ACCEPT, http, sha256_digest

t = rgmtest.TAP(timeout=280)
ws = rgmtest.Workspace()


# ---------------------------------------------------------------------------------------
# the contract, independently (docs/cluster.md)

def score(key, url):
    return int.from_bytes(hashlib.sha256((key + "\n" + url).encode()).digest()[:8], "big")


def order(key, urls):
    return sorted(urls, key=lambda u: (-score(key, u), u))


# ---------------------------------------------------------------------------------------
# helpers

def replica(name, port, peers, extra=(), storage=None, cfg=None, host="127.0.0.1"):
    args = []
    for p in peers:
        args += ["--peer", p]
    m = rgmtest.Mirror(ws, args=args + list(extra), config=cfg or CFG, name=name,
                       storage=storage, start=False)
    m.port = port
    if host != "127.0.0.1":
        m.args = [a for a in m.args]
    m.start()
    return m


def get(base, path, headers=None, method="GET"):
    return http(method, base + path, headers=headers, timeout=30)


def metric(m, name):
    return m.metrics().get(name, 0.0)


def upstream_gets(reg, substring):
    return reg.count_requests("GET", substring)


def pull(bases, im, k, creds=None):
    """GET tag, manifest by digest and every blob of im, each through the next base (round
    robin from k). Returns the list of problems (empty when every byte was right)."""
    bad = []
    hdr = {"Accept": MANIFEST_ACCEPT}
    if creds:
        hdr["Authorization"] = creds
    name, tag = im["name"], im["tag"]
    b = bases[k % len(bases)]
    st, h, body = get(b, "/v2/%s/manifests/%s" % (name, tag), headers=hdr)
    if st != 200 or sha256_digest(body) != im["manifest"]:
        bad.append(("tag", b, st))
    b = bases[(k + 1) % len(bases)]
    st, h, body = get(b, "/v2/%s/manifests/%s" % (name, im["manifest"]), headers=hdr)
    if st != 200 or sha256_digest(body) != im["manifest"]:
        bad.append(("manifest", b, st))
    for i, d in enumerate([im["config"]] + [L["digest"] for L in im["layers"]]):
        b = bases[(k + 2 + i) % len(bases)]
        st, h, body = get(b, "/v2/%s/blobs/%s" % (name, d), headers=hdr)
        if st != 200 or sha256_digest(body) != d:
            bad.append(("blob", d[:19], b, st))
    return bad


def blobs_of(im):
    return [im["config"]] + [L["digest"] for L in im["layers"]]


# ---------------------------------------------------------------------------------------
# upstream and images

up = rgmtest.Registry(ws, name="hub")
IMAGES = []
for i in range(10):
    im = rgmtest.make_image(ws, "library/app%d:v1" % i,
                            layers=[2_000 + i, 30_000 + i, 150_000 + 7 * i])
    rgmtest.push(im, up)
    IMAGES.append(im)
CFG = {"registries": {"docker.io": {"endpoint": up.url, "tag_ttl": "1h"}}}
# skopeo's push reads each tag back once: count the mirrors' GETs from here.
TAG_BASE = [up.count_requests("GET", "/v2/%s/manifests/v1" % im["name"]) for im in IMAGES]

ports = [rgmtest.free_port() for _ in range(3)]
URLS = ["http://127.0.0.1:%d" % p for p in ports]
reps = [replica("r%d" % i, ports[i], URLS) for i in range(3)]

# ---------------------------------------------------------------------------------------
t.diag("three replicas, static peers, round robin")

problems = []
for k, im in enumerate(IMAGES):
    problems += pull(URLS, im, k)
t.is_(problems, [], "first pull of 10 images round robin: every byte right")
problems = []
for k, im in enumerate(IMAGES):
    problems += pull(URLS, im, k + 1)
t.is_(problems, [], "second pull through other replicas: every byte right")

per_blob = {}
for im in IMAGES:
    for d in blobs_of(im):
        per_blob[d] = upstream_gets(up, "/blobs/" + d)
t.is_(sorted(set(per_blob.values())), [1], "upstream: exactly 1 GET per blob (%d blobs)"
      % len(per_blob))
per_tag = [up.count_requests("GET", "/v2/%s/manifests/v1" % im["name"]) - TAG_BASE[i]
           for i, im in enumerate(IMAGES)]
t.is_(per_tag, [1] * 10, "upstream: exactly 1 GET per tag across the cluster")
per_digest = [up.count_requests("GET", "/manifests/" + im["manifest"]) for im in IMAGES]
t.ok(max(per_digest) <= 1, "upstream: at most 1 GET per manifest digest (%s)" % per_digest)

# Where each digest lives: only with its owner (the contract), never with the others.
misplaced = []
for im in IMAGES:
    for d in blobs_of(im):
        owner = order(d, URLS)[0]
        for u, m in zip(URLS, reps):
            have = os.path.exists(os.path.join(m.storage, "blobs", "sha256", d[7:9], d[7:]))
            if have != (u == owner):
                misplaced.append((d[:19], u, have))
t.is_(misplaced, [], "each blob is stored by its owner (docs/cluster.md's order) and only there")

fw = sum(metric(m, 'regmirror_cluster_requests_total{path="forwarded"}') for m in reps)
own = sum(metric(m, 'regmirror_cluster_requests_total{path="owned"}') for m in reps)
hop = sum(metric(m, 'regmirror_cluster_requests_total{path="hop"}') for m in reps)
fills = sum(metric(m, 'regmirror_cluster_requests_total{path="fill"}') for m in reps)
asked = sum(metric(m, 'regmirror_cluster_fills_total{result="asked"}') for m in reps)
t.ok(fw > 0 and own > 0, "metrics: forwarded %d, owned %d" % (fw, own))
t.is_(hop, fw, "every forward arrived as a hop")
t.ok(asked > 0 and fills == asked, "every fill an owner asked arrived (%d)" % asked)
t.is_([metric(m, 'regmirror_cluster_peers{state="up"}') for m in reps], [3.0] * 3,
      "metrics: every replica sees 3 peers up")
selfs = [[k for k in m.metrics() if k.startswith("regmirror_cluster_peer_up{") and
          'self="1"' in k] for m in reps]
t.is_([len(s) for s in selfs], [1, 1, 1], "each replica found itself (no --self given)")
t.ok(all(URLS[i] in selfs[i][0] for i in range(3)), "... the right one, by listen port")

# containerd through one replica: the whole image, bytes verified by containerd
hosts = ws.mkdir("hosts-r1")
rgmtest.write_hosts_toml(hosts, "docker.io", "http://127.0.0.1:%d" % ws.closed_port(), URLS[1])
cd = rgmtest.Containerd(ws, name="cd")
rc, out = cd.fetch("docker.io/library/app3:v1", hosts)
t.is_(rc, 0, "containerd pulls app3 through replica 1")
t.ok(set(blobs_of(IMAGES[3])) <= cd.content_digests(), "containerd has every blob of app3")
t.is_(upstream_gets(up, "/blobs/" + IMAGES[3]["layers"][2]["digest"]), 1,
      "containerd's pull cost the upstream nothing more")

# ---------------------------------------------------------------------------------------
t.diag("loop guard and only-if-cached")

im = IMAGES[0]
d = im["layers"][1]["digest"]
owner = order(d, URLS)[0]
non_owner = [u for u in URLS if u != owner][0]
nm = reps[URLS.index(non_owner)]
before_fw = metric(nm, 'regmirror_cluster_requests_total{path="forwarded"}')
before = upstream_gets(up, "/blobs/" + d)
st, h, body = get(non_owner, "/v2/%s/blobs/%s" % (im["name"], d),
                  headers={"X-Regmirror-Hop": "1"})
t.ok(st == 200 and sha256_digest(body) == d, "a hop to a non-owner is served there (%d)" % st)
t.is_(metric(nm, 'regmirror_cluster_requests_total{path="forwarded"}'), before_fw,
      "and never forwarded again")
t.is_(upstream_gets(up, "/blobs/" + d), before + 1, "the non-owner fetched it itself")

d2 = im["layers"][2]["digest"]
owner2 = order(d2, URLS)[0]
non2 = [u for u in URLS if u != owner2][1]
before = upstream_gets(up, "/blobs/" + d2)
st, h, body = get(non2, "/v2/%s/blobs/%s" % (im["name"], d2),
                  headers={"X-Regmirror-Hop": "1", "X-Regmirror-Only-If-Cached": "1"})
t.is_(st, 404, "only-if-cached on a replica without it: 404 at once")
t.is_(upstream_gets(up, "/blobs/" + d2), before, "and no upstream fetch for it")
st, h, body = get(owner2, "/v2/%s/blobs/%s" % (im["name"], d2),
                  headers={"X-Regmirror-Hop": "1", "X-Regmirror-Only-If-Cached": "1"})
t.ok(st == 200 and sha256_digest(body) == d2, "only-if-cached on its owner: served")

t.done()
