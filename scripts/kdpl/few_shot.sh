#!/usr/bin/env bash
# Usage: bash scripts/kdpl/few_shot.sh DATASET SHOTS [SEED]      (no SEED: seeds 1 2 3)
# KDPL on K shots of all classes; the final test runs in the same dir -> output/DATASET/TAG/CFG_Kshots/seedSEED.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
[[ $# -eq 2 || $# -eq 3 ]] || die "usage: $0 DATASET SHOTS [SEED]"
[[ $2 =~ ^[1-9][0-9]*$ ]] || die "SHOTS must be a positive integer, got '$2'"
SHOTS=$2
use_protocol fewshot
seeds=("${@:3}")
[[ ${#seeds[@]} -gt 0 ]] || seeds=(1 2 3)
for seed in "${seeds[@]}"; do
    check_seed "${seed}"
    fewshot_train "$1" "${seed}"
done
