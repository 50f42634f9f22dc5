#!/usr/bin/env python3
"""Self-test of the integration harness against the real parts (no mirror involved):
docker-registry (plain, TLS, token auth), skopeo pushes, containerd + ctr, fakeup."""

import json
import os
import socket
import time

import fakeup
import rgmtest
from rgmtest import MANIFEST_ACCEPT, http

t = rgmtest.TAP(timeout=240)
ws = rgmtest.Workspace()
t0 = time.monotonic()

# --- TAP helpers themselves
t.is_(rgmtest.Headers([("Content-Type", "a"), ("X-A", "1"), ("x-a", "2")])["content-type"],
      "a", "Headers are case-insensitive")
t.is_(rgmtest.parse_challenge('Bearer realm="http://x/token",service="s",scope="a:b:pull"'),
      ("bearer", {"realm": "http://x/token", "service": "s", "scope": "a:b:pull"}),
      "parse_challenge")
r = rgmtest.run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
t.ok(r.rc == 3 and "out" in r.out and "err" in r.out, "run() captures output and rc")
try:
    rgmtest.run(["sleep", "5"], timeout=0.3)
    t.ok(False, "run() timeout raises")
except rgmtest.RunError as e:
    t.like(str(e.rc), "timeout", "run() timeout raises")
cp = ws.closed_port()
try:
    socket.create_connection(("127.0.0.1", cp), timeout=2).close()
    t.ok(False, "closed_port refuses connections")
except ConnectionRefusedError:
    t.ok(True, "closed_port refuses connections")

# --- plain registry, 2-layer image and a multi-arch index
reg = rgmtest.Registry(ws)
st, h, _ = http("GET", reg.url + "/v2/")
t.is_(st, 200, "plain registry answers /v2/")

img = rgmtest.make_image(ws, "lib/app:1.0", layers=[3000, 70000])
pushed = rgmtest.push(img, reg)
t.is_(pushed["digest"], img["manifest"], "pushed OCI manifest keeps its digest")
t.is_(pushed["media_type"], rgmtest.MT_OCI_MANIFEST, "OCI media type kept")

st, h, body = http("HEAD", reg.url + "/v2/lib/app/manifests/1.0",
                   headers={"Accept": MANIFEST_ACCEPT})
t.ok(st == 200 and h.get("docker-content-digest") == img["manifest"] and body == b""
     and int(h["content-length"]) == len(img["manifest_bytes"]), "HEAD manifest by tag",
     diag=(st, dict(h)))
st, h, body = http("GET", reg.url + "/v2/lib/app/manifests/" + img["manifest"],
                   headers={"Accept": MANIFEST_ACCEPT})
t.ok(st == 200 and body == img["manifest_bytes"], "GET manifest by digest: same bytes")
layer = img["layers"][1]
st, h, body = http("GET", reg.url + "/v2/lib/app/blobs/" + layer["digest"])
t.ok(st == 200 and rgmtest.sha256_digest(body) == layer["digest"]
     and len(body) == layer["size"], "GET blob: digest and size match")
st, h, body = http("GET", reg.url + "/v2/lib/app/blobs/" + layer["digest"],
                   headers={"Range": "bytes=100-"})
with open(layer["path"], "rb") as f:
    want_tail = f.read()[100:]
t.ok(st == 206 and body == want_tail, "registry honours Range", diag=st)

v2 = rgmtest.push(img, reg, name_tag="lib/app:v2s2", fmt="v2s2")
t.is_(v2["media_type"], rgmtest.MT_DOCKER_MANIFEST, "push --format v2s2 gives schema 2")
t.isnt(v2["digest"], img["manifest"], "schema 2 digest differs from the OCI one")

idx = rgmtest.make_index_image(ws, "lib/multi:2")
pidx = rgmtest.push(idx, reg)
t.ok(pidx["digest"] == idx["manifest"] and pidx["media_type"] == rgmtest.MT_OCI_INDEX,
     "multi-arch index pushed")
arm = idx["images"][1]
st, h, body = http("GET", reg.url + "/v2/lib/multi/manifests/" + arm["manifest"],
                   headers={"Accept": MANIFEST_ACCEPT})
t.ok(st == 200 and json.loads(body)["layers"][0]["digest"] == arm["layers"][0]["digest"],
     "arm64 child manifest served")

# access-log counting
before = reg.count_requests("HEAD", "/lib/app/manifests/1.0")
for _ in range(3):
    http("HEAD", reg.url + "/v2/lib/app/manifests/1.0", headers={"Accept": MANIFEST_ACCEPT})
t.is_(reg.wait_count("HEAD", "/lib/app/manifests/1.0", before + 3) - before, 3,
      "access log counts 3 HEADs")
t.is_(reg.count_requests("GET", "/blobs/" + layer["digest"]), 2,
      "access log counts 2 blob GETs")
t.is_(reg.count_requests("GET", "/blobs/" + layer["digest"], status=206), 1,
      "access log status filter")

# stop / start on the same storage
reg.stop()
t.ok(reg.proc is None, "registry stopped")
try:
    http("GET", reg.url + "/v2/", timeout=2)
    t.ok(False, "stopped registry refuses")
except OSError:
    t.ok(True, "stopped registry refuses")
reg.start()
t.is_(reg.manifest_digest("lib/app", "1.0"), img["manifest"],
      "restarted registry keeps its storage")

# --- TLS registry
ca = rgmtest.make_ca(ws.path("pki"))
cert = rgmtest.make_cert(ca, ws.path("pki"))
treg = rgmtest.Registry(ws, tls=cert, name="tls-registry")
st, _, _ = http("GET", treg.url + "/v2/", ca=ca.cert)
t.is_(st, 200, "TLS registry verified with our CA")
try:
    http("GET", treg.url + "/v2/", timeout=5)
    t.ok(False, "TLS registry rejected without our CA")
except OSError:
    t.ok(True, "TLS registry rejected without our CA")
tp = rgmtest.push(img, treg)
t.is_(tp["digest"], img["manifest"], "push to TLS registry (cert dir)")

# --- containerd: fetch through a hand-written hosts.toml (server = closed port)
ctd = rgmtest.Containerd(ws)
hosts = ws.mkdir("hosts")
rgmtest.write_hosts_toml(hosts, "registry.test", "http://127.0.0.1:%d" % cp, reg.url)
rc, out = ctd.fetch("registry.test/lib/multi:2", hosts, timeout=60)
t.is_(rc, 0, "ctr content fetch via [host] = plain-http registry")
if rc:
    t.diag(out[-2000:])
have = ctd.content_digests()
amd = idx["images"][0]
want = {idx["manifest"], amd["manifest"], amd["config"]} | {l["digest"] for l in amd["layers"]}
t.ok(want <= have, "containerd has index, amd64 manifest, config and layers",
     diag=sorted(want - have))
t.ok(reg.count_requests("HEAD", "/lib/multi/manifests/2?ns=registry.test") >= 1,
     "containerd's resolve carried ?ns=registry.test")

# a missing host in the hosts file means: closed server → the fetch fails (no internet)
rgmtest.write_hosts_toml(hosts, "nowhere.test", "http://127.0.0.1:%d" % cp,
                         "http://127.0.0.1:%d" % cp)
rc, out = ctd.fetch("nowhere.test/lib/multi:2", hosts, timeout=60)
t.ok(rc != 0, "fetch with only closed ports fails")

# --- token auth
users = {"alice": "s3cret"}
ts = rgmtest.TokenServer(ws, users=users)
areg = rgmtest.Registry(ws, auth=("token", ts), name="token-registry")
st, h, _ = http("GET", areg.url + "/v2/")
scheme, params = rgmtest.parse_challenge(h.get("www-authenticate"))
t.ok(st == 401 and scheme == "bearer" and params.get("realm") == ts.realm,
     "token registry challenges with our realm", diag=(st, dict(h)))
priv = rgmtest.make_image(ws, "private/app:1")
rgmtest.push(priv, areg, creds=("alice", "s3cret"))
pub = rgmtest.make_image(ws, "public/app:1")
rgmtest.push(pub, areg, creds=("alice", "s3cret"))
path = "/v2/private/app/manifests/1"
st, _, body = areg.request("GET", path, headers={"Accept": MANIFEST_ACCEPT},
                           creds=("alice", "s3cret"))
t.ok(st == 200 and body == priv["manifest_bytes"], "private/* pulled with a valid user")
st, _, _ = areg.request("GET", path, headers={"Accept": MANIFEST_ACCEPT})
t.is_(st, 401, "private/* refused to anonymous")
st, _, _ = areg.request("GET", path, headers={"Accept": MANIFEST_ACCEPT},
                        creds=("alice", "wrong"))
t.is_(st, 401, "private/* refused with a wrong password")
st, _, _ = areg.request("GET", "/v2/public/app/manifests/1",
                        headers={"Accept": MANIFEST_ACCEPT})
t.is_(st, 200, "public/* pulled anonymously")
t.ok(ts.count(user="alice", ok=True) >= 3 and ts.count(user=None, ok=False) >= 1,
     "token server recorded the requests")
anon = [r for r in ts.requests if r.user is None and r.ok]
t.ok(any(r.scopes == [("repository", "private/app", ["pull"])] and r.granted == []
         for r in anon), "anonymous token for private/* carries no access")

# containerd with --user through the token flow
rgmtest.write_hosts_toml(hosts, "auth.test", "http://127.0.0.1:%d" % cp, areg.url)
rc, out = ctd.fetch("auth.test/private/app:1", hosts, user=("alice", "s3cret"), timeout=60)
t.is_(rc, 0, "ctr fetch private/* with --user through the token server")
if rc:
    t.diag(out[-2000:])
ctd2 = rgmtest.Containerd(ws, name="node2")
rc, out = ctd2.fetch("auth.test/private/app:1", hosts, timeout=60)
t.ok(rc != 0, "second node without credentials is refused")

# short-lived tokens are rejected by the registry once exp has passed
ts2 = rgmtest.TokenServer(ws, users=users, expires_in=1, exp_offset=-61)
ereg = rgmtest.Registry(ws, auth=("token", ts2), name="expiry-registry")
ts2.exp_offset = 0
good, _ = ts2.issue("alice", [("repository", "private/x", ["pull"])])
ts2.exp_offset = -61
tok, _ = ts2.issue("alice", [("repository", "private/x", ["pull"])])
time.sleep(1.1)
st, _, _ = http("GET", ereg.url + "/v2/private/x/tags/list",
                headers={"Authorization": "Bearer " + good})
t.is_(st, 404, "valid token accepted (404 NAME_UNKNOWN, not 401)")
st, _, _ = http("GET", ereg.url + "/v2/private/x/tags/list",
                headers={"Authorization": "Bearer " + tok})
t.is_(st, 401, "expired token rejected (exp_offset=-61)")

# --- htpasswd registry
hreg = rgmtest.Registry(ws, auth=("htpasswd", {"bob": "pw"}), name="basic-registry")
st, h, _ = http("GET", hreg.url + "/v2/")
t.ok(st == 401 and h.get("www-authenticate", "").lower().startswith("basic"),
     "htpasswd registry challenges Basic")
st, _, _ = hreg.request("GET", "/v2/", creds=("bob", "pw"))
t.is_(st, 200, "htpasswd user accepted")

# --- fakeup
up = fakeup.FakeUpstream()
data = os.urandom(200000)
d = up.add_blob(data)
fimg = up.add_image("lib/fake", "1")
st, h, body = http("GET", up.url + "/v2/lib/fake/manifests/1", headers={"Accept": "*/*"})
t.ok(st == 200 and h["docker-content-digest"] == fimg["manifest"]
     and body == fimg["manifest_bytes"], "fakeup serves a manifest by tag")
up.behave("/blobs/" + d, chunked=True, times=1)
st, h, body = http("GET", up.url + "/v2/any/blobs/" + d)
t.ok(st == 200 and h.get("transfer-encoding") == "chunked" and body == data,
     "fakeup chunked body")
up.behave("/blobs/" + d, truncate=1000, times=1)
try:
    st, h, body = http("GET", up.url + "/v2/any/blobs/" + d)
    t.ok(False, "fakeup truncated body detected by the client", diag=len(body))
except Exception as e:    # http.client.IncompleteRead
    t.like(type(e).__name__, "IncompleteRead", "fakeup truncated body detected by the client")
resp = rgmtest.raw("127.0.0.1", up.port,
                   b"GET /v2/x/blobs/%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                   b"Range: bytes=199990-\r\n\r\n" % d.encode())
t.ok(resp.startswith(b"HTTP/1.1 206") and resp.endswith(data[199990:]),
     "fakeup Range bytes=N- (raw socket)")
up.behave("/blobs/" + d, corrupt=True, times=1)
st, h, body = http("GET", up.url + "/v2/any/blobs/" + d)
t.ok(st == 200 and len(body) == len(data) and rgmtest.sha256_digest(body) != d,
     "fakeup corrupt body")
up.behave("/blobs/" + d, status=429, retry_after=7, times=1)
st, h, _ = http("GET", up.url + "/v2/any/blobs/" + d)
t.ok(st == 429 and h.get("retry-after") == "7", "fakeup 429 with Retry-After")
up2 = fakeup.FakeUpstream()
up2.add_blob(data)
up.behave("/blobs/" + d, redirect=up2, times=1)
st, h, _ = http("GET", up.url + "/v2/any/blobs/" + d, headers={"Authorization": "Bearer x"})
t.ok(st == 307 and h["location"].startswith(up2.url), "fakeup 307 to another instance")
st, _, body = http("GET", h["location"])
t.ok(st == 200 and body == data and up2.count("GET", "/blobs/", header="authorization") == 0,
     "redirect target served, saw no Authorization")
up.behave("/blobs/" + d, throttle=100000, times=1)
t1 = time.monotonic()
st, _, body = http("GET", up.url + "/v2/any/blobs/" + d)
el = time.monotonic() - t1
t.ok(st == 200 and body == data and 1.5 <= el <= 5, "fakeup throttle 100 kB/s (%.1fs)" % el)
up.behave("/blobs/", stall=5, times=1)
try:
    http("GET", up.url + "/v2/any/blobs/" + d, timeout=0.5)
    t.ok(False, "fakeup stall")
except OSError:
    t.ok(True, "fakeup stall")
auth_up = fakeup.FakeUpstream(auth=fakeup.bearer_auth("http://127.0.0.1:1/token"))
st, h, _ = http("GET", auth_up.url + "/v2/lib/x/manifests/1")
t.ok(st == 401 and 'scope="repository:lib/x:pull"' in h.get("www-authenticate", ""),
     "fakeup bearer challenge")
t.is_(up.count("GET", "/blobs/" + d), 8, "fakeup records requests")
tls_up = fakeup.FakeUpstream(tls=cert)
st, _, _ = http("GET", tls_up.url + "/v2/", ca=ca.cert)
t.is_(st, 200, "fakeup over TLS")

t.diag("harness self-test took %.1f s" % (time.monotonic() - t0))
t.done()
