#!/usr/bin/env bash
# Usage: bash scripts/promptkd/base2new_train.sh DATASET SEED
# PromptKD student distilled on the unlabeled training split of ALL classes (transductive), tested on base classes
# -> output/base2new/train_base/DATASET/shots_0/PromptKD/CFG/seedSEED (teacher: see env.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
[[ $# -eq 2 ]] || die "usage: $0 DATASET SEED"
check_seed "$2"
use_student base2new "$1" train
base2new_train "$1" "$2"
