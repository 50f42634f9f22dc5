#!/usr/bin/env python3
"""contrib/monitoring against real scrapes of running mirrors (docker-registry as ghcr.io, a
fake upstream with RateLimit headers and a failing blob as docker.io and, with max_stale 0, as
quay.io; a fake that answers 401 as gcr.io, with a credential helper that fails; a second
mirror with TLS and an injected store write error):

- /metrics on a fresh start and after pulls: `promtool check metrics` is clean; every family
  has # HELP and # TYPE from start-up (none appears later, and TLS on or off declares the
  same); regmirror_cache_max_bytes is the configured limit, 0 when unlimited;
  regmirror_tls_cert_expiry_seconds is the earliest notAfter of the served chain, re-read at
  SIGHUP.
- The pulls give the new families samples: a NEGATIVE answer, a pull avoided, a stale
  refusal, a credential helper failure, a store write error (RGM_FAULT), TLS handshakes ok and
  failed.
- regmirror-alerts.yml: `promtool check rules`, and `promtool test rules` on
  regmirror-alerts.test.yml (each alert fires on its case and not on the near misses).
- regmirror-dashboard.json: parses; every panel has a data source and targets; every expr is
  valid PromQL (promtool check rules on recording rules made of them).
- In the dashboard, the rules and the rule tests: every metric name is in the fresh scrape;
  every label in a matcher, a by/on/without clause or a legend is one those metrics carry
  after the pulls, and every value a matcher names is one they take.
- The checker itself and promtool reject a wrong name, label, value and a syntax error.
"""

import json
import os
import re
import shutil
import signal
import ssl
import sys
import threading

import fakeup
import rgmtest
from rgmtest import MANIFEST_ACCEPT, sha256_digest

t = rgmtest.TAP(timeout=180)
if not shutil.which("promtool"):
    t.bail("promtool not installed (Debian prometheus; ./bootstrap installs it)")
try:
    import yaml
except ImportError:
    t.bail("python3-yaml not installed for %s (./bootstrap installs it)" % sys.executable)
ws = rgmtest.Workspace()
MON = os.path.join(rgmtest.RGM_SRCDIR, "contrib", "monitoring")
RULES = os.path.join(MON, "regmirror-alerts.yml")
RULE_TESTS = os.path.join(MON, "regmirror-alerts.test.yml")
DASHBOARD = os.path.join(MON, "regmirror-dashboard.json")
TARGET_LABELS = {"job", "instance"}          # added by Prometheus, not in the scrape
# labels whose values are paths from the configuration: any value is one they may take
FREE_VALUES = {("regmirror_credential_errors_total", "source"),
               ("regmirror_tls_cert_expiry_seconds", "file"),
               ("regmirror_cluster_peer_up", "peer"),
               ("regmirror_cluster_peer_forwarded_bytes_total", "peer"),
               ("regmirror_cluster_peer_forwarded_total", "peer")}
MAX_BYTES = 123456789

# ------------------------------------------------------------------------------------
# scrape parsing (the strict parser is 50-tiers.py's; this one collects names and labels)

_SAMPLE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Scrape:
    def __init__(self, text):
        self.text = text
        self.help = {}
        self.type = {}
        self.samples = {}                    # (name, frozenset(labels)) -> float
        self.order = []                      # family names in order of first appearance
        self.bad = []
        for line in text.splitlines():
            m = re.fullmatch(r"# (HELP|TYPE) (\S+) ?(.*)", line)
            if m:
                (self.help if m.group(1) == "HELP" else self.type)[m.group(2)] = m.group(3)
                if m.group(2) not in self.order:
                    self.order.append(m.group(2))
                continue
            if not line or line.startswith("#"):
                continue
            m = _SAMPLE.fullmatch(line)
            if not m:
                self.bad.append(line)
                continue
            labels = frozenset(_LABEL.findall(m.group(2) or ""))
            self.samples[(m.group(1), labels)] = float(m.group(3))
            if m.group(1) not in self.order:
                self.order.append(m.group(1))

    def families(self):
        return set(self.type)

    def labels(self, name):
        return {k for (n, ls) in self.samples for k, _ in ls if n == name}

    def values(self, name, label):
        return {v for (n, ls) in self.samples for k, v in ls if n == name and k == label}

    def value(self, name, **labels):
        return self.samples.get((name, frozenset(labels.items())))


def scrape(m):
    st, _, body = m.get("/metrics")
    if st != 200:
        raise RuntimeError("/metrics answered %d" % st)
    return Scrape(body.decode())


def promtool(*args, input=None):
    return rgmtest.run(["promtool"] + list(args), timeout=60, check=False, input=input)


# ------------------------------------------------------------------------------------
# expression checker: names, labels and values against the scrapes

PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "topk", "bottomk", "quantile", "stddev", "stdvar",
    "group", "count_values", "rate", "irate", "increase", "delta", "idelta", "deriv",
    "predict_linear", "min_over_time", "max_over_time", "avg_over_time", "sum_over_time",
    "count_over_time", "last_over_time", "absent", "absent_over_time", "clamp_min",
    "clamp_max", "abs", "ceil", "floor", "round", "scalar", "vector", "time", "timestamp",
    "changes", "resets", "histogram_quantile", "label_replace", "label_join", "sort",
    "sort_desc", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
    "unless", "offset", "bool", "label_values", "inf", "nan",
}


def check_expr(expr, fresh, pulled):
    """Problems (strings) of one expression: identifiers that are neither PromQL nor a
    metric of the fresh scrape; labels and matcher values the metrics do not have after the
    pulls. Grafana's $variables are allowed."""
    errs = []
    metrics = set(re.findall(r"\bregmirror_[a-zA-Z0-9_]+", expr))
    if not metrics:
        errs.append("no regmirror metric in %r" % expr)
    for name in sorted(metrics):
        if name not in fresh.families():
            errs.append("%s is not in a fresh scrape" % name)
    known = set(TARGET_LABELS)
    for name in metrics:
        known |= pulled.labels(name)
    # selectors: label names and the values they match
    for m in re.finditer(r"\b(regmirror_[a-zA-Z0-9_]+)\s*\{([^}]*)\}", expr):
        name, body = m.group(1), m.group(2)
        for lab, op, val in re.findall(r'([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"([^"]*)"', body):
            if lab in TARGET_LABELS:
                continue
            if lab not in pulled.labels(name):
                errs.append("%s has no label %s" % (name, lab))
                continue
            if (name, lab) in FREE_VALUES:
                continue
            if op in ("=~", "!~"):
                if not re.fullmatch(r"[\w.\-]+(\|[\w.\-]+)*", val):
                    errs.append("%s{%s%s%r}: only plain alternatives are checked" %
                                (name, lab, op, val))
                    continue
                wanted = val.split("|")
            else:
                wanted = [val]
            for v in wanted:
                if v not in pulled.values(name, lab):
                    errs.append('%s{%s="%s"}: no such value (have %s)' %
                                (name, lab, v, sorted(pulled.values(name, lab))))
    # by / without / on / ignoring clauses
    for m in re.finditer(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)",
                         expr):
        for lab in re.findall(r"[a-zA-Z_]\w*", m.group(2)):
            if lab not in known:
                errs.append("%s (%s): no metric of the expression has label %s" %
                            (m.group(1), m.group(2), lab))
    # other identifiers: PromQL words only (catches a misspelled metric)
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    bare = re.sub(r"\{[^}]*\}", "", bare)
    bare = re.sub(r"\[[^\]]*\]", "", bare)
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1",
                  bare)
    bare = re.sub(r"\$\w+", "", bare)
    for ident in re.findall(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*", bare):
        if ident not in PROMQL_WORDS and ident not in metrics:
            errs.append("unknown identifier %s in %r" % (ident, expr))
    return errs, known


def check_legend(legend, known):
    return ["legend {{%s}}: no such label" % lab
            for lab in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend or "") if lab not in known]


def grafana_to_promql(expr):
    """A dashboard expr as Prometheus sees it once Grafana substituted its variables."""
    for k, v in (("$__rate_interval", "5m"), ("$__range", "1h"), ("$__interval", "1m"),
                 ("${job}", ".*"), ("${instance}", ".*"), ("$job", ".*"),
                 ("$instance", ".*")):
        expr = expr.replace(k, v)
    return expr


def merged(*scrapes):
    """One Scrape of several mirrors' (for the names, labels and values they carry)."""
    return Scrape("\n".join(s.text for s in scrapes))


class TLSMirror(rgmtest.Mirror):
    """A mirror with TLS on its listener, scraped on a plain health listener."""

    def __init__(self, ws, cert, key, **kw):
        self.cert, self.key = cert, key
        self.health_port = rgmtest.free_port()
        super().__init__(ws, **kw)

    @property
    def health_url(self):
        return "http://127.0.0.1:%d" % self.health_port

    def command(self):
        return super().command() + ["--tls-cert", self.cert, "--tls-key", self.key,
                                    "--health-listen", "127.0.0.1:%d" % self.health_port]

    def _ready(self):
        if not self.proc.alive():
            raise rgmtest.ProcessExited("regmirror exited (rc %s)" % self.proc.p.returncode)
        return rgmtest.http("GET", self.health_url + "/readyz", timeout=2)[0] == 200

    def get(self, path, headers=None):
        return rgmtest.http("GET", self.health_url + path, headers=headers)


def openssl(*args):
    return rgmtest.run(["openssl"] + list(args), timeout=30).out


def not_after(pem):
    """notAfter of a PEM certificate file, Unix seconds."""
    out = openssl("x509", "-in", pem, "-noout", "-enddate").strip()
    return float(ssl.cert_time_to_seconds(out.partition("=")[2]))


EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


def self_signed(stem, days, ca=False):
    key, cert = ws.path(stem + ".key"), ws.path(stem + ".crt")
    openssl("req", "-x509", *EC, "-keyout", key, "-out", cert, "-days", str(days),
            "-subj", "/CN=" + stem, "-addext",
            "basicConstraints=critical,CA:TRUE" if ca else "subjectAltName=IP:127.0.0.1")
    return cert, key


def leaf_chain(stem, days, ca):
    """A leaf for 127.0.0.1 signed by ca (cert, key), valid for days; the file holds the leaf
    and then ca's certificate."""
    key, csr, cert = ws.path(stem + ".key"), ws.path(stem + ".csr"), ws.path(stem + ".crt")
    ext = ws.write(stem + ".ext", "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    openssl("req", "-new", *EC, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
            "-out", cert, "-days", str(days), "-extfile", ext)
    chain = ws.path(stem + "-chain.crt")
    with open(chain, "w") as out:
        for p in (cert, ca[0]):
            with open(p) as f:
                out.write(f.read())
    return chain, key, cert


# ------------------------------------------------------------------------------------
# upstreams and the mirrors

reg = rgmtest.Registry(ws, name="ghcr")
img = rgmtest.make_image(ws, "org/app:v1", layers=[20_000, 300_000])
pushed = rgmtest.push(img, reg)
fake = fakeup.FakeUpstream(name="docker-hub")
d_ok = fake.add_blob(os.urandom(50_000))
d_bad = fake.add_blob(os.urandom(1_000))
fake.behave("/blobs/" + d_ok, headers={"RateLimit-Limit": "100;w=21600",
                                       "RateLimit-Remaining": "76;w=21600"})
fake.behave("/blobs/" + d_bad, status=503)
d_slow = fake.add_blob(os.urandom(40_000))
fake.behave("/blobs/" + d_slow, stall=1.0)      # concurrent GETs of it join the first
fake.add_image("library/tool", "1")
# gcr.io asks for credentials; the mirror's own identity there is a helper that fails
fake401 = fakeup.FakeUpstream(name="gcr")
fake401.behave("/v2/", status=401, www_authenticate='Basic realm="gcr"')
HELPER = ws.write("helpers/docker-credential-broken",
                  '#!/bin/sh\ncat >/dev/null; echo "no session" >&2; exit 3\n', mode=0o755)
# docker.io tags are revalidated on every request (tag_ttl 0): served STALE once it fails;
# quay.io (the same fake) allows no staleness: refused (503) once it fails
cfg = {"registries": {"ghcr.io": {"endpoint": reg.url},
                      "docker.io": {"endpoint": fake.url, "tag_ttl": "0"},
                      "quay.io": {"endpoint": fake.url, "tag_ttl": "0", "max_stale": "0"},
                      "gcr.io": {"endpoint": fake401.url,
                                 "credentials": {"helper": HELPER, "timeout": "5s"}}}}
m = rgmtest.Mirror(ws, config=cfg, args=["--max-size", str(MAX_BYTES)])
m_unlimited = rgmtest.Mirror(ws, config=cfg, name="unlimited")
# TLS, served chain: a leaf for 20 days signed by a CA that expires in 10; every store write
# fails (EIO)
tls_ca = self_signed("tls-ca", 10, ca=True)
tls_chain, tls_key, tls_leaf = leaf_chain("tls-leaf", 20, tls_ca)
mt = TLSMirror(ws, tls_chain, tls_key, name="tls", env={"RGM_FAULT": "store.write"},
               config={"registries": {"docker.io": {"endpoint": fake.url}}})

# a cluster of two: this mirror and a peer that never answers (the cluster families exist
# only where cluster.peers is set)
mc = rgmtest.Mirror(ws, name="cluster", start=False)
mc.port = rgmtest.free_port()
mc.config = {"registries": {"docker.io": {"endpoint": fake.url}},
             "cluster": {"peers": ["http://127.0.0.1:%d" % mc.port,
                                   "http://127.0.0.1:%d" % rgmtest.free_port()],
                         "self": "http://127.0.0.1:%d" % mc.port}}
mc.start()

fresh = scrape(m)
fresh_unlimited = scrape(m_unlimited)
fresh_tls = scrape(mt)
fresh_cluster = scrape(mc)

# ------------------------------------------------------------------------------------
# the scrapes

r = promtool("check", "metrics", input=fresh.text)
t.ok(r.rc == 0 and r.out.strip() == "", "fresh start: promtool check metrics is clean",
     diag=r.out[-2000:])
t.ok(fresh.families() and set(fresh.help) == fresh.families() and not fresh.bad,
     "fresh start: every family has # HELP and # TYPE (%d families)" % len(fresh.families()),
     diag={"no HELP": sorted(fresh.families() - set(fresh.help)),
           "no TYPE": sorted(set(fresh.help) - fresh.families()), "bad lines": fresh.bad})
undeclared = sorted({n for (n, _) in fresh.samples} - fresh.families())
t.is_(undeclared, [], "fresh start: no sample without its family's # TYPE")
t.is_(fresh_unlimited.families(), fresh.families(),
      "fresh start: the same families whatever the configuration")
t.is_(sorted(fresh_tls.families() ^ fresh.families()), [],
      "fresh start: the same families with TLS on and off")
r = promtool("check", "metrics", input=fresh_tls.text)
t.ok(r.rc == 0 and r.out.strip() == "", "fresh start, TLS: promtool check metrics is clean",
     diag=r.out[-2000:])
t.is_(fresh_tls.type.get("regmirror_tls_cert_expiry_seconds"), "gauge",
      "regmirror_tls_cert_expiry_seconds is a gauge")
want_exp = min(not_after(tls_leaf), not_after(tls_ca[0]))
t.is_((fresh_tls.value("regmirror_tls_cert_expiry_seconds", file=tls_chain),
       not_after(tls_ca[0]) < not_after(tls_leaf)), (want_exp, True),
      "regmirror_tls_cert_expiry_seconds{file}: the chain's earliest notAfter (the CA's)")
t.is_(fresh.type.get("regmirror_cache_max_bytes"), "gauge", "regmirror_cache_max_bytes is a gauge")
t.is_((fresh.value("regmirror_cache_max_bytes"), fresh_unlimited.value("regmirror_cache_max_bytes")),
      (float(MAX_BYTES), 0.0), "regmirror_cache_max_bytes: the limit, 0 when unlimited")
# families whose series appear with traffic (or with TLS), so a fresh plain mirror has none
WITH_TRAFFIC = {"regmirror_upstream_ratelimit_remaining", "regmirror_upstream_ratelimit_limit",
                "regmirror_http_requests_total", "regmirror_credential_errors_total",
                "regmirror_store_errors_total", "regmirror_tls_handshakes_total",
                "regmirror_tls_cert_expiry_seconds", "regmirror_cluster_peers",
         "regmirror_cluster_peer_forwarded_bytes_total"}
empty = sorted(f for f in fresh.families() if not any(n == f for (n, _) in fresh.samples))
t.ok(set(empty) <= WITH_TRAFFIC,
     "fresh start: only the families whose series appear with traffic have no sample yet",
     diag=sorted(set(empty) - WITH_TRAFFIC))

# pulls: ghcr.io twice (MISS, then HIT), from docker.io a blob with RateLimit headers, a blob
# that fails upstream and a tag served STALE, and concurrent cold GETs of one blob (JOIN)
st, h, body = m.get("/v2/org/app/manifests/v1?ns=ghcr.io",
                    headers={"Accept": MANIFEST_ACCEPT})
t.is_((st, h.get("docker-content-digest")), (200, pushed["digest"]), "pull: manifest")
blobs = [img["config"]] + [x["digest"] for x in img["layers"]]
for rnd in ("MISS", "HIT"):
    got = []
    for d in blobs[:2]:
        st, h, b = m.get("/v2/org/app/blobs/%s?ns=ghcr.io" % d)
        got.append((st, h.get("x-cache"), sha256_digest(b) == d))
    t.is_(got, [(200, rnd, True)] * 2, "pull: blobs, %s" % rnd)
results = [None] * 4
barrier = threading.Barrier(len(results))


def cold_get(i):
    try:
        barrier.wait(timeout=10)
        st, h, b = m.get("/v2/library/tool/blobs/%s?ns=docker.io" % d_slow)
        results[i] = (st, h.get("x-cache"), sha256_digest(b) == d_slow)
    except Exception as e:                   # recorded, checked below
        results[i] = ("exc", repr(e), False)


ths = [threading.Thread(target=cold_get, args=(i,), daemon=True) for i in range(len(results))]
for th in ths:
    th.start()
for th in ths:
    th.join(timeout=30)
t.is_(sorted(results), sorted([(200, "MISS", True)] + [(200, "JOIN", True)] * (len(results) - 1)),
      "pull: concurrent cold GETs of a slow blob: one MISS, the others JOIN")

def manifest(ref, ns, repo="library/tool"):
    st, h, _ = m.get("/v2/%s/manifests/%s?ns=%s" % (repo, ref, ns),
                     headers={"Accept": MANIFEST_ACCEPT})
    return st, h.get("x-cache")


got = [manifest("1", "docker.io"), manifest("1", "docker.io"), manifest("1", "quay.io"),
       manifest("nope", "docker.io"), manifest("nope", "docker.io")]
fake.behave("/manifests/", status=503)
got += [manifest("1", "docker.io"), manifest("1", "quay.io")]
t.is_(got, [(200, "MISS"), (200, "HIT"), (200, "HIT"), (404, "MISS"), (404, "NEGATIVE"),
            (200, "STALE"), (503, "MISS")],
      "pull: a docker.io tag (MISS, then HIT: the HEAD named the digest here), the same tag "
      "from quay.io (HIT: its HEAD named a digest cached, a pull avoided), a missing tag (404, "
      "then NEGATIVE); while the upstream fails docker.io is served STALE and quay.io "
      "(max_stale 0) refused")
st, _, _ = m.get("/v2/team/app/manifests/1?ns=gcr.io", headers={"Accept": MANIFEST_ACCEPT})
t.is_(st, 401, "pull: gcr.io answers 401, its credential helper fails")
st, h, b = m.get("/v2/library/tool/blobs/%s?ns=docker.io" % d_ok)
t.is_((st, sha256_digest(b) == d_ok), (200, True), "pull: docker.io blob with RateLimit headers")
st, _, b = m.get("/v2/library/tool/blobs/%s?ns=docker.io" % d_bad)
t.ok(st >= 500 and fake.count("GET", "/blobs/" + d_bad) == 1,
     "pull: a blob the upstream fails (503) answers 5xx", diag=(st, b, fake.requests))

# an upstream request is counted when it ends, after the mirror answered its client: wait
# for the two 503s (the tag's HEAD, the blob's GET)


def failures_counted():
    s = scrape(m)
    return s if (s.value("regmirror_upstream_http_requests_total", registry="docker.io",
                         status="5xx") or 0) >= 2 and \
        (s.value("regmirror_upstream_http_requests_total", registry="quay.io",
                 status="5xx") or 0) >= 1 else None


try:
    pulled = rgmtest.wait_for(failures_counted, timeout=10, what="the 503s counted")
except TimeoutError:
    pulled = scrape(m)
r = promtool("check", "metrics", input=pulled.text)
t.ok(r.rc == 0 and r.out.strip() == "", "after the pulls: promtool check metrics is clean",
     diag=r.out[-2000:])
t.is_(sorted(pulled.families() - fresh.families()), [],
      "after the pulls: no family that a fresh scrape lacked")
t.is_(pulled.value("regmirror_upstream_ratelimit_remaining", registry="docker.io"), 76.0,
      "after the pulls: rate-limit remaining of docker.io exported")
t.is_([pulled.value("regmirror_upstream_http_requests_total", registry="docker.io", status=c)
       for c in ("2xx", "5xx")], [5.0, 2.0],
      "after the pulls: docker.io upstream requests counted by status (5 answered: the "
      "tag's two HEADs and a GET, two blobs; 2 failed: the tag's HEAD, resolved by digest "
      "first, and the blob's)")
t.is_(pulled.value("regmirror_joins_total"), float(len(results) - 1),
      "after the pulls: joins counted")
t.is_(pulled.value("regmirror_cache_requests_total", cache="HIT"), 4.0,
      "after the pulls: four HITs counted (two blobs, two tags)")
t.is_([pulled.value("regmirror_cache_requests_total", cache="NEGATIVE"),
       pulled.value("regmirror_upstream_pulls_avoided_total", registry="quay.io"),
       pulled.value("regmirror_stale_refused_total")], [1.0, 1.0, 1.0],
      "after the pulls: a NEGATIVE answer, a pull avoided, a stale refusal")
cred = {ls: v for (n, ls), v in pulled.samples.items() if n == "regmirror_credential_errors_total"}
t.is_(sorted((dict(ls)["source"], dict(ls)["registry"], v >= 1) for ls, v in cred.items()),
      [("helper/" + HELPER, "gcr.io", True)],
      "after the pulls: the failing credential helper counted by source and registry")

# the TLS mirror: a blob over HTTPS (its store write fails), plain HTTP to the TLS port
ctx = ssl.create_default_context(cafile=tls_ca[0])
st, _, b = rgmtest.http("GET", "https://127.0.0.1:%d/v2/library/tool/blobs/%s?ns=docker.io"
                        % (mt.port, d_ok), ca=tls_ca[0])
t.is_((st, sha256_digest(b) == d_ok), (200, True),
      "TLS mirror: a blob over HTTPS, served though its store write fails")
try:
    rgmtest.http("GET", "http://127.0.0.1:%d/v2/" % mt.port, timeout=5)
except OSError:
    pass                                     # closed without an answer: that is the point


def tls_counted():
    s = scrape(mt)
    return s if (s.value("regmirror_tls_handshakes_total", result="failed",
                         reason="not_tls") or 0) >= 1 else None


try:
    pulled_tls = rgmtest.wait_for(tls_counted, timeout=10, what="the plain request counted")
except TimeoutError:
    pulled_tls = scrape(mt)
r = promtool("check", "metrics", input=pulled_tls.text)
t.ok(r.rc == 0 and r.out.strip() == "", "TLS mirror after traffic: promtool check metrics is "
     "clean", diag=r.out[-2000:])
t.ok((pulled_tls.value("regmirror_tls_handshakes_total", result="ok") or 0) >= 1 and
     pulled_tls.value("regmirror_tls_handshakes_total", result="failed", reason="not_tls") == 1,
     "TLS mirror: handshakes counted, ok and failed (not_tls)",
     diag=[(n, sorted(ls), v) for (n, ls), v in pulled_tls.samples.items() if "tls" in n])
t.ok((pulled_tls.value("regmirror_store_errors_total", op="write", error="EIO") or 0) >= 1,
     "TLS mirror: the injected store write error counted (op write, EIO)",
     diag=[(sorted(ls), v) for (n, ls), v in pulled_tls.samples.items() if "store" in n])
# SIGHUP with a self-signed certificate for 5 days: the gauge follows the new file's chain
new_cert, new_key = self_signed("tls-new", 5)
shutil.copyfile(new_cert, tls_chain)
shutil.copyfile(new_key, tls_key)
os.kill(mt.proc.pid, signal.SIGHUP)
try:
    rgmtest.wait_for(lambda: scrape(mt).value("regmirror_tls_cert_expiry_seconds", file=tls_chain)
                     == not_after(new_cert), timeout=10, what="the new expiry")
except TimeoutError:
    pass
t.is_(scrape(mt).value("regmirror_tls_cert_expiry_seconds", file=tls_chain), not_after(new_cert),
      "regmirror_tls_cert_expiry_seconds: re-read at SIGHUP (the new 5-day certificate)")

r = promtool("check", "metrics", input=fresh_cluster.text)
t.ok(r.rc == 0 and r.out.strip() == "", "cluster mirror: promtool check metrics is clean",
     diag=r.out[-2000:])
t.is_(sorted(fresh.families() - fresh_cluster.families()), [],
      "cluster mirror: every family of a plain one, and the cluster's")


def peer_down():
    """A blob request (a digest the dead peer may own: forwarding to it fails and marks it
    down), then a scrape."""
    mc.get("/v2/library/tool/blobs/sha256:%s?ns=docker.io" % os.urandom(32).hex())
    s = scrape(mc)
    return s if s.value("regmirror_cluster_peers", state="up") == 1.0 else None


try:
    pulled_cluster = rgmtest.wait_for(peer_down, timeout=20, what="the dead peer marked down")
except TimeoutError:
    pulled_cluster = scrape(mc)
t.is_(sorted(v for (n, ls), v in pulled_cluster.samples.items()
             if n == "regmirror_cluster_peer_up"), [0.0, 1.0],
      "cluster mirror: regmirror_cluster_peer_up is 1 for itself, 0 for the dead peer")

# names, labels and values: what any of the mirrors carries
pulled = merged(pulled, pulled_tls, pulled_cluster)
fresh = merged(fresh, fresh_cluster)
# families that may still have no sample after all of the above (none today; a family added
# later without traffic that gives it samples is listed here, and the dashboard cannot be
# checked against its labels)
MAY_BE_EMPTY = set()
empty = sorted(f for f in pulled.families() if not any(n == f for (n, _) in pulled.samples))
t.is_(sorted(set(empty) - MAY_BE_EMPTY), [],
      "after the pulls: every family has samples (%d families)" % len(pulled.families()))

# ------------------------------------------------------------------------------------
# the checker must be able to fail

probes = {
    "misspelled metric": 'rate(regmiror_joins_total[5m])',
    "metric not exported": "regmirror_never_exported_total",
    "wrong label value": 'regmirror_served_bytes_total{cache="hit"}',
    "label the metric lacks": 'regmirror_joins_total{registry="docker.io"}',
    "grouping by a missing label": "sum by (route) (rate(regmirror_served_bytes_total[5m]))",
    "regex value not exported": 'regmirror_cache_requests_total{cache=~"HIT|WARM"}',
}
flagged = sorted(k for k, e in probes.items() if check_expr(e, fresh, pulled)[0])
t.is_(flagged, sorted(probes), "checker: flags each wrong expression")
good = 'sum by (cache) (rate(regmirror_served_bytes_total{job=~"$job", cache=~"HIT|JOIN"}[5m]))'
t.is_(check_expr(good, fresh, pulled)[0], [], "checker: accepts a right one")
bad_rules = ws.write("bad.yml", "groups:\n  - name: x\n    rules:\n      - alert: X\n"
                                "        expr: rate(regmirror_joins_total[5m]\n")
t.ok(promtool("check", "rules", bad_rules).rc != 0, "promtool check rules rejects a syntax error")

# ------------------------------------------------------------------------------------
# the alert rules

r = promtool("check", "rules", RULES)
t.ok(r.rc == 0 and "SUCCESS" in r.out, "promtool check rules regmirror-alerts.yml",
     diag=r.out[-2000:])
r = rgmtest.run(["promtool", "test", "rules", os.path.basename(RULE_TESTS)], timeout=120,
                check=False, cwd=MON)
t.ok(r.rc == 0 and "SUCCESS" in r.out, "promtool test rules regmirror-alerts.test.yml",
     diag=r.out[-3000:])

with open(RULES) as f:
    rules = yaml.safe_load(f)
alerts = [x for g in rules["groups"] for x in g["rules"] if "alert" in x]
errs = []
for a in alerts:
    errs += ["%s: %s" % (a["alert"], e) for e in check_expr(a["expr"], fresh, pulled)[0]]
    if a.get("labels", {}).get("severity") not in ("info", "warning", "critical"):
        errs.append("%s: severity %r" % (a["alert"], a.get("labels", {}).get("severity")))
    if not a.get("annotations", {}).get("summary"):
        errs.append("%s: no summary" % a["alert"])
t.is_(errs, [], "alert rules (%d): metrics, labels and values exist in real scrapes"
      % len(alerts))
want = {"RegmirrorUpstreamFailing", "RegmirrorRateLimitLow", "RegmirrorCacheNearFull",
        "RegmirrorNoCacheHits", "RegmirrorStoreErrors", "RegmirrorCredentialSourceFailing",
        "RegmirrorRateLimitReserve", "RegmirrorStaleRefused", "RegmirrorTLSHandshakeFailures",
        "RegmirrorTLSCertExpiring", "RegmirrorClusterPeerDown"}
t.is_(sorted(want - {a["alert"] for a in alerts}), [], "alert rules: the eleven asked for exist")

with open(RULE_TESTS) as f:
    rtests = yaml.safe_load(f)
errs = []
tested = set()
for case in rtests["tests"]:
    for s in case.get("input_series", []):
        mm = re.fullmatch(r"(\w+)\{(.*)\}", s["series"])
        if not mm:
            errs.append("series %r" % s["series"])
            continue
        sel = "%s{%s}" % (mm.group(1), mm.group(2))
        errs += ["rule test series: " + e for e in check_expr(sel, fresh, pulled)[0]]
    for at in case.get("alert_rule_test", []):
        if at.get("exp_alerts"):
            tested.add(at["alertname"])
t.is_(errs, [], "rule tests: their input series are real metrics with real labels")
t.is_(sorted({a["alert"] for a in alerts} - tested), [],
      "rule tests: every alert has a case where it fires")

# ------------------------------------------------------------------------------------
# the dashboard

with open(DASHBOARD) as f:
    dash = json.load(f)
t.ok(dash.get("uid") and dash.get("title") and isinstance(dash.get("panels"), list),
     "dashboard: JSON with uid, title and panels")
panels = []
for p in dash["panels"]:
    panels.append(p)
    panels += p.get("panels", [])
ids = [p.get("id") for p in panels]
t.ok(len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids),
     "dashboard: %d panels with unique ids" % len(panels))
errs = []
exprs = []
for p in panels:
    if p.get("type") == "row":
        continue
    g = p.get("gridPos", {})
    if not all(k in g for k in ("h", "w", "x", "y")) or g["x"] + g["w"] > 24:
        errs.append("%s: gridPos %r" % (p.get("title"), g))
    if (p.get("datasource") or {}).get("uid") != "${datasource}":
        errs.append("%s: datasource %r" % (p.get("title"), p.get("datasource")))
    if not p.get("targets"):
        errs.append("%s: no targets" % p.get("title"))
    for tg in p.get("targets", []):
        if not tg.get("expr"):
            errs.append("%s: target without expr" % p.get("title"))
            continue
        exprs.append((p.get("title"), tg["expr"]))
        e, known = check_expr(tg["expr"], fresh, pulled)
        errs += ["%s: %s" % (p.get("title"), x) for x in e + check_legend(tg.get("legendFormat"),
                                                                           known)]
for v in dash.get("templating", {}).get("list", []):
    if v.get("type") == "query":
        q = v["query"]["query"] if isinstance(v.get("query"), dict) else v.get("query")
        mm = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q or "")
        if not mm:
            errs.append("variable %s: query %r is not label_values(selector, label)"
                        % (v["name"], q))
            continue
        e, known = check_expr(mm.group(1), fresh, pulled)
        if mm.group(2) not in known:
            e.append("no label %s" % mm.group(2))
        errs += ["variable %s: %s" % (v["name"], x) for x in e]
t.is_(errs, [], "dashboard: %d exprs; metrics, labels, values and legends exist in real "
      "scrapes" % len(exprs))
used = set()
for _, e in exprs:
    used |= set(re.findall(r"\bregmirror_[a-zA-Z0-9_]+", e))
asked = {"regmirror_http_requests_total", "regmirror_served_bytes_total",
         "regmirror_upstream_bytes_total", "regmirror_joins_total", "regmirror_fetches_in_flight",
         "regmirror_fetches_queued", "regmirror_upstream_errors_total",
         "regmirror_upstream_ratelimit_remaining", "regmirror_cache_max_bytes",
         "regmirror_stale_refused_total", "regmirror_upstream_pulls_total",
         "regmirror_upstream_pulls_avoided_total", "regmirror_upstream_ratelimit_reserve",
         "regmirror_store_errors_total", "regmirror_credential_errors_total",
         "regmirror_tls_handshakes_total", "regmirror_connections_refused_total",
         "regmirror_tls_cert_expiry_seconds", "regmirror_cluster_peers",
         "regmirror_cluster_peer_forwarded_bytes_total"}
t.is_(sorted(asked - used), [], "dashboard: hit ratio, bytes by cache result, bytes saved, joins, "
      "fetches in flight and queued, upstream errors, rate limit, cache limit, stale served "
      "and refused, pulls spent and avoided, rate-limit reserve, store and credential errors, "
      "TLS handshakes and expiry, connections refused, peers up, bytes forwarded")
neg = [e for _, e in exprs if 'cache="NEGATIVE"' in e]
t.ok(neg, "dashboard: negative cache hits")
rec = {"groups": [{"name": "dashboard", "rules": [
    {"record": "dashboard:expr_%d" % i, "expr": grafana_to_promql(e)}
    for i, (_, e) in enumerate(exprs)]}]}
path = ws.write("dashboard-rules.yml", json.dumps(rec, indent=1))
r = promtool("check", "rules", path)
t.ok(r.rc == 0 and "SUCCESS" in r.out, "dashboard: every expr is valid PromQL (promtool)",
     diag=r.out[-3000:])

t.done()
