# shellcheck shell=bash
# Common helpers for the mirror benchmark harness.  Source, don't execute.
HARNESS=${HARNESS:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
START_DIR=${START_DIR:-$PWD}                 # where bench.sh was started (the build dir: src/regmirror)
WORK=${BENCH_WORK:-/tmp/regmirror-bench/work}            # persistent: seeded upstream storage
RUNDIR=${RUNDIR:-$(mktemp -d /tmp/bench-run.XXXXXX)}   # per invocation: configs, logs, caches
RESULTS_DIR=${RESULTS_DIR:-/tmp/regmirror-bench/results}
RATE_MBIT=${RATE_MBIT:-200}                  # emulated WAN bandwidth (0 = unlimited)
RTT_MS=${RTT_MS:-50}                         # emulated WAN round-trip time
REPO=${REPO:-library/bench}                  # docker.io/library/bench in containerd terms
PY=${PYTHON:-python3}
# Upstream /v2/ behaviour, emulated by the relay:
#   challenge (default): the relay answers "GET /v2/" itself with 401 + WWW-Authenticate: Basic
#       (real registries always challenge on /v2/; everything else is served anonymously)
#   none: /v2/ is passed through (open registry, 200). NB distribution's proxy then
#       re-pings /v2/ under a global lock before EVERY proxied request.
UPSTREAM_AUTH=${UPSTREAM_AUTH:-challenge}
export UPSTREAM_AUTH
mkdir -p "$WORK" "$RUNDIR" "$RESULTS_DIR"

STARTED_PIDS=()      # every process this harness started; killed by PID at exit

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

free_port() { $PY -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# descendants of a pid (by parent-pid walk; used for nginx workers etc.)
pid_tree() {
  local p=$1 c
  echo "$p"
  for c in $(pgrep -P "$p" 2>/dev/null); do pid_tree "$c"; done
}

# kill_pid PID: TERM the process (and remember its children), wait <=10s, then KILL leftovers.
kill_pid() {
  local pid=$1 all i
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  all=$(pid_tree "$pid")
  kill -TERM "$pid" 2>/dev/null
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  for p in $all; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null; done
  wait "$pid" 2>/dev/null || true
}

cleanup_all() {
  local i
  for ((i=${#STARTED_PIDS[@]}-1; i>=0; i--)); do kill_pid "${STARTED_PIDS[$i]}"; done
  STARTED_PIDS=()
  [ -n "${KEEP_RUNDIR:-}" ] || rm -rf "$RUNDIR"
}
trap cleanup_all EXIT
trap 'exit 130' INT TERM

track() { STARTED_PIDS+=("$1"); }

# wait_http URL [seconds]: poll until URL answers with any HTTP status
wait_http() {
  local url=$1 t=${2:-30} i
  for i in $(seq 1 $((t*10))); do
    curl -s -o /dev/null --max-time 1 "$url" && return 0
    sleep 0.1
  done
  return 1
}

# ---------------------------------------------------------------- upstream
# plain docker-registry on the persistent storage dir $WORK/upstream
start_upstream() {
  UPSTREAM_PORT=$(free_port)
  mkdir -p "$WORK/upstream"
  cat > "$RUNDIR/upstream.yml" <<EOC
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/upstream
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$UPSTREAM_PORT
EOC
  docker-registry serve "$RUNDIR/upstream.yml" > "$RUNDIR/upstream.log" 2>&1 &
  UPSTREAM_PID=$!; track $UPSTREAM_PID
  UPSTREAM_DIRECT=http://127.0.0.1:$UPSTREAM_PORT
  wait_http "$UPSTREAM_DIRECT/v2/" 30 || die "upstream registry did not start (see $RUNDIR/upstream.log)"
  log "upstream registry pid=$UPSTREAM_PID at $UPSTREAM_DIRECT (storage $WORK/upstream, auth=$UPSTREAM_AUTH)"
}

# ---------------------------------------------------------------- throttle/counter
start_relay() {
  RELAY_PORT=$(free_port); RELAY_CTL_PORT=$(free_port)
  $PY "$HARNESS/relay.py" --listen "$RELAY_PORT" --control "$RELAY_CTL_PORT" \
      --upstream "127.0.0.1:$UPSTREAM_PORT" --rate-mbit "$RATE_MBIT" --rtt-ms "$RTT_MS" --burst-ms "${RELAY_BURST_MS:-5}" \
      $([ "$UPSTREAM_AUTH" = challenge ] && echo --challenge) \
      > "$RUNDIR/relay.log" 2>&1 &
  RELAY_PID=$!; track $RELAY_PID
  UPSTREAM_URL=http://127.0.0.1:$RELAY_PORT        # what mirrors are pointed at
  RELAY_CTL=http://127.0.0.1:$RELAY_CTL_PORT
  wait_http "$RELAY_CTL/stats" 15 || die "relay did not start"
  wait_http "$UPSTREAM_URL/v2/" 15 || die "relay cannot reach upstream"
  log "WAN relay pid=$RELAY_PID $UPSTREAM_URL -> $UPSTREAM_DIRECT (${RATE_MBIT} Mbit/s, ${RTT_MS} ms RTT), stats at $RELAY_CTL/stats"
}
relay_reset() { curl -s --max-time 5 "$RELAY_CTL/reset" > /dev/null; }

# ---------------------------------------------------------------- mirror under test
# Plugins live in $HARNESS/mirrors/NAME.sh and define mirror_start(), which must
# start ONE foreground (non-daemonising) process in the background and set MIRROR_PID.
# Inputs: MIRROR_PORT, MIRROR_DIR (fresh empty dir), UPSTREAM_URL (throttled upstream).
# Optional: set MIRROR_URL (default http://127.0.0.1:$MIRROR_PORT).
start_mirror() {
  local name=$1
  [ -f "$HARNESS/mirrors/$name.sh" ] || die "no mirror plugin $HARNESS/mirrors/$name.sh"
  unset -f mirror_start
  # shellcheck disable=SC1090
  . "$HARNESS/mirrors/$name.sh"
  MIRROR_NAME=$name
  MIRROR_PORT=$(free_port)
  MIRROR_DIR=$RUNDIR/mirror-$name-$RANDOM
  rm -rf "$MIRROR_DIR"; mkdir -p "$MIRROR_DIR"
  MIRROR_URL=""; MIRROR_PID=""
  export MIRROR_PORT MIRROR_DIR UPSTREAM_URL
  mirror_start
  [ -n "$MIRROR_URL" ] || MIRROR_URL=http://127.0.0.1:$MIRROR_PORT
  if [ -n "$MIRROR_PID" ]; then track "$MIRROR_PID"; fi
  local i
  for i in $(seq 1 300); do
    curl -sk -o /dev/null --max-time 1 "$MIRROR_URL/v2/" && break
    if [ -n "$MIRROR_PID" ] && ! kill -0 "$MIRROR_PID" 2>/dev/null; then
      cat "$MIRROR_DIR"/*.log >&2 2>/dev/null; die "mirror $name exited at startup"; fi
    sleep 0.1
  done
  curl -sk -o /dev/null --max-time 1 "$MIRROR_URL/v2/" || die "mirror $name did not come up at $MIRROR_URL (logs in $MIRROR_DIR)"
  log "mirror $name pid=${MIRROR_PID:-none} at $MIRROR_URL (dir $MIRROR_DIR)"
}
stop_mirror() {
  [ -n "$MIRROR_PID" ] && kill_pid "$MIRROR_PID"
  if [ -n "${MIRROR_DIR:-}" ] && [ -z "${KEEP_RUNDIR:-}" ]; then rm -rf "$MIRROR_DIR"; fi
  MIRROR_PID=""
}

# peak RSS (VmHWM) summed over the mirror's process tree, in KiB; reset clears it.
mirror_hwm_reset() {
  local p; [ -n "$MIRROR_PID" ] || return 0
  for p in $(pid_tree "$MIRROR_PID"); do echo 5 > /proc/$p/clear_refs 2>/dev/null || true; done
}
mirror_hwm_kib() {
  local p s=0 v; [ -n "$MIRROR_PID" ] || { echo 0; return; }
  for p in $(pid_tree "$MIRROR_PID"); do
    v=$(awk '/^VmHWM:/{print $2}' /proc/$p/status 2>/dev/null); s=$((s + ${v:-0}))
  done
  echo $s
}

# ---------------------------------------------------------------- seeding
images_json() { echo "$WORK/images.json"; }
ensure_seeded() {
  [ -f "$WORK/images.json" ] && [ -f "$WORK/seeded.stamp" ] && return 0
  "$HARNESS/seed.sh"
}
