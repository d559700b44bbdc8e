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
from typing import Callable, Dict, NamedTuple, Optional, Tuple, Union

import torch

from dispatch.patches import PatchLayout

EPS = 1e-8


class _Magnitude(torch.autograd.Function):
    """``|z|`` as ``sqrt(re^2 + im^2)``, with ``torch.abs``'s gradient ``grad * z / |z|`` and 0 at ``z = 0``."""

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        mag = _magnitude_values(z)
        ctx.save_for_backward(z, mag)
        return mag

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        z, mag = ctx.saved_tensors
        return _scale_complex(z, _over_magnitude(grad, mag))


def _over_magnitude(x: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    """``x / mag``, 0 where ``mag`` is 0 (``torch.abs``'s gradient there).

    ``nan_to_num_`` rather than ``torch.where(mag > 0, ...)``: a bool mask costs three more passes over
    the spectrogram, which at one CPU thread take longer than the division itself (#16). Where ``mag`` is
    0 the quotient is +-inf or NaN, and ``z = 0`` there, so the gradient ``x / mag * z`` is 0.
    """
    return torch.div(x, mag).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)


def _scale_complex(z: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``z * scale`` for complex ``z`` and real ``scale`` of its shape, without promoting ``scale`` to complex."""
    return torch.view_as_complex(torch.view_as_real(z) * scale.unsqueeze(-1))


def flat_view(x: torch.Tensor) -> torch.Tensor:
    """A dense tensor as 1-D in its memory order (a view, no copy, whatever its strides)."""
    order = sorted(range(x.dim()), key=lambda d: -x.stride(d))
    return x.permute(order).reshape(-1)


def _magnitude_values(z: torch.Tensor) -> torch.Tensor:
    parts = torch.view_as_real(z)
    re, im = parts[..., 0], parts[..., 1]
    return torch.addcmul(re * re, im, im).sqrt_()


def magnitude(z: torch.Tensor) -> torch.Tensor:
    """Magnitude of a complex tensor, the same values for student, teacher and target.

    ``sqrt(re^2 + im^2)`` is about 3x faster than complex ``abs`` on CPU; it is used for every
    spectrogram of a loss call so that equal spectra give exactly equal magnitudes (and a Knowledge Gap
    Score of exactly 0). It differs from ``abs`` by rounding only (``abs`` guards against overflow, which
    spectrogram magnitudes never reach). The gradient is ``grad * z / |z|``, 0 where ``z = 0``.

    Args:
        z: complex tensor of any shape.

    Returns:
        real tensor of the same shape.
    """
    if not z.is_complex():
        return z.abs()
    return _Magnitude.apply(z) if z.requires_grad else _magnitude_values(z)


class _WeightedMagL2(torch.autograd.Function):
    """``sum(diff^2 * weight)`` with ``diff = mag - target``; the gradient ``2 diff weight`` on ``mag`` in one pass."""

    @staticmethod
    def forward(ctx, mag: torch.Tensor, diff: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        dw = diff * weight
        ctx.save_for_backward(dw)
        if dw.stride() != diff.stride():  # the two 1-D views must pair the same bins
            return (diff * dw).sum()
        return torch.dot(flat_view(diff), flat_view(dw))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        (dw,) = ctx.saved_tensors
        return dw * (2 * grad), None, None


def weighted_mag_l2_sum(mag: torch.Tensor, diff: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Squared magnitude error weighted per bin and summed, as one autograd Function.

    The same value and gradient (to rounding) as ``((mag - target).pow(2) * weight).sum()``, in fewer
    passes over the spectrogram: the magnitude-L2 KD term on the selected bins (``weight`` is each bin's
    share of the loss, 0 outside the selection). The caller passes ``diff = mag - target``, which it has
    computed for the Knowledge Gap Score already. The gradient goes to ``mag`` (real), so that it joins
    the other terms' before the one pass of :func:`magnitude`'s backward onto the complex spectrogram.

    Args:
        mag: (batch, freq, time) :func:`magnitude` of the student spectrogram, with its autograd graph.
        diff: (batch, freq, time) ``mag - target``, ``target`` the teacher magnitude (no gradient).
        weight: (batch, freq, time) real, in the memory order of ``diff`` (no gradient).

    Returns:
        scalar.
    """
    return _WeightedMagL2.apply(mag, diff.detach(), weight.detach())


class Spectrum(NamedTuple):
    """A complex spectrogram ``z`` and its magnitude ``mag`` (:func:`magnitude`), both (batch, freq, time).

    ``pooled`` memoises patch sums computed from this spectrum (see :func:`pooled`): one loss call asks
    for the same energies, inner products and errors several times (three pairs of spectra, two band
    distances that share a cosine), and pooling dominates the cost of a per-frame crossover layout.
    """

    z: torch.Tensor
    mag: torch.Tensor
    pooled: Dict[tuple, Tuple[object, torch.Tensor]]

    @classmethod
    def of(cls, x: Union[torch.Tensor, "Spectrum"]) -> "Spectrum":
        return x if isinstance(x, Spectrum) else cls(x, magnitude(x), {})


def pooled(what: object, a: Spectrum, b: Optional[Spectrum], layout: PatchLayout,
           per_bin: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``layout.pool(per_bin())``, (batch, slots), memoised on ``a`` for this ``what``, ``b`` and layout.

    Results computed without autograd are not reused where autograd is on and an input needs it; those
    computed with autograd are reused, detached, where it is off (the KD term's pooled student energy
    serves the Knowledge Gap Score too).
    """
    grad = torch.is_grad_enabled() and (a.z.requires_grad or (b is not None and b.z.requires_grad))
    key = (what, None if b is None else id(b), id(layout))
    if key not in a.pooled or (grad and not a.pooled[key][1].requires_grad):
        a.pooled[key] = ((b, layout), layout.pool(per_bin()))  # b and layout kept alive: their ids stay theirs
    value = a.pooled[key][1]
    return value if grad else value.detach()


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
        a, b = Spectrum.of(a), Spectrum.of(b)
        return pooled(error, a, b, layout, lambda: error(a, b)) / layout.counts.clamp(min=1)

    distance.__name__ = error.__name__
    return distance


def complex_cosine(a: Spectrum, b: Spectrum, layout: PatchLayout, eps: float = EPS) -> torch.Tensor:
    """``1 - Re<a, b> / (|a| |b|)`` with the inner product over each patch's bins.

    Silent patches (zero energy) give 1 and a finite gradient. The norms are ``sqrt`` of each patch's
    energy, multiplied afterwards: for a patch of one real bin (DC or Nyquist, e.g. DFKD's low band when
    the crossover is bin 0) the cosine is then exactly 0 or 2 in any precision (``sqrt(x * x) == |x|``
    in IEEE arithmetic), rather than 1 - 1 +- rounding noise that would rank such patches at random.
    """
    a, b = Spectrum.of(a), Spectrum.of(b)
    inner = pooled("inner", a, b, layout, lambda: _real_inner(a.z, b.z))
    norms = _sqrt0(pooled("energy", a, None, layout, lambda: a.mag.square()))
    norms = norms * _sqrt0(pooled("energy", b, None, layout, lambda: b.mag.square()))
    cosine = 1.0 - inner / norms.clamp(min=eps)
    if not cosine.requires_grad:
        return cosine
    return torch.where(_real_dc_only(a, b, layout), cosine.detach(), cosine)


def _real_dc_only(a: Spectrum, b: Spectrum, layout: PatchLayout) -> torch.Tensor:
    """(batch, slots) bool: patches made of one DC bin, real in both spectra (always so in a one-sided
    STFT of real signals). Their cosine is the constant 0 or 2, so their gradient is set to exactly 0
    (autograd would give rounding noise)."""
    dc_slot = layout.dc_slots()  # (batch, time) slot of each frame's DC bin; num_slots if not counted
    real = (a.z[:, 0, :].imag == 0) & (b.z[:, 0, :].imag == 0)
    hit = real.new_zeros(real.shape[0], layout.num_slots + 1).scatter_(1, dc_slot, real)[:, :layout.num_slots]
    return hit & (layout.counts == 1)


class _RealInner(torch.autograd.Function):
    """Per-bin ``Re(a conj(b))``; the gradient ``grad * b`` (``grad * a``) in one pass over the spectrogram
    (autograd through real/imag views would zero-fill and copy a complex tensor per view)."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a, b)
        return _real_inner_values(a, b)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        a, b = ctx.saved_tensors
        return (_scale_complex(b, grad) if ctx.needs_input_grad[0] else None,
                _scale_complex(a, grad) if ctx.needs_input_grad[1] else None)


def _real_inner_values(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    ra, rb = torch.view_as_real(a), torch.view_as_real(b)
    return torch.addcmul(ra[..., 0] * rb[..., 0], ra[..., 1], rb[..., 1])


def _real_inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-bin ``Re(a conj(b)) = re_a re_b + im_a im_b`` of complex tensors (batch, freq, time)."""
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
        return _RealInner.apply(a, b)
    return _real_inner_values(a, b)


def _sqrt0(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(x)`` for ``x >= 0`` with gradient 0 (not inf) at 0: empty and silent patches stay finite."""
    positive = x > 0
    return torch.where(positive, x, 1.0).sqrt() * positive


def cosine_mag_l2(a: Spectrum, b: Spectrum, layout: PatchLayout, beta: float = 0.5) -> torch.Tensor:
    """DFKD's high-band distance: ``beta * complex_cosine + (1 - beta) * mag_l2``."""
    return beta * complex_cosine(a, b, layout) + (1.0 - beta) * elementwise(mag_l2)(a, b, layout)


def cosine_l2_weights(distance: PatchDistance) -> Optional[Tuple[float, float]]:
    """``(w_cos, w_l2)`` when ``distance`` is ``w_cos * complex_cosine + w_l2 * mag_l2`` (``mag_l2``,
    ``complex_cosine``, ``cosine_mag_l2`` of :data:`DISTANCES`, options bound or not), else None.

    DISPatchLoss computes such distances by a faster route (the magnitude-L2 part per bin, without
    pooling the KD term); other distances take the general one.
    """
    fn, options = getattr(distance, "func", distance), dict(getattr(distance, "keywords", {}) or {})
    if fn is DISTANCES["mag_l2"] and not options:
        return 0.0, 1.0
    if fn is complex_cosine and options.get("eps", EPS) == EPS:
        return 1.0, 0.0
    if fn is cosine_mag_l2 and set(options) <= {"beta"}:
        beta = float(options.get("beta", 0.5))
        return beta, 1.0 - beta
    return None


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
