# shellcheck shell=bash
# DFKD settings shared by scripts/dfkd/*.sh (sourced after `set -euo pipefail`).
#   TRAINER          DFKD_Contrastive (default) | DFKD_Mix | DFKD_Random | DFKD_Handcrafted
#   CFG              vit_b32 (default) | tiny_cpu (tiny random CLIP, pixel generator: a CPU smoke run)
#   FEWSHOT_K        0 (default, zero-shot setting) | k: then fine-tune the distilled student on k real images per
#                    class of SOURCE (TAG ${TRAINER}_${k}shot_${SOURCE})
#   SOURCE           source domain of the few-shot images (default: photo, caltech, c, synthetic per dataset)
#   SYN_CACHE        synthetic-set cache root (default ${OUTPUT}/dfkd_synthetic); sets are reused across seeds
#   VQGAN_CKPT       taming VQGAN checkpoint (default none: fourier parameterisation, with a warning)
#   VQGAN_CONFIG     its taming yaml (default: vqgan_imagenet_f16_16384 settings); VQGAN_TRUSTED=1 allows
#                    unpickling a Lightning checkpoint
#   STUDENT_WEIGHTS  local torchvision ImageNet weights of the student (default none: random init)
# plus DATA, OUTPUT, PYTHON, EXTRA_OPTS, DRY_RUN from scripts/common.sh. SHOTS follows FEWSHOT_K (-1 = none).

FEWSHOT_K=${FEWSHOT_K:-0}
[[ ${FEWSHOT_K} =~ ^[0-9]+$ ]] || { echo "error: FEWSHOT_K must be a non-negative integer" >&2; exit 1; }
if [[ ${FEWSHOT_K} -gt 0 ]]; then SHOTS=${FEWSHOT_K}; else SHOTS=-1; fi
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

TRAINER=${TRAINER:-DFKD_Contrastive}
CFG=${CFG:-vit_b32}
TAG=${TRAINER}
SYN_CACHE=${SYN_CACHE:-${OUTPUT}/dfkd_synthetic}
DFKD_TRAINERS=(DFKD_Handcrafted DFKD_Mix DFKD_Random DFKD_Contrastive)

# dfkd_domains DATASET -> every domain (the zero-shot setting tests on all of them; VisDA: the real split)
dfkd_domains() {
    case $1 in
        pacs) echo "art_painting cartoon photo sketch" ;;
        vlcs) echo "caltech labelme pascal sun" ;;
        imageclef_da) echo "c i p" ;;
        visda17) echo "real" ;;
        *) die "no DFKD domain list for dataset '$1' (pacs, vlcs, imageclef_da, visda17)" ;;
    esac
}

# dfkd_source DATASET -> SOURCE or the dataset's default source (few-shot images; the loader needs one anyway)
dfkd_source() {
    if [[ -n ${SOURCE:-} ]]; then echo "${SOURCE}"; return; fi
    case $1 in
        pacs) echo photo ;; vlcs) echo caltech ;; imageclef_da) echo c ;; visda17) echo synthetic ;;
        *) die "no DFKD source domain for dataset '$1'" ;;
    esac
}

# py_list "a b" -> "['a','b']" (a yacs list literal)
py_list() {
    local out="" word
    for word in $1; do out+="${out:+,}'${word}'"; done
    echo "[${out}]"
}

# dfkd_opts DATASET: METHOD_OPTS for every train.py / tools.synthesize call of this dataset
dfkd_opts() {
    local dataset=$1
    METHOD_OPTS=(DATASET.SOURCE_DOMAINS "$(py_list "$(dfkd_source "${dataset}")")"
        DATASET.TARGET_DOMAINS "$(py_list "$(dfkd_domains "${dataset}")")"
        TRAINER.DFKD.SYN_CACHE_DIR "${SYN_CACHE}")
    [[ -n ${VQGAN_CKPT:-} ]] && METHOD_OPTS+=(TRAINER.DFKD.VQGAN_CKPT "${VQGAN_CKPT}")
    [[ -n ${VQGAN_CONFIG:-} ]] && METHOD_OPTS+=(TRAINER.DFKD.VQGAN_CONFIG "${VQGAN_CONFIG}")
    [[ ${VQGAN_TRUSTED:-0} == 1 ]] && METHOD_OPTS+=(TRAINER.DFKD.VQGAN_TRUSTED True)
    [[ -n ${STUDENT_WEIGHTS:-} ]] && METHOD_OPTS+=(TRAINER.DFKD.STUDENT_PRETRAINED "${STUDENT_WEIGHTS}")
    return 0
}

# fewshot_tag DATASET -> the TAG of a few-shot fine-tuning run
fewshot_tag() {
    echo "${TRAINER}_${FEWSHOT_K}shot_$(dfkd_source "$1")"
}
