#!/usr/bin/env bash
# The full test suite: install what is missing, then every test target.
set -euo pipefail
cd "$(dirname "$0")/.."

# With chromium: the report test renders the HTML report in headless chromium.
bash scripts/install-deps.sh --browser
# The learning test (DebugRunLearnsTests) runs the release kaleido: debug kernels are too slow.
swift build -c release --product kaleido
swift build --build-tests
swift test --skip-build "$@"
