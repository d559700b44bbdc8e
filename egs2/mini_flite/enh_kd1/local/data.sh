#!/usr/bin/env bash
# Build the mini corpus (flite speech + generated noise) into data/{train,valid,test} and check them.
# Audio goes to ${audio_dir}. Rerunning with the same options does nothing; see
# `python3 -m dispatch.data.mini_corpus --help` for what the corpus is made of.
set -euo pipefail

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

nj=2              # concurrent flite processes
num_train=        # utterances per set; empty: the module's default (400/50/60, or 24/6/8 with --small true)
num_valid=
num_test=
small=false       # CI-size defaults for the sets not given by --num_*
fs=16000          # sampling rate of the written audio (Hz)
seed=0
snr_low=-5        # SNR range of the mixtures (dB)
snr_high=5
audio_dir=data/local/mini_flite
corpus_opts=      # more options for dispatch.data.mini_corpus, e.g. "--voices slt,rms --max-noises 1"

help_message="Usage: $0 [--nj 2] [--num_train N] [--num_valid N] [--num_test N] [--small true|false]
         [--fs 16000] [--seed 0] [--snr_low -5] [--snr_high 5] [--audio_dir DIR] [--corpus_opts '...']
Run from the recipe folder (egs2/mini_flite/enh_kd1)."

if [ ! -f utils/parse_options.sh ]; then
    echo "$0: utils/parse_options.sh not found: run this from the recipe folder (egs2/mini_flite/enh_kd1)" >&2
    exit 1
fi
log "$0 $*"
. utils/parse_options.sh
if [ $# -ne 0 ]; then
    echo "$0: unexpected arguments: $*" >&2
    echo "${help_message}" >&2
    exit 1
fi
. ./path.sh

opts=(--data-dir data --audio-dir "${audio_dir}" --nj "${nj}" --fs "${fs}" --seed "${seed}")
opts+=(--snr-range "${snr_low}" "${snr_high}")
[ "${small}" = true ] && opts+=(--small)
[ -n "${num_train}" ] && opts+=(--num-train "${num_train}")
[ -n "${num_valid}" ] && opts+=(--num-valid "${num_valid}")
[ -n "${num_test}" ] && opts+=(--num-test "${num_test}")
# shellcheck disable=SC2086  # corpus_opts is a list of options: split it
python3 -m dispatch.data.mini_corpus "${opts[@]}" ${corpus_opts}

for dset in train valid test; do
    python3 -m dispatch.bin.validate_data_dir "data/${dset}" --fs "${fs}"
done
log "Successfully finished. [elapsed=${SECONDS}s]"
