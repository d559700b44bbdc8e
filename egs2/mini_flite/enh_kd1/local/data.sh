#!/usr/bin/env bash
# Build the mini corpus (flite and espeak-ng speech + generated noise) into data/{train,valid,test}
# and check them.
# Audio goes to ${audio_dir}. Rerunning with the same options does nothing; see
# `python3 -m dispatch.corpora.mini_corpus --help` for what the corpus is made of.
set -euo pipefail

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

nj=2              # concurrent synthesis processes
size=default      # set sizes train/valid/test: default 800/50/100, evidence 6000/300/600, small 24/6/8
small=false       # same as --size small (CI)
num_train=        # utterances per set; empty: from --size
num_valid=
num_test=
fs=16000          # sampling rate of the written audio (Hz)
seed=0
train_snrs=0,5,10,15         # SNRs (dB) of train and valid mixtures, as in VoiceBank+DEMAND
test_snrs=2.5,7.5,12.5,17.5  # SNRs (dB) of test mixtures
audio_dir=data/local/mini_flite
corpus_opts=      # more options for dispatch.corpora.mini_corpus, e.g. "--flite_share 1 --max_noises 1"

help_message="Usage: $0 [--nj 2] [--size default|evidence|small] [--num_train N] [--num_valid N]
         [--num_test N] [--fs 16000] [--seed 0] [--train_snrs 0,5,10,15] [--test_snrs 2.5,7.5,12.5,17.5]
         [--audio_dir DIR] [--corpus_opts '...']
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

case "${size}" in
    default|evidence|small) ;;
    *) echo "$0: --size: expected default, evidence or small, got '${size}'" >&2; exit 1 ;;
esac
[ "${small}" = true ] && size=small
opts=(--data_dir data --audio_dir "${audio_dir}" --nj "${nj}" --fs "${fs}" --seed "${seed}" --size "${size}")
opts+=(--train_snrs "${train_snrs}" --test_snrs "${test_snrs}")
[ -n "${num_train}" ] && opts+=(--num_train "${num_train}")
[ -n "${num_valid}" ] && opts+=(--num_valid "${num_valid}")
[ -n "${num_test}" ] && opts+=(--num_test "${num_test}")
# shellcheck disable=SC2086  # corpus_opts is a list of options: split it
python3 -m dispatch.corpora.mini_corpus "${opts[@]}" ${corpus_opts}

for dset in train valid test; do
    python3 -m dispatch.bin.validate_data_dir "data/${dset}" --fs "${fs}"
done
log "Successfully finished. [elapsed=${SECONDS}s]"
