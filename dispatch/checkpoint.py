"""Crash-safe checkpoints for espnet2's trainer.

espnet2 writes ``checkpoint.pth`` and then ``<N>epoch.pth`` in place. A kill during either write leaves a
truncated file that ``--resume true`` cannot read, and a kill between the two leaves the finished epoch
without its snapshot (later averaging or best-model links then miss it). These helpers close both gaps
without changing espnet2's file names or formats.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator

import torch

from dispatch.data.atomic import atomic_path

_torch_save = torch.save


def atomic_save(obj, f, *args, **kwargs) -> None:
    """``torch.save`` that writes a path through a temporary file and an atomic rename."""
    if not isinstance(f, (str, os.PathLike)):
        return _torch_save(obj, f, *args, **kwargs)
    with atomic_path(f) as tmp:
        _torch_save(obj, tmp, *args, **kwargs)


@contextlib.contextmanager
def atomic_torch_save() -> Iterator[None]:
    """Make every ``torch.save`` to a path atomic while the context is open."""
    torch.save = atomic_save
    try:
        yield
    finally:
        torch.save = _torch_save


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
