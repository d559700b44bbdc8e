#!/usr/bin/env bash
# Ablation runner: trains and scores a grid of KD variants over several seeds with the recipe's run.sh,
# then collects them into one table: per variant and metric the mean ± standard deviation over seeds,
# and the paired difference to the spec's reference variant (plain KD) ± its standard error.
#   ./run_ablation.sh conf/ablation/method.yaml
#   ./run_ablation.sh --seeds "0 1 2 3 4" conf/ablation/topk.yaml
#   ./run_ablation.sh --teacher_model exp/teacher_conv_tasnet_teacher conf/ablation/method.yaml --ngpu 4
# Options before the spec are this script's; options after it go to run.sh (and on to enh_kd.sh).
# The teacher must exist already (run.sh --stop_stage 4, or a given --teacher_model).
set -euo pipefail

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}
SECONDS=0

stage=1                 # 1: train, enhance and score every variant and seed (run.sh stages 5-8); 2: table.
stop_stage=2
seeds=                  # Space-separated seeds (default: the spec's `seeds`).
student_config=conf/train_student.yaml  # Student of every variant (run.sh's default in every recipe).
student_tag=            # Experiment name prefix (default: as enh_kd.sh names it, student_<config name>).
student_args=           # Extra training options of every student (e.g. the CI's "--max_epoch 2").
teacher_model=          # Teacher experiment dir, zip or zoo name (default: whatever run.sh gives).
expdir=exp              # Directory of experiments.
output=                 # Table to write (default: RESULTS_ablation_<spec name>.md in the recipe folder).
pairing=seed            # Paired differences seed by seed (seed) or per utterance (utterance).
python=python3          # Python interpreter of the environment (path.sh activates it).

help_message=$(cat <<HELP
Usage: $0 [options] <conf/ablation/name.yaml> [run.sh options]

Options (defaults in brackets):
  --stage [${stage}] --stop_stage [${stop_stage}]  1: run.sh stages 5-8 per seed, 2: the table
  --seeds ["${seeds}": the spec's] --student_config [${student_config}] --student_tag
  --student_args ["${student_args}"] --teacher_model --expdir [${expdir}]
  --output [RESULTS_ablation_<name>.md] --pairing [${pairing}] (seed|utterance)

--teacher_model names the teacher of the table's teacher row; a recipe that trains its teacher in stage 4
names it here as exp/teacher_<tag>. Every seed shares that teacher: enh_kd.sh puts --tag_suffix (_seed<N>)
on the student experiment names only, and the stages 5-8 run here never train a teacher.
HELP
)

log "$0 $*"
. utils/parse_options.sh
if [ $# -lt 1 ]; then
    log "Error: give an ablation spec"; log "${help_message}"; exit 2
fi
spec=$1; shift
[ -f "${spec}" ] || { log "Error: ${spec}: no such ablation spec (see conf/ablation/)"; exit 2; }
[ -f "${student_config}" ] || { log "Error: --student_config ${student_config}: no such file"; exit 2; }

. ./path.sh

name=$(basename "${spec}" .yaml)
output=${output:-RESULTS_ablation_${name}.md}
# enh_kd.sh's own naming (dispatch.exptree: conf/tuning/train_enh_x.yaml -> student_x); passed on explicitly below.
student_tag=${student_tag:-$(${python} -m dispatch.bin.exptree name --student_config "${student_config}")}
[ -n "${seeds}" ] || seeds=$(${python} -m dispatch.bin.ablation query "${spec}" seeds)

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
    # Expanded on every run: cheap, and it refuses a spec changed under experiments already trained.
    kd_configs=$(${python} -m dispatch.bin.ablation expand "${spec}" --expdir "${expdir}" | tr '\n' ' ')
    skip_baseline=true
    [ -n "$(${python} -m dispatch.bin.ablation query "${spec}" baseline)" ] && skip_baseline=false
    teacher_opts=()
    [ -n "${teacher_model}" ] && teacher_opts=(--teacher_model "${teacher_model}")
    for seed in ${seeds}; do
        log "Stage 1: seed ${seed}: variants ${kd_configs}(baseline: $([ "${skip_baseline}" = true ] && echo no || echo yes))"
        # run.sh's own options first (the mini recipe reads --ci before anything else); ours win over
        # any repeated ones. The suffix is dispatch.exptree's name of a seed's runs; espnet2's --seed seeds
        # torch before the model is built (initialisation) and the batch order.
        ./run.sh "$@" \
            --stage 5 --stop_stage 8 \
            --expdir "${expdir}" \
            --student_config "${student_config}" \
            --student_tag "${student_tag}" \
            --student_args "--seed ${seed} ${student_args}" \
            --tag_suffix "$(${python} -m dispatch.bin.exptree seed_suffix "${seed}")" \
            --skip_baseline "${skip_baseline}" \
            --kd_configs "${kd_configs}" \
            "${teacher_opts[@]}"
    done
fi

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
    log "Stage 2: table of ${spec} over seeds ${seeds} -> ${output}"
    ${python} -m dispatch.bin.ablation table "${spec}" --output "${output}" --expdir "${expdir}" \
        --student_tag "${student_tag}" --seeds "${seeds}" --pairing "${pairing}" --teacher_model "${teacher_model}"
fi

log "Successfully finished. [elapsed=${SECONDS}s]"
