#!/usr/bin/env bash
# gpu-validate.sh [ARCH] - GPU validation (DESIGN §6.3), one command on a
# machine with an NVIDIA GPU and the CUDA toolkit:
#   1. builds with CUDA for ARCH (default 90: H100/H200) into build-gpu/,
#   2. runs the kernel tests on the device (meson suite cuda-gpu) and the
#      backend / pipeline tests (suite cuda; with a real libdiffuse_cuda.so
#      next to the library they use the GPU, see docs/cuda.md),
#   3. runs compute-sanitizer memcheck and racecheck on the kernel tests,
#   4. runs the kernel microbenchmark (dk_bench),
# and writes docs/gpu-validation.md (date, device, driver, every result).
# Each step's full output is kept in build-gpu/gpu-validation/. Exits
# nonzero when any step failed; the report says which.
set -uo pipefail
cd "$(dirname "$0")/.."
arch="${1:-90}"
out=build-gpu/gpu-validation
report=docs/gpu-validation.md
mkdir -p "$out"

command -v nvidia-smi >/dev/null || { echo "gpu-validate: nvidia-smi not found: no NVIDIA driver here" >&2; exit 2; }
device=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)
[ -n "$device" ] || { echo "gpu-validate: nvidia-smi lists no GPU" >&2; exit 2; }
nvcc_version=$(nvcc --version 2>/dev/null | tail -1)

declare -a names results
status=0
step() { # step NAME COMMAND...: runs COMMAND, logs to $out/NAME.log, records the result
    local name="$1"; shift
    local t0=$SECONDS
    "$@" >"$out/$name.log" 2>&1
    local rc=$?
    names+=("$name")
    if [ $rc -eq 0 ]; then results+=("PASS ($((SECONDS - t0)) s)"); else results+=("FAIL (exit $rc, $((SECONDS - t0)) s)"); status=1; fi
    echo "$name: ${results[-1]}"
}

export OMP_WAIT_POLICY=passive
step configure meson setup build-gpu --wipe -Dcuda=enabled -Dcuda-arch="$arch" -Dbuildtype=release
step build ninja -C build-gpu
step kernel-tests-gpu meson test -C build-gpu --suite cuda-gpu --print-errorlogs
step backend-tests meson test -C build-gpu --suite cuda --print-errorlogs
for t in build-gpu/tests/cuda/gpu_test_*; do
    [ -x "$t" ] || continue
    n=$(basename "$t")
    step "memcheck-$n" compute-sanitizer --tool memcheck --error-exitcode 1 "$t"
    step "racecheck-$n" compute-sanitizer --tool racecheck --racecheck-report all --error-exitcode 1 "$t"
done
step bench build-gpu/kernels/dk_bench

{
    echo "# GPU validation"
    echo
    echo "Written by \`scripts/gpu-validate.sh $arch\` on $(date -u +%Y-%m-%d) (UTC)."
    echo
    echo "- device: $device"
    echo "- nvcc: $nvcc_version"
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
    echo
    echo "| step | result |"
    echo "|---|---|"
    for i in "${!names[@]}"; do echo "| ${names[$i]} | ${results[$i]} |"; done
    echo
    echo "## Kernel benchmark (dk_bench)"
    echo
    echo '```'
    cat "$out/bench.log"
    echo '```'
    for i in "${!names[@]}"; do
        case "${results[$i]}" in FAIL*)
            echo
            echo "## ${names[$i]} (last 40 lines)"
            echo
            echo '```'
            tail -40 "$out/${names[$i]}.log"
            echo '```'
        esac
    done
} >"$report"
echo "wrote $report"
exit $status
