"""DFKD's per-frame crossover bin, used by DFKD (dfkd.py) and by DISPatch's crossover band edges
(dispatch_loss.py): in a module of its own, so that neither loss module imports the other's."""
from __future__ import annotations

import torch


def dfkd_crossover(teacher_mag: torch.Tensor, eps: float = 1e-8, floor_bin: int = 0) -> torch.Tensor:
    """Per-frame crossover bin of DFKD's frequency adapter.

    The cumulative maximum of the teacher magnitude over frequency is taken; its relative first
    difference ``(cm[f + 1] - cm[f]) / (cm[f] + eps)`` peaks at the crossover bin ``f``, the last bin of
    the low band. With ``floor_bin > 0`` the same rule is applied to the bins from ``floor_bin`` up
    (the cumulative maximum starts there), so the crossover is never below the floor.

    Args:
        teacher_mag: (..., freq, time) magnitude spectrogram.
        eps: keeps the relative difference finite on silent bins.
        floor_bin: lowest bin the crossover may take (0: the reference definition).

    Returns:
        (..., time) long crossover bin in ``[floor_bin, freq - 2]``.
    """
    n_freq = teacher_mag.shape[-2]
    if not 0 <= floor_bin <= n_freq - 2:
        raise ValueError(f"floor_bin={floor_bin}: expected 0..{n_freq - 2} for {n_freq} frequency bins")
    # Frequency made the last, contiguous axis: cummax and argmax run about 2x faster on CPU (#16);
    # the same operations in the same order, so the same bins.
    mag = teacher_mag[..., floor_bin:, :].transpose(-1, -2).contiguous()  # (..., time, freq)
    cm = mag.cummax(dim=-1).values
    rel = (cm[..., 1:] - cm[..., :-1]) / (cm[..., :-1] + eps)
    return rel.argmax(dim=-1) + floor_bin
