#!/usr/bin/env bash
# Pull-through registry mirror benchmark driver (adapted from the workplace harness).
#   tests/bench/bench.sh [-m MIRRORS] [-s SCENARIOS] [-n RUNS]     (run.sh drives the full run)
#   MIRRORS   comma list of plugins in mirrors/ (regmirror,regmirror-sf,distribution,nginx,direct)
#             default regmirror,regmirror-sf,distribution,nginx
#   SCENARIOS comma list of: cold herd warm head containerd ceiling                  default all
#   RUNS      repetitions per scenario (fresh mirror + empty cache each run)         default 3
# Runs are interleaved (run 1 of every mirror, then run 2, ...) so that drift in the load of the
# machine hits every mirror alike.
# Results: $RESULTS_DIR/<mirror>__<scenario>.jsonl (one JSON line per run; overwritten for the
# pairs being run). A run whose clients got errors or wrong bytes keeps the mirror's log in
# $RESULTS_DIR/failed/.
set -uo pipefail
HARNESS=$(cd "$(dirname "$0")" && pwd)
. "$HARNESS/lib/common.sh"

MIRRORS=${MIRRORS:-regmirror,regmirror-sf,distribution,nginx}
SCENARIOS=${SCENARIOS:-cold,herd,warm,head,containerd,ceiling}
RUNS=${RUNS:-3}
HERD_CLIENTS=${HERD_CLIENTS:-32}
WARM_SECS=${WARM_SECS:-10}; WARM_CONNS=${WARM_CONNS:-64}; WRK_THREADS=${WRK_THREADS:-2}
PULL_CONCURRENCY=${PULL_CONCURRENCY:-3}
SCEN_TIMEOUT=${SCEN_TIMEOUT:-600}     # hard cap (s) for any single client command
HERD_ENGINE=${HERD_ENGINE:-curl}      # curl: a curl process per herd client; python: threads
while getopts "m:s:n:h" o; do
  case $o in m) MIRRORS=$OPTARG;; s) SCENARIOS=$OPTARG;; n) RUNS=$OPTARG;;
             *) sed -n '2,8p' "$0"; exit 2;; esac
done

ensure_seeded || die "seeding failed"
IMG=$WORK/images.json
jq_() { $PY -c "import json,sys;d=json.load(open('$IMG'));print($1)"; }
HERD_DIGEST=$(jq_ 'd["tags"]["herd"]["layers"][0]["digest"]')
HERD_SIZE=$(jq_ 'd["tags"]["herd"]["layers"][0]["size"]')
HERD_FILE=$(jq_ 'd["herd_blob_file"]')
WARM_DIGEST=$(jq_ 'd["tags"]["cold"]["layers"][0]["digest"]')
WARM_SIZE=$(jq_ 'd["tags"]["cold"]["layers"][0]["size"]')
COLD_TOTAL=$(jq_ 'd["tags"]["cold"]["total_bytes"]')
CLIENT="$PY $HARNESS/client.py"
JREC="$PY $HARNESS/lib/jrec.py"
start_upstream
start_relay
now() { date +%s.%N; }
elapsed() { $PY -c "print(round($2-$1,3))"; }

# ------------------------------------------------------------------ scenarios
# each prints ONE json line on stdout
sc_cold() {   # 1. cold pull of manifest+config+N layers through an empty mirror
  relay_reset
  local r; r=$(timeout "$SCEN_TIMEOUT" $CLIENT pull "$MIRROR_URL" "$REPO" cold --concurrency "$PULL_CONCURRENCY")
  $JREC ":=$r" image_bytes="$COLD_TOTAL" "up:=$($CLIENT relay "$RELAY_CTL")"
}

sc_herd() {   # 2. N clients at once GET the same uncached blob
  mirror_hwm_reset; relay_reset
  local r; r=$(timeout $((SCEN_TIMEOUT+120)) $CLIENT herd "$MIRROR_URL" "$REPO" "$HERD_DIGEST" \
               --clients "$HERD_CLIENTS" --timeout "$SCEN_TIMEOUT" --engine "$HERD_ENGINE")
  sleep 2   # let background upstream fetches (if any) show up in the counters
  $JREC ":=$r" blob_bytes="$HERD_SIZE" "up:=$($CLIENT relay "$RELAY_CTL" --match "${HERD_DIGEST#sha256:}")" \
        hwm_kib="$(mirror_hwm_kib)"
}

run_wrk() {   # run_wrk URL [extra wrk args...] -> json
  local url=$1; shift; local out=$RUNDIR/wrk.$RANDOM.txt
  timeout $((WARM_SECS+60)) wrk -t"$WRK_THREADS" -c"$WARM_CONNS" -d"${WARM_SECS}s" --timeout 30s --latency "$@" "$url" > "$out" 2>&1
  $PY "$HARNESS/lib/wrkparse.py" "$out"
}

sc_warm() {   # 3a. cached 20 MB blob, 64 connections, WARM_SECS seconds
  local path=/v2/$REPO/blobs/$WARM_DIGEST w r
  w=$($CLIENT warm "$MIRROR_URL" "$path" "$RELAY_CTL" --tries 8)
  mirror_hwm_reset; relay_reset
  r=$(run_wrk "$MIRROR_URL$path")
  $JREC ":=$r" "warmup:=$w" blob_bytes="$WARM_SIZE" "up:=$($CLIENT relay "$RELAY_CTL")" hwm_kib="$(mirror_hwm_kib)"
}

run_ab_head() {   # wrk 4.1 / h2load hang on HEAD responses (they wait for a body), so use ab -i
  local url=$1 out=$RUNDIR/ab.$RANDOM.txt
  timeout $((WARM_SECS+60)) ab -q -i -k -c "$WARM_CONNS" -t "$WARM_SECS" -n 100000000 -s 30 \
      -H "Accept: application/vnd.oci.image.manifest.v1+json" "$url" > "$out" 2>&1
  $PY "$HARNESS/lib/abparse.py" "$out"
}

sc_headonly() {   # 3c. HEAD manifest by tag when clients only ever HEAD it (containerd's resolve)
  local path=/v2/$REPO/manifests/cold w r
  w=$($CLIENT warm "$MIRROR_URL" "$path" "$RELAY_CTL" --method HEAD \
        --accept "application/vnd.oci.image.manifest.v1+json" --tries 3 --settle 0.5)
  mirror_hwm_reset; relay_reset
  r=$(run_ab_head "$MIRROR_URL$path")
  $JREC ":=$r" "warmup:=$w" "up:=$($CLIENT relay "$RELAY_CTL")" hwm_kib="$(mirror_hwm_kib)"
}

sc_head() {   # 3b. small-object rate: HEAD manifest by tag (cached)
  local path=/v2/$REPO/manifests/cold w r g
  # a pull GETs the manifest by tag: that caches the tag in every mirror (a HEAD miss may be
  # relayed upstream uncached), then HEAD until one causes no upstream request
  g=$($CLIENT warm "$MIRROR_URL" "$path" "$RELAY_CTL" --method GET \
        --accept "application/vnd.oci.image.manifest.v1+json" --tries 1 --settle 0.2)
  w=$($CLIENT warm "$MIRROR_URL" "$path" "$RELAY_CTL" --method HEAD \
        --accept "application/vnd.oci.image.manifest.v1+json" --tries 3 --settle 0.5)
  mirror_hwm_reset; relay_reset
  r=$(run_ab_head "$MIRROR_URL$path")
  $JREC ":=$r" "warmup:=$w" "up:=$($CLIENT relay "$RELAY_CTL")" hwm_kib="$(mirror_hwm_kib)"
}

# ---- containerd (5. real client)
ctrd_start() {
  CTRD_DIR=$RUNDIR/containerd-$RANDOM; mkdir -p "$CTRD_DIR/hosts/docker.io"
  cat > "$CTRD_DIR/config.toml" <<EOC
version = 2
root = "$CTRD_DIR/root"
state = "$CTRD_DIR/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$CTRD_DIR/c.sock"
[ttrpc]
  address = "$CTRD_DIR/c.sock.ttrpc"
[debug]
  address = "$CTRD_DIR/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$CTRD_DIR/opt"
EOC
  containerd --config "$CTRD_DIR/config.toml" > "$CTRD_DIR/containerd.log" 2>&1 &
  CTRD_PID=$!; track $CTRD_PID
  local i; for i in $(seq 1 100); do ctr -a "$CTRD_DIR/c.sock" version >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "containerd did not start ($CTRD_DIR/containerd.log)"
}
ctrd_stop() { kill_pid "$CTRD_PID"; rm -rf "$CTRD_DIR"; }
ctr_fetch() {   # -> json {ok,time_s}
  cat > "$CTRD_DIR/hosts/docker.io/hosts.toml" <<EOC
server = "$MIRROR_URL"
[host."$MIRROR_URL"]
  capabilities = ["pull", "resolve"]
EOC
  local t0 t1 rc
  t0=$(now)
  timeout "$SCEN_TIMEOUT" ctr -a "$CTRD_DIR/c.sock" -n bench content fetch --hosts-dir "$CTRD_DIR/hosts" \
      "docker.io/$REPO:cold" > "$CTRD_DIR/fetch.log" 2>&1; rc=$?
  t1=$(now)
  local n; n=$(ctr -a "$CTRD_DIR/c.sock" -n bench content ls -q 2>/dev/null | wc -l)
  echo "{\"ok\": $([ $rc = 0 ] && echo true || echo false), \"time_s\": $(elapsed "$t0" "$t1"), \"blobs_in_store\": $n}"
}
sc_containerd() {   # cold fetch (empty mirror, empty containerd) then warm fetch (fresh containerd root)
  local c w uc uw
  relay_reset; ctrd_start; c=$(ctr_fetch); uc=$($CLIENT relay "$RELAY_CTL"); ctrd_stop
  sleep 1
  relay_reset; ctrd_start; w=$(ctr_fetch); uw=$($CLIENT relay "$RELAY_CTL"); ctrd_stop
  $JREC "cold:=$c" "warm:=$w" "cold_up:=$uc" "warm_up:=$uw"
}

sc_ceiling() {  # physical reference points, no mirror involved
  local u=/v2/$REPO/blobs/$HERD_DIGEST a b c d w h
  a=$(curl -s -o /dev/null --max-time 120 -w '{"time_s": %{time_total}, "Bps": %{speed_download}}' "$UPSTREAM_DIRECT$u")
  relay_reset
  b=$(curl -s -o /dev/null --max-time 300 -w '{"time_s": %{time_total}, "Bps": %{speed_download}}' "$UPSTREAM_URL$u")
  c=$(dd if="$HERD_FILE" of=/dev/null bs=4M 2>&1 | $PY -c 'import sys,re,json;t=sys.stdin.read();m=re.search(r"(\d+) bytes.*copied, ([\d.]+) s",t);print(json.dumps({"time_s":float(m.group(2)),"Bps":int(m.group(1))/float(m.group(2))}))')
  d=$(dd if="$HERD_FILE" of=/dev/null bs=4M iflag=direct 2>&1 | $PY -c 'import sys,re,json;t=sys.stdin.read();m=re.search(r"(\d+) bytes.*copied, ([\d.]+) s",t);print(json.dumps({"time_s":float(m.group(2)),"Bps":int(m.group(1))/float(m.group(2))}))')
  w=$(run_wrk "$UPSTREAM_DIRECT/v2/$REPO/blobs/$WARM_DIGEST")
  h=$(timeout $((SCEN_TIMEOUT+120)) $CLIENT herd "$UPSTREAM_DIRECT" "$REPO" "$HERD_DIGEST" --clients "$HERD_CLIENTS" --timeout "$SCEN_TIMEOUT" --engine "$HERD_ENGINE")
  $JREC "herd_upstream:=$h" "curl_upstream:=$a" "curl_throttled:=$b" "dd_pagecache:=$c" "dd_odirect:=$d" "wrk_upstream:=$w" blob_bytes="$HERD_SIZE"
}

# ------------------------------------------------------------------ main loop
# ok_run JSON: did the clients get what they asked for? (else the mirror log is kept)
ok_run() {
  $PY -c 'import json,sys
r=json.loads(sys.argv[1])
bad=(r.get("ok") is False or r.get("cold_ok") is False or r.get("warm_ok") is False
     or ("correct" in r and r["correct"] != r.get("clients"))
     or r.get("non2xx", 0) or r.get("socket_errors", 0) or r.get("failed", 0))
sys.exit(1 if bad else 0)' "$1"
}
IFS=, read -r -a MLIST <<< "$MIRRORS"
IFS=, read -r -a SLIST <<< "$SCENARIOS"
echo "{\"rate_mbit\": $RATE_MBIT, \"rtt_ms\": $RTT_MS, \"burst_ms\": ${RELAY_BURST_MS:-5}, \"runs\": $RUNS, \"herd_clients\": $HERD_CLIENTS, \"herd_engine\": \"$HERD_ENGINE\", \"warm_secs\": $WARM_SECS, \"warm_conns\": $WARM_CONNS, \"date\": \"$(date -Is)\", \"nproc\": $(nproc), \"kernel\": \"$(uname -r)\", \"loadavg\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}" > "$RESULTS_DIR/env.json"
for s in "${SLIST[@]}"; do
  declare -F "sc_$s" >/dev/null || die "unknown scenario $s"
  if [ "$s" = ceiling ]; then
    f=$RESULTS_DIR/reference__ceiling.jsonl; : > "$f"
    for r in $(seq 1 "$RUNS"); do
      log "== ceiling run $r/$RUNS"
      $JREC mirror=reference scenario=ceiling run="$r" ":=$(sc_ceiling)" | tee -a "$f"
    done
    continue
  fi
  if [ "$s" = containerd ] && { [ "$(id -u)" != 0 ] || ! command -v containerd >/dev/null || ! command -v ctr >/dev/null; }; then
    log "skipping containerd: needs root and containerd + ctr"; continue
  fi
  for m in "${MLIST[@]}"; do
    label=$m; [ "$UPSTREAM_AUTH" = none ] && label="$m+noauth"
    : > "$RESULTS_DIR/${label}__$s.jsonl"
  done
  for r in $(seq 1 "$RUNS"); do
    for m in "${MLIST[@]}"; do
      label=$m; [ "$UPSTREAM_AUTH" = none ] && label="$m+noauth"
      f=$RESULTS_DIR/${label}__$s.jsonl
      log "== $s / $m run $r/$RUNS"
      start_mirror "$m"
      out=$(sc_"$s")
      if ! ok_run "$out"; then
        mkdir -p "$RESULTS_DIR/failed"
        cat "$MIRROR_DIR"/*.log > "$RESULTS_DIR/failed/${label}__${s}__$r.log" 2>/dev/null
        log "!! $s / $m run $r: errors or wrong bytes; mirror log kept in $RESULTS_DIR/failed/${label}__${s}__$r.log"
      fi
      $JREC mirror="$label" upstream_auth="$UPSTREAM_AUTH" scenario="$s" run="$r" ":=$out" | tee -a "$f"
      stop_mirror
    done
  done
done
log "done; results in $RESULTS_DIR"
