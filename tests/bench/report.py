#!/usr/bin/env python3
"""$RESULTS_DIR/*.jsonl -> Markdown on stdout: regmirror's ratios to the peers measured in the
same run and the issue's targets (met / not met), then the raw tables (median [min-max] over
runs). If OBSERVATIONS.md exists next to this script it is appended verbatim."""
import glob, json, os, statistics, sys

H = os.path.dirname(os.path.abspath(__file__))
RD = os.environ.get("RESULTS_DIR", "/tmp/regmirror-bench/results")
ORDER = ["direct", "regmirror", "regmirror-base", "regmirror-sf", "distribution", "nginx", "custom"]
RM, SF, DIST, NGX = "regmirror", "regmirror-sf", "distribution", "nginx"


def load():
    recs = {}
    for fn in sorted(glob.glob(os.path.join(RD, "*__*.jsonl"))):
        for line in open(fn):
            line = line.strip()
            if line:
                r = json.loads(line)
                recs.setdefault((r["mirror"], r["scenario"]), []).append(r)
    return recs


def vals(rs, k):
    return [r[k] for r in rs or [] if isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)]


def med(rs, k):
    v = vals(rs, k)
    return statistics.median(v) if v else None


def rng(rs, k):
    v = vals(rs, k)
    return (min(v), max(v)) if v else (None, None)


def f(x, d=2, scale=1.0):
    if x is None:
        return "–"
    return f"{x * scale:,.{d}f}"


def mr(rs, k, d=2, scale=1.0):
    """median [min–max]"""
    m = med(rs, k)
    lo, hi = rng(rs, k)
    if m is None:
        return "–"
    if len(vals(rs, k)) == 1 or lo == hi:
        return f(m, d, scale)
    return f"{f(m, d, scale)} [{f(lo, d, scale)}–{f(hi, d, scale)}]"


def ratio(a, b, d=2):
    if a is None or b is None or b == 0:
        return "–"
    x = a / b
    if 0 < x < 0.1:
        d = 4 if x < 0.01 else 3
    return f"{x:,.{d}f}×"


def mirrors_for(recs, scen):
    return sorted({m for (m, s) in recs if s == scen},
                  key=lambda m: (("+noauth" in m), ORDER.index(m.split("+")[0]) if m.split("+")[0] in ORDER else 99, m))


def table(hdr, rows):
    out = ["| " + " | ".join(hdr) + " |", "|" + "|".join("---" for _ in hdr) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def allok(rs, key):
    return "yes" if all(r.get(key) for r in rs) else "**NO**"


def verdict(ok):
    return "–" if ok is None else ("**met**" if ok else "**not met**")


def headline(recs, P):
    """regmirror against the peers of the same run, and the issue's targets."""
    g = lambda m, s: recs.get((m, s))
    rows = []            # metric, regmirror, nginx, distribution, regmirror/nginx, regmirror/distribution, target, verdict
    def row(metric, k, s, d=2, scale=1.0, target="", ok=None, m=RM, better="lower"):
        a, n, di = med(g(m, s), k), med(g(NGX, s), k), med(g(DIST, s), k)
        rows.append([metric, f(a, d, scale), f(n, d, scale), f(di, d, scale), ratio(a, n), ratio(a, di),
                     target, verdict(ok)])
        return a, n, di

    ref = g("reference", "ceiling")
    one_copy = med(ref, "curl_throttled_time_s")
    hs = g(RM, "herd")
    if hs:
        gets = [r.get("up_match_gets") for r in hs]
        row("herd: upstream GETs of the blob (32 clients)", "up_match_gets", "herd", 0,
            target="1 (peers: many)", ok=all(x == 1 for x in gets))
        row("herd: upstream bytes / blob size", "up_match_bytes", "herd", 2, 1 / (med(hs, "blob_bytes") or 1))
        ttfbmax = max(vals(hs, "ttfb_max_s") or [None]) if vals(hs, "ttfb_max_s") else None
        row("herd: time to first byte, median client (s)", "ttfb_median_s", "herd", 3)
        row("herd: time to first byte, slowest client (s)", "ttfb_max_s", "herd", 3,
            target="≤ 0.2 s (nginx ~4.5–5.5 s)", ok=None if ttfbmax is None else ttfbmax <= 0.2)
        row("herd: time to last byte, median client (s)", "ttlb_median_s", "herd", 2)
        tl = med(hs, "ttlb_max_s")
        row("herd: time to last byte, slowest client (s)", "ttlb_max_s", "herd", 2,
            target="≤ 1.1× one copy over the link" + (f" ({f(one_copy, 2)} s → {f(1.1 * one_copy, 2)} s)" if one_copy else ""),
            ok=None if (tl is None or one_copy is None) else tl <= 1.1 * one_copy)
        if one_copy:
            rows.append(["herd: slowest client / one copy over the link (`curl` via relay)",
                         ratio(tl, one_copy), ratio(med(g(NGX, "herd"), "ttlb_max_s"), one_copy),
                         ratio(med(g(DIST, "herd"), "ttlb_max_s"), one_copy), "", "", "≤ 1.10×",
                         verdict(None if tl is None else tl <= 1.1 * one_copy)])
        row("herd: clients with correct sha256 (min over runs)", "correct", "herd", 0,
            ok=all(r.get("correct") == r.get("clients") for r in hs), target="32")
    cs = g(RM, "cold")
    if cs:
        for m in (RM, NGX, DIST):
            for r in g(m, "cold") or []:
                r["_upx"] = r.get("up_upstream_bytes", 0) / (r.get("image_bytes") or 1)
        ux = max(vals(cs, "_upx")) if vals(cs, "_upx") else None
        row("cold pull: upstream bytes / image bytes", "_upx", "cold", 3,
            target="1.0× (distribution 2.0×)", ok=None if ux is None else ux <= 1.01)
        row("cold pull: time to complete (s)", "time_s", "cold", 2)
        d = med(g("direct", "cold"), "time_s")
        if d:
            rows.append(["cold pull: time / no-mirror pull over the same link", ratio(med(cs, "time_s"), d),
                         ratio(med(g(NGX, "cold"), "time_s"), d), ratio(med(g(DIST, "cold"), "time_s"), d),
                         "", "", "", "–"])
    ws = g(RM, "warm")
    if ws:
        a, n, _ = med(ws, "GB_per_s"), med(g(NGX, "warm"), "GB_per_s"), None
        row("warm: GB/s (cached 20 MiB blob, 64 conns)", "GB_per_s", "warm", 2, target="≥ nginx",
            ok=None if (a is None or n is None) else a >= n)
        a, n = med(ws, "req_per_s"), med(g(NGX, "warm"), "req_per_s")
        row("warm: requests/s", "req_per_s", "warm", 1, target="≥ nginx", ok=None if (a is None or n is None) else a >= n)
    hd = g(RM, "head")
    if hd:
        a, n = med(hd, "req_per_s"), med(g(NGX, "head"), "req_per_s")
        row("cached-manifest HEAD: requests/s", "req_per_s", "head", 0, target="≥ nginx",
            ok=None if (a is None or n is None) else a >= n)
        row("cached-manifest HEAD: upstream requests in the test", "up_upstream_requests", "head", 0)
    ho = g(RM, "headonly")
    if ho:
        row("HEAD-only tag (never GET by tag): requests/s", "req_per_s", "headonly", 0)
        row("HEAD-only tag: upstream requests in the test", "up_upstream_requests", "headonly", 0)
    for s, what in (("herd", "herd"), ("warm", "warm"), ("head", "cached HEAD")):
        rs = g(RM, s)
        if rs:
            a, n = med(rs, "hwm_kib"), med(g(NGX, s), "hwm_kib")
            row(f"peak RSS (MiB) during {what}", "hwm_kib", s, 1, 1 / 1024, target="< nginx",
                ok=None if (a is None or n is None) else a < n)
    ct = g(RM, "containerd")
    if ct:
        row("containerd: cold fetch (s)", "cold_time_s", "containerd", 2)
        row("containerd: warm fetch (s)", "warm_time_s", "containerd", 2)
        row("containerd: upstream requests on the warm fetch", "warm_up_upstream_requests", "containerd", 0)
    if not rows:
        return
    P("## Headline: regmirror against the peers in the same run\n")
    P("Medians over the runs; ratios are regmirror ÷ peer (for times and memory lower is better, for rates "
      "higher). Targets from issue 4; a target is *met* only as stated in its column (herd first byte: the "
      "slowest client of every run; upstream fetches and bytes: every run).\n")
    P(table(["metric", "regmirror", "nginx", "distribution", "regmirror / nginx", "regmirror / distribution",
             "target", "verdict"], rows))
    P()
    a, b = g(SF, "warm"), g(RM, "warm")
    if a and b:
        P("**sendfile vs pread+write** (warm, regmirror-sf ÷ regmirror): "
          f"GB/s {ratio(med(a, 'GB_per_s'), med(b, 'GB_per_s'))} "
          f"({f(med(a, 'GB_per_s'))} vs {f(med(b, 'GB_per_s'))}), "
          f"req/s {ratio(med(a, 'req_per_s'), med(b, 'req_per_s'))}, "
          f"peak RSS {ratio(med(a, 'hwm_kib'), med(b, 'hwm_kib'))}.")
        a, b = g(SF, "herd"), g(RM, "herd")
        if a and b:
            P(f"Herd slowest client: sendfile {f(med(a, 'ttlb_max_s'))} s vs pread+write {f(med(b, 'ttlb_max_s'))} s "
              f"({ratio(med(a, 'ttlb_max_s'), med(b, 'ttlb_max_s'))}).")
        P()


def scale_sections(recs, P):
    """Issue 11: ingest (plain and TLS), startup, evict, conns, many."""
    for scen, title in (("ingest", "Cold ingest, unthrottled upstream"),
                        ("ingest-tls", "Cold ingest over HTTPS")):
        ms = mirrors_for(recs, scen)
        if not ms:
            continue
        rs0 = recs[(ms[0], scen)]
        mb = (rs0[0].get("blob_bytes") or 0) / 1e6
        P(f"## {title} ({mb:.0f} MB blob, one client, cold mirror, upstream file in page cache)\n")
        base = {m: med(recs[(m, scen)], "time_s") for m in ms}
        rows = []
        for m in ms:
            rs = recs[(m, scen)]
            t = base[m]
            rows.append([m, len(rs), mr(rs, "time_s", 3), f(med(rs, "Bps"), 2, 1e-9),
                         ratio(base.get("nginx"), t) if "nginx" in base and m != "nginx" else "",
                         ratio(base.get("direct"), t) if "direct" in base and m != "direct" else "",
                         allok(rs, "ok")])
        P(table(["mirror", "n", "time (s)", "GB/s", "speed vs nginx", "speed vs curl direct", "ok"],
                rows))
        sha = [r.get("sha256_Bps") for m in ms for r in recs[(m, scen)] if r.get("sha256_Bps")]
        if sha:
            sha.sort()
            P(f"\nOpenSSL SHA-256 on this box during the runs (1 MiB blocks): "
              f"{sha[len(sha) // 2] / 1e9:.2f} GB/s median, i.e. {mb * 1e6 / sha[len(sha) // 2]:.2f} s "
              f"for the blob on one core. speed ratio = peer time / mirror time.\n")
    rs = recs.get(("regmirror", "startup"))
    if rs:
        P("## Startup with a large store\n")
        P(table(["objects", "n", "/v2/ answers after (s)", "background reconcile (s)",
                 "cached HEAD during it", "cold page cache", "peak RSS (MiB)"],
                [[rs[0].get("objects"), len(rs), mr(rs, "ready_s", 3), mr(rs, "reconcile_ms", 1, 1e-3),
                  ",".join(str(r.get("cached_head_status")) for r in rs),
                  ",".join(str(r.get("cold_cache")) for r in rs), mr(rs, "hwm_kib", 0, 1 / 1024)]]))
        P("")
    rs = recs.get(("regmirror", "evict"))
    if rs:
        P("## Eviction at scale (the startup store over max_cache_bytes)\n")
        P(table(["objects", "n", "evicted", "eviction (s)", "objects/s", "HEAD p99 during (ms)",
                 "p99 after the reconcile (ms)", "p99 at rest (ms)", "max during (ms)",
                 "p99 during the reconcile (ms)", "target p99 < 5 ms", "ok"],
                [[rs[0].get("objects"), len(rs), mr(rs, "evicted_objects", 0), mr(rs, "evict_s", 1),
                  mr(rs, "evict_per_s", 0), mr(rs, "evict_p99_ms", 2), mr(rs, "evict_only_p99_ms", 2),
                  mr(rs, "rest_p99_ms", 2), mr(rs, "evict_max_ms", 1), mr(rs, "reconcile_p99_ms", 1),
                  verdict(med(rs, "evict_p99_ms") is not None and med(rs, "evict_p99_ms") < 5),
                  allok(rs, "ok")]]))
        P("\nLatency of lone cached HEADs, one at a time on one connection (evictprobe.py): how "
          "long the loop was busy with something else. \"at rest\" is the same probe after the "
          "eviction, on the same (shared) box.\n")
    for m in mirrors_for(recs, "many"):
        rs = recs[(m, "many")]
        r0 = rs[0]
        P(f"## Many pulls at once: {m} ({r0.get('images')} images, {r0.get('blobs')} blobs, "
          f"{(r0.get('total_bytes') or 0) / 1e6:.0f} MB over the emulated WAN)\n")
        lm = med(rs, "vs_link")
        mm = med(rs, "max_vs_median")
        P(table(["n", "total (s)", "link time (s)", "total / link", "image median (s)",
                 "slowest / median", "upstream GETs per blob (min–max)", "ok"],
                [[len(rs), mr(rs, "time_s", 1), mr(rs, "link_s", 1), mr(rs, "vs_link", 3),
                  mr(rs, "image_median_s", 1), mr(rs, "max_vs_median", 3),
                  f"{min(vals(rs, 'blob_gets_min') or [0])}–{max(vals(rs, 'blob_gets_max') or [0])}",
                  allok(rs, "ok")]]))
        P(f"\nTargets: total / link ≤ 1.05 ({verdict(lm is not None and lm <= 1.05)}), slowest / "
          f"median ≤ 1.2 ({verdict(mm is not None and mm <= 1.2)}), exactly 1 GET per blob "
          f"({verdict(all(r.get('blob_gets_min') == 1 and r.get('blob_gets_max') == 1 for r in rs))}).\n")
    rs = recs.get(("regmirror", "conns"))
    if rs:
        P("## Many idle connections\n")
        rows = []
        for r in rs:
            n = r.get("conns") or 1
            d = (r.get("rss1_kib", 0) - r.get("rss0_kib", 0))
            # jrec.py flattens the ab records into without_* / with_* keys
            w0 = r.get("without_req_per_s", (r.get("without") or {}).get("req_per_s"))
            w1 = r.get("with_req_per_s", (r.get("with") or {}).get("req_per_s"))
            rows.append([n, r.get("rss0_kib"), r.get("rss1_kib"), f"{d * 1024 / n:.0f}",
                         f(w0, 0), f(w1, 0), ratio(w1, w0)])
        P(table(["idle conns", "RSS before (KiB)", "RSS with (KiB)", "bytes/conn",
                 "HEAD req/s without", "HEAD req/s with", "with/without"], rows))
        P("")


def main():
    recs = load()
    env = {}
    try:
        env = json.load(open(os.path.join(RD, "env.json")))
    except OSError:
        pass
    P = print
    P("# regmirror benchmark — results\n")
    P("Generated by `tests/bench/report.py` (`make bench`). Every run starts a fresh mirror with an empty "
      "cache; the mirrors' runs are interleaved (run 1 of each mirror, then run 2, …). Raw tables: "
      "**median [min–max] over n runs**.\n")
    P(f"Emulated WAN link (relay.py): **{env.get('rate_mbit', '?')} Mbit/s shared, {env.get('rtt_ms', '?')} ms RTT**, "
      f"relay burst credit {env.get('burst_ms', '?')} ms; herd clients: {env.get('herd_engine', '?')}; "
      f"machine: {env.get('nproc', '?')} vCPU, kernel {env.get('kernel', '?')}, load average at the start "
      f"{env.get('loadavg', '?')}; run started {env.get('date', '?')}.\n")
    try:
        P("Build: " + "; ".join(l.strip() for l in open(os.path.join(RD, "build.txt")) if l.strip()) + ".\n")
    except OSError:
        pass
    P("Mirror labels: `regmirror` = src/regmirror with its defaults (pread+write, log level warn); "
      "`regmirror-sf` = the same with `{\"sendfile\": true}`; `distribution` = docker-registry `proxy:` mode; `nginx` = nginx "
      "proxy_cache (key `$uri`, `proxy_cache_lock on`, lock timeout/age 600 s); `direct` = no mirror, the "
      "client talks to the throttled upstream (WAN reference).\n")
    headline(recs, P)

    s = "cold"
    if any(k[1] == s for k in recs):
        P("## 1. Cold pull (manifest + config + 5 × 20 MiB layers, 3 parallel blob GETs, empty mirror)\n")
        rows = []
        for m in mirrors_for(recs, s):
            rs = recs[(m, s)]
            img = med(rs, "image_bytes") or 1
            rows.append([m, len(rs), mr(rs, "time_s", 2), f(med(rs, "up_upstream_bytes"), 1, 1e-6),
                         f((med(rs, "up_upstream_bytes") or 0) / img, 3) + "×", f(med(rs, "up_upstream_requests"), 0),
                         allok(rs, "ok")])
        P(table(["mirror", "n", "time to complete (s)", "upstream MB", "upstream / image size",
                 "upstream requests", "all digests OK"], rows)); P()

    s = "herd"
    if any(k[1] == s for k in recs):
        P("## 2. Thundering herd (32 clients GET the same uncached 100 MiB blob at once)\n")
        rows = []
        for m in mirrors_for(recs, s):
            rs = recs[(m, s)]
            b = med(rs, "blob_bytes") or 1
            rows.append([m, len(rs), mr(rs, "ttfb_median_s", 3), mr(rs, "ttfb_max_s", 3), mr(rs, "ttlb_median_s", 2),
                         mr(rs, "ttlb_max_s", 2), mr(rs, "up_match_gets", 0), f(med(rs, "up_match_bytes"), 1, 1e-6),
                         f((med(rs, "up_match_bytes") or 0) / b, 2) + "×",
                         f"{int(min(r.get('correct', 0) for r in rs))}/{rs[0].get('clients')}", mr(rs, "hwm_kib", 1, 1 / 1024)])
        P(table(["mirror", "n", "TTFB median (s)", "TTFB max (s)", "TTLB median (s)", "TTLB max (s)",
                 "upstream GETs of blob", "upstream MB for blob", "× blob size",
                 "clients with correct sha256 (min over runs)", "mirror peak RSS MiB"], rows))
        P("\nTimes from the start of the first client; clients are "
          + ("separate `curl` processes started back to back (sha256 of each body checked after the timing)."
             if env.get("herd_engine") == "curl" else "threads of client.py released by a barrier.") + "\n")

    s = "warm"
    if any(k[1] == s for k in recs):
        P(f"## 3a. Warm throughput (cached 20 MiB blob, wrk -t2 -c{env.get('warm_conns', 64)} -d{env.get('warm_secs', 10)}s)\n")
        rows = []
        for m in mirrors_for(recs, s):
            rs = recs[(m, s)]
            rows.append([m, len(rs), mr(rs, "GB_per_s", 2), mr(rs, "req_per_s", 1), f(med(rs, "lat_avg_ms"), 0),
                         f(med(rs, "lat_p99_ms"), 0), int(sum(r.get("non2xx", 0) + r.get("socket_errors", 0) for r in rs)),
                         f(med(rs, "up_upstream_requests"), 0), mr(rs, "hwm_kib", 1, 1 / 1024)])
        rs = recs.get(("reference", "ceiling"))
        if rs:
            rows.append(["*upstream registry direct, no proxy*", len(rs), mr(rs, "wrk_upstream_GB_per_s", 2),
                         mr(rs, "wrk_upstream_req_per_s", 1), f(med(rs, "wrk_upstream_lat_avg_ms"), 0),
                         f(med(rs, "wrk_upstream_lat_p99_ms"), 0), "", "", ""])
        P(table(["mirror", "n", "GB/s (10^9)", "req/s", "lat avg ms", "lat p99 ms", "errors", "upstream requests during test",
                 "mirror peak RSS MiB"], rows)); P()

    s = "warm-tls"
    if any(k[1] == s for k in recs):
        P(f"## 3d. Warm throughput over TLS (cached 20 MiB blob, HTTPS listener, one ECDSA P-256 "
          f"certificate for every mirror, wrk -t2 -c{env.get('warm_conns', 64)} -d{env.get('warm_secs', 10)}s)\n")
        rows = []
        for m in mirrors_for(recs, s):
            rs = recs[(m, s)]
            rows.append([m, len(rs), mr(rs, "GB_per_s", 2), mr(rs, "req_per_s", 1), f(med(rs, "lat_avg_ms"), 0),
                         f(med(rs, "lat_p99_ms"), 0), int(sum(r.get("non2xx", 0) + r.get("socket_errors", 0) for r in rs)),
                         f(med(rs, "up_upstream_requests"), 0), mr(rs, "hwm_kib", 1, 1 / 1024),
                         ", ".join(sorted({r.get("tls") or "?" for r in rs}))])
        P(table(["mirror", "n", "GB/s (10^9)", "req/s", "lat avg ms", "lat p99 ms", "errors",
                 "upstream requests during test", "mirror peak RSS MiB", "negotiated"], rows))
        # ratios within each run (the runs are interleaved), then their median
        by_run = {}
        for (m, sc), rs in recs.items():
            if sc == s:
                for r in rs:
                    by_run.setdefault(r.get("run"), {})[m] = r.get("GB_per_s")
        for m in ("regmirror", "regmirror-sf"):
            rr = sorted(v[m] / v["nginx"] for v in by_run.values()
                        if isinstance(v.get(m), (int, float)) and isinstance(v.get("nginx"), (int, float)) and v["nginx"])
            if rr:
                P(f"\n**{m} ÷ nginx, GB/s over TLS, per run:** {', '.join(f'{x:.2f}' for x in rr)} "
                  f"(median {rr[len(rr) // 2]:.2f}).")
        P()

    for s, title in (("head", "3b. Cached-manifest HEAD rate: GET the tag once, then HEAD /v2/library/bench/manifests/cold"),
                     ("headonly", "3c. HEAD-only tag: HEAD /v2/library/bench/manifests/cold, never GET by tag (like containerd's resolve)")):
        if any(k[1] == s for k in recs):
            P(f"## {title} (ab -i -k -c{env.get('warm_conns', 64)} -t{env.get('warm_secs', 10)})\n")
            rows = []
            for m in mirrors_for(recs, s):
                rs = recs[(m, s)]
                rows.append([m, len(rs), mr(rs, "req_per_s", 0), f(med(rs, "lat_avg_ms"), 2), f(med(rs, "lat_p99_ms"), 0),
                             int(sum(r.get("non2xx", 0) + r.get("failed", 0) for r in rs)),
                             f(med(rs, "up_upstream_requests"), 0), f(med(rs, "up_upstream_connections"), 0),
                             "yes" if all(r.get("warmup_warm") for r in rs) else "no",
                             mr(rs, "hwm_kib", 1, 1 / 1024)])
            P(table(["mirror", "n", "req/s", "lat avg ms", "lat p99 ms", "errors", "upstream requests during the test",
                     "upstream connections opened", "served without upstream after warm-up?", "mirror peak RSS MiB"], rows)); P()

    if any(k[1] in ("herd", "warm", "head") for k in recs):
        P("## 4. Memory: peak RSS (VmHWM, summed over the mirror's process tree; reset with clear_refs before each test)\n")
        rows = []
        for m in sorted({k[0] for k in recs if k[1] in ("herd", "warm", "head")},
                        key=lambda m: (("+noauth" in m), ORDER.index(m) if m in ORDER else 99, m)):
            row = [m]
            for s in ("herd", "warm", "head"):
                rs = recs.get((m, s))
                row.append(mr(rs, "hwm_kib", 1, 1 / 1024) if rs else "–")
            rows.append(row)
        P(table(["mirror", "herd (32×100 MiB) MiB", "warm wrk (64 conns × 20 MiB) MiB", "HEAD rate MiB"], rows))
        P("\nnginx = master + workers (shared cache-zone pages are counted once per process).\n")

    s = "containerd"
    if any(k[1] == s for k in recs):
        P("## 5. Real client: `ctr content fetch docker.io/library/bench:cold` (hosts.toml mirror)\n")
        rows = []
        for m in mirrors_for(recs, s):
            rs = recs[(m, s)]
            rows.append([m, len(rs), mr(rs, "cold_time_s", 2), mr(rs, "warm_time_s", 2),
                         f(med(rs, "cold_up_upstream_bytes"), 1, 1e-6), f(med(rs, "warm_up_upstream_bytes"), 3, 1e-6),
                         f(med(rs, "warm_up_upstream_requests"), 0),
                         "yes" if all(r.get("cold_ok") and r.get("warm_ok") for r in rs) else "**NO**"])
        P(table(["mirror", "n", "cold fetch (s)", "warm fetch (s)", "upstream MB cold", "upstream MB warm",
                 "upstream requests warm", "ok"], rows))
        P("\ncold = empty mirror + empty containerd root; warm = same mirror (now cached) + a fresh containerd root.\n")

    rs = recs.get(("reference", "ceiling"))
    if rs:
        P("## 6. Physical reference points (100 MiB blob, no mirror)\n")
        gb = lambda k: mr(rs, k, 2, 1e-9)
        P(table(["what", "n", "time (s)", "GB/s"], [
            ["`curl -o /dev/null` straight from upstream docker-registry (no throttle)", len(rs), mr(rs, "curl_upstream_time_s", 3), gb("curl_upstream_Bps")],
            ["`curl` through the WAN relay = one copy over the link", len(rs), mr(rs, "curl_throttled_time_s", 2), gb("curl_throttled_Bps")],
            ["`dd bs=4M` of the blob file (page cache)", len(rs), mr(rs, "dd_pagecache_time_s", 3), gb("dd_pagecache_Bps")],
            ["`dd bs=4M iflag=direct` of the blob file (O_DIRECT, disk)", len(rs), mr(rs, "dd_odirect_time_s", 3), gb("dd_odirect_Bps")],
            ["herd clients vs upstream direct (32×100 MiB, no throttle): TTLB median / max", len(rs),
             mr(rs, "herd_upstream_ttlb_median_s", 2) + " / " + mr(rs, "herd_upstream_ttlb_max_s", 2), ""],
        ]))
        P("\nWAN floor for the herd blob: 100 MiB at 200 Mbit/s = 4.19 s + RTTs; for the cold image (105 MB) ≈ 4.2 s.\n")

    scale_sections(recs, P)

    obs = os.path.join(H, "OBSERVATIONS.md")
    if os.path.exists(obs):
        P(open(obs).read())


if __name__ == "__main__":
    main()
