#!/usr/bin/env python3
"""33-credhelpers: docker credential helpers as the mirror's own identity (issue 15).
Scripted helpers (sh) are the protocol boundary; upstreams are real docker-registry
instances, one with htpasswd (Basic) and one with token auth (the rgmtest TokenServer).

  A  a helper supplies credentials for a private (htpasswd) registry: anonymous clients pull
     through the mirror; stdin is the registry's host:port; the helper runs once across 50
     requests inside its lifetime; content is recorded public (the node's to share).
  B  rotation: the registry restarts with a new htpasswd and the helper prints the new
     password; the next pull gets a 401, runs the helper again and succeeds (no restart).
  C  bad helpers on a token registry: "credentials not found" is anonymous (no WARN); a hang
     is killed at its timeout and the request completes anonymously; garbage JSON gives a
     WARN and goes on anonymously; stderr is logged at WARN, one line; errors are counted in
     regmirror_credential_errors_total; no secret printed by a helper reaches the log.
  D  a docker config.json with credHelpers for one host and credsStore for the rest: each
     helper is asked for its own host only.
  E  private: true: content fetched with the mirror's identity still needs the client's.
  F  identity tokens: a helper answering Username "<token>" gives an OAuth2 refresh token; the
     mirror POSTs the refresh_token grant to the realm (form: grant_type, refresh_token,
     service, scope, client_id=regmirror) and gets the private image; a token the realm no
     longer takes (400 invalid_grant) runs the helper again once; a bad one is refused with a
     WARN; no refresh token ever reaches the log.
"""
import json
import os
import re
import sqlite3
import time

import rgmtest
from rgmtest import MANIFEST_ACCEPT, http, sha256_digest

t = rgmtest.TAP(timeout=240)
ws = rgmtest.Workspace()
MIRRORS = []
SECRETS = set()
HDIR = ws.mkdir("helpers")


def helper(name, body):
    """An executable sh script docker-credential-NAME in HDIR; returns its path."""
    path = os.path.join(HDIR, "docker-credential-" + name)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body + "\n")
    os.chmod(path, 0o755)
    return path


def runs(name):
    """The stdin of every run of helper NAME so far (one line each)."""
    try:
        with open(os.path.join(HDIR, name + ".runs")) as f:
            return [line.rstrip("\n") for line in f]
    except FileNotFoundError:
        return []


def good_helper(name, user, pwfile, stderr=""):
    return helper(name, (
        '[ "$1" = get ] || exit 2\n'
        'host=$(cat)\n'
        'echo "$host" >> %s/%s.runs\n'
        '%s'
        'printf \'{"ServerURL":"%%s","Username":"%s","Secret":"%%s"}\\n\' "$host" "$(cat %s)"'
    ) % (HDIR, name, stderr, user, pwfile))


def new_mirror(name, registries, default, extra=None, env=None):
    cfg = {"default_registry": default, "registries": registries, "log_level": "debug"}
    cfg.update(extra or {})
    m = rgmtest.Mirror(ws, config=cfg, name=name, env=env)
    MIRRORS.append(m)
    return m


def mget(m, path, ns, auth=None, method="GET"):
    h = {"Accept": MANIFEST_ACCEPT}
    if auth:
        h["Authorization"] = auth
    return http(method, "%s%s?ns=%s" % (m.url, path, ns), headers=h)


def origins(mirror, digest):
    con = sqlite3.connect("file:%s?mode=ro" % os.path.join(mirror.storage, "index.db"),
                          uri=True, timeout=5)
    try:
        rows = con.execute("SELECT registry, repository, is_public FROM origins WHERE digest = ?",
                           (digest,)).fetchall()
    finally:
        con.close()
    return {(r[0], r[1]): r[2] for r in rows}


def metric(m, name, **labels):
    st, _, body = http("GET", m.url + "/metrics")
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in body.decode().splitlines():
        mm = re.match(r"^%s\{(.*)\} (\d+)$" % re.escape(name), line)
        if mm and ",".join(sorted(mm.group(1).split(","))) == want:
            return int(mm.group(2))
    return 0


# ======================================================================================
# A. a helper for a private htpasswd registry
# ======================================================================================
PW1 = "pw-one-" + os.urandom(6).hex()
PW2 = "pw-two-" + os.urandom(6).hex()
SECRETS.update([PW1, PW2])
regB = rgmtest.Registry(ws, auth=("htpasswd", {"alice": PW1}), name="reg-basic")
img = rgmtest.make_image(ws, "team/app:1", layers=[10_000, 60_000])
pushed = rgmtest.push(img, regB, creds=("alice", PW1))
NS = regB.host                               # "127.0.0.1:PORT": what docker would send
pwfile = ws.write("pw.current", PW1)
hpath = good_helper("good", "alice", pwfile, stderr='echo "helper note: fine" >&2; echo "second line" >&2\n')
m1 = new_mirror("m1-helper", {NS: {"endpoint": regB.url, "tag_ttl": "0",
                                   "credentials": {"helper": hpath, "lifetime": "5m",
                                                   "timeout": "5s"}}}, NS)

st, h, body = mget(m1, "/v2/team/app/manifests/1", NS)
t.ok(st == 200 and sha256_digest(body) == pushed["digest"],
     "A: anonymous manifest through the mirror with the helper's identity -> 200", "status %s" % st)
for d in [img["config"]] + [l["digest"] for l in img["layers"]]:
    st, h, body = mget(m1, "/v2/team/app/blobs/" + d, NS)
    t.ok(st == 200 and sha256_digest(body) == d, "A: anonymous blob %s.. -> 200" % d[7:19],
         "status %s" % st)
t.is_(runs("good"), [NS], "A: the helper ran once, with the registry's host:port on stdin")
t.is_(origins(m1, img["layers"][0]["digest"]).get((NS, "team/app")), 1,
      "A: content fetched with the mirror's identity is recorded public (node-level rule)")
heads0 = regB.count_requests("HEAD", "/manifests/1")
ok = 0
for i in range(50):
    st, h, body = mget(m1, "/v2/team/app/manifests/1", NS)
    ok += st == 200
t.is_(ok, 50, "A: 50 more pulls of the tag (tag_ttl 0: each revalidated upstream) -> 200")
t.ok(regB.count_requests("HEAD", "/manifests/1") >= heads0 + 50,
     "A: each one went upstream with credentials")
t.is_(len(runs("good")), 1, "A: the helper still ran only once inside its lifetime")
log = m1.log_text()
t.like(log, r'level=warn mod=credhelper msg="helper \S+ for \\"%s\\": stderr: \\"helper note: fine\\""'
       % re.escape(NS), "A: the helper's stderr is logged at WARN")
t.ok("second line" not in log, "A: stderr cut to one line")
t.like(log, r"level=info mod=credhelper .*exit 0 in \d+ ms, username \\\"alice\\\", secret <redacted>",
       "A: the run is logged, the secret redacted")

# ======================================================================================
# B. rotation
# ======================================================================================
regB.stop()
regB.auth = ("htpasswd", {"alice": PW2})
regB.start()
if regB.host != NS:
    t.skip("B: rotation", "the registry came back on another port")
else:
    with open(pwfile, "w") as f:
        f.write(PW2)
    st, h, body = mget(m1, "/v2/team/app/manifests/1", NS)
    t.ok(st == 200 and sha256_digest(body) == pushed["digest"],
         "B: after the password changed, the next pull succeeds", "status %s" % st)
    t.is_(len(runs("good")), 2, "B: the 401 forced exactly one fresh helper run")
    img2 = rgmtest.make_image(ws, "team/app:2", layers=[30_000])
    p2 = rgmtest.push(img2, regB, creds=("alice", PW2))
    st, h, body = mget(m1, "/v2/team/app/blobs/" + img2["layers"][0]["digest"], NS)
    t.ok(st == 200 and sha256_digest(body) == img2["layers"][0]["digest"],
         "B: a new blob with the new password, no mirror restart", "status %s" % st)
    t.is_(len(runs("good")), 2, "B: the new answer is kept (no third run)")
    t.ok(m1.proc.alive(), "B: the mirror is still the same process")

# ======================================================================================
# C. bad helpers, on a token registry where public/* is anonymous
# ======================================================================================
ts = rgmtest.TokenServer(ws, users={"alice": PW1})
regT = rgmtest.Registry(ws, auth=("token", ts), name="reg-token")
pub = rgmtest.make_image(ws, "public/app:1", layers=[5_000])
ppub = rgmtest.push(pub, regT, creds=("alice", PW1))
priv = rgmtest.make_image(ws, "private/app:1", layers=[6_000])
ppriv = rgmtest.push(priv, regT, creds=("alice", PW1))
NT = regT.host
GARBAGE_SECRET = "garbage-secret-" + os.urandom(6).hex()
SECRETS.add(GARBAGE_SECRET)

bad = {
    "notfound": helper("notfound", 'cat >/dev/null; echo run >> %s/notfound.runs\n'
                                   'echo "credentials not found in native keychain"; exit 1' % HDIR),
    "hang": helper("hang", 'echo run >> %s/hang.runs; sleep 30' % HDIR),
    "garbage": helper("garbage", 'cat >/dev/null; echo run >> %s/garbage.runs\n'
                                 'echo "{Username: alice, Secret: %s"' % (HDIR, GARBAGE_SECRET)),
    "fails": helper("fails", 'cat >/dev/null; echo "boom: no session" >&2; echo "%s"; exit 7'
                    % GARBAGE_SECRET),
}
for name, path in bad.items():
    m = new_mirror("m-" + name, {NT: {"endpoint": regT.url,
                                      "credentials": {"helper": path, "timeout": "1s"}}}, NT)
    t0 = time.monotonic()
    st, h, body = mget(m, "/v2/public/app/manifests/1", NT)
    took = time.monotonic() - t0
    t.ok(st == 200 and sha256_digest(body) == ppub["digest"],
         "C %s: public content still works anonymously" % name, "status %s" % st)
    st, h, body = mget(m, "/v2/private/app/manifests/1", NT)
    t.is_(st, 401, "C %s: private content -> 401 (anonymous), not a hang or a loop" % name)
    log = m.log_text()
    errors = metric(m, "regmirror_credential_errors_total", source="helper/" + path,
                    registry=NT)
    if name == "notfound":
        t.ok("level=warn mod=credhelper" not in log, "C notfound: no WARN (it means anonymous)")
        t.like(log, r"credentials not found in \d+ ms; anonymous", "C notfound: logged at INFO")
        t.is_(errors, 0, "C notfound: not an error")
    elif name == "hang":
        t.ok(took < 4, "C hang: the request completed after the 1s timeout (%.1fs)" % took)
        t.like(log, r"level=warn mod=credhelper msg=\"helper \S+hang for \\\"%s\\\": killed after \d+ ms \(timeout\)"
               % re.escape(NT), "C hang: the kill is logged at WARN, naming the helper")
        t.ok(errors >= 1, "C hang: counted in regmirror_credential_errors_total (%d)" % errors)
    elif name == "garbage":
        t.like(log, r"level=warn mod=credhelper msg=\"helper \S+garbage .*not a credentials JSON object",
               "C garbage: WARN naming the helper and the reason")
        t.ok(errors >= 1, "C garbage: counted (%d)" % errors)
    else:
        t.like(log, r"level=warn mod=credhelper msg=\"helper \S+fails .*stderr: \\\"boom: no session\\\"",
               "C fails: its stderr at WARN")
        t.like(log, r"exit status 7", "C fails: the exit status in the WARN")
        t.ok(errors >= 1, "C fails: counted (%d)" % errors)
    t.ok(len(runs(name)) >= 1 or name == "fails", "C %s: the helper was run" % name)

# ======================================================================================
# D. config.json: credHelpers for one host, credsStore for the rest
# ======================================================================================
store_pw = ws.write("store.pw", open(pwfile).read())   # regB's current password
good_helper("store", "alice", store_pw)
NB2 = "localhost:%d" % regB.port                  # the Basic registry under another name
dcfg = ws.write("docker-config.json", json.dumps({
    "auths": {NT: {"auth": "bm90OnVzZWQ="}},
    "credHelpers": {NT: "one"},
    "credsStore": "store"}))
pwone = ws.write("pw.one", PW1)
good_helper("one", "alice", pwone)
md = new_mirror("m-dockercfg", {NT: {"endpoint": regT.url, "credentials": {"docker_config": dcfg}},
                                NB2: {"endpoint": regB.url, "credentials": {"docker_config": dcfg}}},
                NT, env={"PATH": HDIR + ":" + os.environ.get("PATH", "")})
st, h, body = mget(md, "/v2/private/app/manifests/1", NT)
t.ok(st == 200 and sha256_digest(body) == ppriv["digest"],
     "D: credHelpers' helper gives the token registry's identity", "status %s" % st)
st, h, body = mget(md, "/v2/team/app/manifests/1", NB2)
t.ok(st == 200 and sha256_digest(body) == pushed["digest"],
     "D: credsStore's helper gives the other registry's identity", "status %s" % st)
t.is_(runs("one"), [NT], "D: credHelpers' helper asked for its own host only")
t.is_(runs("store"), [NB2], "D: credsStore's helper asked for the rest only")

# ======================================================================================
# E. private: true
# ======================================================================================
mp = new_mirror("m-private", {NT: {"endpoint": regT.url, "private": True,
                                   "credentials": {"helper": hpath.replace("good", "one")}}}, NT)
st, h, body = mget(mp, "/v2/private/app/manifests/1", NT)
t.is_(st, 401, "E: private: true, a client without credentials -> 401")
t.like(h.get("www-authenticate") or "", r"^Bearer realm=", "E: ... with the upstream's challenge")
tok = ts.issue("alice", [("repository", "private/app", ["pull"])])[0]
SECRETS.add(tok)
st, h, body = mget(mp, "/v2/private/app/manifests/1", NT, auth="Bearer " + tok)
t.ok(st == 200 and sha256_digest(body) == ppriv["digest"],
     "E: a client that proves its access -> 200", "status %s" % st)
L = priv["layers"][0]["digest"]
st, h, body = mget(mp, "/v2/private/app/blobs/" + L, NT, auth="Bearer " + tok)
t.ok(st == 200 and sha256_digest(body) == L, "E: its blob -> 200", "status %s" % st)
t.is_(origins(mp, L).get((NT, "private/app")), 0,
      "E: content fetched with the mirror's identity is recorded private")
st, h, body = mget(mp, "/v2/private/app/blobs/" + L, NT)
t.ok(st == 401 and sha256_digest(body) != L, "E: cached, but anonymous still -> 401",
     "status %s" % st)
st, h, body = mget(mp, "/v2/public/app/manifests/1", NT)
t.is_(st, 200, "E: public content still works anonymously")

# ======================================================================================
# F. identity tokens (Username "<token>"): the OAuth2 refresh_token grant
# ======================================================================================
RT1 = "rt-one+/" + os.urandom(8).hex()       # '+' and '/' must survive the form encoding
RT2 = "rt-two-" + os.urandom(8).hex()
RTBAD = "rt-bad-" + os.urandom(8).hex()
SECRETS.update([RT1, RT2, RTBAD])
ts.refresh_tokens[RT1] = "alice"
rtfile = ws.write("rt.current", RT1)


def idtoken_helper(name, tokfile):
    return helper(name, (
        '[ "$1" = get ] || exit 2\n'
        'host=$(cat)\n'
        'echo "$host" >> %s/%s.runs\n'
        'printf \'{"ServerURL":"%%s","Username":"<token>","Secret":"%%s"}\\n\' "$host" "$(cat %s)"'
    ) % (HDIR, name, tokfile))


third = rgmtest.make_image(ws, "private/third:1", layers=[7_000])
pthird = rgmtest.push(third, regT, creds=("alice", PW1))
mi = new_mirror("m-idtoken", {NT: {"endpoint": regT.url,
                                   "credentials": {"helper": idtoken_helper("idtok", rtfile),
                                                   "lifetime": "5m"}}}, NT)
n_forms, n_reqs = len(ts.forms), len(ts.requests)
st, h, body = mget(mi, "/v2/private/app/manifests/1", NT)
t.ok(st == 200 and sha256_digest(body) == ppriv["digest"],
     "F: an anonymous client gets the private image with the helper's identity token",
     "status %s" % st)
L = priv["layers"][0]["digest"]
st, h, body = mget(mi, "/v2/private/app/blobs/" + L, NT)
t.ok(st == 200 and sha256_digest(body) == L, "F: ... and its blob", "status %s" % st)
t.is_(runs("idtok"), [NT], "F: the helper ran once, with the registry's host:port")
forms = [f for f in ts.forms[n_forms:] if f.get("grant_type") == "refresh_token"]
t.ok(len(forms) >= 1, "F: the token came from a POST with grant_type=refresh_token (%d)"
     % len(forms))
f = forms[0] if forms else {}
t.is_(f.get("refresh_token"), RT1, "F: the POST carried the helper's Secret as refresh_token")
t.is_((f.get("client_id"), f.get("service"), f.get("scope")),
      ("regmirror", ts.service, "repository:private/app:pull"),
      "F: ... with client_id=regmirror, the challenge's service and the pull scope")
reqs = ts.requests[n_reqs:]
t.ok(reqs and all(r.method == "POST" and r.user == "alice" and r.ok for r in reqs),
     "F: every token request was the POST, granted as the token's user",
     "requests: %r" % [(r.method, r.user, r.status) for r in reqs])
t.is_(origins(mi, L).get((NT, "private/app")), 1,
      "F: content fetched with the identity token is the node's (recorded public)")

# Rotation: the realm stops taking RT1 and the helper now prints RT2. A repository whose token
# is not cached yet makes the mirror POST the kept RT1: 400, one fresh run, RT2, 200.
ts.refresh_tokens = {RT2: "alice"}
with open(rtfile, "w") as fh:
    fh.write(RT2)
n_forms = len(ts.forms)
st, h, body = mget(mi, "/v2/private/third/manifests/1", NT)
t.ok(st == 200 and sha256_digest(body) == pthird["digest"],
     "F: after the realm refused the kept identity token, the next pull succeeds",
     "status %s" % st)
t.is_(len(runs("idtok")), 2, "F: the refusal (400 invalid_grant) forced exactly one fresh run")
t.is_([f.get("refresh_token") for f in ts.forms[n_forms:]], [RT1, RT2],
      "F: the kept token was tried once, then the fresh one")

rtbad = ws.write("rt.bad", RTBAD)
mb = new_mirror("m-idtoken-bad", {NT: {"endpoint": regT.url,
                                       "credentials": {"helper": idtoken_helper("idbad", rtbad)}}},
                NT)
st, h, body = mget(mb, "/v2/private/app/manifests/1", NT)
t.is_(st, 401, "F: an identity token the realm refuses: the private image -> 401, no loop")
t.like(h.get("www-authenticate") or "", r"^Bearer realm=", "F: ... with the upstream's challenge")
t.is_(len(runs("idbad")), 1, "F: a fresh answer that is refused is not asked again")
t.like(mb.log_text(), r"level=warn mod=upstream msg=\"registry %s: token request \(OAuth2 "
       r"refresh_token grant\) failed \(status 400" % re.escape(NT),
       "F: the refusal is a WARN naming the registry and the grant")
t.like(mi.log_text(), r'mod=credhelper .*username \\"<token>\\" \(identity token\), '
       r'secret <redacted>', "F: the helper run is logged as an identity token, secret redacted")

# ======================================================================================
# no secret in any log
# ======================================================================================
for m in MIRRORS:
    text = m.log_text()
    leaked = [s for s in SECRETS if s in text]
    t.ok(not leaked, "no secret in %s's log" % os.path.basename(m.dir),
         "leaked: %d secret(s)" % len(leaked))

t.done()
