#!/usr/bin/env python3
"""70-podman: podman (containers/image, the library CRI-O uses too) pulls through a
registries.conf mirror location (the registry as a path prefix: "MIRROR/docker.io").

- vfs storage, private root/runroot, private registries.conf, storage.conf, containers.conf,
  policy.json and auth file (the host's containers configuration is never read or changed);
  every [[registry]] location is a closed loopback port, so a fallback reaches nothing.
- public images of docker.io (multi-arch index, Docker schema 2) and ghcr.io: each blob
  fetched upstream once; a second podman store is served from the mirror's cache.
- a private image the mirror holds node credentials for: podman pulls it anonymously.
- containers/image never sends a client's credentials to a mirror location: with --creds,
  with an auth file entry for the registry, and even with an entry for the mirror location
  itself, no request to the mirror carries Authorization (seen by a HeaderSpy in front of
  the mirror) and the pull fails, although the same credentials work through that mirror
  (curl). (--creds and the registry's entry are kept from mirrors on purpose; and
  containers/image authenticates only when its /v2/ ping is challenged, while the mirror's
  /v2/ answers 200.) So under CRI-O the node identity, credentials the mirror holds, is the
  way.
"""

import collections
import json
import os
import re
import shutil
import tempfile
import time

import rgmtest
from rgmtest import MANIFEST_ACCEPT, http, run

t = rgmtest.TAP(timeout=240)
ws = rgmtest.Workspace()
T0 = time.monotonic()

if not shutil.which("podman"):
    t.ok(False, "podman is installed (bootstrap installs it)")
    t.done()
ver = run(["podman", "--version"], timeout=30).out.strip()
t.diag("client: %s" % ver)

_ACCESS = re.compile(r'\bmod=access method=(\S+) path="((?:[^"\\]|\\.)*)" status=(\d+)')


def mirror_access(m):
    out = []
    for line in m.log_text().splitlines():
        mm = _ACCESS.search(line)
        if mm:
            out.append((mm.group(1), mm.group(2), int(mm.group(3))))
    return out


route = rgmtest.access_route


def routes(lines):
    return dict(collections.Counter(route(a[0], a[1]) for a in lines))


def blob_digests(img):
    return [img["config"]] + [L["digest"] for L in img["layers"]]


# --------------------------------------------------------------------------------------
# upstreams, images, mirrors

hub = rgmtest.Registry(ws, name="hub")                      # docker.io
gh = rgmtest.Registry(ws, name="ghcr")                      # ghcr.io
PW = "pw-" + os.urandom(6).hex()
priv = rgmtest.Registry(ws, name="private", auth=("htpasswd", {"node": PW, "alice": PW + "a"}))

img_idx = rgmtest.make_index_image(ws, "library/base:3", layers=[30_000, 200_000])
rgmtest.push(img_idx, hub)
img_v2 = rgmtest.make_image(ws, "team/tool:1", layers=[50_000])
p_v2 = rgmtest.push(img_v2, hub, fmt="v2s2")
img_gh = rgmtest.make_image(ws, "org/cli:2", layers=[40_000])
rgmtest.push(img_gh, gh)
img_p = rgmtest.make_image(ws, "team/secret:1", layers=[60_000])
rgmtest.push(img_p, priv, creds=("node", PW))
amd64 = [im for im in img_idx["images"] if im["platform"]["architecture"] == "amd64"][0]
other = [im for im in img_idx["images"] if im["platform"]["architecture"] != "amd64"][0]

pwfile = ws.write("node-password", PW + "\n", mode=0o600)
m = rgmtest.Mirror(ws, config={"default_registry": "docker.io", "registries": {
    "docker.io": {"endpoint": hub.url},
    "ghcr.io": {"endpoint": gh.url},
    "private.test": {"endpoint": priv.url,
                     "credentials": {"username": "node", "password_file": pwfile}},
}})
# a mirror WITHOUT node credentials for private.test, behind a spy that records headers
m_nocreds = rgmtest.Mirror(ws, name="mirror-nocreds", config={
    "default_registry": "private.test",
    "registries": {"private.test": {"endpoint": priv.url}}})
spy = rgmtest.HeaderSpy(ws, m_nocreds.url)

closed = ws.closed_port()


def podman_env(name, mirror_host, auth=None):
    """A private podman configuration; returns (env, base argv)."""
    d = ws.unique("pm-" + name)
    root, runroot, tmp = (os.path.join(d, x) for x in ("root", "run", "tmp"))
    if len(runroot) > 50:                 # podman refuses longer runroots (socket paths)
        runroot = tempfile.mkdtemp(prefix="rgm-pm-", dir="/tmp")
        ws.add_cleanup(lambda: shutil.rmtree(runroot, ignore_errors=True))
    regs = ['unqualified-search-registries = []', 'short-name-mode = "disabled"', ""]
    for prefix in ("docker.io", "ghcr.io", "private.test"):
        regs += ['[[registry]]', 'prefix = "%s"' % prefix,
                 'location = "127.0.0.1:%d"' % closed, "",
                 '[[registry.mirror]]', 'location = "%s/%s"' % (mirror_host, prefix),
                 'insecure = true', ""]
    files = {
        "registries.conf": "\n".join(regs),
        "storage.conf": '[storage]\ndriver = "vfs"\ngraphroot = "%s"\nrunroot = "%s"\n'
                        % (root, runroot),
        "containers.conf": '[engine]\ntmp_dir = "%s"\nevents_logger = "none"\n'
                           'cgroup_manager = "cgroupfs"\nstatic_dir = "%s/libpod"\n'
                           'volume_path = "%s/volumes"\n[network]\nnetwork_config_dir = "%s"\n'
                           % (tmp, root, root, os.path.join(d, "networks")),
        "policy.json": '{"default": [{"type": "insecureAcceptAnything"}]}\n',
        "auth.json": json.dumps({"auths": auth or {}}),
    }
    for fn, txt in files.items():
        with open(os.path.join(d, fn), "w") as f:
            f.write(txt)
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": d,
           "XDG_CONFIG_HOME": os.path.join(d, "xdg"), "XDG_RUNTIME_DIR": runroot,
           "CONTAINERS_REGISTRIES_CONF": os.path.join(d, "registries.conf"),
           "CONTAINERS_STORAGE_CONF": os.path.join(d, "storage.conf"),
           "CONTAINERS_CONF": os.path.join(d, "containers.conf"),
           "REGISTRY_AUTH_FILE": os.path.join(d, "auth.json"), "TMPDIR": tmp}
    os.makedirs(tmp, exist_ok=True)
    argv = ["podman", "--root", root, "--runroot", runroot, "--storage-driver", "vfs",
            "--cgroup-manager", "cgroupfs", "--events-backend", "none", "--tmpdir", tmp]
    return env, argv, d


def pull(env, argv, ref, extra=(), timeout=120):
    return run(argv + ["pull", "--signature-policy", os.path.join(env["HOME"], "policy.json"),
                       ] + list(extra) + [ref],
               env=env, timeout=timeout, check=False)


def image_digest(env, argv, ref):
    r = run(argv + ["image", "inspect", "--format", "{{.Digest}}", ref], env=env, timeout=30,
            check=False)
    return r.out.strip() if r.rc == 0 else None


# --------------------------------------------------------------------------------------
# 1. public images through the path-prefix mirror location

env1, pm1, d1 = podman_env("node1", m.host)
r = run(pm1 + ["info", "--format", "{{.Store.GraphDriverName}} {{.Store.GraphRoot}}"],
        env=env1, timeout=60, check=False)
t.is_(r.out.strip(), "vfs " + os.path.join(d1, "root"),
      "podman runs with the private configuration: vfs, private root") or t.diag(r.out[-2000:])

acc0 = len(mirror_access(m))
r = pull(env1, pm1, "docker.io/library/base:3")
t.is_(r.rc, 0, "podman pull docker.io/library/base:3 (multi-arch index) via the mirror") \
    or t.diag(r.out[-3000:])
cold = mirror_access(m)[acc0:]
t.diag("podman cold pull of an index image, requests to the mirror by route: %s"
       % json.dumps(routes(cold), sort_keys=True))
t.is_(routes(cold).get("GET blobs"), len(blob_digests(amd64)),
      "podman: one blob GET per blob of its platform")
t.ok(cold and all(a[1].startswith("/v2/docker.io/library/base/") or a[1] == "/v2/"
                  for a in cold), "every request used the /v2/docker.io/ path prefix",
     diag=cold)
t.is_(image_digest(env1, pm1, "docker.io/library/base:3"), img_idx["manifest"],
      "podman stored the image under the index digest")
for d in blob_digests(amd64):
    t.is_(hub.wait_count("GET", "/library/base/blobs/" + d, 1), 1,
          "upstream: one GET for amd64 blob %s" % d[7:19])
t.is_(hub.count_requests("GET", "/blobs/" + other["layers"][0]["digest"]), 0,
      "upstream: the other platform's layer was not fetched")

r = pull(env1, pm1, "docker.io/team/tool:1")
t.is_(r.rc, 0, "podman pull docker.io/team/tool:1 (Docker schema 2)") or t.diag(r.out[-2000:])
t.is_(image_digest(env1, pm1, "docker.io/team/tool:1"), p_v2["digest"], "schema 2 digest")
r = pull(env1, pm1, "ghcr.io/org/cli:2")
t.is_(r.rc, 0, "podman pull ghcr.io/org/cli:2 via /v2/ghcr.io/") or t.diag(r.out[-2000:])
for d in blob_digests(img_gh):
    t.is_(gh.wait_count("GET", "/org/cli/blobs/" + d, 1), 1,
          "ghcr upstream: one GET for blob %s" % d[7:19])
t.is_(hub.count_requests(None, "org/cli"), 0, "docker.io upstream never asked for org/cli")

# --------------------------------------------------------------------------------------
# 2. private image, node credentials held by the mirror: podman pulls it anonymously

n_priv = priv.count_requests("GET", "/blobs/")
r = pull(env1, pm1, "private.test/team/secret:1")
t.is_(r.rc, 0, "podman pull private.test/team/secret:1 with no client credentials "
      "(the mirror's node credentials)") or t.diag(r.out[-2000:])
t.is_(image_digest(env1, pm1, "private.test/team/secret:1"), img_p["manifest"],
      "private image digest")
t.is_(priv.count_requests("GET", "/blobs/", status=200) - n_priv, len(blob_digests(img_p)),
      "private upstream: one authorized GET per blob")

# --------------------------------------------------------------------------------------
# 3. a second podman store: everything from the mirror's cache

env2, pm2, d2 = podman_env("node2", m.host)
hub_blobs = hub.count_requests("GET", "/blobs/")
gh_blobs = gh.count_requests("GET", "/blobs/")
priv_blobs = priv.count_requests("GET", "/blobs/")
for ref in ("docker.io/library/base:3", "docker.io/team/tool:1", "ghcr.io/org/cli:2",
            "private.test/team/secret:1"):
    r = pull(env2, pm2, ref)
    t.is_(r.rc, 0, "second store: podman pull %s" % ref) or t.diag(r.out[-2000:])
time.sleep(0.3)
t.is_(hub.count_requests("GET", "/blobs/") - hub_blobs, 0,
      "second store: no docker.io blob GET upstream")
t.is_(gh.count_requests("GET", "/blobs/") - gh_blobs, 0,
      "second store: no ghcr.io blob GET upstream")
t.is_(priv.count_requests("GET", "/blobs/") - priv_blobs, 0,
      "second store: no private blob GET upstream")

# --------------------------------------------------------------------------------------
# 4. client credentials are never sent to a mirror location

# control: alice's credentials work through the no-credentials mirror
st, h, b = rgmtest.auth_request("GET", spy.url + "/v2/private.test/team/secret/manifests/1",
                                headers={"Accept": MANIFEST_ACCEPT}, creds=("alice", PW + "a"))
t.is_(st, 200, "control: alice's credentials through the mirror (curl-like client) -> 200")
st, h, b = http("GET", spy.url + "/v2/private.test/team/secret/manifests/1",
                headers={"Accept": MANIFEST_ACCEPT})
t.is_(st, 401, "control: anonymous through the no-credentials mirror -> 401")
spy.clear()

ALICE_AUTH = {"auth": __import__("base64").b64encode(("alice:" + PW + "a").encode()).decode()}
env3, pm3, d3 = podman_env("client-creds", spy.host, auth={"private.test": ALICE_AUTH})
r = pull(env3, pm3, "private.test/team/secret:1", extra=["--creds", "alice:" + PW + "a"])
t.isnt(r.rc, 0, "podman pull --creds via a mirror without node credentials fails")
t.ok(len(spy.requests) > 0, "podman did ask the mirror location", diag=r.out[-2000:])
t.is_([(q.method, q.path) for q in spy.with_header("authorization")], [],
      "--creds: no request to the mirror carried Authorization")
t.ok(any(q.status == 401 for q in spy.requests), "the mirror answered 401 (relayed challenge)")
spy.clear()
r = pull(env3, pm3, "private.test/team/secret:1")
t.isnt(r.rc, 0, "podman pull with auth.json for private.test via the mirror fails")
t.ok(len(spy.requests) > 0, "podman asked the mirror location again", diag=r.out[-2000:])
t.is_([(q.method, q.path) for q in spy.with_header("authorization")], [],
      "auth.json for the registry: no request to the mirror carried Authorization")
t.is_(image_digest(env3, pm3, "private.test/team/secret:1"), None, "nothing was stored")

# Not even an auth.json entry for the mirror location itself is used: containers/image
# authenticates only after its /v2/ ping was challenged, and the mirror's /v2/ answers 200.
env4, pm4, d4 = podman_env("mirror-key", spy.host, auth={spy.host: ALICE_AUTH})
spy.clear()
r = pull(env4, pm4, "private.test/team/secret:1")
t.isnt(r.rc, 0, "auth.json keyed by the mirror location: the pull fails too")
t.ok(any(q.method == "GET" and q.path == "/v2/" and q.status == 200 for q in spy.requests),
     "podman pinged the mirror's /v2/ (200, no challenge)", diag=spy.requests)
t.is_([(q.method, q.path) for q in spy.with_header("authorization")], [],
      "auth.json keyed by the mirror location: no Authorization sent to the mirror either")

t.ok(m.alive() and m_nocreds.alive(), "mirrors still running")
t.diag("elapsed %.1fs" % (time.monotonic() - T0))
t.done()
