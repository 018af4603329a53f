#!/usr/bin/env bash
# Usage: bash scripts/zeroshot/xd.sh [SEED]
# Zero-shot CLIP on ImageNet (the source column) and the 10 cross-dataset targets.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
[[ $# -le 1 ]] || die "usage: $0 [SEED]"
seed=${1:-1}
check_seed "${seed}"
for dataset in "${XD_SOURCE}" "${XD_TARGETS[@]}"; do
    zeroshot_eval "${dataset}" "${seed}"
done
