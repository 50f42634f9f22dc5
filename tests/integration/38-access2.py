#!/usr/bin/env python3
"""The cache never widens access, after the features that landed beside the access rule
(issue review): each part is a hole the security review found, written as a failing test
before its fix.

  1. A tag is a name in one repository. A private repository's tag whose manifest is cached as
     public content elsewhere (the same image pushed to public/* and private/*) is not
     resolved from the cache for a client the upstream refuses: no manifest, no HEAD with its
     digest, also not from the remembered HEAD answers. (Real docker-registry with the
     rgmtest token server.)
  2. A partial kept across a restart was fetched through one registry: a request through
     another registry does not resume it, so that registry's 206 cannot vouch for the
     first's bytes (the prefix would be served before any verification). (fakeup: a throttled
     private upstream, and a registry that answers Range requests with bytes it never had.)
"""
import base64
import glob
import os
import signal
import threading

import fakeup
import rgmtest
from rgmtest import MANIFEST_ACCEPT, http, wait_for

t = rgmtest.TAP(timeout=240)
ws = rgmtest.Workspace()


def basic(user, pw):
    return "Basic " + base64.b64encode(("%s:%s" % (user, pw)).encode()).decode()


def mget(m, path, ns, auth=None, method="GET"):
    h = {"Accept": MANIFEST_ACCEPT}
    if auth:
        h["Authorization"] = auth
    return http(method, "%s%s?ns=%s" % (m.url, path, ns), headers=h)


# --------------------------------------------------------------------------------------
# 1. a private repository's tag is not resolved from the cache for a stranger

USERS = {"alice": "alice-" + os.urandom(6).hex(), "bob": "bob-" + os.urandom(6).hex()}



def bearer(user, repo):
    tok, _ = ts.issue(user, rgmtest.parse_scopes(["repository:%s:pull" % repo]))
    return "Bearer " + tok



def policy(user, rtype, name, actions):
    if rtype != "repository":
        return list(actions) if user else []
    if name.startswith("public/"):
        return list(actions) if user else [a for a in actions if a == "pull"]
    return list(actions) if user == "alice" else []


ts = rgmtest.TokenServer(ws, users=USERS, policy=policy)
reg = rgmtest.Registry(ws, auth=("token", ts), name="reg-token")
NS = "reg.test"
img = rgmtest.make_image(ws, "public/base:1", layers=[20_000])
pPub = rgmtest.push(img, reg, creds=("alice", USERS["alice"]))
pPriv = rgmtest.push(img, reg, name_tag="private/base:1", creds=("alice", USERS["alice"]))
pCopy = rgmtest.push(img, reg, name_tag="public/copy:1", creds=("alice", USERS["alice"]))
d = pPub["digest"]
A = bearer("alice", "private/base")
B = bearer("bob", "private/base")
t.ok(pPriv["digest"] == d == pCopy["digest"], "one manifest in public/base, public/copy and "
     "private/base")

m1 = rgmtest.Mirror(ws, config={"default_registry": NS, "registries": {NS: {"endpoint": reg.url}},
                                "log_level": "debug"}, name="m1")
st, h, _ = mget(m1, "/v2/public/base/manifests/1", NS)
t.ok(st == 200 and h.get("docker-content-digest") == d, "anonymous: public/base:1 (%d)" % st)
st, h, _ = mget(m1, "/v2/private/base/manifests/1", NS, auth=A)
t.ok(st == 200 and h.get("docker-content-digest") == d, "alice: private/base:1 (%d)" % st)
gets = reg.count_requests("GET", "/manifests/")

st, h, body = mget(m1, "/v2/private/base/manifests/1", NS)
t.ok(st == 401 and h.get("docker-content-digest") is None,
     "anonymous GET of the private tag: 401, no digest (%d, X-Cache %s)" % (st, h.get("x-cache")))
st, h, _ = mget(m1, "/v2/private/base/manifests/1", NS, method="HEAD")
t.ok(st == 401 and h.get("docker-content-digest") is None,
     "anonymous HEAD of the private tag: 401, no digest (%d)" % st)
st, h, _ = mget(m1, "/v2/private/base/manifests/1", NS, auth=B)
t.ok(st != 200 and h.get("docker-content-digest") is None,
     "bob (a user the upstream refuses): not served (%d)" % st)

# alice's HEAD of the fresh tag is not remembered as a public answer
st, h, _ = mget(m1, "/v2/private/base/manifests/1", NS, auth=A, method="HEAD")
t.ok(st == 200 and h.get("docker-content-digest") == d, "alice HEADs the private tag (%d)" % st)
st, h, _ = mget(m1, "/v2/private/base/manifests/1", NS, method="HEAD")
t.ok(st == 401 and h.get("docker-content-digest") is None,
     "anonymous HEAD after alice's: 401, not her answer (%d)" % st)

st, h, _ = mget(m1, "/v2/private/base/manifests/1", NS, auth=A)
t.ok(st == 200 and h.get("docker-content-digest") == d, "alice is still served (%d, X-Cache %s)"
     % (st, h.get("x-cache")))
st, h, _ = mget(m1, "/v2/public/copy/manifests/1", NS)
t.ok(st == 200 and h.get("docker-content-digest") == d,
     "anonymous: public/copy:1, the same manifest in another public repository (%d)" % st)
st, h, _ = mget(m1, "/v2/public/copy/manifests/1", NS)
t.ok(st == 200 and h.get("x-cache") == "HIT", "... then from the cache (%s)" % h.get("x-cache"))
t.is_(reg.count_requests("HEAD", "/public/copy/manifests/sha256:"), 0,
      "... and its tag's HEAD upstream was the proof: no access HEAD by digest")
st, h, _ = mget(m1, "/v2/private/base/manifests/%s" % d, NS)
t.ok(st == 200, "by digest the manifest is public content, through any repository (%d)" % st)
t.is_(reg.count_requests("GET", "/manifests/"), gets, "no manifest GET (pull) upstream for any of it")

# --------------------------------------------------------------------------------------
# 2. a kept partial from one registry is not resumed through another

MB = 1 << 20
SIZE = 16 * MB
secret = os.urandom(SIZE)
owner = "bob/priv"
BOB = basic("bob", "pb")


def auth(hd):
    """bob/priv, and the secret blob in any repository: bob only."""
    if not hd.path.startswith("/v2/%s/" % owner) and ds not in hd.path:
        return True
    if hd.headers.get("Authorization", "") == BOB:
        return True
    return 'Basic realm="fake"'


ds = fakeup.digest_of(secret)
up = fakeup.FakeUpstream(auth=auth, name="up")
up.add_blob(secret)
up.behave("/blobs/", throttle=6 * MB)
evil = fakeup.FakeUpstream(name="evil")
evil.add_blob(secret)  # so that it answers the path, but only with these bytes:
evil.behave("/blobs/", body=b"\0" * SIZE)
m2 = rgmtest.Mirror(ws, config={"registries": {"docker.io": {"endpoint": up.url},
                                               "evil.test": {"endpoint": evil.url}},
                                "shutdown_timeout": "0s"},
                    name="m2")


def partial_size(m):
    sizes = [os.path.getsize(p) for p in glob.glob(os.path.join(m.storage, "tmp", "*.partial"))
             if os.path.exists(p)]
    return max(sizes) if sizes else 0


res = {}


def bob_pull():
    try:
        res["bob"] = m2.get("/v2/%s/blobs/%s" % (owner, ds), headers={"Authorization": BOB})
    except Exception as e:  # noqa: cut by the stop
        res["bob"] = (type(e).__name__, {}, b"")


th = threading.Thread(target=bob_pull, daemon=True)
th.start()
try:
    wait_for(lambda: partial_size(m2) >= SIZE // 2, timeout=30, interval=0.01,
             what="bob's partial at 50 %")
except TimeoutError as e:
    t.diag(str(e))
m2.stop(sig=signal.SIGTERM)
th.join(30)
keeps = glob.glob(os.path.join(m2.storage, "tmp", "*.partial.keep"))
t.ok(len(keeps) == 1, "SIGTERM mid-fetch keeps bob's private partial (%s)" % keeps)
m2.start()

try:
    st, h, body = m2.get("/v2/x/y/blobs/%s?ns=evil.test" % ds)
except rgmtest._httpclient.IncompleteRead as e:
    st, body = -1, e.partial
t.ok(st != 200 or body != secret, "anonymous through evil.test: never the whole private blob "
     "(%s, %d bytes)" % (st, len(body)))
t.ok(body[:MB] != secret[:MB],
     "... and not its prefix from the kept partial (%s, %d bytes)" % (st, len(body)))
t.ok(all(r.headers.get("range") is None for r in evil.requests_for("/blobs/" + ds)),
     "evil.test was not asked for the rest with Range")
st, _, _ = m2.get("/v2/library/z/blobs/%s" % ds)
t.isnt(st, 200, "anonymous through docker.io/library/z: not served (%d)" % st)

n0 = len(up.requests_for("/blobs/" + ds, method="GET"))
st, _, body = m2.get("/v2/%s/blobs/%s" % (owner, ds), headers={"Authorization": BOB})
t.ok(st == 200 and body == secret, "bob, through the registry it came from: the whole blob")
rng = [r.headers.get("range") for r in up.requests_for("/blobs/" + ds, method="GET")[n0:]]
t.ok(rng and all(r and r.startswith("bytes=") and r != "bytes=0-" for r in rng),
     "... resumed from the kept partial with Range (%s)" % rng)

# 3. Without a cluster the hop headers mean nothing: a client cannot use
# X-Regmirror-Only-If-Cached to skip a tag's revalidation or a fetch.
cfg_digest = img["config"]
gets0 = reg.count_requests("GET", "/blobs/" + cfg_digest)
st, _, body = m1.get("/v2/public/base/blobs/%s" % cfg_digest,
                     headers={"X-Regmirror-Only-If-Cached": "1", "X-Regmirror-Hop": "1"})
t.ok(st == 200 and rgmtest.sha256_digest(body) == cfg_digest,
     "no cluster: only-if-cached from a client is ignored, the blob is fetched (%d)" % st)
t.is_(reg.count_requests("GET", "/blobs/" + cfg_digest), gets0 + 1, "... from the upstream")

t.done()
