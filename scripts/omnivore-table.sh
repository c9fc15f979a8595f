#!/usr/bin/env bash
# Omnivore's claim on Kaleido's synthetic data: one model trained jointly on images, clips and
# RGB-D against one trained on images only, and joint training with and without cross-modal
# positives. Same config (configs/omnivore-debug.yaml), step budget and seed for all three; each
# is scored by `kaleido eval` — linear probe per modality and retrieval recall@1 — and printed as
# the table of docs/evaluation.md.
#
#   scripts/omnivore-table.sh                    # the omnivore-debug budget, one run after another
#   JOBS=3 scripts/omnivore-table.sh             # the three runs at once, one thread each
#   STEPS=200 scripts/omnivore-table.sh
#
# KALEIDO=path uses a built binary; OUT=dir sets where the runs go (default runs/omnivore-table).
# A run that finished before (its .done marker) is scored again without retraining; a run's log
# is OUT/VARIANT.log.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${KALEIDO:-}" ]]; then
    swift build -c release --product kaleido
    KALEIDO=.build/release/kaleido
fi
out="${OUT:-runs/omnivore-table}"
common=(--config configs/omnivore-debug.yaml --set run.output_dir="$out" --set eval.linear_probe=false)
[[ -n "${STEPS:-}" ]] && common+=(--set "run.steps=$STEPS")

declare -A variants=(
    [image-only]="--set data.mix.video=0 --set data.mix.rgbd=0"
    [joint]="--set ssl.cross_modal_views=false"
    [joint-cross-modal]="--set ssl.cross_modal_views=true"
)
order=(image-only joint joint-cross-modal)
field() { python3 -c "import json,sys; print('%.1f' % (100 * json.loads(sys.stdin.readline())['metrics']['$1']))"; }

jobs="${JOBS:-1}"
(( jobs > 1 )) && common+=(--set dist.threads=1)
mkdir -p "$out"
train() {
    local variant=$1
    [[ -f "$out/$variant/.done" ]] && return 0
    # shellcheck disable=SC2086
    "$KALEIDO" pretrain "${common[@]}" --set run.name="$variant" ${variants[$variant]} > "$out/$variant.log" 2>&1 ||
        { echo "$variant failed: see $out/$variant.log" >&2; return 1; }
    touch "$out/$variant/.done"
}
pids=()
for variant in "${order[@]}"; do
    while (( $(jobs -rp | wc -l) >= jobs )); do wait -n; done
    train "$variant" & pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done

printf '| training | probe image | probe video | probe rgbd | image → video | image → rgbd | video → rgbd |\n'
printf '|---|---|---|---|---|---|---|\n'
for variant in "${order[@]}"; do
    run="$out/$variant"
    row="| $variant"
    for modality in image video rgbd; do
        top1=$("$KALEIDO" eval linear --checkpoint "$run" --data synthetic --modality "$modality" --json 2>/dev/null | field top1)
        row+=" | $top1 %"
    done
    while read -r line; do
        row+=" | $(echo "$line" | field 'recall@1') % (chance $(echo "$line" | field 'chance@1') %)"
    done < <("$KALEIDO" eval retrieval --checkpoint "$run" --data synthetic --pairs image:video,image:rgbd,video:rgbd --json 2>/dev/null)
    printf '%s |\n' "$row"
done
