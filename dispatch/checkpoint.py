"""Crash-safe checkpoints for espnet2's trainer.

espnet2 writes ``checkpoint.pth`` and then ``<N>epoch.pth`` in place. A kill during either write leaves a
truncated file that ``--resume true`` cannot read, and a kill between the two leaves the finished epoch
without its snapshot (later averaging or best-model links then miss it). These helpers close both gaps
without changing espnet2's file names or formats.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
from pathlib import Path
from typing import Iterator, Sequence

import torch

from dispatch.data.atomic import atomic_path

_torch_save = torch.save


def atomic_save(obj, f, *args, **kwargs) -> None:
    """``torch.save`` that writes a path through a temporary file and an atomic rename."""
    if not isinstance(f, (str, os.PathLike)):
        return _torch_save(obj, f, *args, **kwargs)
    with atomic_path(f) as tmp:
        _torch_save(obj, tmp, *args, **kwargs)


# The espnet2 modules whose torch.save calls write a training's files: checkpoint.pth and <N>epoch.pth
# (trainer), the averaged models (average_nbest_models).
ESPNET2_WRITERS = ("espnet2.train.trainer", "espnet2.main_funcs.average_nbest_models")


class _TorchWithAtomicSave:
    """What one module sees as ``torch``: torch itself, except that ``save`` is :func:`atomic_save`."""

    def __init__(self, module):
        self._torch = module

    def __getattr__(self, name):
        return getattr(self._torch, name)

    @staticmethod
    def save(obj, f, *args, **kwargs) -> None:
        atomic_save(obj, f, *args, **kwargs)


@contextlib.contextmanager
def atomic_torch_save(modules: Sequence[str] = ESPNET2_WRITERS) -> Iterator[None]:
    """Make the ``torch.save`` calls of ``modules`` (espnet2's trainer and model averaging) atomic while
    the context is open: their global name ``torch`` is bound to a view of torch whose ``save`` is
    :func:`atomic_save`. ``torch.save`` itself, and every other caller of it, are left alone."""
    patched = []
    try:
        for name in modules:
            module = importlib.import_module(name)
            if module.torch is torch:
                patched.append(module)
                module.torch = _TorchWithAtomicSave(torch)
        yield
    finally:
        for module in patched:
            module.torch = torch


def restore_epoch_snapshot(output_dir: Path) -> None:
    """Write ``<N>epoch.pth`` from ``checkpoint.pth`` when a kill came between the two saves."""
    checkpoint = Path(output_dir) / "checkpoint.pth"
    if not checkpoint.exists():
        return
    states = torch.load(checkpoint, map_location="cpu", weights_only=False)
    epoch = states["reporter"]["epoch"]
    snapshot = checkpoint.with_name(f"{epoch}epoch.pth")
    if epoch > 0 and not snapshot.exists():
        logging.warning(f"{snapshot} is missing after an interruption: restoring it from {checkpoint}")
        atomic_save(states["model"], snapshot)
