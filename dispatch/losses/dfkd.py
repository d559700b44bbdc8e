"""DFKD: Dynamic Frequency-Adaptive Knowledge Distillation (Yuan et al., arXiv 2502.04711)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from dispatch.distances import get_distance, magnitude
from dispatch.losses.crossover import dfkd_crossover
from dispatch.losses.dispatch_loss import DISPatchLoss
from dispatch.patches import CrossoverLayout, PatchLayout, crossover_band_edges, patch_layout


class DFKDLoss(DISPatchLoss):
    """DFKD, alone or inside DISPatch (with MSSP).

    The spectrogram is split per frame at the teacher's crossover bin (:func:`dfkd_crossover`). The low
    band is distilled with the complex cosine distance, the high band with
    ``beta * complex_cosine + (1 - beta) * mag_l2``; the loss is the low term plus the high term.

    Without patches (default) each band of a frame is one patch and every patch is distilled: plain
    DFKD. With ``bands=[(10, 1), (40, 1)]`` and ``selection="topk"`` it is DFKD + DISPatch + MSSP: the
    Knowledge Gap Score uses the same band distances against the clean target and each band selects
    its own top-k.

    The reference crossover falls on or next to DC in most frames (on the mini corpus' clean test speech
    28% of frames at bin 0 and 71% at bins 0-1 with n_fft 512 at 16 kHz), which makes MSSP's low band
    nearly empty; ``crossover_floor_hz`` starts the search above a floor frequency instead (see
    egs2/mini_flite/enh_kd1/README.md for the measured distributions).

    Args:
        beta: weight of the cosine term in the high band (reference: 0.5).
        bands: patch size per band ``[(low_bins, frames), (high_bins, frames)]``; None = whole bands.
        selection: ``"all"`` (plain DFKD) or a DISPatch selection (see :class:`DISPatchLoss`).
        crossover_floor_hz: lowest frequency the crossover may take, in Hz (rounded to a bin at ``fs``
            and ``n_fft``); 0 is the reference definition.
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
        crossover_floor_hz: float = 0.0,
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
        floor_bin = round(float(crossover_floor_hz) * n_fft / self.fs)
        if not 0 <= floor_bin <= n_fft // 2 - 1:
            raise ValueError(
                f"crossover_floor_hz={crossover_floor_hz!r}: expected 0 Hz up to below fs/2 = {self.fs / 2:g} Hz"
            )
        self.crossover_floor_hz = float(crossover_floor_hz)
        self.crossover_floor_bin = floor_bin

    def layout(
        self, teacher_spec: torch.Tensor, frame_valid: Optional[torch.Tensor], teacher_mag: Optional[torch.Tensor] = None
    ) -> PatchLayout:
        """As :meth:`DISPatchLoss.layout`, with the crossover searched from ``crossover_floor_hz`` up."""
        if not self.crossover_floor_bin:
            return super().layout(teacher_spec, frame_valid, teacher_mag)
        mag = magnitude(teacher_spec) if teacher_mag is None else teacher_mag
        crossover = dfkd_crossover(mag, floor_bin=self.crossover_floor_bin)
        if self.fast_layout:
            return CrossoverLayout(crossover, self.patch_sizes, teacher_spec.shape[1], frame_valid)
        band, start = crossover_band_edges(crossover, teacher_spec.shape[1])
        return patch_layout(band, start, self.patch_sizes, teacher_spec.shape, frame_valid)
