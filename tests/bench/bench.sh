#!/usr/bin/env bash
# Pull-through registry mirror benchmark driver (adapted from the workplace harness).
#   tests/bench/bench.sh [-m MIRRORS] [-s SCENARIOS] [-n RUNS]     (run.sh drives the full run)
#   MIRRORS   comma list of plugins in mirrors/ (regmirror,regmirror-sf,distribution,nginx,direct)
#             default regmirror,regmirror-sf,distribution,nginx
#   SCENARIOS comma list of: cold herd warm head containerd ceiling                  default all
#             also (not in the default list): ingest ingest-tls startup evict conns many warm-tls
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
RELAY_UPSTREAM_URL=$UPSTREAM_URL
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

# ---- ingest (unthrottled, one client, cold mirror): a big blob straight from a
# docker-registry (plain and TLS) whose file is in the page cache
INGEST_MB=${INGEST_MB:-500}
ingest_setup() {
  local st=$WORK/ingest-$INGEST_MB
  if [ ! -s "$st/digest" ]; then
    log "writing a $INGEST_MB MiB ingest blob into $st"
    rm -rf "$st"; mkdir -p "$st"
    $PY "$HARNESS/mkblob.py" "$st/registry" library/ingest "$INGEST_MB" > "$st/digest.tmp" && mv "$st/digest.tmp" "$st/digest"
  fi
  INGEST_DIGEST=$(cat "$st/digest")
  INGEST_FILE=$st/registry/docker/registry/v2/blobs/sha256/${INGEST_DIGEST:7:2}/${INGEST_DIGEST#sha256:}/data
  INGEST_SIZE=$(stat -c %s "$INGEST_FILE")
  # a self-signed certificate for 127.0.0.1
  if [ ! -s "$st/cert.pem" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=127.0.0.1 \
      -addext "subjectAltName=IP:127.0.0.1" -keyout "$st/key.pem" -out "$st/cert.pem" 2>/dev/null \
      || die "openssl req failed"
  fi
  INGEST_CA=$st/cert.pem
  local port tport
  port=$(free_port); tport=$(free_port)
  for p in "$port" "$tport"; do
    { echo "version: 0.1"; echo "log: {level: warn, accesslog: {disabled: true}}"
      echo "storage: {filesystem: {rootdirectory: $st/registry}}"
      echo "http:"; echo "  addr: 127.0.0.1:$p"
      [ "$p" = "$tport" ] && printf '  tls:\n    certificate: %s\n    key: %s\n' "$st/cert.pem" "$st/key.pem"
    } > "$RUNDIR/ingest-$p.yml"
    docker-registry serve "$RUNDIR/ingest-$p.yml" > "$RUNDIR/ingest-$p.log" 2>&1 &
    track $!
  done
  INGEST_URL=http://127.0.0.1:$port
  INGEST_TLS_URL=https://127.0.0.1:$tport
  wait_http "$INGEST_URL/v2/" 30 || die "ingest upstream did not start"
  local i; for i in $(seq 1 100); do curl -s -o /dev/null --cacert "$INGEST_CA" "$INGEST_TLS_URL/v2/" && break; sleep 0.1; done
  printf '{"registries": {"docker.io": {"endpoint": "%s", "ca_file": "%s"}}}\n' "$INGEST_TLS_URL" "$INGEST_CA" > "$RUNDIR/ingest-tls.json"
  log "ingest: $INGEST_DIGEST ($INGEST_SIZE bytes) at $INGEST_URL and $INGEST_TLS_URL"
}
sha256_Bps() {   # OpenSSL's SHA-256 over 1 MiB blocks, bytes/s (what the mirror's hash can do)
  openssl speed -seconds 1 -bytes 1048576 -evp sha256 2>/dev/null | awk '/^sha256/{v=$2; sub(/k$/,"",v); print v*1000}'
}
sc_ingest() {   # one client, cold mirror, unthrottled upstream; the blob file in the page cache
  local tls=${1:-} r sha
  cat "$INGEST_FILE" > /dev/null
  sha=$(sha256_Bps)
  r=$(timeout "$SCEN_TIMEOUT" curl -s -o /dev/null ${tls:+--cacert "$INGEST_CA"} \
        -w '{"time_s": %{time_total}, "Bps": %{speed_download}, "bytes": %{size_download}, "status": %{http_code}}' \
        "$MIRROR_URL/v2/library/ingest/blobs/$INGEST_DIGEST")
  $JREC ":=$r" "ok=$($PY -c "import json;r=json.loads('$r');print('true' if r['status']==200 and r['bytes']==$INGEST_SIZE else 'false')")" \
        blob_bytes="$INGEST_SIZE" sha256_Bps="$sha" tls="${tls:-0}"
}
sc_ingest-tls() { sc_ingest 1; }

# ---- warm-tls: the warm scenario with the mirror's listener on HTTPS (regmirror --tls-cert,
# nginx `listen ssl`), one ECDSA P-256 certificate for both; wrk speaks TLS (no verification)
tls_bench_setup() {
  local st=$WORK/tls-listener
  if [ ! -s "$st/cert.pem" ]; then
    mkdir -p "$st"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
      -subj /CN=127.0.0.1 -addext "subjectAltName=IP:127.0.0.1" -keyout "$st/key.pem" \
      -out "$st/cert.pem" 2>/dev/null || die "openssl req failed"
  fi
  TLS_BENCH_CERT=$st/cert.pem; TLS_BENCH_KEY=$st/key.pem
}
sc_warm-tls() {   # what the handshake negotiated, then the warm scenario over https
  local c; c=$(openssl s_client -connect "127.0.0.1:$MIRROR_PORT" -CAfile "$TLS_BENCH_CERT" \
                 </dev/null 2>/dev/null | sed -n 's/^New, \(.*\), Cipher is \(.*\)$/\1 \2/p' | head -1)
  $JREC ":=$(sc_warm)" tls="$c"
}

# ---- startup: a store of STARTUP_OBJECTS objects; how soon /v2/ answers, and how long the
# background reconcile takes. The store is generated once (rows + files) and reused.
STARTUP_OBJECTS=${STARTUP_OBJECTS:-1000000}
startup_store() {
  STARTUP_STORE=$WORK/startup-$STARTUP_OBJECTS
  [ -f "$STARTUP_STORE/made" ] && return 0
  log "generating a store of $STARTUP_OBJECTS objects in $STARTUP_STORE (once)"
  rm -rf "$STARTUP_STORE"; mkdir -p "$STARTUP_STORE"
  local port; port=$(free_port)
  "$REGMIRROR_BIN" serve --listen 127.0.0.1:$port --storage "$STARTUP_STORE" > "$RUNDIR/startup-init.log" 2>&1 &
  local pid=$!
  wait_http "http://127.0.0.1:$port/v2/" 30 || die "regmirror did not start on the startup store"
  kill_pid $pid
  $PY "$HARNESS/mkstore.py" "$STARTUP_STORE" "$STARTUP_OBJECTS" > /dev/null || die "mkstore failed"
  touch "$STARTUP_STORE/made"
}
startup_pristine() {   # a copy of the generated index, for evict_restore, once the mirror has
  # opened it (what a first open adds, e.g. object_totals, is not part of every run)
  STARTUP_INDEX=$WORK/startup-$STARTUP_OBJECTS.index.db
  [ -s "$STARTUP_INDEX" ] && return 0
  local port pid; port=$(free_port)
  "$REGMIRROR_BIN" serve --listen 127.0.0.1:$port --storage "$STARTUP_STORE" > "$RUNDIR/startup-pristine.log" 2>&1 &
  pid=$!
  wait_http "http://127.0.0.1:$port/v2/" 60 || { kill_pid $pid; return 1; }
  kill_pid $pid
  $PY -c "import sqlite3,sys;sqlite3.connect(sys.argv[1]).execute('PRAGMA wal_checkpoint(TRUNCATE)')" \
      "$STARTUP_STORE/index.db" && cp "$STARTUP_STORE/index.db" "$STARTUP_INDEX.tmp" && mv "$STARTUP_INDEX.tmp" "$STARTUP_INDEX"
}
sc_startup() {   # regmirror only; STARTUP_DROP_CACHES=1 (root) starts from a cold page cache
  local port t0 t1 pid i log=$RUNDIR/startup.log ready="" rec="" cold=0
  evict_restore || { echo '{"ok": false, "why": "restore failed"}'; return; }
  port=$(free_port)
  if [ -n "${STARTUP_DROP_CACHES:-}" ] && [ "$(id -u)" = 0 ]; then sync; echo 3 > /proc/sys/vm/drop_caches; cold=1; fi
  t0=$(now)
  "$REGMIRROR_BIN" serve --listen 127.0.0.1:$port --storage "$STARTUP_STORE" --log-level info > "$log" 2>&1 &
  pid=$!; track $pid
  for i in $(seq 1 3000); do
    if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/v2/"; then t1=$(now); ready=$(elapsed "$t0" "$t1"); break; fi
    sleep 0.01
  done
  local hit; hit=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -I "http://127.0.0.1:$port/v2/library/startup/blobs/$(ls "$STARTUP_STORE/blobs/sha256/00" | head -1 | sed 's/^/sha256:/')")
  for i in $(seq 1 6000); do
    rec=$(sed -n 's/.*mod=reconcile msg="done in \([0-9]*\) ms.*/\1/p' "$log" | head -1)
    [ -n "$rec" ] && break; sleep 0.1
  done
  local rss; rss=$(awk '/^VmHWM:/{print $2}' /proc/$pid/status)
  kill_pid $pid
  echo "{\"ok\": $([ -n "$ready" ] && [ -n "$rec" ] && echo true || echo false), \"objects\": $STARTUP_OBJECTS, \"ready_s\": ${ready:-null}, \"cached_head_status\": ${hit:-0}, \"reconcile_ms\": ${rec:-null}, \"hwm_kib\": ${rss:-0}, \"cold_cache\": $cold}"
}

# ---- evict: the startup store over max_cache_bytes (EVICT_FRACTION of what it holds); how long
# eviction takes, and the latency of lone cached HEADs meanwhile (evictprobe.py). Eviction
# deletes objects: each run starts from the generated index and files again (evict_restore).
EVICT_FRACTION=${EVICT_FRACTION:-0.8}
evict_restore() {
  cp "$STARTUP_INDEX" "$STARTUP_STORE/index.db" && rm -f "$STARTUP_STORE/index.db-wal" "$STARTUP_STORE/index.db-shm" &&
    $PY "$HARNESS/mkstore.py" "$STARTUP_STORE" "$STARTUP_OBJECTS" --files > /dev/null
}
sc_evict() {   # regmirror only
  local port pid log=$RUNDIR/evict.log total max d r
  evict_restore || { echo '{"ok": false, "why": "restore failed"}'; return; }
  total=$($PY -c "import sqlite3,sys;print(sqlite3.connect(sys.argv[1]).execute('SELECT SUM(size) FROM objects').fetchone()[0])" "$STARTUP_STORE/index.db")
  max=$($PY -c "print(int($total * $EVICT_FRACTION))")
  echo "{\"max_cache_bytes\": $max}" > "$RUNDIR/evict.json"
  # the probe: the object made last (most recently accessed), never a victim
  d=$($PY -c "import hashlib;i=$STARTUP_OBJECTS-1;print(hashlib.sha256(b'startup object %d ' % i + b'x' * (i % 64)).hexdigest())")
  port=$(free_port)
  "$REGMIRROR_BIN" serve --config "$RUNDIR/evict.json" --listen 127.0.0.1:$port --storage "$STARTUP_STORE" \
      --log-level info > "$log" 2>&1 &
  pid=$!; track $pid
  wait_http "http://127.0.0.1:$port/v2/" 30 || { kill_pid $pid; echo '{"ok": false, "why": "no /v2/"}'; return; }
  r=$(timeout "$SCEN_TIMEOUT" $PY "$HARNESS/evictprobe.py" "http://127.0.0.1:$port" \
        "/v2/library/startup/blobs/sha256:$d" "$log" "$((SCEN_TIMEOUT - 30))")
  local rss; rss=$(awk '/^VmHWM:/{print $2}' /proc/$pid/status)
  kill_pid $pid
  $JREC ":=$r" objects="$STARTUP_OBJECTS" total_bytes="$total" max_cache_bytes="$max" hwm_kib="${rss:-0}"
}

# ---- many: MANY_IMAGES different images of MANY_LAYERS layers, MANY_MB MB each, pulled at once
# over the emulated WAN (PULL_CONCURRENCY parallel blob GETs each, as in cold). Targets: total
# within 1.05x of the link time of every byte, 1 upstream GET per blob, no image later than 1.2x
# the median. The images are generated and pushed into the upstream once (library/many).
MANY_IMAGES=${MANY_IMAGES:-16}; MANY_LAYERS=${MANY_LAYERS:-5}; MANY_MB=${MANY_MB:-100}
many_setup() {
  MANY_JSON=$WORK/many-$MANY_IMAGES-$MANY_LAYERS-$MANY_MB.json
  [ -s "$MANY_JSON" ] && return 0
  local oci=$WORK/oci-many i j sizes per
  log "generating $MANY_IMAGES images of $MANY_LAYERS x $((MANY_MB / MANY_LAYERS)) MiB into the upstream (once)"
  rm -rf "$oci"
  per=$((MANY_MB * 1048576 / MANY_LAYERS))
  for i in $(seq 0 $((MANY_IMAGES - 1))); do
    sizes=(); for j in $(seq 1 "$MANY_LAYERS"); do sizes+=($((per + i * 16 + j))); done
    $PY "$HARNESS/mkimage.py" "$oci" "many$i" "${sizes[@]}" > /dev/null || return 1
    skopeo copy --quiet --dest-tls-verify=false "oci:$oci:many$i" \
      "docker://127.0.0.1:$UPSTREAM_PORT/library/many:many$i" || return 1
  done
  rm -rf "$oci"
  $PY - "$UPSTREAM_DIRECT" "$MANY_IMAGES" "$MANY_JSON" <<'PYEOF' || return 1
import json, sys, urllib.request
base, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
acc = "application/vnd.oci.image.manifest.v1+json"
imgs, total = [], 0
for i in range(n):
    r = urllib.request.urlopen(urllib.request.Request(f"{base}/v2/library/many/manifests/many{i}",
                                                      headers={"Accept": acc}))
    body = r.read()
    m = json.loads(body)
    bl = [m["config"]] + m["layers"]
    t = len(body) + sum(b["size"] for b in bl)
    total += t
    imgs.append({"tag": f"many{i}", "blobs": [b["digest"] for b in bl], "total_bytes": t})
json.dump({"images": imgs, "total_bytes": total}, open(out + ".tmp", "w"), indent=1)
PYEOF
  mv "$MANY_JSON.tmp" "$MANY_JSON"
}
sc_many() {
  local i t0 t1 outs=() pids=()
  relay_reset
  t0=$(now)
  for i in $(seq 0 $((MANY_IMAGES - 1))); do
    outs+=("$RUNDIR/many.$i.json")
    timeout "$SCEN_TIMEOUT" $CLIENT pull "$MIRROR_URL" library/many "many$i" --concurrency "$PULL_CONCURRENCY" \
      > "$RUNDIR/many.$i.json" 2>/dev/null &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i"; done
  t1=$(now)
  sleep 1
  $PY "$HARNESS/manystat.py" "$MANY_JSON" "$RELAY_CTL" "$RATE_MBIT" "$(elapsed "$t0" "$t1")" "${outs[@]}"
}

# ---- conns: CONNS idle keep-alive connections (each made one HEAD /v2/), then the cached
# HEAD rate beside them; RSS before and with them
CONNS=${CONNS:-10000}
sc_conns() {
  local path=/v2/$REPO/manifests/cold w r0 r1 rss0 rss1 hold=$RUNDIR/conns.$RANDOM
  w=$($CLIENT warm "$MIRROR_URL" "$path" "$RELAY_CTL" --method GET \
        --accept "application/vnd.oci.image.manifest.v1+json" --tries 1 --settle 0.2)
  r0=$(run_ab_head "$MIRROR_URL$path")
  rss0=$(awk '/^VmRSS:/{print $2}' /proc/$MIRROR_PID/status)
  $PY - "$MIRROR_PORT" "$CONNS" "$hold" <<'PYEOF' &
import socket, sys, time, os
port, n, flag = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"HEAD /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
    socks.append(s)
for s in socks:
    s.recv(4096)
open(flag, "w").write("%d\n" % len(socks))
while os.path.exists(flag):
    time.sleep(0.2)
PYEOF
  local hp=$! i
  for i in $(seq 1 600); do [ -s "$hold" ] && break; sleep 0.1; done
  sleep 1
  rss1=$(awk '/^VmRSS:/{print $2}' /proc/$MIRROR_PID/status)
  r1=$(run_ab_head "$MIRROR_URL$path")
  rm -f "$hold"; wait $hp 2>/dev/null
  $JREC "without:=$r0" "with:=$r1" conns="$CONNS" rss0_kib="${rss0:-0}" rss1_kib="${rss1:-0}" \
        held="$([ -n "${rss1:-}" ] && echo 1 || echo 0)"
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
case ",$SCENARIOS," in *,ingest,*|*,ingest-tls,*) ingest_setup ;; esac
case ",$SCENARIOS," in *,many,*) many_setup || die "many: cannot make the images" ;; esac
case ",$SCENARIOS," in *,startup,*|*,evict,*) startup_store; startup_pristine || die "cannot copy the startup index" ;; esac
case ",$SCENARIOS," in *,warm-tls,*) tls_bench_setup ;; esac
for s in "${SLIST[@]}"; do
  declare -F "sc_$s" >/dev/null || die "unknown scenario $s"
  if [ "$s" = startup ] || [ "$s" = evict ]; then
    f=$RESULTS_DIR/regmirror__$s.jsonl; : > "$f"
    for r in $(seq 1 "$RUNS"); do
      log "== $s run $r/$RUNS"
      $JREC mirror=regmirror scenario=$s run="$r" ":=$(sc_"$s")" | tee -a "$f"
    done
    continue
  fi
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
      # ingest: the mirrors pull straight from the unthrottled (TLS) upstream
      unset MIRROR_TLS_CERT MIRROR_TLS_KEY
      case $s in
        warm-tls) UPSTREAM_URL=$RELAY_UPSTREAM_URL; unset REGMIRROR_CONFIG
                  export MIRROR_TLS_CERT=$TLS_BENCH_CERT MIRROR_TLS_KEY=$TLS_BENCH_KEY ;;
        ingest) UPSTREAM_URL=$INGEST_URL; unset REGMIRROR_CONFIG ;;
        ingest-tls) UPSTREAM_URL=$INGEST_TLS_URL; export REGMIRROR_CONFIG=$RUNDIR/ingest-tls.json ;;
        conns) UPSTREAM_URL=$RELAY_UPSTREAM_URL
               echo '{"max_connections": 20000}' > "$RUNDIR/conns.json"; export REGMIRROR_CONFIG=$RUNDIR/conns.json ;;
        *) UPSTREAM_URL=$RELAY_UPSTREAM_URL; unset REGMIRROR_CONFIG ;;
      esac
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
