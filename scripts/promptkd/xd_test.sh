#!/usr/bin/env bash
# Usage: bash scripts/promptkd/xd_test.sh DATASET SEED
# Tests the student distilled for target DATASET (xd_train.sh) on its test set
# -> output/evaluation/PromptKD/CFG_0shots/DATASET/seedSEED.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
[[ $# -eq 2 ]] || die "usage: $0 DATASET SEED"
check_seed "$2"
use_student xd "$1"
XD_SOURCE=$1  # PromptKD distils one student per target: the model to load is the target's own
xd_test "$1" "$2"
