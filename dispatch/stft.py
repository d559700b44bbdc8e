"""An STFT whose backward pass is cheap: the KD losses' student spectrogram (issue 16).

``torch.stft``'s own backward runs a complex FFT per frame and scatters the frames back with
``index_add_``. The adjoint of a one-sided STFT of a real signal is, per frame, a real inverse FFT of
the gradient with the one-sided weights folded in (DC and Nyquist once, every other bin twice), times the
window; the frames are then overlap-added as shifted views (``hop`` divides ``n_fft``) or by ``fold``.
The forward pass is ``torch.stft`` itself, so values are unchanged.

Gradient convention: for a real loss ``L`` of the complex spectrogram ``X = A x`` (``A`` complex linear,
``x`` real), torch passes ``g = dL/dRe X + i dL/dIm X`` and expects ``dL/dx = Re(A^H g)``.
"""
from __future__ import annotations

from typing import Optional

import torch


def padded_window(window: torch.Tensor, n_fft: int) -> torch.Tensor:
    """A window of ``win_length <= n_fft`` samples zero-padded on both sides to ``n_fft``, as torch.stft does."""
    left = (n_fft - window.shape[0]) // 2
    return torch.nn.functional.pad(window, (left, n_fft - window.shape[0] - left))


def overlap_add(frames: torch.Tensor, hop: int, length: int) -> torch.Tensor:
    """Adjoint of framing: sum frames (batch, frames, n_fft) placed ``hop`` apart into (batch, length).

    Samples past the last frame get 0 (``length`` may exceed the frames' span).
    """
    batch, n_frames, n_fft = frames.shape
    span = (n_frames - 1) * hop + n_fft
    if n_fft % hop == 0:
        shifts = n_fft // hop
        out = frames.new_zeros(batch, n_frames + shifts - 1, hop)
        for r in range(shifts):
            out[:, r:r + n_frames] += frames[:, :, r * hop:(r + 1) * hop]
        out = out.view(batch, span)
    else:
        out = torch.nn.functional.fold(frames.transpose(1, 2), (1, span), (1, n_fft), stride=(1, hop)).view(batch, span)
    return torch.nn.functional.pad(out, (0, length - span)) if length > span else out[:, :length]


class _STFT(torch.autograd.Function):
    """One-sided STFT of real (batch, samples) without centring; backward by inverse real FFT + overlap-add."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor) -> torch.Tensor:
        ctx.n_fft, ctx.hop, ctx.length = n_fft, hop, x.shape[-1]
        ctx.save_for_backward(window)
        return torch.stft(x, n_fft, hop, n_fft, window, center=False, return_complex=True)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        (window,) = ctx.saved_tensors
        n_fft = ctx.n_fft
        weights = torch.full((grad.shape[1], 1), n_fft / 2, dtype=window.dtype, device=grad.device)
        weights[0] = n_fft  # DC once (the inverse FFT would count it once, scaled by 1/n)
        if n_fft % 2 == 0:
            weights[-1] = n_fft  # Nyquist once
        scaled = torch.view_as_complex(torch.view_as_real(grad) * weights.unsqueeze(-1))  # real weights, no promotion
        frames = torch.fft.irfft(scaled.transpose(1, 2), n=n_fft, dim=-1) * window  # (batch, frames, n)
        return overlap_add(frames, ctx.hop, ctx.length), None, None, None


def stft(x: torch.Tensor, n_fft: int, hop_length: int, win_length: Optional[int], window: torch.Tensor) -> torch.Tensor:
    """``torch.stft(x, n_fft, hop_length, win_length, window, center=True, pad_mode="reflect",
    return_complex=True)`` with the cheap backward of :class:`_STFT`.

    Args:
        x: (batch, samples) real, more than ``n_fft // 2`` samples.
        window: (win_length,) real.

    Returns:
        (batch, n_fft // 2 + 1, frames) complex.
    """
    if win_length is not None and win_length < n_fft:
        window = padded_window(window, n_fft)
    pad = n_fft // 2
    x = torch.nn.functional.pad(x.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    return _STFT.apply(x, n_fft, hop_length, window)
