#!/bin/sh
# Build native/ggate.c into native/build/libggate.so with the system C compiler.
# Run by `npm install` (the package's install script) and by native/bootstrap.sh.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/build"
mkdir -p "$out"
cc=${CC:-cc}
if ! command -v "$cc" >/dev/null 2>&1; then
	echo "hast: no C compiler ($cc) found; install build-essential (Debian) or set CC" >&2
	exit 69
fi
if [ -f "$out/libggate.so" ] && [ "$out/libggate.so" -nt "$here/ggate.c" ]; then
	exit 0
fi
echo "hast: building native/ggate.c -> native/build/libggate.so"
"$cc" -std=c11 -O2 -g -Wall -Wextra -Werror -fPIC -shared -pthread \
	-o "$out/libggate.so.tmp" "$here/ggate.c"
mv "$out/libggate.so.tmp" "$out/libggate.so"
