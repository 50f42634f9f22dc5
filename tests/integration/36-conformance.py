#!/usr/bin/env python3
"""The OCI distribution-spec conformance suite's pull workflow (conformance/01_pull_test.go at
v1.1.1), each of its checks run read-only against the mirror on a cold cache, then warm, with
a real docker-registry upstream seeded the way the suite seeds it (two config blobs, a layer,
manifest[0] by tag, manifest[1] by digest, a config descriptor with `data` and an unknown
field). Then digest invariance: every manifest the mirror serves hashes to the upstream's
digest, byte for byte (Docker v2, Docker manifest list, OCI manifest, OCI index, an artifact
manifest with an empty config, artifactType and subject; written with odd whitespace and key
order so that any re-serialisation would show), zstd and +zstd layers are ordinary blobs, and
schema 1 manifests (fakeup) get the documented refusal and are never cached."""
import base64
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import time
import urllib.parse

import fakeup
import rgmtest
from rgmtest import MT_OCI_INDEX, MT_OCI_MANIFEST, MT_DOCKER_LIST, MT_DOCKER_MANIFEST, \
    sha256_digest

t = rgmtest.TAP(timeout=200)
ws = rgmtest.Workspace()

# distribution-spec v1.1 "Error Codes"; the suite's own list adds MANIFEST_UNVERIFIED and
# TAG_INVALID (the v1.0 names), which the mirror never answers
SPEC_CODES = {"BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID",
              "MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "NAME_INVALID",
              "NAME_UNKNOWN", "SIZE_INVALID", "UNAUTHORIZED", "DENIED", "UNSUPPORTED",
              "TOOMANYREQUESTS"}
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_EMPTY = "application/vnd.oci.empty.v1+json"


def err_code(body):
    try:
        return json.loads(body)["errors"][0]["code"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def err_message(body):
    try:
        return json.loads(body)["errors"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


# ------------------------------------------------------------------------------------
# pushing to docker-registry the way the suite does: POST an upload, PUT it with ?digest=

reg = rgmtest.Registry(ws)


def put_blob(repo, data):
    d = sha256_digest(data)
    st, h, b = rgmtest.http("POST", reg.url + "/v2/%s/blobs/uploads/" % repo)
    if st != 202:
        raise RuntimeError("POST upload: %d %r" % (st, b[:200]))
    loc = urllib.parse.urljoin(reg.url + "/", h["location"])
    loc += ("&" if "?" in loc else "?") + "digest=" + urllib.parse.quote(d)
    st, h, b = rgmtest.http("PUT", loc, body=data, headers={
        "Content-Type": "application/octet-stream", "Content-Length": str(len(data))})
    if not 200 <= st < 300:
        raise RuntimeError("PUT blob: %d %r" % (st, b[:200]))
    return d


def put_manifest(repo, ref, data, mt):
    st, h, b = rgmtest.http("PUT", reg.url + "/v2/%s/manifests/%s" % (repo, ref), body=data,
                            headers={"Content-Type": mt})
    if not 200 <= st < 300:
        raise RuntimeError("PUT manifest %s:%s: %d %r" % (repo, ref, st, b[:300]))
    return h.get("docker-content-digest")


def small_targz(name, content):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        ti = tarfile.TarInfo(name)
        ti.size = len(content)
        ti.mtime = 0
        tf.addfile(ti, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0)


# ------------------------------------------------------------------------------------
# the suite's seed: two configs (a random author each), one layer, two manifests

NAME = "conformance/pull"
configs = []
for i in range(2):
    cfg = {"architecture": "amd64", "os": "linux", "author": os.urandom(8).hex(),
           "rootfs": {"type": "layers", "diff_ids": []}}
    configs.append(json.dumps(cfg, indent="\t").encode())
layer = small_targz("hello.txt", b"hello from the conformance seed\n")
manifests = []
for i in range(2):
    m = {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
         "config": {"mediaType": MT_OCI_CONFIG, "digest": sha256_digest(configs[i]),
                    "size": len(configs[i]),
                    "data": base64.b64encode(configs[i]).decode(),
                    "newUnspecifiedField": base64.b64encode(b"hello world").decode()},
         "layers": [{"mediaType": MT_OCI_LAYER, "digest": sha256_digest(layer),
                     "size": len(layer)}]}
    manifests.append(json.dumps(m, indent="\t").encode())
TAG = "tagtest0"
for c in configs:
    put_blob(NAME, c)
put_blob(NAME, layer)
put_manifest(NAME, TAG, manifests[0], MT_OCI_MANIFEST)
put_manifest(NAME, sha256_digest(manifests[1]), manifests[1], MT_OCI_MANIFEST)
M0, M1 = sha256_digest(manifests[0]), sha256_digest(manifests[1])
C0 = sha256_digest(configs[0])
DUMMY = sha256_digest(b"hello world")      # the suite's dummyDigest: no such blob
NONEXISTENT = ".INVALID_MANIFEST_NAME"       # the suite's nonexistentManifest

# fakeup for schema 1 (docker-registry 2.8 no longer takes schema 1 pushes)
up = fakeup.FakeUpstream(name="s1")

mir = rgmtest.Mirror(ws, config={
    "default_registry": "reg.test",
    "upstream_timeout": "5s",
    "registries": {
        "reg.test": {"endpoint": reg.url, "tag_ttl": "60s"},
        "s1.test": {"endpoint": up.url, "tag_ttl": "1s", "negative_ttl": "0"},
    }})


def pull_checks(label):
    """Each check of 01_pull_test.go's "Pull blobs", "Pull manifests" and "Error codes"."""
    def req(method, path, headers=None, body=None):
        return rgmtest.http(method, mir.url + "/v2/%s/%s" % (NAME, path), headers=headers,
                            body=body)

    def dcd_ok(h, want):
        v = h.get("docker-content-digest")
        return v is None or v == want

    acc = {"Accept": MT_OCI_MANIFEST}
    st, h, b = req("HEAD", "blobs/" + DUMMY)
    t.is_(st, 404, "%s: HEAD nonexistent blob: 404" % label)
    st, h, b = req("HEAD", "blobs/" + C0)
    t.ok(st == 200 and dcd_ok(h, C0), "%s: HEAD existing blob: 200, digest" % label,
         diag=(st, dict(h)))
    st, h, b = req("GET", "blobs/" + DUMMY)
    t.is_(st, 404, "%s: GET nonexistent blob: 404" % label)
    st, h, b = req("GET", "blobs/" + C0)
    t.ok(st == 200 and b == configs[0], "%s: GET existing blob: 200, its bytes" % label,
         diag=(st, b[:100]))

    st, h, b = req("HEAD", "manifests/" + NONEXISTENT)
    t.is_(st, 404, "%s: HEAD nonexistent manifest: 404" % label)
    for i, d in ((0, M0), (1, M1)):
        st, h, b = req("HEAD", "manifests/" + d, headers=acc)
        t.ok(st == 200 and dcd_ok(h, d), "%s: HEAD manifest[%d] by digest: 200" % (label, i),
             diag=(st, dict(h)))
    st, h, b = req("HEAD", "manifests/" + TAG, headers=acc)
    t.ok(st == 200 and dcd_ok(h, M0), "%s: HEAD manifest by tag: 200, manifest[0]'s digest"
         % label, diag=(st, dict(h)))
    st, h, b = req("GET", "manifests/" + NONEXISTENT)
    t.is_(st, 404, "%s: GET nonexistent manifest: 404" % label)
    for i, d in ((0, M0), (1, M1)):
        st, h, b = req("GET", "manifests/" + d, headers=acc)
        t.ok(st == 200 and b == manifests[i], "%s: GET manifest[%d] by digest: 200, same bytes"
             % (label, i), diag=(st, b[:100]))
    st, h, b = req("GET", "manifests/" + TAG, headers=acc)
    t.ok(st == 200 and b == manifests[0], "%s: GET manifest by tag: 200, same bytes" % label,
         diag=(st, b[:100]))

    # "400 response body should contain OCI-conforming JSON message": the suite's client
    # (resty) drops a GET's body, so it sends none; a client that sends one gets a 400 too
    for body, what in ((None, "no body"), (b"blablabla", "with a body")):
        st, h, b = req("GET", "manifests/sha256:totallywrong", body=body,
                       headers={"Content-Type": MT_OCI_MANIFEST})
        t.ok(st in (400, 404) and (st != 400 or err_code(b) in SPEC_CODES),
             "%s: GET manifests/sha256:totallywrong (%s): 400 with a spec code, or 404"
             % (label, what), diag=(st, b[:200]))


# cold cache: nothing was ever asked through this mirror
before = len(reg.access_log_lines())
pull_checks("cold")
# the suite's teardown through the mirror: a read-only registry may answer 405
for path in ("manifests/" + M0, "manifests/" + M1, "blobs/" + C0,
             "blobs/" + sha256_digest(configs[1]), "blobs/" + sha256_digest(layer)):
    st, h, b = rgmtest.http("DELETE", mir.url + "/v2/%s/%s" % (NAME, path))
    t.ok(st == 405 and err_code(b) in SPEC_CODES, "teardown DELETE %s: 405 (read-only)"
         % path[:20], diag=(st, b[:200]))
writes = [l for l in reg.access_log_lines()[before:]
          if l.method not in ("GET", "HEAD")]
t.is_(writes, [], "read-only: the mirror sent the upstream no write")
t.ok(reg.count_requests(("GET", "HEAD"), "/manifests/") > 0,
     "the cold pass reached the upstream")
n_up = len(reg.access_log_lines())
pull_checks("warm")
t.is_(reg.count_requests("GET", "/blobs/" + C0), 1,
      "warm: the config blob was fetched from the upstream once")
t.is_(reg.count_requests("GET", "/manifests/sha256:"), 2,
      "warm: each manifest by digest was fetched from the upstream once")

# ------------------------------------------------------------------------------------
# digest invariance: bytes written with tabs, odd key order and a trailing newline

REPO = "inv/app"


def odd_json(obj):
    """JSON no canonical serialiser writes: keys reversed, tab indent, CRLF-free newline."""
    def rev(o):
        if isinstance(o, dict):
            return {k: rev(o[k]) for k in reversed(list(o.keys()))}
        if isinstance(o, list):
            return [rev(x) for x in o]
        return o
    return (json.dumps(rev(obj), indent="\t", separators=(" ,", " : ")) + "\n\n").encode()


docker_cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
oci_cfg = json.dumps({"architecture": "arm64", "os": "linux",
                      "rootfs": {"type": "layers", "diff_ids": []}}).encode()
docker_layer = small_targz("d.txt", b"docker layer\n")
oci_layer = small_targz("o.txt", b"oci layer\n")
zst_raw = io.BytesIO()
with tarfile.open(fileobj=zst_raw, mode="w") as tf:
    ti = tarfile.TarInfo("z.txt")
    ti.size = 4
    tf.addfile(ti, io.BytesIO(b"zstd"))
zst_layer = subprocess.run(["zstd", "-q", "-c"], input=zst_raw.getvalue(), check=True,
                           stdout=subprocess.PIPE, timeout=30).stdout
t.ok(zst_layer[:4] == b"\x28\xb5\x2f\xfd", "the zstd layer is a zstd frame")
for blob in (docker_cfg, oci_cfg, docker_layer, oci_layer, zst_layer, b"{}", b"sig-payload"):
    put_blob(REPO, blob)


def desc(mt, blob, **extra):
    d = {"mediaType": mt, "digest": sha256_digest(blob), "size": len(blob)}
    d.update(extra)
    return d


docker_m = odd_json({"schemaVersion": 2, "mediaType": MT_DOCKER_MANIFEST,
                     "config": desc("application/vnd.docker.container.image.v1+json",
                                    docker_cfg),
                     "layers": [desc("application/vnd.docker.image.rootfs.diff.tar.gzip",
                                     docker_layer)]})
oci_m = odd_json({"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
                  "config": desc(MT_OCI_CONFIG, oci_cfg),
                  "layers": [desc(MT_OCI_LAYER, oci_layer),
                             desc("application/vnd.oci.image.layer.v1.tar+zstd", zst_layer)],
                  "annotations": {"org.example.z": "1", "org.example.a": "2"}})
docker_list = odd_json({"schemaVersion": 2, "mediaType": MT_DOCKER_LIST, "manifests": [
    desc(MT_DOCKER_MANIFEST, docker_m, platform={"architecture": "amd64", "os": "linux"})]})
oci_index = odd_json({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": [
    desc(MT_OCI_MANIFEST, oci_m, platform={"architecture": "arm64", "os": "linux"})]})
artifact = odd_json({"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
                     "artifactType": "application/vnd.example.sig.v1",
                     "config": desc(MT_EMPTY, b"{}", data="e30="),
                     "layers": [desc("application/vnd.example.sig.v1", b"sig-payload")],
                     "subject": desc(MT_OCI_MANIFEST, oci_m)})
KINDS = [("docker-v2", "dv2", docker_m, MT_DOCKER_MANIFEST),
         ("oci-manifest", "oci", oci_m, MT_OCI_MANIFEST),
         ("docker-list", "dlist", docker_list, MT_DOCKER_LIST),
         ("oci-index", "oidx", oci_index, MT_OCI_INDEX),
         ("artifact", "art", artifact, MT_OCI_MANIFEST)]
for kind, tag, data, mt in KINDS:
    got = put_manifest(REPO, tag, data, mt)
    t.is_(got, sha256_digest(data), "%s: the upstream's digest is that of the bytes pushed" % kind)

ALL = rgmtest.MANIFEST_ACCEPT
for kind, tag, data, mt in KINDS:
    want = sha256_digest(data)
    for ref, how in ((tag, "tag"), (want, "digest")):
        for pass_ in ("miss", "hit"):
            st, h, b = mir.get("/v2/%s/manifests/%s" % (REPO, ref), headers={"Accept": ALL})
            t.ok(st == 200 and sha256_digest(b) == want and b == data and
                 h.get("docker-content-digest") == want and h.get("content-type") == mt,
                 "%s by %s (%s): the bytes hash to the upstream's digest, same type"
                 % (kind, how, pass_), diag=(st, h.get("content-type"), b[:120]))
    st, h, b = mir.get("/v2/%s/manifests/%s" % (REPO, tag), method="HEAD",
                       headers={"Accept": ALL})
    t.ok(st == 200 and h.get("docker-content-digest") == want and
         h.get("content-length") == str(len(data)), "%s: HEAD names the same digest and size"
         % kind, diag=(st, dict(h)))
# a restart serves them from the store, still byte for byte
mir.restart()
for kind, tag, data, mt in KINDS:
    st, h, b = mir.get("/v2/%s/manifests/%s" % (REPO, sha256_digest(data)),
                       headers={"Accept": ALL})
    t.ok(st == 200 and b == data and h.get("x-cache") == "HIT",
         "%s after a restart: HIT, same bytes" % kind, diag=(st, h.get("x-cache")))

# zstd layers are ordinary blobs: verified, cached, served with their bytes
zd = sha256_digest(zst_layer)
for pass_ in ("miss", "hit"):
    st, h, b = mir.get("/v2/%s/blobs/%s" % (REPO, zd))
    t.ok(st == 200 and b == zst_layer, "+zstd layer (%s): 200, its bytes" % pass_,
         diag=(st, len(b)))
t.is_(reg.count_requests("GET", "/blobs/" + zd), 1, "+zstd layer: one upstream GET, then cached")

# ------------------------------------------------------------------------------------
# schema 1: refused with 404 MANIFEST_UNKNOWN naming schema 1, never cached

MT_S1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
MT_S1 = "application/vnd.docker.distribution.manifest.v1+json"
s1_payload = {"schemaVersion": 1, "name": "old/app", "tag": "s1", "architecture": "amd64",
              "fsLayers": [{"blobSum": sha256_digest(b"a")}],
              "history": [{"v1Compatibility": "{}"}]}
s1_signed = json.dumps(dict(s1_payload, signatures=[{"header": {"alg": "ES256"},
                                                    "signature": "c2ln",
                                                    "protected": "e30"}]),
                       indent=3).encode()
s1_plain = json.dumps(s1_payload, indent=3).encode()
up.add_manifest("old/app", "signed", s1_signed, MT_S1_SIGNED)
up.add_manifest("old/app", "plain", s1_plain, MT_S1)
up.add_manifest("old/app", "json", s1_plain, "application/json")
new_img = up.add_image("old/app", "moved")      # a schema 2 image for the tag that moves


def refused(st, h, b):
    return st == 404 and err_code(b) == "MANIFEST_UNKNOWN" and "schema 1" in err_message(b)


for tag in ("signed", "plain", "json"):
    path = "/v2/old/app/manifests/%s?ns=s1.test" % tag
    st, h, b = mir.get(path, headers={"Accept": ALL})
    t.ok(refused(st, h, b), "schema 1 (%s) by tag: 404 MANIFEST_UNKNOWN naming schema 1" % tag,
         diag=(st, b[:300]))
    st, h, b = mir.get(path, headers={"Accept": MT_S1_SIGNED + ", " + MT_S1})
    t.ok(refused(st, h, b), "schema 1 (%s), client asks only for schema 1: refused" % tag,
         diag=(st, b[:300]))
    st, h, b = mir.get(path, method="HEAD")
    t.ok(st == 404 or tag == "json", "schema 1 (%s): HEAD 404" % tag, diag=(st, dict(h)))
d_signed = sha256_digest(s1_signed)
st, h, b = mir.get("/v2/old/app/manifests/%s?ns=s1.test" % d_signed)
t.ok(refused(st, h, b), "schema 1 by digest: refused", diag=(st, b[:300]))
n1 = up.count(None, "/manifests/signed")
nreq = len(up.requests)
st, h, b = mir.get("/v2/old/app/manifests/signed?ns=s1.test")   # no Accept
t.ok(refused(st, h, b) and up.count(None, "/manifests/signed") == n1 + 1,
     "schema 1 is never cached: the next GET asks the upstream again",
     diag=(st, n1, up.count(None, "/manifests/signed")))
accepts = [r.headers.get("accept", "") for r in up.requests[nreq:]]
t.ok(accepts and all("distribution.manifest.v1+" not in a for a in accepts),
     "a client without Accept: the mirror does not ask the upstream for schema 1",
     diag=accepts)
st, h, b = mir.get("/v2/old/app/blobs/%s?ns=s1.test" % d_signed)
t.is_(st, 404, "the refused manifest is not in the store either (blob route: upstream 404)")
# a tag that was schema 1 and becomes schema 2: nothing of the refusal was remembered
up.add_manifest("old/app", "signed", new_img["manifest_bytes"], MT_OCI_MANIFEST)
st, h, b = mir.get("/v2/old/app/manifests/signed?ns=s1.test", headers={"Accept": ALL})
t.ok(st == 200 and h.get("docker-content-digest") == new_img["manifest"],
     "the tag moved to schema 2: served at once", diag=(st, b[:200]))
# and the other way: a cached schema 2 tag revalidated to a schema 1 manifest is refused
up.add_manifest("old/app", "moved", s1_signed, MT_S1_SIGNED)
time.sleep(1.3)                                   # tag_ttl 1s
st, h, b = mir.get("/v2/old/app/manifests/moved?ns=s1.test", headers={"Accept": ALL})
t.ok(refused(st, h, b), "revalidation finds schema 1: refused, not served stale",
     diag=(st, h.get("x-cache"), b[:200]))
st, h, b = mir.get("/v2/old/app/manifests/moved?ns=s1.test", method="HEAD",
                   headers={"Accept": ALL})
t.is_(st, 404, "revalidation finds schema 1: HEAD 404 too")

t.ok("Sanitizer" not in mir.log_text(), "no sanitizer report")
t.done()
