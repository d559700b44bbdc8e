"""Patch distances between two complex spectrograms.

A patch distance maps spectrograms ``a``, ``b`` of shape (batch, freq, time) to one value per patch,
(batch, slots), given the patch layout. Element-wise distances are the mean of a per-bin error over the
patch's bins; the complex cosine distance compares whole patches as vectors.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Dict

import torch

from dispatch.patches import PatchLayout

EPS = 1e-8
PatchDistance = Callable[[torch.Tensor, torch.Tensor, PatchLayout], torch.Tensor]


def mag_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-bin ``| |a| - |b| |``; (batch, freq, time) complex -> real."""
    return (a.abs() - b.abs()).abs()


def mag_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-bin ``(|a| - |b|)^2``; the reference code's error."""
    return (a.abs() - b.abs()).pow(2)


def complex_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-bin ``|Re a - Re b| + |Im a - Im b|``."""
    d = a - b
    return d.real.abs() + d.imag.abs()


def log_mag_l1(a: torch.Tensor, b: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Per-bin ``|log(|a| + eps) - log(|b| + eps)|``."""
    return (torch.log(a.abs() + eps) - torch.log(b.abs() + eps)).abs()


def elementwise(error: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> PatchDistance:
    """Patch distance = mean over the patch's bins of a per-bin error."""

    def distance(a: torch.Tensor, b: torch.Tensor, layout: PatchLayout) -> torch.Tensor:
        return layout.pool(error(a, b)) / layout.counts.clamp(min=1)

    distance.__name__ = error.__name__
    return distance


def complex_cosine(a: torch.Tensor, b: torch.Tensor, layout: PatchLayout, eps: float = EPS) -> torch.Tensor:
    """``1 - Re<a, b> / (|a| |b|)`` with the inner product over each patch's bins.

    Silent patches (zero energy) give 1 and a finite gradient.
    """
    inner = layout.pool((a * b.conj()).real)
    norms = (layout.pool(a.real.pow(2) + a.imag.pow(2)) * layout.pool(b.real.pow(2) + b.imag.pow(2)))
    return 1.0 - inner / norms.clamp(min=eps * eps).sqrt()


def cosine_mag_l2(a: torch.Tensor, b: torch.Tensor, layout: PatchLayout, beta: float = 0.5) -> torch.Tensor:
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
    return partial(DISTANCES[name], **kwargs) if kwargs else DISTANCES[name]
