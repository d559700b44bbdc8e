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

    def dc_slots(self) -> torch.Tensor:
        """(batch, time) long slot of each frame's DC bin; ``num_slots`` where it does not count."""
        return self.index[:, 0, :]

    def release(self) -> None:
        """No scratch memory to free (see the fast layouts)."""


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


# ------------------------------------------------------------------------------------------ fast layouts
# The layouts below hold the same slots, counts and pooled values as :func:`patch_layout` (sums up to
# rounding) without a per-bin index: fixed band edges pool by reshape-and-sum, a per-frame crossover by
# float64 cumulative sums gathered at the patch boundaries. They work in the memory order of
# ``torch.stft``'s output, frequency fastest (a (batch, freq, time) tensor whose ``transpose(1, 2)`` is
# contiguous): per-bin inputs in that order are read contiguously, and what they spread onto bins is
# written in that order, because an element-wise operation that mixes the two orders runs about 10x
# slower on CPU than one on a single order (#16).


def _slot_grid(n_freq: int, n_frames: int, patch_sizes: Sequence[PatchSize]) -> Tuple[int, int]:
    """(freq patches, time patches) reserved per band: the most any band can need, as in :func:`patch_layout`."""
    return max(math.ceil(n_freq / f) for f, _ in patch_sizes), max(math.ceil(n_frames / t) for _, t in patch_sizes)


def block_sum(x: torch.Tensor, size: PatchSize, grid: Tuple[int, int]) -> torch.Tensor:
    """Sums over ``size = (freq_bins, frames)`` blocks from bin 0 and frame 0, by zero-pad and view.

    Args:
        x: (batch, freq, time); the last block of each axis may be cut short.
        size: block height and width.
        grid: (freq blocks, time blocks) of the output, at least the blocks ``x`` needs; the rest are 0.

    Returns:
        (batch, grid[0], grid[1]) sums.
    """
    batch, n_freq, n_frames = x.shape
    (pf, pt), (fp_out, tp_out) = size, grid
    fp, tp = math.ceil(n_freq / pf), math.ceil(n_frames / pt)
    if fp * pf != n_freq or tp * pt != n_frames:
        x = torch.nn.functional.pad(x, (0, tp * pt - n_frames, 0, fp * pf - n_freq))
    sums = x.reshape(batch, fp, pf, tp, pt).sum(dim=(2, 4)) if pt > 1 else x.reshape(batch, fp, pf, n_frames).sum(2)
    if (fp, tp) != (fp_out, tp_out):
        sums = torch.nn.functional.pad(sums, (0, tp_out - tp, 0, fp_out - fp))
    return sums


def block_spread(values: torch.Tensor, size: PatchSize, shape: Tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`block_sum`'s grouping: each block's value on each of its bins.

    Args:
        values: (batch, freq blocks, time blocks), at least as many as ``shape`` needs.
        size: block height and width.
        shape: (freq, time) of the output.

    Returns:
        (batch, freq, time).
    """
    (pf, pt), (n_freq, n_frames) = size, shape
    fp, tp = math.ceil(n_freq / pf), math.ceil(n_frames / pt)
    v = values[:, :fp, :tp]
    batch = v.shape[0]
    return v[:, :, None, :, None].expand(batch, fp, pf, tp, pt).reshape(batch, fp * pf, tp * pt)[:, :n_freq, :n_frames]


def run_sums(x: torch.Tensor, size: int) -> torch.Tensor:
    """Sums of ``size`` consecutive bins along the last axis from bin 0, the last run cut short.

    Args:
        x: (batch, time, n), read in place (no padded copy).

    Returns:
        (batch, time, ceil(n / size)).
    """
    batch, n_frames, n = x.shape
    full = n // size * size
    sums = x[..., :full].reshape(batch, n_frames, n // size, size).sum(-1)
    return torch.cat([sums, x[..., full:].sum(-1, keepdim=True)], dim=-1) if full < n else sums


def run_spread(values: torch.Tensor, size: int, n: int) -> torch.Tensor:
    """Inverse of :func:`run_sums`'s grouping: (batch, time, runs) -> (batch, time, n), each run's value on its bins."""
    batch, n_frames, runs = values.shape
    return values[..., None].expand(batch, n_frames, runs, size).reshape(batch, n_frames, runs * size)[..., :n]


def _zero_frames(per_frame: torch.Tensor, frame_valid: Optional[torch.Tensor]) -> torch.Tensor:
    """(batch, time, ...) per-frame values with frames past an utterance's end set to 0 (False)."""
    if frame_valid is None:
        return per_frame
    return per_frame.masked_fill(~frame_valid.view(*frame_valid.shape, *[1] * (per_frame.dim() - 2)), 0)


def _group_frames(per_frame: torch.Tensor, width: int, grid: Tuple[int, int]) -> torch.Tensor:
    """(batch, time, freq patches) per-frame patch values -> (batch, grid[0], grid[1]), summed over ``width`` frames."""
    return block_sum(per_frame.transpose(1, 2), (1, width), grid)


def _spread_frames(values: torch.Tensor, width: int, n_frames: int) -> torch.Tensor:
    """Inverse of :func:`_group_frames`: (batch, freq patches, time patches) -> (batch, time, freq patches)."""
    return block_spread(values, (1, width), (values.shape[1], n_frames)).transpose(1, 2)


class _LazyIndex:
    """Shared parts of the fast layouts; ``index`` is built on first use by :func:`patch_layout` (the
    general layout), for callers that need a per-bin slot (the fast layouts do not)."""

    _index: Optional[torch.Tensor] = None

    def general(self) -> PatchLayout:
        raise NotImplementedError

    def _sums(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def to_bins(self, slot_values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def index(self) -> torch.Tensor:
        if self._index is None:
            self._index = self.general().index
        return self._index

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Sum ``x`` (batch, freq, time) over the bins of each patch: (batch, num_slots).

        Backward: each bin gets its patch's gradient (:meth:`to_bins`).
        """
        return _Pool.apply(x, self) if x.requires_grad and torch.is_grad_enabled() else self._sums(x)

    def by_band(self, x: torch.Tensor) -> torch.Tensor:
        """View slot values (batch, num_slots) as (batch, bands, slots_per_band)."""
        return x.view(x.shape[0], self.num_bands, self.slots_per_band)

    def release(self) -> None:
        """Free scratch memory of pooling: the loss calls it once everything is pooled (its backward spreads
        onto bins, it does not pool), so the scratch is not held through the backward."""

    def dc_slots(self) -> torch.Tensor:
        """(batch, time) long slot of each frame's DC bin (band 0 starts at bin 0); ``num_slots`` past an
        utterance's end."""
        batch, _, n_frames = self.shape
        slots = torch.arange(n_frames, device=self.counts.device) // self.patch_sizes[0][1]
        slots = slots.expand(batch, n_frames)
        return slots if self.frame_valid is None else slots.masked_fill(~self.frame_valid, self.num_slots)

    @property
    def num_slots(self) -> int:
        return self.num_bands * self.slots_per_band


class _Pool(torch.autograd.Function):
    """Patch sums of a fast layout; the gradient of a sum is 1 on each of its bins."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layout: _LazyIndex) -> torch.Tensor:
        ctx.layout = layout
        return layout._sums(x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        return ctx.layout.to_bins(grad), None


class GridLayout(_LazyIndex):
    """Fixed band edges: each band is a regular grid of patches, pooled by reshape-and-sum.

    Slots, counts and sums are those of ``patch_layout(*fixed_band_edges(...), ...)``.

    Args:
        bounds: first bin of every band and ``n_freq`` at the end, increasing (``[0, *edges, n_freq]``).
        patch_sizes: ``(freq_bins, frames)`` per band.
        shape: spectrogram size (batch, freq, time).
        frame_valid: (batch, time) bool, frames inside each utterance; None = all.
        device: where counts live.
    """

    def __init__(self, bounds: Sequence[int], patch_sizes: Sequence[PatchSize], shape: Tuple[int, int, int],
                 frame_valid: Optional[torch.Tensor] = None, device=None):
        self.bounds, self.patch_sizes, self.shape = list(bounds), [tuple(p) for p in patch_sizes], tuple(shape)
        self.frame_valid = frame_valid
        self.num_bands = len(self.patch_sizes)
        self.grid = _slot_grid(shape[1], shape[2], self.patch_sizes)
        self.slots_per_band = self.grid[0] * self.grid[1]
        self.bands = list(zip(self.bounds[:-1], self.bounds[1:], self.patch_sizes))
        batch = shape[0] if frame_valid is not None else 1
        ones = [run_sums(torch.ones(1, 1, hi - lo, device=device), f).expand(batch, shape[2], -1)
                for lo, hi, (f, _) in self.bands]  # bins per patch and frame
        counts = self._group(ones)
        self.counts = counts.expand(shape[0], -1) if frame_valid is None else counts
        # Every row (utterance, band) has the same number of patches when no frame is cut off and all
        # bands have the same count: top-k then needs no per-row rank (see select_topk's n_valid).
        per_band = [math.ceil((hi - lo) / f) * math.ceil(shape[2] / t) for lo, hi, (f, t) in self.bands]
        self.uniform_valid = per_band[0] if frame_valid is None and len(set(per_band)) == 1 else None

    def _group(self, per_frame: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per band (batch, time, freq patches) -> (batch, num_slots): frames past the end dropped, grouped."""
        parts = [_group_frames(_zero_frames(p, self.frame_valid), t, self.grid)
                 for p, (_, t) in zip(per_frame, self.patch_sizes)]
        return torch.stack(parts, dim=1).flatten(1)

    def _sums(self, x: torch.Tensor) -> torch.Tensor:
        xt = x.transpose(1, 2)  # (batch, time, freq): contiguous for torch.stft's output
        return self._group([run_sums(xt[..., lo:hi], f) for lo, hi, (f, _) in self.bands])

    def to_bins(self, slot_values: torch.Tensor) -> torch.Tensor:
        """Spread slot values (batch, num_slots) back onto bins: (batch, freq, time), frequency fastest in
        memory; 0 (False) outside."""
        v = slot_values.view(slot_values.shape[0], self.num_bands, *self.grid)
        n_frames = self.shape[2]
        out = [run_spread(_zero_frames(_spread_frames(v[:, i, :math.ceil((hi - lo) / f)], t, n_frames),
                                       self.frame_valid), f, hi - lo)
               for i, (lo, hi, (f, t)) in enumerate(self.bands)]
        return torch.cat(out, dim=-1).transpose(1, 2)

    def general(self) -> PatchLayout:
        device = self.counts.device
        band, start = fixed_band_edges(self.shape[1], self.bounds[1:-1], device=device)
        return patch_layout(band, start, self.patch_sizes, self.shape, self.frame_valid)


class CrossoverLayout(_LazyIndex):
    """Two bands split per frame at a crossover bin: patch sums from cumulative sums over frequency.

    Per frame, band 0 holds bins ``0..crossover`` and band 1 bins ``crossover+1..freq-1``, each cut into
    patches of its height from its first bin, then grouped over frames by its width. A patch's sum is
    the difference of a float64 cumulative sum at its two boundaries (float32 would lose the small
    high-frequency patches next to large low-frequency sums and flip selections). Slots, counts and sums
    are those of ``patch_layout(*crossover_band_edges(...), ...)``.

    Args:
        crossover: (batch, time) long, last bin of the low band in each frame, in ``[0, freq - 2]``.
        patch_sizes: ``(freq_bins, frames)`` of the two bands.
        n_freq: number of frequency bins F.
        frame_valid: (batch, time) bool, frames inside each utterance; None = all.

    Attributes:
        bounds: (batch, time, 2 * (freq patches + 1)) long, the first bin of every patch of each band and
            the band's end, low band then high band.
    """

    uniform_valid = None

    def __init__(self, crossover: torch.Tensor, patch_sizes: Sequence[PatchSize], n_freq: int,
                 frame_valid: Optional[torch.Tensor] = None):
        if len(patch_sizes) != 2:
            raise ValueError(f"a crossover splits two bands; got {len(patch_sizes)} patch sizes")
        batch, n_frames = crossover.shape
        self.crossover, self.patch_sizes, self.frame_valid = crossover, [tuple(p) for p in patch_sizes], frame_valid
        self.shape = (batch, n_freq, n_frames)
        self.num_bands = 2
        self.grid = _slot_grid(n_freq, n_frames, self.patch_sizes)
        self.slots_per_band = self.grid[0] * self.grid[1]
        edge = crossover.unsqueeze(-1) + 1  # (batch, time, 1) first bin of the high band
        steps = torch.arange(self.grid[0] + 1, device=crossover.device)
        (f_low, _), (f_high, _) = self.patch_sizes
        low = torch.minimum(steps * f_low, edge)  # (batch, time, freq patches + 1)
        high = (edge + steps * f_high).clamp(max=n_freq)
        bounds = torch.stack([low, high], dim=2)  # (batch, time, 2, freq patches + 1), no host copy (CUDA)
        self.bounds = bounds.flatten(2)
        self.counts = self._group(bounds.diff(dim=-1).to(torch.get_default_dtype()))
        self._frame_index: Optional[torch.Tensor] = None
        self._buffer: Optional[torch.Tensor] = None
        # cumulative sum before each bound = at its bin - 1, 0 at bin 0 (shared by every pooled quantity)
        self._last_bins = (self.bounds - 1).clamp(min=0)
        self._after_start = (self.bounds > 0).to(torch.float64)

    def _group(self, per_frame: torch.Tensor) -> torch.Tensor:
        """(batch, time, 2, freq patches) per-frame patch values -> (batch, num_slots), frames grouped."""
        per_frame = _zero_frames(per_frame, self.frame_valid)
        if all(t == 1 for _, t in self.patch_sizes):
            return per_frame.permute(0, 2, 3, 1).reshape(per_frame.shape[0], -1)
        parts = [_group_frames(per_frame[:, :, i], t, self.grid) for i, (_, t) in enumerate(self.patch_sizes)]
        return torch.stack(parts, dim=1).flatten(1)

    def _sums(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, n_frames = x.shape
        # (batch, time, freq): sum of bins 0..f, in one float64 buffer reused by every quantity this layout
        # pools (a loss call pools several; fresh 16 MB blocks per call cost page faults on CPU)
        if self._buffer is None or self._buffer.device != x.device:
            self._buffer = torch.empty(batch, n_frames, x.shape[1], dtype=torch.float64, device=x.device)
        csum = self._buffer.copy_(x.transpose(1, 2)).cumsum_(dim=-1)
        at_bounds = csum.gather(-1, self._last_bins) * self._after_start
        return self._group(at_bounds.view(batch, n_frames, 2, -1).diff(dim=-1)).to(x.dtype)

    def release(self) -> None:
        self._buffer = None

    @property
    def frame_index(self) -> torch.Tensor:
        """(batch, time, freq) long, each bin's patch within its frame: ``0..g-1`` the low band's, ``g..2g-1``
        the high band's (``g`` freq patches per band). Gathered from a table with one row per crossover bin."""
        if self._frame_index is None:
            n_freq = self.shape[1]
            (f_low, _), (f_high, _) = self.patch_sizes
            edge = torch.arange(1, n_freq, device=self.crossover.device).unsqueeze(1)  # first high bin per crossover
            freqs = torch.arange(n_freq, device=edge.device)
            table = torch.where(freqs < edge, freqs // f_low, self.grid[0] + (freqs - edge) // f_high)
            self._frame_index = table.index_select(0, self.crossover.flatten()).view(*self.crossover.shape, n_freq)
        return self._frame_index

    @property
    def index(self) -> torch.Tensor:
        """(batch, freq, time) long slot of each bin, ``num_slots`` for frames past an utterance's end."""
        if self._index is None:
            batch, n_freq, n_frames = self.shape
            device = self.crossover.device
            freqs = torch.arange(n_freq, device=device).view(1, -1, 1)
            edge = self.crossover.unsqueeze(1) + 1  # first bin of the high band
            high = freqs >= edge  # (batch, freq, time)
            (f_low, t_low), (f_high, t_high) = self.patch_sizes
            index = torch.where(high, (freqs - edge) // f_high, freqs // f_low) * self.grid[1]
            frames = torch.arange(n_frames, device=device).view(1, 1, -1)
            index += torch.where(high, frames // t_high, frames // t_low) if (t_low, t_high) != (1, 1) else frames
            index += high * self.slots_per_band
            if self.frame_valid is not None:
                index.masked_fill_(~self.frame_valid.unsqueeze(1), self.num_slots)
            self._index = index
        return self._index

    def to_bins(self, slot_values: torch.Tensor) -> torch.Tensor:
        """Spread slot values (batch, num_slots) back onto bins: (batch, freq, time); 0 (False) outside.

        One-frame patches: a gather of each frame's patch values by :attr:`frame_index`, frequency fastest
        in memory; wider patches: by the per-bin :attr:`index`.
        """
        if any(t != 1 for _, t in self.patch_sizes):
            return PatchLayout.to_bins(self, slot_values)
        batch, _, n_frames = self.shape
        per_frame = slot_values.view(batch, 2 * self.grid[0], n_frames).transpose(1, 2)  # (batch, time, patches)
        per_frame = _zero_frames(per_frame, self.frame_valid)
        return per_frame.gather(-1, self.frame_index).transpose(1, 2)

    def general(self) -> PatchLayout:
        band, start = crossover_band_edges(self.crossover, self.shape[1])
        return patch_layout(band, start, self.patch_sizes, self.shape, self.frame_valid)
