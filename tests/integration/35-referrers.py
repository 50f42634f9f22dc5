#!/usr/bin/env python3
"""OCI 1.1 referrers through the mirror: the referrers API pulled through from an upstream
that has it (fakeup: Link pagination relayed with paths pointed at the mirror, each page
cached under its own query, artifactType filtering with OCI-Filters-Applied, 0 upstream
requests within tag_ttl, served stale while the upstream fails, also after a restart; only an
exact OCI image index is cached), referrer manifests and their blobs served with their own
types, an upstream without the API (docker-registry 2.8: 404 UNSUPPORTED, never NAME_UNKNOWN,
remembered per registry) where a cosign-style sha256-<hex>.sig tag pushed with skopeo is
served like any tag, a private repository's referrers refused to clients the upstream
refuses, bad requests, and `regmirror hosts --referrers`."""
import base64
import json
import os
import re
import time

import fakeup
import rgmtest
from rgmtest import MT_OCI_INDEX, MT_OCI_MANIFEST, sha256_digest

t = rgmtest.TAP(timeout=240)
ws = rgmtest.Workspace()

MT_EMPTY = "application/vnd.oci.empty.v1+json"
AT_SIG = "application/vnd.dev.cosign.artifact.sig.v1+json"
AT_SBOM = "application/spdx+json"
MT_INTOTO = "application/vnd.in-toto+json"


def basic(user, pw):
    return {"Authorization": "Basic " + base64.b64encode(("%s:%s" % (user, pw)).encode()).decode()}


ALICE = basic("alice", "pa")
BOB = basic("bob", "wrong")


def upstream_auth(h):
    """priv/* needs alice; everything else is public."""
    m = re.match(r"^/v2/(.+?)/(?:manifests|blobs|tags|referrers)/", h.path)
    if not m or not m.group(1).startswith("priv/"):
        return True
    if h.headers.get("Authorization", "") == ALICE["Authorization"]:
        return True
    return 'Basic realm="fakeup"'


def err_code(body):
    try:
        return json.loads(body)["errors"][0]["code"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def artifact(up, repo, subject_digest, subject_size, payload, artifact_type=None,
             config_mt=MT_EMPTY, annotations=None):
    """An OCI artifact manifest with a subject: empty (or typed) config, one layer."""
    cfg = b"{}"
    cd = up.add_blob(cfg)
    ld = up.add_blob(payload)
    m = {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
         "config": {"mediaType": config_mt, "digest": cd, "size": len(cfg)},
         "layers": [{"mediaType": "application/octet-stream", "digest": ld,
                     "size": len(payload)}],
         "subject": {"mediaType": MT_OCI_MANIFEST, "digest": subject_digest,
                     "size": subject_size}}
    if artifact_type:
        m["artifactType"] = artifact_type
    if annotations:
        m["annotations"] = annotations
    return up.add_manifest(repo, None, m), ld


up = fakeup.FakeUpstream(name="ref", referrers=True, auth=upstream_auth)
up.referrers_page_size = 2
img = up.add_image("lib/app", "v1")
S = img["manifest"]
SSIZE = len(img["manifest_bytes"])
sig, sig_layer = artifact(up, "lib/app", S, SSIZE, b"signature", AT_SIG,
                          annotations={"dev.cosignproject.cosign/signature": "MEUC"})
sbom, _ = artifact(up, "lib/app", S, SSIZE, b"sbom", AT_SBOM)
att, _ = artifact(up, "lib/app", S, SSIZE, b"attestation", config_mt=MT_INTOTO)
img2 = up.add_image("lib/other", "v1", layers=(b"other",))
S2 = img2["manifest"]
artifact(up, "lib/other", S2, len(img2["manifest_bytes"]), b"x", AT_SIG)
pimg = up.add_image("priv/app", "v1", layers=(b"private",))
PS = pimg["manifest"]
artifact(up, "priv/app", PS, len(pimg["manifest_bytes"]), b"psig", AT_SIG)

# docker-registry 2.8: no referrers API
reg = rgmtest.Registry(ws)
noup = fakeup.FakeUpstream(name="noapi")           # fakeup without the API: a 404 route
nameup = fakeup.FakeUpstream(name="nameunknown", referrers=True)

TTL = 3
m = rgmtest.Mirror(ws, config={
    "upstream_timeout": "3s",
    "default_registry": "ref.test",
    "registries": {
        "ref.test": {"endpoint": up.url, "tag_ttl": "%ds" % TTL},
        "reg.test": {"endpoint": reg.url, "tag_ttl": "60s"},
        "noapi.test": {"endpoint": noup.url, "tag_ttl": "60s"},
        "name.test": {"endpoint": nameup.url, "tag_ttl": "60s"},
    }})


def refs(path, headers=None, method="GET"):
    st, h, b = m.get(path, headers=headers, method=method)
    doc = None
    if st == 200 and method == "GET":
        try:
            doc = json.loads(b)
        except ValueError:
            doc = None
    return st, h, b, doc


def digests(doc):
    return sorted(d["digest"] for d in (doc or {}).get("manifests", []))


def upcount():
    return up.count("GET", "/referrers/")


# ------------------------------------------------------------------------------------
# pagination, cache, Link rewrite (ns= and path prefix)

P1 = "/v2/lib/app/referrers/%s?ns=ref.test" % S
st, h, b, doc = refs(P1)
t.is_(st, 200, "referrers: 200") or t.diag(b[:300])
t.is_(h.get("content-type"), MT_OCI_INDEX, "referrers: Content-Type is the OCI image index")
t.is_(h.get("x-cache"), "MISS", "referrers: first is a MISS")
t.is_(len(digests(doc)), 2, "referrers: page 1 has 2 descriptors (upstream page size)")
link = h.get("link") or ""
t.is_(link, '</v2/lib/app/referrers/%s?page=2&ns=ref.test>; rel="next"' % S,
      "referrers: Link points at the mirror, ns= kept")
t.ok(up.url not in link, "referrers: the upstream's address is not in the Link")
t.is_(upcount(), 1, "referrers: one upstream request")
P2 = link[1:link.index(">")]
st, h, b, doc2 = refs(P2)
t.is_(st, 200, "referrers page 2: 200")
t.is_(len(digests(doc2)), 1, "referrers page 2: the last descriptor")
t.ok(h.get("link") is None, "referrers page 2: no Link (last page)")
t.is_(sorted(digests(doc) + digests(doc2)), sorted([sig, sbom, att]),
      "referrers: both pages together list every referrer once")
by_digest = {d["digest"]: d for d in doc["manifests"] + doc2["manifests"]}
t.is_(by_digest[att].get("artifactType"), MT_INTOTO,
      "referrers: artifactType of a manifest without one is its config type (upstream's)")
t.is_(up.requests_for("/referrers/")[-1].path, "/v2/lib/app/referrers/%s?page=2" % S,
      "page 2 asked upstream with the upstream's query, without ns=")
t.is_(upcount(), 2, "referrers: page 2 is its own upstream request")

n0 = len(up.requests)
for p in (P1, P2):
    st, h, b, _ = refs(p)
    t.ok(st == 200 and h.get("x-cache") == "HIT", "second client, %s: HIT" % p[-20:],
         diag=(st, h.get("x-cache")))
t.is_(len(up.requests), n0, "second client: 0 upstream requests within tag_ttl")

st, h, b, doc = refs("/v2/ref.test/lib/app/referrers/%s" % S)
t.is_(st, 200, "path-prefix client: 200")
t.is_(h.get("x-cache"), "HIT", "path-prefix client: the same cached page (same registry, repo)")
t.is_(h.get("link"), '</v2/ref.test/lib/app/referrers/%s?page=2>; rel="next"' % S,
      "path-prefix client: Link keeps its path prefix")
_, _, full, _ = refs(P1)
st, h, b, _ = refs(P1, method="HEAD")
t.ok(st == 200 and b == b"" and h.get("content-length") == str(len(full))
     and h.get("content-type") == MT_OCI_INDEX,
     "HEAD referrers: 200, the GET's length and type, no body", diag=(st, dict(h), b[:80]))

# ------------------------------------------------------------------------------------
# artifactType filter

F = "/v2/lib/app/referrers/%s?artifactType=application%%2Fspdx%%2Bjson&ns=ref.test" % S
c0 = upcount()
st, h, b, doc = refs(F)
t.is_(st, 200, "filtered: 200")
t.is_(digests(doc), [sbom], "filtered: only the SBOM")
t.is_(h.get("oci-filters-applied"), "artifactType", "filtered: OCI-Filters-Applied passed on")
t.is_(upcount(), c0 + 1, "filtered: its own upstream request (another query)")
t.is_(up.requests_for("/referrers/")[-1].path,
      "/v2/lib/app/referrers/%s?artifactType=application%%2Fspdx%%2Bjson" % S,
      "filtered: the filter is sent upstream as the client wrote it")
st, h, b, doc = refs(F)
t.ok(st == 200 and h.get("x-cache") == "HIT" and h.get("oci-filters-applied") == "artifactType",
     "filtered again: HIT, OCI-Filters-Applied kept", diag=(st, dict(h)))
t.is_(upcount(), c0 + 1, "filtered again: no upstream request")
st, h, b, doc = refs(P1)
t.is_(h.get("oci-filters-applied"), None, "unfiltered page: no OCI-Filters-Applied")

# ------------------------------------------------------------------------------------
# referrer manifests, their blobs, their types

for name, d, at in (("signature", sig, AT_SIG), ("sbom", sbom, AT_SBOM),
                    ("attestation (in-toto config)", att, None)):
    for attempt in ("first", "second"):
        st, h, b = m.get("/v2/lib/app/manifests/%s?ns=ref.test" % d,
                         headers={"Accept": MT_OCI_MANIFEST})
        t.ok(st == 200 and sha256_digest(b) == d and h.get("content-type") == MT_OCI_MANIFEST
             and h.get("docker-content-digest") == d,
             "%s manifest (%s): 200, bytes hash to its digest, OCI type" % (name, attempt),
             diag=(st, dict(h)))
    doc = json.loads(b)
    t.is_(doc.get("subject", {}).get("digest"), S, "%s manifest: subject kept" % name)
    t.is_(doc.get("artifactType"), at, "%s manifest: artifactType kept" % name)
    t.is_(h.get("x-cache"), "HIT", "%s manifest: cached" % name)
st, h, b = m.get("/v2/lib/app/blobs/%s?ns=ref.test" % sig_layer)
t.ok(st == 200 and b == b"signature", "signature layer blob served", diag=st)

# ------------------------------------------------------------------------------------
# stale while the upstream fails; then revalidated

time.sleep(TTL + 0.5)
for kind, kw in (("503", {"status": 503}), ("dropped connection", {"drop": True})):
    up.clear()
    up.behave("/referrers/", **kw)
    c0 = upcount()
    st, h, b, doc = refs(P1)
    t.ok(st == 200 and h.get("x-cache") == "STALE" and len(digests(doc)) == 2,
         "upstream %s: the cached page served STALE" % kind, diag=(st, h.get("x-cache"), b[:200]))
    t.ok(upcount() > c0, "upstream %s: the upstream was asked first" % kind)
    t.ok((h.get("link") or "").startswith("</v2/lib/app/referrers/"),
         "upstream %s: stale page keeps its Link" % kind)
up.clear()
up.behave("/referrers/", status=503)
st, h, b, _ = refs("/v2/lib/app/referrers/%s?artifactType=nothing-cached&ns=ref.test" % S)
t.ok(st in (502, 503) and err_code(b) == "UNAVAILABLE",
     "upstream 503, nothing cached for that query: 502 UNAVAILABLE", diag=(st, b[:200]))
up.clear()
c0 = upcount()
st, h, b, _ = refs(P1)
t.ok(st == 200 and h.get("x-cache") == "MISS" and upcount() == c0 + 1,
     "after tag_ttl with the upstream back: asked again (MISS)", diag=(st, h.get("x-cache")))

# stale across a restart: the answers live in the index
m.restart()
up.behave("/referrers/", status=503)
time.sleep(TTL + 0.5)
st, h, b, doc = refs(P2)
t.ok(st == 200 and h.get("x-cache") == "STALE" and digests(doc) == digests(doc2),
     "after a restart, upstream failing: page 2 served STALE from the index", diag=(st, b[:200]))
up.clear()

# ------------------------------------------------------------------------------------
# only an exact OCI image index is cached

for ct in ("application/json", MT_OCI_INDEX + "; charset=utf-8"):
    up.referrers_content_type = ct
    path = "/v2/lib/other/referrers/%s?n=%d&ns=ref.test" % (S2, len(ct))
    c0 = upcount()
    st, h, b, doc = refs(path)
    t.ok(st == 200 and h.get("content-type") == ct and len(digests(doc)) == 1,
         "Content-Type %r: relayed as the upstream sent it" % ct, diag=(st, dict(h)))
    st, h, b, doc = refs(path)
    t.ok(st == 200 and h.get("x-cache") == "MISS" and upcount() == c0 + 2,
         "Content-Type %r: not cached (asked upstream again)" % ct, diag=(st, h.get("x-cache")))
up.referrers_content_type = None
path = "/v2/lib/other/referrers/%s?ns=ref.test" % S2
st, h, b, doc = refs(path)
st, h, b, doc = refs(path)
t.is_(h.get("x-cache"), "HIT", "exact OCI index type: cached")

# ------------------------------------------------------------------------------------
# private repository: the access rule

PP = "/v2/priv/app/referrers/%s?ns=ref.test" % PS
st, h, b, _ = refs(PP)
t.ok(st == 401 and "Basic" in (h.get("www-authenticate") or ""),
     "private referrers, anonymous: 401 with the upstream's challenge", diag=(st, b[:200]))
st, h, b, doc = refs(PP, headers=ALICE)
t.ok(st == 200 and len(digests(doc)) == 1, "private referrers, alice: 200", diag=(st, b[:200]))
c0 = upcount()
st, h, b, _ = refs(PP)
t.ok(st == 401, "private referrers cached, anonymous: still 401 (never from the cache)",
     diag=(st, h.get("x-cache")))
t.is_(upcount(), c0 + 1, "private referrers cached, anonymous: the upstream decided")
st, h, b, _ = refs(PP, headers=BOB)
t.ok(st == 401, "private referrers cached, wrong credentials: 401", diag=(st, h.get("x-cache")))
c0 = upcount()
st, h, b, _ = refs(PP, headers=ALICE)
t.ok(st == 200 and h.get("x-cache") == "HIT" and upcount() == c0,
     "private referrers, alice again: HIT (her access was confirmed)", diag=(st, h.get("x-cache")))
up.behave("/referrers/", status=503)
time.sleep(TTL + 0.5)
st, h, b, _ = refs(PP)
t.ok(st in (401, 502, 503) and st != 200,
     "private referrers stale, upstream failing, anonymous: refused (%d)" % st)
st, h, b, _ = refs(PP, headers=ALICE)
t.ok(st == 200 and h.get("x-cache") == "STALE",
     "private referrers stale, upstream failing, alice (confirmed): STALE", diag=(st, b[:200]))
up.clear()

# ------------------------------------------------------------------------------------
# bad requests

for p, want, code in (("/v2/lib/app/referrers/latest", 400, "DIGEST_INVALID"),
                      ("/v2/lib/app/referrers/sha256:abc", 400, "DIGEST_INVALID"),
                      ("/v2/lib/app/referrers/", 400, "DIGEST_INVALID"),
                      ("/v2/Lib/app/referrers/%s" % S, 400, "NAME_INVALID"),
                      ("/v2/lib/app/referrers/%s?artifactType=%%zz&ns=ref.test" % S, 400,
                       "UNSUPPORTED"),
                      ("/v2/lib/app/referrers/%s?a=%s&ns=ref.test" % (S, "x" * 1100), 400,
                       "UNSUPPORTED")):
    st, h, b = m.get(p)
    t.ok(st == want and err_code(b) == code, "%s: %d %s" % (p[:60], want, code),
         diag=(st, b[:200]))
for meth in ("PUT", "DELETE"):
    st, h, b = m.get(P1, method=meth)
    t.ok(st == 405 and err_code(b) == "UNSUPPORTED", "%s referrers: 405" % meth, diag=st)

# ------------------------------------------------------------------------------------
# no referrers API: docker-registry 2.8, and fakeup's plain 404 route


def skopeo_push_layout(layout, ref):
    env = dict(os.environ)
    env["REGISTRY_AUTH_FILE"] = os.path.join(ws.dir, "no-auth.json")
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env.pop(k, None)
    return rgmtest.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                        "--dest-no-creds", "oci:%s" % layout, "docker://%s" % ref],
                       timeout=120, env=env, check=False)


image = rgmtest.make_image(ws, "sig/app:v1", layers=(512,))
pushed = rgmtest.push(image, reg)
SD = pushed["digest"]
# a cosign-style signature: an OCI artifact manifest under the sha256-<hex>.sig tag
lay = ws.unique("sig-layout")
os.makedirs(os.path.join(lay, "blobs", "sha256"))
with open(os.path.join(lay, "oci-layout"), "w") as f:
    f.write('{"imageLayoutVersion":"1.0.0"}')


def put_blob(data):
    d = sha256_digest(data)
    with open(os.path.join(lay, "blobs", "sha256", d[7:]), "wb") as f:
        f.write(data)
    return d


sigpayload = json.dumps({"critical": {"image": {"docker-manifest-digest": SD}}}).encode()
cfgb = b"{}"
sigm = {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST, "artifactType": AT_SIG,
        "config": {"mediaType": MT_EMPTY, "digest": put_blob(cfgb), "size": len(cfgb)},
        "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                    "digest": put_blob(sigpayload), "size": len(sigpayload),
                    "annotations": {"dev.cosignproject.cosign/signature": "MEUCIQ"}}],
        "subject": {"mediaType": pushed["media_type"], "digest": SD,
                    "size": len(pushed["manifest_bytes"])}}
sigb = json.dumps(sigm, separators=(",", ":")).encode()
sigd = put_blob(sigb)
SIGTAG = "sha256-%s.sig" % SD[7:]
with open(os.path.join(lay, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [{
        "mediaType": MT_OCI_MANIFEST, "digest": sigd, "size": len(sigb),
        "annotations": {"org.opencontainers.image.ref.name": SIGTAG}}]}, f)
r = skopeo_push_layout(lay + ":" + SIGTAG, "%s/sig/app:%s" % (reg.host, SIGTAG))
t.is_(r.rc, 0, "skopeo pushed a cosign-style artifact to docker-registry") or t.diag(r.out)
st, h, b = reg.request("GET", "/v2/sig/app/manifests/" + SIGTAG,
                       headers={"Accept": MT_OCI_MANIFEST})
t.ok(st == 200 and sha256_digest(b) == sigd, "docker-registry serves it unchanged",
     diag=(st, b[:200]))

st, h, b = m.get("/v2/sig/app/manifests/%s?ns=reg.test" % SIGTAG,
                 headers={"Accept": MT_OCI_MANIFEST})
t.ok(st == 200 and sha256_digest(b) == sigd and h.get("content-type") == MT_OCI_MANIFEST,
     "mirror: the sha256-<hex>.sig tag served, bytes hash to the artifact's digest",
     diag=(st, dict(h), b[:200]))
t.is_(json.loads(b).get("artifactType") if st == 200 else None, AT_SIG,
      "mirror: artifactType survives")
st, h, b = m.get("/v2/sig/app/blobs/%s?ns=reg.test" % sha256_digest(sigpayload))
t.ok(st == 200 and b == sigpayload, "mirror: the signature payload blob", diag=st)
st, h, b = m.get("/v2/sig/app/manifests/%s?ns=reg.test" % SIGTAG,
                 headers={"Accept": MT_OCI_MANIFEST})
t.is_(h.get("x-cache"), "HIT", "mirror: the .sig tag is cached like any tag")

RP = "/v2/sig/app/referrers/%s?ns=reg.test" % SD
st, h, b = m.get(RP)
t.ok(st == 404 and err_code(b) == "UNSUPPORTED",
     "docker-registry (no API): 404 UNSUPPORTED", diag=(st, b[:200]))
t.ok(err_code(b) != "NAME_UNKNOWN", "docker-registry (no API): not NAME_UNKNOWN")
reg.wait_count("GET", "/referrers/", 1)
t.is_(reg.count_requests("GET", "/referrers/"), 1, "docker-registry was asked once")
st, h, b = m.get("/v2/sig/other/referrers/%s?ns=reg.test" % SD)
t.ok(st == 404 and err_code(b) == "UNSUPPORTED", "another repository: 404 UNSUPPORTED")
time.sleep(0.5)  # docker-registry's access log is written asynchronously
t.is_(reg.count_requests("GET", "/referrers/"), 1,
      "no referrers API remembered per registry: no upstream request")

st, h, b = m.get("/v2/a/b/referrers/%s?ns=noapi.test" % SD)
t.ok(st == 404 and err_code(b) == "UNSUPPORTED", "fakeup without the API: 404 UNSUPPORTED",
     diag=(st, b[:200]))
m.get("/v2/a/c/referrers/%s?ns=noapi.test" % SD)
t.is_(noup.count("GET", "/referrers/"), 1, "fakeup without the API: remembered")

nameup.behave("/referrers/", status=404, code="NAME_UNKNOWN", times=1)
st, h, b = m.get("/v2/gone/app/referrers/%s?ns=name.test" % SD)
t.ok(st == 404 and err_code(b) == "UNSUPPORTED",
     "upstream 404 NAME_UNKNOWN: the client still gets UNSUPPORTED", diag=(st, b[:200]))
nimg = nameup.add_image("real/app", "v1")
st, h, b = m.get("/v2/real/app/referrers/%s?ns=name.test" % nimg["manifest"])
t.ok(st == 200 and h.get("content-type") == MT_OCI_INDEX,
     "after a NAME_UNKNOWN 404, the registry's API is not written off", diag=(st, b[:200]))
t.is_(json.loads(b).get("manifests") if st == 200 else None, [],
      "no referrers: an empty index")

# ------------------------------------------------------------------------------------
# regmirror hosts --referrers


def hosts_caps(extra):
    out = ws.unique("hosts")
    r = m.hosts(out, ["ghcr.io"], extra)
    try:
        with open(os.path.join(out, "ghcr.io", "hosts.toml")) as f:
            text = f.read()
    except OSError:
        text = ""
    mm = re.search(r"capabilities = \[([^\]]*)\]", text)
    return r.rc, mm.group(1) if mm else None


t.is_(hosts_caps([]), (0, '"pull", "resolve"'), "hosts: no referrers capability by default")
t.is_(hosts_caps(["--referrers"]), (0, '"pull", "resolve", "referrers"'),
      "hosts --referrers: referrers capability added")
t.is_(hosts_caps(["--capabilities", "pull,referrers"]), (0, '"pull", "referrers"'),
      "hosts --capabilities pull,referrers")
t.is_(hosts_caps(["--capabilities", "pull", "--referrers"]), (0, '"pull", "referrers"'),
      "hosts --capabilities pull --referrers")
t.is_(hosts_caps(["--capabilities", "referrers,referrers"])[0], 2,
      "hosts: referrers twice is a usage error")

t.ok(m.alive(), "mirror still running")
t.done()
