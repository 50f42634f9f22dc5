#!/usr/bin/env python3
"""72-cri: the kubelet's path. containerd's CRI ImageService.PullImage over its socket, the
call the kubelet makes, with the AuthConfig the kubelet builds from an imagePullSecret,
through hosts.toml (`regmirror hosts`) found by the CRI plugin's registry.config_path.

The CRI messages are encoded by hand (a few protobuf fields) and sent over a raw gRPC
channel (Debian's python3-grpcio): runtime.v1.ImageService/PullImage, ImageStatus,
RuntimeService/Version.

- node 1 (cold): public docker.io images and a private image of a token-auth registry.
  The kubelet turns a dockerconfigjson pull secret into AuthConfig{username, password}
  (it decodes "auth" itself); other CRI clients send AuthConfig{auth}: both work. Each
  blob is fetched upstream once. No secret and a wrong secret are refused.
- node 2 (a second containerd): the same pulls are served from the mirror's cache, with no
  blob GET upstream; the private image without credentials or with a wrong secret is
  refused, not served from the cache.
- a Basic (htpasswd) private registry, where containerd sends the secret to the mirror itself:
  node 1 pulls with the secret; node 2's wrong secret is refused by the mirror's access rule
  although the image is cached; node 2's right secret is served from cache (0 upstream blob
  GETs).
- the hosts.toml `server` is a closed loopback port: nothing can bypass the mirror.
"""

import base64
import collections
import json
import os
import re
import shutil
import sys
import time

# python3-grpcio is a Debian package: when make check runs another python3 (configure takes
# the first on PATH, which may be a pyenv one), start again under Debian's.
try:
    import grpc
except ImportError:
    if os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3") and \
            os.access("/usr/bin/python3", os.X_OK) and not os.environ.get("RGM_REEXEC"):
        os.environ["RGM_REEXEC"] = "1"
        os.execv("/usr/bin/python3", ["/usr/bin/python3", os.path.abspath(__file__)]
                 + sys.argv[1:])
    grpc = None

import rgmtest
from rgmtest import run

t = rgmtest.TAP(timeout=240)
ws = rgmtest.Workspace()
T0 = time.monotonic()

if grpc is None:
    t.ok(False, "python3-grpcio is installed (bootstrap installs it)",
         diag="no module grpc in %s or /usr/bin/python3" % sys.executable)
    t.done()
if not shutil.which("containerd"):
    t.ok(False, "containerd is installed")
    t.done()

# --------------------------------------------------------------------------------------
# protobuf, by hand: the few CRI messages (k8s.io/cri-api runtime/v1 api.proto)


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_bytes(field, data):
    """A length-delimited field (string, bytes, embedded message)."""
    if isinstance(data, str):
        data = data.encode()
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def pb_bool(field, v):
    return _varint(field << 3 | 0) + _varint(1 if v else 0) if v else b""


def pb_decode(data):
    """{field: [values]}: ints for varints, bytes for length-delimited fields."""
    out = collections.defaultdict(list)
    i = 0
    while i < len(data):
        key, shift = 0, 0
        while True:
            b = data[i]
            i += 1
            key |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        field, wt = key >> 3, key & 7
        if wt == 0:
            v, shift = 0, 0
            while True:
                b = data[i]
                i += 1
                v |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            out[field].append(v)
        elif wt == 2:
            n, shift = 0, 0
            while True:
                b = data[i]
                i += 1
                n |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            out[field].append(data[i:i + n])
            i += n
        elif wt == 1:
            out[field].append(data[i:i + 8])
            i += 8
        elif wt == 5:
            out[field].append(data[i:i + 4])
            i += 4
        else:
            raise ValueError("wire type %d" % wt)
    return out


def image_spec(ref):
    return pb_bytes(1, ref)                                     # ImageSpec.image


def auth_config(username=None, password=None, auth=None, server_address=None):
    """runtime.v1.AuthConfig: username=1 password=2 auth=3 server_address=4."""
    b = b""
    if username is not None:
        b += pb_bytes(1, username)
    if password is not None:
        b += pb_bytes(2, password)
    if auth is not None:
        b += pb_bytes(3, auth)
    if server_address is not None:
        b += pb_bytes(4, server_address)
    return b


def kubelet_auth(secret_json, registry):
    """What the kubelet does with a kubernetes.io/dockerconfigjson imagePullSecret: find the
    entry for the image's registry, decode "auth" into username/password when they are not
    given, and send AuthConfig{username, password} (no server_address, no auth)."""
    entry = json.loads(secret_json)["auths"][registry]
    user, pw = entry.get("username"), entry.get("password")
    if not user and entry.get("auth"):
        user, _, pw = base64.b64decode(entry["auth"]).decode().partition(":")
    return auth_config(username=user, password=pw)


class CRI:
    """A containerd with the CRI plugin, its registry config_path = hosts_dir, the native
    snapshotter (no overlayfs needed), and a raw gRPC channel to its socket."""

    DISABLED = [p for p in rgmtest.CONTAINERD_DISABLED if p != "io.containerd.grpc.v1.cri"]

    def __init__(self, name, hosts_dir):
        self.dir = ws.unique(name)
        self.address = os.path.join(self.dir, "c.sock")
        d = self.dir
        cfg = os.path.join(d, "config.toml")
        for sub in ("cni/bin", "cni/conf"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        with open(cfg, "w") as f:
            f.write('version = 2\nroot = "%s/root"\nstate = "%s/state"\n' % (d, d))
            f.write("disabled_plugins = [%s]\n" % ", ".join('"%s"' % p for p in self.DISABLED))
            f.write('[grpc]\n  address = "%s"\n[ttrpc]\n  address = "%s.ttrpc"\n'
                    % (self.address, self.address))
            f.write('[debug]\n  address = ""\n  level = "info"\n[metrics]\n  address = ""\n')
            f.write('[plugins]\n  [plugins."io.containerd.internal.v1.opt"]\n'
                    '    path = "%s/opt"\n' % d)
            f.write('  [plugins."io.containerd.grpc.v1.cri"]\n'
                    '    disable_tcp_service = true\n'
                    '    stream_server_address = "127.0.0.1"\n    stream_server_port = "0"\n'
                    '    enable_selinux = false\n    disable_apparmor = true\n'
                    '    sandbox_image = "registry.invalid/pause:3.9"\n'
                    '    [plugins."io.containerd.grpc.v1.cri".containerd]\n'
                    '      snapshotter = "native"\n'
                    '    [plugins."io.containerd.grpc.v1.cri".cni]\n'
                    '      bin_dir = "%s/cni/bin"\n      conf_dir = "%s/cni/conf"\n'
                    '    [plugins."io.containerd.grpc.v1.cri".registry]\n'
                    '      config_path = "%s"\n' % (d, d, hosts_dir))
        self.proc = ws.spawn(["containerd", "--config", cfg], os.path.join(d, "containerd.log"))
        self.channel = None
        try:
            rgmtest.wait_for(self._ready, timeout=30, what="containerd CRI socket")
        except (TimeoutError, rgmtest.ProcessExited) as e:
            raise RuntimeError("containerd did not start (%s):\n%s"
                               % (e, self.proc.log_text()[-4000:]))
        ws.add_cleanup(self.close)

    def _ready(self):
        if not self.proc.alive():
            raise rgmtest.ProcessExited("containerd exited")
        if not os.path.exists(self.address):
            return False
        if self.channel is None:
            self.channel = grpc.insecure_channel("unix:" + self.address)
        self.version()
        return True

    def close(self):
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def call(self, method, request, timeout=120):
        fn = self.channel.unary_unary(method)            # bytes in, bytes out
        return fn(request, timeout=timeout)

    def version(self):
        """RuntimeService/Version → (runtime_name, runtime_version, runtime_api_version)."""
        r = pb_decode(self.call("/runtime.v1.RuntimeService/Version", pb_bytes(1, "v1"),
                                timeout=5))
        return tuple(r[i][0].decode() if r[i] else "" for i in (2, 3, 4))

    def pull(self, ref, auth=None):
        """ImageService/PullImage → (image_ref or None, error text)."""
        req = pb_bytes(1, image_spec(ref))
        if auth is not None:
            req += pb_bytes(2, auth)
        try:
            r = pb_decode(self.call("/runtime.v1.ImageService/PullImage", req))
            return (r[1][0].decode() if r[1] else ""), ""
        except grpc.RpcError as e:
            return None, "%s: %s" % (e.code(), e.details())

    def status(self, ref):
        """ImageService/ImageStatus → {id, repo_tags, repo_digests, size} or None."""
        r = pb_decode(self.call("/runtime.v1.ImageService/ImageStatus",
                                pb_bytes(1, image_spec(ref)), timeout=30))
        if not r[1]:
            return None
        im = pb_decode(r[1][0])
        return {"id": im[1][0].decode() if im[1] else "",
                "repo_tags": [x.decode() for x in im[2]],
                "repo_digests": [x.decode() for x in im[3]],
                "size": im[4][0] if im[4] else 0}

    def content_digests(self):
        r = run(["ctr", "--address", self.address, "-n", "k8s.io", "content", "ls", "-q"],
                timeout=30, check=False)
        return set(x.strip() for x in r.out.splitlines() if x.strip().startswith("sha256:"))


mirror_access = rgmtest.mirror_access
route = rgmtest.access_route


def blob_digests(img):
    return [img["config"]] + [L["digest"] for L in img["layers"]]


# --------------------------------------------------------------------------------------
# self-check of the encoder against a hand-computed message (so a broken encoder fails here)

t.is_(pb_bytes(1, pb_bytes(1, "a")) + pb_bytes(2, auth_config(username="u", password="p")),
      b"\x0a\x03\x0a\x01a\x12\x06\x0a\x01u\x12\x01p", "protobuf encoder: PullImageRequest bytes")
t.is_(dict(pb_decode(b"\x08\x96\x01\x12\x02hi")), {1: [150], 2: [b"hi"]},
      "protobuf decoder: varint and string")

# --------------------------------------------------------------------------------------
# upstreams, images, mirror, hosts.toml

hub = rgmtest.Registry(ws, name="hub")
PW = "bob-" + os.urandom(6).hex()
tok = rgmtest.TokenServer(ws, users={"bob": PW})
priv = rgmtest.Registry(ws, name="private", auth=("token", tok))

img_idx = rgmtest.make_index_image(ws, "library/base:3", layers=[30_000, 300_000])
rgmtest.push(img_idx, hub)
img_v2 = rgmtest.make_image(ws, "team/tool:1", layers=[60_000])
p_v2 = rgmtest.push(img_v2, hub, fmt="v2s2")
img_p = rgmtest.make_image(ws, "private/app:1", layers=[40_000, 80_000])
rgmtest.push(img_p, priv, creds=("bob", PW))
img_p2 = rgmtest.make_image(ws, "private/other:1", layers=[20_000])
rgmtest.push(img_p2, priv, creds=("bob", PW))
img_p3 = rgmtest.make_image(ws, "private/third:1", layers=[20_000])
rgmtest.push(img_p3, priv, creds=("bob", PW))
amd64 = [im for im in img_idx["images"] if im["platform"]["architecture"] == "amd64"][0]
basic = rgmtest.Registry(ws, name="basic", auth=("htpasswd", {"bob": PW}))
img_b = rgmtest.make_image(ws, "private/app:1", layers=[30_000])
rgmtest.push(img_b, basic, creds=("bob", PW))

m = rgmtest.Mirror(ws, config={"default_registry": "docker.io", "registries": {
    "docker.io": {"endpoint": hub.url}, "private.test": {"endpoint": priv.url},
    "basic.test": {"endpoint": basic.url}}})
closed = ws.closed_port()
hosts = ws.unique("certs.d")
r = m.hosts(hosts, ["docker.io", "private.test", "basic.test"],
            extra=["--server-override", "http://127.0.0.1:%d" % closed])
t.is_(r.rc, 0, "regmirror hosts writes hosts.toml for docker.io and private.test")
with open(os.path.join(hosts, "docker.io", "hosts.toml")) as f:
    t.like(f.read(), r'server = "http://127.0.0.1:%d"' % closed,
           "hosts.toml server is a closed loopback port")

# the pull secret, as `kubectl create secret docker-registry` writes it
SECRET = json.dumps({"auths": {"private.test": {
    "username": "bob", "password": PW,
    "auth": base64.b64encode(("bob:" + PW).encode()).decode()}}})
WRONG_PW = "wrong-" + os.urandom(6).hex()
SECRET_BASIC = json.dumps({"auths": {"basic.test": {"username": "bob", "password": PW}}})
SECRET_BASIC_WRONG = json.dumps({"auths": {"basic.test": {"username": "bob",
                                                          "password": WRONG_PW + "-b"}}})
SECRET_AUTH_ONLY = json.dumps({"auths": {"private.test": {
    "auth": base64.b64encode(("bob:" + PW).encode()).decode()}}})
SECRET_WRONG = json.dumps({"auths": {"private.test": {
    "username": "bob", "password": WRONG_PW,
    "auth": base64.b64encode(("bob:" + WRONG_PW).encode()).decode()}}})

# --------------------------------------------------------------------------------------
# node 1: cold

n1 = CRI("cri-node1", hosts)
name, rver, api = n1.version()
t.diag("client: containerd CRI %s %s (CRI API %s), grpcio %s"
       % (name, rver, api, grpc.__version__))
t.is_(api, "v1", "containerd answers runtime.v1 RuntimeService/Version")

acc0 = len(mirror_access(m))
ref, err = n1.pull("docker.io/library/base:3")
t.ok(ref, "node1: CRI PullImage docker.io/library/base:3 (anonymous)", diag=err)
cold = mirror_access(m)[acc0:]
t.diag("CRI cold pull of an index image, requests to the mirror by route: %s"
       % json.dumps(dict(collections.Counter(route(a[0], a[1]) for a in cold)),
                    sort_keys=True))
t.ok(cold and all(a[1].endswith("?ns=docker.io") for a in cold if a[1] != "/v2/"),
     "node1: every request carries ?ns=docker.io", diag=cold)
st = n1.status("docker.io/library/base:3")
t.ok(st and ("docker.io/library/base@" + img_idx["manifest"]) in st["repo_digests"],
     "node1: ImageStatus has the index digest as repo digest", diag=st)
t.is_(ref, st and st["id"], "node1: PullImage's image_ref is the image id")
t.is_(st and st["id"], amd64["config"], "node1: image id = the amd64 config digest")
for d in blob_digests(amd64):
    t.is_(hub.wait_count("GET", "/library/base/blobs/" + d, 1), 1,
          "upstream: one GET for amd64 blob %s" % d[7:19])

ref, err = n1.pull("docker.io/team/tool:1")
t.ok(ref, "node1: CRI PullImage docker.io/team/tool:1 (Docker schema 2)", diag=err)
st = n1.status("docker.io/team/tool:1")
t.ok(st and ("docker.io/team/tool@" + p_v2["digest"]) in st["repo_digests"],
     "node1: schema 2 repo digest", diag=st)

# private: no credentials → refused; kubelet's AuthConfig → pulled
ref, err = n1.pull("private.test/private/app:1")
t.ok(ref is None and re.search(r"401|nauthorized|authoriz", err),
     "node1: private image without AuthConfig is refused", diag=err)
n_bad = tok.count(ok=False)
ref, err = n1.pull("private.test/private/app:1", auth=kubelet_auth(SECRET_WRONG, "private.test"))
t.ok(ref is None and re.search(r"401|nauthorized|authoriz", err),
     "node1: private image with a wrong secret is refused", diag=err)
t.ok(tok.count(ok=False) > n_bad, "node1: ... the token server refused the wrong password")
t.is_(n1.status("private.test/private/app:1"), None, "node1: ... and nothing is stored")
n_tok = tok.count(user="bob", ok=True)
ref, err = n1.pull("private.test/private/app:1", auth=kubelet_auth(SECRET, "private.test"))
t.ok(ref, "node1: private image with the kubelet's AuthConfig{username, password}", diag=err)
t.ok(tok.count(user="bob", ok=True) > n_tok,
     "node1: containerd got a token as bob (credentials went through the mirror)")
st = n1.status("private.test/private/app:1")
t.ok(st and ("private.test/private/app@" + img_p["manifest"]) in st["repo_digests"],
     "node1: private image repo digest", diag=st)
for d in blob_digests(img_p):
    t.is_(priv.wait_count("GET", "/private/app/blobs/" + d, 1), 1,
          "private upstream: one GET for blob %s" % d[7:19])
ref, err = n1.pull("private.test/private/other:1",
                   auth=auth_config(auth=json.loads(SECRET_AUTH_ONLY)["auths"]
                                    ["private.test"]["auth"]))
t.ok(ref, "node1: private image with AuthConfig{auth} (base64 user:password)", diag=err)
ref, err = n1.pull("private.test/private/third:1",
                   auth=kubelet_auth(SECRET_AUTH_ONLY, "private.test"))
t.ok(ref, "node1: secret with only \"auth\": the kubelet's decoded username/password",
     diag=err)
t.ok(set(blob_digests(img_p2) + blob_digests(img_p3)) <= n1.content_digests(),
     "node1: both images' blobs in its content store")
ref, err = n1.pull("basic.test/private/app:1", auth=kubelet_auth(SECRET_BASIC, "basic.test"))
t.ok(ref, "node1: Basic private image with the kubelet's AuthConfig (sent to the mirror)",
     diag=err)
for d in blob_digests(img_b):
    t.is_(basic.wait_count("GET", "/private/app/blobs/" + d, 1), 1,
          "basic upstream: one GET for blob %s" % d[7:19])

# --------------------------------------------------------------------------------------
# node 2: warm, from the mirror's cache

n2 = CRI("cri-node2", hosts)
hub_b = hub.count_requests("GET", "/blobs/")
priv_b = priv.count_requests("GET", "/blobs/")
acc1 = len(mirror_access(m))
ref, err = n2.pull("private.test/private/app:1")
t.ok(ref is None, "node2: cached private image without AuthConfig is still refused",
     diag=err)
t.is_(n2.status("private.test/private/app:1"), None, "node2: ... and not stored")
ref, err = n2.pull("private.test/private/app:1", auth=kubelet_auth(SECRET_WRONG, "private.test"))
t.ok(ref is None and re.search(r"401|nauthorized|authoriz", err),
     "node2: cached private image with a wrong secret is refused", diag=err)
t.is_(n2.status("private.test/private/app:1"), None, "node2: ... and not stored")
for r_ in ("docker.io/library/base:3", "docker.io/team/tool:1"):
    ref, err = n2.pull(r_)
    t.ok(ref, "node2: CRI PullImage %s" % r_, diag=err)
ref, err = n2.pull("private.test/private/app:1", auth=kubelet_auth(SECRET, "private.test"))
t.ok(ref, "node2: private image with the kubelet's AuthConfig", diag=err)
basic_b = basic.count_requests("GET", "/blobs/")
ref, err = n2.pull("basic.test/private/app:1",
                   auth=kubelet_auth(SECRET_BASIC_WRONG, "basic.test"))
t.ok(ref is None and re.search(r"401|nauthorized|authoriz", err),
     "node2: cached Basic private image with a wrong secret is refused", diag=err)
t.is_(n2.status("basic.test/private/app:1"), None, "node2: ... and not stored")
ref, err = n2.pull("basic.test/private/app:1", auth=kubelet_auth(SECRET_BASIC, "basic.test"))
t.ok(ref, "node2: Basic private image with the right secret", diag=err)
want = set(blob_digests(amd64) + blob_digests(img_v2) + blob_digests(img_p) +
           blob_digests(img_b))
t.ok(want <= n2.content_digests(), "node2: every blob in its content store")
time.sleep(0.3)
t.is_(basic.count_requests("GET", "/blobs/") - basic_b, 0,
      "node2: no Basic private blob GET upstream")
t.is_(hub.count_requests("GET", "/blobs/") - hub_b, 0, "node2: no docker.io blob GET upstream")
t.is_(priv.count_requests("GET", "/blobs/") - priv_b, 0, "node2: no private blob GET upstream")
wb = [a for a in mirror_access(m)[acc1:] if a[0] == "GET" and "/blobs/" in a[1]]
t.ok(len(wb) >= len(want) and all(a[3] == "HIT" for a in wb if a[2] == 200),
     "node2: the mirror answered its blob GETs from cache (HIT)", diag=wb)

for n in (n1, n2):
    t.ok(n.proc.alive(), "%s still running" % os.path.basename(n.dir))
t.ok(m.alive(), "mirror still running")
t.ok(PW not in m.log_text() and WRONG_PW not in m.log_text(), "no password in the mirror's log")
t.diag("elapsed %.1fs" % (time.monotonic() - T0))
t.done()
