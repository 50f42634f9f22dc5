#!/usr/bin/env python3
"""31-auth-faults: Authorization never crosses an origin change on a redirect (issue 5).

A real registry never redirects to another origin on loopback, so the upstream here is a
fakeup FakeUpstream with auth that answers blob GETs with 307 to a second FakeUpstream
(another origin: other port).  Three cases: the mirror's own Basic credentials
(password_file), the client's Basic credentials relayed, and a Bearer token the mirror got
from the rgmtest TokenServer.  The redirect target must never see an Authorization header;
the client must still get the right bytes.  No secret in the mirror's log either.
"""
import base64
import os

import fakeup
import rgmtest
from rgmtest import http, sha256_digest

t = rgmtest.TAP(timeout=120)
ws = rgmtest.Workspace()

PW = "alice-" + os.urandom(8).hex()
BASIC = "Basic " + base64.b64encode(("alice:" + PW).encode()).decode()
SECRETS = {PW, BASIC[6:]}
NS = "fake.test"


def blob_data(tag):
    return (tag.encode() + b"-") * 1000 + os.urandom(50_000)


def check_redirect_case(label, upstream, cdn, mirror, client_auth):
    data = blob_data(label)
    d = upstream.add_blob(data)
    cdn.add_blob(data)
    upstream.behave("/blobs/" + d, redirect=cdn)
    h = {"Authorization": client_auth} if client_auth else {}
    st, rh, body = http("GET", "%s/v2/lib/app/blobs/%s?ns=%s" % (mirror.url, d, NS), headers=h)
    t.is_(st, 200, "%s: blob through the redirect -> 200" % label)
    t.is_(sha256_digest(body), d, "%s: right bytes" % label)
    ups = upstream.requests_for("/blobs/" + d, method="GET")
    t.ok(any("authorization" in r.headers for r in ups),
         "%s: the upstream itself got Authorization (the case is real)" % label,
         repr([sorted(r.headers) for r in ups]))
    hops = cdn.requests_for("/blobs/" + d)
    t.ok(len(hops) >= 1, "%s: the mirror followed the redirect to the other origin" % label)
    leaked = [r.headers.get("authorization", "")[:16] for r in hops
              if "authorization" in r.headers]
    t.ok(not leaked, "%s: no Authorization sent to the other origin" % label, repr(leaked))
    # cached now: a second client with the same credentials is served without a new fetch
    n = cdn.count("GET", "/blobs/" + d)
    st, rh, body = http("GET", "%s/v2/lib/app/blobs/%s?ns=%s" % (mirror.url, d, NS), headers=h)
    t.ok(st == 200 and sha256_digest(body) == d, "%s: second GET from cache" % label)
    t.is_(cdn.count("GET", "/blobs/" + d), n, "%s: no second fetch from the other origin" % label)


# 1. mirror-held Basic credentials
up1 = fakeup.FakeUpstream(auth=fakeup.basic_auth({"alice": PW}), name="up-basic")
cdn1 = fakeup.FakeUpstream(name="cdn1")
pwfile = ws.write("pw", PW + "\n", mode=0o600)
m1 = rgmtest.Mirror(ws, name="m-own-basic", config={
    "default_registry": NS, "log_level": "debug",
    "registries": {NS: {"endpoint": up1.url, "credentials": {
        "username": "alice", "password_file": pwfile}}}})
check_redirect_case("own Basic", up1, cdn1, m1, None)

# 2. the client's Basic credentials, relayed by a mirror that has none
cdn2 = fakeup.FakeUpstream(name="cdn2")
m2 = rgmtest.Mirror(ws, name="m-client-basic", config={
    "default_registry": NS, "log_level": "debug",
    "registries": {NS: {"endpoint": up1.url}}})
st, h, _ = http("GET", "%s/v2/lib/app/blobs/sha256:%s?ns=%s" % (m2.url, "0" * 64, NS))
t.is_(st, 401, "client Basic: an anonymous client is challenged")
check_redirect_case("client Basic", up1, cdn2, m2, BASIC)

# 3. a Bearer token the mirror fetched from the token server
ts = rgmtest.TokenServer(ws, users={"alice": PW})
issued = set()
_issue = ts.issue


def _rec(user, scopes, service=None):
    tok, access = _issue(user, scopes, service)
    issued.add(tok)
    SECRETS.add(tok)
    return tok, access


ts.issue = _rec


def bearer_check(h):
    got = h.headers.get("Authorization", "")
    if got.startswith("Bearer ") and got[7:] in issued:
        return True
    return 'Bearer realm="%s",service="%s"' % (ts.realm, ts.service)


up3 = fakeup.FakeUpstream(auth=bearer_check, name="up-bearer")
cdn3 = fakeup.FakeUpstream(name="cdn3")
m3 = rgmtest.Mirror(ws, name="m-bearer", config={
    "default_registry": NS, "log_level": "debug",
    "registries": {NS: {"endpoint": up3.url}}})
check_redirect_case("own Bearer", up3, cdn3, m3, None)
t.ok(ts.count(ok=True) >= 1, "own Bearer: the mirror fetched a token")

for m in (m1, m2, m3):
    m.stop()
    log = m.log_text()
    found = [s[:10] + "..." for s in SECRETS if s in log]
    t.ok(not found, "%s: log holds no secret" % os.path.basename(m.dir), repr(found))

t.done()
