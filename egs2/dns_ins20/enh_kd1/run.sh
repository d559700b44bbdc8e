#!/usr/bin/env bash
# DNS Challenge 2020 (Interspeech): synthesized training mixtures, synthetic no_reverb/with_reverb tests.
# The model configs are the VoiceBank+DEMAND ones (conf/tuning links there); swap students as there.
set -euo pipefail

./enh_kd.sh \
    --fs 16k \
    --ngpu 1 \
    --train_set tr_synthetic \
    --valid_set cv_synthetic \
    --test_sets "tt_synthetic_no_reverb tt_synthetic_with_reverb" \
    --local_data_opts "--total_hours 100" \
    --inference_model valid.si_snr_loss.best.pth \
    --teacher_config conf/train_teacher.yaml \
    --student_config conf/train_student.yaml \
    --kd_configs "conf/kd/kd_l2.yaml conf/kd/kd_dispatch_l2.yaml conf/kd/kd_dispatch_l2_mssp.yaml conf/kd/kd_dfkd.yaml conf/kd/kd_dfkd_dispatch_mssp.yaml" \
    "$@"
