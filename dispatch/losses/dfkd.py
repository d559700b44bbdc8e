"""DFKD: Dynamic Frequency-Adaptive Knowledge Distillation (Yuan et al., arXiv 2502.04711)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from dispatch.distances import get_distance
from dispatch.losses.dispatch_loss import DISPatchLoss


def dfkd_crossover(teacher_mag: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-frame crossover bin of DFKD's frequency adapter.

    The cumulative maximum of the teacher magnitude over frequency is taken; its relative first
    difference ``(cm[f + 1] - cm[f]) / (cm[f] + eps)`` peaks at the crossover bin ``f``, the last bin of
    the low band.

    Args:
        teacher_mag: (..., freq, time) magnitude spectrogram.

    Returns:
        (..., time) long crossover bin in ``[0, freq - 2]``.
    """
    cm = teacher_mag.cummax(dim=-2).values
    rel = (cm[..., 1:, :] - cm[..., :-1, :]) / (cm[..., :-1, :] + eps)
    return rel.argmax(dim=-2)


class DFKDLoss(DISPatchLoss):
    """DFKD, alone or inside DISPatch (with MSSP).

    The spectrogram is split per frame at the teacher's crossover bin (:func:`dfkd_crossover`). The low
    band is distilled with the complex cosine distance, the high band with
    ``beta * complex_cosine + (1 - beta) * mag_l2``; the loss is the low term plus the high term.

    Without patches (default) each band of a frame is one patch and every patch is distilled: plain
    DFKD. With ``bands=[(10, 1), (40, 1)]`` and ``selection="topk"`` it is DFKD + DISPatch + MSSP: the
    Knowledge Gap Score uses the same band distances against the clean target and each band selects
    its own top-k.

    Args:
        beta: weight of the cosine term in the high band (reference: 0.5).
        bands: patch size per band ``[(low_bins, frames), (high_bins, frames)]``; None = whole bands.
        selection: ``"all"`` (plain DFKD) or a DISPatch selection (see :class:`DISPatchLoss`).
        **kwargs: STFT and selection options of :class:`DISPatchLoss`.

    Shape:
        - student, teacher, clean: (batch, time); lengths: (batch,) or None; output: scalar.

    Examples:
        >>> loss = DFKDLoss(bands=[(10, 1), (40, 1)], topk=0.8, selection="topk")
        >>> s, t, y = torch.randn(3, 2, 16000).unbind(0)
        >>> loss(s, t, y).shape
        torch.Size([])
    """

    def __init__(
        self,
        beta: float = 0.5,
        bands: Optional[Sequence[Sequence[int]]] = None,
        selection: str = "all",
        n_fft: int = 512,
        **kwargs,
    ):
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta={beta!r}: the high-band cosine weight must lie in [0, 1]")
        for option in ("distance", "band_edges", "patch", "distance_conf"):
            if option in kwargs:
                raise ValueError(f"DFKDLoss fixes `{option}`; use kd_loss: dispatch to choose it")
        n_freq = n_fft // 2 + 1
        if bands is None:
            bands = [(n_freq, 1), (n_freq, 1)]
        super().__init__(
            distance=["complex_cosine", get_distance("cosine_mag_l2", beta=beta)],
            bands=bands,
            band_edges="crossover",
            selection=selection,
            n_fft=n_fft,
            **kwargs,
        )
        self.beta = beta
