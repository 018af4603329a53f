#!/usr/bin/env bash
# Usage: bash scripts/dfkd/compare_modes.sh DATASET [SEED...]
# The four prompt modes side by side (Handcrafted, Mix, Random, Contrastive; default seeds 1 2 3) plus the CLIP
# teacher's zero-shot row, then the per-domain comparison table of tools/results/ (protocol dfkd).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
[[ $# -ge 1 ]] || die "usage: $0 DATASET [SEED...]"
dataset=$1
shift
seeds=("$@")
[[ ${#seeds[@]} -gt 0 ]] || seeds=(1 2 3)
here=$(dirname "${BASH_SOURCE[0]}")
for seed in "${seeds[@]}"; do
    check_seed "${seed}"
    for trainer in "${DFKD_TRAINERS[@]}"; do
        TRAINER=${trainer} bash "${here}/distill.sh" "${dataset}" "${seed}"
    done
done
WHO=teacher bash "${here}/eval.sh" "${dataset}" "${seeds[0]}"
if [[ ${DRY_RUN} == 1 ]]; then
    echo "[dry-run] ${PYTHON} -m tools.results ${OUTPUT}/dfkd --protocol dfkd"
else
    "${PYTHON}" -m tools.results "${OUTPUT}/dfkd" --protocol dfkd
fi
