#!/usr/bin/env bash
# Build tools/venv the ESPnet way: CPU torch first, then espnet without its pins, then this package.
#
#   tools/install.sh                 # CPU torch (default)
#   TORCH_VARIANT=cu128 tools/install.sh   # CUDA build from download.pytorch.org/whl/cu128
#   SKIP_APT=1 tools/install.sh      # do not apt-get flite, sox, chromium (no root)
#   ESPNET_VERSION=202611 tools/install.sh   # espnet 202611 on Python 3.12/3.13, in tools/venv-espnet202611
#
# Why not `pip install espnet`: espnet==202511 pins setuptools<74, torch>=2.13 needs setuptools>=77.0.3,
# and pip backtracks into an older CUDA torch (several GB). We install torch first, pin it with a
# constraints file for every later pip call, and install espnet --no-deps plus an explicit runtime list
# (tools/requirements-espnet.txt).
set -euo pipefail

tools_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(dirname "${tools_dir}")
espnet_version=${ESPNET_VERSION:-202511}
torch_version=${TORCH_VERSION:-2.13.0}
torch_variant=${TORCH_VARIANT:-cpu}

log() { echo "[tools/install.sh $(date '+%H:%M:%S')] $*"; }

# espnet 202511 is the newest release for Python 3.11 (the default: a local CPU torch wheel, a small venv);
# 202611 needs Python >= 3.12, < 3.14 and gets its own venv, so both can sit side by side.
case "${espnet_version}" in
    202511) venv=${VENV:-${tools_dir}/venv}; python=${PYTHON:-python3}; setuptools_spec="setuptools>=77.0.3" ;;
    202611)
        # Its pins agree with torch 2.13 (setuptools), but torchaudio 2.11 still pins torch 2.11: the same
        # --no-deps path, plus what 202611 added (tools/requirements-espnet202611.txt).
        setuptools_spec="setuptools>=77.0.3,<82"
        venv=${VENV:-${tools_dir}/venv-espnet${espnet_version}}
        python=${PYTHON:-}
        if [ -z "${python}" ]; then
            # python3.12 / 3.13 on PATH, else pyenv's, found by its folders (pyenv's shims only answer for
            # a selected version, and pyenv itself need not be on PATH).
            for v in 3.12 3.13; do
                if command -v "python${v}" >/dev/null 2>&1 && "python${v}" -c "" 2>/dev/null; then
                    python=python${v}; break
                fi
                pv=$(ls -d "${PYENV_ROOT:-${HOME}/.pyenv}/versions/${v}".*/bin/"python${v}" 2>/dev/null | sort -V | tail -n 1)
                if [ -n "${pv}" ]; then python=${pv}; break; fi
            done
        fi
        [ -n "${python}" ] || { echo "tools/install.sh: ESPNET_VERSION=202611 needs Python 3.12 or 3.13 (give PYTHON=/path/to/python3.12)" >&2; exit 1; }
        ;;
    *) echo "tools/install.sh: ESPNET_VERSION: expected 202511 (Python 3.11) or 202611 (Python 3.12/3.13), got '${espnet_version}'" >&2; exit 1 ;;
esac
if [ -z "${SKIP_APT:-}" ] && command -v apt-get >/dev/null 2>&1; then
    missing=()
    for pkg in flite espeak-ng sox chromium chromium-driver; do
        dpkg -s "${pkg}" >/dev/null 2>&1 || missing+=("${pkg}")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "apt-get install ${missing[*]} (speech for the mini corpus; a headless browser for the listening-page test)"
        sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd=sudo
        ${sudo_cmd} apt-get update -qq && ${sudo_cmd} apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi

if [ ! -x "${venv}/bin/python" ]; then
    log "creating ${venv}"
    "${python}" -m venv "${venv}"
fi
pip=("${venv}/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q "pip<26" wheel "${setuptools_spec}"

# 1. torch. CPU: a local wheel when pip's find-links has one, else PyTorch's index, else PyPI.
if "${venv}/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '${torch_version}')" 2>/dev/null; then
    log "torch ${torch_version} already installed"
else
    index_url="https://download.pytorch.org/whl/${torch_variant}"
    log "installing torch==${torch_version} (${torch_variant})"
    # A local CPU wheel (pip's find-links) first: no index is asked, so nothing can swap in a CUDA build.
    if [ "${torch_variant}" = cpu ] && "${pip[@]}" install -q --no-index --no-deps "torch==${torch_version}" 2>/dev/null; then
        log "torch from a local wheel; its dependencies from the index"
        "${pip[@]}" install -q "torch==${torch_version}"
    elif "${venv}/bin/python" -c "import urllib.request as u; u.urlopen('${index_url}/', timeout=15)" 2>/dev/null; then
        "${pip[@]}" install -q "torch==${torch_version}" --extra-index-url "${index_url}"
    else
        # Without PyTorch's index (or a local wheel for this Python), pip's only source is PyPI, whose
        # Linux torch is the CUDA build: about 4 GB more on disk, and it runs on CPU all the same.
        log "${index_url} is not reachable: torch==${torch_version} from PyPI (the CUDA build; it runs on CPU too)"
        "${pip[@]}" install -q "torch==${torch_version}"
    fi
fi
installed_torch=$("${venv}/bin/python" -c "import torch; print(torch.__version__.split('+')[0])")
constraints=${venv}/constraints.txt
printf 'torch==%s\n%s\n' "${installed_torch}" "${setuptools_spec}" > "${constraints}"

# 2. espnet and friends without their pins, then their runtime needs under the torch constraint.
log "installing espnet (no deps) and its runtime requirements"
"${pip[@]}" install -q -c "${constraints}" --no-deps "espnet==${espnet_version}" -r "${tools_dir}/requirements-nodeps.txt"
# One call for the shared list and the release's own pins (tools/requirements-espnet<version>.txt), so that
# a rerun does not swap a pinned version back and forth.
"${pip[@]}" install -q -c "${constraints}" -r "${tools_dir}/requirements-espnet.txt" \
    -r "${tools_dir}/requirements-espnet${espnet_version}.txt"
# torchaudio's Linux wheel is a CUDA build whose extension cannot load beside a CPU torch; espnet2's
# enhancement code only needs its pure-Python resample, which works without the extension.
if [ "${torch_variant}" = cpu ]; then
    site=$("${venv}/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    rm -f "${site}"/torchaudio/lib/*.so
fi

# 3. this package, editable. --no-deps: its requirements (torch, espnet, ...) are in place now, and
# letting pip re-resolve espnet's own pins would fail on setuptools (see the top of this file).
log "installing dispatch (editable) and the test tools"
"${pip[@]}" install -q -c "${constraints}" --no-deps -e "${repo_dir}"
"${pip[@]}" install -q -c "${constraints}" -r "${tools_dir}/requirements-test.txt"

# The recipes' environment: the default one (tools/venv) once it exists, whichever was built last, so that
# building another release beside it (even while the default is in use) never switches the recipes over;
# DISPATCH_VENV selects another one (the tests set it to the venv running pytest, so a suite run by
# tools/venv-espnet202611 stays there).
recipe_venv=${venv}
[ -x "${tools_dir}/venv/bin/python" ] && recipe_venv=${tools_dir}/venv
cat > "${tools_dir}/activate_python.sh" <<ACT
# Sourced by recipes' path.sh (generated by tools/install.sh).
. "\${DISPATCH_VENV:-${recipe_venv}}/bin/activate"
ACT
"${venv}/bin/python" -c "import torch, espnet2.tasks.enh, dispatch; print('ok: torch', torch.__version__)" 2>&1 | tail -n 1
log "done"
