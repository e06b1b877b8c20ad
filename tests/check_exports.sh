#!/bin/sh
# check_exports.sh LIB - the shared library exports only diffuse_* symbols
# (DESIGN §3) and its soname follows the major version.
set -eu
lib="$1"
bad=$(nm -D --defined-only "$lib" | awk '{print $3}' | grep -v '^diffuse_' || true)
count=$(nm -D --defined-only "$lib" | awk '{print $3}' | grep -c '^diffuse_' || true)
if [ -n "$bad" ]; then
    echo "FAIL: exported symbols outside diffuse_*:"; echo "$bad"; exit 1
fi
[ "$count" -gt 10 ] || { echo "FAIL: only $count diffuse_* symbols exported"; exit 1; }
soname=$(objdump -p "$lib" | awk '/SONAME/ {print $2}')
[ "$soname" = "libdiffuse.so.$2" ] || { echo "FAIL: soname '$soname', expected libdiffuse.so.$2"; exit 1; }
echo "PASS: $count symbols, all diffuse_*; soname $soname"
# DESIGN §5: libdiffuse itself never links a CUDA library (the CUDA backend is
# a dlopen'ed module), so it loads on hosts without CUDA.
needed=$(objdump -p "$lib" | awk '/NEEDED/ {print $2}' | tr '\n' ' ')
case "$needed" in
*cuda* | *cublas* | *cudnn* | *nvrtc* | *libnv*) echo "FAIL: links a CUDA library: $needed"; exit 1 ;;
esac
echo "PASS: no CUDA library among NEEDED ($needed)"
