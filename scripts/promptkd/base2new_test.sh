#!/usr/bin/env bash
# Usage: bash scripts/promptkd/base2new_test.sh DATASET SEED
# Tests the train_base student (epoch = the yaml's MAX_EPOCH) on base (W[:m]) and new (W[m:]) classes
# -> test_base/, test_new/ (the stored class vectors are read; the teacher does not run).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
[[ $# -eq 2 ]] || die "usage: $0 DATASET SEED"
check_seed "$2"
use_student base2new "$1"
base2new_test "$1" "$2"
