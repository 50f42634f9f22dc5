#!/usr/bin/env python3
"""73-lazy: lazy pulling (eStargz) through the mirror: many concurrent Range requests on cold
and warm blobs, in the pattern of the stargz snapshotter.

Debian 12's stargz-snapshotter package (0.12) ships only ctr-remote, not the snapshotter
daemon (containerd-stargz-grpc), so a real lazy pull cannot run here. This test makes a real
eStargz image with ctr-remote (`images convert --estargz --oci`) and then drives, with curl,
the requests the snapshotter (fs/remote, 0.12) sends for each layer:

  1. GET Range bytes=0-1 (its redirect probe), then HEAD (the blob size);
  2. from then on, the background fetch of every 50000-byte chunk of the blob, 16 at a
     time, while it reads the footer (last chunk), then the TOC (stargz.index.json)
     chunks, then the chunks of one file (an on-demand read; one multi-range request);

then decompresses the file from the chunks it got and compares it with the original.

Cold: the upstream (a throttled fake registry) sends each layer slowly, so the Range
requests arrive while the mirror's single fetch is in flight. Warm: the same pattern again,
all from cache. Registries: docker.io (the snapshotter sends no ?ns=: the mirror's default
registry serves it) and ghcr.io (through the /v2/ghcr.io/ path prefix, i.e. images named
MIRROR/ghcr.io/...); the plain path the snapshotter would send for a ghcr.io mirror host
goes to the default registry, which is why docs/deploy.md says what to configure.
"""

import collections
import gzip
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
import zlib

import fakeup
import rgmtest
from rgmtest import http, run, sha256_digest

t = rgmtest.TAP(timeout=240)
ws = rgmtest.Workspace()
T0 = time.monotonic()

for tool in ("ctr-remote", "curl", "containerd"):
    if not shutil.which(tool):
        t.ok(False, "%s is installed (bootstrap installs it)" % tool)
        t.done()

CHUNK = 50000          # the snapshotter's HTTP fetch chunk (fs/remote defaultChunkSize)
PARALLEL = 16
FOOTER = 51            # eStargz footer size
MT_ESGZ_TOC = "containerd.io/snapshot/stargz/toc.digest"


mirror_access = rgmtest.mirror_access


# --------------------------------------------------------------------------------------
# 1. a source image (one layer with a big file, a text file and small files), converted to
#    eStargz by ctr-remote in a private containerd

def source_layout(tag_name, seed):
    files = {"etc/hello.txt": ("hello from %s\n" % seed).encode() * 50,
             "data/big.bin": os.urandom(1_200_000)}
    for i in range(30):
        files["data/small-%02d.txt" % i] = ("%s small file %d\n" % (seed, i)).encode() * 40
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for d in ("etc", "data"):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1700000000
            tf.addfile(ti)
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 1700000000
            tf.addfile(ti, io.BytesIO(data))
    tar = raw.getvalue()
    gz = gzip.compress(tar, mtime=0)
    lay = ws.unique("src-" + seed)
    os.makedirs(os.path.join(lay, "blobs", "sha256"))

    def put(b):
        d = sha256_digest(b)
        with open(os.path.join(lay, "blobs", "sha256", d[7:]), "wb") as f:
            f.write(b)
        return d
    cfg = json.dumps({"architecture": "amd64", "os": "linux",
                      "config": {"Env": ["PATH=/bin"]},
                      "rootfs": {"type": "layers", "diff_ids": [sha256_digest(tar)]}}).encode()
    man = json.dumps({"schemaVersion": 2, "mediaType": rgmtest.MT_OCI_MANIFEST,
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                 "digest": put(cfg), "size": len(cfg)},
                      "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                  "digest": put(gz), "size": len(gz)}]}).encode()
    md = put(man)
    with open(os.path.join(lay, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion": "1.0.0"}')
    with open(os.path.join(lay, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": rgmtest.MT_OCI_MANIFEST, "digest": md, "size": len(man),
            "annotations": {"org.opencontainers.image.ref.name": tag_name}}]}, f)
    archive = lay + ".tar"
    with tarfile.open(archive, "w") as tf:
        for fn in ("oci-layout", "index.json", "blobs"):
            tf.add(os.path.join(lay, fn), arcname=fn)
    return archive, files


cd = rgmtest.Containerd(ws, name="cd-convert")
ver = run(["dpkg-query", "-W", "-f", "${Version}", "stargz-snapshotter"], timeout=30,
          check=False).out.strip()
t.diag("client: ctr-remote of stargz-snapshotter %s (Debian package); curl %s" % (
    ver, run(["curl", "--version"], timeout=30).out.split()[1]))


def ctr_remote(*args, timeout=120):
    return run(["ctr-remote", "--address", cd.address, "-n", cd.namespace] + list(args),
               timeout=timeout, check=False)


def content(digest):
    p = subprocess.run(["ctr", "--address", cd.address, "-n", cd.namespace, "content", "get",
                        digest], capture_output=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError("ctr content get %s: %s" % (digest, p.stderr.decode()[-500:]))
    return p.stdout


def make_estargz(seed):
    """Returns {manifest, manifest_bytes, config, layers[{digest, size, toc}], blobs{d: bytes},
    files{name: bytes}}."""
    archive, files = source_layout("1", seed)
    src, dst = "example.test/src/%s:1" % seed, "example.test/esgz/%s:1" % seed
    r = ctr_remote("images", "import", "--no-unpack", "--base-name", "example.test/src/" + seed,
                   archive)
    if r.rc != 0:
        raise RuntimeError("ctr-remote images import: " + r.out[-2000:])
    r = ctr_remote("images", "convert", "--estargz", "--oci", "--estargz-chunk-size", "200000",
                   src, dst, timeout=180)
    if r.rc != 0:
        raise RuntimeError("ctr-remote images convert --estargz: " + r.out[-2000:])
    r = ctr_remote("images", "ls")
    line = [ln for ln in r.out.splitlines() if ln.startswith(dst + " ")]
    if not line:
        raise RuntimeError("converted image not listed:\n" + r.out)
    md = re.search(r"sha256:[0-9a-f]{64}", line[0]).group(0)
    mb = content(md)
    man = json.loads(mb)
    blobs = {md: mb, man["config"]["digest"]: content(man["config"]["digest"])}
    layers = []
    for L in man["layers"]:
        blobs[L["digest"]] = content(L["digest"])
        layers.append({"digest": L["digest"], "size": L["size"],
                       "toc": (L.get("annotations") or {}).get(MT_ESGZ_TOC)})
    return {"manifest": md, "manifest_bytes": mb, "config": man["config"]["digest"],
            "layers": layers, "blobs": blobs, "files": files}


esgz_hub = make_estargz("hub")
esgz_gh = make_estargz("gh")
for label, e in (("docker.io", esgz_hub), ("ghcr.io", esgz_gh)):
    L = e["layers"][0]
    blob = e["blobs"][L["digest"]]
    t.ok(L["toc"] and L["toc"].startswith("sha256:"),
         "%s image: the layer is eStargz (TOC digest annotation)" % label, diag=L)
    t.ok(blob[-FOOTER:].find(b"STARGZ") > 0, "%s image: the layer ends with the eStargz footer"
         % label)
    t.ok(len(blob) > 20 * CHUNK, "%s image: layer is %d bytes (%d chunks of %d)"
         % (label, len(blob), -(-len(blob) // CHUNK), CHUNK))
cd.stop()

# --------------------------------------------------------------------------------------
# 2. upstreams (fake registries: throttled blobs) and the mirror

THROTTLE = 1_000_000            # bytes/s: a ~1.2 MB layer takes ~1.2 s cold


def upstream(name, repo, e):
    up = fakeup.FakeUpstream(name=name)
    for d, b in e["blobs"].items():
        if d != e["manifest"]:
            up.add_blob(b)
    up.add_manifest(repo, "1", e["manifest_bytes"], rgmtest.MT_OCI_MANIFEST)
    for L in e["layers"]:
        up.behave("/blobs/" + L["digest"], throttle=THROTTLE)
    return up


hub = upstream("hub", "library/lazy", esgz_hub)
gh = upstream("ghcr", "org/lazy", esgz_gh)
m = rgmtest.Mirror(ws, config={"default_registry": "docker.io", "registries": {
    "docker.io": {"endpoint": hub.url}, "ghcr.io": {"endpoint": gh.url}}})

# --------------------------------------------------------------------------------------
# 3. the snapshotter's request pattern, with curl


class Curl:
    """Many transfers in one `curl --parallel` run: (name, method, range or None)."""

    def __init__(self, url):
        self.url = url
        self.dir = ws.unique("curl")
        self.n = 0

    def start(self, reqs, parallel=PARALLEL):
        cfg = []
        outs = []
        for name, method, rng in reqs:
            self.n += 1
            body = os.path.join(self.dir, "%d.body" % self.n)
            hdr = os.path.join(self.dir, "%d.hdr" % self.n)
            if cfg:
                cfg.append("next")
            cfg += ['url = "%s"' % self.url, 'output = "%s"' % body, 'dump-header = "%s"' % hdr,
                    'header = "Accept-Encoding: identity"', "silent", "show-error",
                    'noproxy = "*"', "max-time = 60"]
            if method == "HEAD":
                cfg.append("head")
            if rng:
                cfg.append('range = "%s"' % rng)
            outs.append((name, method, rng, body, hdr))
        cf = os.path.join(self.dir, "batch-%d.cfg" % self.n)
        with open(cf, "w") as f:
            f.write("\n".join(cfg) + "\n")
        p = subprocess.Popen(["curl", "--parallel", "--parallel-immediate", "--parallel-max",
                              str(parallel), "-K", cf], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True)
        ws.add_cleanup(lambda: p.poll() is None and p.kill())
        return p, outs

    @staticmethod
    def finish(started, timeout=90):
        p, outs = started
        out, _ = p.communicate(timeout=timeout)
        res = []
        for name, method, rng, body, hdr in outs:
            try:
                with open(hdr, "rb") as f:
                    htext = f.read().decode(errors="replace")
            except OSError:
                htext = ""
            try:
                with open(body, "rb") as f:
                    data = f.read()
            except OSError:
                data = b""
            mm = re.match(r"HTTP/\S+ (\d{3})", htext)
            hdrs = {}
            for ln in htext.splitlines()[1:]:
                k, _, v = ln.partition(":")
                hdrs[k.strip().lower()] = v.strip()
            res.append({"name": name, "method": method, "range": rng,
                        "status": int(mm.group(1)) if mm else 0, "headers": hdrs, "body": data})
        return p.returncode, out.decode(errors="replace"), res

    def run(self, reqs, parallel=PARALLEL):
        return self.finish(self.start(reqs, parallel))


def chunk_ranges(begin, end):
    """The snapshotter's 50000-byte aligned chunks covering [begin, end)."""
    out = []
    c = begin // CHUNK * CHUNK
    while c < end:
        out.append((c, min(c + CHUNK, SIZE) - 1))
        c += CHUNK
    return out


def range_ok(r, blob):
    """r answered its range correctly: 206 + matching Content-Range and bytes, or (for a
    multi-range request) 200 with the whole blob or a 206 multipart body."""
    if r["method"] == "HEAD":
        return r["status"] == 200 and r["headers"].get("content-length") == str(len(blob))
    spec = r["range"]
    if "," in spec:
        if r["status"] == 200:
            return r["body"] == blob
        return r["status"] == 206 and "multipart/byteranges" in r["headers"].get(
            "content-type", "")
    a, b = (int(x) for x in spec.split("-"))
    return (r["status"] == 206 and r["body"] == blob[a:b + 1] and
            r["headers"].get("content-range") == "bytes %d-%d/%d" % (a, b, len(blob)))


def read_file_from_chunks(have, toc_entries, name, toc_off):
    """Decompress one file from the blob bytes we fetched (have: {offset: bytes}) the way the
    snapshotter's reader does: each chunk entry is a gzip member at its offset."""
    offsets = sorted(set(e["offset"] for e in toc_entries if e.get("offset")) | {toc_off})
    buf = bytearray()
    for e in toc_entries:
        if e.get("name") != name or e.get("type") not in ("reg", "chunk"):
            continue
        start = e["offset"]
        end = min(o for o in offsets if o > start)
        data = blob_slice(have, start, end)
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        plain = d.decompress(data)
        size = e.get("chunkSize") or (e["size"] - e.get("chunkOffset", 0))
        buf += plain[:size]
    return bytes(buf)


def blob_slice(have, start, end):
    out = bytearray()
    for c in range(start // CHUNK * CHUNK, end, CHUNK):
        out += have[c]
    base = start // CHUNK * CHUNK
    return bytes(out[start - base:end - base])


def lazy_pull(label, url_base, e, fname):
    """One layer, the snapshotter's sequence. Returns (all results, file bytes); a pattern
    that cannot go on (no size, no footer, no TOC) is a failed test, not a crash."""
    try:
        return _lazy_pull(label, url_base, e, fname)
    except (ValueError, KeyError, IndexError, tarfile.TarError, zlib.error,
            subprocess.TimeoutExpired) as ex:
        t.ok(False, "%s: the snapshotter's request sequence" % label, diag=repr(ex))
        return [], b""


def _lazy_pull(label, url_base, e, fname):
    global SIZE
    L = e["layers"][0]
    blob = e["blobs"][L["digest"]]
    SIZE = len(blob)
    c = Curl(url_base + "/blobs/" + L["digest"])
    results = []
    # 1. redirect probe, then size
    rc, out, rs = c.run([("probe", "GET", "0-1")])
    results += rs
    rc, out, rs = c.run([("size", "HEAD", None)])
    results += rs
    size = int(rs[0]["headers"].get("content-length") or 0)
    if size != len(blob):
        raise ValueError("HEAD: size %d, status %d" % (size, rs[0]["status"]))
    # the background fetch of every chunk, 16 at a time, from now on (it overlaps the
    # footer, TOC and file reads below, as on a node that starts several containers)
    bg = c.start([("background", "GET", "%d-%d" % r) for r in chunk_ranges(0, size)])
    # 2. footer chunk, then the TOC's chunks
    have = {}
    rc, out, rs = c.run([("footer", "GET", "%d-%d" % r) for r in chunk_ranges(size - FOOTER,
                                                                            size)])
    results += rs
    for r in rs:
        have[int(r["range"].split("-")[0])] = r["body"]
    foot = blob_slice(have, size - FOOTER, size)
    mm = re.search(rb"([0-9a-f]{16})STARGZ", foot)
    if not mm:
        raise ValueError("no eStargz footer in the last chunk")
    toc_off = int(mm.group(1), 16)
    need = [r for r in chunk_ranges(toc_off, size - FOOTER) if r[0] not in have]
    rc, out, rs = c.run([("toc", "GET", "%d-%d" % r) for r in need])
    results += rs
    for r in rs:
        have[int(r["range"].split("-")[0])] = r["body"]
    toc_gz = blob_slice(have, toc_off, size - FOOTER)
    with tarfile.open(fileobj=io.BytesIO(zlib.decompressobj(16 + zlib.MAX_WBITS)
                                         .decompress(toc_gz))) as tf:
        toc = json.load(tf.extractfile("stargz.index.json"))
    ents = toc["entries"]
    # 3. the file's chunks (one multi-range request for the first and last, then single
    #    ranges), while the background fetch goes on
    fe = [x for x in ents if x.get("name") == fname and x.get("type") in ("reg", "chunk")]
    offs = sorted(set(x["offset"] for x in ents if x.get("offset")) | {toc_off})
    lo = min(x["offset"] for x in fe)
    hi = min(o for o in offs if o > max(x["offset"] for x in fe))
    fr = [r for r in chunk_ranges(lo, hi)]
    reqs = [("file-multi", "GET", "%d-%d,%d-%d" % (fr[0] + fr[-1]))] if len(fr) > 1 else []
    reqs += [("file", "GET", "%d-%d" % r) for r in fr]
    rc, out, rs = c.run(reqs)
    results += rs
    for r in rs:
        if r["name"] == "file" and r["status"] == 206:
            have[int(r["range"].split("-")[0])] = r["body"]
    rc2, out2, rs2 = Curl.finish(bg)
    results += rs2
    try:
        got = read_file_from_chunks(have, ents, fname, toc_off)
    except (KeyError, zlib.error, ValueError) as ex:
        got = b"(%r)" % ex
    for r in results:
        if r["name"] == "file-multi":
            t.diag("%s: multi-range request %s answered %d with %d bytes (blob %d)"
                   % (label, r["range"], r["status"], len(r["body"]), len(blob)))
    bad = [(r["name"], r["range"], r["status"]) for r in results if not range_ok(r, blob)]
    t.is_(bad, [], "%s: every request answered right (%d requests, status and bytes)"
          % (label, len(results)))
    t.ok(toc_off > 0 and any(x.get("name") == fname for x in ents),
         "%s: found the TOC from the footer and %s in it" % (label, fname))
    return results, got


def blob_paths(e, repo_path):
    return [repo_path + "/blobs/" + d for d in [e["config"]] + [L["digest"]
                                                                  for L in e["layers"]]]


# --- docker.io: /v2/library/lazy/... with no ?ns= (what the snapshotter sends)
acc0 = len(mirror_access(m))
st, h, b = http("GET", m.url + "/v2/library/lazy/manifests/1",
                headers={"Accept": rgmtest.MT_OCI_MANIFEST})
t.ok(st == 200 and b == esgz_hub["manifest_bytes"], "docker.io: manifest (no ?ns=)")
layer_hub = esgz_hub["layers"][0]["digest"]
t0 = time.monotonic()
res, got = lazy_pull("docker.io cold", m.url + "/v2/library/lazy", esgz_hub, "data/big.bin")
cold_s = time.monotonic() - t0
t.ok(got == esgz_hub["files"]["data/big.bin"],
     "docker.io cold: data/big.bin read from the Range chunks matches the original")
cold = [a for a in mirror_access(m)[acc0:] if "/blobs/" in a[1]]
kinds = collections.Counter(a[3] for a in cold)
t.diag("lazy cold pull of one layer (docker.io): %d blob requests in %.2fs, by method: %s, "
       "by cache result: %s" % (len(cold), cold_s,
                                dict(collections.Counter(a[0] for a in cold)), dict(kinds)))
t.is_(hub.count("GET", "/blobs/" + layer_hub), 1, "docker.io cold: ONE upstream GET of the layer")
t.is_(hub.count("HEAD", "/blobs/" + layer_hub), 0, "docker.io cold: no upstream HEAD of it "
      "after the fetch started")
t.ok(kinds.get("JOIN", 0) > 0, "docker.io cold: Range requests joined the fetch in flight "
     "(JOIN %d)" % kinds.get("JOIN", 0), diag=dict(kinds))
# Requests parked on the job before the upstream's first answer report MISS too (they waited
# for it with the first): the upstream GET count above is the single-flight check.
t.ok(sum(1 for a in cold if a[0] == "GET" and a[3] == "MISS") >= 1,
     "docker.io cold: the first GET is a MISS (it starts the fetch)", diag=dict(kinds))
t.ok(cold and all(a[1].startswith("/v2/library/lazy/blobs/") and "ns=" not in a[1]
                  for a in cold),
     "docker.io cold: every path as the snapshotter sends it (no ?ns=)")

# warm: the same pattern again, all from cache
acc1 = len(mirror_access(m))
n_up = len(hub.requests)
res, got = lazy_pull("docker.io warm", m.url + "/v2/library/lazy", esgz_hub, "data/small-07.txt")
t.ok(got == esgz_hub["files"]["data/small-07.txt"], "docker.io warm: data/small-07.txt matches")
warm = [a for a in mirror_access(m)[acc1:] if "/blobs/" in a[1]]
t.ok(warm and all(a[3] == "HIT" for a in warm), "docker.io warm: every blob request a HIT (%d)"
     % len(warm), diag=collections.Counter(a[3] for a in warm))
t.is_(len(hub.requests) - n_up, 0, "docker.io warm: no upstream request at all")

# --- what the 0.12 snapshotter would send with the mirror as a ghcr.io mirror host: no ?ns=,
#     no prefix. The mirror takes it for the default registry (docker.io): not found.
n_gh = len(gh.requests)
st, h, b = http("GET", m.url + "/v2/org/lazy/blobs/" + esgz_gh["layers"][0]["digest"],
                headers={"Range": "bytes=0-1"})
t.ok(st in (401, 404), "ghcr.io blob by plain path (no ns, no prefix) is not served (%d): "
     "it goes to the default registry" % st)
t.is_(len(gh.requests) - n_gh, 0, "... and ghcr.io upstream was not asked")

# --- ghcr.io through the path prefix /v2/ghcr.io/ (images named MIRROR/ghcr.io/org/lazy)
hub_org = hub.count(None, "org/lazy")
acc2 = len(mirror_access(m))
st, h, b = http("GET", m.url + "/v2/ghcr.io/org/lazy/manifests/1",
                headers={"Accept": rgmtest.MT_OCI_MANIFEST})
t.ok(st == 200 and b == esgz_gh["manifest_bytes"], "ghcr.io: manifest via /v2/ghcr.io/")
layer_gh = esgz_gh["layers"][0]["digest"]
res, got = lazy_pull("ghcr.io cold", m.url + "/v2/ghcr.io/org/lazy", esgz_gh, "data/big.bin")
t.ok(got == esgz_gh["files"]["data/big.bin"], "ghcr.io cold: data/big.bin matches")
t.is_(gh.count("GET", "/blobs/" + layer_gh), 1, "ghcr.io cold: ONE upstream GET of the layer")
gcold = [a for a in mirror_access(m)[acc2:] if "/blobs/" in a[1]]
t.ok(sum(1 for a in gcold if a[0] == "GET" and a[3] == "MISS") >= 1,
     "ghcr.io cold: the first GET is a MISS", diag=collections.Counter(a[3] for a in gcold))
n_up = len(gh.requests)
res, got = lazy_pull("ghcr.io warm", m.url + "/v2/ghcr.io/org/lazy", esgz_gh, "etc/hello.txt")
t.ok(got == esgz_gh["files"]["etc/hello.txt"], "ghcr.io warm: etc/hello.txt matches")
t.is_(len(gh.requests) - n_up, 0, "ghcr.io warm: no upstream request at all")
t.is_(hub.count(None, "org/lazy") - hub_org, 0,
      "docker.io upstream not asked for org/lazy by the path-prefix pulls")

t.ok(m.alive(), "mirror still running")
t.diag("elapsed %.1fs" % (time.monotonic() - T0))
t.done()
