#!/usr/bin/env bash
# Usage: bash scripts/demo.sh
# The main job (KDPL_CoOp, base-to-new: train on base classes, test base and new, print the table) on an embedded
# default: a tiny synthetic dataset in the real EuroSAT layout, written by the project itself, and tiny random CLIPs
# as student and teacher. Runs on CPU in about a minute. Its accuracies are MEANINGLESS (random weights): it shows
# that install, data layout, training, checkpoints, evaluation and the results table work.
set -euo pipefail
[[ -f train.py ]] || { echo "run from the repository root: bash scripts/demo.sh" >&2; exit 1; }
PYTHON=${PYTHON:-python}
DEMO=${DEMO:-output/demo}
"${PYTHON}" -m datasets.synthetic --root "${DEMO}/data" --layout eurosat --num-classes 6 --per-class 8 --seed 0
echo "NOTE: tiny random CLIPs on synthetic images -- the accuracies below are meaningless."
DATA="${DEMO}/data" OUTPUT="${DEMO}" SHOTS=4 TRAINER=KDPL_CoOp CFG=tiny_vit_ep2_cpu PYTHON="${PYTHON}" \
    bash scripts/kdpl/base2new.sh eurosat 1
"${PYTHON}" -m tools.results "${DEMO}/base2new" --protocol base2new
