#!/usr/bin/env bash
# Kaleido's ReLICv2 training step against the PyTorch reference (../shared/bench/pytorch_reference.py),
# measured one after the other in this one invocation with the same thread count, one process per
# model on each side (so peak RSS is per model). Prints both JSON lines and the ratios.
#
#   scripts/bench-vs-pytorch.sh [--threads 2] [--models resnet18-cifar,convnext-atto,swin-tiny-32]
#
# The PyTorch side runs in a virtual environment outside the repository ($KALEIDO_TORCH_VENV,
# default ~/.venvs/kaleido-ref), created with torch, torchvision and timm if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

threads=2
models="resnet18-cifar,convnext-atto,swin-tiny-32"
steps=5
while [ $# -gt 0 ]; do
    case "$1" in
        --threads) threads="$2"; shift 2 ;;
        --models) models="$2"; shift 2 ;;
        --steps) steps="$2"; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

reference="${KALEIDO_REFERENCE:-../shared/bench/pytorch_reference.py}"
[ -f "$reference" ] || { echo "bench-vs-pytorch: reference script not found at $reference (set KALEIDO_REFERENCE)" >&2; exit 1; }
venv="${KALEIDO_TORCH_VENV:-$HOME/.venvs/kaleido-ref}"
if ! "$venv/bin/python" -c "import torch, torchvision, timm" 2>/dev/null; then
    echo "bench-vs-pytorch: creating $venv with torch, torchvision, timm"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q torch torchvision timm
fi

bash scripts/install-deps.sh
swift build -c release --product kaleido >/dev/null
kaleido=.build/release/kaleido

results=$(mktemp)
trap 'rm -f "$results"' EXIT
IFS=',' read -ra names <<< "$models"
for model in "${names[@]}"; do
    "$venv/bin/python" "$reference" --models "$model" --threads "$threads" --steps "$steps" | tee -a "$results"
    "$kaleido" bench step --models "$model" --threads "$threads" --steps "$steps" --json | tee -a "$results"
done

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
print()
print(f"{'model':16} {'pytorch img/s':>14} {'kaleido img/s':>14} {'speed ratio':>12} {'pytorch MiB':>12} {'kaleido MiB':>12}")
for model in dict.fromkeys(r["model"] for r in rows):
    p = next(r for r in rows if r["model"] == model and r["framework"] == "pytorch")
    k = next(r for r in rows if r["model"] == model and r["framework"] == "kaleido")
    print(f"{model:16} {p['images_per_s']:14.1f} {k['images_per_s']:14.1f} {k['images_per_s'] / p['images_per_s']:11.2f}x "
          f"{p['peak_rss_mib']:12.0f} {k['peak_rss_mib']:12.0f}")
PY
