#!/usr/bin/env python3
"""Deployment files and `regmirror hosts`.

- contrib/kubernetes: `kubectl kustomize` renders each kustomization (offline); every YAML
  document parses (python3-yaml); every regmirror command line in a container (command/args,
  or args under the image's ENTRYPOINT from contrib/Containerfile) names flags that
  `regmirror <subcommand> --help` documents; the init container's `regmirror hosts` command
  line really runs.
- contrib/systemd/regmirror.service: ExecStart flags exist; systemd-analyze verify is clean.
- the cluster tier is a StatefulSet with one PVC per replica, a headless Service for peers, a
  client Service, a PodDisruptionBudget and pod anti-affinity; its config names the headless
  Service in cluster.peers_dns, and the tiered node config reaches it with endpoint_dns;
- every regmirror.json (ConfigMaps in contrib/, conf/regmirror.json) loads: `regmirror serve
  --config FILE` (with --listen/--storage overridden) starts, answers /v2/, refuses an
  unconfigured registry; the same file with an unknown key is refused (exit 2). The TLS
  overlays' files (the Secret mounted at /etc/regmirror-tls) are test certificates from
  rgmtest.make_cert: a config with "tls" is checked over HTTPS (a client certificate required
  when client_ca_file is set, refused without) with /readyz on its health listener, and the
  node-local-mtls config pulls an image through the cluster-local-tls config over mutual TLS
  (their endpoints pointed at loopback), the cluster tier logging the node's subject.
- `regmirror hosts`: one registry, several, --all, --default, options; the files parse as
  TOML with the right server and [host] entries; usage errors exit 2; containerd pulls
  through a hosts dir it wrote (named registry and _default) from a real docker-registry via
  the mirror, with the fallback server a closed port.
"""

import glob
import json
import os
import re
import shlex
import shutil
import socket
import ssl
import tomllib

import http.client as http_client

import rgmtest
from rgmtest import RGM_BIN, RGM_SRCDIR, http

try:
    import yaml
except ImportError:    # pragma: no cover - python3-yaml missing
    yaml = None

t = rgmtest.TAP(timeout=240)
# The cluster tier's configs resolve their peers' Service names at start (peers_dns,
# endpoint_dns): in a namespace of our own that query goes nowhere and fails at once.
rgmtest.private_netns()
ws = rgmtest.Workspace()

CONTRIB = os.path.join(RGM_SRCDIR, "contrib")
K8S = os.path.join(CONTRIB, "kubernetes")
KUBECTL = shutil.which("kubectl")

_help_cache = {}


def help_text(sub):
    if sub not in _help_cache:
        r = rgmtest.run([RGM_BIN, sub, "--help"], timeout=20, check=False)
        _help_cache[sub] = r
    return _help_cache[sub]


def flags_of(argv):
    """--flag names used in argv (values after '=' dropped)."""
    return [a.split("=", 1)[0] for a in argv if a.startswith("--") and len(a) > 2]


def check_cmdline(where, argv):
    """argv: [regmirror-path, subcommand, args...]. Checks the subcommand's --help documents
    each --flag used."""
    if len(argv) < 2 or argv[1].startswith("-"):
        t.ok(False, "%s: regmirror command line names a subcommand" % where, diag=argv)
        return
    sub = argv[1]
    h = help_text(sub)
    if "not available yet" in h.out:
        t.todo(False, "%s: `regmirror %s --help` documents %s" % (where, sub, flags_of(argv)),
               "regmirror %s is not implemented yet" % sub)
        return
    t.is_(h.rc, 0, "%s: `regmirror %s --help` exits 0" % (where, sub))
    missing = [f for f in flags_of(argv[2:])
               if not re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(f), h.out)]
    t.is_(missing, [], "%s: every flag of `regmirror %s` is documented (%s)"
          % (where, sub, " ".join(flags_of(argv[2:]))))


# ---------------------------------------------------------------------------------------
# 0. the flag checker must be able to fail
h = help_text("serve")
t.ok(h.rc == 0 and "--config" in h.out and "--listen" in h.out, "serve --help lists its flags",
     diag=h.out)
t.ok(not re.search(r"(?<![\w-])--conf(?![\w-])", h.out) and
     not re.search(r"(?<![\w-])--no-such-flag(?![\w-])", h.out),
     "flag matching is by whole flag (prefixes and unknown flags do not match)")
r = rgmtest.run([RGM_BIN, "serve", "--no-such-flag"], timeout=20, check=False)
t.is_(r.rc, 2, "serve with an unknown flag exits 2 (so --help is the real flag list)")

# ---------------------------------------------------------------------------------------
# 1. Kubernetes manifests

kdirs = sorted(os.path.dirname(p) for p in glob.glob(os.path.join(K8S, "*", "kustomization.yaml")))
t.ok(len(kdirs) >= 3, "contrib/kubernetes has kustomizations (%s)"
     % ", ".join(os.path.basename(d) for d in kdirs))

EXPECTED_KINDS = {
    "node-local": {"Namespace", "ConfigMap", "DaemonSet"},
    "cluster-local": {"Namespace", "ConfigMap", "StatefulSet", "Service", "PodDisruptionBudget"},
    "prewarm": {"ConfigMap", "Job"},
    "cluster-local-tls": {"Namespace", "ConfigMap", "StatefulSet", "Service",
                          "PodDisruptionBudget", "Certificate"},
    "node-local-mtls": {"Namespace", "ConfigMap", "DaemonSet", "Certificate"},
}
rendered = {}  # kustomize dir name -> documents

if KUBECTL:
    for d in kdirs:
        name = os.path.basename(d)
        r = rgmtest.run([KUBECTL, "kustomize", d], timeout=60, check=False)
        t.is_(r.rc, 0, "kubectl kustomize %s" % name) or t.diag(r.out[-2000:])
        if yaml and r.rc == 0:
            try:
                docs = [x for x in yaml.safe_load_all(r.out) if x is not None]
            except yaml.YAMLError as e:
                t.ok(False, "kustomize %s output parses" % name, diag=str(e))
                continue
            rendered[name] = docs
            kinds = {x.get("kind") for x in docs}
            want = EXPECTED_KINDS.get(name)
            if want:
                t.is_(kinds, want, "kustomize %s: resource kinds" % name)
            t.ok(all(x.get("metadata", {}).get("namespace") == "regmirror"
                     for x in docs if x.get("kind") != "Namespace"),
                 "kustomize %s: every namespaced resource is in namespace regmirror" % name)
            images = set()
            for x in docs:
                spec = x.get("spec", {})
                pod = spec.get("template", {}).get("spec", {})
                for c in pod.get("initContainers", []) + pod.get("containers", []):
                    images.add(c.get("image"))
            if images:
                t.is_(images, {"registry.example.com/regmirror:0.1.0"},
                      "kustomize %s: the images transform applies to every container" % name)
else:
    t.skip("kubectl kustomize", "kubectl is not installed; YAML parsed with python3-yaml only")

yaml_files = sorted(glob.glob(os.path.join(K8S, "**", "*.yaml"), recursive=True) +
                    glob.glob(os.path.join(K8S, "**", "*.yml"), recursive=True))
docs = []     # (file, doc)
if yaml is None:
    t.skip("contrib/kubernetes YAML parses", "python3-yaml is not installed")
else:
    for p in yaml_files:
        rel = os.path.relpath(p, RGM_SRCDIR)
        try:
            with open(p) as f:
                ds = [x for x in yaml.safe_load_all(f) if x is not None]
            good = all(isinstance(x, dict) and x.get("apiVersion") and x.get("kind")
                       and ((x.get("metadata") or {}).get("name")
                            or x.get("kind") == "Kustomization") for x in ds) and ds
            t.ok(good, "%s parses (%d document(s) with apiVersion/kind/name)" % (rel, len(ds)))
            docs += [(rel, x) for x in ds]
        except yaml.YAMLError as e:
            t.ok(False, "%s parses" % rel, diag=str(e))

# the cluster tier's shape (issue 13)
if yaml is not None:
    by_kind = {}
    for rel, x in docs:
        if rel.startswith(os.path.join("contrib", "kubernetes", "cluster-local") + os.sep):
            by_kind.setdefault(x.get("kind"), []).append(x)
    sts = (by_kind.get("StatefulSet") or [{}])[0]
    spec = sts.get("spec") or {}
    t.ok(spec.get("replicas", 0) >= 2 and spec.get("volumeClaimTemplates"),
         "cluster-local: a StatefulSet of %s replicas, one PVC each" % spec.get("replicas"))
    svcs = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    peers_svc = svcs.get(spec.get("serviceName")) or {}
    t.is_((peers_svc.get("spec") or {}).get("clusterIP"), "None",
          "cluster-local: its serviceName is a headless Service")
    t.ok(any((s.get("spec") or {}).get("clusterIP") != "None" for s in svcs.values()),
         "cluster-local: and a client Service")
    t.ok(by_kind.get("PodDisruptionBudget"), "cluster-local: a PodDisruptionBudget")
    aff = (((spec.get("template") or {}).get("spec") or {}).get("affinity") or {})
    t.ok("podAntiAffinity" in aff, "cluster-local: pod anti-affinity")
    cm = [x for x in by_kind.get("ConfigMap", [])
          if x["metadata"]["name"] == "regmirror-cluster-config"]
    ccfg = json.loads(cm[0]["data"]["regmirror.json"]) if cm else {}
    want_dns = "http://%s.regmirror.svc:5000" % peers_svc.get("metadata", {}).get("name")
    t.is_((ccfg.get("cluster") or {}).get("peers_dns"), want_dns,
          "cluster-local: the replicas find each other through the headless Service")
    tiered = [x for x in by_kind.get("ConfigMap", [])
              if x["metadata"]["name"] == "regmirror-node-config"]
    ncfg = json.loads(tiered[0]["data"]["regmirror.json"]) if tiered else {}
    regs = ncfg.get("registries") or {}
    t.ok(regs and all(r.get("endpoint_dns") == want_dns and r.get("mirror") for r in regs.values()),
         "node-local tiered config: every registry reaches the owners by endpoint_dns")

# the image's ENTRYPOINT and CMD (containers without command: run under the ENTRYPOINT)
entrypoint, cmd = None, None
with open(os.path.join(CONTRIB, "Containerfile")) as f:
    for line in f:
        m = re.match(r"\s*(ENTRYPOINT|CMD)\s+(\[.*\])\s*$", line)
        if m:
            v = json.loads(m.group(2))
            if m.group(1) == "ENTRYPOINT":
                entrypoint = v
            else:
                cmd = v
t.ok(entrypoint and os.path.basename(entrypoint[0]) == "regmirror",
     "Containerfile: ENTRYPOINT runs regmirror (%s)" % entrypoint)
if entrypoint and cmd is not None:
    check_cmdline("Containerfile ENTRYPOINT+CMD", entrypoint + cmd)


def is_regmirror_image(image):
    return bool(image) and re.search(r"(^|/)regmirror(:|@|$)", image) is not None


cmdlines = []   # (where, argv, container, doc)
configmaps = {}  # name -> data
for rel, doc in docs:
    if doc.get("kind") == "ConfigMap":
        configmaps.setdefault(doc["metadata"]["name"], []).append((rel, doc.get("data") or {}))
    pod = (doc.get("spec") or {}).get("template", {}).get("spec")
    if doc.get("kind") == "CronJob":
        pod = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if not pod:
        continue
    for c in (pod.get("initContainers") or []) + (pod.get("containers") or []):
        where = "%s %s/%s" % (rel, doc["metadata"]["name"], c.get("name"))
        command = [str(x) for x in (c.get("command") or [])]
        args = [str(x) for x in (c.get("args") or [])]
        if command:
            argv = command + args
        elif is_regmirror_image(c.get("image")) and entrypoint:
            argv = entrypoint + args
        else:
            continue
        if os.path.basename(argv[0]) == "regmirror":
            cmdlines.append((where, argv, c, pod))
        elif os.path.basename(argv[0]) in ("sh", "bash") and "-c" in argv:
            script = argv[argv.index("-c") + 1] if argv.index("-c") + 1 < len(argv) else ""
            for part in re.split(r"&&|\|\||;|\n", script):
                words = shlex.split(part)
                if words and os.path.basename(words[0]) == "regmirror":
                    cmdlines.append((where + " (sh -c)", words, c, pod))

if yaml is not None:
    subs = sorted(set(a[1] for _, a, _, _ in cmdlines if len(a) > 1))
    t.ok(len(cmdlines) >= 4 and {"serve", "hosts", "prewarm"} <= set(subs),
         "found the regmirror command lines of the manifests (%d: %s)" % (len(cmdlines), subs))
    for where, argv, c, pod in cmdlines:
        check_cmdline(where, argv)


def mounted_files(c, pod, where=""):
    """{path inside the container: content} for configMap volumes mounted by c: the
    ConfigMap of that name in the workload's own directory when there is one (an overlay
    elsewhere replaces it there, not here)."""
    vols = {v["name"]: v for v in pod.get("volumes") or []}
    here = os.path.dirname(where.split(" ", 1)[0])
    out = {}
    for vm in c.get("volumeMounts") or []:
        v = vols.get(vm["name"]) or {}
        cm = (v.get("configMap") or {}).get("name")
        cands = configmaps.get(cm, [])
        local = [x for x in cands if os.path.dirname(x[0]) == here]
        for rel, data in local or cands:
            for key, content in data.items():
                out[os.path.join(vm["mountPath"], key)] = content
    return out


# run the hosts init container's command line as written (only --out redirected)
for where, argv, c, pod in cmdlines:
    if argv[1] != "hosts" or "--out" not in argv:
        continue
    out_dir = ws.unique("init-hosts")
    a = list(argv)
    a[0] = RGM_BIN
    a[a.index("--out") + 1] = out_dir
    r = rgmtest.run(a, timeout=30, check=False)
    t.is_(r.rc, 0, "%s: the command line runs (--out redirected)" % where) or t.diag(r.out)
    written = sorted(os.listdir(out_dir))
    t.ok("_default" in written if "--default" in a else True,
         "%s: wrote %s" % (where, written))

# run the serve command lines of the workloads with their mounted config
for where, argv, c, pod in cmdlines:
    if argv[1] != "serve":
        continue
    files = mounted_files(c, pod, where)
    a = list(argv[2:])
    cfg = None
    for i, x in enumerate(a):
        if x in files:
            d = ws.unique("mounted")
            cfg = os.path.join(d, os.path.basename(x))
            with open(cfg, "w") as f:
                f.write(files[x])
            a[i] = cfg
    t.ok(cfg is not None, "%s: --config file comes from a mounted ConfigMap" % where,
         diag=(a, sorted(files)))
    try:
        m = rgmtest.Mirror(ws, name="pod", args=a)
        st, h, b = m.get("/v2/")
        t.is_(st, 200, "%s: serve %s starts and answers /v2/" % (where, " ".join(argv[2:])))
        m.stop()
    except RuntimeError as e:
        t.ok(False, "%s: serve %s starts" % (where, " ".join(argv[2:])), diag=str(e)[-2000:])

# ---------------------------------------------------------------------------------------
# 2. systemd unit
unit = os.path.join(CONTRIB, "systemd", "regmirror.service")
execs = []
with open(unit) as f:
    for line in f:
        m = re.match(r"\s*(Exec\w+)\s*=\s*(.*)$", line)
        if m:
            words = shlex.split(m.group(2))
            while words and words[0][:1] in "@-:+!" and not words[0].startswith("/"):
                words[0] = words[0][1:] or None
                if words[0] is None:
                    words.pop(0)
            execs.append((m.group(1), words))
starts = [w for k, w in execs if k == "ExecStart"]
t.is_(len(starts), 1, "regmirror.service has one ExecStart")
for k, w in execs:
    if w and os.path.basename(w[0]) == "regmirror":
        check_cmdline("regmirror.service %s" % k, w)
if starts:
    t.ok(len(starts[0]) > 1 and starts[0][1] == "serve", "ExecStart runs `regmirror serve`",
         diag=starts[0])

sa = shutil.which("systemd-analyze")
if sa and starts:
    d = ws.unique("systemd")
    with open(unit) as f:
        text = f.read()
    with open(os.path.join(d, "regmirror.service"), "w") as f:
        f.write(text.replace(starts[0][0], RGM_BIN))
    r = rgmtest.run([sa, "verify", os.path.join(d, "regmirror.service")], timeout=60,
                    check=False)
    bad = [l for l in r.out.splitlines()
           if re.search(r"unknown|invalid|failed|error|bad|ignoring", l, re.I)]
    t.ok(r.rc == 0 and not bad, "systemd-analyze verify regmirror.service: no complaints",
         diag=r.out[-2000:])
else:
    t.skip("systemd-analyze verify", "systemd-analyze not installed")

# ---------------------------------------------------------------------------------------
# 3. every regmirror.json loads
configs = []
for name, lst in sorted(configmaps.items()):
    for rel, data in lst:
        for key, content in data.items():
            if key.endswith(".json"):
                configs.append(("%s %s[%s]" % (rel, name, key), content))
for p in sorted(glob.glob(os.path.join(CONTRIB, "**", "*.json"), recursive=True)):
    if os.path.relpath(p, CONTRIB).startswith("monitoring" + os.sep):
        continue                              # Grafana dashboards (62-monitoring checks them)
    with open(p) as f:
        configs.append((os.path.relpath(p, RGM_SRCDIR), f.read()))
with open(os.path.join(RGM_SRCDIR, "conf", "regmirror.json")) as f:
    configs.append(("conf/regmirror.json", f.read()))
if yaml is not None:
    t.ok(len(configs) >= 4, "found the regmirror.json files (%d)" % len(configs),
         diag=[c[0] for c in configs])

# The TLS overlays mount a cert-manager Secret (tls.crt, tls.key, ca.crt) here; the test puts
# certificates of its own CA in its place, valid for loopback and the Service's name.
TLS_MOUNT = "/etc/regmirror-tls/"
tls_ca = rgmtest.make_ca(ws.path("secret-ca"), cn="rgmtest cert-manager CA")
tls_leaf = rgmtest.make_cert(tls_ca, ws.path("secret-leaf"), cn="regmirror-node",
                             names=("127.0.0.1", "localhost", "regmirror.regmirror.svc",
                                    "regmirror-peers.regmirror.svc"))
SECRET = ws.mkdir("secret")
for key, src in (("tls.crt", tls_leaf.chain), ("tls.key", tls_leaf.key), ("ca.crt", tls_ca.cert)):
    shutil.copy(src, os.path.join(SECRET, key))


def with_test_certs(content):
    return content.replace(TLS_MOUNT, SECRET + "/")


class TLSPod(rgmtest.Mirror):
    """serve --config FILE whose listener is HTTPS: ready when its health listener (moved to
    loopback) answers /readyz; requests over TLS with the Secret's CA and client pair."""

    def __init__(self, ws, **kw):
        self.health_port = rgmtest.free_port()
        super().__init__(ws, **kw)

    @property
    def url(self):
        return "https://%s" % self.host

    def command(self):
        return super().command() + ["--health-listen", "127.0.0.1:%d" % self.health_port]

    def _ready(self):
        if not self.proc.alive():
            raise rgmtest.ProcessExited("regmirror exited (rc %s)" % self.proc.p.returncode)
        st, _, _ = http("GET", "http://127.0.0.1:%d/readyz" % self.health_port, timeout=2)
        return st == 200

    def get(self, path, headers=None, method="GET", timeout=30, client=True):
        ctx = ssl.create_default_context(cafile=tls_ca.cert)
        if client:
            ctx.load_cert_chain(tls_leaf.chain, tls_leaf.key)
        conn = http_client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                           context=ctx)
        try:
            conn.request(method, path, headers=dict(headers or {}))
            r = conn.getresponse()
            return r.status, rgmtest.Headers(r.getheaders()), r.read()
        finally:
            conn.close()


n_tls = 0
for where, content in configs:
    d = ws.unique("cfg")
    p = os.path.join(d, "regmirror.json")
    content = with_test_certs(content)
    with open(p, "w") as f:
        f.write(content)
    try:
        obj = json.loads(content)
        t.ok(isinstance(obj, dict), "%s is a JSON object" % where)
    except ValueError as e:
        t.ok(False, "%s is JSON" % where, diag=str(e))
        continue
    is_tls = bool((obj.get("tls") or {}).get("cert_file"))
    n_tls += is_tls
    try:
        if is_tls:
            m = TLSPod(ws, name="cfgmirror", args=["--config", p])
        else:
            m = rgmtest.Mirror(ws, name="cfgmirror", args=["--config", p])
    except RuntimeError as e:
        t.ok(False, "%s: serve --config starts (listen/storage overridden)" % where,
             diag=str(e)[-2000:])
        continue
    st, h, b = m.get("/v2/")
    t.ok(st == 200 and h.get("docker-distribution-api-version") == "registry/2.0",
         "%s: serve --config starts and answers /v2/%s" % (where, " over TLS" if is_tls else ""))
    st, h, b = m.get("/v2/x/y/manifests/1?ns=not-configured.invalid")
    t.is_(st, 403, "%s: an unconfigured registry is refused" % where)
    if is_tls:
        st, h, b = http("GET", "http://127.0.0.1:%d/readyz" % m.health_port)
        t.is_(st, 200, "%s: /readyz 200 on the plain health listener" % where)
        if obj["tls"].get("client_ca_file"):
            try:
                m.get("/v2/", client=False)
                refused = False
            except (ssl.SSLError, ConnectionError, OSError):
                refused = True
            t.ok(refused, "%s: without a client certificate the handshake is refused" % where)
    else:
        st, h, b = m.get("/readyz")
        t.is_(st, 200, "%s: /readyz 200" % where)
    t.is_(m.stop(), 0, "%s: clean exit on SIGTERM" % where)
    # the loader does validate: an unknown key makes the same file fail
    obj["no_such_key_rgmtest"] = 1
    p2 = os.path.join(d, "bad.json")
    with open(p2, "w") as f:
        json.dump(obj, f)
    r = rgmtest.run([RGM_BIN, "serve", "--config", p2, "--listen", "127.0.0.1:%d"
                     % ws.closed_port(), "--storage", os.path.join(d, "st-bad")],
                    timeout=20, check=False)
    t.is_(r.rc, 2, "%s + an unknown key: refused with exit 2" % where)

t.ok(n_tls >= 1, "a TLS config was among them, checked over HTTPS (%d)" % n_tls)


# ---------------------------------------------------------------------------------------
# 3b. the two TLS overlays together: node-local-mtls pulls through cluster-local-tls


def rendered_config(name):
    """regmirror.json of the ConfigMap in the kustomize output of name, or None."""
    for x in rendered.get(name, []):
        if x.get("kind") == "ConfigMap" and "regmirror.json" in (x.get("data") or {}):
            return x["data"]["regmirror.json"]
    return None


ccfg, ncfg = rendered_config("cluster-local-tls"), rendered_config("node-local-mtls")
if ccfg is None or ncfg is None:
    t.skip("node-local-mtls through cluster-local-tls", "kubectl kustomize output missing")
else:
    hub = rgmtest.Registry(ws, name="tier-hub")
    timg = rgmtest.push(rgmtest.make_image(ws, "library/tiered:1", layers=[20_000]), hub)
    cobj = json.loads(with_test_certs(ccfg))
    # The cluster tier's registries are the internet's; here docker.io is the local one.
    cobj["registries"] = {"docker.io": {"endpoint": hub.url}}
    cport = rgmtest.free_port()
    # One replica, found as a static peer on loopback instead of the headless Service's name;
    # the peer_* files stay as the overlay wrote them (checked at start).
    t.ok(all(cobj["cluster"].get(k, "").startswith(SECRET)
             for k in ("peer_ca_file", "peer_cert_file", "peer_key_file")),
         "cluster-local-tls: the replicas reach each other with the Secret (cluster.peer_*)")
    cobj["cluster"].pop("peers_dns", None)
    cobj["cluster"]["peers"] = ["https://127.0.0.1:%d" % cport]
    d = ws.unique("tier")
    with open(os.path.join(d, "cluster.json"), "w") as f:
        json.dump(cobj, f)
    cpod = TLSPod(ws, name="tier-cluster", args=["--config", os.path.join(d, "cluster.json")],
                  start=False)
    cpod.port = cport
    cpod.start()
    nobj = json.loads(with_test_certs(ncfg).replace("https://regmirror.regmirror.svc:5000",
                                                    cpod.url))
    t.ok(all(r.get("client_cert_file", "").startswith(SECRET)
             and r.get("ca_file", "").startswith(SECRET) for r in nobj["registries"].values()),
         "node-local-mtls: every registry has ca_file and the client pair (the Secret)")
    with open(os.path.join(d, "node.json"), "w") as f:
        json.dump(nobj, f)
    npod = rgmtest.Mirror(ws, name="tier-node", args=["--config", os.path.join(d, "node.json")])
    st, h, b = npod.get("/v2/library/tiered/manifests/1",
                        headers={"Accept": rgmtest.MANIFEST_ACCEPT})
    t.ok(st == 200 and h.get("docker-content-digest") == timg["digest"],
         "node-local-mtls pulls a manifest through cluster-local-tls (mutual TLS)",
         diag=(st, b[:300], cpod.log_text()[-1500:]))
    t.like(cpod.log_text(), r"handshake \S+ \S+ subject=\S*CN ?= ?regmirror-node",
           "the cluster tier logs the node's certificate subject")
    npod.stop()
    cpod.stop()

# ---------------------------------------------------------------------------------------
# 4. regmirror hosts

EMBEDDED = ["docker.io", "ghcr.io", "quay.io", "registry.k8s.io", "gcr.io", "public.ecr.aws",
            "mcr.microsoft.com"]


def hosts(*args):
    return rgmtest.run([RGM_BIN, "hosts"] + list(args), timeout=30, check=False)


def load_tree(d):
    """{registry dir: parsed hosts.toml} (None when it does not parse)."""
    out = {}
    for name in sorted(os.listdir(d)):
        p = os.path.join(d, name, "hosts.toml")
        if not os.path.isfile(p):
            out[name] = "no hosts.toml"
            continue
        try:
            with open(p, "rb") as f:
                out[name] = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            out[name] = "TOML error: %s" % e
    return out


def check_file(label, doc, server, mirror, caps=("pull", "resolve"), extra=None):
    if not isinstance(doc, dict):
        t.ok(False, "%s: parses as TOML" % label, diag=doc)
        return
    t.is_(doc.get("server"), server, "%s: server" % label)
    host = doc.get("host")
    t.ok(isinstance(host, dict) and list(host) == [mirror],
         "%s: exactly one [host] entry, the mirror %s" % (label, mirror), diag=host)
    entry = (host or {}).get(mirror) or {}
    t.is_(entry.get("capabilities"), list(caps), "%s: capabilities" % label)
    want_keys = {"capabilities"} | set((extra or {}).keys())
    t.is_(set(entry), want_keys, "%s: host keys" % label)
    for k, v in (extra or {}).items():
        t.is_(entry.get(k), v, "%s: %s" % (label, k))


MURL = "http://127.0.0.1:5000"
d = ws.unique("h-one")
r = hosts("--mirror", MURL, "--registry", "ghcr.io", "--out", d)
t.is_(r.rc, 0, "hosts: one registry")
tree = load_tree(d)
t.is_(sorted(tree), ["ghcr.io"], "hosts: one registry → one directory")
check_file("ghcr.io", tree.get("ghcr.io"), "https://ghcr.io", MURL)

d = ws.unique("h-dflt")
r = hosts("--mirror", MURL + "/", "--out", d)
tree = load_tree(d)
t.ok(r.rc == 0 and sorted(tree) == ["docker.io"], "hosts: no --registry → docker.io",
     diag=(r.out, tree))
check_file("docker.io", tree.get("docker.io"), "https://registry-1.docker.io", MURL)

d = ws.unique("h-several")
r = hosts("--mirror", "http://10.0.0.7:80", "--registry", "docker.io", "--registry", "quay.io",
          "--registry", "localhost:5001", "--registry", "quay.io", "--out", d)
tree = load_tree(d)
t.ok(r.rc == 0 and sorted(tree) == ["docker.io", "localhost:5001", "quay.io"],
     "hosts: several registries (a duplicate written once)", diag=(r.out, sorted(tree)))
check_file("several docker.io", tree.get("docker.io"), "https://registry-1.docker.io",
           "http://10.0.0.7")
check_file("several quay.io", tree.get("quay.io"), "https://quay.io", "http://10.0.0.7")
check_file("several localhost:5001", tree.get("localhost:5001"), "https://localhost:5001",
           "http://10.0.0.7")

d = ws.unique("h-all")
r = hosts("--mirror", MURL, "--all", "--default", "--out", d)
tree = load_tree(d)
t.ok(r.rc == 0 and sorted(tree) == sorted(EMBEDDED + ["_default"]),
     "hosts --all --default: every embedded registry and _default", diag=(r.out, sorted(tree)))
for name in EMBEDDED:
    if name == "docker.io":
        want = "https://registry-1.docker.io"
    else:
        want = "https://" + name
    doc = tree.get(name)
    t.ok(isinstance(doc, dict) and doc.get("server") == want
         and list((doc.get("host") or {})) == [MURL], "--all: %s → server %s, host the mirror"
         % (name, want), diag=doc)
check_file("_default", tree.get("_default"), None, MURL)

d = ws.unique("h-opts")
r = hosts("--mirror", "https://mirror.example:8443", "--registry", "ghcr.io", "--out", d,
          "--capabilities", "pull", "--skip-verify", "--server-override", "http://127.0.0.1:9")
tree = load_tree(d)
t.is_(r.rc, 0, "hosts with --capabilities pull --skip-verify --server-override") \
    or t.diag(r.out)
check_file("options 1", tree.get("ghcr.io"), "http://127.0.0.1:9", "https://mirror.example:8443",
           caps=("pull",), extra={"skip_verify": True})
d = ws.unique("h-opts")
r = hosts("--mirror", "https://mirror.example", "--registry", "quay.io", "--out", d,
          "--capabilities", "resolve,pull", "--ca", "/etc/regmirror/ca.pem")
tree = load_tree(d)
t.is_(r.rc, 0, "hosts with --capabilities resolve,pull --ca") or t.diag(r.out)
check_file("options 2", tree.get("quay.io"), "https://quay.io", "https://mirror.example",
           extra={"ca": "/etc/regmirror/ca.pem"})

# usage errors: 2; I/O errors: 1; nothing written on a usage error
for label, args in [
        ("no --out", ["--mirror", MURL]),
        ("no --mirror", ["--out", "OUT"]),
        ("mirror URL with a path", ["--mirror", MURL + "/v2", "--out", "OUT"]),
        ("mirror not http(s)", ["--mirror", "ftp://127.0.0.1", "--out", "OUT"]),
        ("bad registry name", ["--mirror", MURL, "--registry", "a/b", "--out", "OUT"]),
        ("capability push", ["--mirror", MURL, "--capabilities", "pull,push", "--out", "OUT"]),
        ("unknown flag", ["--mirror", MURL, "--bogus", "--out", "OUT"]),
        ("--ca with an http mirror", ["--mirror", MURL, "--ca", "/x.pem", "--out", "OUT"]),
        ("--ca and --skip-verify", ["--mirror", "https://m", "--ca", "/x.pem", "--skip-verify",
                                    "--out", "OUT"])]:
    d = ws.unique("h-bad")
    out = os.path.join(d, "out")
    r = hosts(*[out if a == "OUT" else a for a in args])
    t.ok(r.rc == 2 and not os.path.exists(out), "hosts: %s → exit 2, nothing written" % label,
         diag=(r.rc, r.out))
d = ws.unique("h-io")
blocker = os.path.join(d, "file")
with open(blocker, "w") as f:
    f.write("x")
r = hosts("--mirror", MURL, "--out", os.path.join(blocker, "sub"))
t.is_(r.rc, 1, "hosts: --out under a regular file → exit 1 (I/O error)")

# containerd accepts them: a pull through a hosts dir written by `regmirror hosts`
up = rgmtest.Registry(ws, name="hub")
up2 = rgmtest.Registry(ws, name="other")
img = rgmtest.make_image(ws, "library/app:1", layers=[30_000, 200_000])
rgmtest.push(img, up)
img2 = rgmtest.make_image(ws, "lib/other:2", layers=[25_000])
rgmtest.push(img2, up2)
closed = ws.closed_port()
other_reg = "127.0.0.1:%d" % ws.closed_port()     # a registry only reachable via the mirror
mirror = rgmtest.Mirror(ws, args=["--registry", "docker.io=" + up.url,
                                  "--registry", "%s=%s" % (other_reg, up2.url)])
hd = ws.unique("certs.d")
r = mirror.hosts(hd, ["docker.io"], extra=["--default", "--server-override",
                                           "http://127.0.0.1:%d" % closed])
t.is_(r.rc, 0, "hosts for the containerd pull")
cd = rgmtest.Containerd(ws)
rc, out = cd.fetch("docker.io/library/app:1", hd)
t.is_(rc, 0, "containerd pulls docker.io/library/app:1 through the written hosts.toml") \
    or t.diag(out[-2000:])
blobs = [img["config"]] + [L["digest"] for L in img["layers"]]
t.ok(set([img["manifest"]] + blobs) <= cd.content_digests(), "containerd has every blob")
for b in blobs:
    t.is_(up.wait_count("GET", "/v2/library/app/blobs/" + b, 1), 1,
          "upstream: one GET via the mirror for %s" % b[7:19])
rc, out = cd.fetch("%s/lib/other:2" % other_reg, hd)
t.is_(rc, 0, "containerd pulls %s/lib/other:2 through _default/hosts.toml" % other_reg) \
    or t.diag(out[-2000:])
blobs2 = [img2["config"]] + [L["digest"] for L in img2["layers"]]
t.ok(set([img2["manifest"]] + blobs2) <= cd.content_digests(),
     "containerd has every blob of the _default pull")
t.is_(up2.wait_count("GET", "/v2/lib/other/blobs/" + blobs2[-1], 1), 1,
      "the _default pull reached the right upstream (ns=%s)" % other_reg)
t.is_(up.count_requests(None, "lib/other"), 0, "and not the default registry")
t.done()
