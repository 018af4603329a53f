#!/usr/bin/env bash
# Usage: bash scripts/dfkd/eval.sh DATASET SEED
# WHO=student (default): re-test the distilled student of distill.sh (checkpoint at the yaml's MAX_EPOCH) on every
#   domain of DATASET, into TAG ${TAG}-eval.
# WHO=teacher: the CLIP teacher's zero-shot accuracy on the same images, the reference row (TAG CLIP_teacher).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
[[ $# -eq 2 ]] || die "usage: $0 DATASET SEED"
dataset=$1 seed=$2
check_seed "${seed}"
dfkd_opts "${dataset}"
case ${WHO:-student} in
    teacher)
        TAG=CLIP_teacher
        METHOD_OPTS+=(TRAINER.DFKD.EVAL_WHO teacher)
        eval_only dfkd - "${dataset}" "${seed}" all ;;
    student)
        if [[ ${FEWSHOT_K} -gt 0 ]]; then
            TAG=$(fewshot_tag "${dataset}")
            METHOD_OPTS+=(TRAINER.DFKD.FEWSHOT_K "${FEWSHOT_K}")
        fi
        model_dir=$(run_dir dfkd - "${dataset}" "${seed}")
        epoch=$(max_epoch "$(cfg_file)")
        TAG=${TAG}-eval
        run_train_py "$(run_dir dfkd - "${dataset}" "${seed}")" "${dataset}" "${seed}" all "${model_dir}" "${epoch}" ;;
    *) die "WHO must be student or teacher, got '${WHO}'" ;;
esac
