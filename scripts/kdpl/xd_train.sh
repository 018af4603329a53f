#!/usr/bin/env bash
# Usage: bash scripts/kdpl/xd_train.sh [DATASET] SEED      (DATASET = source, default imagenet)
# KDPL on all classes of the source -> output/DATASET/TAG/CFG_16shots/seedSEED (cross-dataset and DG model).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
case $# in
    1) dataset=${XD_SOURCE}; seed=$1 ;;
    2) dataset=$1; seed=$2 ;;
    *) die "usage: $0 [DATASET] SEED" ;;
esac
check_seed "${seed}"
use_protocol xd
xd_train "${dataset}" "${seed}"
