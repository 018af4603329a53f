# shellcheck shell=bash
# Zero-shot CLIP baseline (trainer ZeroshotCLIP_KD, eval-only) settings shared by scripts/zeroshot/*.sh.
#   TRAINER  ZeroshotCLIP_KD (default);  CFG  vit_b32 (default) | rn50
#   SHOTS    0 (default): nothing is trained, so no few-shot sampling; it also marks the rows as zero-shot.
# plus DATA, OUTPUT, PYTHON, EXTRA_OPTS, DRY_RUN from scripts/common.sh. Zero-shot is deterministic: SEED defaults to 1.

SHOTS=${SHOTS:-0}
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

TRAINER=${TRAINER:-ZeroshotCLIP_KD}
CFG=${CFG:-vit_b32}
TAG=${TRAINER}

# zeroshot_eval DATASET SEED: all classes, written where xd_test.sh of a trained method writes its target runs.
zeroshot_eval() {
    eval_only xd test "$1" "$2" all
}
