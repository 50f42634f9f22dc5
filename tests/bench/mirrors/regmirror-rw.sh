# regmirror with sendfile(2) off ({"sendfile": false} in a config file): cached and in-flight
# bytes are served with pread+write. Compared with mirrors/regmirror.sh (sendfile).
. "$HARNESS/mirrors/regmirror.sh"
mirror_start() {
  echo '{"sendfile": false}' > "$MIRROR_DIR/regmirror-rw.json"
  regmirror_launch --config "$MIRROR_DIR/regmirror-rw.json"
}
