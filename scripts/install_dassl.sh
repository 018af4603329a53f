#!/usr/bin/env bash
# Usage: bash scripts/install_dassl.sh [DIR]
# Installs Dassl.pytorch v0.6.3 (commit c61a1b5) from its source into the active Python environment.
# Dassl is not on the package registry; its setup.py imports numpy, so it is built without build isolation.
set -euo pipefail
DIR=${1:-../Dassl.pytorch}
PYTHON=${PYTHON:-python}
if [[ ! -d ${DIR}/.git ]]; then
    git clone https://github.com/KaiyangZhou/Dassl.pytorch "${DIR}"
fi
git -C "${DIR}" checkout c61a1b5
"${PYTHON}" -m pip install -r "${DIR}/requirements.txt"
"${PYTHON}" -m pip install --no-build-isolation -e "${DIR}"
"${PYTHON}" -c "import sys; sys.modules['outdated'] = None; import dassl; print('Dassl', dassl.__version__, 'installed')"
