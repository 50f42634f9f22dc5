#!/usr/bin/env python3
"""regmirror prewarm and OCI 1.1 content: non-distributable (Windows foreign) layers with
`urls` are never fetched, while a client that asks the mirror for one is passed through like
any blob; `--with-referrers` warms each image's signatures and attestations through the
referrers API (pages followed) and cosign's .sig/.att/.sbom tags (fakeup), and through the
referrers tag schema (`sha256-<hex>`) when the upstream has no API (docker-registry 2.8), so
that they are served with the upstream down."""
import json
import os
import signal
import subprocess
import urllib.parse

import fakeup
import rgmtest
from rgmtest import MT_OCI_INDEX, MT_OCI_MANIFEST, RGM_BIN, sha256_digest

t = rgmtest.TAP(timeout=200)
ws = rgmtest.Workspace()

MT_EMPTY = "application/vnd.oci.empty.v1+json"
MT_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
MT_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
AT_SIG = "application/vnd.dev.cosign.artifact.sig.v1+json"
AT_SBOM = "application/spdx+json"


def prewarm_json(*args, input=None, timeout=60):
    p = subprocess.Popen([RGM_BIN, "prewarm", "--json"] + list(args), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = p.communicate(input=(input or "").encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        return -999, None, err.decode(errors="replace")
    try:
        doc = json.loads(out)
    except ValueError:
        doc = None
    return p.returncode, doc, err.decode(errors="replace")


def image_of(doc, i=0):
    try:
        return doc["images"][i]
    except (TypeError, KeyError, IndexError):
        return {}


def err_code(body):
    try:
        return json.loads(body)["errors"][0]["code"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None


up = fakeup.FakeUpstream(name="oci", referrers=True)
up.referrers_page_size = 1                  # two referrers: two pages, a Link between them
reg = rgmtest.Registry(ws)
mir = rgmtest.Mirror(ws, config={
    "upstream_timeout": "3s",
    "default_registry": "oci.test",
    "registries": {
        "oci.test": {"endpoint": up.url, "tag_ttl": "120s"},
        "reg.test": {"endpoint": reg.url, "tag_ttl": "120s"},
    }})

# ------------------------------------------------------------------------------------
# foreign layers

cfg = json.dumps({"architecture": "amd64", "os": "windows",
                  "rootfs": {"type": "layers", "diff_ids": []}}).encode()
cd = up.add_blob(cfg)
normal = b"windows app layer" * 50
nd = up.add_blob(normal)
foreign_here = b"a foreign base layer the upstream happens to have" * 20
fh = up.add_blob(foreign_here)
fa = sha256_digest(b"a foreign layer only microsoft serves")     # not on the upstream
win = {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd,
                  "size": len(cfg)},
       "layers": [
           {"mediaType": MT_FOREIGN, "digest": fa, "size": 123456789,
            "urls": ["https://mcr.microsoft.invalid/" + fa]},
           {"mediaType": MT_NONDIST, "digest": fh, "size": len(foreign_here),
            "urls": ["https://mcr.microsoft.invalid/" + fh]},
           {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": nd,
            "size": len(normal)}]}
up.add_manifest("win/app", "ltsc", win)
rc, doc, err = prewarm_json("--mirror", mir.url, "--platform", "windows/amd64", "-",
                            input="oci.test/win/app:ltsc\n")
img = image_of(doc)
t.ok(rc == 0 and img.get("status") == "fetched", "foreign layers: the image prewarms",
     diag=(rc, img, err))
t.is_(img.get("layers"), 3, "foreign layers: 3 layers counted")
t.is_(up.count(None, "/blobs/" + fa), 0, "a Docker foreign layer with urls is never fetched")
t.is_(up.count(None, "/blobs/" + fh), 0, "an OCI non-distributable layer is never fetched")
t.is_(up.count("GET", "/blobs/" + nd), 1, "the ordinary layer is fetched")
st, h, b = mir.get("/v2/win/app/blobs/%s?ns=oci.test" % fh)
t.ok(st == 200 and b == foreign_here, "a client asking for a foreign layer the upstream has: "
     "passed through, its bytes", diag=(st, b[:100]))
t.is_(up.count("GET", "/blobs/" + fh), 1, "... one upstream GET")
st, h, b = mir.get("/v2/win/app/blobs/%s?ns=oci.test" % fa)
t.ok(st == 404 and err_code(b) == "BLOB_UNKNOWN",
     "a foreign layer the upstream does not have: its 404 (BLOB_UNKNOWN)", diag=(st, b[:200]))
t.is_(up.count("GET", "/blobs/" + fa), 1, "... asked upstream like any blob")

# ------------------------------------------------------------------------------------
# --with-referrers: the referrers API (fakeup) and cosign's tags


def artifact(repo, subject, subject_bytes, payload, artifact_type):
    ed = up.add_blob(b"{}")
    ld = up.add_blob(payload)
    m = {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST, "artifactType": artifact_type,
         "config": {"mediaType": MT_EMPTY, "digest": ed, "size": 2},
         "layers": [{"mediaType": "application/octet-stream", "digest": ld,
                     "size": len(payload)}],
         "subject": {"mediaType": MT_OCI_MANIFEST, "digest": subject,
                     "size": len(subject_bytes)}}
    return up.add_manifest(repo, None, m), ld


app = up.add_image("lib/app", "v1", layers=(b"app layer one", b"app layer two"))
S = app["manifest"]
sig, sig_layer = artifact("lib/app", S, app["manifest_bytes"], b"signature bytes", AT_SIG)
sbom, sbom_layer = artifact("lib/app", S, app["manifest_bytes"], b"sbom bytes", AT_SBOM)
legacy_payload = b'{"critical":{"image":{"docker-manifest-digest":"%s"}}}' % S.encode()
lpd = up.add_blob(legacy_payload)
legacy = {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
          "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                     "digest": up.add_blob(b"{}"), "size": 2},
          "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                      "digest": lpd, "size": len(legacy_payload)}]}
SIGTAG = "sha256-%s.sig" % S.split(":", 1)[1]
legacy_d = up.add_manifest("lib/app", SIGTAG, legacy)
other = up.add_image("lib/other", "v1", layers=(b"other layer",))
artifact("lib/other", other["manifest"], other["manifest_bytes"], b"other sig", AT_SIG)

rc, doc, err = prewarm_json("--mirror", mir.url, "-", input="oci.test/lib/other:v1\n")
t.ok(rc == 0 and image_of(doc).get("referrers") == 0 and up.count(None, "/referrers/") == 0,
     "without --with-referrers: no referrers asked", diag=(rc, image_of(doc), err))

rc, doc, err = prewarm_json("--mirror", mir.url, "--with-referrers", "-",
                            input="oci.test/lib/app:v1\n")
img = image_of(doc)
t.ok(rc == 0 and img.get("status") == "fetched" and img.get("error") is None,
     "--with-referrers: the image prewarms", diag=(rc, img, err))
t.is_(img.get("referrers"), 3, "--with-referrers: 2 referrers from the API + the .sig tag")
t.is_(img.get("layers"), 2, "--with-referrers: referrers do not count as the image's layers")
t.is_(up.count("GET", "/referrers/" + S), 2, "the referrers API: both pages (Link followed)")
for name, d in (("signature", sig), ("sbom", sbom), ("legacy .sig", legacy_d)):
    t.ok(up.count("GET", "/manifests/" + d) + (up.count("GET", "/manifests/" + SIGTAG)
                                                if name == "legacy .sig" else 0) >= 1,
         "%s manifest fetched through the mirror" % name)
for name, d in (("signature", sig_layer), ("sbom", sbom_layer), ("legacy payload", lpd)):
    t.is_(up.count("GET", "/blobs/" + d), 1, "%s blob fetched once" % name)
for suffix in (".att", ".sbom"):
    t.ok(up.count(None, "/manifests/sha256-%s%s" % (S.split(":", 1)[1], suffix)) >= 1,
         "cosign %s tag asked (absent: no failure)" % suffix)
rc, doc, err = prewarm_json("--mirror", mir.url, "--with-referrers", "-",
                            input="oci.test/lib/app:v1\n")
t.ok(rc == 0 and image_of(doc).get("status") == "cached",
     "--with-referrers again: everything cached", diag=(rc, image_of(doc), err))

up.stop()
st, h, b = mir.get("/v2/lib/app/referrers/%s?ns=oci.test" % S)
t.ok(st == 200 and h.get("x-cache") in ("HIT", "STALE") and
     [d["digest"] for d in json.loads(b)["manifests"]] != [],
     "upstream down: the referrers list is served", diag=(st, h.get("x-cache"), b[:200]))
for name, d in (("signature", sig), ("sbom", sbom)):
    st, h, b = mir.get("/v2/lib/app/manifests/%s?ns=oci.test" % d,
                       headers={"Accept": MT_OCI_MANIFEST})
    t.ok(st == 200 and sha256_digest(b) == d and h.get("x-cache") == "HIT",
         "upstream down: the %s manifest is a HIT" % name, diag=(st, h.get("x-cache")))
for name, d in (("signature", sig_layer), ("sbom", sbom_layer), ("legacy payload", lpd)):
    st, h, b = mir.get("/v2/lib/app/blobs/%s?ns=oci.test" % d)
    t.ok(st == 200 and sha256_digest(b) == d, "upstream down: the %s blob is served" % name,
         diag=st)
st, h, b = mir.get("/v2/lib/app/manifests/%s?ns=oci.test" % SIGTAG,
                   headers={"Accept": MT_OCI_MANIFEST})
t.ok(st == 200 and sha256_digest(b) == legacy_d, "upstream down: the .sig tag is served",
     diag=(st, b[:200]))

# ------------------------------------------------------------------------------------
# no referrers API (docker-registry 2.8): the referrers tag schema


def put_blob(repo, data):
    d = sha256_digest(data)
    st, h, b = rgmtest.http("POST", reg.url + "/v2/%s/blobs/uploads/" % repo)
    if st != 202:
        raise RuntimeError("POST upload: %d %r" % (st, b[:200]))
    loc = urllib.parse.urljoin(reg.url + "/", h["location"])
    loc += ("&" if "?" in loc else "?") + "digest=" + urllib.parse.quote(d)
    st, h, b = rgmtest.http("PUT", loc, body=data,
                            headers={"Content-Type": "application/octet-stream"})
    if not 200 <= st < 300:
        raise RuntimeError("PUT blob: %d %r" % (st, b[:200]))
    return d


def put_manifest(repo, ref, obj, mt):
    data = json.dumps(obj).encode()
    st, h, b = rgmtest.http("PUT", reg.url + "/v2/%s/manifests/%s" % (repo, ref), body=data,
                            headers={"Content-Type": mt})
    if not 200 <= st < 300:
        raise RuntimeError("PUT manifest %s: %d %r" % (ref, st, b[:300]))
    return sha256_digest(data), len(data)


rimg = rgmtest.make_image(ws, "team/svc:1", layers=[3000])
pushed = rgmtest.push(rimg, reg)
RS, RSIZE = pushed["digest"], len(pushed["manifest_bytes"])
HEX = RS.split(":", 1)[1]
put_blob("team/svc", b"{}")
att_payload = b'{"predicateType":"https://slsa.dev/provenance/v1"}'
apd = put_blob("team/svc", att_payload)
att = {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
       "artifactType": "application/vnd.in-toto+json",
       "config": {"mediaType": MT_EMPTY, "digest": sha256_digest(b"{}"), "size": 2},
       "layers": [{"mediaType": "application/vnd.in-toto+json", "digest": apd,
                   "size": len(att_payload)}],
       "subject": {"mediaType": pushed["media_type"], "digest": RS, "size": RSIZE}}
att_d, att_size = put_manifest("team/svc", sha256_digest(json.dumps(att).encode()), att,
                               MT_OCI_MANIFEST)
tag_index = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": [
    {"mediaType": MT_OCI_MANIFEST, "digest": att_d, "size": att_size,
     "artifactType": "application/vnd.in-toto+json"}]}
put_manifest("team/svc", "sha256-" + HEX, tag_index, MT_OCI_INDEX)

st, h, b = mir.get("/v2/team/svc/referrers/%s?ns=reg.test" % RS)
t.ok(st == 404 and err_code(b) == "UNSUPPORTED", "docker-registry: referrers 404 UNSUPPORTED",
     diag=(st, b[:200]))
rc, doc, err = prewarm_json("--mirror", mir.url, "--with-referrers", "-",
                            input="reg.test/team/svc:1\n")
img = image_of(doc)
t.ok(rc == 0 and img.get("status") == "fetched" and img.get("referrers") == 1,
     "no API: the image and its attestation (from the sha256-<hex> tag index) prewarm",
     diag=(rc, img, err))
t.is_(reg.count_requests("GET", "/team/svc/manifests/sha256-" + HEX), 1,
      "no API: the referrers tag schema was asked")
t.is_(reg.count_requests("GET", "/team/svc/manifests/" + att_d), 1,
      "no API: the attestation manifest it lists was fetched")
t.is_(reg.count_requests("GET", "/team/svc/blobs/" + apd), 1,
      "no API: the attestation's blob was fetched")
reg.stop()
st, h, b = mir.get("/v2/team/svc/manifests/%s?ns=reg.test" % att_d,
                   headers={"Accept": MT_OCI_MANIFEST})
t.ok(st == 200 and sha256_digest(b) == att_d, "registry down: the attestation is served",
     diag=st)
st, h, b = mir.get("/v2/team/svc/manifests/sha256-%s?ns=reg.test" % HEX,
                   headers={"Accept": MT_OCI_INDEX})
t.ok(st == 200 and json.loads(b)["manifests"][0]["digest"] == att_d,
     "registry down: the sha256-<hex> tag index is served", diag=(st, b[:200]))

t.ok("Sanitizer" not in mir.log_text(), "no sanitizer report")
t.done()
