#!/usr/bin/env bash
# The main job: install what is missing, build in release mode, show what is linked, then run
# the debug pretraining (configs/debug.yaml) and its linear probe. Extra arguments go to
# `kaleido pretrain`, e.g. scripts/run.sh --set run.steps=100.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
swift build -c release --product kaleido
kaleido=".build/release/kaleido"

"$kaleido" version
"$kaleido" pretrain "$@"
