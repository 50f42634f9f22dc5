#!/usr/bin/env python3
"""Registry client side of the benchmark (stdlib only).

  client.py pull   BASE REPO TAG [--concurrency 3] [--timeout 600]
  client.py herd   BASE REPO DIGEST [--clients 32] [--timeout 600] [--engine curl|python] [--inline-hash]
  client.py warm   BASE PATH RELAY_CTL [--method GET|HEAD] [--accept A] [--tries 10]
  client.py relay  RELAY_CTL [--match SUBSTR]
All print one JSON object on stdout.
"""
import argparse, hashlib, http.client, json, os, subprocess, sys, tempfile, threading, time, urllib.parse, urllib.request
from concurrent.futures import ThreadPoolExecutor

ACCEPT = ("application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "
          "application/vnd.docker.distribution.manifest.v2+json, "
          "application/vnd.docker.distribution.manifest.list.v2+json")
BUF = 1 << 20

def hostport(base):
    u = urllib.parse.urlsplit(base)
    return u.hostname, u.port or 80

def connect(base, timeout):
    """A connection to BASE: https without verification (warm-tls: the bench's own cert)."""
    u = urllib.parse.urlsplit(base)
    if u.scheme == "https":
        import ssl
        return http.client.HTTPSConnection(u.hostname, u.port or 443, timeout=timeout,
                                           context=ssl._create_unverified_context())
    return http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)

def relay_stats(ctl, match=None):
    d = json.load(urllib.request.urlopen(ctl + "/stats", timeout=30))
    out = {"upstream_bytes": d["bytes_down"], "upstream_requests": len(d["requests"]),
           "upstream_connections": d["connections"], "upstream_peak_conns": d["peak_active_connections"]}
    if match:
        m = [r for r in d["requests"] if match in r["path"]]
        out["match_gets"] = sum(1 for r in m if r["method"] == "GET")
        out["match_heads"] = sum(1 for r in m if r["method"] == "HEAD")
        out["match_bytes"] = sum(r["bytes"] for r in m)
    by = {}
    for r in d["requests"]:
        by[r["method"]] = by.get(r["method"], 0) + 1
    out["by_method"] = by
    return out

AUTH = os.environ.get("CLIENT_AUTH")   # optional Authorization header value

def fetch(conn, path, method="GET", accept=None, sink=None, deadline=None):
    """returns (status, headers, nbytes, sha256hex|None, t_headers, t_last)"""
    h = {"Accept": accept} if accept else {}
    if AUTH: h["Authorization"] = AUTH
    conn.request(method, path, headers=h)
    r = conn.getresponse()
    th = time.monotonic()
    hs = hashlib.sha256() if sink is None else None
    n = 0
    buf = bytearray(BUF); mv = memoryview(buf)
    while True:
        k = r.readinto(mv)
        if not k:
            break
        n += k
        if hs is not None: hs.update(mv[:k])
        else: sink.write(mv[:k])
        if deadline and time.monotonic() > deadline:
            raise TimeoutError("deadline exceeded")
    return r.status, dict(r.getheaders()), n, (hs.hexdigest() if hs else None), th, time.monotonic()

# ------------------------------------------------------------------ pull
def cmd_pull(a):
    host, port = hostport(a.base)
    t0 = time.monotonic(); deadline = t0 + a.timeout
    c = http.client.HTTPConnection(host, port, timeout=120)
    st, hdr, n, sha, _, _ = fetch(c, f"/v2/{a.repo}/manifests/{a.tag}", accept=ACCEPT, deadline=deadline)
    if st != 200:
        print(json.dumps({"ok": False, "error": f"manifest status {st}"})); return 1
    c.request("GET", f"/v2/{a.repo}/manifests/{a.tag}", headers=dict({"Accept": ACCEPT}, **({"Authorization": AUTH} if AUTH else {})))
    man = json.loads(c.getresponse().read())   # (second GET: cached, tiny)
    blobs = [man["config"]] + man["layers"]
    local = threading.local()
    def get(b):
        if not hasattr(local, "c"):
            local.c = http.client.HTTPConnection(host, port, timeout=120)
        s, _, nn, hx, _, _ = fetch(local.c, f"/v2/{a.repo}/blobs/{b['digest']}", deadline=deadline)
        return s == 200 and nn == b["size"] and "sha256:" + hx == b["digest"], nn
    with ThreadPoolExecutor(a.concurrency) as ex:
        res = list(ex.map(get, blobs))
    t = time.monotonic() - t0
    ok = all(r[0] for r in res)
    print(json.dumps({"ok": ok, "time_s": round(t, 3), "blobs": len(blobs),
                      "bytes": n + sum(r[1] for r in res), "concurrency": a.concurrency}))
    return 0 if ok else 1

# ------------------------------------------------------------------ herd
def herd_curl(a, url, tmpdir, res, t_start):
    """One curl process per client (C clients: the load generator's CPU cost stays small, so it
    does not starve the Python WAN relay on a small box). Started back to back; each curl's
    times are offset by its own start, so TTFB/TTLB are from the first client's start."""
    procs = []
    t_start[0] = time.monotonic()
    for i in range(a.clients):
        ts = time.monotonic()
        p = subprocess.Popen(["curl", "-sS", "--max-time", str(int(a.timeout)), "-o", os.path.join(tmpdir, f"c{i}"),
                              "-w", "%{http_code} %{time_starttransfer} %{time_total} %{size_download}", url],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append((p, ts))
    t_start.append(time.monotonic() - t_start[0])   # how long starting all the clients took
    for i, (p, ts) in enumerate(procs):
        rec = {"ok": False}
        res[i] = rec
        try:
            out, err = p.communicate(timeout=a.timeout + 60)
            code, tfb, tot, n = out.decode().split()
            st = int(code)
            rec.update(status=st, bytes=int(float(n)), sha=None, t_hdr=ts + float(tfb), t_last=ts + float(tot),
                       ok=(st == 200 and p.returncode == 0))
            if p.returncode != 0:
                rec["error"] = f"curl exit {p.returncode}: {err.decode().strip()[:120]}"
        except Exception as e:
            p.kill()
            rec["error"] = repr(e)

def cmd_herd(a):
    host, port = hostport(a.base)
    path = f"/v2/{a.repo}/blobs/{a.digest}"
    res = [None] * a.clients
    tmpdir = tempfile.mkdtemp(prefix="herd-", dir=a.tmpdir)
    t_start = [None]
    if a.engine == "curl":
        herd_curl(a, a.base + path, tmpdir, res, t_start)
        return herd_report(a, tmpdir, res, t_start)
    barrier = threading.Barrier(a.clients)
    def worker(i):
        rec = {"ok": False}
        res[i] = rec
        fn = os.path.join(tmpdir, f"c{i}")
        try:
            c = http.client.HTTPConnection(host, port, timeout=a.timeout)
            c.connect()
            barrier.wait(timeout=60)
            ts = time.monotonic()
            if t_start[0] is None or ts < t_start[0]: t_start[0] = ts
            deadline = ts + a.timeout
            if a.inline_hash:
                st, _, n, hx, th, tl = fetch(c, path, deadline=deadline)
            else:
                with open(fn, "wb", buffering=0) as f:
                    st, _, n, hx, th, tl = fetch(c, path, sink=f, deadline=deadline)
            rec.update(status=st, bytes=n, sha=hx, t_hdr=th, t_last=tl, ok=(st == 200))
        except Exception as e:
            rec["error"] = repr(e)
    th = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(a.clients)]
    for t in th: t.start()
    for t in th: t.join(a.timeout + 90)
    return herd_report(a, tmpdir, res, t_start)

def herd_report(a, tmpdir, res, t_start):
    want = a.digest.split(":")[1]
    good = 0
    for i, r in enumerate(res):
        if r and r.get("ok"):
            if r.get("sha") is None:
                h = hashlib.sha256()
                with open(os.path.join(tmpdir, f"c{i}"), "rb") as f:
                    while True:
                        b = f.read(BUF)
                        if not b: break
                        h.update(b)
                r["sha"] = h.hexdigest()
            if r["sha"] == want: good += 1
            else: r["ok"] = False
        try: os.unlink(os.path.join(tmpdir, f"c{i}"))
        except OSError: pass
    os.rmdir(tmpdir)
    done = [r for r in res if r and "t_last" in r]
    ttlb = sorted(r["t_last"] - t_start[0] for r in done) or [float("nan")]
    ttfb = sorted(r["t_hdr"] - t_start[0] for r in done) or [float("nan")]
    med = lambda v: v[len(v) // 2] if len(v) % 2 else (v[len(v)//2 - 1] + v[len(v)//2]) / 2
    errs = sorted({r.get("error") or f"status {r.get('status')}" for r in res if r and not r.get("ok")})
    print(json.dumps({"clients": a.clients, "engine": a.engine, "correct": good, "ttlb_median_s": round(med(ttlb), 3),
                      "ttlb_max_s": round(ttlb[-1], 3), "ttlb_min_s": round(ttlb[0], 3),
                      "ttfb_median_s": round(med(ttfb), 3), "ttfb_max_s": round(ttfb[-1], 3),
                      "start_spread_s": round(t_start[1], 3) if len(t_start) > 1 else None,
                      "errors": errs[:5]}))
    return 0 if good == a.clients else 1

# ------------------------------------------------------------------ warm
def cmd_warm(a):
    """Fetch PATH through the mirror until one fetch causes no upstream request for it."""
    key = a.path.split("?")[0].rsplit("/", 1)[-1]
    for i in range(a.tries):
        before = relay_stats(a.ctl, key)
        c = connect(a.base, 300)
        st, _, n, _, _, _ = fetch(c, a.path, method=a.method, accept=a.accept, deadline=time.monotonic() + 300)
        c.close()
        time.sleep(a.settle)
        after = relay_stats(a.ctl, key)
        new = after["match_gets"] + after["match_heads"] - before["match_gets"] - before["match_heads"]
        if st == 200 and new == 0 and i > 0:
            print(json.dumps({"warm": True, "tries": i + 1, "status": st, "bytes": n})); return 0
    print(json.dumps({"warm": False, "tries": a.tries, "status": st, "note": "upstream still contacted on every request"}))
    return 0

def cmd_relay(a):
    print(json.dumps(relay_stats(a.ctl, a.match)))

def main():
    ap = argparse.ArgumentParser()
    sp = ap.add_subparsers(dest="cmd", required=True)
    p = sp.add_parser("pull"); p.add_argument("base"); p.add_argument("repo"); p.add_argument("tag")
    p.add_argument("--concurrency", type=int, default=3); p.add_argument("--timeout", type=float, default=600)
    p = sp.add_parser("herd"); p.add_argument("base"); p.add_argument("repo"); p.add_argument("digest")
    p.add_argument("--clients", type=int, default=32); p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--inline-hash", action="store_true", help="hash while receiving instead of spooling to --tmpdir")
    p.add_argument("--tmpdir", default="/dev/shm")
    p.add_argument("--engine", choices=("curl", "python"), default="curl",
                   help="curl: one curl process per client (default); python: threads of this script")
    p = sp.add_parser("warm"); p.add_argument("base"); p.add_argument("path"); p.add_argument("ctl")
    p.add_argument("--method", default="GET"); p.add_argument("--accept", default=None)
    p.add_argument("--tries", type=int, default=8); p.add_argument("--settle", type=float, default=1.0)
    p = sp.add_parser("relay"); p.add_argument("ctl"); p.add_argument("--match", default=None)
    a = ap.parse_args()
    sys.exit({"pull": cmd_pull, "herd": cmd_herd, "warm": cmd_warm, "relay": cmd_relay}[a.cmd](a) or 0)

if __name__ == "__main__":
    main()
