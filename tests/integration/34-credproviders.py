#!/usr/bin/env python3
"""34-credproviders: the kubelet's credential provider plugins as the mirror's own identity
(issue 15). A scripted plugin (python3) is the protocol boundary; the upstream is a real
docker-registry with htpasswd, so every upstream request needs the plugin's credentials.

  A  YAML config: matchImages globs as the kubelet matches them (a port mismatch, a label
     count, "*." and a path prefix); the request on stdin (apiVersion, kind, image as
     registry:port/repository), args and env; Registry and Image cache keys.
  B  JSON config, given by the kubelet's flag names: cacheDuration 0, a missing
     cacheDuration with defaultCacheDuration 0 and 1h.
  C  a wrong apiVersion in the response is rejected; a plugin timeout; both WARN, counted,
     and the request goes on anonymously (401 from the private upstream, no hang).
  D  a registry with its own credentials never uses the providers; a bad provider config
     stops the mirror at start with a message naming the field.
  E  an unconfigured host under allow_any_registry (?ns=host, fetched from https://host) uses
     a matching provider; a "mirror": true endpoint never does (the client's identity only).
"""
import json
import os
import re
import time

import rgmtest
from rgmtest import MANIFEST_ACCEPT, http, sha256_digest

t = rgmtest.TAP(timeout=240)
ws = rgmtest.Workspace()
MIRRORS = []
PW = "prov-pw-" + os.urandom(6).hex()
BIN = ws.mkdir("plugins")
RUNS = os.path.join(BIN, "runs.jsonl")
pwfile = ws.write("pw", PW)

PLUGIN = r'''#!/usr/bin/python3
import json, os, sys, time
a = sys.argv[1:]
o = dict(zip(a[::2], a[1::2]))
req = json.load(sys.stdin)
with open(os.environ["PLUGIN_RUNS"], "a") as f:
    f.write(json.dumps({"name": os.path.basename(sys.argv[0]), "req": req,
                        "hello": os.environ.get("PLUGIN_HELLO", "")}) + "\n")
if "--sleep" in o:
    time.sleep(float(o["--sleep"]))
resp = {"apiVersion": o.get("--api", "credentialprovider.kubelet.k8s.io/v1"),
        "kind": "CredentialProviderResponse", "cacheKeyType": o.get("--keytype", "Image"),
        "auth": {o["--key"]: {"username": "alice", "password": open(o["--pwfile"]).read()}}}
if "--duration" in o:
    resp["cacheDuration"] = o["--duration"]
print(json.dumps(resp))
'''


def plugin(name):
    path = os.path.join(BIN, name)
    with open(path, "w") as f:
        f.write(PLUGIN)
    os.chmod(path, 0o755)


def runs(name=None):
    try:
        with open(RUNS) as f:
            rows = [json.loads(line) for line in f]
    except FileNotFoundError:
        return []
    return [r for r in rows if name is None or r["name"] == name]


def reset_runs():
    if os.path.exists(RUNS):
        os.unlink(RUNS)


def mget(m, path, ns, auth=None, method="GET"):
    h = {"Accept": MANIFEST_ACCEPT}
    if auth:
        h["Authorization"] = auth
    return http(method, "%s%s?ns=%s" % (m.url, path, ns), headers=h)


def metric(m, name, **labels):
    st, _, body = http("GET", m.url + "/metrics")
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in body.decode().splitlines():
        mm = re.match(r"^%s\{(.*)\} (\d+)$" % re.escape(name), line)
        if mm and ",".join(sorted(mm.group(1).split(","))) == want:
            return int(mm.group(2))
    return 0


reg = rgmtest.Registry(ws, auth=("htpasswd", {"alice": PW}), name="reg-basic")
NS = reg.host                                   # 127.0.0.1:PORT
PORT = reg.port
IMGS = {}
for repo in ("team/app", "team/other", "solo/x", "solo/y"):
    img = rgmtest.make_image(ws, repo + ":1", layers=[4_000 + len(IMGS)])
    IMGS[repo] = rgmtest.push(img, reg, creds=("alice", PW))["digest"]


def pull(m, repo, ns=NS):
    st, h, body = mget(m, "/v2/%s/manifests/1" % repo, ns)
    return st == 200 and sha256_digest(body) == IMGS[repo]


def provider(name, match, default="1m", args=(), env=None, extra="", key=NS):
    plugin(name)
    lines = ["  - name: %s" % name,
             "    matchImages: [%s]" % ", ".join('"%s"' % g for g in match),
             '    defaultCacheDuration: "%s"' % default,
             "    apiVersion: credentialprovider.kubelet.k8s.io/v1",
             "    args: [%s]" % ", ".join('"%s"' % a for a in
                                         list(args) + ["--pwfile", pwfile, "--key", key])]
    envs = [{"name": "PLUGIN_RUNS", "value": RUNS}] + list(env or [])
    lines.append("    env:")
    for e in envs:
        lines += ['      - name: %s' % e["name"], '        value: "%s"' % e["value"]]
    return "\n".join(lines) + "\n" + extra


def yaml_config(name, providers):
    return ws.write(name, "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\n"
                          "providers:\n" + "".join(providers))


def new_mirror(name, cfg_path=None, timeout=None, registries=None, args=(), start=True,
               extra=None, env=None):
    cfg = {"default_registry": NS, "log_level": "debug",
           "registries": registries or {NS: {"endpoint": reg.url, "tag_ttl": "0"}}}
    cfg.update(extra or {})
    if cfg_path:
        cfg["credential_providers"] = {"config": cfg_path, "bin_dir": BIN}
        if timeout:
            cfg["credential_providers"]["timeout"] = timeout
    m = rgmtest.Mirror(ws, config=cfg, name=name, args=list(args), start=start, env=env)
    MIRRORS.append(m)
    return m


# ======================================================================================
# A. YAML: globs, the request, Registry and Image keys
# ======================================================================================
cfgA = yaml_config("a.yaml", [
    provider("wrongport", ["127.0.0.1:%d" % (PORT + 1 if PORT < 65535 else PORT - 1)]),
    provider("labels", ["*.0.1:%d" % PORT]),
    provider("star", ["*.0.0.1:%d/team" % PORT], args=["--keytype", "Registry", "--duration", "5m"],
             env=[{"name": "PLUGIN_HELLO", "value": "from-env"}]),
    provider("path", ["127.0.0.1:%d/solo" % PORT], args=["--keytype", "Image", "--duration", "5m"]),
])
mA = new_mirror("mA-yaml", cfgA)
t.ok(pull(mA, "team/app"), "A: team/app through the mirror with a plugin's identity")
r = runs("star")
t.is_(len(r), 1, "A: \"*.0.0.1:PORT/team\" matched team/app (\"*.\" and a path prefix)")
if r:
    t.is_(r[0]["req"], {"apiVersion": "credentialprovider.kubelet.k8s.io/v1",
                        "kind": "CredentialProviderRequest", "image": NS + "/team/app"},
          "A: the CredentialProviderRequest on stdin (image without tag or digest)")
    t.is_(r[0]["hello"], "from-env", "A: the provider's env reaches the plugin")
t.is_(runs("wrongport"), [], "A: a port mismatch never matches")
t.is_(runs("labels"), [], "A: another label count never matches")
t.is_(runs("path"), [], "A: \"127.0.0.1:PORT/solo\" does not match team/app (path prefix)")
t.ok(pull(mA, "team/other") and pull(mA, "team/app"), "A: team/other and team/app again")
t.is_(len(runs("star")), 1, "A: cacheKeyType Registry: one run for the whole registry")
t.ok(pull(mA, "solo/x") and pull(mA, "solo/x"), "A: solo/x twice")
t.is_([x["req"]["image"] for x in runs("path")], [NS + "/solo/x"],
      "A: the path provider ran for solo/x, once")
t.is_(len(runs("star")), 1, "A: ... and the team provider did not (its path does not match)")
t.ok(pull(mA, "solo/y"), "A: solo/y")
t.is_([x["req"]["image"] for x in runs("path")], [NS + "/solo/x", NS + "/solo/y"],
      "A: cacheKeyType Image: another image of the registry runs again")
log = mA.log_text()
t.like(log, r'level=info mod=credprovider msg="provider star for \\"%s/team/app\\": exit 0 in \d+ ms, '
       r'1 auth entries \(passwords <redacted>\), cacheKeyType Registry, cacheDuration 300s"'
       % re.escape(NS), "A: the run is logged, passwords redacted")
t.ok(PW not in log, "A: the password never appears in the log")

# ======================================================================================
# B. JSON config through the kubelet's flags: cacheDuration 0 and absent
# ======================================================================================
reset_runs()
for n in ("zero", "nodur0", "nodur1h"):
    plugin(n)


def jprov(name, match, default, args):
    return {"name": name, "matchImages": match, "defaultCacheDuration": default,
            "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
            "args": args + ["--pwfile", pwfile, "--key", NS],
            "env": [{"name": "PLUGIN_RUNS", "value": RUNS}]}


cfgB = ws.write("b.json", json.dumps({
    "apiVersion": "kubelet.config.k8s.io/v1", "kind": "CredentialProviderConfig",
    "providers": [jprov("zero", [NS + "/team/app"], "1h", ["--duration", "0s"]),
                  jprov("nodur0", [NS + "/team/other"], "0", []),
                  jprov("nodur1h", [NS + "/solo"], "1h", ["--keytype", "Global"])]}))
mB = new_mirror("mB-json-flags", args=["--image-credential-provider-config", cfgB,
                                       "--image-credential-provider-bin-dir", BIN])
t.ok(pull(mB, "team/app") and pull(mB, "team/app"), "B: team/app twice (JSON config, flags)")
t.ok(len(runs("zero")) >= 2, "B: cacheDuration 0: not cached, the plugin runs every time (%d)"
     % len(runs("zero")))
t.ok(pull(mB, "team/other") and pull(mB, "team/other"), "B: team/other twice")
t.ok(len(runs("nodur0")) >= 2, "B: no cacheDuration, defaultCacheDuration 0: not cached (%d)"
     % len(runs("nodur0")))
t.ok(pull(mB, "solo/x") and pull(mB, "solo/y") and pull(mB, "solo/x"), "B: solo/x, solo/y")
t.is_(len(runs("nodur1h")), 1, "B: no cacheDuration, defaultCacheDuration 1h (Global): one run")

# ======================================================================================
# C. wrong apiVersion, timeout
# ======================================================================================
reset_runs()
cfgC = yaml_config("c.yaml", [
    provider("oldapi", [NS + "/team"], args=["--api", "credentialprovider.kubelet.k8s.io/v1beta1"]),
    provider("slow", [NS + "/solo"], args=["--sleep", "20"]),
])
mC = new_mirror("mC-bad", cfgC, timeout="1s")
st, h, _ = mget(mC, "/v2/team/app/manifests/1", NS)
t.is_(st, 401, "C: a wrong apiVersion is rejected: anonymous, the upstream's 401")
t.like(mC.log_text(), r'level=warn mod=credprovider msg="provider oldapi for .*apiVersion '
       r'credentialprovider.kubelet.k8s.io/v1beta1 is not the configured '
       r'credentialprovider.kubelet.k8s.io/v1', "C: ... with a WARN naming the provider and why")
t.ok(metric(mC, "regmirror_credential_errors_total", source="provider/oldapi", registry=NS) >= 1,
     "C: counted in regmirror_credential_errors_total{source=\"provider/oldapi\"}")
t0 = time.monotonic()
st, h, _ = mget(mC, "/v2/solo/x/manifests/1", NS)
took = time.monotonic() - t0
t.ok(st == 401 and took < 5, "C: a plugin that hangs is killed at the timeout; 401 after %.1fs"
     % took, "status %s" % st)
t.like(mC.log_text(), r"provider slow for .*killed after \d+ ms \(timeout\)",
       "C: the kill is logged")
t.ok(metric(mC, "regmirror_credential_errors_total", source="provider/slow", registry=NS) >= 1,
     "C: the timeout is counted")

# ======================================================================================
# D. own credentials win; a bad config stops the start
# ======================================================================================
reset_runs()
cfgD = yaml_config("d.yaml", [provider("never", ["*.0.0.1:%d" % PORT])])
mD = new_mirror("mD-own", cfgD, registries={NS: {"endpoint": reg.url, "credentials": {
    "username": "alice", "password_file": pwfile}}})
t.ok(pull(mD, "team/app"), "D: a registry with its own credentials pulls")
t.is_(runs("never"), [], "D: ... and the providers are not asked")
badcfg = ws.write("bad.yaml", "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\n"
                              "providers:\n  - name: x\n    matchImages: [\"reg[.io\"]\n"
                              "    defaultCacheDuration: 1m\n"
                              "    apiVersion: credentialprovider.kubelet.k8s.io/v1\n")
mbad = new_mirror("m-badcfg", badcfg, start=False)
try:
    mbad.start(timeout=5)
    t.ok(False, "D: a bad provider config stops the mirror at start")
except RuntimeError as e:
    t.like(str(e), r"providers\[0\]\.matchImages\[0\]: not a valid image pattern",
           "D: a bad provider config stops the mirror at start, naming the field")

# ======================================================================================
# E. allow_any_registry: an unconfigured host uses the providers; "mirror": true never does
# ======================================================================================
reset_runs()
ca = rgmtest.make_ca(ws.path("ca"))
regS = rgmtest.Registry(ws, tls=rgmtest.make_cert(ca, ws.path("tls")),
                        auth=("htpasswd", {"alice": PW}), name="reg-tls")
NSS = regS.host                              # not in the mirror's registries
sdig = {}
for repo in ("team/app", "other/app"):
    img = rgmtest.make_image(ws, repo + ":1", layers=[9_000 + len(sdig)])
    sdig[repo] = rgmtest.push(img, regS, creds=("alice", PW))["digest"]
cfgE = yaml_config("e.yaml", [provider("anyhost", ["127.0.0.1:%d/team" % regS.port], key=NSS)])
# SSL_CERT_FILE: the system CAs the mirror trusts for https://<unconfigured host> are the test CA.
mE = new_mirror("mE-anyhost", cfgE, extra={"allow_any_registry": True,
                                      # the test host is loopback: unlisted hosts reach only
                                      # public addresses unless named here (no SSRF)
                                      "allow_upstream_networks": ["127.0.0.0/8"]},
                env={"SSL_CERT_FILE": ca.cert})
st, h, body = mget(mE, "/v2/team/app/manifests/1", NSS)
t.ok(st == 200 and sha256_digest(body) == sdig["team/app"],
     "E: ?ns=<unconfigured host> (allow_any_registry) pulls with a matching provider's identity",
     "status %s" % st)
t.is_([x["req"]["image"] for x in runs("anyhost")], [NSS + "/team/app"],
      "E: the provider ran once, for registry:port/repository of the unconfigured host")
st, h, body = mget(mE, "/v2/other/app/manifests/1", NSS)
t.is_(st, 401, "E: a repository no provider matches: anonymous, the upstream's 401")
t.is_(len(runs("anyhost")), 1, "E: ... and the provider was not asked")
st, h, body = mget(mE, "/v2/team/app/manifests/1", NS)
t.is_(st, 401, "E: the configured registry (no provider matches it) stays anonymous")

reset_runs()
cfgM = yaml_config("m.yaml", [provider("tier", ["*.0.0.1:%d" % PORT, NS + "/team"])])
mM = new_mirror("mM-tier", cfgM, registries={NS: {"endpoint": reg.url, "mirror": True,
                                                  "tag_ttl": "0"}})
st, h, body = mget(mM, "/v2/team/app/manifests/1", NS)
t.is_(st, 401, "E: a \"mirror\": true endpoint: a client without credentials gets the 401")
t.is_(runs("tier"), [], "E: ... and the matching providers are never run for it")
st, h, body = mget(mM, "/v2/team/app/manifests/1", NS, auth=rgmtest.basic_header("alice", PW))
t.ok(st == 200 and sha256_digest(body) == IMGS["team/app"],
     "E: the client's own credentials go through to the \"mirror\": true endpoint",
     "status %s" % st)
t.is_(runs("tier"), [], "E: still no provider run")

for m in MIRRORS:
    if m.proc:
        t.ok(PW not in m.log_text(), "no password in %s's log" % os.path.basename(m.dir))
t.done()
