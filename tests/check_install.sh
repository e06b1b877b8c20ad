#!/bin/sh
# check_install.sh BUILD_DIR SOURCE_DIR - `meson install` into a staging dir
# installs diffuse.h, libdiffuse.so.0 (soname = major) and diffuse.pc, and a
# program builds against the staged install through pkg-config and runs.
set -eu
build="$1"; src="$2"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
meson install -C "$build" --destdir "$stage" --no-rebuild --quiet --only-changed >/dev/null
hdr=$(find "$stage" -name diffuse.h | head -n1)
lib=$(find "$stage" -name 'libdiffuse.so.0' | head -n1)
pc=$(find "$stage" -name diffuse.pc | head -n1)
for f in "$hdr" "$lib" "$pc"; do [ -n "$f" ] || { echo "FAIL: missing installed file"; find "$stage"; exit 1; }; done
echo "installed: ${hdr#$stage} ${lib#$stage} ${pc#$stage}"
# Compile and run the README example against the staged install.
export PKG_CONFIG_PATH="$(dirname "$pc")"
prefix=$(pkg-config --variable=prefix diffuse)
flags=$(pkg-config --define-variable=prefix="$stage$prefix" --cflags --libs diffuse)
cc -std=c11 -Wall -Werror "$src/examples/readme_example.c" $flags -o "$stage/example" \
    -Wl,-rpath,"$(dirname "$lib")"
"$stage/example" "$src/tests/fixtures/models/tiny-sd1" 3
echo "PASS: installed header, library and pkg-config file build and run a program"
