"""DISPatch: KD on the spectrogram patches where the teacher beats the student."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from dispatch.distances import (
    PatchDistance,
    Spectrum,
    complex_cosine,
    cosine_l2_weights,
    get_distance,
    magnitude,
    weighted_mag_l2_sum,
)
from dispatch.losses.crossover import dfkd_crossover
from dispatch.patches import (
    CrossoverLayout,
    GridLayout,
    PatchLayout,
    PatchSize,
    crossover_band_edges,
    fixed_band_edges,
    patch_layout,
)
from dispatch.selection import SELECTIONS, knowledge_gap_score, select_patches
from dispatch.stft import stft

BandEdges = Union[None, str, Sequence[float]]


def _as_patch(value, option: str) -> PatchSize:
    try:
        f, t = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{option}={value!r}: expected a pair (freq_bins, frames) of positive integers")
    if f < 1 or t < 1:
        raise ValueError(f"{option}={value!r}: patch sizes must be positive integers")
    return f, t


class DISPatchLoss(torch.nn.Module):
    """Distilling Selective Patches (DISPatch) with optional Multi-Scale Selective Patches (MSSP).

    The student, teacher and clean waveforms go through one STFT that belongs to this loss. The
    spectrogram is cut into patches (per band for MSSP); each patch gets a Knowledge Gap Score
    ``KGS_p = E_p(student) - E_p(teacher)``, ``E_p`` being the patch distance to the clean target; per
    utterance and band the top fraction ``topk`` of patches by KGS is selected (without gradient), and
    the KD distance between student and teacher is averaged over the bins of the selected patches.
    ``selection="all"`` gives conventional (non-selective) KD with the same distance.

    Args:
        distance: patch distance name (see :data:`dispatch.distances.DISTANCES`) or callable, or one
            per band.
            With one distance, the loss is the mean over all selected bins; with one per band, the
            loss is the sum over bands of each band's mean (as DFKD adds its low and high terms).
        patch: ``(freq_bins, frames)`` of single-scale patches (reference: (20, 1)).
        bands: MSSP patch sizes, one ``(freq_bins, frames)`` per band from low to high
            (paper's best: ``[(10, 1), (40, 1)]``); replaces ``patch``.
        band_edges: where bands meet: a list of increasing frequencies in Hz (one fewer than
            bands), or ``"crossover"`` for DFKD's per-frame teacher crossover (two bands).
        topk: fraction of patches selected per utterance and band, in (0, 1] (reference: 0.8).
        selection: ``"topk"``, ``"positive"`` (KGS > 0), ``"topk_positive"`` or ``"all"``.
        n_fft, hop_length, win_length: STFT of the loss (reference: 512, 128, 512 at 16 kHz).
        fs: sampling rate, to place band edges given in Hz.
        distance_conf: keyword options bound to every distance (e.g. ``{"beta": 0.5}``).

    Shape:
        - student, teacher, clean: (batch, time) waveforms; shorter than ``n_fft // 2 + 1`` samples
          they are zero-padded, the padding outside every patch.
        - lengths: (batch,) valid samples per utterance, or None.
        - output: scalar.

    Attributes:
        last_selection: (batch, freq, frames) bool, bins that received KD in the last call.
        last_stats: detached scalars of the last call: ``selected`` (fraction of valid bins) and
            ``selected_band{i}`` per band when there are several bands.

    Examples:
        >>> loss = DISPatchLoss(distance="mag_l2", patch=(20, 1), topk=0.8)
        >>> s, t, y = torch.randn(3, 2, 16000).unbind(0)
        >>> loss(s, t, y).shape
        torch.Size([])

    References:
        D. Kim and J.-W. Choi, "DISPatch: Distilling Selective Patches for Speech Enhancement",
        arXiv 2509.15922 (ICASSP 2026).
    """

    def __init__(
        self,
        distance: Union[str, PatchDistance, Sequence[Union[str, PatchDistance]]] = "mag_l2",
        patch: Sequence[int] = (20, 1),
        bands: Optional[Sequence[Sequence[int]]] = None,
        band_edges: BandEdges = None,
        topk: float = 0.8,
        selection: str = "topk",
        n_fft: int = 512,
        hop_length: int = 128,
        win_length: Optional[int] = None,
        fs: int = 16000,
        distance_conf: Optional[Dict] = None,
    ):
        super().__init__()
        if selection not in SELECTIONS:
            raise ValueError(f"selection={selection!r} is not one of {SELECTIONS}")
        if not (isinstance(topk, (int, float)) and 0.0 < topk <= 1.0):
            raise ValueError(f"topk={topk!r}: the selected fraction must lie in (0, 1]")
        for option, value in (("n_fft", n_fft), ("hop_length", hop_length), ("win_length", win_length), ("fs", fs)):
            if value is not None and value < 1:
                raise ValueError(f"{option}={value!r}: must be a positive integer")
        win_length = win_length or n_fft
        if win_length > n_fft or hop_length < 1:
            raise ValueError(f"STFT options n_fft={n_fft}, win_length={win_length}, hop_length={hop_length} do not fit")
        self.n_fft, self.hop_length, self.win_length, self.fs = n_fft, hop_length, win_length, fs
        self.n_freq = n_fft // 2 + 1
        self.topk, self.selection = float(topk), selection

        if bands is None:
            self.patch_sizes: List[PatchSize] = [_as_patch(patch, "patch")]
            if self.patch_sizes[0][0] > self.n_freq:
                raise ValueError(
                    f"patch={self.patch_sizes[0]}: {self.patch_sizes[0][0]} bins exceed the {self.n_freq} bins "
                    f"of the KD STFT (n_fft={n_fft})"
                )
        else:
            self.patch_sizes = [_as_patch(b, f"bands[{i}]") for i, b in enumerate(bands)]
        n_bands = len(self.patch_sizes)
        self.crossover, self.edge_bins = self._parse_edges(band_edges, n_bands)

        names = list(distance) if isinstance(distance, (list, tuple)) else [distance] * n_bands
        if len(names) != n_bands:
            raise ValueError(f"distance={distance!r}: give one distance, or one per band ({n_bands} bands)")
        self.per_band_terms = isinstance(distance, (list, tuple))
        self.distances: List[PatchDistance] = [
            n if callable(n) else get_distance(n, **(distance_conf or {})) for n in names
        ]
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)

        # Fast layouts (pad-and-view, cumulative sums) for every configuration; False = the general
        # index-and-scatter_add layout of dispatch.patches.patch_layout (kept as the reference).
        self.fast_layout = True
        self.fast_stft = True  # the student's STFT by dispatch.stft (cheap backward); False = torch.stft
        # (w_cos, w_l2) per band when every distance is w_cos * complex_cosine + w_l2 * mag_l2: the fast
        # route of _forward_split; None = the general route (any distance)
        split = [cosine_l2_weights(d) for d in self.distances]
        self._split: Optional[List[Tuple[float, float]]] = None if None in split else split
        if self._split is not None:  # as buffers: on the loss's device without a host copy per call
            self.register_buffer("_w_cos", torch.tensor([w for w, _ in split]).view(1, -1, 1), persistent=False)
            self.register_buffer("_w_l2", torch.tensor([w for _, w in split]).view(1, -1, 1), persistent=False)
        self._layout_cache: Optional[Tuple[tuple, PatchLayout]] = None
        self._last: Optional[Tuple[PatchLayout, torch.Tensor]] = None
        self._last_selection: Optional[torch.Tensor] = None
        self.last_stats: Dict[str, torch.Tensor] = {}

    def _parse_edges(self, band_edges: BandEdges, n_bands: int) -> Tuple[bool, List[int]]:
        if n_bands == 1:
            if band_edges not in (None, [], ()):
                raise ValueError(f"band_edges={band_edges!r} needs `bands` (one patch size per band)")
            return False, []
        if band_edges == "crossover":
            if n_bands != 2:
                raise ValueError(f"band_edges='crossover' splits two bands; bands has {n_bands}")
            for i, (f, _) in enumerate(self.patch_sizes):
                if f > self.n_freq:
                    raise ValueError(f"bands[{i}]={self.patch_sizes[i]}: {f} bins exceed the {self.n_freq} STFT bins")
            return True, []
        if band_edges is None or isinstance(band_edges, str) or len(band_edges) != n_bands - 1:
            raise ValueError(
                f"band_edges={band_edges!r}: expected 'crossover' or {n_bands - 1} increasing frequencies in Hz"
            )
        edges = [round(float(hz) * self.n_fft / self.fs) for hz in band_edges]
        bounds = [0, *edges, self.n_freq]
        for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
            if hi <= lo:
                raise ValueError(f"band_edges={list(band_edges)} Hz: band {i} is empty at fs={self.fs}, n_fft={self.n_fft}")
            if self.patch_sizes[i][0] > hi - lo:
                raise ValueError(
                    f"bands[{i}]={self.patch_sizes[i]}: {self.patch_sizes[i][0]} bins do not fit band {i}, "
                    f"which has {hi - lo} bins ({lo}..{hi - 1})"
                )
        return False, edges

    @property
    def needs_clean(self) -> bool:
        return self.selection != "all"

    def spectrogram(self, wav: torch.Tensor) -> torch.Tensor:
        """(batch, time) -> complex (batch, freq, frames), the loss's own STFT.

        With autograd (the student) and ``fast_stft``, :func:`dispatch.stft.stft`: the same values, a
        backward pass by inverse real FFT and overlap-add instead of torch.stft's.
        """
        if wav.shape[-1] <= self.n_fft // 2:
            raise ValueError(
                f"waveforms of {wav.shape[-1]} samples are shorter than the KD STFT needs (> {self.n_fft // 2})"
            )
        if self.fast_stft and wav.requires_grad and torch.is_grad_enabled():
            return stft(wav, self.n_fft, self.hop_length, self.win_length, self.window.to(wav.dtype))
        return torch.stft(
            wav, self.n_fft, self.hop_length, self.win_length, self.window.to(wav.dtype), return_complex=True
        )

    def layout(
        self, teacher_spec: torch.Tensor, frame_valid: Optional[torch.Tensor], teacher_mag: Optional[torch.Tensor] = None
    ) -> PatchLayout:
        """Patch layout for a batch; DFKD's crossover comes from the teacher magnitude.

        Fixed bands without lengths depend only on the shape: that layout is reused across calls
        (chunked training batches all have the same shape).
        """
        n_freq = teacher_spec.shape[1]
        reusable = not self.crossover and frame_valid is None
        key = (tuple(teacher_spec.shape), teacher_spec.device, torch.get_default_dtype(), self.fast_layout)
        if reusable and self._layout_cache is not None and self._layout_cache[0] == key:
            return self._layout_cache[1]
        if self.crossover:
            mag = magnitude(teacher_spec) if teacher_mag is None else teacher_mag
            crossover = dfkd_crossover(mag)
            if self.fast_layout:
                return CrossoverLayout(crossover, self.patch_sizes, n_freq, frame_valid)
            band, start = crossover_band_edges(crossover, n_freq)
        elif self.fast_layout:
            layout = GridLayout([0, *self.edge_bins, n_freq], self.patch_sizes, teacher_spec.shape, frame_valid,
                                device=teacher_spec.device)
            if reusable:
                self._layout_cache = (key, layout)
            return layout
        else:
            band, start = fixed_band_edges(n_freq, self.edge_bins, device=teacher_spec.device)
        layout = patch_layout(band, start, self.patch_sizes, teacher_spec.shape, frame_valid)
        if reusable:
            self._layout_cache = (key, layout)
        return layout

    def band_distance(self, a: Spectrum, b: Spectrum, layout: PatchLayout) -> torch.Tensor:
        """Patch distances (batch, bands, slots), each band by its own distance."""
        a, b = Spectrum.of(a), Spectrum.of(b)
        if not self.per_band_terms:
            return layout.by_band(self.distances[0](a, b, layout))
        return torch.stack([layout.by_band(d(a, b, layout))[:, i] for i, d in enumerate(self.distances)], dim=1)

    def forward(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        clean: Optional[torch.Tensor] = None,
        lengths: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        _check_inputs(student, teacher, clean, lengths, self.needs_clean)
        batch, n_samples = student.shape
        waves = [student, teacher.detach()] + ([clean] if self.needs_clean else [])
        min_samples = self.n_fft // 2 + 1  # the STFT's reflect padding needs more than n_fft // 2 samples
        if n_samples < min_samples:
            # A batch of very short utterances must not stop training: zero-pad it, and keep the
            # padded frames out of the patches through `lengths`.
            waves = [torch.nn.functional.pad(w, (0, min_samples - n_samples)) for w in waves]
            if lengths is None:
                lengths = torch.full((batch,), n_samples, dtype=torch.long)
        # Only the student's STFT needs autograd. The teacher's and the target's are separate calls: one
        # batched call over both ran 2-4x slower on CPU at batch 16 x 4 s (twice the working set, #16).
        student_spec = self.spectrogram(waves[0])
        with torch.no_grad():
            fixed = [self.spectrogram(w) for w in waves[1:]]
        frame_valid = None
        if lengths is not None:
            n_frames = 1 + lengths.to(student.device) // self.hop_length
            frame_valid = torch.arange(student_spec.shape[-1], device=student.device) < n_frames.unsqueeze(1)
        return self.forward_spec(student_spec, fixed[0], fixed[1] if self.needs_clean else None, frame_valid)

    def forward_spec(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        clean: Optional[torch.Tensor] = None,
        frame_valid: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """The loss on complex spectrograms (batch, freq, frames); frame_valid: (batch, frames) bool."""
        student, teacher = Spectrum.of(student), Spectrum.of(teacher.detach())
        clean = Spectrum.of(clean) if clean is not None else None
        layout = self.layout(teacher.z, frame_valid, teacher.mag)
        valid = layout.by_band(layout.counts > 0)
        if self._split is not None:
            return self._forward_split(student, teacher, clean, layout, valid)
        # the KD distances first, with autograd: the score below reuses their pooled student energies
        distance = self.band_distance(student, teacher, layout)
        with torch.no_grad():
            score = self._score(student, teacher, clean, layout) if self.needs_clean else None
            selected = self._select(score, valid, layout)
            weight = layout.by_band(layout.counts) * selected  # selected bins per slot
        weighted = (distance * weight).sum(dim=(0, 2))  # (bands,)
        loss = (weighted * self._band_norm(weight)).sum()
        self._record(layout, selected, weight, valid)
        return loss

    def _select(self, score: Optional[torch.Tensor], valid: torch.Tensor, layout: PatchLayout) -> torch.Tensor:
        """(batch, bands, slots) bool selection (score None for ``selection="all"``)."""
        return select_patches(score, valid, self.topk, self.selection, getattr(layout, "uniform_valid", None))

    def _band_norm(self, weight: torch.Tensor) -> torch.Tensor:
        """(bands,) factor of each band's weighted distance sum: one over the selected bins of that band
        (distance per band) or of all bands (one distance)."""
        n_selected = weight.sum(dim=(0, 2))
        if self.per_band_terms:
            return 1.0 / n_selected.clamp(min=1)
        return (1.0 / n_selected.sum().clamp(min=1)).expand(n_selected.shape)

    def _forward_split(self, student: Spectrum, teacher: Spectrum, clean: Optional[Spectrum], layout: PatchLayout,
                       valid: torch.Tensor) -> torch.Tensor:
        """The loss for distances ``w_cos * complex_cosine + w_l2 * mag_l2`` per band (``self._split``).

        The same value as the general route: ``sum_p weight_p * d_p`` with ``weight_p`` the selected bins
        of patch ``p``, whose magnitude-L2 part ``weight_p * mean_p(e) = sum of e over p's bins`` is summed
        per bin by :func:`weighted_mag_l2_sum` (no pooling, no pooled gradient); only the cosine is pooled.
        """
        w_cos, w_l2 = zip(*self._split)
        cosine = layout.by_band(complex_cosine(student, teacher, layout)) if any(w_cos) else None
        with torch.no_grad():
            diff = student.mag.detach() - teacher.mag if any(w_l2) else None  # (batch, freq, time)
            score = self._score(student, teacher, clean, layout, diff) if self.needs_clean else None
            selected = self._select(score, valid, layout)
            weight = layout.by_band(layout.counts) * selected  # selected bins per slot
            norm = self._band_norm(weight)  # (bands,)
        layout.release()
        loss = student.mag.new_zeros(())
        if cosine is not None:
            loss = loss + ((cosine * weight).sum(dim=(0, 2)) * self._w_cos.view(-1) * norm).sum()
        if diff is not None:
            with torch.no_grad():
                share = selected * self._w_l2 * norm.view(1, -1, 1)  # (batch, bands, slots): each bin's factor
                bin_weight = layout.to_bins(share.flatten(1).to(diff.dtype))
            loss = loss + weighted_mag_l2_sum(student.mag, diff, bin_weight)
        self._record(layout, selected, weight, valid)
        return loss

    @torch.no_grad()
    def patch_scores(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        clean: torch.Tensor,
        frame_valid: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Knowledge Gap Score of the patch each bin belongs to, for inspection and pictures.

        The scores are those :meth:`forward_spec` ranks (same layout, band distances and clean target),
        computed whatever the ``selection`` mode, so that plain KD can show where the teacher is better.

        Args:
            student, teacher, clean: complex spectrograms (batch, freq, frames) from :meth:`spectrogram`.
            frame_valid: (batch, frames) bool, or None.

        Returns:
            (batch, freq, frames) real KGS, positive where the teacher is closer to the clean target;
            0 on bins outside every patch (frames past the utterance's length).
        """
        student, teacher, clean = Spectrum.of(student), Spectrum.of(teacher), Spectrum.of(clean)
        layout = self.layout(teacher.z, frame_valid, teacher.mag)
        return layout.to_bins(self._score(student, teacher, clean, layout).flatten(1))

    def _score(self, student: Spectrum, teacher: Spectrum, clean: Spectrum, layout: PatchLayout,
               diff: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Knowledge Gap Scores (batch, bands, slots): band distances to the clean target, student minus teacher.

        ``diff``: ``|S| - |T|`` (batch, freq, time) when the caller has it (distances with a magnitude-L2 part).
        """
        if self._split is None:
            return knowledge_gap_score(
                self.band_distance(student, clean, layout), self.band_distance(teacher, clean, layout)
            )
        w_cos, w_l2 = zip(*self._split)
        score = 0.0
        if any(w_cos):
            score = self._w_cos * layout.by_band(
                complex_cosine(student, clean, layout) - complex_cosine(teacher, clean, layout))
        if any(w_l2):
            # magnitude L2 as one patch mean: (|S|-|Y|)^2 - (|T|-|Y|)^2 = (|S|-|T|)(|S|+|T|-2|Y|)
            diff = student.mag.detach() - teacher.mag if diff is None else diff
            gap = (student.mag.detach() + teacher.mag).add_(clean.mag, alpha=-2).mul_(diff)
            score = score + self._w_l2 * layout.by_band(layout.pool(gap) / layout.counts.clamp(min=1))
        return score

    @property
    def last_selection(self) -> Optional[torch.Tensor]:
        """(batch, freq, frames) bool, bins that received KD in the last call (spread onto bins on first read)."""
        if self._last_selection is None and self._last is not None:
            layout, selected = self._last
            with torch.no_grad():
                self._last_selection = layout.to_bins(selected.flatten(1))
            self._last = None
        return self._last_selection

    @torch.no_grad()
    def _record(self, layout: PatchLayout, selected, weight, valid) -> None:
        self._last, self._last_selection = (layout, selected), None
        n_valid = (layout.by_band(layout.counts) * valid).sum(dim=(0, 2))
        n_sel = weight.sum(dim=(0, 2))
        stats = {"selected": n_sel.sum() / n_valid.sum().clamp(min=1)}
        if len(self.patch_sizes) > 1:
            for i in range(len(self.patch_sizes)):
                stats[f"selected_band{i}"] = n_sel[i] / n_valid[i].clamp(min=1)
        self.last_stats = stats


def _check_inputs(student, teacher, clean, lengths, needs_clean: bool) -> None:
    if student.dim() != 2:
        raise ValueError(f"student waveform must be (batch, time), got shape {tuple(student.shape)}")
    if teacher.shape != student.shape:
        raise ValueError(f"teacher shape {tuple(teacher.shape)} differs from student shape {tuple(student.shape)}")
    if needs_clean:
        if clean is None:
            raise ValueError("this KD loss selects patches against the clean target: pass `clean`")
        if clean.shape != student.shape:
            raise ValueError(f"clean shape {tuple(clean.shape)} differs from student shape {tuple(student.shape)}")
    if lengths is not None and lengths.shape != (student.shape[0],):
        raise ValueError(f"lengths must have shape ({student.shape[0]},), got {tuple(lengths.shape)}")
