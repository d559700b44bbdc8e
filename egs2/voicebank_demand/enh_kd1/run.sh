#!/usr/bin/env bash
# VoiceBank+DEMAND (28 speakers): Conv-TasNet teacher -> compact students with KD, as in the DISPatch paper.
# Swap the student with --student_config conf/tuning/train_enh_dccrn_cl_small.yaml.
set -euo pipefail

./enh_kd.sh \
    --fs 16k \
    --ngpu 1 \
    --train_set tr_26spk \
    --valid_set cv_2spk \
    --test_sets "tt_2spk" \
    --inference_model valid.si_snr_loss.best.pth \
    --teacher_config conf/train_teacher.yaml \
    --student_config conf/train_student.yaml \
    --kd_configs "conf/kd/kd_l2.yaml conf/kd/kd_dispatch_l2.yaml conf/kd/kd_dispatch_l2_mssp.yaml conf/kd/kd_dfkd.yaml conf/kd/kd_dfkd_dispatch_mssp.yaml" \
    "$@"
