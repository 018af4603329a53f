# shellcheck shell=bash
# KDPL settings shared by scripts/kdpl/*.sh (sourced after `set -euo pipefail`).
#   TRAINER  KDPL_CoOp (default) | KDPL_CoCoOp | KDPL_VPT | KDPL_MaPLe | KDPL_PromptSRC
#   CFG      yaml name under configs/trainers/${TRAINER}/ (default per trainer and protocol, kdpl.md §8)
#   CA       0 (default) | 1: class-agnostic KDPL (TRAINER.KDPL.CLASS_AGNOSTIC True, TAG ${TRAINER}-CA)
#   KDPL_CACHE_TAG  with TEACHER_CACHE_ROOT: the teacher folder name of the shared cache (default: see kdpl_teacher_tag)
# plus DATA, OUTPUT, PYTHON, SHOTS, EXTRA_OPTS, DRY_RUN, TEACHER_CACHE_ROOT, CACHE_LAUNCHER from scripts/common.sh.

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

TRAINER=${TRAINER:-KDPL_CoOp}
CACHE_NODE=KDPL  # TEACHER_CACHE_ROOT: train from an offline teacher cache (scripts/common.sh)
CA=${CA:-0}
case ${CA} in
    0) TAG=${TRAINER} ;;
    # Passed to test runs too, so each run's config.yaml and results.json state the regime the model was trained in.
    1) TAG=${TRAINER}-CA; METHOD_OPTS+=(TRAINER.KDPL.CLASS_AGNOSTIC True) ;;
    *) die "CA must be 0 or 1, got '${CA}'" ;;
esac

# teacher_cache_dir RUN_DIR DATASET SEED SUBSAMPLE (see scripts/common.sh): one offline teacher cache per dataset,
# classes, shots, seed and teacher, whatever the trainer and CFG -- a cache's teacher rows depend on no student, so
# TRAINER=KDPL_MaPLe after KDPL_CoOp reuses the cache (the builder adds only missing epochs or student features).
teacher_cache_dir() {
    local dataset=$2 seed=$3 sub=$4 classes=classes
    [[ ${CA} == 1 ]] && classes=ca
    echo "${TEACHER_CACHE_ROOT}/kdpl/${dataset}/${sub}/shots_${SHOTS}/seed${seed}/$(kdpl_teacher_tag)/${classes}"
}

# kdpl_teacher_tag -> KDPL_CACHE_TAG if set, else "teacher", plus a checksum of the EXTRA_OPTS that change the
# teacher's rows (teacher, dictionary, top-k, input, dataset), so such runs get a cache of their own. (A yaml whose
# teacher or input settings differ gets a clear refusal from the builder: set KDPL_CACHE_TAG for it.)
kdpl_teacher_tag() {
    local words=() picked="" i
    if [[ -n ${KDPL_CACHE_TAG:-} ]]; then
        echo "${KDPL_CACHE_TAG}"
        return 0
    fi
    read -r -a words <<<"${EXTRA_OPTS}"
    for ((i = 0; i + 1 < ${#words[@]}; i += 2)); do
        case ${words[i]} in
            TRAINER.KDPL.TEACHER* | TRAINER.KDPL.CA_DICTIONARY | TRAINER.KDPL.CACHE_TOPK | INPUT.* | DATASET.* \
                | MODEL.CLIP.TRUNCATE_TEXT) picked+="${words[i]} ${words[i + 1]} " ;;
        esac
    done
    if [[ -z ${picked} ]]; then
        echo teacher
    else
        echo "teacher-$(printf '%s' "${picked}" | cksum | cut -d' ' -f1)"
    fi
}

# kdpl_default_cfg PROTOCOL (base2new | xd | fewshot): the reference yaml for TRAINER.
kdpl_default_cfg() {
    case ${TRAINER} in
        KDPL_CoOp) echo vit_b32_ctxv1 ;;
        KDPL_CoCoOp) echo vit_b32_c4_ep10_batch1_ctxv1 ;;
        KDPL_VPT) echo vit_b32_c2_ep5_batch4_4 ;;
        KDPL_MaPLe) echo vit_b32_c2_ep5_batch4_2ctx ;;
        KDPL_PromptSRC)
            if [[ $1 == xd ]]; then echo "vit_b32_c2_ep20_batch4_4+4ctx_cross_datasets"
            else echo "vit_b32_c2_ep20_batch4_4+4ctx"; fi ;;
        *) die "no default CFG for TRAINER=${TRAINER}; set CFG" ;;
    esac
}

# use_protocol PROTOCOL: CFG from the environment if set, else the default for this protocol.
use_protocol() {
    local default
    default=$(kdpl_default_cfg "$1")
    CFG=${CFG:-${default}}
}
