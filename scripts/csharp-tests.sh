#!/usr/bin/env bash
# csharp-tests.sh [LIBRARY [SOURCE_ROOT]] - builds the C# binding
# (bindings/csharp/Diffuse.cs -> Diffuse.dll) and its test program
# (bindings/csharp/tests/TestDiffuse.cs -> TestDiffuse.exe) with Mono's mcs
# into a temporary folder, writes Diffuse.dll.config (a dllmap from the
# DllImport name "diffuse" to libdiffuse.so.0, the approach documented in
# Diffuse.cs), and runs the tests with mono on tests/fixtures/models/tiny-sd1,
# with LD_LIBRARY_PATH at LIBRARY's folder (default build/libdiffuse.so.0).
# Exits with the test program's status.
set -euo pipefail
root="${2:-$(cd "$(dirname "$0")/.." && pwd)}"
lib="${1:-$root/build/libdiffuse.so.0}"
[[ "$lib" = /* ]] || lib="$PWD/$lib"
if [ ! -f "$lib" ]; then
    echo "csharp-tests: $lib does not exist; build libdiffuse first" >&2
    exit 1
fi
for tool in mcs mono; do
    command -v "$tool" >/dev/null || { echo "csharp-tests: $tool not found (apt-get install mono-mcs mono-runtime)" >&2; exit 1; }
done
libdir="$(cd "$(dirname "$lib")" && pwd)"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mcs -nologo -warnaserror+ -target:library -out:"$tmp/Diffuse.dll" -r:System.dll -r:System.Core.dll \
    "$root/bindings/csharp/Diffuse.cs"
mcs -nologo -warnaserror+ -target:exe -out:"$tmp/TestDiffuse.exe" -r:System.dll -r:System.Core.dll \
    -r:"$tmp/Diffuse.dll" "$root/bindings/csharp/tests/TestDiffuse.cs"
cat > "$tmp/Diffuse.dll.config" <<'XML'
<configuration>
  <dllmap dll="diffuse" target="libdiffuse.so.0" os="linux"/>
  <dllmap dll="diffuse" target="libdiffuse.0.dylib" os="osx"/>
</configuration>
XML

export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Passive OpenMP waiting, as scripts/python-tests.sh (a busy machine otherwise
# spends its cores spinning).
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
set +e
mono --debug "$tmp/TestDiffuse.exe" "$root/tests/fixtures/models/tiny-sd1"
status=$?
set -e
exit $status
