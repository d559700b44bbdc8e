"""SI-SNR of the student output to the teacher output: a time-domain KD baseline (no selection)."""
from __future__ import annotations

from typing import Optional

import torch


def si_snr(estimate: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SNR in dB over the masked samples.

    espnet2's SISNRLoss has no lengths; padded batches need the mask so that padding does not shift
    the means and energies.

    Args:
        estimate, reference: (batch, time).
        mask: (batch, time) 1.0 for valid samples.

    Returns:
        (batch,) SI-SNR in dB.
    """
    n = mask.sum(-1, keepdim=True).clamp(min=1)
    estimate = (estimate - (estimate * mask).sum(-1, keepdim=True) / n) * mask
    reference = (reference - (reference * mask).sum(-1, keepdim=True) / n) * mask
    scale = (estimate * reference).sum(-1, keepdim=True) / (reference.pow(2).sum(-1, keepdim=True) + eps)
    target = scale * reference
    noise = estimate - target
    return 10 * torch.log10((target.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps))


class SISNRKDLoss(torch.nn.Module):
    """Negative SI-SNR of the student waveform with the teacher waveform as reference.

    Shape:
        - student, teacher: (batch, time); clean is ignored; lengths: (batch,) or None.
        - output: scalar (mean over the batch, in dB, lower is better).
    """

    needs_clean = False

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps
        self.last_selection: Optional[torch.Tensor] = None
        self.last_stats = {}

    def forward(self, student, teacher, clean=None, lengths=None) -> torch.Tensor:
        if teacher.shape != student.shape:
            raise ValueError(f"teacher shape {tuple(teacher.shape)} differs from student shape {tuple(student.shape)}")
        mask = torch.ones_like(student)
        if lengths is not None:
            mask = (torch.arange(student.shape[-1], device=student.device) < lengths.unsqueeze(1)).to(student.dtype)
        return -si_snr(student, teacher.detach(), mask, self.eps).mean()
