#!/usr/bin/env bash
# Usage: bash scripts/promptkd/xd_train.sh DATASET SEED      (DATASET = the TARGET: one student per target)
# Cross-dataset (or DG for imagenetv2/imagenet_sketch/imagenet_a/imagenet_r, TRAINER.MODAL dg) distillation from the
# ImageNet teacher on the target's unlabeled images -> output/DATASET/PromptKD/CFG_0shots/seedSEED.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
[[ $# -eq 2 ]] || die "usage: $0 DATASET SEED"
check_seed "$2"
use_student xd "$1" train
xd_train "$1" "$2"
