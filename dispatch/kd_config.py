"""Checks of the KD options of a training config: ``kd_loss``, ``kd_loss_conf``, ``kd_weight``, ``task_weight``.

One implementation for both callers: ``EnhancementKDTask.build_model`` (a direct ``enh_kd_train`` user)
and ``dispatch.bin.check_kd_configs`` (enh_kd.sh, before its first stage). It imports no espnet2.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional

import torch

from dispatch.losses import build_kd_loss, kd_loss_options


class KDConfigError(ValueError):
    """A ``kd_loss`` / ``kd_loss_conf`` / loss weight that cannot work; found before training."""


def check_weights(kd_weight, task_weight) -> None:
    """``kd_weight`` and ``task_weight`` are finite numbers >= 0, not both 0.

    Raises:
        KDConfigError: naming the key and its value.
    """
    for key, value in (("kd_weight", kd_weight), ("task_weight", task_weight)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise KDConfigError(f"{key}={value!r}: expected a number")
        if not math.isfinite(value) or value < 0:
            raise KDConfigError(f"{key}={value!r}: a loss weight must be a finite number >= 0")
    if kd_weight == 0 and task_weight == 0:
        raise KDConfigError("kd_weight=0 and task_weight=0: the total loss would be 0 and nothing would train")


def check_kd_options(conf: Mapping, fs: Optional[int] = None) -> Optional[torch.nn.Module]:
    """Check the KD keys of a (merged) training config and build its KD loss.

    Args:
        conf: the config as a mapping (yaml dict or ``vars(args)``); keys it lacks take enh_kd_train's
            defaults (kd_weight = task_weight = 1.0).
        fs: sampling rate of the data, given to the loss when it takes ``fs`` and ``kd_loss_conf`` does not.

    Returns:
        The KD loss, or None when ``kd_loss`` is not set (a plain student).

    Raises:
        KDConfigError: naming the key at fault.
    """
    name = conf.get("kd_loss")
    if name is None:
        return None
    if not isinstance(name, str):
        raise KDConfigError(f"kd_loss={name!r}: expected the name of a KD loss")
    kd_conf = conf.get("kd_loss_conf") or {}
    if not isinstance(kd_conf, Mapping):
        raise KDConfigError(f"kd_loss_conf={kd_conf!r}: expected a mapping of options")
    check_weights(conf.get("kd_weight", 1.0), conf.get("task_weight", 1.0))
    kd_conf = dict(kd_conf)
    try:
        if fs and "fs" in kd_loss_options(name):
            kd_conf.setdefault("fs", fs)
        return build_kd_loss(name, **kd_conf)
    except ValueError as e:
        raise KDConfigError(str(e)) from e
