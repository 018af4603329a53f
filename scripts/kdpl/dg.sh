#!/usr/bin/env bash
# Usage: bash scripts/kdpl/dg.sh SEED
# Domain generalisation: the ImageNet model (trained if missing) tested on ImageNet, -V2, -Sketch, -A and -R.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
[[ $# -eq 1 ]] || die "usage: $0 SEED"
check_seed "$1"
use_protocol xd
xd_source_then_targets "$1" "${DG_DATASETS[@]}"
