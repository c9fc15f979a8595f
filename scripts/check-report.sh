#!/usr/bin/env bash
# Renders a run's report in headless Chromium and checks the screenshot is not blank (the charts'
# series colour must be on it): `scripts/check-report.sh RUN_DIR [SCREENSHOT.png]`.
# Needs chromium (Debian: apt-get install chromium). KALEIDO=path uses a built binary.
set -euo pipefail
cd "$(dirname "$0")/.."
run="${1:?usage: scripts/check-report.sh RUN_DIR [SCREENSHOT.png]}"
shot="${2:-$run/report-screenshot.png}"
if [[ -z "${KALEIDO:-}" ]]; then
    swift build -c release --product kaleido
    KALEIDO=.build/release/kaleido
fi
"$KALEIDO" report "$run" --screenshot "$shot"
