#!/usr/bin/env bash
# test.sh - the README's test command: installs what is missing, builds
# (CUDA kernels compiled by nvcc when the toolkit is present), runs every
# test, then runs the whole suite again under AddressSanitizer +
# UndefinedBehaviorSanitizer in a second build dir. Ends with the line
# "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh || { echo "0 passed, 1 failed"; exit 1; }

status=0
run_suite() { # DIR TIMEOUT_MULTIPLIER meson-options...
    local dir="$1" mult="$2"; shift 2
    if ! scripts/build.sh "$dir" "$@"; then
        echo "build of $dir failed"; status=1; return
    fi
    # One test at a time: each test's OpenMP and OpenBLAS threads already use
    # both cores, and two suites of spinning threads slow each other 5-8x.
    meson test -C "$dir" --print-errorlogs --num-processes 1 --timeout-multiplier "$mult" || status=1
}

export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
run_suite build 1 -Dcuda=auto
run_suite build-asan 4 -Dcuda=disabled -Db_sanitize=address,undefined -Db_lundef=false

python3 - <<'PY'
import json, os
passed = failed = skipped = 0
for d in ("build", "build-asan"):
    log = os.path.join(d, "meson-logs", "testlog.json")
    if not os.path.exists(log):
        failed += 1
        print(f"{d}: no test log (build failed)")
        continue
    for line in open(log):
        r = json.loads(line)["result"]
        if r in ("OK", "EXPECTEDFAIL"): passed += 1
        elif r == "SKIP": skipped += 1
        else: failed += 1
print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
PY
exit $status
