#!/usr/bin/env bash
# Mini recipe: a corpus synthesized on this machine (flite and espeak-ng voices + generated noises in
# VoiceBank+DEMAND's SNR regime), every stage of enh_kd.sh from data to RESULTS.md in minutes on 2 CPU
# cores (README.md: what the corpus is, calibration runs, the evidence commands).
#   ./run.sh                        # the shipped teacher (pretrained/), baseline and KD students
#   ./run.sh --retrain_teacher true # stage 4 trains the teacher with conf/train_teacher.yaml instead
#   ./run.sh --corpus evidence      # the evidence size: 6000 training utterances (default: 800)
#   ./run.sh --ci true              # the smaller version CI runs
# KD students read the teacher's outputs cached once by stage 10 (--use_teacher_cache false: online).
# Any enh_kd.sh option can follow (e.g. `./run.sh --stage 6 --kd_configs "conf/kd/kd_si_snr.yaml"`).
set -euo pipefail

ci=false
retrain_teacher=false
corpus=default
while [ $# -gt 0 ]; do
    case "$1" in
        --ci) ci=$2; shift 2 ;;
        --retrain_teacher) retrain_teacher=$2; shift 2 ;;
        --corpus) corpus=$2; shift 2 ;;
        *) break ;;
    esac
done

# Trained here with conf/train_teacher.yaml on the default corpus (seed 0); see pretrained/README.md.
teacher_model=pretrained/teacher_blstm.zip
[ "${retrain_teacher}" = true ] && teacher_model=""

kd_configs="conf/kd/kd_l2.yaml conf/kd/kd_dispatch_l2.yaml conf/kd/kd_dfkd_dispatch_mssp.yaml"
case "${corpus}" in
    default|evidence) ;;
    *) echo "$0: --corpus: expected default or evidence, got '${corpus}'" >&2; exit 1 ;;
esac
local_data_opts="--nj 2 --size ${corpus}"
train_args=""
if [ "${ci}" = true ]; then
    local_data_opts="--nj 2 --size small"
    train_args="--max_epoch 2 --num_iters_per_epoch 10"
fi

./enh_kd.sh \
    --fs 16k \
    --ngpu 0 \
    --nj 2 \
    --inference_nj 2 \
    --train_set train \
    --valid_set valid \
    --test_sets "test" \
    --inference_model valid.si_snr_loss.best.pth \
    --score_metrics pesq_wb,stoi,estoi,si_sdr,sdr,csig,cbak,covl \
    --local_data_opts "${local_data_opts}" \
    --teacher_config conf/train_teacher.yaml \
    --teacher_model "${teacher_model}" \
    --use_teacher_cache true \
    --student_config conf/train_student.yaml \
    --kd_configs "${kd_configs}" \
    --teacher_args "${train_args}" \
    --student_args "${train_args}" \
    "$@"
