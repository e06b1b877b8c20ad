#!/usr/bin/env bash
# run.sh - the README's main command: installs what is missing, builds, and
# generates a picture with the `diffuse` command into out/picture.png.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh build -Dcuda=auto >/dev/null
model=models/demo
if [ ! -d "$model" ]; then
    # The trained demo model (issue 6) is not committed yet: use the tiny
    # random-weight test model, which proves the whole pipeline runs but
    # draws noise, not shapes.
    model=tests/fixtures/models/tiny-sd1
    echo "note: models/demo (the trained demo model) is not in this version yet;"
    echo "      generating with the tiny random-weight test model: expect noise, not a drawing."
fi
mkdir -p out
OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive} build/examples/diffuse generate \
    "a small red circle on the left on a yellow background" \
    --model "$model" --seed 42 --steps 20 -o out/picture.png --force
echo "picture: out/picture.png"
