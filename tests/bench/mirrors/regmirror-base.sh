# regmirror from another build (REGMIRROR_BASE_BIN, required), with the same defaults as
# mirrors/regmirror.sh: run it beside `regmirror` to compare two builds in one interleaved run,
# e.g. MIRRORS=regmirror,regmirror-base,nginx REGMIRROR_BASE_BIN=/tmp/old/regmirror.
. "$HARNESS/mirrors/regmirror.sh"
mirror_start() {
  [ -x "${REGMIRROR_BASE_BIN:-}" ] || die "regmirror-base: set REGMIRROR_BASE_BIN to a binary"
  REGMIRROR_BIN=$REGMIRROR_BASE_BIN regmirror_launch ${REGMIRROR_CONFIG:+--config "$REGMIRROR_CONFIG"}
}
