#!/usr/bin/env bash
# Usage: bash scripts/promptkd/base2new.sh DATASET SEED
# Base-to-novel in one go: distil the student (teacher must exist, see env.sh), then test on base and new classes.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
[[ $# -eq 2 ]] || die "usage: $0 DATASET SEED"
check_seed "$2"
use_student base2new "$1" train
base2new_train "$1" "$2"
base2new_test "$1" "$2"
