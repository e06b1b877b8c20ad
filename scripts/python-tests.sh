#!/usr/bin/env bash
# python-tests.sh [LIBRARY] - runs the Python binding's tests (pytest) against
# a freshly built libdiffuse: LIBRARY, or build/libdiffuse.so.0 by default.
# Creates (or reuses) the virtual environment .venv-test with pytest, numpy
# and pillow from PyPI, installs bindings/python into it, and runs
# bindings/python/tests with DIFFUSE_LIBRARY=LIBRARY and
# DIFFUSE_FIXTURES=tests/fixtures. Exits with pytest's status.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
lib="${1:-build/libdiffuse.so.0}"
[[ "$lib" = /* ]] || lib="$root/$lib"
if [ ! -f "$lib" ]; then
    echo "python-tests: $lib does not exist; build libdiffuse first (scripts/build.sh build)" >&2
    exit 1
fi

venv="$root/.venv-test"
py="$venv/bin/python"
pip=("$py" -m pip --disable-pip-version-check -q)
if ! "$py" -c "import sys" 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
fi
if ! "$py" -c "import pytest, numpy, PIL" 2>/dev/null; then
    "${pip[@]}" install pytest numpy pillow
fi
# Reinstalled every run, so the tests always see the binding as it is now.
"${pip[@]}" install --force-reinstall --no-deps "$root/bindings/python"

export DIFFUSE_LIBRARY="$lib"
export DIFFUSE_FIXTURES="${DIFFUSE_FIXTURES:-$root/tests/fixtures}"
export DIFFUSE_INCLUDE="$root/include"
# libgomp's default spin-waiting makes OpenMP threads fight each other (and
# the concurrent-context tests) on a busy machine; passive waiting is what a
# host application gets in practice too.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
# The Python example (examples/generate.py) runs first, on the tiny model.
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$py" "$root/examples/generate.py" "$DIFFUSE_FIXTURES/models/tiny-sd1" "a red circle" -n 2 --steps 2 \
    -o "$out/example" 2>/dev/null
[ -s "$out/example-0.png" ] && [ -s "$out/example-1.png" ] || { echo "examples/generate.py wrote no images"; exit 1; }
echo "examples/generate.py: PASS"
cd "$root/bindings/python"
"$py" -m pytest -q -rs -p no:cacheprovider tests
