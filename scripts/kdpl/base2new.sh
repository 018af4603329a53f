#!/usr/bin/env bash
# Usage: bash scripts/kdpl/base2new.sh DATASET SEED
# Base-to-new in one go: train on base classes, then test on base and on new classes.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
[[ $# -eq 2 ]] || die "usage: $0 DATASET SEED"
check_seed "$2"
use_protocol base2new
base2new_train "$1" "$2"
base2new_test "$1" "$2"
