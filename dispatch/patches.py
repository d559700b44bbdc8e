"""Partition of a spectrogram into (multi-scale) patches.

A *patch layout* gives every time-frequency bin the index of the patch it belongs to. Bands split the
frequency axis (one band for single-scale DISPatch, two for MSSP); each band has its own patch size
``(freq_bins, frames)``. The last patch of a band may hold fewer bins than its size: this is the
paper's zero-padding of the frequency axis, except that padded bins are simply absent, so patch means
are taken over real bins only. Band edges are either fixed bins or vary per frame (DFKD crossover).

Patch slots are laid out as ``band * slots_per_band + freq_patch * time_patches + time_patch`` so that
per-band operations (top-k selection) reshape to ``(batch, bands, slots_per_band)``. Bins that must not
count (frames past an utterance's length) go to one extra slot at the end, which callers drop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch

PatchSize = Tuple[int, int]


@dataclass(frozen=True)
class PatchLayout:
    """Where each bin goes.

    Attributes:
        index: (batch, freq, time) long, slot of each bin; ``num_slots`` marks bins that do not count.
        counts: (batch, num_slots) number of bins in each slot (0 for empty slots).
        num_bands: number of bands.
        slots_per_band: slots reserved for each band.
    """

    index: torch.Tensor
    counts: torch.Tensor
    num_bands: int
    slots_per_band: int

    @property
    def num_slots(self) -> int:
        return self.num_bands * self.slots_per_band

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Sum ``x`` (batch, freq, time) over the bins of each patch: (batch, num_slots)."""
        return patch_sum(x, self.index, self.num_slots)

    def by_band(self, x: torch.Tensor) -> torch.Tensor:
        """View slot values (batch, num_slots) as (batch, bands, slots_per_band)."""
        return x.view(x.shape[0], self.num_bands, self.slots_per_band)

    def to_bins(self, slot_values: torch.Tensor) -> torch.Tensor:
        """Spread slot values (batch, num_slots) back onto bins: (batch, freq, time).

        Bins outside every patch get ``0`` (``False`` for bool input).
        """
        padded = torch.cat([slot_values, slot_values.new_zeros(slot_values.shape[0], 1)], dim=1)
        flat = padded.gather(1, self.index.flatten(1))
        return flat.view(self.index.shape)


def patch_sum(x: torch.Tensor, index: torch.Tensor, num_slots: int) -> torch.Tensor:
    """Sum bins into patches.

    Args:
        x: (batch, freq, time) real values.
        index: (batch, freq, time) slot of each bin in ``[0, num_slots]``; ``num_slots`` is dropped.
        num_slots: number of real slots.

    Returns:
        (batch, num_slots) sums.
    """
    out = x.new_zeros(x.shape[0], num_slots + 1)
    out = out.scatter_add(1, index.flatten(1), x.flatten(1))
    return out[:, :num_slots]


def fixed_band_edges(n_freq: int, edges_bins: Sequence[int], device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Band of each frequency bin for fixed edges.

    Args:
        n_freq: number of frequency bins F.
        edges_bins: increasing first bins of bands 1..N-1 (band 0 starts at bin 0).

    Returns:
        band: (1, freq, 1) long band index of each bin; start: (1, freq, 1) first bin of that band.
    """
    starts = torch.tensor([0, *edges_bins], device=device)
    freqs = torch.arange(n_freq, device=device)
    band = torch.bucketize(freqs, starts[1:], right=True)
    return band.view(1, -1, 1), starts[band].view(1, -1, 1)


def crossover_band_edges(crossover: torch.Tensor, n_freq: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Two bands split per frame: low = bins ``<= crossover``, high = bins ``> crossover``.

    Args:
        crossover: (batch, time) long, last bin of the low band in each frame.
        n_freq: number of frequency bins F.

    Returns:
        band: (batch, freq, time) long; start: (batch, freq, time) first bin of each bin's band.
    """
    freqs = torch.arange(n_freq, device=crossover.device).view(1, -1, 1)
    edge = crossover.unsqueeze(1)
    band = (freqs > edge).long()
    start = band * (edge + 1)
    return band, start


def patch_layout(
    band: torch.Tensor,
    start: torch.Tensor,
    patch_sizes: Sequence[PatchSize],
    shape: Tuple[int, int, int],
    frame_valid: Optional[torch.Tensor] = None,
) -> PatchLayout:
    """Assign every bin to a patch of its band.

    Args:
        band: (batch or 1, freq, time or 1) long band of each bin.
        start: same shape, first bin of that band (in this frame).
        patch_sizes: ``(freq_bins, frames)`` for each band.
        shape: spectrogram size (batch, freq, time).
        frame_valid: (batch, time) bool, frames inside each utterance; None = all.

    Returns:
        The PatchLayout, its index of shape (batch, freq, time).
    """
    batch, n_freq, n_frames = shape
    device = band.device
    sizes = torch.tensor(patch_sizes, device=device, dtype=torch.long)  # (bands, 2)
    fp_max = max(math.ceil(n_freq / f) for f, _ in patch_sizes)
    tp_max = max(math.ceil(n_frames / t) for _, t in patch_sizes)
    slots_per_band = fp_max * tp_max
    num_bands = len(patch_sizes)

    freqs = torch.arange(n_freq, device=device).view(1, -1, 1)
    frames = torch.arange(n_frames, device=device).view(1, 1, -1)
    freq_patch = (freqs - start) // sizes[band, 0]
    time_patch = frames // sizes[band, 1]
    index = band * slots_per_band + freq_patch * tp_max + time_patch
    index = index.expand(batch, n_freq, n_frames)
    if frame_valid is not None:
        index = index.masked_fill(~frame_valid.unsqueeze(1), num_bands * slots_per_band)
    index = index.contiguous()
    ones = torch.ones(index.shape, device=device)
    counts = patch_sum(ones, index, num_bands * slots_per_band)
    return PatchLayout(index=index, counts=counts, num_bands=num_bands, slots_per_band=slots_per_band)
