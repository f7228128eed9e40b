#!/usr/bin/env bash
# Installs every build and test dependency from Debian's packages (DECISIONS.md §4).
# Idempotent and quiet when everything is already there. Uses sudo when not root.
set -euo pipefail

PACKAGES=(cmake gcc make pkg-config libuv1-dev libsqlite3-dev libmsgpack-dev libwslay-dev libssl-dev
  libxxhash-dev libcriterion-dev libpq-dev libcurl4-openssl-dev libjansson-dev node-llhttp)

# The end-to-end tests drive the binary from Node (node:test + the `ws` client the real Pylon
# clients use). Debian's nodejs is enough; an existing node (e.g. NodeSource) is kept.
command -v node >/dev/null && command -v npm >/dev/null || PACKAGES+=(nodejs npm)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
else
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # Excluding Boost's headers (pulled in by libmsgpack-dev) saves ~10 s.
  $SUDO apt-get install -y -qq --no-install-recommends -o 'DPkg::Options::=--path-exclude=/usr/include/boost/*' \
    "${PACKAGES[@]}" >/dev/null
fi

# npm packages of the end-to-end tests, exactly as locked.
cd "$(dirname "$0")/../.."
if [ ! -f tests/e2e/node_modules/.package-lock.json ] ||
   ! cmp -s tests/e2e/package-lock.json tests/e2e/node_modules/.lock-installed; then
  npm ci --prefix tests/e2e --silent --no-audit --no-fund
  cp tests/e2e/package-lock.json tests/e2e/node_modules/.lock-installed
fi
echo "install-deps: done"
