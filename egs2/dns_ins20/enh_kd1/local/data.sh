#!/usr/bin/env bash
# DNS Challenge (Interspeech 2020) -> data/{tr,cv}_synthetic, data/tt_synthetic_{no,with}_reverb.
# Clones the challenge repository into ${DNS2020} if it is absent; synthesis and data dirs are
# python -m dispatch.corpora.dns.
set -euo pipefail

log() {
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${BASH_SOURCE[1]##*/}:${BASH_LINENO[0]}) $*"
}

stage=1
stop_stage=2
fs=16000
total_hours=100
seed=0
synth_opts=
data_dir=data
wav_dir=
clone=true
repo_url=https://github.com/microsoft/DNS-Challenge.git
nj=4
strict_counts=true

help_message=$(cat << EOF
Usage: $0 [options]
Stage 1 synthesizes training mixtures from the clean and noise clips of the DNS Challenge
(interspeech2020/master), with the challenge's synthesizer settings and a seed; stage 2 writes the data
dirs tr_synthetic / cv_synthetic (90/10 split) and tt_synthetic_no_reverb / tt_synthetic_with_reverb.
The challenge checkout is \${DNS2020} (db.sh or environment; default downloads/DNS-Challenge).
Options (default):
  --stage N --stop_stage N   1: synthesis, 2: data dirs (${stage}, ${stop_stage})
  --fs HZ              sampling rate of the mixtures and data dirs (${fs})
  --total_hours H      hours of 30 s training mixtures; 100 h take about 35 GB at 16 kHz (${total_hours})
  --seed N             mixture N is drawn from the generator seeded by (seed, N) (${seed})
  --synth_opts "..."   more options of 'python -m dispatch.corpora.dns synthesize' (see its --help),
                       e.g. "--snr_lower -5 --snr_upper 25"
  --data_dir DIR       where the data dirs are written (${data_dir})
  --wav_dir DIR        mixtures and converted test files (<data_dir>/dns_wav)
  --clone BOOL         clone the challenge repository if absent; needs git-lfs, about 90 GB (${clone})
  --repo_url URL       repository to clone (${repo_url})
  --nj N               parallel processes (${nj})
  --strict_counts BOOL require every mixture asked for and 150 files per test condition (${strict_counts})
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

root=${DNS2020:-downloads/DNS-Challenge}
wav_dir=${wav_dir:-${data_dir}/dns_wav}

if [ ! -d "${root}" ]; then
    if ! "${clone}"; then
        log "ERROR: ${root} (DNS2020) does not exist, and --clone is false."
        log "Expected a checkout of ${repo_url} (branch interspeech2020/master, Git LFS audio pulled)."
        exit 1
    fi
    if ! git lfs version > /dev/null 2>&1; then
        log "ERROR: ${root} does not exist, and cloning it needs git-lfs (the audio is stored in Git LFS)."
        exit 1
    fi
    # Clone beside the target and rename when complete; a rerun resumes the LFS download.
    partial=${root%/}.partial
    if [ ! -d "${partial}/.git" ]; then
        log "Cloning ${repo_url} (interspeech2020/master) into ${partial}"
        if ! GIT_LFS_SKIP_SMUDGE=1 git clone --depth 1 --branch interspeech2020/master "${repo_url}" "${partial}"; then
            log "ERROR: could not clone ${repo_url} into ${partial}."
            log "Without network, clone it elsewhere and point DNS2020 at it (expected: ${root})."
            exit 1
        fi
    fi
    log "Fetching the Git LFS audio of ${partial} (about 90 GB)"
    if ! git -C "${partial}" lfs pull; then
        log "ERROR: git lfs pull failed in ${partial}; rerun to resume."
        exit 1
    fi
    mv "${partial}" "${root}"
fi

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
    log "Stage 1: synthesizing ${total_hours} h of training mixtures into ${wav_dir}"
    # shellcheck disable=SC2086
    python -m dispatch.corpora.dns synthesize --root "${root}" --wav_dir "${wav_dir}" --nj "${nj}" \
        --fs "${fs}" --total_hours "${total_hours}" --seed "${seed}" ${synth_opts}
fi

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
    log "Stage 2: data dirs in ${data_dir}"
    python -m dispatch.corpora.dns prepare --root "${root}" --wav_dir "${wav_dir}" --nj "${nj}" \
        --data_dir "${data_dir}" --fs "${fs}" --strict_counts "${strict_counts}"
fi
log "Successfully finished. [elapsed=${SECONDS}s]"
