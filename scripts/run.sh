#!/usr/bin/env bash
# The main job: install what is missing, build in release mode, show what is linked.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
swift build -c release --product kaleido
kaleido=".build/release/kaleido"

"$kaleido" version
