#!/usr/bin/env bash
# Usage: bash scripts/dfkd/synthesize.sh DATASET [SEED]
# Synthesise (or finish: the run resumes) the synthetic set TRAINER would train on, without training. The set lands
# in SYN_CACHE under a key of the prompt and synthesis settings, where distill.sh finds it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
[[ $# -ge 1 && $# -le 2 ]] || die "usage: $0 DATASET [SEED]"
dataset=$1 seed=${2:-1}
check_seed "${seed}"
dfkd_opts "${dataset}"
cmd=("${PYTHON}" -m tools.synthesize --root "${DATA}" --seed "${seed}" --trainer "${TRAINER}"
    --dataset-config-file "configs/datasets/${dataset}.yaml" --config-file "$(cfg_file)"
    DATASET.NUM_SHOTS -1 "${METHOD_OPTS[@]}")
read -r -a extra <<<"${EXTRA_OPTS}"
cmd+=("${extra[@]}")
if [[ ${DRY_RUN} == 1 ]]; then
    printf '[dry-run]'; printf ' %q' "${cmd[@]}"; printf '\n'
else
    "${cmd[@]}"
fi
