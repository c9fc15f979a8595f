#!/usr/bin/env bash
# Installs the system packages Kaleido links against, skipping what is already there.
# Debian/Ubuntu (apt). Uses sudo when not root. Safe to run repeatedly.
#   scripts/install-deps.sh [--browser]
set -euo pipefail

packages=(libopenmpi-dev openmpi-bin libopenblas-dev libzstd-dev pkg-config libpng-dev libturbojpeg0-dev)
# --browser adds chromium, which the test suite renders the run report in (scripts/test.sh).
if [ "${1:-}" = "--browser" ]; then
    packages+=(chromium)
fi

missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all system packages present"
    exit 0
fi

if ! command -v apt-get >/dev/null; then
    echo "install-deps: missing ${missing[*]} and apt-get is not available; install them with your package manager" >&2
    exit 1
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi

echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
