#!/usr/bin/env bash
# The README's first command: install dependencies, build (Release), run `pylon dev`.
# Extra arguments go to `pylon dev` (e.g. --port 5000).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target pylon
exec build/tools/pylon dev "$@"
