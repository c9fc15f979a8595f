#!/usr/bin/env bash
# The full test suite: install what is missing, then every test target.
set -euo pipefail
cd "$(dirname "$0")/.."

# With chromium: the report test renders the HTML report in headless chromium.
bash scripts/install-deps.sh --browser
# The learning test (DebugRunLearnsTests) runs the release kaleido: debug kernels are too slow.
swift build -c release --product kaleido
swift build --build-tests
# The test process runs the library's kernels with the OpenBLAS kernels `kaleido` itself picks
# (it re-executes with OPENBLAS_CORETYPE where OpenBLAS 0.3.21 misjudges the CPU; see
# Sources/kaleido/BLASCoreSelection.swift), not OpenBLAS's fallback.
if [ -z "${OPENBLAS_CORETYPE:-}" ]; then
    core=$(.build/release/kaleido version | awk '/^openblas /{for (i = 1; i <= NF; i++) if ($i ~ /^MAX_THREADS=/) print $(i - 1)}') || core=""
    if [ -n "$core" ]; then export OPENBLAS_CORETYPE="$core"; fi
fi
swift test --skip-build "$@"
