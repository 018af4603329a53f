#!/usr/bin/env bash
# Usage: bash scripts/kdpl/xd.sh SEED
# Cross-dataset transfer: train on ImageNet unless its results.json exists, then test the 10 target datasets.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
[[ $# -eq 1 ]] || die "usage: $0 SEED"
check_seed "$1"
use_protocol xd
xd_source_then_targets "$1" "${XD_TARGETS[@]}"
