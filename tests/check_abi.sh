#!/bin/sh
# check_abi.sh BASELINE LIB HEADERS_DIR - compares the built library with the
# committed ABI baseline (abi/libdiffuse.abi). Additions are fine within a
# major version; any incompatible change fails. Refresh the baseline with
# scripts/update-abi-baseline.sh after a deliberate, compatible addition.
set -u
baseline="$1"; lib="$2"; headers="$3"
out=$(mktemp)
abidiff --headers-dir2 "$headers" "$baseline" "$lib" > "$out" 2>&1
rc=$?
cat "$out"
rm -f "$out"
if [ $((rc & 3)) -ne 0 ]; then echo "FAIL: abidiff could not compare (exit $rc)"; exit 1; fi
if [ $((rc & 8)) -ne 0 ]; then echo "FAIL: incompatible ABI change against $baseline"; exit 1; fi
if [ $((rc & 4)) -ne 0 ]; then echo "PASS: compatible ABI additions (refresh the baseline when releasing)"; exit 0; fi
echo "PASS: ABI identical to the baseline"
