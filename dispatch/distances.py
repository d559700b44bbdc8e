"""Patch distances between two complex spectrograms.

A patch distance maps spectra ``a``, ``b`` (:class:`Spectrum`: complex values and magnitudes, each
(batch, freq, time)) to one value per patch, (batch, slots), given the patch layout. Element-wise distances
are the mean of a per-bin error over the patch's bins; the complex cosine distance compares whole patches
as vectors. Magnitudes are computed once per spectrogram (``Spectrum.of``) because one loss call compares
the same three spectrograms pairwise several times.
"""
from __future__ import annotations

import inspect
from functools import partial
from typing import Callable, Dict, NamedTuple, Union

import torch

from dispatch.patches import PatchLayout

EPS = 1e-8


class Spectrum(NamedTuple):
    """A complex spectrogram ``z`` and its magnitude ``mag``, both (batch, freq, time)."""

    z: torch.Tensor
    mag: torch.Tensor

    @classmethod
    def of(cls, x: Union[torch.Tensor, "Spectrum"]) -> "Spectrum":
        return x if isinstance(x, Spectrum) else cls(x, x.abs())


PatchDistance = Callable[[Spectrum, Spectrum, PatchLayout], torch.Tensor]


def mag_l1(a: Spectrum, b: Spectrum) -> torch.Tensor:
    """Per-bin ``| |a| - |b| |``."""
    return (a.mag - b.mag).abs()


def mag_l2(a: Spectrum, b: Spectrum) -> torch.Tensor:
    """Per-bin ``(|a| - |b|)^2``; the reference code's error."""
    return (a.mag - b.mag).pow(2)


def complex_l1(a: Spectrum, b: Spectrum) -> torch.Tensor:
    """Per-bin ``|Re a - Re b| + |Im a - Im b|``."""
    d = a.z - b.z
    return d.real.abs() + d.imag.abs()


def log_mag_l1(a: Spectrum, b: Spectrum, eps: float = EPS) -> torch.Tensor:
    """Per-bin ``|log(|a| + eps) - log(|b| + eps)|``."""
    return (torch.log(a.mag + eps) - torch.log(b.mag + eps)).abs()


def elementwise(error: Callable[[Spectrum, Spectrum], torch.Tensor]) -> PatchDistance:
    """Patch distance = mean over the patch's bins of a per-bin error."""

    def distance(a: Spectrum, b: Spectrum, layout: PatchLayout) -> torch.Tensor:
        return layout.pool(error(Spectrum.of(a), Spectrum.of(b))) / layout.counts.clamp(min=1)

    distance.__name__ = error.__name__
    return distance


def complex_cosine(a: Spectrum, b: Spectrum, layout: PatchLayout, eps: float = EPS) -> torch.Tensor:
    """``1 - Re<a, b> / (|a| |b|)`` with the inner product over each patch's bins.

    Silent patches (zero energy) give 1 and a finite gradient.
    """
    a, b = Spectrum.of(a), Spectrum.of(b)
    inner = layout.pool((a.z * b.z.conj()).real)
    norms = layout.pool(a.mag.pow(2)) * layout.pool(b.mag.pow(2))
    return 1.0 - inner / norms.clamp(min=eps * eps).sqrt()


def cosine_mag_l2(a: Spectrum, b: Spectrum, layout: PatchLayout, beta: float = 0.5) -> torch.Tensor:
    """DFKD's high-band distance: ``beta * complex_cosine + (1 - beta) * mag_l2``."""
    return beta * complex_cosine(a, b, layout) + (1.0 - beta) * elementwise(mag_l2)(a, b, layout)


DISTANCES: Dict[str, PatchDistance] = {
    "mag_l1": elementwise(mag_l1),
    "mag_l2": elementwise(mag_l2),
    "complex_l1": elementwise(complex_l1),
    "log_mag_l1": elementwise(log_mag_l1),
    "complex_cosine": complex_cosine,
    "cosine_mag_l2": cosine_mag_l2,
}


def get_distance(name: str, **kwargs) -> PatchDistance:
    """Patch distance by name (see :data:`DISTANCES`); ``kwargs`` bind its options (e.g. ``beta``)."""
    if name not in DISTANCES:
        raise ValueError(f"distance={name!r} is unknown; choose one of {sorted(DISTANCES)}")
    options = [p for p in inspect.signature(DISTANCES[name]).parameters if p not in ("a", "b", "layout")]
    unknown = sorted(set(kwargs) - set(options))
    if unknown:  # a partial would accept them and fail at the first batch
        raise ValueError(f"distance={name}: distance_conf has unknown option(s) {unknown}; options of {name}: {options}")
    return partial(DISTANCES[name], **kwargs) if kwargs else DISTANCES[name]
