#!/usr/bin/env python3
"""Train an espnet2 enhancement student with knowledge distillation.

Takes every option of ``python -m espnet2.bin.enh_train`` plus the KD options of
:class:`dispatch.task.EnhancementKDTask` (teacher_model, kd_loss, kd_loss_conf, kd_weight, task_weight, fs).

    python -m dispatch.bin.enh_kd_train --config exp/kd/train_config.yaml \\
        --teacher_model exp/enh_teacher --output_dir exp/enh_kd ...
"""
from dispatch.task import EnhancementKDTask


def get_parser():
    return EnhancementKDTask.get_parser()


def main(cmd=None):
    EnhancementKDTask.main(cmd=cmd)


if __name__ == "__main__":
    main()
