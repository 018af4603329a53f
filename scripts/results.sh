#!/usr/bin/env bash
# Usage: bash scripts/results.sh [OUTPUT_ROOT] [--protocol base2new|xd|dg|fewshot|dfkd|auto] [--out-dir DIR] [--test-log]
# Prints the markdown tables and writes results_<protocol>.{csv,json,md} (default: into OUTPUT_ROOT).
# Same as: python -m tools.results OUTPUT_ROOT [options]
set -euo pipefail
PYTHON=${PYTHON:-python}
root=${1:-${OUTPUT:-output}}
exec "${PYTHON}" -m tools.results "${root}" "${@:2}"
