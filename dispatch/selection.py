"""Knowledge Gap Score and patch selection (DISPatch, arXiv 2509.15922).

All functions work on per-band slot tensors of shape (batch, bands, slots) and never need gradients:
the selection decides *where* KD applies, it is not trained through.
"""
from __future__ import annotations

import torch

SELECTIONS = ("topk", "positive", "topk_positive", "all")


def knowledge_gap_score(student_error: torch.Tensor, teacher_error: torch.Tensor) -> torch.Tensor:
    """KGS_p = E_p(student) - E_p(teacher): positive where the teacher is closer to the clean target.

    Args:
        student_error, teacher_error: (..., patches) patch errors against the clean target.

    Returns:
        (..., patches) scores.
    """
    return student_error - teacher_error


def select_topk(score: torch.Tensor, valid: torch.Tensor, k: float) -> torch.Tensor:
    """Per row, the fraction ``k`` of valid patches with the largest score.

    ``m = max(1, floor(k * n_valid))`` patches are kept per row; patches tied with the m-th score are
    kept too (as the reference code's threshold does). Rows without valid patches select nothing.

    Args:
        score: (..., patches) Knowledge Gap Scores.
        valid: (..., patches) bool, patches that exist (hold at least one bin).
        k: fraction in (0, 1].

    Returns:
        (..., patches) bool selection.
    """
    n_valid = valid.sum(-1, keepdim=True)
    m = torch.floor(n_valid.to(torch.float64) * k).long().clamp(min=1)
    masked = score.masked_fill(~valid, float("-inf"))
    ranked = masked.sort(dim=-1, descending=True).values
    threshold = ranked.gather(-1, (m - 1).clamp(max=score.shape[-1] - 1))
    return valid & (masked >= threshold) & (n_valid > 0)


def select_patches(score: torch.Tensor, valid: torch.Tensor, k: float, mode: str) -> torch.Tensor:
    """Selection by name, see :data:`SELECTIONS`.

    ``topk``: :func:`select_topk`; ``positive``: patches with KGS > 0; ``topk_positive``: both;
    ``all``: every valid patch (conventional KD).

    Args:
        score: (..., patches) scores (ignored by ``all``; may be None then).
        valid: (..., patches) bool.

    Returns:
        (..., patches) bool selection.
    """
    if mode == "all":
        return valid.clone()
    if mode == "positive":
        return valid & (score > 0)
    if mode == "topk":
        return select_topk(score, valid, k)
    if mode == "topk_positive":
        return select_topk(score, valid, k) & (score > 0)
    raise ValueError(f"selection={mode!r} is not one of {SELECTIONS}")
