# regmirror with sendfile(2) on ({"sendfile": true} in a config file): cached and in-flight
# bytes go from the page cache to the socket without a user-space copy. Compared with
# mirrors/regmirror.sh (the default since this benchmark: pread+write in 64 KiB chunks).
. "$HARNESS/mirrors/regmirror.sh"
mirror_start() {
  echo '{"sendfile": true}' > "$MIRROR_DIR/regmirror-sf.json"
  regmirror_launch --config "$MIRROR_DIR/regmirror-sf.json"
}
