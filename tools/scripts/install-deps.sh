#!/usr/bin/env bash
# Installs every build and test dependency from Debian's packages (DECISIONS.md §4).
# Idempotent and quiet when everything is already there. Uses sudo when not root.
set -euo pipefail

PACKAGES=(cmake gcc make pkg-config libuv1-dev libsqlite3-dev libmsgpack-dev libwslay-dev libssl-dev
  libxxhash-dev libcriterion-dev libpq-dev libcurl4-openssl-dev libjansson-dev node-llhttp)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Excluding Boost's headers (pulled in by libmsgpack-dev) saves ~10 s.
$SUDO apt-get install -y -qq --no-install-recommends -o 'DPkg::Options::=--path-exclude=/usr/include/boost/*' \
  "${PACKAGES[@]}" >/dev/null
echo "install-deps: done"
