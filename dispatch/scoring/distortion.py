"""Energy-ratio measures: SI-SDR and BSS-Eval SDR, computed with fast_bss_eval.

fast_bss_eval gives the same SDR as mir_eval's ``bss_eval_sources`` (512-tap distortion filter,
BSS Eval v3/v4 definition, which espnet2's enh_scoring uses) at a fraction of the cost, and
mir_eval deprecates ``bss_eval_sources`` from 0.8 on.
"""
import fast_bss_eval
import numpy as np

# Identical signals have an infinite ratio; fast_bss_eval then fails (sdr) or returns inf.
CLAMP_DB = 100.0


def si_sdr(ref: np.ndarray, est: np.ndarray, fs: int) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019) of zero-mean signals, like espnet2's SI_SNR.

    Clamped to +-CLAMP_DB.
    """
    return float(fast_bss_eval.si_sdr(ref[None], est[None], zero_mean=True, clamp_db=CLAMP_DB)[0])


def sdr(ref: np.ndarray, est: np.ndarray, fs: int) -> float:
    """BSS-Eval SDR in dB (Vincent et al. 2006) allowing a 512-tap distortion filter; clamped to +-CLAMP_DB."""
    return float(fast_bss_eval.sdr(ref[None], est[None], filter_length=512, clamp_db=CLAMP_DB)[0])
