#!/usr/bin/env bash
# The full benchmark (`make bench`): regmirror (sendfile and pread+write) beside CNCF
# distribution's proxy mode and nginx proxy_cache, in one run, behind the emulated WAN; then
# the report with regmirror's ratios to the peers.
#
#   make bench                    # from the build directory (where src/regmirror is)
#   tests/bench/run.sh            # the same, from the build directory
#   BENCH_QUICK=1 make bench      # one run of each, 5 s wrk/ab (~6 min; distribution's herd alone is ~2.5 min)
#   RUNS=1 SCENARIOS=herd,warm MIRRORS=regmirror,nginx make bench
#
# Environment: RUNS (3), MIRRORS, SCENARIOS, BENCH_WORK (/tmp/regmirror-bench/work: the seeded
# upstream, reused), RESULTS_DIR (/tmp/regmirror-bench/results), KEEP_RUNDIR=1 (keep the
# mirrors' logs and caches in /tmp/bench-run.*), REGMIRROR_BIN, and the knobs in README.md.
# Writes $RESULTS_DIR/RESULTS.md; copy it to tests/bench/RESULTS.md to publish it.
set -uo pipefail
H=$(cd "$(dirname "$0")" && pwd)
export START_DIR=${START_DIR:-$PWD}
export BENCH_WORK=${BENCH_WORK:-/tmp/regmirror-bench/work}
export RESULTS_DIR=${RESULTS_DIR:-/tmp/regmirror-bench/results}
if [ -n "${BENCH_QUICK:-}" ]; then
  export RUNS=${RUNS:-1} WARM_SECS=${WARM_SECS:-5}
fi
export RUNS=${RUNS:-3}
SCENARIOS=${SCENARIOS:-cold,herd,warm,head,headonly,containerd,ceiling}

say() { printf '[run.sh] %s\n' "$*" >&2; }

# the binary: the build directory's src/regmirror (make bench runs from there), else the
# source tree's; run a private copy so that a rebuild during the run cannot pull it away
bin=${REGMIRROR_BIN:-}
if [ -z "$bin" ]; then
  for b in "$START_DIR/src/regmirror" "$H/../../src/regmirror"; do
    [ -x "$b" ] && { bin=$b; break; }
  done
fi
[ -n "$bin" ] && [ -x "$bin" ] || { say "no src/regmirror: build it first (make), or set REGMIRROR_BIN"; exit 1; }
BINDIR=$(mktemp -d /tmp/regmirror-bench-bin.XXXXXX)
trap 'rm -rf "$BINDIR"' EXIT
cp "$bin" "$BINDIR/regmirror" || exit 1
export REGMIRROR_BIN=$BINDIR/regmirror

# tools: the upstream needs docker-registry + skopeo (seeding) + curl + python3; each peer and
# load generator is needed only by what uses it
missing=()
for t in docker-registry skopeo curl python3 wrk ab; do command -v "$t" >/dev/null || missing+=("$t"); done
[ ${#missing[@]} = 0 ] || { say "missing: ${missing[*]} (Debian: apt-get install docker-registry skopeo curl python3 wrk apache2-utils nginx-light containerd)"; exit 1; }
M=${MIRRORS:-}
if [ -z "$M" ]; then
  M=regmirror,regmirror-sf,distribution
  if command -v nginx >/dev/null; then M=$M,nginx; else say "nginx not installed: running without the nginx peer"; fi
fi
[ "$(id -u)" = 0 ] || say "not root: the containerd scenario will be skipped"

{ echo "regmirror: $bin, sha256 $(sha256sum < "$REGMIRROR_BIN" | cut -c1-12), built $(date -r "$bin" -Is)"
  git -C "$H" log -1 --format='source: commit %h (%cI)%n' 2>/dev/null | head -1
  [ -n "$(git -C "$H/../.." status --porcelain -- src 2>/dev/null)" ] && echo "source: src/ has uncommitted changes"
  echo "peers: $(docker-registry --version 2>/dev/null | head -1); $(nginx -v 2>&1 | head -1); $(containerd --version 2>/dev/null | cut -d' ' -f1,3)"
} > "$BINDIR/build.txt"
say "binary $bin; mirrors $M; scenarios $SCENARIOS; $RUNS run(s) each; results in $RESULTS_DIR"
mkdir -p "$RESULTS_DIR"
rm -f "$RESULTS_DIR"/*.jsonl "$RESULTS_DIR"/env*.json
rm -rf "$RESULTS_DIR/failed"
cp "$BINDIR/build.txt" "$RESULTS_DIR/build.txt"
rc=0
"$H/bench.sh" -m "$M" -s "$SCENARIOS" -n "$RUNS" || rc=$?
cp "$RESULTS_DIR/env.json" "$RESULTS_DIR/env.main.json" 2>/dev/null
# the WAN reference (no mirror) for the cold pull and containerd
case ",$SCENARIOS," in *,cold,*|*,containerd,*)
  S=$(echo ",$SCENARIOS," | grep -o -e ',cold,' -e ',containerd,' | tr -d , | paste -sd, -)
  "$H/bench.sh" -m direct -s "$S" -n "$RUNS" || rc=$?
  cp "$RESULTS_DIR/env.main.json" "$RESULTS_DIR/env.json" 2>/dev/null ;;
esac
python3 "$H/report.py" > "$RESULTS_DIR/RESULTS.md" || rc=$?
say "report: $RESULTS_DIR/RESULTS.md (copy it to tests/bench/RESULTS.md to publish)"
sed -n '/^## Headline/,/^## 1\./p' "$RESULTS_DIR/RESULTS.md" | sed '$d'
[ -d "$RESULTS_DIR/failed" ] && { say "some runs had client errors: mirror logs in $RESULTS_DIR/failed/"; rc=1; }
exit $rc
