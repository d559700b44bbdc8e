"""An espnet2 enhancement model that also learns from a frozen teacher.

The student keeps the exact module tree of :class:`ESPnetEnhancementModel` (encoder, separator,
decoder, loss wrappers), so its checkpoints and packed zips are plain espnet2 models. The teacher is
deliberately *not* a registered submodule: it is absent from ``state_dict()``, ``parameters()`` and
``train()``, yet follows the student across devices and dtypes.
"""
from __future__ import annotations

import contextlib
from typing import ContextManager, List, Optional

import torch
from espnet2.enh.espnet_model import ESPnetEnhancementModel

from dispatch.teacher import fit_length, single_output_error, teacher_enhance

TEACHER_STREAM = "teacher_ref1"  # data-loader name of cached teacher outputs (an scp like spk1.scp)
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
TEACHER_AUTOCAST_CHOICES = ("none", *AUTOCAST_DTYPES)


def teacher_autocast_context(mode: str, device: torch.device) -> ContextManager:
    """Mixed precision for the frozen teacher: ``torch.autocast`` on CUDA, a no-op elsewhere.

    CPU autocast is left out on purpose: bf16 matmuls are slower than float32 on most CPUs.

    Args:
        mode: one of :data:`TEACHER_AUTOCAST_CHOICES`.
        device: device of the teacher's input.
    """
    if mode == "none" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=AUTOCAST_DTYPES[mode])


class ESPnetEnhancementKDModel(ESPnetEnhancementModel):
    """Student enhancement model trained with ``task_weight * task loss + kd_weight * KD loss``.

    The task loss is the student's own espnet2 criteria (yaml ``criterions``). The KD loss compares the
    student output with the teacher output, computed online by the frozen teacher or read from a cached
    ``teacher_ref1`` data stream, and with the clean reference for DISPatch's patch selection.

    Args:
        kd_loss: a KD loss module (``forward(student, teacher, clean, lengths)``), see dispatch.losses.
        teacher: frozen teacher model, or None when every batch brings ``teacher_ref1``.
        kd_weight, task_weight: loss weights.
        teacher_autocast: ``"none"``, ``"bf16"`` or ``"fp16"``: run the online teacher under autocast
            on CUDA (see :func:`teacher_autocast_context`).
        **kwargs: arguments of :class:`ESPnetEnhancementModel`.
    """

    def __init__(
        self,
        *,
        kd_loss: torch.nn.Module,
        teacher: Optional[torch.nn.Module] = None,
        kd_weight: float = 1.0,
        task_weight: float = 1.0,
        teacher_autocast: str = "none",
        **kwargs,
    ):
        if teacher_autocast not in TEACHER_AUTOCAST_CHOICES:
            raise ValueError(f"teacher_autocast={teacher_autocast!r} is not one of {TEACHER_AUTOCAST_CHOICES}")
        super().__init__(**kwargs)
        self.teacher_autocast = teacher_autocast
        why = single_output_error(self, "the student's separator")
        if why:
            raise ValueError(why)
        self.kd_loss = kd_loss
        self.kd_weight, self.task_weight = kd_weight, task_weight
        object.__setattr__(self, "teacher", teacher)  # not a submodule: see the module docstring
        self._teacher_pre: Optional[torch.Tensor] = None

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if self.teacher is not None:
            self.teacher._apply(fn, *args, **kwargs)
        return self

    def forward(self, speech_mix: torch.Tensor, speech_mix_lengths: torch.Tensor = None, **kwargs):
        cached = kwargs.pop(TEACHER_STREAM, None)
        kwargs.pop(f"{TEACHER_STREAM}_lengths", None)
        if cached is not None:
            teacher_pre = cached
        elif self.teacher is not None:
            lengths = speech_mix_lengths
            if lengths is None:
                lengths = speech_mix.new_full((speech_mix.shape[0],), speech_mix.shape[1], dtype=torch.long)
            with teacher_autocast_context(self.teacher_autocast, speech_mix.device):
                teacher_pre = teacher_enhance(self.teacher, speech_mix, lengths)
            teacher_pre = teacher_pre.to(speech_mix.dtype)  # the KD loss runs in the student's precision
        else:
            raise RuntimeError(f"no teacher: give --teacher_model or a '{TEACHER_STREAM}' data stream")
        self._teacher_pre = teacher_pre
        try:
            return super().forward(speech_mix, speech_mix_lengths, **kwargs)
        finally:
            self._teacher_pre = None

    def forward_loss(
        self,
        speech_pre: List[torch.Tensor],
        speech_lengths: torch.Tensor,
        feature_mix,
        feature_pre,
        others,
        speech_ref: List[torch.Tensor],
        *args,
        **kwargs,
    ):
        loss, stats, weight, perm = super().forward_loss(
            speech_pre, speech_lengths, feature_mix, feature_pre, others, speech_ref, *args, **kwargs
        )
        if self._teacher_pre is None:  # called outside forward(), e.g. by a subclass: no KD
            return loss, stats, weight, perm
        student, clean = speech_pre[0], speech_ref[0]
        n = student.shape[-1]
        teacher = fit_length(self._teacher_pre, n, "the teacher output")
        clean = fit_length(clean, n, "the clean reference")
        lengths = None if bool((speech_lengths == n).all()) else speech_lengths.clamp(max=n)
        kd = self.kd_loss(student, teacher, clean, lengths)

        stats["task_loss"] = loss.detach()
        stats["kd_loss"] = kd.detach()
        for key, value in getattr(self.kd_loss, "last_stats", {}).items():
            stats[f"kd_{key}"] = value
        loss = self.task_weight * loss + self.kd_weight * kd
        stats["loss"] = loss.detach()
        return loss, stats, weight, perm



