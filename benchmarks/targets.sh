#!/usr/bin/env bash
# Usage: bash benchmarks/targets.sh [DEVICE] [STEPS]
# The speed targets with the real architectures at ImageNet's class count (random weights: shapes are what time a
# step, so nothing is downloaded; the open_clip ViT-H-14 teacher is built with random weights too). Prints each
# method's table, its ratios and a met / NOT met line per target. Meant for a GPU (DEVICE defaults to cuda); on CPU
# the same command runs, for hours.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DEVICE=${1:-cuda}
STEPS=${2:-20}
PYTHON=${PYTHON:-python}
# PromptKD: ViT-B/16 student with 9-deep visual prompts, PromptSRC ViT-L/14 teacher, both fp16 (TRAINER.PROMPTKD.PREC)
"${PYTHON}" -m benchmarks.step_benchmark --method promptkd --device "${DEVICE}" --steps "${STEPS}" \
    --student random:ViT-B/16 --teacher random:ViT-L/14 --classes 1000 --batch 8 \
    --student-prec fp16 --teacher-prec fp16
# KDPL_CoOp: ViT-B/32 student (fp16, TRAINER.COOP.PREC), DFN5B ViT-H-14 teacher in TRAINER.KDPL.TEACHER_PREC fp32
"${PYTHON}" -m benchmarks.step_benchmark --method kdpl_coop --device "${DEVICE}" --steps "${STEPS}" \
    --student random:ViT-B/32 --teacher ViT-H-14-quickgelu --teacher-backend open_clip --classes 1000 --batch 32 \
    --student-prec fp16 --teacher-prec "${TEACHER_PREC:-fp32}"
