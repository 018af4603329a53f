#!/usr/bin/env bash
# Usage: bash scripts/kdpl/base2new_train.sh DATASET SEED
# KDPL on the 16-shot base classes of DATASET -> output/base2new/train_base/DATASET/shots_16/TAG/CFG/seedSEED.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
[[ $# -eq 2 ]] || die "usage: $0 DATASET SEED"
check_seed "$2"
use_protocol base2new
base2new_train "$1" "$2"
