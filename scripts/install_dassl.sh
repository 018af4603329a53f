#!/usr/bin/env bash
# Usage: bash scripts/install_dassl.sh [DIR | ARCHIVE.tar.gz]
#
# Installs Dassl.pytorch v0.6.3 (commit c61a1b5) from its source into the active Python environment.
# Dassl is not on the package registry; its setup.py imports numpy, so it is built without build isolation.
#   DIR (default ../Dassl.pytorch): a git checkout, cloned there when missing, checked out at c61a1b5 and installed
#                                   in editable mode (what a user wants: the source stays next to the project).
#   ARCHIVE.tar.gz:                 a source archive of that commit (e.g. `git archive` output, for machines that
#                                   cannot clone); unpacked into a temporary folder and installed as a regular package.
# PYTHON selects the interpreter (default: python).
set -euo pipefail
SOURCE=${1:-../Dassl.pytorch}
PYTHON=${PYTHON:-python}
if [[ ${PYTHON} == */* ]]; then  # a relative path must survive the `cd` below
    PYTHON="$(cd "$(dirname "${PYTHON}")" && pwd)/$(basename "${PYTHON}")"
fi
COMMIT=c61a1b5
VERSION=0.6.3

if [[ -f ${SOURCE} ]]; then
    case ${SOURCE} in
        *.tar.gz|*.tgz) ;;
        *) echo "error: ${SOURCE} is a file but not a .tar.gz source archive of Dassl.pytorch" >&2; exit 2 ;;
    esac
    work=$(mktemp -d)
    trap 'rm -rf "${work}"' EXIT
    tar -xzf "${SOURCE}" -C "${work}"
    setup=$(find "${work}" -maxdepth 2 -name setup.py -print -quit)
    if [[ -z ${setup} || ! -f $(dirname "${setup}")/dassl/__init__.py ]]; then
        echo "error: ${SOURCE} does not contain Dassl.pytorch's source (setup.py and dassl/ at its top)" >&2
        exit 2
    fi
    src=$(dirname "${setup}")
    # `git archive` stores the commit id in the archive; check it when present.
    archived=$(gzip -dc "${SOURCE}" | git get-tar-commit-id 2>/dev/null || true)
    if [[ -n ${archived} && ${archived} != ${COMMIT}* ]]; then
        echo "error: ${SOURCE} was archived from commit ${archived}, not ${COMMIT} (v${VERSION})" >&2
        exit 2
    fi
    "${PYTHON}" -m pip install -r "${src}/requirements.txt"
    "${PYTHON}" -m pip install --no-build-isolation "${src}"
else
    if [[ ! -d ${SOURCE}/.git ]]; then
        git clone https://github.com/KaiyangZhou/Dassl.pytorch "${SOURCE}"
    fi
    git -C "${SOURCE}" checkout "${COMMIT}"
    "${PYTHON}" -m pip install -r "${SOURCE}/requirements.txt"
    "${PYTHON}" -m pip install --no-build-isolation -e "${SOURCE}"
fi
# Run from outside the source folder, so the installed package is the one imported.
(cd / && "${PYTHON}" -c "
import sys
sys.modules['outdated'] = None  # wilds/ogb would start registry-probing threads
import dassl
assert dassl.__version__ == '${VERSION}', f'Dassl {dassl.__version__} installed, expected ${VERSION}'
print('Dassl', dassl.__version__, 'installed from', dassl.__file__)
")
