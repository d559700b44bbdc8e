#!/usr/bin/env bash
# VoiceBank+DEMAND (28 speakers, 48 kHz) -> data/{tr_26spk,cv_2spk,tt_2spk} at --fs.
# Downloads the four archives into ${VOICEBANK_DEMAND} unless it already holds them or their folders;
# the rest (checking, unpacking, resampling, data dirs) is python -m dispatch.corpora.voicebank.
set -euo pipefail

log() {
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${BASH_SOURCE[1]##*/}:${BASH_LINENO[0]}) $*"
}

fs=16000
data_dir=data
wav_dir=
download=true
base_url=https://datashare.ed.ac.uk/bitstream/handle/10283/2791
nj=4
strict_counts=true

help_message=$(cat << EOF
Usage: $0 [options]
Prepares VoiceBank+DEMAND (https://datashare.ed.ac.uk/handle/10283/2791) as Kaldi-style data dirs
tr_26spk (26 training speakers), cv_2spk (training speakers p226, p287) and tt_2spk (824 test utts).
The corpus root is \${VOICEBANK_DEMAND} (db.sh or environment; default downloads/voicebank_demand); it
holds the folders or .zip archives clean_trainset_28spk_wav, noisy_trainset_28spk_wav, clean_testset_wav,
noisy_testset_wav.
Options (default):
  --fs HZ              sampling rate of the data dirs; other rates are written as copies (${fs})
  --data_dir DIR       where the data dirs are written (${data_dir})
  --wav_dir DIR        resampled copies (<data_dir>/local/voicebank_demand_<fs>)
  --download BOOL      download missing archives (a few GB) with wget or curl (${download})
  --base_url URL       where the archives are (Edinburgh DataShare)
  --nj N               parallel processes for resampling (${nj})
  --strict_counts BOOL require 11572 training and 824 test utterances (${strict_counts})
EOF
)

# shellcheck disable=SC1091
[ -f ./path.sh ] && . ./path.sh
# shellcheck disable=SC1091
[ -f ./db.sh ] && . ./db.sh
. utils/parse_options.sh

if [ $# -ne 0 ]; then
    echo "${help_message}" 1>&2
    exit 1
fi

root=${VOICEBANK_DEMAND:-downloads/voicebank_demand}
wav_dir=${wav_dir:-${data_dir}/local/voicebank_demand_${fs}}
folders="clean_trainset_28spk_wav noisy_trainset_28spk_wav clean_testset_wav noisy_testset_wav"

fetch() {  # fetch URL FILE: resumable download
    if command -v wget > /dev/null; then
        wget --tries=3 --timeout=60 --continue -O "$2" "$1"
    else
        curl --fail --location --retry 3 --connect-timeout 60 --continue-at - -o "$2" "$1"
    fi
}

missing=()
for name in ${folders}; do
    [ -d "${root}/${name}" ] || [ -f "${root}/${name}.zip" ] || missing+=("${name}")
done
if [ ${#missing[@]} -gt 0 ]; then
    if ! "${download}"; then
        log "ERROR: ${root} (VOICEBANK_DEMAND) lacks ${missing[*]} (neither folder nor .zip), and --download is false."
        log "Expected the VoiceBank+DEMAND folders or archives ${folders// /, } in it."
        exit 1
    fi
    mkdir -p "${root}"
    for name in "${missing[@]}"; do
        url=${base_url}/${name}.zip
        log "Downloading ${url} into ${root}/"
        if ! fetch "${url}" "${root}/${name}.zip.part"; then
            log "ERROR: could not download ${url} into ${root}/${name}.zip.part (rerun to resume)."
            log "Without network, download the archives elsewhere and put them (or their folders) in ${root}/."
            exit 1
        fi
        mv "${root}/${name}.zip.part" "${root}/${name}.zip"
    done
fi

log "Preparing data dirs in ${data_dir} from ${root}"
python -m dispatch.corpora.voicebank --root "${root}" --data_dir "${data_dir}" --wav_dir "${wav_dir}" \
    --fs "${fs}" --nj "${nj}" --strict_counts "${strict_counts}"
log "Successfully finished. [elapsed=${SECONDS}s]"
