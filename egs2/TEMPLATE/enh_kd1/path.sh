# Sourced by run.sh and enh_kd.sh: activates the environment that tools/install.sh built.
# Resolved through the recipe's symlink, so recipes work from any folder.
MAIN_ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../../.." && pwd)
export MAIN_ROOT
if [ -f "${MAIN_ROOT}/tools/activate_python.sh" ]; then
    # shellcheck disable=SC1091
    . "${MAIN_ROOT}/tools/activate_python.sh"
else
    echo "path.sh: ${MAIN_ROOT}/tools/activate_python.sh is missing: run tools/install.sh first" 1>&2
    return 1 2>/dev/null || exit 1
fi
export PATH="${PWD}/utils:${PATH}"
# tools/python_site/sitecustomize.py: g2p_en (imported by espnet2's enhancement task) loads lazily, so that
# no stage prints nltk's failed downloads.
export PYTHONPATH="${MAIN_ROOT}/tools/python_site${PYTHONPATH:+:${PYTHONPATH}}"
export LC_ALL=C
export PYTHONIOENCODING=UTF-8
# One BLAS thread per process: recipes parallelise over jobs (--nj), not inside them.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
