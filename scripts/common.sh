# shellcheck shell=bash
# Shared helpers for scripts/<method>/*.sh. Sourced, never executed.
#
# Why one file: train and test scripts must agree on paths (the KDPL reference test scripts looked where its
# train scripts never wrote), the load epoch must come from the yaml (MaPLe's "_ep5_" yaml trains 2 epochs),
# and every script must skip finished runs and resume unfinished ones the same way.
#
# Environment (all optional):
#   DATA        dataset root                        (default /path/to/datasets)
#   OUTPUT      output root                         (default output)
#   PYTHON      interpreter                         (default python)
#   SHOTS       shots per class                     (default 16; set by each method where it differs)
#   EXTRA_OPTS  trailing yacs opts appended to every train.py call, e.g. "OPTIM.MAX_EPOCH 1"
#   DRY_RUN=1   print each train.py command (prefixed "[dry-run] ") instead of running it
#   TEACHER_CACHE_ROOT  set: each KDPL / PromptKD training run first builds (or finishes) its offline teacher cache in
#               $(teacher_cache_dir ...) with tools/build_teacher_cache.py, then trains from it
#   CACHE_LAUNCHER  what runs the cache builder (default ${PYTHON}; e.g. "torchrun --nproc_per_node 8")
# Each method script sets TRAINER, CFG and TAG (and METHOD_OPTS, an array of trailing opts; CACHE_NODE, the config
# node of its teacher-cache keys, where it has one, and may redefine teacher_cache_dir) before using them.

DATA=${DATA:-/path/to/datasets}
OUTPUT=${OUTPUT:-output}
PYTHON=${PYTHON:-python}
SHOTS=${SHOTS:-16}
EXTRA_OPTS=${EXTRA_OPTS:-}
DRY_RUN=${DRY_RUN:-0}
TEACHER_CACHE_ROOT=${TEACHER_CACHE_ROOT:-}
CACHE_LAUNCHER=${CACHE_LAUNCHER:-${PYTHON}}
METHOD_OPTS=()
CACHE_NODE=""

die() {
    echo "error: $*" >&2
    exit 1
}

if [[ ! -d configs/trainers || ! -d scripts ]]; then
    die "run the scripts from the repository root (e.g. bash scripts/kdpl/base2new.sh eurosat 1)"
fi

# run_dir PROTOCOL PHASE DATASET SEED -> the one directory layout (protocols.md §6) train and test share.
#   base2new PHASE=train_base|test_base|test_new;  xd PHASE=train (DATASET = source) | test (DATASET = target);
#   fewshot (PHASE ignored: test after training, same dir);  dfkd (PHASE ignored).
run_dir() {
    local protocol=$1 phase=$2 dataset=$3 seed=$4
    case ${protocol}:${phase} in
        base2new:train_base | base2new:test_base | base2new:test_new)
            echo "${OUTPUT}/base2new/${phase}/${dataset}/shots_${SHOTS}/${TAG}/${CFG}/seed${seed}" ;;
        xd:train | fewshot:*)
            echo "${OUTPUT}/${dataset}/${TAG}/${CFG}_${SHOTS}shots/seed${seed}" ;;
        xd:test)
            echo "${OUTPUT}/evaluation/${TAG}/${CFG}_${SHOTS}shots/${dataset}/seed${seed}" ;;
        dfkd:*)
            echo "${OUTPUT}/dfkd/${dataset}/${TAG}/${CFG}/seed${seed}" ;;
        *)
            die "run_dir: unknown protocol/phase '${protocol}:${phase}'" ;;
    esac
}

cfg_file() {
    echo "configs/trainers/${TRAINER}/${CFG}.yaml"
}

# max_epoch YAML -> OPTIM.MAX_EPOCH of the yaml, unless EXTRA_OPTS overrides it (then the override: the
# checkpoint to load is the one training actually wrote last).
max_epoch() {
    local yaml=$1 value="" prev="" word
    [[ -f ${yaml} ]] || die "config not found: ${yaml}"
    for word in ${EXTRA_OPTS}; do
        [[ ${prev} == OPTIM.MAX_EPOCH ]] && value=${word}
        prev=${word}
    done
    if [[ -z ${value} ]]; then
        value=$(awk '
            /^[^[:space:]#]/ { section = $1 }
            section == "OPTIM:" && $1 == "MAX_EPOCH:" { print $2; exit }
        ' "${yaml}")
    fi
    [[ ${value} =~ ^[0-9]+$ ]] || die "no integer OPTIM.MAX_EPOCH in ${yaml} (got '${value}')"
    echo "${value}"
}

# check_model_dir DIR EPOCH: a test run needs the trained checkpoint (MaPLe#11: a missing one silently re-trained).
check_model_dir() {
    local dir=$1 epoch=$2
    [[ ${DRY_RUN} == 1 ]] && return 0
    compgen -G "${dir}/*/model.pth.tar-${epoch}" >/dev/null \
        || die "no checkpoint model.pth.tar-${epoch} under ${dir}: run the matching train script first"
}

# teacher_cache_dir RUN_DIR DATASET SEED SUBSAMPLE -> where a training run's offline teacher cache lives. Default: the
# run's own path below OUTPUT, under TEACHER_CACHE_ROOT (PromptKD: its rows depend on its teacher checkpoint). KDPL
# redefines it (scripts/kdpl/env.sh) so that every KDPL trainer shares one cache per dataset, seed and views.
teacher_cache_dir() {
    echo "${TEACHER_CACHE_ROOT}/${1#"${OUTPUT}"/}"
}

# run_cmd CMD...: run it, or print it under DRY_RUN=1.
run_cmd() {
    if [[ ${DRY_RUN} == 1 ]]; then
        printf '[dry-run]'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

# run_train_py OUT_DIR DATASET SEED SUBSAMPLE [MODEL_DIR LOAD_EPOCH | --eval-only]
# The standard invocation (protocols.md §4). Skips a run whose results.json holds an accuracy; re-running an
# unfinished directory lets Dassl resume from its last checkpoint.
run_train_py() {
    local dir=$1 dataset=$2 seed=$3 sub=$4 model_dir=${5:-} load_epoch=${6:-}
    local cfg dataset_cfg
    cfg=$(cfg_file)
    dataset_cfg="configs/datasets/${dataset}.yaml"
    [[ -f ${cfg} ]] || die "config not found: ${cfg} (TRAINER=${TRAINER} CFG=${CFG})"
    if [[ ! -f ${dataset_cfg} ]]; then
        [[ ${DRY_RUN} == 1 ]] || die "dataset config not found: ${dataset_cfg}"
        echo "warning: dataset config not found: ${dataset_cfg}" >&2
    fi
    if [[ -f ${dir}/results.json ]]; then
        if grep -Eq '"accuracy": *[0-9]' "${dir}/results.json"; then
            echo "skip: results exist at ${dir}/results.json"
            return 0
        fi
        echo "warning: ${dir}/results.json has no accuracy (damaged); running the run again" >&2
    fi
    [[ -d ${dir} && ! -f ${dir}/results.json ]] && echo "resume: ${dir} exists without results.json; running it again"
    local args=(--root "${DATA}" --seed "${seed}" --trainer "${TRAINER}"
        --dataset-config-file "${dataset_cfg}" --config-file "${cfg}")
    local opts=(DATASET.NUM_SHOTS "${SHOTS}" DATASET.SUBSAMPLE_CLASSES "${sub}" "${METHOD_OPTS[@]}")
    local extra=()
    read -r -a extra <<<"${EXTRA_OPTS}"
    opts+=("${extra[@]}")
    local cmd=("${PYTHON}" train.py "${args[@]}" --output-dir "${dir}")
    if [[ ${model_dir} == --eval-only ]]; then
        cmd+=(--eval-only)
    elif [[ -n ${model_dir} ]]; then
        check_model_dir "${model_dir}" "${load_epoch}"
        cmd+=(--model-dir "${model_dir}" --load-epoch "${load_epoch}" --eval-only)
    elif [[ -n ${TEACHER_CACHE_ROOT} && -z ${CACHE_NODE} ]]; then
        echo "note: TEACHER_CACHE_ROOT ignored: ${TRAINER} has no offline teacher cache"
    elif [[ -n ${TEACHER_CACHE_ROOT} ]]; then  # a training run from an offline teacher cache: build it first
        local cache_dir launcher=()
        cache_dir=$(teacher_cache_dir "${dir}" "${dataset}" "${seed}" "${sub}")
        read -r -a launcher <<<"${CACHE_LAUNCHER}"
        run_cmd "${launcher[@]}" -m tools.build_teacher_cache "${args[@]}" --cache-dir "${cache_dir}" "${opts[@]}"
        opts+=("TRAINER.${CACHE_NODE}.TEACHER_CACHE" "${cache_dir}")
    fi
    run_cmd "${cmd[@]}" "${opts[@]}"
}

# check_seed SEED: seeds are positive integers or 0 (train.py honours --seed 0).
check_seed() {
    [[ $1 =~ ^[0-9]+$ ]] || die "SEED must be a non-negative integer, got '$1'"
}

# Protocol steps shared by every method's scripts (DATASET SEED arguments; TRAINER/CFG/TAG set by the method).
XD_SOURCE=${XD_SOURCE:-imagenet}  # the model every xd_test loads
XD_TARGETS=(caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd eurosat ucf101)
DG_DATASETS=(imagenet imagenetv2 imagenet_sketch imagenet_a imagenet_r)

base2new_train() {
    local dataset=$1 seed=$2
    run_train_py "$(run_dir base2new train_base "${dataset}" "${seed}")" "${dataset}" "${seed}" base
}

# base2new_test DATASET SEED: the train_base checkpoint at MAX_EPOCH, tested on base and on new classes.
base2new_test() {
    local dataset=$1 seed=$2 epoch model_dir sub
    epoch=$(max_epoch "$(cfg_file)")
    model_dir=$(run_dir base2new train_base "${dataset}" "${seed}")
    for sub in base new; do
        run_train_py "$(run_dir base2new "test_${sub}" "${dataset}" "${seed}")" "${dataset}" "${seed}" "${sub}" \
            "${model_dir}" "${epoch}"
    done
}

# xd_train SOURCE SEED: all classes of the source dataset (its final test is the source accuracy).
xd_train() {
    local dataset=$1 seed=$2
    run_train_py "$(run_dir xd train "${dataset}" "${seed}")" "${dataset}" "${seed}" all
}

# xd_test TARGET SEED: the SOURCE-trained checkpoint (imagenet unless XD_SOURCE is set) on a target's test set.
xd_test() {
    local dataset=$1 seed=$2 epoch
    epoch=$(max_epoch "$(cfg_file)")
    run_train_py "$(run_dir xd test "${dataset}" "${seed}")" "${dataset}" "${seed}" all \
        "$(run_dir xd train "${XD_SOURCE}" "${seed}")" "${epoch}"
}

# xd_source_then_targets SEED TARGET...: train on XD_SOURCE unless done, then test each target (xd.sh, dg.sh).
xd_source_then_targets() {
    local seed=$1 dataset
    shift
    xd_train "${XD_SOURCE}" "${seed}"
    for dataset in "$@"; do
        xd_test "${dataset}" "${seed}"
    done
}

# eval_only PROTOCOL PHASE DATASET SEED SUBSAMPLE: a run with nothing to load (zero-shot baselines).
eval_only() {
    local protocol=$1 phase=$2 dataset=$3 seed=$4 sub=$5
    run_train_py "$(run_dir "${protocol}" "${phase}" "${dataset}" "${seed}")" "${dataset}" "${seed}" "${sub}" \
        --eval-only
}

fewshot_train() {
    local dataset=$1 seed=$2
    run_train_py "$(run_dir fewshot - "${dataset}" "${seed}")" "${dataset}" "${seed}" all
}
