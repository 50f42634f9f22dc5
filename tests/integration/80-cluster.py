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
import re
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


def settle(reg, timeout=5.0):
    """Wait (bounded) until the registry's access log stops growing: it writes a line after
    the response, so a count taken as soon as the client has its bytes can be short."""
    deadline = time.monotonic() + timeout
    n = len(reg.access_log_lines())
    while time.monotonic() < deadline:
        time.sleep(0.2)
        m = len(reg.access_log_lines())
        if m == n:
            return
        n = m


def upstream_gets(reg, substring, settled=False):
    if not settled:
        settle(reg)
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
upb = rgmtest.Registry(ws, name="private", auth=("htpasswd", {"alice": "s3cret"}))
PRIV = rgmtest.make_image(ws, "team/secret:1", layers=[5_000, 80_000])
rgmtest.push(PRIV, upb, creds=("alice", "s3cret"))

CFG = {"registries": {"docker.io": {"endpoint": up.url, "tag_ttl": "1h"},
                      "private.test": {"endpoint": upb.url, "tag_ttl": "1h"}}}
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
settle(up)
for im in IMAGES:
    for d in blobs_of(im):
        per_blob[d] = upstream_gets(up, "/blobs/" + d, True)
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
t.diag("a node-tier mirror with the replicas as its endpoint list")

NODE_IMGS = [rgmtest.make_image(ws, "library/node%d:v1" % i, layers=[4_000 + i, 50_000 + i])
             for i in range(4)]
for im in NODE_IMGS:
    rgmtest.push(im, up)
fw_before = [metric(m, 'regmirror_cluster_requests_total{path="forwarded"}') for m in reps]
node = rgmtest.Mirror(ws, name="node", config={"registries": {"docker.io": {
    "endpoint": URLS, "mirror": True, "tag_ttl": "1h"}}})
problems = []
for k, im in enumerate(NODE_IMGS):
    problems += pull([node.url], im, k)
t.is_(problems, [], "pulls through the node tier: right bytes")
fw_after = [metric(m, 'regmirror_cluster_requests_total{path="forwarded"}') for m in reps]
t.is_(fw_after, fw_before, "the node tier reached each owner directly: no forwarded requests")
settle(up)
t.is_(sorted(set(upstream_gets(up, "/blobs/" + d, True) for im in NODE_IMGS for d in blobs_of(im))),
      [1], "one upstream GET per blob through the node tier")
misplaced = [d[:19] for im in NODE_IMGS for d in blobs_of(im)
             if not os.path.exists(os.path.join(reps[URLS.index(order(d, URLS)[0])].storage,
                                                "blobs", "sha256", d[7:9], d[7:]))]
t.is_(misplaced, [], "each blob landed on its owner")
node.stop()

# ---------------------------------------------------------------------------------------
t.diag("loop guard and only-if-cached")

im = IMAGES[0]
d = LOOP_BLOB = im["layers"][1]["digest"]
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
settle(up)
t.is_(upstream_gets(up, "/blobs/" + d2, True), before, "and no upstream fetch for it")
st, h, body = get(owner2, "/v2/%s/blobs/%s" % (im["name"], d2),
                  headers={"X-Regmirror-Hop": "1", "X-Regmirror-Only-If-Cached": "1"})
t.ok(st == 200 and sha256_digest(body) == d2, "only-if-cached on its owner: served")

# ---------------------------------------------------------------------------------------
t.diag("a private image through non-owners")

import base64
ALICE = "Basic " + base64.b64encode(b"alice:s3cret").decode()
pname = PRIV["name"]
tag_key = "private.test/%s:%s" % (pname, PRIV["tag"])
non = [u for u in URLS if u != order(tag_key, URLS)[0]][0]
st, h, body = get(non, "/v2/%s/manifests/1?ns=private.test" % pname,
                  headers={"Accept": MANIFEST_ACCEPT})
t.is_(st, 401, "anonymous, through a non-owner of the tag: the owner's 401")
t.ok("basic" in (h.get("www-authenticate") or "").lower(),
     "the upstream's challenge relayed unchanged (%s)" % h.get("www-authenticate"))
st, h, body = get(non, "/v2/%s/manifests/1?ns=private.test" % pname,
                  headers={"Accept": MANIFEST_ACCEPT, "Authorization": ALICE})
t.ok(st == 200 and sha256_digest(body) == PRIV["manifest"],
     "alice, through the same non-owner: served (%d)" % st)
pd = PRIV["layers"][1]["digest"]
pnon = [u for u in URLS if u != order(pd, URLS)[0]]
st, h, body = get(pnon[0], "/v2/%s/blobs/%s?ns=private.test" % (pname, pd),
                  headers={"Authorization": ALICE})
t.ok(st == 200 and sha256_digest(body) == pd, "alice gets a private layer via a non-owner")
st, h, body = get(pnon[1], "/v2/%s/blobs/%s?ns=private.test" % (pname, pd))
t.is_(st, 401, "anonymous gets nothing of the cached private layer through another non-owner")
st, h, body = get(pnon[1], "/v2/%s/blobs/%s?ns=private.test" % (pname, pd),
                  headers={"Authorization": "Basic " + base64.b64encode(b"alice:wrong").decode()})
t.ok(st in (401, 403), "wrong credentials get nothing either (%d)" % st)
st, h, body = get(pnon[1], "/v2/%s/blobs/%s?ns=private.test" % (pname, pd),
                  headers={"Authorization": ALICE})
t.ok(st == 200 and sha256_digest(body) == pd, "alice again through it: served from the owner")
t.is_(upb.count_requests("GET", "/blobs/" + pd, status=200), 1,
      "the private layer was fetched upstream once")

# ---------------------------------------------------------------------------------------
t.diag("kill -9 one replica during pulls")

BIG = [rgmtest.make_image(ws, "library/big%d:v1" % i, layers=[1_500_000 + i, 2_500_000 + i])
       for i in range(4)]
for im in BIG:
    rgmtest.push(im, up)
victim = 2
v_url = URLS[victim]
alive = [u for u in URLS if u != v_url]
results = {}


def puller(n, im):
    """Pull im through replica n % 3, and on a connection error go on through the next one,
    as a client with a list of mirrors does. Records the tries and errors."""
    errors = 0
    first = URLS[n % 3]
    for attempt in range(6):
        base = URLS[(n + attempt) % 3]
        try:
            bad = pull([base], im, 0)
        except (OSError, ConnectionError, Exception) as e:  # noqa: B014 (any cut)
            errors += 1
            continue
        if not bad:
            results[n] = (first, errors, True)
            return
        errors += 1
    results[n] = (first, errors, False)


threads = [threading.Thread(target=puller, args=(n, BIG[n % 4]), daemon=True)
           for n in range(12)]
for th in threads:
    th.start()
time.sleep(0.15)
reps[victim].stop(sig=signal.SIGKILL, timeout=5)
for th in threads:
    th.join(timeout=120)
t.is_(len(results), 12, "every puller finished")
t.ok(all(ok for (_, _, ok) in results.values()), "every pull completed with the right bytes")
healthy_errors = sum(e for (first, e, _) in results.values() if first != v_url)
t.is_(healthy_errors, 0, "clients of healthy replicas saw no failure")

settle(up)
before = {d: upstream_gets(up, "/blobs/" + d, True) for im in BIG for d in blobs_of(im)}
problems = []
for k, im in enumerate(BIG + IMAGES):
    problems += pull(alive, im, k)
t.is_(problems, [], "later pulls of every image through the two survivors: right bytes")
settle(up)
extra = {d: upstream_gets(up, "/blobs/" + d, True) - before.get(d, 1)
         for im in BIG for d in blobs_of(im)}
v_extra = [extra[d] for d in extra if order(d, URLS)[0] == v_url]
o_extra = [extra[d] for d in extra if order(d, URLS)[0] != v_url]
t.ok(max(v_extra + [0]) <= 1 and max(o_extra + [0]) == 0,
     "big images after the kill: at most one more upstream GET for the dead replica's blobs "
     "(%s), none for the others' (%s)" % (sorted(set(v_extra)), sorted(set(o_extra))))
settle(up)
t.is_(sorted(set(upstream_gets(up, "/blobs/" + d, True) for im in BIG for d in blobs_of(im)
                 if order(d, URLS)[0] != v_url)), [1],
      "big images: the survivors' blobs were fetched upstream once")
# (the loop-guard blob was fetched twice on purpose above: leave it out)
owned_by_victim = [d for im in IMAGES for d in blobs_of(im)
                   if order(d, URLS)[0] == v_url and d != LOOP_BLOB]
settle(up)
gets = [upstream_gets(up, "/blobs/" + d, True) for d in owned_by_victim]
t.ok(owned_by_victim and max(gets) <= 2,
     "the dead replica's %d blobs: at most one more upstream GET each (%s)"
     % (len(owned_by_victim), sorted(set(gets))))
others = [d for im in IMAGES for d in blobs_of(im)
          if order(d, URLS)[0] != v_url and d != LOOP_BLOB]
settle(up)
t.is_(sorted(set(upstream_gets(up, "/blobs/" + d, True) for d in others)), [1],
      "the survivors' own blobs: still one upstream GET each")
m0 = reps[0].metrics()
t.is_(m0.get('regmirror_cluster_peers{state="up"}'), 2.0, "metrics: the dead peer is down")
t.ok(m0.get('regmirror_cluster_peer_transitions_total{to="down"}', 0) >= 1,
     "metrics: one transition to down")
t.is_([m.stop() for m in reps[:2]], [0, 0],
      "the survivors stop cleanly on SIGTERM (peer sets, forwards and probes closed)")

# ---------------------------------------------------------------------------------------
t.diag("scale from 2 to 3 replicas: filled from the previous owners")

sports = [rgmtest.free_port() for _ in range(3)]
SURLS = ["http://127.0.0.1:%d" % p for p in sports]
IMG2 = [rgmtest.make_image(ws, "library/scale%d:v1" % i, layers=[3_000 + i, 40_000 + i])
        for i in range(8)]
for im in IMG2:
    rgmtest.push(im, up)
two = [replica("s%d" % i, sports[i], SURLS[:2]) for i in range(2)]
problems = []
for k, im in enumerate(IMG2):
    problems += pull(SURLS[:2], im, k)
t.is_(problems, [], "two replicas: 8 images pulled")
settle(up)
before = {d: upstream_gets(up, "/blobs/" + d, True) for im in IMG2 for d in blobs_of(im)}
t.is_(sorted(set(before.values())), [1], "two replicas: one upstream GET per blob")
moved = [d for d in before if order(d, SURLS)[0] == SURLS[2]]
t.ok(len(moved) > 0, "the third replica will own %d of the %d blobs" % (len(moved), len(before)))
storages = [m.storage for m in two]
for m in two:
    m.stop()
three = [replica("s%d" % i, sports[i], SURLS, storage=storages[i] if i < 2 else None)
         for i in range(3)]
problems = []
for k, im in enumerate(IMG2):
    problems += pull(SURLS, im, k + 1)
t.is_(problems, [], "three replicas: the same 8 images, right bytes")
settle(up)
after = {d: upstream_gets(up, "/blobs/" + d, True) for d in before}
t.is_([d[:19] for d in after if after[d] != before[d]], [], "scaling out cost 0 upstream blob GETs")
filled = metric(three[2], 'regmirror_cluster_fills_total{result="filled"}')
t.ok(filled >= len(moved), "the new replica filled its %d blobs from their previous owners "
     "(%d fills)" % (len(moved), filled))
for d in moved:
    p = os.path.join(three[2].storage, "blobs", "sha256", d[7:9], d[7:])
    if not os.path.exists(p):
        t.ok(False, "filled blob %s stored on the new owner" % d[:19])
        break
else:
    t.ok(True, "every filled blob is stored (verified) on the new owner")
t.is_([m.stop() for m in three], [0, 0, 0], "the three stop cleanly")

# ---------------------------------------------------------------------------------------
t.diag("peers_dns: one name, three loopback addresses, in a mount namespace of our own")

hosts_file = ws.write("hosts", "127.0.0.1 localhost\n127.0.0.1 rgm-peers\n"
                      "127.0.0.2 rgm-peers\n127.0.0.3 rgm-peers\n")
dport = rgmtest.free_port()
DURLS = ["http://127.0.0.%d:%d" % (i, dport) for i in (1, 2, 3)]
cfg_file = ws.write("dns-config.json", json.dumps(CFG))
dreps = []
for i in range(3):
    d = ws.mkdir("dns%d" % i)
    cmd = ["unshare", "--mount", "sh", "-c",
           'mount --bind "$0" /etc/hosts && exec "$@"', hosts_file,
           rgmtest.RGM_BIN, "serve", "--listen", "127.0.0.%d:%d" % (i + 1, dport),
           "--storage", os.path.join(d, "storage"), "--config", cfg_file,
           "--peers-dns", "http://rgm-peers:%d" % dport]
    dreps.append((ws.spawn(cmd, os.path.join(d, "mirror.log")), d))


def dns_ready():
    for u in DURLS:
        st, _, b = http("GET", u + "/metrics", timeout=2)
        if st != 200 or b'regmirror_cluster_peers{state="up"} 3' not in b:
            return False
    return True


try:
    rgmtest.wait_for(dns_ready, timeout=20, what="three replicas that see each other")
    t.ok(True, "each replica resolved rgm-peers to three members")
except TimeoutError:
    t.ok(False, "each replica resolved rgm-peers to three members")
    for p, d in dreps:
        t.diag(p.log_text()[-1500:])
selves = []
for u in DURLS:
    st, _, b = http("GET", u + "/metrics", timeout=5)
    selves.append([ln for ln in b.decode().splitlines()
                   if ln.startswith("regmirror_cluster_peer_up{") and 'self="1"' in ln])
t.ok(all(len(s) == 1 and DURLS[i] in s[0] for i, s in enumerate(selves)),
     "each found itself by its bound address (%s)" % selves)
settle(up)
base_gets = {d: upstream_gets(up, "/blobs/" + d, True) for d in blobs_of(IMAGES[5])}
st, _, _ = http("GET", DURLS[0] + "/metrics", timeout=5)
problems = pull(DURLS, IMAGES[5], 0) + pull(DURLS, IMAGES[5], 1)
t.is_(problems, [], "a pull round robin over the DNS cluster: right bytes")
settle(up)
t.is_(sorted(set(upstream_gets(up, "/blobs/" + d, True) - base_gets[d] for d in base_gets)), [1],
      "one upstream GET per blob for the DNS cluster")

# a node tier with endpoint_dns, in the same kind of namespace
nport = rgmtest.free_port()
nd = ws.mkdir("dns-node")
ncfg = ws.write("dns-node.json", json.dumps({"registries": {"docker.io": {
    "endpoint_dns": "http://rgm-peers:%d" % dport, "mirror": True, "tag_ttl": "1h"}}}))
nproc = ws.spawn(["unshare", "--mount", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"',
                  hosts_file, rgmtest.RGM_BIN, "serve", "--listen", "127.0.0.1:%d" % nport,
                  "--storage", os.path.join(nd, "storage"), "--config", ncfg],
                 os.path.join(nd, "mirror.log"))
NURL = "http://127.0.0.1:%d" % nport
rgmtest.wait_for(lambda: http("GET", NURL + "/v2/", timeout=2)[0] == 200, timeout=20,
                 what="the DNS node tier")
fw0 = [float(re.search(rb'regmirror_cluster_requests_total\{path="forwarded"\} (\d+)',
                       http("GET", u + "/metrics", timeout=5)[2]).group(1)) for u in DURLS]
problems = []
for k, im in enumerate(IMAGES[6:9]):
    # the first moments: the node may not have resolved its replicas yet; wait for it
    problems += pull([NURL], im, k)
t.is_(problems, [], "pulls through a node tier with endpoint_dns: right bytes")
fw1 = [float(re.search(rb'regmirror_cluster_requests_total\{path="forwarded"\} (\d+)',
                       http("GET", u + "/metrics", timeout=5)[2]).group(1)) for u in DURLS]
t.is_(fw1, fw0, "endpoint_dns: the node tier reached each owner directly (no forwards)")
t.is_(nproc.stop(), 0, "the DNS node tier stops cleanly (its replica set closed)")
t.is_([p.stop() for p, d in dreps], [0, 0, 0], "the DNS replicas stop cleanly")

t.done()
