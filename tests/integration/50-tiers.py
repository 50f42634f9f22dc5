#!/usr/bin/env python3
"""Tiering: node-local regmirror → cluster-local regmirror → docker-registry.

- containerd pulls through the node tier (hosts.toml from `regmirror hosts`); the upstream
  and each tier see each blob once; a second node (fresh mirror storage, second containerd)
  is served by the cluster tier with no new upstream blob request.
- a second registry (ghcr.io) on the same chain, by ?ns= (containerd) and by path prefix.
- 401 challenges (htpasswd Basic and token Bearer) from the far upstream reach the client
  unchanged through both tiers; credentials pass through both tiers.
- skopeo with a registries.conf mirror location pulls through the path prefix.
- /metrics is valid Prometheus text (strict parser below) and its counters match what the
  test did; /healthz, /readyz (503 when storage/tmp is unusable).
"""

import json
import math
import os
import re
import threading
import time

import rgmtest
from rgmtest import MANIFEST_ACCEPT, http, sha256_digest

t = rgmtest.TAP(timeout=240)
ws = rgmtest.Workspace()
T0 = time.monotonic()


# ---------------------------------------------------------------------------------------
# helpers


mirror_access = rgmtest.mirror_access


def mirror_count(m, method, substring, cache=None):
    return sum(1 for a in mirror_access(m)
               if a[0] == method and substring in a[1] and (cache is None or a[3] == cache))


def wait_mirror_count(m, method, substring, want, timeout=3.0):
    deadline = time.monotonic() + timeout
    while True:
        n = mirror_count(m, method, substring)
        if n >= want or time.monotonic() > deadline:
            return n
        time.sleep(0.05)


def blob_digests(img):
    return [img["config"]] + [L["digest"] for L in img["layers"]]


def blob_bytes(img, d):
    with open(img["blobs"][d], "rb") as f:
        return f.read()


# --- Prometheus text exposition format (version 0.0.4), strict.

class PromError(Exception):
    pass


_METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
_TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


def _prom_value(s, what):
    if s in ("NaN", "+Inf", "-Inf", "Inf"):
        return float(s.replace("Inf", "inf")) if s != "NaN" else math.nan
    if not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", s):
        raise PromError("bad %s %r" % (what, s))
    return float(s)


def _prom_labels(s, lineno):
    """s: the text between { and }. Returns a tuple of (name, value) pairs."""
    labels = []
    i = 0
    seen = set()
    while i < len(s):
        m = re.match(_LABEL_NAME, s[i:])
        if not m:
            raise PromError("line %d: bad label name at %r" % (lineno, s[i:]))
        name = m.group(0)
        i += len(name)
        if s[i:i + 2] != '="':
            raise PromError("line %d: expected =\" after label %s" % (lineno, name))
        i += 2
        val = []
        while True:
            if i >= len(s):
                raise PromError("line %d: unterminated label value" % lineno)
            c = s[i]
            if c == "\\":
                nxt = s[i + 1:i + 2]
                if nxt not in ("\\", '"', "n"):
                    raise PromError("line %d: bad escape \\%s" % (lineno, nxt))
                val.append("\n" if nxt == "n" else nxt)
                i += 2
            elif c == '"':
                i += 1
                break
            elif c == "\n":
                raise PromError("line %d: newline in label value" % lineno)
            else:
                val.append(c)
                i += 1
        if name in seen:
            raise PromError("line %d: duplicate label %s" % (lineno, name))
        seen.add(name)
        labels.append((name, "".join(val)))
        if i < len(s):
            if s[i] != ",":
                raise PromError("line %d: expected , between labels" % lineno)
            i += 1
    return tuple(labels)


def prom_parse(text):
    """Parse Prometheus text format. Returns (samples, types) where samples maps
    (name, labels-tuple-sorted) → float. Raises PromError on any malformed line,
    duplicate series, TYPE after samples, interleaved families, negative counters."""
    if text and not text.endswith("\n"):
        raise PromError("does not end with a newline")
    samples = {}
    types = {}
    helps = set()
    family_done = set()
    current = None

    def family_of(name):
        for suf in ("_bucket", "_count", "_sum"):
            if name.endswith(suf) and types.get(name[:-len(suf)]) in ("histogram", "summary"):
                return name[:-len(suf)]
        return name

    for lineno, line in enumerate(text.split("\n")[:-1] if text else [], 1):
        if line.strip() == "":
            continue
        if line.startswith("#"):
            m = re.fullmatch(r"#\s+(HELP|TYPE)\s+(\S+)(?:\s(.*))?", line)
            if not m:
                continue                      # other comments are allowed
            kind, name, rest = m.group(1), m.group(2), m.group(3) or ""
            if not re.fullmatch(_METRIC_NAME, name):
                raise PromError("line %d: bad metric name %r" % (lineno, name))
            if kind == "TYPE":
                if rest.strip() not in _TYPES:
                    raise PromError("line %d: bad type %r" % (lineno, rest))
                if name in types:
                    raise PromError("line %d: second TYPE for %s" % (lineno, name))
                if name in family_done or name == current:
                    raise PromError("line %d: TYPE for %s after its samples" % (lineno, name))
                types[name] = rest.strip()
            else:
                if name in helps:
                    raise PromError("line %d: second HELP for %s" % (lineno, name))
                if re.search(r"\\(?![\\n])", rest):
                    raise PromError("line %d: bad escape in HELP" % lineno)
                helps.add(name)
            continue
        m = re.fullmatch(r"(%s)(?:\{(.*)\})?[ \t]+(\S+)(?:[ \t]+(-?\d+))?" % _METRIC_NAME, line)
        if not m:
            raise PromError("line %d: malformed sample %r" % (lineno, line))
        name, lab, val = m.group(1), m.group(2), m.group(3)
        labels = _prom_labels(lab, lineno) if lab is not None else ()
        v = _prom_value(val, "value")
        fam = family_of(name)
        if fam != current:
            if fam in family_done:
                raise PromError("line %d: samples of %s are not contiguous" % (lineno, fam))
            if current is not None:
                family_done.add(current)
            current = fam
        key = (name, tuple(sorted(labels)))
        if key in samples:
            raise PromError("line %d: duplicate series %r" % (lineno, key))
        if types.get(fam) == "counter" and not (v >= 0):
            raise PromError("line %d: counter %s is %r" % (lineno, name, v))
        samples[key] = v
    return samples, types


def metrics(m):
    st, h, b = m.get("/metrics")
    if st != 200:
        raise PromError("/metrics answered %d" % st)
    return prom_parse(b.decode("utf-8"))


def mv(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


# ---------------------------------------------------------------------------------------
# parser self-check: it must reject malformed input (otherwise "parses" means nothing)

good = ('# HELP a_total Things.\n# TYPE a_total counter\na_total{x="1",y="q\\"\\\\\\n"} 3\n'
        'a_total{x="2"} 4 1700000000000\n# TYPE g gauge\ng -1.5e3\ng{z="+Inf"} +Inf\n')
try:
    s, ty = prom_parse(good)
    t.ok(mv(s, "a_total", x="1", y='q"\\\n') == 3 and mv(s, "g") == -1500 and
         ty == {"a_total": "counter", "g": "gauge"}, "prom parser: accepts valid text")
except PromError as e:
    t.ok(False, "prom parser: accepts valid text", diag=str(e))
bad = {
    "unterminated label": 'a{x="1} 2\n',
    "bad escape": 'a{x="\\t"} 2\n',
    "no value": "a{x=\"1\"}\n",
    "bad value": "a 1.2.3\n",
    "bad name": "1a 2\n",
    "duplicate series": "a 1\na 2\n",
    "interleaved family": "a 1\nb 1\na{x=\"1\"} 2\n",
    "negative counter": "# TYPE c counter\nc -1\n",
    "bad type": "# TYPE c countr\nc 1\n",
    "no final newline": "a 1",
    "missing comma": 'a{x="1" y="2"} 1\n',
    "TYPE after samples": "c 1\n# TYPE c counter\n",
}
rejected = []
for what, txt in bad.items():
    try:
        prom_parse(txt)
    except PromError:
        rejected.append(what)
t.is_(sorted(rejected), sorted(bad), "prom parser: rejects every malformed sample")


# ---------------------------------------------------------------------------------------
# the chain

up = rgmtest.Registry(ws, name="docker-hub")              # docker.io
up2 = rgmtest.Registry(ws, name="ghcr")                   # ghcr.io
upb = rgmtest.Registry(ws, name="basic", auth=("htpasswd", {"alice": "s3cret"}))
tok = rgmtest.TokenServer(ws, users={"bob": "hunter2"})
upt = rgmtest.Registry(ws, name="tokenreg", auth=("token", tok))

img = rgmtest.make_image(ws, "library/app:v1", layers=[40_000, 600_000])
rgmtest.push(img, up)
img_gh = rgmtest.make_image(ws, "org/tool:1", layers=[30_000])
rgmtest.push(img_gh, up2)
img_sk = rgmtest.make_image(ws, "app:v1", layers=[20_000, 90_000])
rgmtest.push(img_sk, up)                                  # example.test/app:v1 → up "app"
img_b = rgmtest.make_image(ws, "private/app:1", layers=[10_000])
rgmtest.push(img_b, upb, creds=("alice", "s3cret"))
img_t = rgmtest.make_image(ws, "private/tok:1", layers=[10_000])
rgmtest.push(img_t, upt, creds=("bob", "hunter2"))

cluster = rgmtest.Mirror(ws, name="cluster", args=[
    "--registry", "docker.io=" + up.url,
    "--registry", "ghcr.io=" + up2.url,
    "--registry", "example.test=" + up.url,
    "--registry", "basic.test=" + upb.url,
    "--registry", "token.test=" + upt.url,
])


def node_config():
    regs = {}
    for name in ("docker.io", "ghcr.io", "example.test", "basic.test", "token.test"):
        regs[name] = {"endpoint": cluster.url, "mirror": True}
    return {"default_registry": "docker.io", "registries": regs}


node = rgmtest.Mirror(ws, name="node", config=node_config())
closed = ws.closed_port()
hosts1 = ws.unique("hosts-node1")
r = node.hosts(hosts1, ["docker.io", "ghcr.io", "basic.test", "token.test"],
               extra=["--server-override", "http://127.0.0.1:%d" % closed])
t.is_(r.rc, 0, "regmirror hosts for the node tier")

# --- 1. containerd pulls through node → cluster → upstream
cd1 = rgmtest.Containerd(ws, name="cd-node1")
rc, out = cd1.fetch("docker.io/library/app:v1", hosts1)
t.is_(rc, 0, "containerd pull through node → cluster → upstream") or t.diag(out[-2000:])
have = cd1.content_digests()
want = set([img["manifest"]] + blob_digests(img))
t.ok(want <= have, "containerd has the manifest, config and every layer",
     diag="missing %s" % sorted(want - have))

for d in blob_digests(img):
    short = d[7:19]
    n_up = up.wait_count("GET", "/library/app/blobs/" + d, 1)
    t.is_(n_up, 1, "upstream: one GET for blob %s" % short)
    n_cl = wait_mirror_count(cluster, "GET", "/blobs/" + d, 1)
    t.is_(n_cl, 1, "cluster tier: one GET from the node tier for blob %s" % short)
    n_nd = wait_mirror_count(node, "GET", "/blobs/" + d, 1)
    t.is_(n_nd, 1, "node tier: one GET from containerd for blob %s" % short)
t.ok(up.count_requests("GET", "/library/app/manifests/") >= 1,
     "upstream saw the manifest request")
cl_paths = [a[1] for a in mirror_access(cluster) if a[1].startswith("/v2/library/app/")]
t.ok(cl_paths and all(p.endswith("?ns=docker.io") for p in cl_paths),
     "cluster tier: every request from the node tier carries ?ns=docker.io", diag=cl_paths)

# --- 2. a second node (fresh storage) is served by the cluster tier
node2 = rgmtest.Mirror(ws, name="node2", config=node_config())
hosts2 = ws.unique("hosts-node2")
node2.hosts(hosts2, ["docker.io"], extra=["--server-override", "http://127.0.0.1:%d" % closed])
up_before = len(up.access_log_lines())
cd2 = rgmtest.Containerd(ws, name="cd-node2")
rc, out = cd2.fetch("docker.io/library/app:v1", hosts2)
t.is_(rc, 0, "second node: containerd pull through its own node mirror") or t.diag(out[-2000:])
t.ok(want <= cd2.content_digests(), "second node has every blob")
for d in blob_digests(img):
    short = d[7:19]
    n_cl = wait_mirror_count(cluster, "GET", "/blobs/" + d, 2)
    t.is_(n_cl, 2, "cluster tier: second GET for blob %s (from node 2)" % short)
    t.is_(mirror_count(cluster, "GET", "/blobs/" + d, cache="HIT"), 1,
          "cluster tier served node 2's GET of %s from cache" % short)
    t.is_(up.count_requests("GET", "/blobs/" + d), 1,
          "upstream: still one GET for blob %s" % short)
time.sleep(0.2)
new_up = up.access_log_lines()[up_before:]
t.is_([a.line for a in new_up if "/blobs/" in a.path], [],
      "upstream: no blob request at all for the second node")

# --- 3. a second registry (ghcr.io) on the chain: ?ns= through containerd, path prefix by HTTP
rc, out = cd1.fetch("ghcr.io/org/tool:1", hosts1)
t.is_(rc, 0, "containerd pull of ghcr.io/org/tool:1 through the chain") or t.diag(out[-2000:])
t.ok(set([img_gh["manifest"]] + blob_digests(img_gh)) <= cd1.content_digests(),
     "ghcr.io image content in containerd")
for d in blob_digests(img_gh):
    t.is_(up2.wait_count("GET", "/org/tool/blobs/" + d, 1), 1,
          "ghcr upstream: one GET for blob %s" % d[7:19])
t.is_(up.count_requests(None, "org/tool"), 0,
      "docker.io upstream never asked for org/tool (ns reached the cluster tier)")
st, h, b = node2.get("/v2/ghcr.io/org/tool/manifests/1", headers={"Accept": MANIFEST_ACCEPT})
t.ok(st == 200 and h.get("docker-content-digest") == img_gh["manifest"]
     and b == img_gh["manifest_bytes"], "node 2: path prefix /v2/ghcr.io/org/tool manifest",
     diag=(st, dict(h), b[:200]))
d = img_gh["layers"][0]["digest"]
st, h, b = node2.get("/v2/ghcr.io/org/tool/blobs/" + d)
t.ok(st == 200 and sha256_digest(b) == d, "node 2: path prefix blob", diag=(st, dict(h)))
t.is_(up2.count_requests("GET", "/blobs/" + d), 1,
      "ghcr upstream: path-prefix pull via node 2 served by the cluster cache")

# --- 4. 401 challenges from the far side reach the client unchanged
def check_auth(label, reg, ns, image, creds):
    mpath = "/v2/%s/manifests/%s?ns=%s" % (image["name"], image["tag"], ns)
    dpath = "/v2/%s/blobs/%s?ns=%s" % (image["name"], image["layers"][0]["digest"], ns)
    ust, uh, _ = http("GET", reg.url + "/v2/%s/manifests/%s" % (image["name"], image["tag"]),
                      headers={"Accept": MANIFEST_ACCEPT})
    t.is_(ust, 401, "%s: upstream itself answers 401 anonymously" % label)
    st, h, b = node.get(mpath, headers={"Accept": MANIFEST_ACCEPT})
    t.is_(st, 401, "%s: anonymous manifest through both tiers → 401" % label)
    # The far mirror may have tried an anonymous token first: the upstream then adds
    # error="insufficient_scope" to the same challenge. Everything else must be unchanged.
    got = rgmtest.parse_challenge(h.get("www-authenticate"))
    exp = rgmtest.parse_challenge(uh.get("www-authenticate"))
    got[1].pop("error", None)
    t.ok(got == exp and got[0] in ("basic", "bearer"),
         "%s: WWW-Authenticate is the upstream's challenge (scheme, realm, service, scope)"
         % label, diag="got %r\nupstream %r" % (h.get("www-authenticate"),
                                                uh.get("www-authenticate")))
    try:
        codes = [e.get("code") for e in json.loads(b)["errors"]]
    except Exception:
        codes = None
    t.is_(codes, ["UNAUTHORIZED"], "%s: OCI error body UNAUTHORIZED" % label)
    st, h, b = rgmtest.auth_request("GET", node.url + mpath, headers={"Accept": MANIFEST_ACCEPT},
                                    creds=creds)
    t.ok(st == 200 and h.get("docker-content-digest") == image["manifest"]
         and b == image["manifest_bytes"], "%s: with credentials → 200, same manifest" % label,
         diag=(st, dict(h), b[:300]))
    st, h, b = rgmtest.auth_request("GET", node.url + dpath, creds=creds)
    t.ok(st == 200 and sha256_digest(b) == image["layers"][0]["digest"],
         "%s: with credentials → blob 200, right bytes" % label, diag=(st, dict(h), b[:300]))
    st, h, b = node.get(dpath)
    t.is_(st, 401, "%s: anonymous blob after it is cached → still 401" % label)
    st, h, b = rgmtest.auth_request("GET", node.url + dpath, creds=(creds[0], "wrong"))
    t.ok(st in (401, 403), "%s: wrong password → refused (%s)" % (label, st))


check_auth("basic", upb, "basic.test", img_b, ("alice", "s3cret"))
check_auth("token", upt, "token.test", img_t, ("bob", "hunter2"))

# containerd answers the relayed Basic challenge itself with its --user credentials
rc, out = cd2.fetch("basic.test/private/app:1", hosts1, user=("alice", "s3cret"))
t.is_(rc, 0, "containerd with --user pulls a Basic-protected image through both tiers") \
    or t.diag(out[-2000:])
rc, out = cd2.fetch("basic.test/private/app:1", hosts1)
t.isnt(rc, 0, "containerd without credentials is refused")
# and the relayed Bearer challenge: containerd gets a token from the realm, sends it through
n_tok = tok.count(user="bob", ok=True)
rc, out = cd2.fetch("token.test/private/tok:1", hosts1, user=("bob", "hunter2"))
t.is_(rc, 0, "containerd with --user pulls a token-protected image through both tiers") \
    or t.diag(out[-2000:])
t.ok(tok.count(user="bob", ok=True) > n_tok, "containerd fetched its own token from the realm")
t.ok(set([img_t["manifest"]] + blob_digests(img_t)) <= cd2.content_digests(),
     "token-protected image content in containerd")

# --- 5. skopeo with a registries.conf mirror location (path prefix), through the node tier
sk_dir = ws.unique("skopeo")
regconf = os.path.join(sk_dir, "registries.conf")
sk_closed = ws.closed_port()
with open(regconf, "w") as f:
    # The primary location is a closed loopback port (not the unresolvable example.test)
    # so that a mirror failure can never send a DNS query or traffic elsewhere.
    f.write('unqualified-search-registries = []\n\n'
            '[[registry]]\nprefix = "example.test"\nlocation = "127.0.0.1:%d"\n\n'
            '[[registry.mirror]]\nlocation = "%s/example.test"\ninsecure = true\n'
            % (sk_closed, node.host))
authfile = os.path.join(sk_dir, "auth.json")
with open(authfile, "w") as f:
    f.write('{"auths": {}}\n')
env = dict(os.environ, REGISTRY_AUTH_FILE=authfile, HOME=sk_dir)
for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
    env.pop(k, None)
out_dir = os.path.join(sk_dir, "out")
r = rgmtest.run(["skopeo", "--registries-conf", regconf, "--insecure-policy", "copy",
                 "--quiet", "--src-no-creds", "docker://example.test/app:v1", "dir:" + out_dir],
                timeout=90, check=False, env=env)
t.is_(r.rc, 0, "skopeo copy docker://example.test/app:v1 through the mirror location") \
    or t.diag(r.out[-2000:])
okfiles = []
for d in blob_digests(img_sk):
    p = os.path.join(out_dir, d[7:])
    okfiles.append(os.path.exists(p) and sha256_digest(open(p, "rb").read()) == d)
t.ok(r.rc == 0 and all(okfiles), "skopeo got every blob with the right digest", diag=okfiles)
try:
    with open(os.path.join(out_dir, "manifest.json"), "rb") as f:
        mb = f.read()
except OSError:
    mb = b""
t.is_(sha256_digest(mb), img_sk["manifest"], "skopeo got the manifest (same digest)")
# The access line is written when the response's last write completes, which can be just
# after skopeo has its bytes: wait (bounded) for the lines before counting them.
try:
    rgmtest.wait_for(lambda: all(mirror_count(node, "GET", "/v2/example.test/app/blobs/" + d)
                                 for d in blob_digests(img_sk)), timeout=5.0,
                     what="the node's access lines for skopeo's blob GETs")
except TimeoutError:
    pass
acc = [a for a in mirror_access(node) if a[1].startswith("/v2/example.test/app/")]
t.ok(any("/manifests/v1" in a[1] and a[2] == 200 for a in acc),
     "node access log: /v2/example.test/app/manifests/v1 answered 200", diag=acc)
for d in blob_digests(img_sk):
    t.is_(sum(1 for a in acc if a[0] == "GET" and a[1] == "/v2/example.test/app/blobs/" + d
              and a[2] == 200), 1, "node access log: GET /v2/example.test/app/blobs/%s" % d[7:19])
    t.is_(up.count_requests("GET", "/v2/app/blobs/" + d), 1,
          "upstream: example.test blob %s fetched once as /v2/app/..." % d[7:19])
    t.is_(mirror_count(cluster, "GET", "/v2/app/blobs/%s?ns=example.test" % d), 1,
          "cluster tier: GET /v2/app/blobs/%s?ns=example.test from the node tier" % d[7:19])

# --- 6. /metrics, /healthz, /readyz
for name, m in (("node", node), ("node2", node2), ("cluster", cluster)):
    try:
        metrics(m)
        t.ok(True, "%s: /metrics parses as Prometheus text" % name)
    except PromError as e:
        t.ok(False, "%s: /metrics parses as Prometheus text" % name, diag=str(e))

# node 2 fetched: the docker.io image (containerd) and the ghcr.io manifest + one layer
# (path prefix). Nothing else went through it.
s0, types = metrics(node2)
want_blobs = set(blob_digests(img)) | {img_gh["layers"][0]["digest"]}
want_objects = want_blobs | {img["manifest"], img_gh["manifest"]}
t.is_(mv(s0, "regmirror_fetches_completed_total"), float(len(want_blobs)),
      "node2: fetches_completed_total = distinct blobs fetched")
t.is_(mv(s0, "regmirror_fetches_failed_total"), 0.0, "node2: no failed fetch")
t.is_(mv(s0, "regmirror_cache_objects"), float(len(want_objects)),
      "node2: cache_objects = blobs + manifests fetched")
t.is_(types.get("regmirror_cache_requests_total"), "counter", "cache_requests_total is a counter")
t.is_(types.get("regmirror_cache_objects"), "gauge", "cache_objects is a gauge")

N = 5
hits = 0
layer_d = img["layers"][1]["digest"]
layer_b = blob_bytes(img, layer_d)
for i in range(N):
    st, h, b = node2.get("/v2/library/app/blobs/%s?ns=docker.io" % layer_d)
    hits += (st == 200 and h.get("x-cache") == "HIT" and b == layer_b)
t.is_(hits, N, "node2: %d cached blob GETs answered 200 HIT with the right bytes" % N)
s1, _ = metrics(node2)
t.is_(mv(s1, "regmirror_cache_requests_total", cache="HIT")
      - mv(s0, "regmirror_cache_requests_total", cache="HIT"), float(N),
      "node2: cache_requests_total{cache=HIT} increased by %d" % N)
t.is_(mv(s1, "regmirror_cache_requests_total", cache="MISS")
      - mv(s0, "regmirror_cache_requests_total", cache="MISS"), 0.0,
      "node2: no MISS counted for cached GETs")
t.is_(mv(s1, "regmirror_served_bytes_total", cache="HIT")
      - mv(s0, "regmirror_served_bytes_total", cache="HIT"), float(N * len(layer_b)),
      "node2: served_bytes_total{cache=HIT} grew by the bytes served")
t.is_(mv(s1, "regmirror_requests_total", route="blob", status="2xx")
      - mv(s0, "regmirror_requests_total", route="blob", status="2xx"), float(N),
      "node2: requests_total{route=blob,status=2xx} increased by %d" % N)
t.is_(mv(s1, "regmirror_fetches_completed_total"), mv(s0, "regmirror_fetches_completed_total"),
      "node2: no new fetch for cached blobs")

# concurrent cold GETs of one blob (the ghcr config, not on node2 yet): one fetch, the others
# HIT or JOIN; joins_total matches the JOIN answers.
K = 6
cold = img_gh["config"]
results = [None] * K
barrier = threading.Barrier(K)


def worker(i):
    try:
        barrier.wait(timeout=10)
        st, h, b = node2.get("/v2/org/tool/blobs/%s?ns=ghcr.io" % cold)
        results[i] = (st, h.get("x-cache"), sha256_digest(b) == cold)
    except Exception as e:
        results[i] = ("exc", repr(e), False)


ths = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(K)]
for th in ths:
    th.start()
for th in ths:
    th.join(timeout=30)
t.ok(all(r and r[0] == 200 and r[2] for r in results), "node2: %d concurrent cold GETs ok" % K,
     diag=results)
kinds = [r[1] for r in results if r]
s2, _ = metrics(node2)
t.is_(mv(s2, "regmirror_fetches_completed_total") - mv(s1, "regmirror_fetches_completed_total"),
      1.0, "node2: concurrent cold GETs → one fetch completed")
t.is_(kinds.count("MISS"), 1, "node2: exactly one MISS among the concurrent GETs")
t.is_(mv(s2, "regmirror_joins_total") - mv(s1, "regmirror_joins_total"),
      float(kinds.count("JOIN")), "node2: joins_total grew by the number of JOIN answers (%d)"
      % kinds.count("JOIN"))
for c in ("HIT", "MISS", "JOIN"):
    t.is_(mv(s2, "regmirror_cache_requests_total", cache=c)
          - mv(s1, "regmirror_cache_requests_total", cache=c), float(kinds.count(c)),
          "node2: cache_requests_total{cache=%s} matches the X-Cache answers" % c)
t.is_(mv(s2, "regmirror_cache_objects"), float(len(want_objects) + 1),
      "node2: cache_objects grew by one")
t.is_(up2.count_requests("GET", "/blobs/" + cold), 1,
      "ghcr upstream: still one GET for the config blob")

for name, m in (("node2", node2), ("cluster", cluster)):
    st, _, _ = m.get("/healthz")
    t.is_(st, 200, "%s: /healthz 200" % name)
    st, _, _ = m.get("/readyz")
    t.is_(st, 200, "%s: /readyz 200" % name)

# readyz negative: root ignores permissions, so replace storage/tmp with a plain file
tmpd = os.path.join(node2.storage, "tmp")
if os.path.isdir(tmpd):
    os.rename(tmpd, tmpd + ".away")
    with open(tmpd, "w") as f:
        f.write("not a directory\n")
    try:
        st, _, b = node2.get("/readyz")
        t.is_(st, 503, "node2: /readyz 503 while storage/tmp is unusable")
        st, _, _ = node2.get("/healthz")
        t.is_(st, 200, "node2: /healthz still 200 (liveness)")
    finally:
        os.unlink(tmpd)
        os.rename(tmpd + ".away", tmpd)
    st, _, _ = node2.get("/readyz")
    t.is_(st, 200, "node2: /readyz 200 again once storage/tmp is back")
else:
    t.skip("node2: /readyz 503 while storage/tmp is unusable", "no storage/tmp directory")

for name, m in (("node", node), ("node2", node2), ("cluster", cluster)):
    t.ok(m.alive(), "%s mirror still running" % name)
t.diag("elapsed %.1fs" % (time.monotonic() - T0))
t.done()
