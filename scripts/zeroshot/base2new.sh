#!/usr/bin/env bash
# Usage: bash scripts/zeroshot/base2new.sh DATASET [SEED]
# Zero-shot CLIP on the base and on the new classes of DATASET -> output/base2new/test_{base,new}/DATASET/shots_0/...
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
[[ $# -eq 1 || $# -eq 2 ]] || die "usage: $0 DATASET [SEED]"
seed=${2:-1}
check_seed "${seed}"
for sub in base new; do
    eval_only base2new "test_${sub}" "$1" "${seed}" "${sub}"
done
