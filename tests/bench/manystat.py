#!/usr/bin/env python3
"""manystat.py MANY_JSON RELAY_CTL RATE_MBIT T_TOTAL PULL_OUT... -> one JSON line (the `many`
scenario): per image time (client.py pull's lines, one file each), the total against the link
time of every byte the images hold (total bytes x 8 / RATE_MBIT), and the upstream GETs per
blob from the relay's request log (the target is exactly 1 each)."""
import json
import statistics
import sys
import urllib.request

many, ctl, rate, total = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
img = json.load(open(many))
pulls = []
for fn in sys.argv[5:]:
    try:
        pulls.append(json.loads(open(fn).read().strip().splitlines()[-1]))
    except (OSError, ValueError, IndexError):
        pulls.append({"ok": False})
d = json.load(urllib.request.urlopen(ctl + "/stats", timeout=30))
gets = {}
for r in d["requests"]:
    if r["method"] == "GET" and "/blobs/" in r["path"]:
        dg = r["path"].rsplit("/", 1)[1]
        gets[dg] = gets.get(dg, 0) + 1
blobs = [b for i in img["images"] for b in i["blobs"]]
per_blob = [gets.get(b, 0) for b in blobs]
times = [p.get("time_s") for p in pulls if isinstance(p.get("time_s"), (int, float))]
med = statistics.median(times) if times else None
link_s = img["total_bytes"] * 8 / (rate * 1e6) if rate > 0 else None
print(json.dumps({
    "ok": len(pulls) == len(img["images"]) and all(p.get("ok") for p in pulls),
    "images": len(img["images"]), "blobs": len(blobs), "total_bytes": img["total_bytes"],
    "time_s": round(total, 3), "link_s": round(link_s, 3) if link_s else None,
    "vs_link": round(total / link_s, 3) if link_s else None,
    "image_median_s": med, "image_max_s": max(times) if times else None,
    "max_vs_median": round(max(times) / med, 3) if med else None,
    "blob_gets_min": min(per_blob) if per_blob else None,
    "blob_gets_max": max(per_blob) if per_blob else None,
    "upstream_bytes": d["bytes_down"], "upstream_requests": len(d["requests"]),
}))
