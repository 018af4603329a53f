#!/usr/bin/env bash
# Usage: bash scripts/kdpl/base2new_test.sh DATASET SEED
# Tests the train_base checkpoint (epoch = the yaml's MAX_EPOCH) on base and new classes -> test_base/, test_new/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
[[ $# -eq 2 ]] || die "usage: $0 DATASET SEED"
check_seed "$2"
use_protocol base2new
base2new_test "$1" "$2"
