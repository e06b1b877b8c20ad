#!/usr/bin/env bash
# Creates .venv-ref: the pinned reference stack (diffusers + transformers on
# torch CPU) that scripts/make_*.py use to write test fixtures. The test
# command does not need it: fixtures are committed. Usage: scripts/ref-venv.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-ref}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --upgrade pip
# Pinned reference versions: fixtures record these in their headers.
"$VENV/bin/pip" install -q \
    torch==2.15.0 diffusers==0.42.1 transformers==5.23.0 tokenizers==0.23.3 \
    safetensors==0.8.0 "numpy==2.4.*" accelerate unicodedata2==16.0.0 scipy==1.17.1 pytest
echo "reference venv ready: $VENV"
