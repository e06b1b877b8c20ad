#!/bin/sh
# check_no_native.sh BUILD_DIR - DESIGN §5: what is installed chooses its SIMD
# path at run time, so nothing is compiled for the build machine's CPU. The
# library's own C code targets baseline x86-64; GEMMs go through OpenBLAS,
# which picks its kernels at run time (the *_generic_simd tests rerun the ops
# and pipeline tests with OpenBLAS held to its SSE3 kernels).
db="$1/compile_commands.json"
[ -f "$db" ] || { echo "FAIL: $db not found"; exit 1; }
if grep -Eq -- '-march=native|-mtune=native|-mavx|-mfma' "$db"; then
    echo "FAIL: machine-specific flags in the build:"
    grep -Eo -- '-march=native|-mtune=native|-mavx[^ "]*|-mfma' "$db" | sort | uniq -c
    exit 1
fi
echo "PASS: no -march=native / -mavx / -mfma in $(grep -c '"file"' "$db") compile commands"
