# regmirror, the project's own binary: REGMIRROR_BIN (run.sh sets it to a private copy of the
# build's src/regmirror), else src/regmirror under the directory bench.sh was started from.
# Logs at REGMIRROR_LOG_LEVEL (default warn: the peers run with their access logs off too).
# regmirror_launch [--config FILE]: mirrors/regmirror-sf.sh reuses it.
regmirror_launch() {
  local bin=${REGMIRROR_BIN:-$START_DIR/src/regmirror}
  [ -x "$bin" ] || die "regmirror: no binary at $bin (build it, or set REGMIRROR_BIN)"
  # MIRROR_TLS_CERT/_KEY (the warm-tls scenario): HTTPS on the listener
  if [ -n "${MIRROR_TLS_CERT:-}" ]; then
    set -- "$@" --tls-cert "$MIRROR_TLS_CERT" --tls-key "$MIRROR_TLS_KEY"
    MIRROR_URL=https://127.0.0.1:$MIRROR_PORT
  fi
  # shellcheck disable=SC2086
  "$bin" serve "$@" --listen "127.0.0.1:$MIRROR_PORT" --storage "$MIRROR_DIR/store" \
    --registry "docker.io=$UPSTREAM_URL" --log-level "${REGMIRROR_LOG_LEVEL:-warn}" \
    ${REGMIRROR_ARGS:-} > "$MIRROR_DIR/mirror.log" 2>&1 &
  MIRROR_PID=$!
}
# REGMIRROR_CONFIG: a config file (the ingest-tls scenario sets one with the upstream's CA)
mirror_start() { regmirror_launch ${REGMIRROR_CONFIG:+--config "$REGMIRROR_CONFIG"}; }
