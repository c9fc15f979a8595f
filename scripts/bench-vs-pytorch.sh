#!/usr/bin/env bash
# Kaleido's ReLICv2 training step against the PyTorch reference (../shared/bench/pytorch_reference.py),
# measured one after the other in this one invocation with the same thread count, one process per
# model on each side (so peak RSS is per model), each model at its suite's shapes (batch, view sides,
# frames; `kaleido bench step --suite S --list` prints them). Prints both JSON lines and the ratios.
#
#   scripts/bench-vs-pytorch.sh [--threads 2] [--steps 5] [--warmup 2] [--suite small|paper|all]
#   scripts/bench-vs-pytorch.sh [--threads 2] [--models resnet18-cifar,resnet50,swin3d-t]
#
# small (the default): resnet18-cifar, convnext-atto, swin-tiny-32 at batch 64, 2×32 + 2×16 px.
# paper: resnet50, convnext-tiny at batch 16, 2×224 + 2×96 px; swin3d-t at batch 8, 8-frame clips,
# 2×112 + 2×64 px (ResNet-50 takes about 15 s a step on 2 AVX2 cores). all: small, then paper.
#
# The PyTorch side runs in a virtual environment outside the repository ($KALEIDO_TORCH_VENV,
# default ~/.venvs/kaleido-ref), created with torch, torchvision and timm if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

threads=2
suite=small
models=""
steps=5
warmup=2
while [ $# -gt 0 ]; do
    case "$1" in
        --threads) threads="$2"; shift 2 ;;
        --suite) suite="$2"; shift 2 ;;
        --models) models="$2"; shift 2 ;;
        --steps) steps="$2"; shift 2 ;;
        --warmup) warmup="$2"; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
case "$suite" in
    small|paper) ;;
    all) suite=small,paper ;;  # the reference's models; Kaleido's own omnivore suite has no reference
    *) echo "bench-vs-pytorch: --suite is small, paper or all, not $suite" >&2; exit 2 ;;
esac

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

# One line per model: its name, then the shape arguments both sides take.
if [ -n "$models" ]; then selection=(--models "$models"); else selection=(--suite "$suite"); fi
plan=$("$kaleido" bench step "${selection[@]}" --list)

results=$(mktemp)
trap 'rm -f "$results"' EXIT
while read -r model shapes; do
    # shellcheck disable=SC2086  # $shapes is a list of arguments
    "$venv/bin/python" "$reference" --models "$model" $shapes --threads "$threads" --warmup "$warmup" --steps "$steps" \
        | tee -a "$results"
    # shellcheck disable=SC2086
    "$kaleido" bench step --models "$model" $shapes --threads "$threads" --warmup "$warmup" --steps "$steps" --json \
        | tee -a "$results"
done <<< "$plan"

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
print()
print(f"{'model':16} {'shapes':>22} {'pytorch img/s':>14} {'kaleido img/s':>14} {'speed ratio':>12} {'pytorch MiB':>12} "
      f"{'kaleido MiB':>12} {'RSS ratio':>10}")
for model in dict.fromkeys(r["model"] for r in rows):
    p = next(r for r in rows if r["model"] == model and r["framework"] == "pytorch")
    k = next(r for r in rows if r["model"] == model and r["framework"] == "kaleido")
    frames = f"{k['frames']}×" if k.get("frames") else ""
    shapes = f"{k['batch']}, 2×{frames}{k['large']}+2×{frames}{k['small']}"
    print(f"{model:16} {shapes:>22} {p['images_per_s']:14.2f} {k['images_per_s']:14.2f} "
          f"{k['images_per_s'] / p['images_per_s']:11.2f}x {p['peak_rss_mib']:12.0f} {k['peak_rss_mib']:12.0f} "
          f"{k['peak_rss_mib'] / p['peak_rss_mib']:9.2f}x")
print("(images/s are clips/s for clip models; peak RSS is each process's getrusage maximum)")
PY
