"""EnhancementKDTask: espnet2's EnhancementTask plus a teacher and a KD loss.

Every enh_train option keeps its meaning. Added options (yaml keys):

- ``teacher_model``: experiment dir, packed zip or espnet_model_zoo name of the frozen teacher
  (``teacher_config`` / ``teacher_model_file`` override what is found there);
- ``kd_loss`` / ``kd_loss_conf``: KD loss by registry name (dispatch, dfkd, si_snr) and its options,
  the way espnet2 picks encoders and separators; without ``kd_loss`` this trains a plain student;
- ``kd_weight``, ``task_weight``: total loss = task_weight * student's criterions + kd_weight * KD;
- ``teacher_autocast``: none, bf16 or fp16: the online teacher runs under CUDA autocast (no-op on CPU);
- ``fs``: sampling rate of the data, checked against the teacher's and given to the KD loss.

KD is not expressed as an espnet2 ``criterions`` entry on purpose: criteria only see (reference,
estimate), and the student's config.yaml must rebuild with plain espnet2, which knows no KD criterion.
"""
from __future__ import annotations

import argparse
import logging

import torch
from espnet2.tasks.enh import EnhancementTask
from espnet2.train.class_choices import ClassChoices
from espnet2.utils.types import int_or_none, str_or_none

from dispatch.checkpoint import atomic_torch_save, restore_epoch_snapshot
from dispatch.chunking import ChunkingError, check_chunking
from dispatch.kd_config import KDConfigError, check_kd_options
from dispatch.losses import KD_LOSSES
from dispatch.model import TEACHER_AUTOCAST_CHOICES, TEACHER_STREAM, ESPnetEnhancementKDModel
from dispatch.teacher import (
    TeacherError,
    build_teacher,
    check_teacher_fits,
    resolve_teacher,
    single_output_error,
    teacher_sample_rate,
)
from dispatch.trainer import KDTrainer, NoBatchError

# Config keys this task adds to espnet2's; pack_student drops them from the packed student.
KD_CONFIG_KEYS = ("teacher_model", "teacher_config", "teacher_model_file", "kd_loss", "kd_loss_conf",
                  "kd_weight", "task_weight", "teacher_autocast", "chunk_max_dropped_share")

kd_loss_choices = ClassChoices(
    "kd_loss", classes=KD_LOSSES, type_check=torch.nn.Module, default=None, optional=True
)


class EnhancementKDTask(EnhancementTask):
    class_choices_list = EnhancementTask.class_choices_list + [kd_loss_choices]
    trainer = KDTrainer  # an epoch without a training or validation batch is an error, not "finished"

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
        group.add_argument("--teacher_autocast", type=str, default="none", choices=TEACHER_AUTOCAST_CHOICES,
                           help="Run the online teacher under torch.autocast with this dtype on CUDA (no-op on CPU)")
        group.add_argument("--fs", type=int_or_none, default=None,
                           help="Sampling rate of the data; checked against the teacher's")
        group = parser.add_argument_group(description="Data checks")
        group.add_argument("--chunk_max_dropped_share", type=float, default=0.0,
                           help="With iterator_type chunk: the largest share of a set's utterances the chunk "
                                "iterator may skip (those not longer than any chunk_length) before training "
                                "is refused")

    @classmethod
    def build_iter_factory(cls, args: argparse.Namespace, distributed_option, mode: str, kwargs=None):
        if mode in ("train", "valid"):
            cls.check_chunking(args, mode)
        return super().build_iter_factory(args, distributed_option, mode, kwargs)

    @classmethod
    def check_chunking(cls, args: argparse.Namespace, mode: str) -> None:
        """Log what the chunk iterator uses of the ``mode`` set; refuse a set that drops data or gives no batch."""
        iterator_type = getattr(args, f"{mode}_iterator_type", None) or args.iterator_type
        shape_files = getattr(args, f"{mode}_shape_file")
        if iterator_type != "chunk" or not shape_files:
            return
        batch_size = args.valid_batch_size if mode == "valid" and args.valid_batch_size else args.batch_size
        cov = check_chunking(
            {mode: shape_files[0]}, args.chunk_length, batch_size, chunk_shift_ratio=args.chunk_shift_ratio,
            discard_short_samples=args.chunk_discard_short_samples, max_abs_length=args.chunk_max_abs_length,
            max_dropped_share=args.chunk_max_dropped_share)[mode]
        logging.info(f"chunk iterator, {mode} set: {cov.describe(args.fs)}")
        if mode == "train" and args.num_iters_per_epoch is not None:
            # espnet2's chunk iterator reads num_iters_per_epoch utterances per epoch, not batches.
            batches = args.num_iters_per_epoch * cov.num_chunks / max(1, cov.num_utts) / batch_size
            logging.info(f"chunk iterator: --num_iters_per_epoch {args.num_iters_per_epoch} counts utterances: "
                         f"about {batches:.1f} batches per epoch")
            if batches < 1:
                raise ChunkingError(f"--num_iters_per_epoch {args.num_iters_per_epoch} with iterator_type chunk "
                                    f"reads {args.num_iters_per_epoch} utterances per epoch (espnet2 counts "
                                    f"utterances there), about {batches:.2f} batches of {batch_size}: no "
                                    f"training step. Raise it or lower batch_size")

    @classmethod
    def main_worker(cls, args: argparse.Namespace):
        # Kill-safe training: atomic checkpoint writes, and a lost epoch snapshot restored on resume.
        if args.resume and args.output_dir:
            restore_epoch_snapshot(args.output_dir)
        try:
            with atomic_torch_save():
                super().main_worker(args)
        except (KDConfigError, TeacherError, ChunkingError, NoBatchError) as e:
            # Config or data errors for the user to fix (found before training, or an epoch without a
            # batch), reported like argparse's errors rather than as a traceback.
            raise SystemExit(f"enh_kd_train: error: {e}") from e

    @classmethod
    def optional_data_names(cls, train: bool = True, inference: bool = False):
        return super().optional_data_names(train, inference) + (TEACHER_STREAM,)

    @classmethod
    def build_model(cls, args: argparse.Namespace):
        student = super().build_model(args)
        kd_name = getattr(args, "kd_loss", None)
        if kd_name is None:
            return student
        why = single_output_error(student, f"the student config ({getattr(args, 'config', None)})")
        if why:
            raise KDConfigError(f"kd_loss={kd_name}: {why}")
        fs = teacher_sample_rate(vars(args))
        # The same checks as dispatch.bin.check_kd_configs (enh_kd.sh runs it before stage 1): option
        # names and types, ranges, kd_weight/task_weight >= 0 and not both 0.
        kd_loss = check_kd_options(vars(args), fs)

        teacher = None
        if getattr(args, "teacher_model", None) or getattr(args, "teacher_config", None):
            config, model_file = resolve_teacher(
                args.teacher_model or str(args.teacher_config), args.teacher_config, args.teacher_model_file
            )
            teacher, teacher_conf = build_teacher(config, model_file)
            check_teacher_fits(teacher, teacher_conf, config, student, fs, getattr(args, "config", None))
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
            teacher_autocast=getattr(args, "teacher_autocast", "none"),  # configs written before the option
            **args.model_conf,
        )
        return model
