#!/bin/sh
# check_api_docs.sh LIB - docs/api.md is what scripts/gen_api_docs.py makes
# from the header, and documents every function LIB exports.
set -eu
here=$(dirname "$0")
syms=$(mktemp)
trap 'rm -f "$syms"' EXIT
nm -D --defined-only "$1" | awk '{print $3}' > "$syms"
python3 "$here/../scripts/gen_api_docs.py" --check --symbols "$syms"
