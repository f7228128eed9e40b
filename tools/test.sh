#!/usr/bin/env bash
# The README's second command, and exactly what .ci/run calls: installs dependencies, builds,
# and runs the whole test suite:
#   1. Release build, every ctest test (unit + end-to-end);
#   2. the engine tests again under ThreadSanitizer;
#   3. the unit and end-to-end tests again under AddressSanitizer + UndefinedBehaviorSanitizer
#      (the e2e harness fails a test whose server reported a sanitizer error or a leak).
# Any failure fails the run. The runners' summary lines are printed at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
JOBS=$(nproc)
SUMMARY=()
FAILED=0

tools/scripts/install-deps.sh || { echo "test: dependency installation failed"; exit 1; }

# run_suite NAME BUILD_DIR CMAKE_ARGS CTEST_ARGS
run_suite() {
  local name=$1 dir=$2 cmake_args=$3 ctest_args=$4 log
  echo "=== $name: configure and build ($dir)"
  # shellcheck disable=SC2086
  if ! cmake -S "$ROOT" -B "$dir" $cmake_args >/dev/null || ! cmake --build "$dir" -j"$JOBS" >"$dir.build.log" 2>&1; then
    tail -40 "$dir.build.log" 2>/dev/null
    SUMMARY+=("$name: BUILD FAILED")
    FAILED=1
    return
  fi
  echo "=== $name: ctest $ctest_args"
  log="$dir.ctest.log"
  # shellcheck disable=SC2086
  (cd "$dir" && ctest --output-on-failure $ctest_args) 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  SUMMARY+=("$name: $(grep -E 'tests passed|tests failed' "$log" | tail -1)")
  [ "$rc" -eq 0 ] || FAILED=1
}

run_suite "release" build-test "-DCMAKE_BUILD_TYPE=Release" "-j1"
run_suite "tsan (engine, http)" build-tsan "-DCMAKE_BUILD_TYPE=RelWithDebInfo -DPYLON_SANITIZER=thread -DPYLON_BUILD_BENCH=OFF" "-j1 -L engine|http"
run_suite "asan+ubsan (unit, e2e)" build-asan "-DCMAKE_BUILD_TYPE=RelWithDebInfo -DPYLON_SANITIZER=address -DPYLON_BUILD_BENCH=OFF" "-j1 -L unit|e2e"

echo
echo "=== summary"
for line in "${SUMMARY[@]}"; do echo "$line"; done
if [ "$FAILED" -ne 0 ]; then
  echo "RESULT: FAILED"
  exit 1
fi
echo "RESULT: all suites passed"
