#!/usr/bin/env python3
"""regmirror config --check: the effective configuration as JSON on stdout (defaults filled in,
values from the file and from serve's flags), secrets redacted and never on stdout or stderr,
the output fed back giving the same output, bad configurations refused with exit 2 and the key
named (the same message serve prints for the same command line), usage errors, and no side
effects (no storage directory, no log file, no socket)."""

import json
import os
import signal
import subprocess

import rgmtest
from rgmtest import RGM_BIN, RGM_SRCDIR

t = rgmtest.TAP(timeout=120)
ws = rgmtest.Workspace()
SECRET = "pw-7f3a9c1e-never-printed"


def rgm(*args, timeout=20):
    """Run `regmirror args...`; returns (rc, stdout, stderr). The process group is killed on
    timeout (rc "timeout"): a `serve` that accepted its configuration would still run."""
    p = subprocess.Popen([RGM_BIN] + list(args), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        return "timeout", out.decode(errors="replace"), err.decode(errors="replace")
    return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def check(*args):
    """config --check args...; returns (rc, doc or None, stdout, stderr)."""
    rc, out, err = rgm("config", "--check", *args)
    try:
        doc = json.loads(out)
    except ValueError:
        doc = None
    return rc, doc, out, err


def write_json(name, obj):
    return ws.write("cfg/" + name, json.dumps(obj, indent=1))


def strip_redacted(obj):
    """The document without its "<redacted>" values (the secrets the output cannot carry)."""
    if isinstance(obj, dict):
        return {k: strip_redacted(v) for k, v in obj.items() if v != "<redacted>"}
    return obj


def keys(obj, prefix=""):
    """Every key path of a JSON object, registries' names as NAME (not a key themselves)."""
    out = set()
    for k, v in obj.items():
        name = "NAME" if prefix == "registries." else k
        if name != "NAME":
            out.add(prefix + name)
        if isinstance(v, dict):
            out |= keys(v, prefix + name + ".")
    return out


# ======================================================================================
# defaults: no FILE is the embedded configuration, which conf/regmirror.json spells out

rc, dflt, dflt_out, err = check()
t.is_(rc, 0, "no FILE: exit 0")
t.is_(err, "", "no FILE: nothing on stderr")
t.ok(dflt is not None, "no FILE: the output is JSON", diag=dflt_out[:500])
dflt = dflt or {}
t.is_(dflt.get("listen"), ["127.0.0.1:5000"], "default listen")
t.is_(dflt.get("storage"), "./regmirror-data", "default storage")
t.is_(list(dflt.get("registries", {})),
      ["docker.io", "ghcr.io", "quay.io", "registry.k8s.io", "gcr.io", "public.ecr.aws",
       "mcr.microsoft.com"], "default registries, in order")
docker = dflt.get("registries", {}).get("docker.io", {})
t.is_(docker.get("endpoint"), "https://registry-1.docker.io", "default docker.io endpoint")
t.is_(docker.get("tag_ttl"), "1m", "default tag_ttl filled in")
t.is_(docker.get("credentials"), {"username": None, "password_file": None,
                                  "docker_config": None, "helper": None, "lifetime": "5m",
                                  "timeout": "10s"},
      "no credentials: every key null, helper lifetime and timeout defaults")
t.is_(docker.get("private"), False, "default private: false")
t.is_(dflt.get("credential_providers"), {"config": None, "bin_dir": None, "timeout": "1m"},
      "default credential_providers: none, the kubelet's 1m timeout")
for k, want in [("max_cache_bytes", 0), ("default_registry", "docker.io"),
                ("allow_any_registry", False), ("max_parallel_fetches", 16),
                ("max_connections", 4096), ("max_header_bytes", "16KiB"), ("max_headers", 64),
                ("max_url_length", "4KiB"), ("header_timeout", "30s"), ("idle_timeout", "1m"),
                ("send_timeout", "2m"), ("shutdown_timeout", "10s"),
                ("upstream_connect_timeout", "10s"), ("upstream_timeout", "1m"),
                ("auth_cache_ttl", "1m"), ("sendfile", False), ("log_level", "info"),
                ("log_file", None), ("access_log", True), ("max_stale", None),
                ("stale_on_not_found", False), ("negative_ttl", "10s"),
                ("ratelimit_reserve", 10), ("orphan_grace", "1h"), ("pin", []),
                ("admin_socket", None)]:
    t.is_(dflt.get(k, "(absent)"), want, "default %s" % k)
t.is_(dflt.get("tls"), {"cert_file": None, "key_file": None, "client_ca_file": None},
      "default tls: off")
for k in ("health_listen", "allow_clients", "allow_upstream_networks"):
    t.is_(dflt.get(k, "(absent)"), [], "default %s: none" % k)
t.is_(dflt.get("cluster"), {"peers": None, "peers_dns": None, "self": None,
                            "peer_ca_file": None, "peer_cert_file": None, "peer_key_file": None,
                            "peer_server_name": None},
      "default cluster: none")
t.is_(len(dflt), 35, "every top-level key is printed")
rc, _, out, _ = check(os.path.join(RGM_SRCDIR, "conf", "regmirror.json"))
t.is_(rc, 0, "conf/regmirror.json: exit 0")
t.is_(out, dflt_out, "conf/regmirror.json gives exactly the built-in defaults")
rc, _, out, _ = check("--config", os.path.join(RGM_SRCDIR, "conf", "regmirror.json"))
t.is_(out, dflt_out, "--config FILE is the same as FILE")

rc, out, _ = rgm("config", "--help")
t.is_(rc, 0, "config --help: exit 0")
t.like(out, r"usage: regmirror config --check", "config --help: the usage")
listed = set(l.split()[0] for l in out.splitlines() if l.startswith("  ") and "(" in l)
t.is_(keys(dflt) - listed, set(), "config --help lists every key the output has")

# ======================================================================================
# a file, then flags over it

pw = ws.write("secrets/pw", SECRET + "\n", mode=0o600)
ca = ws.write("secrets/ca.pem", "-----BEGIN CERTIFICATE-----\n")
dc = ws.write("secrets/docker-config.json", json.dumps({"auths": {}}))
good = {
    "//": "documentation keys are skipped",
    "listen": ["0.0.0.0:5000", "[::1]:5001"],
    "storage": ws.path("never-created"),
    "max_cache_bytes": "50GiB",
    "default_registry": "registry.example.com:5000",
    "max_parallel_fetches": 8,
    "registries": {
        "registry.example.com:5000": {
            "endpoint": "https://registry.example.com:5000/", "tag_ttl": "5m", "ca_file": ca,
            "max_parallel_fetches": 2,
            "credentials": {"username": "mirror-user", "password_file": pw}},
        "ghcr.io": {"endpoint": "http://cluster-mirror:5000", "mirror": True,
                    "credentials": {"docker_config": dc}},
    },
    "max_connections": 100, "max_header_bytes": 8192, "header_timeout": "5s",
    "send_timeout": "90m", "shutdown_timeout": "0", "log_level": "warn",
    "log_file": ws.path("never-created.log"), "access_log": False,
}
gfile = write_json("good.json", good)
rc, doc, out, err = check(gfile)
t.is_(rc, 0, "a good file: exit 0") or t.diag(err)
doc = doc or {}
t.is_(doc.get("listen"), ["0.0.0.0:5000", "[::1]:5001"], "file: listen")
t.is_(doc.get("max_cache_bytes"), "50GiB", "file: max_cache_bytes")
t.is_(doc.get("max_header_bytes"), "8KiB", "file: an integer size, printed in units")
t.is_(doc.get("send_timeout"), "1h30m", "file: send_timeout 90m printed as 1h30m")
t.is_(doc.get("shutdown_timeout"), "0", "file: a zero duration")
t.is_(doc.get("log_level"), "warn", "file: log_level")
t.is_(doc.get("max_headers"), 64, "file: a key it does not set keeps its default")
t.is_(list(doc.get("registries", {})), ["registry.example.com:5000", "ghcr.io"],
      "file: registries replace the embedded set, in the file's order")
reg = doc.get("registries", {}).get("registry.example.com:5000", {})
t.is_(reg.get("endpoint"), "https://registry.example.com:5000", "file: endpoint normalised")
t.is_(reg.get("tag_ttl"), "5m", "file: tag_ttl")
t.is_(reg.get("ca_file"), ca, "file: ca_file path")
t.is_(reg.get("insecure_skip_verify"), False, "file: per-registry default filled in")
t.is_(reg.get("credentials"), {"username": "mirror-user", "password_file": pw,
                               "password": "<redacted>", "docker_config": None,
                               "helper": None, "lifetime": "5m", "timeout": "10s"},
      "file: credentials, the password redacted, its file's path shown")
gh = doc.get("registries", {}).get("ghcr.io", {})
t.ok(gh.get("mirror") is True and gh.get("tag_ttl") == "1m" and
     gh.get("credentials", {}).get("docker_config") == dc, "file: the tiering registry")
t.ok(SECRET not in out and SECRET not in err, "the password is on neither stdout nor stderr")
t.ok(not os.path.exists(ws.path("never-created")) and
     not os.path.exists(ws.path("never-created.log")),
     "check creates neither the storage directory nor the log file")

flags = ["--listen", "127.0.0.1:7001", "--listen", "127.0.0.1:7002", "--storage",
         ws.path("flag-storage"), "--max-size", "1.5GiB", "--registry",
         "docker.io=http://127.0.0.1:9/", "--default-registry", "docker.io",
         "--allow-any-registry", "--log-level", "debug", "--log-file", ws.path("flag.log")]
rc, fdoc, fout, err = check(gfile, *flags)
t.is_(rc, 0, "file + flags: exit 0") or t.diag(err)
fdoc = fdoc or {}
t.is_(fdoc.get("listen"), ["127.0.0.1:7001", "127.0.0.1:7002"],
      "flags: --listen replaces the file's list")
t.is_(fdoc.get("storage"), ws.path("flag-storage"), "flags: --storage")
t.is_(fdoc.get("max_cache_bytes"), "1536MiB", "flags: --max-size 1.5GiB")
t.is_(fdoc.get("default_registry"), "docker.io", "flags: --default-registry")
t.is_(fdoc.get("allow_any_registry"), True, "flags: --allow-any-registry")
t.is_(fdoc.get("log_level"), "debug", "flags: --log-level")
t.is_(fdoc.get("log_file"), ws.path("flag.log"), "flags: --log-file")
t.is_(list(fdoc.get("registries", {})), ["registry.example.com:5000", "ghcr.io", "docker.io"],
      "flags: --registry adds a registry after the file's")
t.is_(fdoc.get("registries", {}).get("docker.io", {}).get("endpoint"), "http://127.0.0.1:9",
      "flags: --registry endpoint")
t.is_(fdoc.get("max_connections"), 100, "flags: the file's other keys stay")
rc, _, out2, _ = check(*(flags + ["--config", gfile]))
t.is_(out2, fout, "flags: --config is read first wherever it stands")
t.ok(SECRET not in fout and SECRET not in err, "file + flags: the password never printed")
t.ok(not os.path.exists(ws.path("flag-storage")), "flags: no storage created")

# ======================================================================================
# round trip: the output (without what is redacted) gives the same output

for name, text in [("defaults", dflt_out), ("file", out), ("file + flags", fout)]:
    try:
        back = strip_redacted(json.loads(text))
    except ValueError:
        back = None
    bfile = write_json("back-%s.json" % name.replace(" ", ""), back)
    rc, _, again, err = check(bfile)
    t.is_(rc, 0, "round trip (%s): the output is a valid config" % name) or t.diag(err)
    t.is_(again, text, "round trip (%s): the same output" % name)

# ======================================================================================
# bad configurations: exit 2, the key named, nothing on stdout, serve's very message

CLOSED = "http://127.0.0.1:%d" % ws.closed_port()
empty_pw = ws.write("secrets/empty", "\n")
bad_cases = [
    ("unknown top-level key", {"bogus_key": 1}, r"bad-1\.json: bogus_key: unknown key"),
    ("unknown registry key", {"registries": {"docker.io": {"endpoint": CLOSED, "ttl": "5s"}}},
     r"registries\.docker\.io\.ttl: unknown key"),
    ("unknown credentials key",
     {"registries": {"r.io": {"endpoint": CLOSED, "credentials": {"user": "u"}}}},
     r"registries\.r\.io\.credentials\.user: unknown key \(expected username, password_file"),
    ("the redacted password fed back",
     {"registries": {"r.io": {"endpoint": CLOSED, "credentials": {
         "username": "u", "password_file": pw, "password": "<redacted>"}}}},
     r"credentials\.password: unknown key"),
    ("bad duration", {"registries": {"docker.io": {"endpoint": CLOSED, "tag_ttl": "5x"}}},
     r"registries\.docker\.io\.tag_ttl: bad duration \"5x\""),
    ("duration as a number", {"idle_timeout": 60}, r"idle_timeout: expected a duration string"),
    ("zero timeout", {"header_timeout": "0"}, r"header_timeout: must be greater than 0"),
    ("bad size", {"max_header_bytes": "12 parsecs"}, r"max_header_bytes: bad size"),
    ("size out of range", {"max_header_bytes": "1GiB"},
     r"max_header_bytes: 1073741824 is out of range 1024\.\.1048576"),
    ("integer out of range", {"max_connections": 0}, r"max_connections: 0 is out of range"),
    ("bad bool", {"sendfile": "yes"}, r"sendfile: expected true or false"),
    ("bad URL", {"registries": {"docker.io": {"endpoint": "ftp://x"}}},
     r"registries\.docker\.io\.endpoint: bad URL"),
    ("missing endpoint", {"registries": {"docker.io": {"tag_ttl": "5s"}}},
     r"registries\.docker\.io: endpoint is required"),
    ("bad listen", {"listen": ["127.0.0.1:1", "x:99999"]}, r"listen\[1\]: bad address"),
    ("bad log level", {"log_level": "loud"}, r"log_level: expected one of"),
    ("default registry not configured",
     {"registries": {"ghcr.io": {"endpoint": CLOSED}}},
     r"config: default_registry: \"docker\.io\" is not one of the configured registries"),
    ("unreadable ca_file", {"registries": {"docker.io": {
        "endpoint": CLOSED, "ca_file": ws.path("no-ca.pem")}}},
     r"registries\.docker\.io\.ca_file: cannot read"),
    ("empty password file", {"registries": {"r.io": {"endpoint": CLOSED, "credentials": {
        "username": "u", "password_file": empty_pw}}}},
     r"credentials\.password_file: \".*\" is empty"),
    ("a bad key after the secret was read",
     {"registries": {"r.io": {"endpoint": CLOSED, "credentials": {
         "username": "u", "password_file": pw}}}, "max_headers": 7},
     r"max_headers: 7 is out of range"),
]
for i, (name, obj, key_re) in enumerate(bad_cases, 1):
    # port 0 first: should serve accept one of these after all, it binds no fixed port
    path = write_json("bad-%d.json" % i, dict({"listen": "127.0.0.1:0"}, **obj))
    rc, _, out, err = check(path)
    t.is_(rc, 2, "%s: exit 2" % name)
    t.like(err, r"^regmirror: .*" + key_re, "%s: the message names it" % name)
    t.is_(out, "", "%s: nothing on stdout" % name)
    t.ok(SECRET not in out + err, "%s: no secret printed" % name)
    src, sout, serr = rgm("serve", "--config", path, "--storage", ws.path("serve-st"),
                          timeout=10)
    t.ok(src == 2 and serr == err, "%s: serve refuses it with the same message" % name,
         diag="serve: %r %r" % (src, serr))

syntax = ws.write("cfg/syntax.json", '{"max_connections": 5,,\n}')
rc, _, out, err = check(syntax)
t.is_(rc, 2, "JSON syntax error: exit 2")
t.like(err, r"syntax\.json:1:\d+: JSON syntax error", "JSON syntax error: file, line, column")
rc, _, out, err = check(ws.path("cfg", "does-not-exist.json"))
t.is_(rc, 2, "missing file: exit 2")
t.like(err, r"does-not-exist\.json.*No such file", "missing file: named")
t.is_(out, "", "missing file: nothing on stdout")
rc, _, out, err = check("--config", ws.path("cfg", "does-not-exist.json"))
t.is_(rc, 2, "missing --config file: exit 2")

for args, msg_re, name in [
    (["--max-size", "5x"], r"--max-size: bad size \"5x\"", "bad --max-size"),
    (["--log-level", "loud"], r"--log-level: unknown level \"loud\"", "bad --log-level"),
    (["--registry", "NoEquals"], r"--registry: .*NAME=URL", "bad --registry"),
    (["--listen", "5000"], r"config: listen: bad address \"5000\"", "bad --listen"),
    (["--default-registry", "nope.io"], r"default_registry: \"nope\.io\"",
     "unconfigured --default-registry"),
]:
    args = ["--listen", "127.0.0.1:0", "--storage", ws.path("serve-st")] + args
    rc, _, out, err = check(*args)
    t.is_(rc, 2, "%s: exit 2" % name)
    t.like(err, msg_re, "%s: the message" % name)
    src, _, serr = rgm("serve", *args, timeout=10)
    t.ok(src == 2 and serr == err, "%s: serve prints the same" % name, diag=(src, serr))

# ======================================================================================
# usage

rc, out, err = rgm("config")
t.ok(rc == 2 and "--check" in err and out == "", "config without --check: exit 2, usage",
     diag=(rc, err))
rc, out, err = rgm("config", gfile, "--check")
t.is_(rc, 2, "--check must come first")
rc, _, out, err = check("--bogus-flag")
t.ok(rc == 2 and "bogus-flag" in err and "usage" in err, "unknown flag: exit 2, named, usage",
     diag=(rc, err))
rc, _, out, err = check(gfile, gfile)
t.ok(rc == 2 and "config: unexpected argument" in err, "a second FILE: exit 2", diag=err)
rc, _, out, err = check("--listen")
t.is_(rc, 2, "a flag without its argument: exit 2")
rc, _, out, err = check("--help")
t.ok(rc == 0 and "usage: regmirror config" in out, "config --check --help: exit 0")
rc, out, err = rgm("--help")
t.like(out, r"\n  config +check a configuration", "regmirror --help lists config")

# a flag value that JSON cannot carry: valid for serve, not printable
p = subprocess.run([os.fsencode(RGM_BIN), b"config", b"--check", b"--storage", b"/data/\xff"],
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
t.ok(p.returncode == 1 and p.stdout == b"" and b"storage" in p.stderr and b"UTF-8" in p.stderr,
     "a --storage that is not UTF-8: exit 1, the key named", diag=(p.returncode, p.stderr))

t.done()
