#!/usr/bin/env bash
# Usage: bash scripts/kdpl/xd_test.sh DATASET SEED
# Tests the source-trained model (XD_SOURCE, default imagenet) on DATASET (a cross-dataset or DG target)
# -> output/evaluation/TAG/CFG_16shots/DATASET/seedSEED.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
[[ $# -eq 2 ]] || die "usage: $0 DATASET SEED"
check_seed "$2"
use_protocol xd
xd_test "$1" "$2"
