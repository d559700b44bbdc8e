"""Perceptual intrusive measures: PESQ (ITU-T P.862 / P.862.2) and (E)STOI.

All functions take 1-D float arrays ``ref`` (clean) and ``est`` (estimate) of equal length
sampled at ``fs`` Hz and return one float.
"""
import logging
import math

import numpy as np
import pesq as pesq_lib
import pystoi

# P.862.1 maps raw P.862 scores to MOS-LQO with 0.999 + 4 / (1 + exp(-a * raw + b)).
_P862_1_A = 1.4945
_P862_1_B = 4.6607


def _pesq(ref: np.ndarray, est: np.ndarray, fs: int, mode: str) -> float:
    """PESQ MOS-LQO of the ``pesq`` package (ITU reference C code); NaN when no speech is found."""
    try:
        return float(pesq_lib.pesq(fs, ref, est, mode))
    except pesq_lib.NoUtterancesError:
        # Same policy as espnet2's enh_scoring: an all-silent reference has no PESQ.
        logging.warning("PESQ found no utterance in the reference; returning NaN")
        return math.nan


def pesq_wb(ref: np.ndarray, est: np.ndarray, fs: int) -> float:
    """Wide-band PESQ (P.862.2 MOS-LQO, 1.04 to 4.64); needs fs = 16000."""
    if fs != 16000:
        raise ValueError(f"wide-band PESQ needs 16000 Hz audio, got {fs} Hz")
    return _pesq(ref, est, fs, "wb")


def pesq_nb(ref: np.ndarray, est: np.ndarray, fs: int) -> float:
    """Narrow-band PESQ (P.862 with the P.862.1 MOS-LQO mapping, 1.02 to 4.55); fs is 8000 or 16000."""
    if fs not in (8000, 16000):
        raise ValueError(f"narrow-band PESQ needs 8000 or 16000 Hz audio, got {fs} Hz")
    return _pesq(ref, est, fs, "nb")


def pesq_nb_raw(ref: np.ndarray, est: np.ndarray, fs: int) -> float:
    """Raw P.862 score (-0.5 to 4.5), the PESQ that Loizou's composite measures were fitted on.

    The ``pesq`` package returns only the P.862.1 mapped score; the mapping is a logistic curve,
    so the raw score is recovered exactly (up to float32 rounding) by inverting it.
    """
    mos_lqo = pesq_nb(ref, est, fs)
    return _P862_1_B / _P862_1_A - math.log(4.0 / (mos_lqo - 0.999) - 1.0) / _P862_1_A


def stoi(ref: np.ndarray, est: np.ndarray, fs: int) -> float:
    """STOI (Taal et al. 2011) in [0, 1] (espnet2's enh_scoring writes it times 100)."""
    return float(pystoi.stoi(ref, est, fs, extended=False))


def estoi(ref: np.ndarray, est: np.ndarray, fs: int) -> float:
    """Extended STOI (Jensen & Taal 2016) in [0, 1] (espnet2's enh_scoring writes it times 100)."""
    return float(pystoi.stoi(ref, est, fs, extended=True))
