"""Knowledge Gap Score and patch selection (DISPatch, arXiv 2509.15922).

All functions work on per-band slot tensors of shape (batch, bands, slots) and never need gradients:
the selection decides *where* KD applies, it is not trained through.
"""
from __future__ import annotations

import math
from typing import Optional

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


def select_topk(score: torch.Tensor, valid: torch.Tensor, k: float, n_valid: Optional[int] = None) -> torch.Tensor:
    """Per row, the fraction ``k`` of valid patches with the largest score.

    ``m = max(1, floor(k * n_valid))`` patches are kept per row; patches tied with the m-th score are
    kept too (as the reference code's threshold does). Rows without valid patches select nothing.

    The m-th largest valid score is found by one batched ``kthvalue`` (no sort, no host synchronisation):
    it is the ``r``-th smallest valid score, ``r = n_valid - m + 1``. Invalid patches count as ``+inf``
    and each row gets ``R - r`` extra ``-inf`` entries (``R``: the largest ``r`` any row can have), so
    that the ``R``-th smallest entry of every row is its own threshold.

    Args:
        score: (..., patches) Knowledge Gap Scores.
        valid: (..., patches) bool, patches that exist (hold at least one bin).
        k: fraction in (0, 1].
        n_valid: number of valid patches of every row when the caller knows it is the same in all rows
            (no per-row rank is then needed); None = count them.

    Returns:
        (..., patches) bool selection.
    """
    n_slots = score.shape[-1]
    if n_slots == 0:
        return valid.clone()
    masked = score.masked_fill(~valid, float("inf"))
    if n_valid is not None:  # one rank for every row
        if n_valid == 0:
            return torch.zeros_like(valid)
        rank = n_valid - max(1, math.floor(n_valid * k)) + 1
        threshold = masked.kthvalue(rank, dim=-1, keepdim=True).values
        return valid & (masked >= threshold)
    counts = valid.sum(-1, keepdim=True)
    m = torch.floor(counts.to(torch.float64) * k).long().clamp(min=1)
    rank = counts - m + 1  # (..., 1), in [0, R]; 0 for rows without valid patches
    most = n_slots - max(1, math.floor(n_slots * k)) + 1  # R: the rank of a row whose patches are all valid
    pad = torch.arange(most, device=score.device) < (most - rank)  # (..., R) True: a -inf entry
    extra = torch.full(pad.shape, float("inf"), dtype=score.dtype, device=score.device).masked_fill(pad, float("-inf"))
    threshold = torch.cat([masked, extra], dim=-1).kthvalue(most, dim=-1, keepdim=True).values
    return valid & (masked >= threshold) & (counts > 0)


def select_patches(score: torch.Tensor, valid: torch.Tensor, k: float, mode: str,
                   n_valid: Optional[int] = None) -> torch.Tensor:
    """Selection by name, see :data:`SELECTIONS`.

    ``topk``: :func:`select_topk`; ``positive``: patches with KGS > 0; ``topk_positive``: both;
    ``all``: every valid patch (conventional KD).

    Args:
        score: (..., patches) scores (ignored by ``all``; may be None then).
        valid: (..., patches) bool.
        n_valid: see :func:`select_topk`.

    Returns:
        (..., patches) bool selection.
    """
    if mode == "all":
        return valid.clone()
    if mode == "positive":
        return valid & (score > 0)
    if mode == "topk":
        return select_topk(score, valid, k, n_valid)
    if mode == "topk_positive":
        return select_topk(score, valid, k, n_valid) & (score > 0)
    raise ValueError(f"selection={mode!r} is not one of {SELECTIONS}")
