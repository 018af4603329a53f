#!/usr/bin/env bash
# Usage: bash scripts/zeroshot/dg.sh [SEED]
# Zero-shot CLIP on ImageNet, -V2, -Sketch, -A and -R.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
[[ $# -le 1 ]] || die "usage: $0 [SEED]"
seed=${1:-1}
check_seed "${seed}"
for dataset in "${DG_DATASETS[@]}"; do
    zeroshot_eval "${dataset}" "${seed}"
done
