#!/usr/bin/env bash
# Usage: bash scripts/zeroshot/xd_test.sh DATASET [SEED]
# Zero-shot CLIP on all classes of DATASET -> output/evaluation/ZeroshotCLIP_KD/CFG_0shots/DATASET/seedSEED.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
[[ $# -eq 1 || $# -eq 2 ]] || die "usage: $0 DATASET [SEED]"
seed=${2:-1}
check_seed "${seed}"
zeroshot_eval "$1" "${seed}"
