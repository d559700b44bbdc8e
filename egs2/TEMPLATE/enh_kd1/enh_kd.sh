#!/usr/bin/env bash
# Knowledge distillation for speech enhancement on espnet2: teacher -> baseline student -> KD students.
# Each recipe's run.sh sets the dataset options and calls this script; every option below can also be
# given on the run.sh command line (`./run.sh --stage 6 --kd_configs conf/kd/kd_dispatch_l2.yaml`).
set -euo pipefail

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}
min() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }
SECONDS=0

# General
stage=1               # Processes starts from the specified stage.
stop_stage=13         # Processes is stopped at the specified stage.
ngpu=1                # The number of GPUs per node for training (0: CPU).
num_nodes=1           # The number of nodes for training.
nj=32                 # The number of parallel jobs (formatting, scoring).
inference_nj=32       # The number of parallel jobs in enhancement.
gpu_inference=false   # Whether to enhance on GPUs.
dumpdir=dump          # Directory of formatted data.
expdir=exp            # Directory of experiments.
python=python3        # Python interpreter of the environment (path.sh activates it).

# Data
local_data_opts=""    # Options passed to local/data.sh.
fs=16k                # Sampling rate of the formatted data (e.g. 16k, 16000).
train_set=            # Training set name.
valid_set=            # Validation set name.
test_sets=            # Names of the test sets, space separated.
min_wav_duration=0.1  # Utterances shorter than this (s) are dropped from training sets.
format_args=          # Extra options for dispatch.bin.format_data (stage 2): "--downmix true" averages the
                      # channels of multi-channel audio, "--rescale true" scales noisy/clean pairs above full
                      # scale by one factor; both are refused otherwise.

# Models
teacher_model=        # Given teacher (exp dir, packed zip or espnet_model_zoo name): skips teacher training.
teacher_config=       # Config of the teacher trained in stage 4.
student_config=       # Config of the student (baseline and every KD student).
kd_configs=           # KD configs, space separated, each merged on top of the student config.
teacher_args=         # Extra options for teacher training.
student_args=         # Extra options for baseline and KD student training.
tag_suffix=           # Suffix of the student experiment names (e.g. _seed1); the teacher is shared.
teacher_tag=          # Name of the teacher experiment (default: from the config file name).
student_tag=          # Name of the baseline student experiment (default: from the config file name).
skip_baseline=false   # Do not train the baseline (no-KD) student.
use_teacher_cache=false  # KD students read the teacher's outputs cached by stage 10 instead of running it.

# Enhancement and scoring
inference_config=     # Config of espnet2.bin.enh_inference (e.g. segmenting of long utterances).
inference_args=       # Extra options for espnet2.bin.enh_inference.
inference_model=valid.loss.best.pth  # Weights used for enhancement and packing.
score_metrics=        # Metrics for scoring (empty: the scorer's default list).
results_md=RESULTS.md # Results table written by the results stage, in the recipe folder.
results_args=         # Extra options for dispatch.bin.make_results (e.g. --utts id1,id2 --plain_kd kd_l2).
report_utts=          # Utterance ids always shown on the listening page (comma separated).
rank_metric=          # Metric choosing the best/median/worst utterances pictured (empty: PESQ_WB if scored, else the first metric scored).

# Packing, export and upload
export_args=          # Extra options for dispatch.bin.export_onnx (stage 12), e.g. "--require true --max_utts 100".
hf_repo_prefix=       # Hugging Face repo prefix (e.g. user/dispatch_mini): stage 13 uploads each model.

help_message=$(cat <<HELP
Usage: $0 --train_set <name> --valid_set <name> --test_sets "<names>" --teacher_config <yaml> --student_config <yaml> [options]

Stages:
  1: data preparation (local/data.sh)          7: enhancement of the test sets by every model
  2: formatting, resampling, validation        8: scoring
  3: statistics (shape files)                  9: results: ${results_md}, pictures, listening page
  4: teacher training, or --teacher_model         (${expdir}/report/index.html)
  5: baseline student training (no KD)         10: teacher output cache (--use_teacher_cache true;
  6: KD student training, one per --kd_configs     runs before 6, which reads it)
                                               11: packing every model as an espnet2 zip (with its model card)
                                               12: ONNX export, parity and speed checks, streaming check
                                                   of causal models (<exp>/onnx/export.json, ${results_md})
                                               13: upload to the Hugging Face hub

Options (defaults in brackets):
  --stage [${stage}] --stop_stage [${stop_stage}] --ngpu [${ngpu}] --num_nodes [${num_nodes}]
  --nj [${nj}] --inference_nj [${inference_nj}] --gpu_inference [${gpu_inference}]
  --fs [${fs}] --dumpdir [${dumpdir}] --expdir [${expdir}] --local_data_opts ["${local_data_opts}"]
  --format_args ["${format_args}"] (e.g. "--downmix true --rescale true")
  --teacher_model [${teacher_model}] --teacher_config --student_config --kd_configs "a.yaml b.yaml"
  --teacher_args --student_args --tag_suffix --teacher_tag --student_tag --skip_baseline [${skip_baseline}]
  --use_teacher_cache [${use_teacher_cache}]
  --inference_config --inference_args --inference_model [${inference_model}] --score_metrics
  --results_args --report_utts --rank_metric --export_args --hf_repo_prefix
HELP
)

log "$0 $*"
run_args=$(printf '%q ' "$0" "$@")
. utils/parse_options.sh
if [ $# -ne 0 ]; then
    log "Error: unexpected arguments: $*"; log "${help_message}"; exit 2
fi

. ./path.sh
. ./cmd.sh

# Sample rate as an integer (16k -> 16000).
fs=$(${python} -c "import humanfriendly as h; print(int(h.parse_size('${fs}')))")
[ -n "${train_set}" ] || { log "Error: --train_set is required"; exit 2; }
[ -n "${valid_set}" ] || { log "Error: --valid_set is required"; exit 2; }
[ -n "${test_sets}" ] || { log "Error: --test_sets is required"; exit 2; }
for _opt in teacher_config student_config inference_config; do
    _val=${!_opt}
    if [ -n "${_val}" ] && [ ! -f "${_val}" ]; then
        log "Error: --${_opt} ${_val}: no such file"; exit 2
    fi
done
for _conf in ${kd_configs}; do
    [ -f "${_conf}" ] || { log "Error: --kd_configs: ${_conf}: no such file"; exit 2; }
done
[ -n "${student_config}" ] || { log "Error: --student_config is required"; exit 2; }
if [ -z "${teacher_model}" ] && [ -z "${teacher_config}" ]; then
    log "Error: give --teacher_config (to train a teacher) or --teacher_model (to use one)"; exit 2
fi
# Every config the training stages (4, 5, 6) will read is checked now, before any stage runs: a typo in
# the last KD yaml must not wait for stage 6, after the teacher was trained and cached.
if { [ "${stage}" -le 6 ] && [ "${stop_stage}" -ge 5 ]; } || { [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ] && [ -z "${teacher_model}" ]; }; then
    _check_opts=(--student_config "${student_config}" --fs "${fs}")
    [ -z "${teacher_model}" ] && _check_opts+=(--teacher_config "${teacher_config}")
    # shellcheck disable=SC2086
    ${python} -m dispatch.bin.check_kd_configs "${_check_opts[@]}" ${kd_configs} \
        || { log "Error: fix the configs above (nothing was run)"; exit 2; }
fi

data_feats=${dumpdir}/raw
stats_dir=${expdir}/stats_${fs}
# The experiment tree is named by dispatch.exptree (from the config file names, symlinks resolved:
# conf/tuning/train_enh_x.yaml -> x); this sets teacher_tag, student_tag, teacher_exp (shared by every
# student run, whatever its --tag_suffix; a given --teacher_model as given), teacher_outputs, student_exp,
# noisy_dir, ablation_root, models (name=directory: the models to enhance, score, pack) and kd_exps
# (one per --kd_configs).
_tree=(--expdir "${expdir}" --student_config "${student_config}" --teacher_config "${teacher_config}"
       --teacher_model "${teacher_model}" --teacher_tag "${teacher_tag}" --student_tag "${student_tag}"
       --tag_suffix "${tag_suffix}" --kd_configs "${kd_configs}")
[ "${skip_baseline}" = true ] && _tree+=(--skip_baseline)
_layout=$(${python} -m dispatch.bin.exptree layout "${_tree[@]}") || { log "Error: cannot name the experiments"; exit 2; }
eval "${_layout}"
# Folder of a model's outputs (enhanced test sets, teacher cache): its experiment, or teacher_outputs.
out_dir() { if [ "$1" = "${teacher_exp}" ]; then echo "${teacher_outputs}"; else echo "$1"; fi; }

in_range() { [ "${stage}" -le "$1" ] && [ "${stop_stage}" -ge "$1" ]; }
# Every data set the stages of this run read must exist before any work starts: one line naming it.
check_sets() {
    local _set _what _need=()
    if in_range 2 || in_range 3 || in_range 5 || in_range 6 || in_range 10 || { in_range 4 && [ -z "${teacher_model}" ]; }; then
        _need+=("train_set:${train_set}" "valid_set:${valid_set}")
    fi
    if in_range 2 || in_range 7 || in_range 8 || in_range 9; then
        for _set in ${test_sets}; do _need+=("test_sets:${_set}"); done
    fi
    for _what in "${_need[@]}"; do
        _set=${_what#*:}
        if in_range 2; then
            [ -f "data/${_set}/wav.scp" ] || {
                log "Error: --${_what%%:*} ${_set}: data/${_set}/wav.scp does not exist (stage 1, local/data.sh, writes data/<set>)"; exit 1; }
        elif [ ! -f "${data_feats}/${_set}/wav.scp" ]; then
            log "Error: --${_what%%:*} ${_set}: ${data_feats}/${_set}/wav.scp does not exist: format it first (--stage 2)"; exit 1
        fi
    done
}
in_range 1 || check_sets  # with stage 1, after it

# One run per experiment folder at a time: a second run on the same --expdir is refused, naming the one
# running. The flock goes with this shell's descriptor 9 (and its children's): a killed run leaves no lock.
mkdir -p "${expdir}"
_lock=${expdir}/.enh_kd.lock
exec 9<>"${_lock}"
_taken=$(${python} -m dispatch.runlock acquire "${_lock}" --fd 9 --pid $$ --command "${run_args}") || exit 1
[ -z "${_taken}" ] || log "${_taken}"
trap '${python} -m dispatch.runlock release "${_lock}" --fd 9 --pid $$ || true' EXIT

# Stage 7 records in <out>/enhanced_<set>/.inputs.json what it was made from (dispatch.fingerprint: model
# weights and config by content, the test audio by size and time, the options). Stages 7, 8 and 9 compare
# it with the inputs configured now: nothing made by another model or from other audio is reused or reported.
model_files() {  # model_files <exp dir, zip or zoo name>: sets _config and _model
    local _found
    if [ -d "$1" ]; then  # an experiment: its config and --inference_model, as resolve_teacher finds them
        _config=$1/config.yaml; _model=$1/${inference_model}
        for _found in "${_config}" "${_model}"; do
            [ -f "${_found}" ] || { log "Error: ${_found} does not exist: train $1 first (or check --inference_model)"; exit 1; }
        done
        return 0
    fi
    _found=$(${python} -m dispatch.bin.resolve_teacher "$1" --model_file_name "${inference_model}") || {
        log "Error: cannot use the model $1 (resolve_teacher says why above)"; exit 1; }
    read -r _config _model <<< "${_found}"
}
enh_inputs() {  # enh_inputs <test set>: the array _fp of the inputs of its enhancement by _config/_model
    _fp=(--file "model=${_model}" --file "train_config=${_config}" --audio "wav.scp=${data_feats}/$1/wav.scp"
         --value "fs=${fs}" --value "inference_args=${inference_args}")
    [ -z "${inference_config}" ] || _fp+=(--file "inference_config=${inference_config}")
}
# A KD student records the teacher it learned from (<exp>/.teacher.json: the teacher's weights by content,
# as training finds them); one trained with another teacher is not resumed, enhanced or reported as a
# student of the teacher configured now.
kd_teacher_inputs() {  # the array _tfp (the teacher is resolved once per run)
    if [ -z "${_teacher_weights:-}" ]; then
        _teacher_weights=$(${python} -m dispatch.bin.resolve_teacher "${teacher_exp}") || {
            log "Error: cannot use the teacher ${teacher_exp} (resolve_teacher says why above)"; exit 1; }
        _teacher_weights=${_teacher_weights#* }
    fi
    _tfp=(--file "teacher=${_teacher_weights}")
}
check_kd_teacher() {  # check_kd_teacher <stage> <model dir>: nothing to check without a record
    local _why
    [ -f "$2/.teacher.json" ] || return 0
    kd_teacher_inputs
    if ! _why=$(${python} -m dispatch.fingerprint check "$2/.teacher.json" "${_tfp[@]}"); then
        log "Error: stage $1: $2 was trained with another teacher than ${teacher_exp} (${_why}): move or remove $2 (or give another --tag_suffix) and run stage 6 to train it with this teacher"
        exit 1
    fi
}
check_enhanced() {  # check_enhanced <stage>: every model's enhanced test sets exist and are current
    local _entry _name _dir _set _out _why
    for _entry in "${models[@]}"; do
        _name=${_entry%%=*}; _dir=${_entry#*=}
        check_kd_teacher "$1" "${_dir}"
        for _set in ${test_sets}; do
            _out=$(out_dir "${_dir}")/enhanced_${_set}
            [ -f "${_out}/spk1.scp" ] || {
                log "Error: stage $1 needs ${_set} enhanced by ${_name} (${_out}/spk1.scp), which does not exist: run stage 7 first (--stage 7)"; exit 1; }
        done
        model_files "${_dir}"
        for _set in ${test_sets}; do
            _out=$(out_dir "${_dir}")/enhanced_${_set}
            enh_inputs "${_set}"
            if ! _why=$(${python} -m dispatch.fingerprint check "${_out}/.inputs.json" "${_fp[@]}"); then
                case "${_why}" in
                    "no record"*) _why="has no record of what it was made from ${_why#no record of its inputs }" ;;
                    *) _why="was made from other inputs than configured now (${_why})" ;;
                esac
                log "Error: stage $1: ${_out} ${_why}: rerun stage 7 (--stage 7)"; exit 1
            fi
        done
    done
}

if [ "${gpu_inference}" = true ]; then _inf_cmd=${cuda_cmd}; _inf_ngpu=1; else _inf_cmd=${decode_cmd}; _inf_ngpu=0; fi

# train <exp_dir> <config> <extra args...>: espnet2's launcher (multi-GPU / multi-node aware).
train() {
    local dir=$1 config=$2; shift 2
    mkdir -p "${dir}/log"
    log "Training ${dir} (log: ${dir}/log/train.log)"
    # shellcheck disable=SC2086
    ${python} -m espnet2.bin.launch \
        --cmd "${cuda_cmd} --name $(basename "${dir}")" \
        --log "${dir}/log/train.log" \
        --ngpu "${ngpu}" \
        --num_nodes "${num_nodes}" \
        --init_file_prefix "${dir}/.dist_init_" \
        --multiprocessing_distributed true -- \
        ${python} -m dispatch.bin.enh_kd_train \
            --resume true \
            --fs "${fs}" \
            --train_data_path_and_name_and_type "${data_feats}/${train_set}/wav.scp,speech_mix,sound" \
            --train_data_path_and_name_and_type "${data_feats}/${train_set}/spk1.scp,speech_ref1,sound" \
            --train_shape_file "${stats_dir}/train/speech_mix_shape" \
            --valid_data_path_and_name_and_type "${data_feats}/${valid_set}/wav.scp,speech_mix,sound" \
            --valid_data_path_and_name_and_type "${data_feats}/${valid_set}/spk1.scp,speech_ref1,sound" \
            --valid_shape_file "${stats_dir}/valid/speech_mix_shape" \
            --fold_length $((fs * 8)) \
            --config "${config}" \
            --output_dir "${dir}" \
            "$@"
}

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
    log "Stage 1: data preparation (local/data.sh ${local_data_opts})"
    # shellcheck disable=SC2086
    local/data.sh ${local_data_opts}
    check_sets
fi

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
    log "Stage 2: formatting data/ -> ${data_feats}/ at ${fs} Hz, with validation"
    # The conversion runs as ${decode_cmd} JOB=1:N jobs (on the cluster's nodes with slurm.pl), one share of
    # the recordings each, between a preparing and a merging step here (dispatch.bin.format_data).
    for dset in ${train_set} ${valid_set} ${test_sets}; do
        _fmt=("data/${dset}" "${data_feats}/${dset}" --fs "${fs}")
        if [ "${dset}" = "${train_set}" ] || [ "${dset}" = "${valid_set}" ]; then
            _fmt+=(--min_duration "${min_wav_duration}")
        fi
        # shellcheck disable=SC2206
        _fmt+=(${format_args})
        if ${python} -m dispatch.bin.format_data "${_fmt[@]}" --check; then
            continue  # formatted already (it says so)
        fi
        ${python} -m dispatch.bin.format_data "${_fmt[@]}" --prepare
        _nj=$(min "${nj}" "$(grep -c . "data/${dset}/wav.scp")")
        ${decode_cmd} JOB=1:"${_nj}" "${data_feats}/${dset}/log/format.JOB.log" \
            ${python} -m dispatch.bin.format_data "${_fmt[@]}" --num_parts "${_nj}" --part JOB
        ${python} -m dispatch.bin.format_data "${_fmt[@]}" --merge
    done
fi

if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
    log "Stage 3: statistics: shape files in ${stats_dir}"
    for pair in "train:${train_set}" "valid:${valid_set}"; do
        _dir=${stats_dir}/${pair%%:*}; _src=${data_feats}/${pair#*:}/utt2num_samples
        mkdir -p "${_dir}"
        for _name in speech_mix_shape speech_ref1_shape; do
            cp "${_src}" "${_dir}/${_name}.tmp" && mv "${_dir}/${_name}.tmp" "${_dir}/${_name}"
        done
    done
fi

if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ]; then
    if [ -n "${teacher_model}" ]; then
        log "Stage 4: using the given teacher ${teacher_model} (built and its weights loaded, as a check)"
        ${python} -m dispatch.bin.resolve_teacher "${teacher_model}" --check --fs "${fs}" >/dev/null
    else
        log "Stage 4: teacher training: ${teacher_config} -> ${teacher_exp}"
        # shellcheck disable=SC2086
        train "${teacher_exp}" "${teacher_config}" ${teacher_args}
    fi
fi

if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ] && [ "${skip_baseline}" != true ]; then
    log "Stage 5: baseline student training (no KD): ${student_config} -> ${student_exp}"
    # shellcheck disable=SC2086
    train "${student_exp}" "${student_config}" ${student_args}
fi

# Stage 10 runs before stage 6, which reads its output; resuming makes a repeated call cheap.
# A cached output was computed from the whole utterance; an online teacher sees only the training chunk.
if [ "${use_teacher_cache}" = true ] && { in_range 6 || in_range 10; }; then
    _cache_base=$(out_dir "${teacher_exp}")
    for dset in ${train_set} ${valid_set}; do
        log "Stage 10: teacher outputs of ${dset} -> ${data_feats}/${dset}/teacher_ref1.scp"
        mkdir -p "${_cache_base}/teacher_cache/log"
        ${_inf_cmd} --gpu "${_inf_ngpu}" "${_cache_base}/teacher_cache/log/${dset}.log" \
            ${python} -m dispatch.bin.cache_teacher --teacher_model "${teacher_exp}" \
                --data_dir "${data_feats}/${dset}" --output_dir "${_cache_base}/teacher_cache/${dset}" \
                --nj "${inference_nj}" --ngpu "${_inf_ngpu}"
    done
fi

if [ "${stage}" -le 6 ] && [ "${stop_stage}" -ge 6 ]; then
    if [ "${use_teacher_cache}" = true ]; then
        _teacher_opts=(--train_data_path_and_name_and_type "${data_feats}/${train_set}/teacher_ref1.scp,teacher_ref1,sound"
                       --valid_data_path_and_name_and_type "${data_feats}/${valid_set}/teacher_ref1.scp,teacher_ref1,sound")
    else
        _teacher_opts=(--teacher_model "${teacher_exp}")
    fi
    _i=0
    for kd_config in ${kd_configs}; do
        _dir=${kd_exps[_i]}; _i=$((_i + 1))
        log "Stage 6: KD student training: ${student_config} + ${kd_config} -> ${_dir}"
        check_kd_teacher 6 "${_dir}"
        mkdir -p "${_dir}"
        if [ ! -f "${_dir}/.teacher.json" ]; then
            kd_teacher_inputs
            ${python} -m dispatch.fingerprint write "${_dir}/.teacher.json" "${_tfp[@]}"
        fi
        ${python} -m dispatch.bin.merge_configs "${_dir}/train_config.yaml" "${student_config}" "${kd_config}"
        # shellcheck disable=SC2086
        train "${_dir}" "${_dir}/train_config.yaml" "${_teacher_opts[@]}" ${student_args}
    done
fi

if [ "${stage}" -le 7 ] && [ "${stop_stage}" -ge 7 ]; then
    for entry in "${models[@]}"; do check_kd_teacher 7 "${entry#*=}"; done  # before any work
    for entry in "${models[@]}"; do
        name=${entry%%=*}; dir=${entry#*=}
        model_files "${dir}"
        for dset in ${test_sets}; do
            _out=$(out_dir "${dir}")/enhanced_${dset}
            enh_inputs "${dset}"
            if [ -f "${_out}/spk1.scp" ]; then
                if _why=$(${python} -m dispatch.fingerprint check "${_out}/.inputs.json" "${_fp[@]}"); then
                    log "Stage 7: ${name} on ${dset}: done already (${_out}/spk1.scp)"; continue
                fi
                case "${_why}" in
                    "no record"*) log "Stage 7: ${name} on ${dset}: redoing, ${_why}" ;;
                    *) log "Stage 7: ${name} on ${dset}: redoing, the inputs changed: ${_why}" ;;
                esac
            fi
            rm -rf "${_out}"  # old or partial outputs and their scores: nothing from other inputs is kept
            log "Stage 7: enhancing ${dset} with ${name} (${_model}) -> ${_out}"
            _logdir=${_out}/logdir; mkdir -p "${_logdir}"
            _nj=$(min "${inference_nj}" "$(wc -l < "${data_feats}/${dset}/wav.scp")")
            awk -v n="${_nj}" -v d="${_logdir}" '{ print > (d "/keys." ((NR - 1) % n + 1) ".scp") }' \
                "${data_feats}/${dset}/wav.scp"
            _opts=""; [ -n "${inference_config}" ] && _opts="--inference_config ${inference_config}"
            # shellcheck disable=SC2086
            ${_inf_cmd} --gpu "${_inf_ngpu}" JOB=1:"${_nj}" "${_logdir}/enh_inference.JOB.log" \
                ${python} -m espnet2.bin.enh_inference \
                    --ngpu "${_inf_ngpu}" --fs "${fs}" --normalize_output_wav true \
                    --data_path_and_name_and_type "${data_feats}/${dset}/wav.scp,speech_mix,sound" \
                    --key_file "${_logdir}/keys.JOB.scp" \
                    --train_config "${_config}" --model_file "${_model}" \
                    --output_dir "${_logdir}/output.JOB" ${_opts} ${inference_args}
            for i in $(seq "${_nj}"); do cat "${_logdir}/output.${i}/spk1.scp"; done | sort > "${_out}/spk1.scp.tmp"
            ${python} -m dispatch.fingerprint write "${_out}/.inputs.json" "${_fp[@]}"
            mv "${_out}/spk1.scp.tmp" "${_out}/spk1.scp"
        done
    done
fi

if [ "${stage}" -le 8 ] && [ "${stop_stage}" -ge 8 ]; then
    check_enhanced 8
    _metrics=""; [ -n "${score_metrics}" ] && _metrics="--metrics ${score_metrics}"
    # score <test set> <estimates scp> <output dir>: ${decode_cmd} JOB=1:N jobs (on the cluster's nodes with
    # slurm.pl), one share of the utterances each (<output dir>/partial_scores.JOB.jsonl, reused when a
    # killed run is redone), then the merge here writes the score files and summary.json.
    score() {
        local _args _n
        # shellcheck disable=SC2206
        _args=(--ref_scp "${data_feats}/$1/spk1.scp" --inf_scp "$2" --output_dir "$3" ${_metrics})
        if ${python} -m dispatch.bin.enh_score "${_args[@]}" --check; then
            return 0  # complete for these arguments (it says so)
        fi
        _n=$(min "${nj}" "$(grep -c . "$2")")
        ${decode_cmd} JOB=1:"${_n}" "$3/log/score.JOB.log" \
            ${python} -m dispatch.bin.enh_score "${_args[@]}" --num_parts "${_n}" --part JOB
        ${python} -m dispatch.bin.enh_score "${_args[@]}" --merge --log_level WARNING
    }
    for dset in ${test_sets}; do
        log "Stage 8: scoring the unprocessed input of ${dset}"
        score "${dset}" "${data_feats}/${dset}/wav.scp" "${noisy_dir}/enhanced_${dset}/scoring"
    done
    for entry in "${models[@]}"; do
        name=${entry%%=*}; dir=$(out_dir "${entry#*=}")
        for dset in ${test_sets}; do
            log "Stage 8: scoring ${name} on ${dset}"
            score "${dset}" "${dir}/enhanced_${dset}/spk1.scp" "${dir}/enhanced_${dset}/scoring"
        done
    done
fi

if [ "${stage}" -le 9 ] && [ "${stop_stage}" -ge 9 ]; then
    log "Stage 9: results table and pictures -> ${results_md}, ${expdir}/results/images"
    check_enhanced 9  # every row comes from the models and test audio configured now ...
    for entry in "noisy=${noisy_dir}" "${models[@]}"; do  # ... and has its scores
        _dir=${entry#*=}; [ "${entry%%=*}" = noisy ] || _dir=$(out_dir "${_dir}")
        for dset in ${test_sets}; do
            _f=${_dir}/enhanced_${dset}/scoring/summary.json
            [ -f "${_f}" ] || { log "Error: stage 9 needs the scores of ${entry%%=*} on ${dset} (${_f}): run stage 8 first (--stage 8)"; exit 1; }
        done
    done
    if [ -z "${rank_metric}" ]; then  # PESQ_WB if it was scored, else the first metric scored
        rank_metric=$(${python} -c 'import json, sys; m = list(json.load(open(sys.argv[1]))["enhanced"]); print("PESQ_WB" if "PESQ_WB" in m else m[0])' \
            "${noisy_dir}/enhanced_${test_sets%% *}/scoring/summary.json")
    fi
    _models=(); for entry in "${models[@]}"; do _models+=("${entry%%=*}=$(out_dir "${entry#*=}")"); done
    _baseline=baseline; [ "${skip_baseline}" = true ] && _baseline=""
    # Tables of run_ablation.sh (seeded grids) become part of RESULTS.md.
    _include=(); for _f in RESULTS_ablation_*.md; do [ -f "${_f}" ] && _include+=(--include "${_f}"); done
    # shellcheck disable=SC2086
    ${python} -m dispatch.bin.make_results --output "${results_md}" --test_sets "${test_sets}" \
        --noisy "${noisy_dir}" --baseline "${_baseline}" --command "${run_args}" \
        --fs "${fs}" --data_dir "${data_feats}" --images_dir "${expdir}/results/images" \
        --report "${expdir}/report/index.html" --rank_metric "${rank_metric}" "${_include[@]}" ${results_args} "${_models[@]}"
    _set=${test_sets%% *}
    log "Stage 9: listening page -> ${expdir}/report/index.html (test set ${_set})"
    ${python} -m dispatch.bin.make_report --output_dir "${expdir}/report" --results_md "${results_md}" \
        --test_set "${_set}" --data_dir "${data_feats}/${_set}" \
        --noisy_scoring "${noisy_dir}/enhanced_${_set}/scoring" \
        --baseline "${_baseline}" --teacher teacher --utts "${report_utts}" --rank_metric "${rank_metric}" \
        --ablation_root "${ablation_root}" "${_models[@]}"
fi

if [ "${stage}" -le 11 ] && [ "${stop_stage}" -ge 11 ]; then
    for entry in "${models[@]}"; do
        name=${entry%%=*}; dir=${entry#*=}
        if [ ! -d "${dir}" ]; then log "Stage 11: ${name} was given packed (${dir}): not repacked"; continue; fi
        _zip=${dir}/packed_${name}.zip
        # The zip holds the weights, the config and RESULTS.md: repacked when one of them changed.
        _fp=(--file "model=${dir}/${inference_model}" --file "train_config=${dir}/config.yaml")
        [ -f "${results_md}" ] && _fp+=(--file "results=${results_md}")
        if [ -f "${_zip}" ]; then
            if _why=$(${python} -m dispatch.fingerprint check "${_zip}.inputs.json" "${_fp[@]}"); then
                log "Stage 11: ${_zip} exists"; continue
            fi
            log "Stage 11: repacking ${name}, the inputs changed: ${_why}"
        fi
        log "Stage 11: packing ${name} -> ${_zip}"
        _opts=(); [ -f "${results_md}" ] && _opts+=(--option "${results_md}")
        # The model card compares the model's test scores with the noisy input's, the teacher's and the baseline's.
        _opts+=(--name "${name}" --test_sets "${test_sets}" --command "${run_args}" --fs "${fs}"
                --compare "noisy=${noisy_dir}" --compare "teacher=$(out_dir "${teacher_exp}")")
        [ "${skip_baseline}" = true ] || _opts+=(--compare "baseline=${student_exp}")
        ${python} -m dispatch.bin.pack_student --exp_dir "${dir}" --model_file "${inference_model}" \
            --outpath "${_zip}" "${_opts[@]}"
        ${python} -m dispatch.fingerprint write "${_zip}.inputs.json" "${_fp[@]}"
    done
fi

if [ "${stage}" -le 12 ] && [ "${stop_stage}" -ge 12 ]; then
    # Each model as stage 11 packed it (one given packed: as given) -> <outputs>/onnx/model.onnx + export.json;
    # redone when its weights, config, the test audio or the options changed. One process exports them all.
    _export=(); _rows=(); _stamps=()
    for entry in "${models[@]}"; do
        name=${entry%%=*}; dir=${entry#*=}; _out=$(out_dir "${dir}")
        _rows+=("${name}=${_out}")
        if [ -d "${dir}" ]; then
            _src=${dir}/packed_${name}.zip
            [ -f "${_src}" ] || { log "Error: stage 12 needs ${_src}: run stage 11 first (--stage 11)"; exit 1; }
            _fp=(--file "model=${dir}/${inference_model}" --file "train_config=${dir}/config.yaml")
        else
            _src=${dir}; _fp=(--value "model=${dir}"); [ -f "${dir}" ] && _fp=(--file "model=${dir}")
        fi
        _fp+=(--value "export_args=${export_args}")
        for dset in ${test_sets}; do _fp+=(--audio "${dset}=${data_feats}/${dset}/wav.scp"); done
        if ${python} -m dispatch.fingerprint check "${_out}/onnx/.inputs.json" "${_fp[@]}" >/dev/null; then
            log "Stage 12: ${name}: exported already (${_out}/onnx/export.json)"; continue
        fi
        _export+=(--name "${name}" --model "${_src}" --output_dir "${_out}")
        _stamps+=("${_out}/onnx/.inputs.json $(printf '%q ' "${_fp[@]}")")
    done
    if [ ${#_export[@]} -gt 0 ]; then
        _sets=(); for dset in ${test_sets}; do _sets+=(--data_dir "${data_feats}/${dset}"); done
        _log=${expdir}/export_onnx.log
        log "Stage 12: ONNX export and checks (log: ${_log})"
        # shellcheck disable=SC2086
        if ! ${python} -m dispatch.bin.export_onnx "${_sets[@]}" --command "${run_args}" ${export_args} \
                "${_export[@]}" > "${_log}" 2>&1; then
            grep "^export_onnx:" "${_log}" || tail -n 5 "${_log}"
            log "Error: stage 12 failed (${_log})"; exit 1
        fi
        grep "^export_onnx:" "${_log}" || true  # one line per model
        for _stamp in "${_stamps[@]}"; do eval "${python} -m dispatch.fingerprint write ${_stamp}"; done
    fi
    if [ -f "${results_md}" ]; then
        log "Stage 12: Deployment table -> ${results_md}"
        ${python} -m dispatch.export.report "${results_md}" "${_rows[@]}"
    fi
fi

if [ "${stage}" -le 13 ] && [ "${stop_stage}" -ge 13 ]; then
    if [ -z "${hf_repo_prefix}" ]; then
        log "Stage 13: skipped (give --hf_repo_prefix user/name to upload each packed model to the Hugging Face hub)"
    else
        for entry in "${models[@]}"; do
            name=${entry%%=*}; dir=${entry#*=}
            [ -f "${dir}/packed_${name}.zip" ] || continue
            log "Stage 13: uploading ${dir}/packed_${name}.zip -> ${hf_repo_prefix}_${name}"
            ${python} -m dispatch.bin.upload_hf --zip "${dir}/packed_${name}.zip" \
                --repo "${hf_repo_prefix}_${name}" --results "${results_md}" --export_dir "$(out_dir "${dir}")"
        done
    fi
fi

log "Successfully finished. [elapsed=${SECONDS}s]"
