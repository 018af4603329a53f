#!/usr/bin/env bash
# Usage: bash scripts/promptkd/teacher_train.sh DATASET SEED
# PromptKD stage 1 (PromptSRC with labels on ViT-L/14), then its base and new test (compare with spec Tab. 10).
#   PROTOCOL=base2new (default): 16 shots of the base classes
#     -> output/base2new/{train_base,test_base,test_new}/DATASET/shots_16/PromptKD_Teacher/CFG/seedSEED
#   PROTOCOL=xd: all classes of DATASET (the cross-dataset / DG teacher, DATASET = imagenet)
#     -> output/DATASET/PromptKD_Teacher/CFG_16shots/seedSEED
# Each run dir also holds class_vectors.pt (W of ALL classes). Students use TEACHER_SEED (default 1).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
[[ $# -eq 2 ]] || die "usage: $0 DATASET SEED"
check_seed "$2"
use_teacher
case ${PROTOCOL:-base2new} in
    base2new) base2new_train "$1" "$2"; base2new_test "$1" "$2" ;;
    xd) xd_train "$1" "$2" ;;
    *) die "PROTOCOL must be base2new or xd, got '${PROTOCOL}'" ;;
esac
