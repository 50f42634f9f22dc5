#!/usr/bin/env python3
"""make check-image: build contrib/Containerfile and run the image it makes, with no registry
pull and no network in the build.

1. The two bases, debian:12 and debian:12-slim, come from debootstrap (--variant=minbase)
   run against the Debian archive this machine's apt uses (read from /etc/apt/sources.list*,
   or RGM_DEBIAN_MIRROR). The Containerfile's package lists (its BUILD_PKGS and RUNTIME_PKGS
   ARGs) are put in them with --include, so the build needs no network: its apt-get steps
   find every package installed and are skipped. Each base is cached as a tarball in
   RGM_IMAGE_CACHE (default /var/tmp/regmirror-image-cache) for a week, keyed by the
   archive, the suite and the package list.
2. podman imports them into a private storage root (vfs) as localhost/debian:12 and
   localhost/debian:12-slim, where the FROM lines resolve with --pull=never and no search
   registry, and builds the Containerfile from the tracked files of the source tree with
   --network=none.
3. Checks: compressed size (podman save | gzip) under 40 MB, USER 65532 (configured and in
   effect), the default command; then runs the image (host network, listening on
   127.0.0.1 only) in front of a docker-registry on 127.0.0.1: /v2/ answers 200, skopeo
   pulls an image through it, the second pull is served from the cache.

TAP on stdout; exits 1 on any failure. A missing tool is a failure, not a skip.
"""

import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

os.environ.setdefault("RGM_TMPDIR", "/var/tmp")   # the vfs storage needs ~2 GB of disk
import rgmtest  # noqa: E402
from rgmtest import MANIFEST_ACCEPT, sha256_digest  # noqa: E402

SRCDIR = rgmtest.RGM_SRCDIR
BUILDDIR = rgmtest.RGM_BUILDDIR
SUITE = "bookworm"                      # what debian:12 is
SIZE_LIMIT = 40 * 1000 * 1000           # compressed bytes
CACHE_MAX_AGE = 7 * 24 * 3600           # rebuild a base after a week (security updates)
IMAGE = "localhost/regmirror:check-image"
TOOLS = ["debootstrap", "podman", "tar", "gzip", "docker-registry", "skopeo"]
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

t = rgmtest.TAP(timeout=int(os.environ.get("RGM_IMAGE_TIMEOUT", "1200")))
T0 = time.monotonic()
timings = {}


def finish():
    """t.done() (plan, cleanup) with exit status 1 when anything failed."""
    for k, v in timings.items():
        t.diag("time %s: %.1f s" % (k, v))
    t.diag("time total: %.1f s" % (time.monotonic() - T0))
    failed = t.failed
    try:
        t.done()
    except SystemExit:
        sys.exit(1 if failed else 0)


# ------------------------------------------------------------------------------------
# tools

missing = [x for x in TOOLS if not shutil.which(x)]
if not os.path.isfile(KEYRING):
    missing.append(KEYRING)
t.ok(not missing, "tools present: %s" % " ".join(TOOLS + ["debian-archive-keyring"]),
     diag="missing: %s (./bootstrap installs them)" % " ".join(missing))
if missing:
    finish()

ws = rgmtest.Workspace(prefix="rgm-image-")


# ------------------------------------------------------------------------------------
# the Debian archive apt uses here

def apt_mirror():
    """First http(s) URI of a 'deb' source for SUITE with component main, from the
    one-line sources.list files and the deb822 .sources files."""
    if os.environ.get("RGM_DEBIAN_MIRROR"):
        return os.environ["RGM_DEBIAN_MIRROR"]
    found = []
    files = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list"))
    for fn in files:
        try:
            lines = open(fn).read().splitlines()
        except OSError:
            continue
        for line in lines:
            line = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
            if len(line) >= 4 and line[0] == "deb" and line[2] == SUITE and "main" in line[3:]:
                found.append(line[1])
    for fn in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        try:
            stanzas = re.split(r"\n\s*\n", open(fn).read())
        except OSError:
            continue
        for st in stanzas:
            fields = {}
            for line in st.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                k, _, v = line.partition(":")
                fields[k.strip().lower()] = v.split()
            if ("deb" in fields.get("types", []) and SUITE in fields.get("suites", []) and
                    "main" in fields.get("components", []) and
                    fields.get("enabled", ["yes"])[0] != "no"):
                found += fields.get("uris", [])
    found = [u for u in found if u.startswith(("http://", "https://"))]
    return found[0].rstrip("/") if found else None


mirror = apt_mirror()
t.ok(mirror, "the Debian archive apt uses here (%s, main)" % SUITE,
     diag="no 'deb' source for %s main in /etc/apt/sources.list*; set RGM_DEBIAN_MIRROR"
     % SUITE)
if not mirror:
    finish()


# ------------------------------------------------------------------------------------
# the bases

def containerfile_arg(name):
    with open(os.path.join(SRCDIR, "contrib", "Containerfile")) as f:
        m = re.search(r'^ARG %s="([^"]*)"' % name, f.read(), re.M)
    if not m:
        raise RuntimeError("contrib/Containerfile has no ARG %s=\"...\"" % name)
    return m.group(1).split()


SLIM_EXCLUDES = """# as in the debian:*-slim images: no documentation or translations
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
"""


def trim(root, slim):
    """What debootstrap leaves that an image should not carry: apt lists and caches, logs,
    the host's resolv.conf and hostname; for slim also docs, man pages and locales."""
    for pat in ("var/lib/apt/lists/*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb",
                "var/log/*.log", "var/log/apt/*", "var/cache/debconf/*-old", "etc/resolv.conf",
                "var/lib/dpkg/*-old"):
        for p in glob.glob(os.path.join(root, pat)):
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.unlink(p)
    with open(os.path.join(root, "etc", "hostname"), "w") as f:
        f.write("localhost\n")
    if slim:
        with open(os.path.join(root, "etc/dpkg/dpkg.cfg.d/docker-slim"), "w") as f:
            f.write(SLIM_EXCLUDES)
        for d in ("usr/share/man", "usr/share/groff", "usr/share/info", "usr/share/lintian",
                  "usr/share/linda", "usr/share/locale"):
            for p in glob.glob(os.path.join(root, d, "*")):
                if os.path.isdir(p) and not os.path.islink(p):
                    shutil.rmtree(p)
                else:
                    os.unlink(p)
        for p in glob.glob(os.path.join(root, "usr/share/doc/*")):
            if os.path.isdir(p) and not os.path.islink(p):
                for q in os.listdir(p):
                    if q != "copyright":
                        qq = os.path.join(p, q)
                        if os.path.isdir(qq) and not os.path.islink(qq):
                            shutil.rmtree(qq)
                        else:
                            os.unlink(qq)


def unmount_under(root):
    """What a failed debootstrap may leave mounted in its target (proc, sys)."""
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    for p in sorted((p for p in points if p.startswith(root + "/")), reverse=True):
        rgmtest.run(["umount", "-l", p], timeout=30, check=False)


def base_tarball(cache, name, pkgs, slim, debs):
    """The cached tarball of one base, made with debootstrap when missing or old. Returns
    (path, seconds spent, True when it was built now)."""
    key = hashlib.sha256(json.dumps([mirror, SUITE, "minbase", sorted(pkgs), slim,
                                     SLIM_EXCLUDES, 1]).encode()).hexdigest()[:16]
    path = os.path.join(cache, "%s.%s.tar" % (name, key))
    if os.path.isfile(path) and time.time() - os.path.getmtime(path) < CACHE_MAX_AGE:
        return path, 0.0, False
    t0 = time.monotonic()
    root = ws.path("rootfs-" + name)
    cmd = ["debootstrap", "--variant=minbase", "--keyring=" + KEYRING, "--cache-dir=" + debs,
           "--include=" + ",".join(pkgs), SUITE, root, mirror]
    r = rgmtest.run(cmd, timeout=900, check=False)
    if r.rc != 0:
        unmount_under(root)
        log = ""
        try:
            log = open(os.path.join(root, "debootstrap", "debootstrap.log")).read()[-3000:]
        except OSError:
            pass
        raise RuntimeError("debootstrap %s failed (%s):\n%s\n%s" % (name, r.rc, r.out[-3000:],
                                                                    log))
    trim(root, slim)
    for old in glob.glob(os.path.join(cache, "%s.*.tar" % name)):
        os.unlink(old)
    tmp = path + ".tmp"
    rgmtest.run(["tar", "--numeric-owner", "--xattrs", "-C", root, "-cf", tmp, "."],
                timeout=300)
    os.rename(tmp, path)
    shutil.rmtree(root, ignore_errors=True)
    return path, time.monotonic() - t0, True


cache = os.environ.get("RGM_IMAGE_CACHE") or "/var/tmp/regmirror-image-cache"
os.makedirs(cache, exist_ok=True)
lockf = open(os.path.join(cache, "lock"), "w")
fcntl.flock(lockf, fcntl.LOCK_EX)       # one run at a time fills the cache
debs = ws.mkdir("debs")                 # the .debs both bases share, for this run only
build_pkgs = containerfile_arg("BUILD_PKGS")
runtime_pkgs = containerfile_arg("RUNTIME_PKGS")
# The image builds what ./bootstrap builds: every build package bootstrap installs must be in
# the Containerfile's list too (a new library otherwise breaks only the image).
with open(os.path.join(SRCDIR, "bootstrap")) as f:
    m = re.search(r'^BUILD_PKGS="([^"]*)"', f.read(), re.M)
boot_pkgs = m.group(1).replace("\\\n", " ").split() if m else []
t.ok(boot_pkgs and set(boot_pkgs) <= set(build_pkgs),
     "the Containerfile's BUILD_PKGS hold bootstrap's BUILD_PKGS",
     diag=sorted(set(boot_pkgs) - set(build_pkgs)))
bases = {}
for tag, pkgs, slim in (("12-slim", runtime_pkgs, True), ("12", build_pkgs, False)):
    try:
        path, secs, built = base_tarball(cache, "debian-" + tag, pkgs, slim, debs)
        bases[tag] = path
        timings["base debian:%s %s" % (tag, "debootstrap" if built else "cached")] = secs
        t.ok(True, "base debian:%s: %s (%.1f MB tar)%s" % (
            tag, "debootstrap --variant=minbase" if built else "cached",
            os.path.getsize(path) / 1e6, " in %.0f s" % secs if built else ""))
    except (RuntimeError, rgmtest.RunError) as e:
        t.ok(False, "base debian:%s" % tag, diag=str(e))
fcntl.flock(lockf, fcntl.LOCK_UN)
if len(bases) != 2:
    finish()


# ------------------------------------------------------------------------------------
# podman with a private root, vfs, no search registries

pdir = ws.mkdir("podman")
ws.write("podman/registries.conf", 'unqualified-search-registries = []\n')
ws.write("podman/auth.json", "{}\n")
# The nofile/nproc limits: rootful podman asks for more than a sandbox without
# CAP_SYS_RESOURCE may grant; these are plenty for a build and one mirror.
ws.write("podman/containers.conf", "\n".join([
    "[containers]",
    'default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]',
    "[engine]",
    'runtime = "runc"',                  # always there: containerd depends on it
    'cgroup_manager = "cgroupfs"',
    'events_logger = "file"',
    ""]))
ws.write("podman/storage.conf", "\n".join([
    "[storage]",
    'driver = "vfs"',
    'graphroot = "%s"' % os.path.join(pdir, "root"),
    'runroot = "%s"' % os.path.join(pdir, "run"),
    ""]))
PENV = dict(os.environ)
PENV.update({
    "CONTAINERS_REGISTRIES_CONF": os.path.join(pdir, "registries.conf"),
    "CONTAINERS_CONF": os.path.join(pdir, "containers.conf"),
    "CONTAINERS_STORAGE_CONF": os.path.join(pdir, "storage.conf"),
    "REGISTRY_AUTH_FILE": os.path.join(pdir, "auth.json"),
})
for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
    PENV.pop(k, None)
PODMAN = ["podman", "--root", os.path.join(pdir, "root"), "--runroot",
          os.path.join(pdir, "run"), "--storage-driver", "vfs"]


def podman(*args, timeout=120, check=True, stderr=True):
    return rgmtest.run(PODMAN + list(args), timeout=timeout, check=check, env=PENV,
                       stderr=stderr)


def teardown():
    podman("rm", "--all", "--force", "--time", "2", timeout=60, check=False)


ws.add_cleanup(teardown)      # runs before the workspace (and the storage) is removed

t0 = time.monotonic()
ok = True
out = ""
for tag, path in sorted(bases.items()):
    r = podman("import", "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:"
               "/usr/bin:/sbin:/bin", "--change", 'CMD ["bash"]', path,
               "localhost/debian:" + tag, timeout=300, check=False)
    ok = ok and r.rc == 0
    out += r.out[-1500:]
timings["podman import"] = time.monotonic() - t0
t.ok(ok, "podman import: localhost/debian:12 and localhost/debian:12-slim", diag=out)
if not ok:
    finish()


# ------------------------------------------------------------------------------------
# the build

def context_dir():
    """The files a clean checkout has: git's tracked files, or `make distdir` in a tree
    without git (an unpacked tarball). Build output never goes into the context."""
    ctx = ws.path("context")
    if os.path.isdir(os.path.join(SRCDIR, ".git")) or os.path.isfile(
            os.path.join(SRCDIR, ".git")):
        r = rgmtest.run(["git", "-C", SRCDIR, "ls-files", "-z"], timeout=60, stderr=False)
        os.makedirs(ctx)
        for rel in r.out.split("\0"):
            src = os.path.join(SRCDIR, rel)
            if not rel or not os.path.lexists(src):
                continue                # deleted in the work tree
            dst = os.path.join(ctx, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(src, dst, follow_symlinks=False)
    else:
        rgmtest.run(["make", "-C", BUILDDIR, "distdir", "distdir=" + ctx,
                     "top_distdir=" + ctx], timeout=300)
    return ctx


ctx = context_dir()
t0 = time.monotonic()
r = podman("build", "--pull=never", "--network=none", "--layers=false", "-f",
           os.path.join(ctx, "contrib", "Containerfile"), "-t", IMAGE, ctx, timeout=900,
           check=False)
timings["podman build"] = time.monotonic() - t0
built = r.rc == 0
t.ok(built, "podman build contrib/Containerfile (--network=none, --pull=never) in %.0f s"
     % timings["podman build"], diag=r.out[-3000:])
if not built:
    finish()
t.ok("Reading package lists" not in r.out,
     "the build installed nothing: the bases have the Containerfile's packages",
     diag=r.out[-2000:])


# ------------------------------------------------------------------------------------
# size, user, command

t0 = time.monotonic()
save = subprocess.Popen(PODMAN + ["save", "--format", "oci-archive", IMAGE],
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=PENV)
gzp = subprocess.Popen(["gzip", "-c"], stdin=save.stdout, stdout=subprocess.PIPE)
save.stdout.close()
gz = 0
while True:
    b = gzp.stdout.read(1 << 20)
    if not b:
        break
    gz += len(b)
rc = (save.wait(timeout=60), gzp.wait(timeout=60))
timings["size measurement"] = time.monotonic() - t0
r = podman("image", "inspect", "--format", "{{.Size}}", IMAGE, timeout=60, check=False,
           stderr=False)
t.ok(rc == (0, 0) and 0 < gz < SIZE_LIMIT,
     "image size: %.1f MB compressed (podman save | gzip -c | wc -c; limit %.0f MB), %.1f MB "
     "unpacked" % (gz / 1e6, SIZE_LIMIT / 1e6, int(r.out.strip() or 0) / 1e6),
     diag="podman save, gzip exit codes %r" % (rc,))

r = podman("image", "inspect", IMAGE, timeout=60, check=False, stderr=False)
try:
    cfg = json.loads(r.out)[0]["Config"]
except (ValueError, IndexError, KeyError):
    cfg = {}
t.is_(cfg.get("User"), "65532:65532", "image config: USER 65532:65532")
t.is_(cfg.get("Entrypoint"), ["/usr/local/bin/regmirror", "serve"],
      "image config: ENTRYPOINT regmirror serve")
t.is_(cfg.get("Cmd"), ["--listen", "0.0.0.0:5000", "--storage", "/var/lib/regmirror"],
      "image config: CMD listens on all interfaces of the pod, cache in the volume")
t.ok("/var/lib/regmirror" in (cfg.get("Volumes") or {}), "image config: VOLUME /var/lib/regmirror",
     diag=cfg.get("Volumes"))
r = podman("run", "--rm", "--network=none", "--entrypoint", "sh", IMAGE, "-c",
           "id -u; id -g; stat -c %u:%a /var/lib/regmirror; /usr/local/bin/regmirror --version",
           timeout=60, check=False)
t.is_(r.out.split()[:4] if r.rc == 0 else r.out[-800:], ["65532", "65532", "65532:750",
                                                         "regmirror"],
      "in the container: uid and gid 65532, owns its cache directory, the binary runs")


# ------------------------------------------------------------------------------------
# run it in front of a docker-registry

reg = rgmtest.Registry(ws, name="upstream")
img = rgmtest.make_image(ws, "library/app:v1", layers=[30_000, 700_000])
pushed = rgmtest.push(img, reg)
port = rgmtest.free_port()
name = "rgm-check-image-%d" % os.getpid()
r = podman("run", "-d", "--name", name, "--network=host", IMAGE,
           "--listen", "127.0.0.1:%d" % port, "--storage", "/var/lib/regmirror",
           "--registry", "docker.io=" + reg.url, timeout=120, check=False)
started = r.rc == 0
t.ok(started, "podman run -d (host network, listening on 127.0.0.1:%d)" % port,
     diag=r.out[-1500:])
url = "http://127.0.0.1:%d" % port


def served():
    st, _, _ = rgmtest.http("GET", url + "/v2/", timeout=2)
    return st == 200


try:
    rgmtest.wait_for(served, timeout=30, what="the mirror in the container")
    up = True
except TimeoutError:
    up = False
t.ok(up, "the container serves GET /v2/ with 200",
     diag=podman("logs", name, timeout=30, check=False).out[-2000:])
if not up:
    finish()
st, _, body = rgmtest.http("GET", url + "/readyz", timeout=5)
t.is_((st, body), (200, b"ready\n"), "GET /readyz: ready (the volume is writable by 65532)")

SENV = dict(PENV)
cdir = ws.path("pulled")
r = rgmtest.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                 "docker://127.0.0.1:%d/library/app:v1" % port, "dir:" + cdir], timeout=120,
                check=False, env=SENV)
ok = r.rc == 0 and os.path.isfile(os.path.join(cdir, "manifest.json"))
digests = [img["config"]] + [x["digest"] for x in img["layers"]]
if ok:
    with open(os.path.join(cdir, "manifest.json"), "rb") as f:
        ok = sha256_digest(f.read()) == pushed["digest"]
    for d in digests:
        fp = os.path.join(cdir, d.split(":", 1)[1])
        ok = ok and os.path.isfile(fp) and sha256_digest(open(fp, "rb").read()) == d
t.ok(ok, "skopeo copy through the container: manifest, config and layers verified",
     diag=r.out[-1500:])
counts = [reg.count_requests("GET", "/blobs/" + d) for d in digests]
t.is_(counts, [1] * len(digests), "one upstream GET per blob")

# second pull: from the cache in the container's volume, nothing new upstream
before = len(reg.access_log_lines())
hits = []
for d in digests:
    st, h, b = rgmtest.http("GET", url + "/v2/library/app/blobs/%s?ns=docker.io" % d,
                            timeout=30)
    hits.append((st, h.get("x-cache"), sha256_digest(b) == d))
st, h, b = rgmtest.http("GET", url + "/v2/library/app/manifests/v1?ns=docker.io",
                        headers={"Accept": MANIFEST_ACCEPT}, timeout=30)
t.is_(hits, [(200, "HIT", True)] * len(digests), "second pull: every blob a HIT, same bytes")
t.is_((st, h.get("docker-content-digest")), (200, pushed["digest"]),
      "second pull: the manifest, same digest")
blob_gets = [x for x in reg.access_log_lines()[before:] if "/blobs/" in x.path]
t.is_(blob_gets, [], "second pull: no upstream blob request")

r = podman("stop", "--time", "10", name, timeout=60, check=False)
r2 = podman("inspect", "--format", "{{.State.ExitCode}}", name, timeout=30, check=False)
t.is_(r2.out.strip(), "0", "podman stop: the mirror exits 0 on SIGTERM")
finish()
