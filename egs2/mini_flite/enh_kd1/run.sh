#!/usr/bin/env bash
# Mini recipe: a corpus synthesized on this machine (flite voices + generated noises), every stage of
# enh_kd.sh from data to RESULTS.md in minutes on 2 CPU cores. `./run.sh --ci true` is the smaller
# version CI runs; any enh_kd.sh option can follow (e.g. `./run.sh --stage 6 --kd_configs "..."`).
set -euo pipefail

ci=false
if [ "${1:-}" = "--ci" ]; then ci=$2; shift 2; fi

kd_configs="conf/kd/kd_l2.yaml conf/kd/kd_dispatch_l2.yaml conf/kd/kd_dfkd_dispatch_mssp.yaml"
local_data_opts="--nj 2"
train_args=""
if [ "${ci}" = true ]; then
    local_data_opts="--nj 2 --small true"
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
    --local_data_opts "${local_data_opts}" \
    --teacher_config conf/train_teacher.yaml \
    --student_config conf/train_student.yaml \
    --kd_configs "${kd_configs}" \
    --teacher_args "${train_args}" \
    --student_args "${train_args}" \
    "$@"
