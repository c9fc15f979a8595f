#!/usr/bin/env bash
# ReLICv2 against its β = 0 ablation (the plain contrastive objective, configs/ablation-beta0.yaml)
# for the same budget: pretrain both, evaluate both with the same linear probe and kNN on frozen
# features, print them side by side and write each run's report.html.
#
#   scripts/ablation.sh                          # the debug budget (configs/debug.yaml)
#   STEPS=1000 scripts/ablation.sh --set data.synthetic_train_size=5000
#
# Extra arguments go to both `kaleido pretrain` calls. KALEIDO=path uses a built binary instead of
# building one; OUT=dir sets where the runs go (default runs/ablation).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${KALEIDO:-}" ]]; then
    swift build -c release --product kaleido
    KALEIDO=.build/release/kaleido
fi
out="${OUT:-runs/ablation}"
steps=()
[[ -n "${STEPS:-}" ]] && steps=(--set "run.steps=$STEPS")

declare -A linear knn seconds
for variant in relicv2 beta0; do
    config=configs/debug.yaml
    [[ $variant == beta0 ]] && config=configs/ablation-beta0.yaml
    started=$(date +%s)
    "$KALEIDO" pretrain --config "$config" --set run.output_dir="$out" --set run.name="$variant" \
        --set eval.online_probe=true --set eval.linear_probe=false "${steps[@]}" "$@"
    seconds[$variant]=$(( $(date +%s) - started ))
    run="$out/$variant"
    # One feature extraction serves both evaluations (cached in $run/eval-cache).
    linear[$variant]=$("$KALEIDO" eval linear --checkpoint "$run" --json | grep -o '"top1":[0-9.e-]*' | head -1 | cut -d: -f2)
    knn[$variant]=$("$KALEIDO" eval knn --checkpoint "$run" --json | grep -o '"top1":[0-9.e-]*' | head -1 | cut -d: -f2)
    "$KALEIDO" report "$run"
done

percent() { awk -v x="$1" 'BEGIN { printf "%.1f%%", 100 * x }'; }
echo
printf '%-22s %12s %12s\n' "" "ReLICv2" "β = 0"
printf '%-22s %12s %12s\n' "linear probe top-1" "$(percent "${linear[relicv2]}")" "$(percent "${linear[beta0]}")"
printf '%-22s %12s %12s\n' "kNN top-1" "$(percent "${knn[relicv2]}")" "$(percent "${knn[beta0]}")"
printf '%-22s %11ss %11ss\n' "pretraining time" "${seconds[relicv2]}" "${seconds[beta0]}"
echo "reports: $out/relicv2/report.html $out/beta0/report.html"
