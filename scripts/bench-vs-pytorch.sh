#!/usr/bin/env bash
# Kaleido's ReLICv2 training step against the PyTorch reference (../shared/bench/pytorch_reference.py),
# measured one after the other in this one invocation with the same thread count, one process per
# model on each side (so peak RSS is per model), each model at its suite's shapes (batch, view sides,
# frames; `kaleido bench step --suite S --list` prints them). PyTorch runs in its default memory
# format and in channels_last, and the faster counts. Prints every JSON line and the ratios.
#
#   scripts/bench-vs-pytorch.sh [--threads 2] [--steps 5] [--warmup 2] [--rounds 1] [--suite small|paper|all]
#   scripts/bench-vs-pytorch.sh [--threads 2] [--models resnet18-cifar,resnet50,swin3d-t]
#   scripts/bench-vs-pytorch.sh --cpu-capability avx2 [...]
#
# --rounds N runs each model N times on each side, alternating (PyTorch, Kaleido, PyTorch, …), and
# compares each side's fastest round: on a shared virtual machine a neighbour only ever slows a
# run down (on the 2-vCPU EPYC of BENCHMARKS.md two single-thread sgemms ran at 94 GFLOP/s each
# one minute and at 47 the next), so the best round is each side's speed on the machine it was
# given, and alternating gives both sides the same chances. Every round's ratio is printed too.
#
# small (the default): resnet18-cifar, convnext-atto, swin-tiny-32 at batch 64, 2×32 + 2×16 px.
# paper: resnet50, convnext-tiny at batch 16, 2×224 + 2×96 px; swin3d-t at batch 8, 8-frame clips,
# 2×112 + 2×64 px (ResNet-50 takes about 15 s a step on 2 AVX2 cores). all: small, then paper.
#
# --cpu-capability avx2 caps both sides at AVX2 + FMA on an AVX-512 CPU, to measure what an
# AVX2-only CPU of the same core would run: Kaleido through KALEIDO_CPU_CAPABILITY (its own
# kernels and OpenBLAS's), PyTorch through ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA and
# MKL_ENABLE_INSTRUCTIONS. On a Zen 4, whose AVX-512 runs on the same 256-bit units, that is close
# to a Zen 3 of the same clock; elsewhere it is only the instruction set, not the machine.
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
rounds=1
capability=""
while [ $# -gt 0 ]; do
    case "$1" in
        --threads) threads="$2"; shift 2 ;;
        --suite) suite="$2"; shift 2 ;;
        --models) models="$2"; shift 2 ;;
        --steps) steps="$2"; shift 2 ;;
        --warmup) warmup="$2"; shift 2 ;;
        --rounds) rounds="$2"; shift 2 ;;
        --cpu-capability) capability="$2"; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
case "$suite" in
    small|paper) ;;
    all) suite=small,paper ;;  # the reference's models; Kaleido's own omnivore suite has no reference
    *) echo "bench-vs-pytorch: --suite is small, paper or all, not $suite" >&2; exit 2 ;;
esac
case "$rounds" in
    ''|*[!0-9]*|0) echo "bench-vs-pytorch: --rounds is a positive whole number, not $rounds" >&2; exit 2 ;;
esac

case "$capability" in
    "") ;;
    avx2)
        export KALEIDO_CPU_CAPABILITY=avx2 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
        echo "bench-vs-pytorch: both sides capped at AVX2 + FMA" ;;
    *) echo "bench-vs-pytorch: --cpu-capability is avx2 (or absent for the CPU's widest), not $capability" >&2; exit 2 ;;
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
    for _ in $(seq "$rounds"); do
        # PyTorch in both memory formats; its faster one counts.
        for layout in "" --channels-last; do
            # shellcheck disable=SC2086  # $shapes is a list of arguments; $layout is empty or one flag
            "$venv/bin/python" "$reference" --models "$model" $shapes --threads "$threads" --warmup "$warmup" --steps "$steps" \
                $layout | tee -a "$results"
        done
        # shellcheck disable=SC2086
        "$kaleido" bench step --models "$model" $shapes --threads "$threads" --warmup "$warmup" --steps "$steps" --json \
            | tee -a "$results"
    done
done <<< "$plan"

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
print()
print(f"{'model':16} {'shapes':>22} {'pytorch img/s':>14} {'kaleido img/s':>14} {'speed ratio':>12} {'pytorch MiB':>12} "
      f"{'kaleido MiB':>12} {'RSS ratio':>10}")
for model in dict.fromkeys(r["model"] for r in rows):
    ps = [r for r in rows if r["model"] == model and r["framework"] == "pytorch"]
    ks = [r for r in rows if r["model"] == model and r["framework"] == "kaleido"]
    # Each side's fastest run (PyTorch: of both formats), and the largest peak RSS of its runs
    # (PyTorch: of the runs in the format that was faster).
    p = max(ps, key=lambda r: r["images_per_s"])
    k = max(ks, key=lambda r: r["images_per_s"])
    p_rss = max(r["peak_rss_mib"] for r in ps if r.get("channels_last") == p.get("channels_last"))
    k_rss = max(r["peak_rss_mib"] for r in ks)
    frames = f"{k['frames']}×" if k.get("frames") else ""
    shapes = f"{k['batch']}, 2×{frames}{k['large']}+2×{frames}{k['small']}"
    layout = "cl" if p.get("channels_last") else ""
    print(f"{model:16} {shapes:>22} {layout:>3}{p['images_per_s']:11.2f} {k['images_per_s']:14.2f} "
          f"{k['images_per_s'] / p['images_per_s']:11.2f}x {p_rss:12.0f} {k_rss:12.0f} "
          f"{k_rss / p_rss:9.2f}x")
    if len(ks) > 1:
        # Each round: Kaleido against the faster PyTorch format of that round.
        best_per_round = [max(ps[2 * i:2 * i + 2], key=lambda r: r["images_per_s"]) for i in range(len(ks))]
        each = ", ".join(f"{kr['images_per_s'] / pr['images_per_s']:.2f}" for pr, kr in zip(best_per_round, ks))
        print(f"{'':16} rounds' ratios: {each}")
    if all("cores_delivered" in r for r in ks):
        # Kaleido's check before and after its timed steps: below the thread count, the machine
        # was not all there for that run (and likely not for the PyTorch run next to it).
        cores = ", ".join("%.2f" % r["cores_delivered"] for r in ks)
        print(f"{'':16} cores delivered to Kaleido's runs: {cores}")
print("(images/s are clips/s for clip models; PyTorch's faster memory format; peak RSS is each process's"
      " getrusage maximum; with --rounds, each side's fastest round and its largest peak RSS)")
PY
