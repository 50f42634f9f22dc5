#!/usr/bin/env python3
"""regmirror prewarm: list parsing and usage errors; the pull logic against a scripted fake
"mirror" (fakeup: HEAD/GET, X-Cache, shared blobs, digest checks, token auth, platforms);
then the real thing: three images (one a multi-arch index) in a docker-registry, prewarmed
through a real mirror for linux/amd64 only, pulled by containerd with the upstream stopped,
prewarmed again (all cached, no new upstream blob GETs), and a list with failures."""

import base64
import json
import os
import re
import signal
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import fakeup
import rgmtest
from rgmtest import RGM_BIN

t = rgmtest.TAP(timeout=280)
ws = rgmtest.Workspace()
CLOSED = "http://127.0.0.1:%d" % ws.closed_port()


def prewarm(*args, input=None, timeout=60):
    """Run `regmirror prewarm args...`; returns (rc, stdout, stderr)."""
    p = subprocess.Popen([RGM_BIN, "prewarm"] + list(args), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    try:
        out, err = p.communicate(input=(input or "").encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        return -999, out.decode(errors="replace"), err.decode(errors="replace")
    return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def prewarm_json(*args, input=None, timeout=60):
    """prewarm --json; returns (rc, doc or None, stdout, stderr)."""
    rc, out, err = prewarm("--json", *args, input=input, timeout=timeout)
    try:
        doc = json.loads(out)
    except ValueError:
        doc = None
    return rc, doc, out, err


def by_ref(doc):
    return {i["ref"]: i for i in (doc or {}).get("images", [])}


# ------------------------------------------------------------------------------------
# 1. usage errors (exit 2) and --help

for args, why in [
    ([], "missing FILE"),
    (["--bogus", "-"], "unknown flag"),
    (["--creds", "nocolon", "-"], "--creds without ':'"),
    (["--parallel", "0", "-"], "--parallel 0"),
    (["--parallel", "65", "-"], "--parallel 65"),
    (["--parallel", "x", "-"], "--parallel x"),
    (["--platform", "linux", "-"], "--platform without arch"),
    (["--platform", "linux/amd64,", "-"], "--platform with an empty entry"),
    (["--platform", "linux/amd64/v8/x", "-"], "--platform with 4 parts"),
    (["--platform", "Linux/AMD64", "-"], "--platform uppercase"),
    (["--creds", "a:b", "--docker-config", "/nonexistent", "-"],
     "--creds and --docker-config"),
    (["--mirror", "ftp://x", "-"], "--mirror not http"),
    (["a", "b"], "two files"),
]:
    rc, out, err = prewarm(*args)
    t.ok(rc == 2 and err.strip() != "", "usage error exits 2: " + why, diag=(rc, err))
rc, out, err = prewarm("--help")
t.ok(rc == 0 and "--all-platforms" in out, "--help exits 0 and documents the flags")
rc, out, err = prewarm("/nonexistent/list.txt", "--mirror", CLOSED)
t.ok(rc == 1 and "/nonexistent/list.txt" in err, "unreadable FILE exits 1", diag=(rc, err))

# ------------------------------------------------------------------------------------
# 2. list parsing (nothing listens: every good line fails to connect, which is fine here)

LIST = """# images for the rollout
nginx
   busybox:1.36   # trailing comment

docker.io/library/nginx:latest
index.docker.io/library/nginx
Bad/Name
ghcr.io/org/app:v1@sha256:%s
foo#bar
with space
\tquay.io/a/b:c\t
""" % ("a" * 64)
rc, doc, out, err = prewarm_json("--mirror", CLOSED, "-", input=LIST)
t.is_(rc, 1, "a list with bad lines (and an unreachable mirror) exits 1")
t.ok(doc is not None, "--json prints one JSON document on stdout", diag=out[-2000:])
refs = [i["ref"] for i in (doc or {}).get("images", [])]
good = [r for r in refs if "/" in r and " " not in r and "#" not in r and r[0].islower()]
t.is_(good, ["docker.io/library/nginx:latest", "docker.io/library/busybox:1.36",
             "ghcr.io/org/app:v1@sha256:" + "a" * 64, "quay.io/a/b:c"],
      "references normalised, comments and blanks skipped, duplicates merged")
t.like(err, r'stdin:7: "Bad/Name": \S', "bad line reported as FILE:LINE: \"text\": why")
t.like(err, r'stdin:9: "foo#bar": ', "'#' without a blank before it is not a comment")
t.like(err, r'stdin:10: "with space": ', "a reference with a blank is an error")
bad = [i for i in (doc or {}).get("images", []) if i["error"] and i["error"].startswith("stdin:")]
t.is_(sorted(i["line"] for i in bad), [7, 9, 10], "bad lines are failed entries in the JSON")
t.ok(all(i["status"] == "failed" for i in (doc or {}).get("images", [])),
     "every image failed (mirror unreachable)")
t.is_((doc or {}).get("totals", {}).get("failed"), 7, "totals count the failures")
lst = ws.write("list.txt", "# nothing\n\n")
rc, doc, out, err = prewarm_json("--mirror", CLOSED, lst)
t.ok(rc == 0 and doc and doc["images"] == [], "an empty list exits 0", diag=(rc, out, err))

# ------------------------------------------------------------------------------------
# 3. against a scripted fake mirror (fakeup): the request sequence a node makes

up = fakeup.FakeUpstream(name="fakemirror")
big = os.urandom(300_000)
shared = b"shared-layer-" + os.urandom(1000)
a = up.add_image("library/a", "1", layers=(shared, big))
b = up.add_image("library/b", "2", layers=(shared, b"b-only-" + os.urandom(500)))
lst = ws.write("ab.txt", "a:1\nb:2\n")
rc, doc, out, err = prewarm_json("--mirror", up.url, "--parallel", "2", lst)
imgs = by_ref(doc)
t.is_(rc, 0, "fake mirror: exit 0", ) or t.diag(out + err)
ia, ib = imgs.get("docker.io/library/a:1", {}), imgs.get("docker.io/library/b:2", {})
t.ok(ia.get("digest") == a["manifest"] and ib.get("digest") == b["manifest"],
     "image digests reported")
t.ok(ia.get("status") == "fetched" and ib.get("status") == "fetched",
     "status fetched when the mirror did not answer X-Cache: HIT", diag=(ia, ib))
t.ok(ia.get("layers") == 2 and ia.get("bytes") == len(big) + len(shared) +
     len(up.blobs[a["config"]]), "layers and bytes counted", diag=ia)
for d in [a["config"], b["config"]] + a["layers"] + b["layers"]:
    if up.count("GET", "/blobs/" + d) != 1 or up.count("HEAD", "/blobs/" + d) != 1:
        t.ok(False, "each blob: one HEAD then one GET (shared blob fetched once)",
             diag=(d, up.count("HEAD", "/blobs/" + d), up.count("GET", "/blobs/" + d)))
        break
else:
    t.ok(True, "each blob: one HEAD then one GET (shared blob fetched once)")
reqs = up.requests_for("/v2/")
t.ok(reqs and all(r.path.endswith("?ns=docker.io") for r in reqs),
     "every request carries ?ns=docker.io", diag=[r.path for r in reqs][:5])
mreqs = up.requests_for("/manifests/")
t.ok(mreqs and all("application/vnd.oci.image.index.v1+json" in r.headers.get("accept", "")
                   and "manifest.list.v2+json" in r.headers.get("accept", "") for r in mreqs),
     "manifest requests Accept OCI and Docker types")
distinct = set([a["config"], b["config"]] + a["layers"] + b["layers"])
t.is_((doc or {}).get("totals", {}).get("blobs"), len(distinct), "totals: distinct blobs")

# text mode: one line per image and the table
rc, out, err = prewarm("--mirror", up.url, lst)
t.like(out, r"(?m)^ok docker\.io/library/a:1 %s 2 layers " % re.escape(a["manifest"]),
       "text output: one 'ok' line per finished image")
t.like(out, r"(?m)^IMAGE\s+DIGEST\s+PLATFORMS\s+LAYERS\s+SIZE\s+STATUS\s+TIME",
       "text output ends with the summary table")

# everything already cached
up.requests.clear()
hit = up.behave(lambda m, p, h: True, headers={"X-Cache": "HIT"})
rc, doc, out, err = prewarm_json("--mirror", up.url, lst)
t.ok(rc == 0 and all(i["status"] == "cached" for i in doc["images"]),
     "X-Cache: HIT everywhere: status cached", diag=out)
t.is_(up.count("GET", "/blobs/"), 0, "cached blobs: HEAD only, no GET")
up.clear()

# pinned digest, wrong size, corrupt blob, missing image
rc, doc, out, err = prewarm_json("--mirror", up.url, "-",
                                 input="a@%s\nnothere:1\nb:2\n" % a["manifest"])
imgs = by_ref(doc)
t.is_(imgs.get("docker.io/library/a@" + a["manifest"], {}).get("status"), "fetched",
      "image pinned by digest")
t.ok(rc == 1 and "MANIFEST_UNKNOWN" in (imgs.get("docker.io/library/nothere:1", {})
                                        .get("error") or ""),
     "missing image fails with the registry's error", diag=out)
t.is_(imgs.get("docker.io/library/b:2", {}).get("status"), "fetched", "the others complete")

up.behave("/blobs/" + a["layers"][1], corrupt=True)
rc, doc, out, err = prewarm_json("--mirror", up.url, lst)
imgs = by_ref(doc)
t.ok(rc == 1 and "digest mismatch" in (imgs.get("docker.io/library/a:1", {}).get("error")
                                       or ""), "corrupt blob fails its image", diag=out)
t.is_(imgs.get("docker.io/library/b:2", {}).get("status"), "fetched",
      "an image without the corrupt blob succeeds")
up.clear()
up.behave("/manifests/2", body=b"{}" + b" " * 10, times=1)
rc, doc, out, err = prewarm_json("--mirror", up.url, lst)
t.like(by_ref(doc).get("docker.io/library/b:2", {}).get("error") or "", "digest mismatch",
       "manifest whose body differs from Docker-Content-Digest fails")
up.clear()

# a multi-arch index: only the chosen platform's blobs
arm = up.add_image("library/m", "arm", layers=(b"arm-layer-" + os.urandom(800),), arch="arm64")
amd = up.add_image("library/m", "amd", layers=(b"amd-layer-" + os.urandom(800),))
index = {"schemaVersion": 2, "mediaType": rgmtest.MT_OCI_INDEX, "manifests": [
    {"mediaType": rgmtest.MT_OCI_MANIFEST, "digest": amd["manifest"],
     "size": len(amd["manifest_bytes"]), "platform": {"os": "linux", "architecture": "amd64"}},
    {"mediaType": rgmtest.MT_OCI_MANIFEST, "digest": arm["manifest"],
     "size": len(arm["manifest_bytes"]),
     "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}]}
up.add_manifest("library/m", "multi", index, rgmtest.MT_OCI_INDEX)
up.requests.clear()
rc, doc, out, err = prewarm_json("--mirror", up.url, "--platform", "linux/arm64", "-",
                                 input="m:multi\n")
im = by_ref(doc).get("docker.io/library/m:multi", {})
t.ok(rc == 0 and im.get("platforms") == ["linux/arm64/v8"], "index: linux/arm64 chosen",
     diag=out)
t.ok(up.count(None, arm["layers"][0]) == 2 and up.count(None, amd["layers"][0]) == 0
     and up.count(None, amd["manifest"]) == 0, "index: no request for the other platform")
rc, doc, out, err = prewarm_json("--mirror", up.url, "--all-platforms", "-", input="m:multi\n")
t.is_(by_ref(doc).get("docker.io/library/m:multi", {}).get("platforms"),
      ["linux/amd64", "linux/arm64/v8"], "--all-platforms takes both")
rc, doc, out, err = prewarm_json("--mirror", up.url, "--platform", "linux/s390x", "-",
                                 input="m:multi\n")
t.ok(rc == 1 and "no manifest for platform linux/s390x" in
     (by_ref(doc).get("docker.io/library/m:multi", {}).get("error") or ""),
     "a platform the index lacks fails the image", diag=out)
up.stop()

# ------------------------------------------------------------------------------------
# 4. token auth: the mirror relays a Bearer challenge; prewarm gets a token with --creds


class TokenHandler(BaseHTTPRequestHandler):
    seen = []

    def log_message(self, *a):
        pass

    def do_GET(self):
        auth = self.headers.get("Authorization", "")
        TokenHandler.seen.append((self.path, auth))
        if auth != "Basic " + base64.b64encode(b"alice:s3cret").decode():
            body = b'{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}'
            self.send_response(401)
        else:
            body = b'{"token":"tok-alice","expires_in":300}'
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


tsrv = ThreadingHTTPServer(("127.0.0.1", 0), TokenHandler)
threading.Thread(target=tsrv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
ws.add_cleanup(tsrv.shutdown)
realm = "http://127.0.0.1:%d/token" % tsrv.server_address[1]
aup = fakeup.FakeUpstream(name="authmirror",
                          auth=fakeup.bearer_auth(realm, tokens=("tok-alice",)))
p = aup.add_image("private/app", "1")
rc, doc, out, err = prewarm_json("--mirror", aup.url, "--creds", "alice:s3cret", "-",
                                 input="private/app:1\n")
t.ok(rc == 0 and by_ref(doc).get("docker.io/private/app:1", {}).get("digest") == p["manifest"],
     "Bearer challenge answered with a token from the realm", diag=out + err)
t.ok(TokenHandler.seen and "scope=repository%3Aprivate%2Fapp%3Apull" in TokenHandler.seen[0][0]
     and "service=fake-registry" in TokenHandler.seen[0][0],
     "token request carries service and scope", diag=TokenHandler.seen[:1])
t.is_(len(TokenHandler.seen), 1, "the token is cached per repository (one token request)")
cfg = ws.write("docker-config.json", json.dumps({"auths": {"docker.io": {
    "auth": base64.b64encode(b"alice:s3cret").decode()}}}))
rc, doc, out, err = prewarm_json("--mirror", aup.url, "--docker-config", cfg, "-",
                                 input="private/app:1\n")
t.is_(rc, 0, "credentials from --docker-config")
rc, doc, out, err = prewarm_json("--mirror", aup.url, "--creds", "alice:wrong", "-",
                                 input="private/app:1\n")
t.ok(rc == 1 and "401" in (by_ref(doc).get("docker.io/private/app:1", {}).get("error") or ""),
     "wrong credentials: the image fails with the token endpoint's 401", diag=out)
bup = fakeup.FakeUpstream(name="basicmirror", auth=fakeup.basic_auth({"bob": "pw"}))
bup.add_image("x/y", "1")
rc, doc, out, err = prewarm_json("--mirror", bup.url, "--creds", "bob:pw", "-", input="x/y:1\n")
t.is_(rc, 0, "Basic challenge answered with --creds")
rc, doc, out, err = prewarm_json("--mirror", bup.url, "-", input="x/y:1\n")
t.like(by_ref(doc).get("docker.io/x/y:1", {}).get("error") or "", "credentials",
       "Basic challenge without credentials fails with a reason")
aup.stop()
bup.stop()

# ------------------------------------------------------------------------------------
# 5. the real thing: docker-registry upstream, regmirror serve, containerd

reg = rgmtest.Registry(ws)
i1 = rgmtest.make_image(ws, "library/one:1", layers=[20_000, 400_000])
i2 = rgmtest.make_image(ws, "library/two:2", layers=[30_000])
i3 = rgmtest.make_index_image(ws, "library/multi:3", layers=[10_000, 50_000])
p1 = rgmtest.push(i1, reg)
p2 = rgmtest.push(i2, reg, fmt="v2s2")
p3 = rgmtest.push(i3, reg)
amd_img = [im for im in i3["images"] if im["platform"]["architecture"] == "amd64"][0]
arm_img = [im for im in i3["images"] if im["platform"]["architecture"] == "arm64"][0]
arm_digests = [arm_img["manifest"], arm_img["config"]] + [l["digest"] for l in arm_img["layers"]]
mirror = rgmtest.Mirror(ws, args=["--registry", "docker.io=" + reg.url])
n_push_lines = len(reg.access_log_lines())  # skopeo's own requests come first
lst = ws.write("rollout.txt", "# rollout\none:1\ndocker.io/library/two:2\n"
               "library/multi:3  # multi-arch\n")
rc, doc, out, err = prewarm_json("--mirror", mirror.url, "--platform", "linux/amd64", lst,
                                 timeout=120)
imgs = by_ref(doc)
t.is_(rc, 0, "prewarm through the mirror exits 0") or t.diag(out[-3000:] + err[-2000:] +
                                                             mirror.log_text()[-3000:])
t.is_([imgs.get(r, {}).get("digest") for r in ("docker.io/library/one:1",
                                                "docker.io/library/two:2",
                                                "docker.io/library/multi:3")],
      [p1["digest"], p2["digest"], p3["digest"]], "digests as the upstream serves them")
t.is_(imgs.get("docker.io/library/multi:3", {}).get("platforms"), ["linux/amd64"],
      "multi-arch image: linux/amd64 only")
t.ok(all(i.get("status") == "fetched" for i in imgs.values()), "first run: status fetched")
reg.wait_count("GET", "/manifests/", 1)
logged = [a.path for a in reg.access_log_lines()[n_push_lines:]]
t.ok(not [p for p in logged if any(d in p for d in arm_digests)],
     "the upstream served nothing of the arm64 image",
     diag=[p for p in logged if any(d in p for d in arm_digests)])
amd_blobs = ([i1["config"]] + [l["digest"] for l in i1["layers"]] +
             [amd_img["config"]] + [l["digest"] for l in amd_img["layers"]])
t.ok(all(reg.wait_count("GET", "/blobs/" + d, 1) >= 1 for d in amd_blobs),
     "the upstream served every amd64 blob")
blob_gets = reg.count_requests("GET", "/blobs/")

# containerd pulls everything through the mirror with the upstream gone
reg.stop()
hosts_dir = ws.mkdir("certs.d")
r = rgmtest.run([RGM_BIN, "hosts", "--mirror", mirror.url, "--registry", "docker.io",
                 "--out", hosts_dir, "--server-override", CLOSED], check=False)
t.is_(r.rc, 0, "regmirror hosts writes hosts.toml") or t.diag(r.out)
ctd = rgmtest.Containerd(ws)
for ref in ("docker.io/library/one:1", "docker.io/library/two:2", "docker.io/library/multi:3"):
    rc2, o2 = ctd.fetch(ref, hosts_dir, timeout=90, extra=["--platform", "linux/amd64"])
    t.ok(rc2 == 0, "containerd pulls %s from the mirror alone" % ref, diag=o2[-2000:])
have = ctd.content_digests()
t.ok(set(amd_blobs) <= have, "containerd holds every amd64 blob", diag=set(amd_blobs) - have)

# second prewarm: everything cached, no upstream traffic needed
reg.start()
before = reg.count_requests("GET", "/blobs/")
rc, doc, out, err = prewarm_json("--mirror", mirror.url, "--platform", "linux/amd64", lst,
                                 timeout=120)
t.ok(rc == 0 and doc and all(i["status"] == "cached" for i in doc["images"]),
     "second prewarm: every image cached", diag=out[-3000:])
t.is_(reg.count_requests("GET", "/blobs/") - before, 0, "second prewarm: no upstream blob GET")
t.is_((doc or {}).get("totals", {}).get("fetched_bytes"), 0, "second prewarm: 0 bytes fetched")

# a list with a bad line and a missing image
bad_lst = ws.write("bad.txt", "one:1\nNOT VALID\nlibrary/missing:1\ntwo:2\n")
rc, out, err = prewarm("--mirror", mirror.url, "--platform", "linux/amd64", bad_lst,
                       timeout=120)
t.is_(rc, 1, "a bad line and a missing image: exit 1")
t.like(err, re.escape(bad_lst) + r':2: "NOT VALID": ', "the bad line is named")
t.like(out, r"(?m)^FAIL docker\.io/library/missing:1: .*(404|UNKNOWN)",
       "the missing image is named with its reason")
t.like(out, r"(?m)^ok docker\.io/library/one:1 ", "the others are prewarmed (one)")
t.like(out, r"(?m)^ok docker\.io/library/two:2 ", "the others are prewarmed (two)")
t.done()
