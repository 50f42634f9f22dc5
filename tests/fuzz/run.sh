#!/bin/sh
# make fuzz: build each target with clang's libFuzzer (+ASan, UBSan) and fuzz it for
# FUZZ_SECONDS (default 60) from a copy of its seed corpus. New crashers land in
# $FUZZ_OUT (default /tmp/regmirror-fuzz). Needs clang (Debian package clang).
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
secs=${FUZZ_SECONDS:-60}
out=${FUZZ_OUT:-/tmp/regmirror-fuzz}
cc=${CLANG:-clang}
command -v "$cc" >/dev/null || { echo "make fuzz: needs clang (apt-get install clang)" >&2; exit 2; }
mkdir -p "$out"
flags="-std=gnu11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -I$top/src -I$top"
common="$top/src/core/common.c $top/src/core/util.c $top/src/core/log.c $top/src/core/buf.c"
build() { # name sources...
    name=$1; shift
    $cc $flags -o "$out/fuzz_$name" "$top/tests/fuzz/fuzz_$name.c" "$@" $common \
        $(pkg-config --cflags --libs jansson openssl libuv)
}
build reference "$top/src/registry/reference.c"
build auth "$top/src/registry/auth.c" "$top/src/registry/reference.c"
rc=0
for name in reference auth; do
    mkdir -p "$out/corpus-$name"
    cp -n "$top/tests/fuzz/corpus/$name/"* "$out/corpus-$name/" 2>/dev/null || true
    echo "== fuzz_$name for ${secs}s"
    (cd "$out" && ./fuzz_$name -max_total_time="$secs" -max_len=4096 "corpus-$name") || rc=1
done
exit $rc
