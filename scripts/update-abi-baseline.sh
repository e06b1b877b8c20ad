#!/usr/bin/env bash
# update-abi-baseline.sh [BUILD_DIR] - writes abi/libdiffuse.abi from the
# built library. Run it only for a deliberate, compatible ABI addition (or a
# new major version) and commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-build}"
abidw --headers-dir include --no-corpus-path --no-comp-dir-path --out-file abi/libdiffuse.abi "$dir/libdiffuse.so.0"
echo "wrote abi/libdiffuse.abi"
