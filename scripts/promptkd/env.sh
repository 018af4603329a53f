# shellcheck shell=bash
# PromptKD settings shared by scripts/promptkd/*.sh (sourced after `set -euo pipefail`).
#   CFG           student yaml under configs/trainers/PromptKD/ (default: vit_b16_c2_ep20_batch8_4+4ctx for
#                 base-to-novel, ..._cross_datasets for cross-dataset / DG)
#   SHOTS         student images per class (default 0 = the full training split, as the reference)
#   TEACHER_CKPT  teacher checkpoint file or folder, used as is (overrides TEACHER_ROOT and the default)
#   TEACHER_ROOT  folder of released teachers in the reference layout: ${TEACHER_ROOT}/<DATASET.NAME>/VLPromptLearner/
#                 model-best.pth.tar (base-to-novel; folder names matched case-insensitively) and
#                 ${TEACHER_ROOT}/ImageNet-xd/ (cross-dataset / DG)
#   TEACHER_SEED  seed of our own stage-1 run to use (default 1; one teacher serves every student seed)
#   TEACHER_CFG   stage-1 yaml under configs/trainers/PromptKD_Teacher/ (default vit_l14_c2_ep20_batch8_4+4ctx)
#   TEACHER_SHOTS stage-1 shots per class (default 16)
# Default teacher = the output of scripts/promptkd/teacher_train.sh (train_base dir, or the ImageNet xd dir).
# plus DATA, OUTPUT, PYTHON, EXTRA_OPTS, DRY_RUN, TEACHER_CACHE_ROOT, CACHE_LAUNCHER from
# scripts/common.sh (the cache applies to the student runs).

PROMPTKD_SHOTS=${SHOTS:-0}
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

TEACHER_SEED=${TEACHER_SEED:-1}
TEACHER_CFG=${TEACHER_CFG:-vit_l14_c2_ep20_batch8_4+4ctx}
TEACHER_SHOTS=${TEACHER_SHOTS:-16}
TEACHER_TRAINER=PromptKD_Teacher
DG_KEYS=(imagenetv2 imagenet_sketch imagenet_a imagenet_r)

# dataset_name KEY -> DATASET.NAME from configs/datasets/KEY.yaml
dataset_name() {
    local yaml="configs/datasets/$1.yaml"
    [[ -f ${yaml} ]] || die "dataset config not found: ${yaml}"
    awk '$1 == "NAME:" { gsub(/"/, "", $2); print $2; exit }' "${yaml}"
}

# released_teacher_dir NAME: ${TEACHER_ROOT}/NAME matched case-insensitively (the README spells "StandfordCars").
released_teacher_dir() {
    local want=${1,,} dir base
    for dir in "${TEACHER_ROOT}"/*/; do
        base=$(basename "${dir}")
        base=${base,,}
        if [[ ${base} == "${want}" || (${want} == stanfordcars && ${base} == standfordcars) ]]; then
            echo "${dir%/}"
            return 0
        fi
    done
    echo "${TEACHER_ROOT}/$1"
}

# use_teacher: the stage-1 settings (run_dir and friends then describe teacher runs).
use_teacher() {
    TRAINER=${TEACHER_TRAINER}
    CACHE_NODE=""
    TAG=${TEACHER_TRAINER}
    CFG=${TEACHER_CFG}
    SHOTS=${TEACHER_SHOTS}
}

# teacher_ckpt PROTOCOL DATASET -> the teacher the student of DATASET distils from.
teacher_ckpt() {
    local protocol=$1 dataset=$2
    if [[ -n ${TEACHER_CKPT:-} ]]; then
        echo "${TEACHER_CKPT}"
    elif [[ -n ${TEACHER_ROOT:-} ]]; then
        if [[ ${protocol} == base2new ]]; then released_teacher_dir "$(dataset_name "${dataset}")"
        else released_teacher_dir ImageNet-xd; fi
    elif [[ ${protocol} == base2new ]]; then
        (use_teacher; run_dir base2new train_base "${dataset}" "${TEACHER_SEED}")
    else
        (use_teacher; run_dir xd train "${XD_SOURCE}" "${TEACHER_SEED}")
    fi
}

# use_student PROTOCOL DATASET [train]: student settings and trailing opts; "train" also checks the teacher exists.
use_student() {
    local protocol=$1 dataset=$2 check=${3:-} modal teacher default
    TRAINER=PromptKD
    CACHE_NODE=PROMPTKD  # TEACHER_CACHE_ROOT: train from an offline teacher cache (scripts/common.sh)
    TAG=PromptKD
    SHOTS=${PROMPTKD_SHOTS}
    case ${protocol} in
        base2new) modal=base2novel; default=vit_b16_c2_ep20_batch8_4+4ctx ;;
        xd)
            modal=cross
            for dg in "${DG_KEYS[@]}"; do [[ ${dataset} == "${dg}" ]] && modal=dg; done
            default=vit_b16_c2_ep20_batch8_4+4ctx_cross_datasets ;;
        *) die "use_student: unknown protocol '${protocol}'" ;;
    esac
    CFG=${CFG:-${default}}
    teacher=$(teacher_ckpt "${protocol}" "${dataset}")
    if [[ ${check} == train && ${DRY_RUN} != 1 && ! -e ${teacher} ]]; then
        die "no teacher at ${teacher}: run scripts/promptkd/teacher_train.sh first" \
            "(PROTOCOL=${protocol}), or set TEACHER_CKPT / TEACHER_ROOT"
    fi
    METHOD_OPTS+=(TRAINER.MODAL "${modal}" TRAINER.PROMPTKD.TEACHER_CKPT "${teacher}")
}
