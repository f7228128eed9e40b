#!/bin/sh
# Builds bench_engine (Release, the top-level default) and runs it: bench/engine/run.sh [--quick] [...]
set -e; cd "$(dirname "$0")/../.." && cmake -S . -B build >/dev/null && cmake --build build --target bench_engine >/dev/null && exec ./build/bench/engine/bench_engine "$@"
