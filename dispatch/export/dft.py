"""STFT and inverse STFT as real convolutions with DFT bases, for ONNX export.

espnet2's STFT encoder and decoder call ``torch.stft`` / ``torch.istft`` on complex tensors, which
neither of torch's ONNX exporters can translate (the TorchScript exporter: "STFT does not currently
support complex types"; ``torch.export``: the pad mask of the frame lengths is data-dependent). The
same transforms written as ``conv1d`` / ``conv_transpose1d`` with fixed bases are plain real graphs.
Hand-written: ``asteroid_filterbanks.TorchSTFTFB`` matches torch.stft too but refuses a window
shorter than the FFT (DCCRN's 400 in 512) and divides by the window sum through boolean-mask
assignment, which the exporters do not keep.

Both match espnet2's :class:`espnet2.layers.stft.Stft` (``center=True`` with reflect padding,
``onesided=True``, ``normalized=False``, the window of ``win_length`` centred in ``n_fft``).
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F


def stft_window(n_fft: int, win_length: int, window: str) -> torch.Tensor:
    """espnet2's analysis window (``torch.<window>_window(win_length)``) centred in ``n_fft`` zeros: (n_fft,)."""
    win = getattr(torch, f"{window}_window")(win_length, dtype=torch.float64)
    left = (n_fft - win_length) // 2
    return F.pad(win, (left, n_fft - win_length - left))


def dft_bases(n_fft: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """cos and -sin of the onesided DFT, (n_fft // 2 + 1, n_fft) each, in float64."""
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64).unsqueeze(1)
    n = torch.arange(n_fft, dtype=torch.float64).unsqueeze(0)
    angle = 2 * math.pi * k * n / n_fft
    return torch.cos(angle), -torch.sin(angle)


class ConvSTFT(torch.nn.Module):
    """``torch.stft(x, n_fft, hop, win_length, window, center=True, return_complex=True)`` as a conv1d.

    Shape:
        wav: (batch, samples); output: real and imaginary parts, (batch, frames, n_fft // 2 + 1) each,
        frames = 1 + samples // hop (espnet2's layout: time before frequency).
    """

    def __init__(self, n_fft: int, hop_length: int, win_length: int, window: str = "hann"):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        cos, sin = dft_bases(n_fft)
        win = stft_window(n_fft, win_length, window)
        self.register_buffer("weight", (torch.cat([cos, sin]) * win).unsqueeze(1).float(), persistent=False)

    def forward(self, wav: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        pad = self.n_fft // 2
        x = F.pad(wav.unsqueeze(1), (pad, pad), mode="reflect")
        spec = F.conv1d(x, self.weight, stride=self.hop_length).transpose(1, 2)
        return spec.chunk(2, dim=2)


class ConvISTFT(torch.nn.Module):
    """``torch.istft(spec, n_fft, hop, win_length, window, center=True, length=samples)`` as a conv_transpose1d.

    Each frame is the inverse onesided DFT (the imaginary parts of the DC and Nyquist bins are ignored,
    as ``irfft`` does) times the window; frames are overlap-added and divided by the overlap-added
    squared window, then the ``n_fft // 2`` padded samples at the start are cut.

    Shape:
        real, imag: (batch, frames, n_fft // 2 + 1); output: (batch, samples).
    """

    def __init__(self, n_fft: int, hop_length: int, win_length: int, window: str = "hann"):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        cos, sin = dft_bases(n_fft)
        scale = torch.full((n_fft // 2 + 1, 1), 2.0, dtype=torch.float64)
        scale[0] = 1.0
        if n_fft % 2 == 0:
            scale[-1] = 1.0  # the Nyquist bin appears once in the full spectrum
        win = stft_window(n_fft, win_length, window)
        bases = torch.cat([cos * scale, sin * scale]) * win / n_fft
        self.register_buffer("weight", bases.unsqueeze(1).float(), persistent=False)
        self.register_buffer("window_sq", (win ** 2).view(1, 1, -1).float(), persistent=False)

    def forward(self, real: torch.Tensor, imag: torch.Tensor, samples: int) -> torch.Tensor:
        spec = torch.cat([real, imag], dim=2).transpose(1, 2)
        wav = F.conv_transpose1d(spec, self.weight, stride=self.hop_length)
        ones = torch.ones_like(spec[:1, :1])
        norm = F.conv_transpose1d(ones, self.window_sq, stride=self.hop_length)
        start = self.n_fft // 2
        # torch.istft refuses a window sum below 1e-11 inside the kept samples; here it only guards a 0/0.
        wav = wav[:, 0, start:start + samples] / norm[:, 0, start:start + samples].clamp_min(1e-11)
        return F.pad(wav, (0, samples - wav.shape[-1]))
