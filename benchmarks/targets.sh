#!/usr/bin/env bash
# Usage: bash benchmarks/targets.sh [DEVICE] [STEPS] [CLASSES] [BATCH]
# The issue's speed targets (docs/performance.md): KDPL_CoOp with a random:ViT-B/32 student and a random:ViT-L/14
# teacher, PromptKD with its real shapes (random:ViT-B/16 student, random:ViT-L/14 teacher), 100 classes, batch 4.
# Random weights: shapes are what time a step, so nothing is downloaded. Prints each method's table, its ratios and a
# met / NOT met line per target. DEVICE defaults to cpu, where the targets were set (each method takes 10-20 minutes
# on 2 cores; on a shared machine prefix `nice -n 10`). On a GPU the students run in fp16 (the PREC default of the
# authors' configs), KDPL's teacher in KDPL_TEACHER_PREC (fp32, as the authors' DFN5B teacher), PromptKD's in fp16.
# Other models: KDPL_STUDENT, KDPL_TEACHER (+ KDPL_TEACHER_BACKEND, e.g. ViT-H-14-quickgelu with open_clip),
# PROMPTKD_STUDENT, PROMPTKD_TEACHER.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DEVICE=${1:-cpu}
STEPS=${2:-5}
CLASSES=${3:-100}
BATCH=${4:-4}
PYTHON=${PYTHON:-python}
PREC=fp32
if [ "${DEVICE}" != "cpu" ]; then PREC=fp16; fi
COMMON=(--device "${DEVICE}" --steps "${STEPS}" --warmup 1 --classes "${CLASSES}" --batch "${BATCH}")
"${PYTHON}" -m benchmarks.step_benchmark --method kdpl_coop "${COMMON[@]}" \
    --student "${KDPL_STUDENT:-random:ViT-B/32}" --teacher "${KDPL_TEACHER:-random:ViT-L/14}" \
    --teacher-backend "${KDPL_TEACHER_BACKEND:-auto}" --student-prec "${PREC}" --teacher-prec "${KDPL_TEACHER_PREC:-fp32}"
"${PYTHON}" -m benchmarks.step_benchmark --method promptkd "${COMMON[@]}" \
    --student "${PROMPTKD_STUDENT:-random:ViT-B/16}" --teacher "${PROMPTKD_TEACHER:-random:ViT-L/14}" \
    --student-prec "${PREC}" --teacher-prec "${PREC}"
