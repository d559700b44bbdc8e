"""EnhancementKDTask: espnet2's EnhancementTask plus a teacher and a KD loss.

Every enh_train option keeps its meaning. Added options (yaml keys):

- ``teacher_model``: experiment dir, packed zip or espnet_model_zoo name of the frozen teacher
  (``teacher_config`` / ``teacher_model_file`` override what is found there);
- ``kd_loss`` / ``kd_loss_conf``: KD loss by registry name (dispatch, dfkd, si_snr) and its options,
  the way espnet2 picks encoders and separators; without ``kd_loss`` this trains a plain student;
- ``kd_weight``, ``task_weight``: total loss = task_weight * student's criterions + kd_weight * KD;
- ``fs``: sampling rate of the data, checked against the teacher's and given to the KD loss.

KD is not expressed as an espnet2 ``criterions`` entry on purpose: criteria only see (reference,
estimate), and the student's config.yaml must rebuild with plain espnet2, which knows no KD criterion.
"""
from __future__ import annotations

import argparse
import inspect
import logging

from espnet2.tasks.enh import EnhancementTask
from espnet2.train.class_choices import ClassChoices
from espnet2.utils.types import int_or_none, str_or_none
import torch

from dispatch.checkpoint import atomic_torch_save, restore_epoch_snapshot
from dispatch.losses import KD_LOSSES
from dispatch.model import TEACHER_STREAM, ESPnetEnhancementKDModel
from dispatch.teacher import TeacherError, load_teacher, resolve_teacher, teacher_sample_rate

# Config keys this task adds to espnet2's; pack_student drops them from the packed student.
KD_CONFIG_KEYS = ("teacher_model", "teacher_config", "teacher_model_file", "kd_loss", "kd_loss_conf",
                  "kd_weight", "task_weight")

kd_loss_choices = ClassChoices(
    "kd_loss", classes=KD_LOSSES, type_check=torch.nn.Module, default=None, optional=True
)


class EnhancementKDTask(EnhancementTask):
    class_choices_list = EnhancementTask.class_choices_list + [kd_loss_choices]

    @classmethod
    def add_task_arguments(cls, parser: argparse.ArgumentParser):
        super().add_task_arguments(parser)
        group = parser.add_argument_group(description="Knowledge distillation")
        group.add_argument("--teacher_model", type=str_or_none, default=None,
                           help="Teacher: espnet2 enh experiment dir, packed zip, or espnet_model_zoo name")
        group.add_argument("--teacher_config", type=str_or_none, default=None,
                           help="Teacher config.yaml (overrides the one found via --teacher_model)")
        group.add_argument("--teacher_model_file", type=str_or_none, default=None,
                           help="Teacher weights (overrides the one found via --teacher_model)")
        group.add_argument("--kd_weight", type=float, default=1.0, help="Weight of the KD loss")
        group.add_argument("--task_weight", type=float, default=1.0, help="Weight of the student's own loss")
        group.add_argument("--fs", type=int_or_none, default=None,
                           help="Sampling rate of the data; checked against the teacher's")

    @classmethod
    def main_worker(cls, args: argparse.Namespace):
        # Kill-safe training: atomic checkpoint writes, and a lost epoch snapshot restored on resume.
        if args.resume and args.output_dir:
            restore_epoch_snapshot(args.output_dir)
        with atomic_torch_save():
            super().main_worker(args)

    @classmethod
    def optional_data_names(cls, train: bool = True, inference: bool = False):
        return super().optional_data_names(train, inference) + (TEACHER_STREAM,)

    @classmethod
    def build_model(cls, args: argparse.Namespace):
        student = super().build_model(args)
        kd_name = getattr(args, "kd_loss", None)
        if kd_name is None:
            return student
        kd_conf = dict(getattr(args, "kd_loss_conf", None) or {})
        kd_class = kd_loss_choices.get_class(kd_name)
        fs = teacher_sample_rate(vars(args))
        if fs and _accepts(kd_class, "fs"):
            kd_conf.setdefault("fs", fs)
        kd_loss = kd_class(**kd_conf)

        teacher = None
        if getattr(args, "teacher_model", None) or getattr(args, "teacher_config", None):
            config, model_file = resolve_teacher(
                args.teacher_model or str(args.teacher_config), args.teacher_config, args.teacher_model_file
            )
            teacher, teacher_conf = load_teacher(config, model_file)
            teacher_fs = teacher_sample_rate(teacher_conf)
            if fs and teacher_fs and teacher_fs != fs:
                raise TeacherError(
                    f"teacher {config} runs at fs={teacher_fs} but the student config has fs={fs}"
                )
        else:
            logging.warning(f"kd_loss={kd_name} without --teacher_model: every batch must bring '{TEACHER_STREAM}'")

        model = ESPnetEnhancementKDModel(
            encoder=student.encoder,
            separator=student.separator,
            decoder=student.decoder,
            mask_module=student.mask_module,
            loss_wrappers=student.loss_wrappers,
            kd_loss=kd_loss,
            teacher=teacher,
            kd_weight=args.kd_weight,
            task_weight=args.task_weight,
            **args.model_conf,
        )
        return model


def _accepts(cls: type, name: str) -> bool:
    params = inspect.signature(cls.__init__).parameters.values()
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
