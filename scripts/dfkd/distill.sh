#!/usr/bin/env bash
# Usage: bash scripts/dfkd/distill.sh DATASET SEED
# Data-free distillation (synthetic set from the cache, synthesised first if missing), tested on every domain of
# DATASET (pacs | vlcs | imageclef_da | visda17). With FEWSHOT_K=k, the distilled student is then fine-tuned on k real
# images per class of SOURCE (a second run, TAG ${TRAINER}_${k}shot_${SOURCE}).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
[[ $# -eq 2 ]] || die "usage: $0 DATASET SEED"
dataset=$1 seed=$2
check_seed "${seed}"
dfkd_opts "${dataset}"
k=${FEWSHOT_K}
FEWSHOT_K=0 SHOTS=-1 run_train_py "$(run_dir dfkd - "${dataset}" "${seed}")" "${dataset}" "${seed}" all
if [[ ${k} -gt 0 ]]; then
    epoch=$(max_epoch "$(cfg_file)")
    init="$(run_dir dfkd - "${dataset}" "${seed}")/student/model.pth.tar-${epoch}"
    [[ ${DRY_RUN} == 1 || -f ${init} ]] || die "no distilled checkpoint ${init}"
    TAG=$(fewshot_tag "${dataset}")
    METHOD_OPTS+=(TRAINER.DFKD.FEWSHOT_K "${k}" MODEL.INIT_WEIGHTS "${init}")
    run_train_py "$(run_dir dfkd - "${dataset}" "${seed}")" "${dataset}" "${seed}" all
fi
