#!/usr/bin/env bash
# install-deps.sh - installs the Debian packages libdiffuse builds and tests
# with, if any is missing. The CUDA toolkit is not installed here: the build
# uses it when nvcc is found (meson option cuda=auto).
set -euo pipefail
PKGS=(meson ninja-build pkg-config gcc g++ binutils python3 python3-venv
      libopenblas-dev libopenblas-openmp-dev libjson-c-dev zlib1g-dev libpng-dev abigail-tools
      mono-mcs mono-runtime)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
