#!/usr/bin/env bash
# The GPU path in one command, on a machine with CUDA (after `TORCH_VARIANT=cu128 ./tools/install.sh`):
#   1. the CUDA tests (tests/test_gpu.py: KD losses and a KD step on cuda vs cpu, teacher_autocast bf16/fp16
#      vs float32); a skipped test fails the check;
#   2. the benchmark on CUDA (BENCHMARK_cuda.md);
#   3. the VoiceBank+DEMAND recipe at its own settings (paper-size Conv-TasNet teacher, Conv-TasNet student,
#      every shipped KD config) on a fixture tree shaped like the corpus, training with --ngpu 1 and
#      enhancing with --gpu_inference true, only epochs and iterations cut; with two or more GPUs, one KD
#      student again with --ngpu 2 (DDP);
# and writes what it measured to GPU_CHECK.md (override: --report FILE). Work files go to --work DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
report=${root}/GPU_CHECK.md
work=/tmp/dispatch_gpu_check
while [ $# -gt 0 ]; do
    case "$1" in
        --report) report=$(readlink -f "$2"); shift 2 ;;
        --work) work=$2; shift 2 ;;
        *) echo "usage: $0 [--report GPU_CHECK.md] [--work /tmp/dispatch_gpu_check]" >&2; exit 2 ;;
    esac
done
py=${root}/tools/venv/bin/python
[ -x "${py}" ] || { echo "$0: ${py} missing: run TORCH_VARIANT=cu128 ./tools/install.sh first" >&2; exit 1; }

ngpu=$(${py} -c "import torch; print(torch.cuda.device_count())")
if [ "${ngpu}" -lt 1 ]; then
    ${py} -c "import torch; print('torch', torch.__version__, 'CUDA build:', torch.version.cuda)" >&2
    echo "$0: torch sees no CUDA device: install the CUDA build (TORCH_VARIANT=cu128 ./tools/install.sh)" >&2
    exit 1
fi
mkdir -p "${work}"
rows=()
step() {  # step <name> <command...>: runs it, timed, log in ${work}/<name>.log; a failure ends the check
    local name=$1; shift
    local start=${SECONDS}
    echo "== ${name}: $*"
    if "$@" > "${work}/${name}.log" 2>&1; then
        rows+=("| ${name} | pass | $((SECONDS - start)) s |")
    else
        rows+=("| ${name} | **FAIL** (see ${work}/${name}.log) | $((SECONDS - start)) s |")
        write_report; tail -40 "${work}/${name}.log" >&2; exit 1
    fi
}
write_report() {
    {
        echo "# GPU check ($(date -u '+%Y-%m-%d %H:%M UTC'))"
        echo
        echo "Written by \`tools/gpu_check.sh\` at commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)."
        echo
        ${py} - <<'EOF'
import platform, torch
names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
print(f"- machine: {platform.machine()}, {torch.cuda.device_count()} GPU(s): {names}")
print(f"- torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
EOF
        echo
        echo "| check | result | wall time |"
        echo "|---|---|---:|"
        printf '%s\n' "${rows[@]}"
        if [ -f "${work}/tests.log" ]; then
            echo; echo "CUDA tests: $(tail -1 "${work}/tests.log")"
        fi
        if [ -f "${work}/recipe.log" ]; then
            echo; echo "Recipe (VoiceBank+DEMAND fixture, --ngpu 1, --gpu_inference true): training speed per experiment"
            echo; echo "| experiment | mean iter_time (s) | mean train_time (s) |"; echo "|---|---:|---:|"
            for log in "${work}"/vbd/exp/*/log/train.log; do
                [ -f "${log}" ] || continue
                awk -v name="$(basename "$(dirname "$(dirname "${log}")")")" '
                    match($0, /iter_time=[0-9.e-]+/) { it += substr($0, RSTART + 10, RLENGTH - 10); n++ }
                    match($0, /train_time=[0-9.e-]+/) { tt += substr($0, RSTART + 11, RLENGTH - 11); m++ }
                    END { printf "| %s | %s | %s |\n", name, n ? sprintf("%.3f", it / n) : "-", m ? sprintf("%.3f", tt / m) : "-" }' "${log}"
            done
            [ -f "${work}/vbd/RESULTS.md" ] && { echo; echo "Scores of the fixture run (not meaningful as quality: a few steps on synthetic audio) are in ${work}/vbd/RESULTS.md."; }
        fi
        if [ -f "${root}/BENCHMARK_cuda.md" ]; then echo; echo "Benchmark on CUDA: BENCHMARK_cuda.md."; fi
    } > "${report}.tmp"
    mv "${report}.tmp" "${report}"
}

# 1. CUDA tests; none may be skipped.
step tests bash -c "${py} -m pytest -q -p no:cacheprovider -rs tests/test_gpu.py | tee /dev/stderr | tail -1 | grep -v skipped | grep -q passed"

# 2. Benchmark at full size on CUDA.
step benchmark "${py}" -m dispatch.bin.benchmark --device cuda --output "${root}/BENCHMARK_cuda.md"

# 3. The VoiceBank+DEMAND recipe on a fixture shaped like the corpus.
rm -rf "${work}/vbd" "${work}/corpus"
step fixture "${py}" -c "
import sys; sys.path.insert(0, 'tests')
from pathlib import Path
from test_recipe_dryrun import EGS, copy_recipe, voicebank_seconds
from test_data_voicebank import make_corpus
make_corpus(Path('${work}/corpus'), train={f'p{n}': 8 for n in (226, 230, 239, 268, 287)},
            test={'p232': 4, 'p257': 4}, seconds=voicebank_seconds())
copy_recipe(EGS / 'voicebank_demand' / 'enh_kd1', Path('${work}/vbd'))
"
cut="--max_epoch 2 --num_iters_per_epoch 24"
step recipe env VOICEBANK_DEMAND="${work}/corpus" bash -c "cd '${work}/vbd' && ./run.sh --ngpu 1 --gpu_inference true \
    --nj 4 --inference_nj 2 --local_data_opts '--strict_counts false --download false --nj 4' \
    --teacher_args '${cut}' --student_args '${cut}' --stop_stage 11"
if [ "${ngpu}" -ge 2 ]; then
    step ddp env VOICEBANK_DEMAND="${work}/corpus" bash -c "cd '${work}/vbd' && ./run.sh --ngpu 2 --stage 6 --stop_stage 6 \
        --tag_suffix _ddp --teacher_model exp/teacher_conv_tasnet_teacher --skip_baseline true \
        --kd_configs conf/kd/kd_dfkd_dispatch_mssp.yaml --student_args '${cut}'"
else
    rows+=("| ddp | not run (1 GPU) | - |")
fi
write_report
echo "GPU check passed: ${report}"
