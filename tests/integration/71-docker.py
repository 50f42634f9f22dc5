#!/usr/bin/env python3
"""71-docker: Docker Engine (Debian docker.io) with "registry-mirrors" pointing at the mirror.

Docker falls back to registry-1.docker.io when its mirror fails, so this whole test (the
upstream docker-registry, the mirror, dockerd and the containerd it starts) runs in a network
namespace of its own with only loopback up: a fallback reaches nothing.

- dockerd with a private data-root, exec-root, pidfile, socket and key file, vfs, no
  iptables, no bridge; the docker CLI with a private DOCKER_CONFIG.
- docker pull of public docker.io images (an OCI multi-arch index, a Docker schema 2
  image): the mirror picks docker.io as its default registry (Docker sends no ?ns= and no
  prefix); each blob is fetched upstream once; after `docker rmi` a second pull is served
  from the mirror's cache (no blob GET upstream).
- with the mirror stopped, a pull fails: dockerd tried registry-1.docker.io (its log says
  so) and could not reach it.
"""

import collections
import json
import os
import re
import shutil
import time

import rgmtest
from rgmtest import run

t = rgmtest.TAP(timeout=240)
links, routes_out = rgmtest.private_netns()          # first: before any thread or child
ws = rgmtest.Workspace()
T0 = time.monotonic()

t.is_([ln.split(":")[1].strip() for ln in links.splitlines() if ":" in ln], ["lo"],
      "private network namespace: loopback only")
t.is_(routes_out.strip(), "", "private network namespace: no route out")

DOCKERD = shutil.which("dockerd")
DOCKER = "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else shutil.which("docker")
if not DOCKERD or not DOCKER:
    t.ok(False, "dockerd and docker are installed (Debian docker.io; bootstrap installs it)")
    t.done()


mirror_access = rgmtest.mirror_access
route = rgmtest.access_route


def blob_digests(img):
    return [img["config"]] + [L["digest"] for L in img["layers"]]


# --------------------------------------------------------------------------------------
# upstream, images, mirror

hub = rgmtest.Registry(ws, name="hub")
img_idx = rgmtest.make_index_image(ws, "library/base:3", layers=[30_000, 300_000])
rgmtest.push(img_idx, hub)
img_v2 = rgmtest.make_image(ws, "team/tool:1", layers=[50_000, 120_000])
p_v2 = rgmtest.push(img_v2, hub, fmt="v2s2")
img_late = rgmtest.make_image(ws, "library/late:1", layers=[10_000])
rgmtest.push(img_late, hub)
amd64 = [im for im in img_idx["images"] if im["platform"]["architecture"] == "amd64"][0]

m = rgmtest.Mirror(ws, config={"default_registry": "docker.io",
                               "registries": {"docker.io": {"endpoint": hub.url}}})

# --------------------------------------------------------------------------------------
# dockerd

dd = ws.unique("dockerd")
sock = os.path.join(dd, "docker.sock")
daemon_json = os.path.join(dd, "daemon.json")
with open(daemon_json, "w") as f:
    json.dump({
        "data-root": os.path.join(dd, "data"),
        "exec-root": os.path.join(dd, "exec"),
        "pidfile": os.path.join(dd, "docker.pid"),
        "deprecated-key-path": os.path.join(dd, "key.json"),   # not /etc/docker/key.json
        "hosts": ["unix://" + sock],
        "storage-driver": "vfs",
        "iptables": False, "ip6tables": False, "ip-forward": False, "ip-masq": False,
        "bridge": "none",
        "exec-opts": ["native.cgroupdriver=cgroupfs"],
        "registry-mirrors": [m.url],
        "log-level": "debug",
    }, f, indent=1)
denv = dict(os.environ, DOCKER_CONFIG=os.path.join(dd, "cli"), HOME=dd)
for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "DOCKER_HOST"):
    denv.pop(k, None)
dproc = ws.spawn([DOCKERD, "--config-file", daemon_json], os.path.join(dd, "dockerd.log"),
                 env=denv)


def docker(*args, timeout=120):
    return run([DOCKER, "-H", "unix://" + sock] + list(args), env=denv, timeout=timeout,
               check=False)


def dockerd_ready():
    if not dproc.alive():
        raise rgmtest.ProcessExited("dockerd exited")
    return os.path.exists(sock) and docker("version", "--format", "{{.Server.Version}}",
                                           timeout=10).rc == 0


try:
    rgmtest.wait_for(dockerd_ready, timeout=60, what="dockerd")
except (TimeoutError, rgmtest.ProcessExited) as e:
    t.ok(False, "dockerd starts", diag="%s\n%s" % (e, dproc.log_text()[-4000:]))
    t.done()
t.diag("client: dockerd %s, docker CLI %s" % (
    docker("version", "--format", "{{.Server.Version}}").out.strip(),
    docker("version", "--format", "{{.Client.Version}}").out.strip()))
info = docker("info", "--format", "{{json .}}").out
try:
    info = json.loads(info)
except ValueError:
    info = {}
t.is_(info.get("Driver"), "vfs", "dockerd: vfs storage driver")
t.is_(info.get("DockerRootDir"), os.path.join(dd, "data"), "dockerd: private data-root")
t.is_((info.get("RegistryConfig") or {}).get("Mirrors"), [m.url + "/"],
      "dockerd: registry-mirrors is the mirror")

# --------------------------------------------------------------------------------------
# 1. docker pull of public images

acc0 = len(mirror_access(m))
r = docker("pull", "library/base:3")
t.is_(r.rc, 0, "docker pull library/base:3 (OCI multi-arch index) through the mirror") \
    or t.diag(r.out[-2000:] + dproc.log_text()[-3000:])
cold = mirror_access(m)[acc0:]
t.diag("docker cold pull of an index image, requests to the mirror by route: %s"
       % json.dumps(dict(collections.Counter(route(a[0], a[1]) for a in cold)),
                    sort_keys=True))
t.ok(cold and all(not a[1].startswith("/v2/docker.io/") and "ns=" not in a[1] for a in cold),
     "Docker sends neither ?ns= nor a registry prefix (the default registry serves it)",
     diag=cold)
r = docker("image", "inspect", "--format", "{{json .RepoDigests}}", "base:3")
t.like(r.out, re.escape("base@" + img_idx["manifest"]), "docker has base:3 by the index digest")
for d in blob_digests(amd64):
    t.is_(hub.wait_count("GET", "/library/base/blobs/" + d, 1), 1,
          "upstream: one GET for amd64 blob %s" % d[7:19])

r = docker("pull", "team/tool:1")
t.is_(r.rc, 0, "docker pull team/tool:1 (Docker schema 2) through the mirror") \
    or t.diag(r.out[-2000:])
r = docker("image", "inspect", "--format", "{{json .RepoDigests}}", "team/tool:1")
t.like(r.out, re.escape("team/tool@" + p_v2["digest"]), "docker has team/tool:1, same digest")
for d in blob_digests(img_v2):
    t.is_(hub.wait_count("GET", "/team/tool/blobs/" + d, 1), 1,
          "upstream: one GET for blob %s" % d[7:19])

# --------------------------------------------------------------------------------------
# 2. rmi and pull again: from the mirror's cache

r = docker("rmi", "base:3", "team/tool:1")
t.is_(r.rc, 0, "docker rmi both images") or t.diag(r.out[-1000:])
up_blobs = hub.count_requests("GET", "/blobs/")
acc1 = len(mirror_access(m))
for ref in ("library/base:3", "team/tool:1"):
    r = docker("pull", ref)
    t.is_(r.rc, 0, "second pull of %s" % ref) or t.diag(r.out[-2000:])
time.sleep(0.3)
warm = mirror_access(m)[acc1:]
wb = [a for a in warm if a[0] == "GET" and "/blobs/" in a[1]]
t.is_(len(wb), len(blob_digests(amd64)) + len(blob_digests(img_v2)),
      "second pulls: every blob asked of the mirror again")
t.ok(wb and all(a[2] == 200 and a[3] == "HIT" for a in wb), "... and answered 200 HIT",
     diag=wb)
t.is_(hub.count_requests("GET", "/blobs/") - up_blobs, 0, "second pulls: no blob GET upstream")

# --------------------------------------------------------------------------------------
# 3. mirror down: Docker falls back to registry-1.docker.io, which the netns makes unreachable

late0 = hub.count_requests(None, "library/late")    # the push
m.stop()
log0 = len(dproc.log_text())
r = docker("pull", "library/late:1", timeout=90)
t.isnt(r.rc, 0, "mirror down: docker pull fails (no way out of the namespace)")
log = dproc.log_text()[log0:]
t.like(log, r"registry-1\.docker\.io", "mirror down: dockerd did try the fallback "
       "registry-1.docker.io")
t.is_(hub.count_requests(None, "library/late") - late0, 0,
      "mirror down: upstream never asked for library/late")

dproc.stop(timeout=20)
t.diag("elapsed %.1fs" % (time.monotonic() - T0))
t.done()
