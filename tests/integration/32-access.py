"""The cache never widens access, in the corners: a decision about one repository is not a
decision about another repository's objects; a registry that never delivered an object cannot
vouch for it; tag lists and in-flight jobs are not shared across identities; a manifest
fetched through /blobs/ keeps its media type; offline commands beside a running server leave
its fetches alone; tags/list Link headers point back at the mirror. (fakeup upstreams: the
faults and lies a real registry does not produce.)"""
import base64
import os
import re
import threading
import time

import fakeup
import rgmtest
from rgmtest import MANIFEST_ACCEPT

t = rgmtest.TAP(timeout=240)
ws = rgmtest.Workspace()


def basic(user, pw):
    return {"Authorization": "Basic " + base64.b64encode(("%s:%s" % (user, pw)).encode()).decode()}


A = basic("alice", "pa")
B = basic("bob", "pb")
users = {"alice": "pa", "bob": "pb"}
owner = {"alice/priv": "alice", "bob/priv": "bob"}


def auth(h):
    m = re.match(r"^/v2/(.+?)/(?:manifests|blobs|tags)/", h.path)
    repo = m.group(1) if m else ""
    if repo not in owner:
        return True
    got = h.headers.get("Authorization", "")
    if got.startswith("Basic "):
        u, _, p = base64.b64decode(got[6:]).decode().partition(":")
        if users.get(u) == p and owner[repo] == u:
            return True
    return 'Basic realm="fake"'


def get_cut(mirror, path, headers=None):
    """GET that reports a body cut short as status -1 (with the partial bytes)."""
    try:
        return mirror.get(path, headers=headers)
    except rgmtest._httpclient.IncompleteRead as e:
        return -1, {}, e.partial


# --------------------------------------------------------------------------------------
# 1. a decision about alice/priv does not open bob's objects through alice/priv

up = fakeup.FakeUpstream(auth=auth, name="up")
secret_b = b"bob secret layer " * 1000
db = up.add_blob(secret_b)
da = up.add_blob(b"alice layer " * 1000)
up.behave(lambda m, p, h: p.startswith("/v2/alice/priv/blobs/" + db), status=404)
m = rgmtest.Mirror(ws, args=["--registry", "docker.io=" + up.url], name="m1")

st, _, body = m.get("/v2/bob/priv/blobs/%s" % db, headers=B)
t.ok(st == 200 and body == secret_b, "bob gets his private blob")
st, _, _ = m.get("/v2/alice/priv/blobs/%s" % da, headers=A)
t.is_(st, 200, "alice gets hers (miss)")
st, _, _ = m.get("/v2/alice/priv/blobs/%s" % da, headers=A)
t.is_(st, 200, "alice gets hers again (hit; her access to alice/priv is now cached)")
n0 = up.count(None, "/v2/alice/priv/blobs/" + db)
st, _, body = m.get("/v2/alice/priv/blobs/%s" % db, headers=A)
t.ok(st == 404 and secret_b not in body,
     "bob's private blob through alice/priv: the upstream's 404, not bob's bytes (%d)" % st)
t.ok(up.count(None, "/v2/alice/priv/blobs/" + db) > n0, "... and the upstream was asked")
st, _, body = m.get("/v2/bob/priv/blobs/%s" % db)
t.is_(st, 401, "anonymous: 401 for bob's cached private blob")
st, _, body = m.get("/v2/bob/priv/blobs/%s" % db, headers=A)
t.isnt(st, 200, "alice's credentials on bob/priv: refused (%d)" % st)

# --------------------------------------------------------------------------------------
# 2. a registry that never delivered an object cannot vouch for it

evil = fakeup.FakeUpstream(name="evil")
evil.behave("/blobs/", status=200)  # says yes to any blob HEAD, has no bytes
m2 = rgmtest.Mirror(ws, config={"registries": {"docker.io": {"endpoint": up.url},
                                               "evil.test": {"endpoint": evil.url}}},
                    name="m2")
st, _, body = m2.get("/v2/bob/priv/blobs/%s" % db, headers=B)
t.is_(st, 200, "bob's private blob cached on m2")
st, _, body = get_cut(m2, "/v2/x/y/blobs/%s?ns=evil.test" % db)
t.ok(st != 200 and body != secret_b,
     "anonymous through a registry that says 'yes': no private bytes (%d, %d bytes)"
     % (st, len(body)))
st, _, body = m2.get("/v2/bob/priv/blobs/%s" % db)
t.is_(st, 401, "... and the blob did not become public through docker.io")
t.ok(any(r.method == "GET" and db in r.path for r in evil.requests),
     "the mirror asked the other registry for the bytes (verified fetch), not only a HEAD")

# --------------------------------------------------------------------------------------
# 3. tag lists and in-flight jobs are not shared across identities

up.add_image("bob/priv", "secret-tag-1")
up.behave("/bob/priv/tags/list", stall=1.2)
res = {}


def as_bob():
    res["bob"] = m.get("/v2/bob/priv/tags/list", headers=B)


th = threading.Thread(target=as_bob)
th.start()
time.sleep(0.4)
st, h, body = m.get("/v2/bob/priv/tags/list")
th.join()
t.is_(res["bob"][0], 200, "bob lists his tags")
t.ok(st == 401 and b"secret-tag-1" not in body,
     "anonymous during bob's listing: 401, not bob's tags (%d, X-Cache %s)" % (st, h.get("x-cache")))

# the first client of a blob is anonymous (401); bob, arriving while it is in flight, is
# served with his own credentials
db2 = up.add_blob(os.urandom(50_000))
owner["bob/priv2"] = "bob"
up.behave(lambda m_, p, h: p.startswith("/v2/bob/priv2/blobs/" + db2), stall=1.0)
res = {}


def anon():
    res["anon"] = m.get("/v2/bob/priv2/blobs/%s" % db2)


th = threading.Thread(target=anon)
th.start()
time.sleep(0.3)
st, h, body = m.get("/v2/bob/priv2/blobs/%s" % db2, headers=B)
th.join()
t.is_(res["anon"][0], 401, "anonymous first client: 401")
t.ok(st == 200 and rgmtest.sha256_digest(body) == db2,
     "bob, waiting on the anonymous client's fetch, gets his own answer: 200 (%d)" % st)

# --------------------------------------------------------------------------------------
# 4. a manifest fetched through /blobs/ is served from /manifests/ with its media type

up2 = fakeup.FakeUpstream(name="up2")
up2.add_image("lib/app", "1")
st, h, mb = rgmtest.http("GET", up2.url + "/v2/lib/app/manifests/1",
                         headers={"Accept": MANIFEST_ACCEPT})
mt = h.get("content-type")
dm = up2.add_blob(mb)
m3 = rgmtest.Mirror(ws, args=["--registry", "docker.io=" + up2.url], name="m3")
st, _, b = m3.get("/v2/lib/app/blobs/%s" % dm)
t.ok(st == 200 and b == mb, "manifest digest through /blobs/")
st, h, b = m3.get("/v2/lib/app/manifests/%s" % dm, headers={"Accept": MANIFEST_ACCEPT})
t.ok(st == 200 and h.get("content-type") == mt and b == mb,
     "then /manifests/ serves it with the manifest media type (%s)" % h.get("content-type"))

# --------------------------------------------------------------------------------------
# 5. tags/list Link headers point back at the mirror, the way the client addressed it

up3 = fakeup.FakeUpstream(name="up3")
up3.add_image("lib/tagged", "1")
up3.behave("/tags/list",
           headers={"Link": '</v2/lib/tagged/tags/list?last=1&n=1>; rel="next"'})
m4 = rgmtest.Mirror(ws, config={"registries": {"docker.io": {"endpoint": up2.url},
                                               "other.test": {"endpoint": up3.url}}},
                    name="m4")
st, h, _ = m4.get("/v2/lib/tagged/tags/list?n=1&ns=other.test")
t.is_(h.get("link"), '</v2/lib/tagged/tags/list?last=1&n=1&ns=other.test>; rel="next"',
      "Link for an ns= client carries ns")
st, h, _ = m4.get("/v2/other.test/lib/tagged/tags/list?n=1")
t.is_(h.get("link"), '</v2/other.test/lib/tagged/tags/list?last=1&n=1>; rel="next"',
      "Link for a path-prefix client carries the prefix")

# --------------------------------------------------------------------------------------
# 6. one server per storage; offline commands leave a running server's fetches alone

m5 = rgmtest.Mirror(ws, args=["--registry", "docker.io=" + up2.url], name="m5")
r = rgmtest.run([rgmtest.RGM_BIN, "serve", "--listen", "127.0.0.1:%d" % rgmtest.free_port(),
                 "--storage", m5.storage], check=False, timeout=20)
t.ok(r.rc == 1 and "in use by another regmirror" in r.out,
     "a second serve on the same storage is refused", diag=r.out[-300:])
data = os.urandom(400_000)
d = up2.add_blob(data)
up2.behave("/blobs/" + d, throttle=250_000)
res = {}


def pull():
    res["r"] = m5.get("/v2/library/x/blobs/%s" % d)


th = threading.Thread(target=pull)
th.start()
time.sleep(0.6)
tmp_before = os.listdir(os.path.join(m5.storage, "tmp"))
r1 = rgmtest.run([rgmtest.RGM_BIN, "ls", "--storage", m5.storage], check=False)
r2 = rgmtest.run([rgmtest.RGM_BIN, "verify", "--storage", m5.storage], check=False)
th.join()
st, h, body = res["r"]
t.ok(tmp_before and r1.rc == 0 and r2.rc == 0, "ls and verify ran beside the server",
     diag=(tmp_before, r1.rc, r2.rc, r1.out[-200:], r2.out[-200:]))
t.ok(st == 200 and body == data, "the fetch in flight completed (%d bytes)" % len(body))
st, h, body = m5.get("/v2/library/x/blobs/%s" % d)
t.is_(h.get("x-cache"), "HIT", "and it was cached")
for mm in (m, m2, m3, m4, m5):
    t.is_(mm.stop(), 0, "%s stopped cleanly" % os.path.basename(mm.dir))
t.done()
