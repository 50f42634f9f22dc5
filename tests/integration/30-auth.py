#!/usr/bin/env python3
"""30-auth: forward auth; the cache never serves private content to a client the upstream
would refuse (issue 5).  Real docker-registry upstreams (htpasswd and token auth), the
rgmtest TokenServer, containerd (ctr content fetch) and curl.

  A  htpasswd upstream: Basic clients pull through the mirror, anonymous ones get 401 with
     the upstream's challenge unchanged, cached private content is re-checked upstream,
     auth_cache_ttl expiry and revocation, mirror-held credentials (password_file).
  B  token upstream: containerd pulls public/* anonymously and private/* with --user; the
     cached private image is refused to anonymous and to bob (valid user, denied by
     policy), served to carol from cache without a second blob GET upstream.
  C  mirror-held docker_config credentials: anonymous containerd pulls private/*.
  D  an expired mirror token is renewed.
  E  no secret in the mirror logs or the storage directory.
"""
import base64
import json
import os
import sqlite3
import time

import rgmtest
from rgmtest import MANIFEST_ACCEPT, http, sha256_digest, run

t = rgmtest.TAP(timeout=240)
ws = rgmtest.Workspace()

SECRETS = set()          # every password, Basic string and token the test uses
MIRRORS = []


def basic(user, pw):
    s = "Basic " + base64.b64encode(("%s:%s" % (user, pw)).encode()).decode()
    SECRETS.add(s[6:])
    SECRETS.add(pw)
    return s


def origins(mirror, digest):
    """{(registry, repository): is_public} from the mirror's index.db."""
    db = os.path.join(mirror.storage, "index.db")
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=5)
    try:
        rows = con.execute("SELECT registry, repository, is_public FROM origins "
                           "WHERE digest = ?", (digest,)).fetchall()
    finally:
        con.close()
    return {(r[0], r[1]): r[2] for r in rows}


def blob_digests(img):
    return [img["config"]] + [l["digest"] for l in img["layers"]]


def new_mirror(name, registries, default, extra_cfg=None):
    cfg = {"default_registry": default, "registries": registries, "log_level": "debug"}
    cfg.update(extra_cfg or {})
    m = rgmtest.Mirror(ws, config=cfg, name=name)
    MIRRORS.append(m)
    return m


def mget(m, path, ns, auth=None, method="GET", accept=MANIFEST_ACCEPT):
    h = {"Accept": accept}
    if auth:
        h["Authorization"] = auth
    return http(method, "%s%s?ns=%s" % (m.url, path, ns), headers=h)


def curl(url, out, auth_user=None, accept=MANIFEST_ACCEPT):
    """curl GET; returns (status, headers text, body bytes)."""
    hdr = out + ".hdr"
    cmd = ["curl", "-sS", "--noproxy", "*", "-o", out, "-D", hdr, "-w", "%{http_code}",
           "-H", "Accept: " + accept]
    if auth_user:
        cmd += ["-u", "%s:%s" % auth_user]
    r = run(cmd + [url], timeout=30, check=False)
    with open(out, "rb") as f:
        body = f.read()
    with open(hdr) as f:
        htext = f.read()
    return int(r.out.strip()[-3:] or 0), htext, body


# ======================================================================================
# A. htpasswd (Basic) upstream
# ======================================================================================
A_PW = "alice-basic-" + os.urandom(6).hex()
A_PW2 = "alice-rotated-" + os.urandom(6).hex()
A_USERS = {"alice": A_PW}
regB = rgmtest.Registry(ws, auth=("htpasswd", dict(A_USERS)), name="reg-basic")
imgB = rgmtest.make_image(ws, "team/app:1", layers=[20_000, 150_000])
pB = rgmtest.push(imgB, regB, creds=("alice", A_PW))
ALICE_B = basic("alice", A_PW)
WRONG_B = basic("alice", "not-" + A_PW)
NS_B = "basic.test"
REGS_B = {NS_B: {"endpoint": regB.url}}

m1 = new_mirror("m1-basic", REGS_B, NS_B, {"auth_cache_ttl": "1s"})

st, h, _ = http("GET", regB.url + "/v2/team/app/manifests/1", headers={"Accept": MANIFEST_ACCEPT})
direct_chal = h.get("www-authenticate")
t.ok(st == 401 and direct_chal, "A: upstream itself challenges anonymous clients",
     "status %s, %r" % (st, direct_chal))

# anonymous before anything is cached
st, h, b = mget(m1, "/v2/team/app/manifests/1", NS_B)
t.is_(st, 401, "A: anonymous manifest GET through the mirror -> 401")
t.is_(h.get("www-authenticate"), direct_chal, "A: upstream WWW-Authenticate relayed unchanged")
t.like(b.decode(errors="replace"), "UNAUTHORIZED", "A: OCI error body UNAUTHORIZED")

# Basic client with curl: manifest by tag
st, htext, body = curl("%s/v2/team/app/manifests/1?ns=%s" % (m1.url, NS_B),
                       ws.path("curl-manifest"), auth_user=("alice", A_PW))
t.is_(st, 200, "A: curl -u alice manifest through the mirror -> 200")
t.is_(sha256_digest(body), pB["digest"], "A: manifest bytes as pushed")
t.like(htext, r"(?i)docker-content-digest: *%s" % pB["digest"], "A: Docker-Content-Digest")

# Basic client blobs
for d in blob_digests(imgB):
    st, h, body = mget(m1, "/v2/team/app/blobs/" + d, NS_B, auth=ALICE_B)
    t.ok(st == 200 and sha256_digest(body) == d, "A: alice blob %s.. -> 200, right bytes" % d[7:19],
         "status %s" % st)
for d in blob_digests(imgB):
    regB.wait_count("GET", "/blobs/" + d, 1, status=200)
    t.ok(origins(m1, d).get((NS_B, "team/app")) == 0,
         "A: blob %s.. recorded private in index.db" % d[7:19], repr(origins(m1, d)))

# cached now: anonymous and wrong password refused, upstream challenge relayed
L0 = imgB["layers"][1]["digest"]
for what, auth in (("anonymous", None), ("wrong password", WRONG_B)):
    st, h, b = mget(m1, "/v2/team/app/blobs/" + L0, NS_B, auth=auth)
    t.is_(st, 401, "A: cached private blob, %s -> 401" % what)
    t.ok(sha256_digest(b) != L0 and len(b) < 2000, "A: %s got no blob bytes" % what)
    t.is_(h.get("www-authenticate"), direct_chal, "A: %s gets the upstream challenge" % what)
    st, h, b = mget(m1, "/v2/team/app/manifests/" + pB["digest"], NS_B, auth=auth,
                    method="HEAD")
    t.is_(st, 401, "A: cached private manifest HEAD by digest, %s -> 401" % what)
    st, h, b = mget(m1, "/v2/team/app/manifests/1", NS_B, auth=auth)
    t.is_(st, 401, "A: cached private tag, %s -> 401" % what)
st, htext, body = curl("%s/v2/team/app/blobs/%s?ns=%s" % (m1.url, L0, NS_B),
                       ws.path("curl-anon"))
t.is_(st, 401, "A: curl anonymous cached blob -> 401")

for d in blob_digests(imgB):
    t.is_(regB.count_requests("GET", "/blobs/" + d, status=200), 1,
          "A: upstream blob %s.. GET 200 exactly once" % d[7:19])

# auth_cache_ttl=1s: after it, the decision is asked upstream again (a HEAD), then cached
time.sleep(1.3)
heads0 = regB.count_requests("HEAD", "/blobs/" + L0, status=200)
t0 = time.monotonic()
st1, _, b1 = mget(m1, "/v2/team/app/blobs/" + L0, NS_B, auth=ALICE_B)
n1 = regB.wait_count("HEAD", "/blobs/" + L0, heads0 + 1, timeout=3, status=200)
time.sleep(0.1)
any1 = regB.count_requests("HEAD", "/blobs/" + L0)
st2, _, b2 = mget(m1, "/v2/team/app/blobs/" + L0, NS_B, auth=ALICE_B)
elapsed = time.monotonic() - t0
t.ok(st1 == 200 and sha256_digest(b1) == L0, "A: alice after ttl -> 200 from cache")
t.is_(n1, heads0 + 1, "A: expired decision re-checked upstream (one HEAD 200 with alice's creds)")
time.sleep(0.2)
if elapsed < 0.7:
    t.is_(regB.count_requests("HEAD", "/blobs/" + L0), any1,
          "A: decision cached within auth_cache_ttl (no further HEAD)")
else:
    t.skip("A: decision cached within auth_cache_ttl", "machine too slow (%.2fs)" % elapsed)
t.ok(st2 == 200 and sha256_digest(b2) == L0, "A: alice again -> 200")

# mirror-held credentials (password_file): anonymous clients may pull (operator's choice)
pwfile = ws.write("m2-password", A_PW + "\n", mode=0o600)
m2 = new_mirror("m2-basic-creds", {NS_B: {"endpoint": regB.url, "credentials": {
    "username": "alice", "password_file": pwfile}}}, NS_B)
st, h, body = mget(m2, "/v2/team/app/manifests/1", NS_B)
t.ok(st == 200 and sha256_digest(body) == pB["digest"],
     "A: mirror-held Basic creds: anonymous manifest -> 200", "status %s" % st)
for d in blob_digests(imgB):
    st, h, body = mget(m2, "/v2/team/app/blobs/" + d, NS_B)
    t.ok(st == 200 and sha256_digest(body) == d,
         "A: mirror-held Basic creds: anonymous blob %s.. -> 200" % d[7:19], "status %s" % st)
t.is_(origins(m2, L0).get((NS_B, "team/app")), 1,
      "A: content fetched with the mirror's own creds recorded public")

# revocation: alice's password changes upstream; after auth_cache_ttl the old one is refused
regB.stop()
regB.auth = ("htpasswd", {"alice": A_PW2})
regB.start()
ALICE_B2 = basic("alice", A_PW2)
if regB.url != REGS_B[NS_B]["endpoint"]:
    t.skip("A: revocation", "registry came back on another port")
else:
    time.sleep(1.3)
    gets0 = regB.count_requests("GET", "/blobs/")
    st, h, b = mget(m1, "/v2/team/app/blobs/" + L0, NS_B, auth=ALICE_B)
    t.is_(st, 401, "A: revoked password, cached blob -> 401 after auth_cache_ttl")
    t.ok(sha256_digest(b) != L0, "A: revoked password got no blob bytes")
    st, h, b = mget(m1, "/v2/team/app/blobs/" + L0, NS_B, auth=ALICE_B2)
    t.ok(st == 200 and sha256_digest(b) == L0, "A: new password -> 200 from cache",
         "status %s" % st)
    t.is_(regB.count_requests("GET", "/blobs/"), gets0, "A: no blob GET upstream for that")

# ======================================================================================
# B. token-auth upstream with containerd
# ======================================================================================
USERS = {"alice": "alice-tok-" + os.urandom(6).hex(), "bob": "bob-tok-" + os.urandom(6).hex(),
         "carol": "carol-tok-" + os.urandom(6).hex()}
for u, p in USERS.items():
    basic(u, p)


def policy(user, rtype, name, actions):
    if rtype != "repository":
        return list(actions) if user else []
    if name.startswith("public/"):
        return list(actions) if user else [a for a in actions if a == "pull"]
    if name.startswith("private/"):
        return list(actions) if user in ("alice", "carol") else []
    return list(actions) if user else []


ts = rgmtest.TokenServer(ws, users=USERS, policy=policy)
_issue = ts.issue


def _recording_issue(user, scopes, service=None):
    tok, access = _issue(user, scopes, service)
    SECRETS.add(tok)
    SECRETS.add(tok.rsplit(".", 1)[-1])     # the signature alone, in case of truncation
    return tok, access


ts.issue = _recording_issue

regT = rgmtest.Registry(ws, auth=("token", ts), name="reg-token")
NS = "reg.test"
imgPub = rgmtest.make_image(ws, "public/base:1", layers=[30_000, 120_000])
imgPriv = rgmtest.make_image(ws, "private/x:1", layers=[40_000, 160_000])
imgE1 = rgmtest.make_image(ws, "public/e:1", layers=[10_000])
imgE2 = rgmtest.make_image(ws, "public/e:2", layers=[12_000])
pPub = rgmtest.push(imgPub, regT, creds=("alice", USERS["alice"]))
pPriv = rgmtest.push(imgPriv, regT, creds=("alice", USERS["alice"]))
pE1 = rgmtest.push(imgE1, regT, creds=("alice", USERS["alice"]))
pE2 = rgmtest.push(imgE2, regT, creds=("alice", USERS["alice"]))

m3 = new_mirror("m3-token", {NS: {"endpoint": regT.url}}, NS)
hosts3 = ws.mkdir("hosts-m3")
r = m3.hosts(hosts3, [NS], extra=["--server-override", "http://127.0.0.1:%d" % ws.closed_port()])
t.is_(r.rc, 0, "B: regmirror hosts wrote hosts.toml")

c_anon = rgmtest.Containerd(ws, name="c-anon")
c_alice = rgmtest.Containerd(ws, name="c-alice")
c_bob = rgmtest.Containerd(ws, name="c-bob")
c_carol = rgmtest.Containerd(ws, name="c-carol")

# public image, anonymous
rc, out = c_anon.fetch(NS + "/public/base:1", hosts3, timeout=90)
t.is_(rc, 0, "B: anonymous containerd pulls public/base through the mirror")
if rc != 0:
    t.diag(out[-2000:])
have = c_anon.content_digests()
t.ok(set(blob_digests(imgPub)) <= have and pPub["digest"] in have,
     "B: anonymous containerd has every public blob")
for d in blob_digests(imgPub):
    t.is_(regT.wait_count("GET", "/public/base/blobs/" + d, 1, status=200), 1,
          "B: public blob %s.. fetched upstream once" % d[7:19])
    t.is_(origins(m3, d).get((NS, "public/base")), 1, "B: public blob recorded public")

# private image, anonymous, nothing cached: refused
rc, out = c_anon.fetch(NS + "/private/x:1", hosts3, timeout=90)
t.isnt(rc, 0, "B: anonymous containerd cannot pull private/x")
t.is_(regT.count_requests("GET", "/private/x/blobs/", status=200), 0,
      "B: no private blob left the upstream for it")

# private image with alice's credentials
rc, out = c_alice.fetch(NS + "/private/x:1", hosts3, user=("alice", USERS["alice"]), timeout=90)
t.is_(rc, 0, "B: containerd --user alice pulls private/x through the mirror")
if rc != 0:
    t.diag(out[-2000:])
have = c_alice.content_digests()
t.ok(set(blob_digests(imgPriv)) <= have and pPriv["digest"] in have,
     "B: alice's containerd has every private blob")
t.ok(ts.count(user="alice", ok=True) >= 1, "B: containerd got a token for alice")
for d in blob_digests(imgPriv):
    t.is_(regT.wait_count("GET", "/private/x/blobs/" + d, 1, status=200), 1,
          "B: private blob %s.. fetched upstream once" % d[7:19])
    t.is_(origins(m3, d).get((NS, "private/x")), 0, "B: private blob %s.. recorded private"
          % d[7:19])
t.is_(origins(m3, pPriv["digest"]).get((NS, "private/x")), 0, "B: private manifest recorded private")
blob_gets = regT.count_requests("GET", "/blobs/")

# the same private image, cached: anonymous refused
ANON_CHAL = None
paths = (["/v2/private/x/blobs/" + d for d in blob_digests(imgPriv)] +
         ["/v2/private/x/manifests/" + pPriv["digest"], "/v2/private/x/manifests/1"])
for p in paths:
    st, h, b = mget(m3, p, NS)
    short = p.split("/")[-1][:19]
    t.is_(st, 401, "B: cached private %s, anonymous -> 401" % short)
    scheme, params = rgmtest.parse_challenge(h.get("www-authenticate"))
    t.ok(scheme == "bearer" and params.get("realm") == ts.realm and
         params.get("service") == ts.service and
         "repository:private/x:pull" in params.get("scope", ""),
         "B: %s: the upstream's Bearer challenge (realm, service, scope)" % short,
         repr(h.get("www-authenticate")))
    t.ok(b"sha256:" not in b or b"UNAUTHORIZED" in b, "B: %s: no content in the 401" % short)
    ANON_CHAL = h.get("www-authenticate")
# the relayed challenge is the one the upstream gives the mirror's (empty) token
tok_anon, _ = ts.issue(None, [("repository", "private/x", ["pull"])])
st, h, _ = http("GET", regT.url + "/v2/private/x/manifests/1",
                headers={"Accept": MANIFEST_ACCEPT, "Authorization": "Bearer " + tok_anon})
t.is_(ANON_CHAL, h.get("www-authenticate"), "B: challenge relayed unchanged")
time.sleep(0.1)
man_gets = regT.count_requests("GET", "/private/x/manifests/")

rc, out = c_anon.fetch(NS + "/private/x:1", hosts3, timeout=90)
t.isnt(rc, 0, "B: anonymous containerd still cannot pull the cached private/x")
t.ok(not (set(l["digest"] for l in imgPriv["layers"]) & c_anon.content_digests()),
     "B: anonymous containerd got no private layer")

# bob: a valid user whom the policy denies private/x
st, h, b = http("GET", ts.realm + "?service=%s&scope=repository:private/x:pull" % ts.service,
                headers={"Authorization": basic("bob", USERS["bob"])})
t.is_(st, 200, "B: bob gets a token from the token server")
bob_tok = json.loads(b)["token"]
SECRETS.add(bob_tok)
t.ok(not any(a["name"] == "private/x" for a in ts.requests[-1].granted),
     "B: bob's token grants nothing on private/x")
for p in paths:
    st, h, b = mget(m3, p, NS, auth="Bearer " + bob_tok)
    short = p.split("/")[-1][:19]
    t.ok(st in (401, 403), "B: cached private %s, bob's token -> refused" % short,
         "status %s" % st)
    t.ok(b"UNAUTHORIZED" in b or b"DENIED" in b, "B: %s: OCI error, no content" % short)
rc, out = c_bob.fetch(NS + "/private/x:1", hosts3, user=("bob", USERS["bob"]), timeout=90)
t.isnt(rc, 0, "B: containerd --user bob cannot pull the cached private/x")
t.ok(not (set(l["digest"] for l in imgPriv["layers"]) & c_bob.content_digests()),
     "B: bob's containerd got no private layer")

# carol, also allowed: served from cache, no blob fetched upstream again
heads0 = regT.count_requests("HEAD", "/private/x/")
rc, out = c_carol.fetch(NS + "/private/x:1", hosts3, user=("carol", USERS["carol"]), timeout=90)
t.is_(rc, 0, "B: containerd --user carol pulls the cached private/x")
if rc != 0:
    t.diag(out[-2000:])
have = c_carol.content_digests()
t.ok(set(blob_digests(imgPriv)) <= have, "B: carol's containerd has every private blob")
time.sleep(0.3)
for d in blob_digests(imgPriv):
    t.is_(regT.count_requests("GET", "/private/x/blobs/" + d, status=200), 1,
          "B: private blob %s.. still fetched upstream only once" % d[7:19])
t.is_(regT.count_requests("GET", "/blobs/"), blob_gets, "B: no blob GET upstream since alice's pull")
t.is_(regT.count_requests("GET", "/private/x/manifests/"), man_gets,
      "B: no manifest GET upstream for carol")
t.ok(regT.count_requests("HEAD", "/private/x/") > heads0,
     "B: carol's access was checked upstream (HEAD)")
mt = m3.metrics()
t.ok(mt.get("regmirror_access_denied_total", 0) >= 1, "B: metrics count denied access",
     repr(mt.get("regmirror_access_denied_total")))

# ======================================================================================
# C. mirror-held docker_config credentials for token auth
# ======================================================================================
dcfg = ws.write("docker-config.json", json.dumps({"auths": {NS: {
    "auth": base64.b64encode(("alice:" + USERS["alice"]).encode()).decode()}}}), mode=0o600)
m4 = new_mirror("m4-token-creds", {NS: {"endpoint": regT.url,
                                        "credentials": {"docker_config": dcfg}}}, NS)
hosts4 = ws.mkdir("hosts-m4")
m4.hosts(hosts4, [NS], extra=["--server-override", "http://127.0.0.1:%d" % ws.closed_port()])
alice_gets = sum(1 for q in ts.requests if q.user == "alice" and q.method == "GET")
rc, out = c_anon.fetch(NS + "/private/x:1", hosts4, timeout=90)
t.is_(rc, 0, "C: mirror-held docker_config creds: anonymous containerd pulls private/x")
if rc != 0:
    t.diag(out[-2000:])
t.ok(set(blob_digests(imgPriv)) <= c_anon.content_digests(),
     "C: anonymous containerd has every private blob")
t.ok(sum(1 for q in ts.requests if q.user == "alice" and q.method == "GET") > alice_gets,
     "C: the mirror fetched tokens as alice")

# ======================================================================================
# D. an expired mirror token is renewed
# ======================================================================================
m5 = new_mirror("m5-expiry", {NS: {"endpoint": regT.url}}, NS)
# with a normal lifetime, the mirror's token is reused across requests
n_tok = ts.count(user=None, ok=True)
ok_all = mget(m5, "/v2/public/base/manifests/1", NS)[0] == 200
for d in blob_digests(imgPub):
    ok_all = mget(m5, "/v2/public/base/blobs/" + d, NS)[0] == 200 and ok_all
t.ok(ok_all, "D: public/base pulled anonymously through a fresh mirror")
t.ok(ts.count(user=None, ok=True) - n_tok <= 1, "D: one token for the 4 upstream requests",
     "%d token requests" % (ts.count(user=None, ok=True) - n_tok))
ts.expires_in, ts.exp_offset = 2, -60     # the registry rejects these 2 s after issue
probe, _ = ts.issue(None, [("repository", "public/e", ["pull"])])
n_tok0 = ts.count(user=None, ok=True)
st, h, b = mget(m5, "/v2/public/e/manifests/1", NS)
t.ok(st == 200 and sha256_digest(b) == pE1["digest"], "D: first pull (public/e:1) -> 200",
     "status %s" % st)
for d in blob_digests(imgE1):
    st, h, b = mget(m5, "/v2/public/e/blobs/" + d, NS)
    t.ok(st == 200 and sha256_digest(b) == d, "D: first pull blob %s.. -> 200" % d[7:19])
n_tok1 = ts.count(user=None, ok=True)
t.ok(n_tok1 > n_tok0, "D: the mirror fetched a token for the first pull")
time.sleep(3)
st, _, _ = http("GET", regT.url + "/v2/public/e/manifests/1",
                headers={"Accept": MANIFEST_ACCEPT, "Authorization": "Bearer " + probe})
t.is_(st, 401, "D: a token of that age is rejected by the registry now")
st, h, b = mget(m5, "/v2/public/e/manifests/2", NS)
t.ok(st == 200 and sha256_digest(b) == pE2["digest"], "D: second pull after expiry -> 200",
     "status %s" % st)
for d in blob_digests(imgE2):
    st, h, b = mget(m5, "/v2/public/e/blobs/" + d, NS)
    t.ok(st == 200 and sha256_digest(b) == d, "D: second pull blob %s.. -> 200" % d[7:19])
t.ok(ts.count(user=None, ok=True) > n_tok1, "D: the mirror requested a new token",
     "%d token requests before, %d after" % (n_tok1, ts.count(user=None, ok=True)))
ts.expires_in, ts.exp_offset = 300, 0

# ======================================================================================
# E. no secret in logs or storage
# ======================================================================================
for m in MIRRORS:
    m.stop()
secrets = sorted(s for s in SECRETS if len(s) >= 8)
t.ok(len(secrets) >= 10, "E: collected %d secrets to look for" % len(secrets))


def scan(paths, secrets):
    """[(path, secret prefix)] for every secret found in the files under paths."""
    hits = []
    for top in paths:
        walk = [(os.path.dirname(top), None, [os.path.basename(top)])] \
            if os.path.isfile(top) else os.walk(top)
        for root, _, files in walk:
            for fn in files:
                p = os.path.join(root, fn)
                with open(p, "rb") as f:
                    data = f.read()
                hits += [(os.path.relpath(p, ws.dir), s[:12] + "...") for s in secrets
                         if s.encode() in data]
    return hits


t.ok(scan([pwfile, dcfg], secrets), "E: the scan finds secrets where they are (control)")
for m in MIRRORS:
    name = os.path.basename(m.dir)
    found = scan([m.log], secrets)
    t.ok(not found, "E: %s: log holds no secret" % name, repr(found))
    found = scan([m.storage], secrets)
    t.ok(not found, "E: %s: storage (index.db included) holds no secret" % name, repr(found))
    t.ok(os.path.exists(os.path.join(m.storage, "index.db")), "E: %s: index.db exists" % name)
t.ok(any(len(m.log_text()) > 1000 for m in MIRRORS), "E: the logs are not empty (debug level)")

t.done()
