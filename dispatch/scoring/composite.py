"""Composite measures CSIG, CBAK, COVL (Hu & Loizou 2008) and their ingredients LLR, WSS, segSNR.

A re-implementation of Loizou's ``composite.m`` (Speech Enhancement: Theory and Practice, 2007),
vectorised over frames: 30 ms Hann frames (``0.5 * (1 - cos(2 pi n / (N + 1)))``, n = 1..N) with
a hop of a quarter frame, and

    CSIG = 3.093 - 1.029 LLR + 0.603 PESQ - 0.009 WSS
    CBAK = 1.634 + 0.478 PESQ - 0.007 WSS + 0.063 segSNR
    COVL = 1.594 + 0.805 PESQ - 0.512 LLR - 0.007 WSS

where LLR and WSS are means over the best 95 % of frames, segSNR the mean of frame SNRs clipped to
[-10, 35] dB, and PESQ the raw P.862 score (``pesq_mode="nb_raw"``, what the regression was fitted
on). Many recent papers feed wide-band PESQ instead (``pesq_mode="wb"``), which gives higher
values: say which one a table uses. Scores are clipped to the 1..5 MOS scale.

References:
    Y. Hu and P. C. Loizou, "Evaluation of objective quality measures for speech enhancement,"
    IEEE Trans. Audio, Speech, Lang. Process., 16(1), 229-238, 2008.
    D. H. Klatt, "Prediction of perceived phonetic distance from critical-band spectra," ICASSP 1982.
"""
from functools import lru_cache
from typing import Dict

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from dispatch.scoring.perceptual import pesq_nb_raw, pesq_wb

ALPHA = 0.95  # fraction of (best) frames kept for LLR and WSS
EPS = np.finfo(np.float64).eps

# Klatt's 25 critical bands (Hz), as tabulated in composite.m; they span 0-4 kHz at any fs.
_CENTER_HZ = np.array([
    50.0, 120.0, 190.0, 260.0, 330.0, 400.0, 470.0, 540.0, 617.372, 703.378, 798.717, 904.128,
    1020.38, 1148.30, 1288.72, 1442.54, 1610.70, 1794.16, 1993.93, 2211.08, 2446.71, 2701.97,
    2978.04, 3276.17, 3597.63,
])
_BANDWIDTH_HZ = np.array([
    70.0, 70.0, 70.0, 70.0, 70.0, 70.0, 70.0, 77.3724, 86.0056, 95.3398, 105.411, 116.256,
    127.914, 140.423, 153.823, 168.154, 183.457, 199.776, 217.153, 235.631, 255.255, 276.072,
    298.126, 321.465, 346.136,
])
_PESQ = {"nb_raw": pesq_nb_raw, "wb": pesq_wb}


def frames(x: np.ndarray, fs: int) -> np.ndarray:
    """Hann-windowed 30 ms frames with a quarter-frame hop: (T,) -> (num_frames, frame_len)."""
    frame_len = round(0.03 * fs)
    hop = frame_len // 4
    num_frames = (len(x) - frame_len) // hop
    if num_frames < 1:
        raise ValueError(f"signal of {len(x)} samples is shorter than two 30 ms frames at {fs} Hz")
    window = 0.5 * (1 - np.cos(2 * np.pi * np.arange(1, frame_len + 1) / (frame_len + 1)))
    return sliding_window_view(x, frame_len)[::hop][:num_frames] * window


def trimmed_mean(values: np.ndarray, alpha: float = ALPHA) -> float:
    """Mean of the smallest ``round(alpha * n)`` values (MATLAB rounding: halves away from zero)."""
    keep = max(int(np.floor(len(values) * alpha + 0.5)), 1)
    return float(np.mean(np.sort(values)[:keep]))


def _toeplitz(r: np.ndarray, order: int) -> np.ndarray:
    """Symmetric Toeplitz matrices from autocorrelations: (F, >=order) -> (F, order, order)."""
    lag = np.abs(np.arange(order)[:, None] - np.arange(order)[None, :])
    return r[:, lag]


def _autocorrelation(frames_: np.ndarray, max_lag: int) -> np.ndarray:
    """(F, N) -> (F, max_lag + 1) biased autocorrelation lags 0..max_lag."""
    n = frames_.shape[1]
    return np.stack([np.sum(frames_[:, : n - k] * frames_[:, k:], axis=1) for k in range(max_lag + 1)], axis=1)


def _lpc(r: np.ndarray, order: int) -> np.ndarray:
    """Prediction-error filters [1, -a_1..-a_p] from autocorrelations (F, p + 1) -> (F, p + 1).

    Solves the normal equations directly; Levinson-Durbin in composite.m gives the same solution.
    """
    a = np.linalg.solve(_toeplitz(r, order), r[:, 1 : order + 1, None])[..., 0]
    return np.concatenate([np.ones((len(r), 1)), -a], axis=1)


def llr_frames(ref: np.ndarray, est: np.ndarray, fs: int) -> np.ndarray:
    """Log-likelihood ratio per frame of LPC models (order 10 below 10 kHz, else 16): (F,)."""
    order = 10 if fs < 10000 else 16
    r_ref = _autocorrelation(frames(ref, fs), order)
    r_est = _autocorrelation(frames(est, fs), order)
    a_ref, a_est = _lpc(r_ref, order), _lpc(r_est, order)
    cov = _toeplitz(r_ref, order + 1)
    num = np.einsum("fi,fij,fj->f", a_est, cov, a_est)
    den = np.einsum("fi,fij,fj->f", a_ref, cov, a_ref)
    return np.log(num / den)


@lru_cache(maxsize=8)
def _critical_band_filters(fs: int, n_fft: int) -> np.ndarray:
    """Gaussian critical-band weights over the first n_fft / 2 bins, zeroed below -30 dB: (25, n_fft / 2)."""
    half = n_fft // 2
    center = np.floor(_CENTER_HZ / (fs / 2) * half)
    width = _BANDWIDTH_HZ / (fs / 2) * half
    norm = np.log(_BANDWIDTH_HZ[0]) - np.log(_BANDWIDTH_HZ)
    bins = np.arange(half)
    filters = np.exp(-11 * ((bins[None] - center[:, None]) / width[:, None]) ** 2 + norm[:, None])
    return filters * (filters > np.exp(-30.0 / (2.0 * 2.303)))


def _band_energies_db(frames_: np.ndarray, fs: int) -> np.ndarray:
    """Critical-band energies in dB of windowed frames: (F, N) -> (F, 25)."""
    n_fft = 2 ** int(np.ceil(np.log2(2 * frames_.shape[1])))
    power = np.abs(np.fft.rfft(frames_, n_fft, axis=1)[:, : n_fft // 2]) ** 2
    return 10 * np.log10(np.maximum(power @ _critical_band_filters(fs, n_fft).T, 1e-10))


def _nearest_peaks(energy: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """Energy of the nearest spectral peak of each band: searched right on a rising slope, else left.

    On a rising slope composite.m stops one band short of the peak (it returns the band before the
    first falling slope); that is kept, since the published regression was fitted with it.

    Args:
        energy: (F, B) band energies in dB; slope: (F, B - 1) their first differences.
    Returns:
        (F, B - 1) peak energies.
    """
    idx = np.arange(slope.shape[1])
    rising = slope > 0
    # First non-rising slope at or after i (B - 1 if none), and last rising slope at or before i.
    next_fall = np.minimum.accumulate(np.where(rising, slope.shape[1], idx)[:, ::-1], axis=1)[:, ::-1]
    last_rise = np.maximum.accumulate(np.where(rising, idx, -1), axis=1)
    return np.take_along_axis(energy, np.where(rising, next_fall - 1, last_rise + 1), axis=1)


def _slope_weights(energy: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """Klatt's weights (K_max = 20, K_locmax = 1) favouring peaks over valleys: (F, B - 1)."""
    below = energy[:, :-1]
    w_max = 20.0 / (20.0 + energy.max(axis=1, keepdims=True) - below)
    w_loc = 1.0 / (1.0 + _nearest_peaks(energy, slope) - below)
    return w_max * w_loc


def wss_frames(ref: np.ndarray, est: np.ndarray, fs: int) -> np.ndarray:
    """Weighted spectral slope distance per frame (Klatt 1982, normalised by the weights): (F,)."""
    e_ref = _band_energies_db(frames(ref, fs), fs)
    e_est = _band_energies_db(frames(est, fs), fs)
    s_ref, s_est = np.diff(e_ref, axis=1), np.diff(e_est, axis=1)
    w = (_slope_weights(e_ref, s_ref) + _slope_weights(e_est, s_est)) / 2
    return np.sum(w * (s_ref - s_est) ** 2, axis=1) / np.sum(w, axis=1)


def segmental_snr(ref: np.ndarray, est: np.ndarray, fs: int) -> float:
    """Mean over frames of the SNR in dB, each clipped to [-10, 35]."""
    f_ref, f_est = frames(ref, fs), frames(est, fs)
    signal = np.sum(f_ref**2, axis=1)
    noise = np.sum((f_ref - f_est) ** 2, axis=1)
    return float(np.mean(np.clip(10 * np.log10(signal / (noise + EPS) + EPS), -10, 35)))


def composite(ref: np.ndarray, est: np.ndarray, fs: int, pesq_mode: str = "nb_raw") -> Dict[str, float]:
    """CSIG, CBAK, COVL on the 1..5 scale; ``pesq_mode`` is "nb_raw" (Loizou) or "wb".

    Args:
        ref, est: (T,) clean reference and estimate; the longer one is cut to the shorter.
        fs: 8000 or 16000 (PESQ's rates).
    Returns:
        {"csig": ..., "cbak": ..., "covl": ...}
    """
    if pesq_mode not in _PESQ:
        raise ValueError(f"pesq_mode={pesq_mode!r}; choose one of {sorted(_PESQ)}")
    n = min(len(ref), len(est))
    # composite.m adds eps so that digital silence has finite logs.
    ref, est = ref[:n] + EPS, est[:n] + EPS
    llr = trimmed_mean(llr_frames(ref, est, fs))
    wss = trimmed_mean(wss_frames(ref, est, fs))
    seg_snr = segmental_snr(ref, est, fs)
    pesq = _PESQ[pesq_mode](ref, est, fs)
    scores = {
        "csig": 3.093 - 1.029 * llr + 0.603 * pesq - 0.009 * wss,
        "cbak": 1.634 + 0.478 * pesq - 0.007 * wss + 0.063 * seg_snr,
        "covl": 1.594 + 0.805 * pesq - 0.512 * llr - 0.007 * wss,
    }
    return {name: float(np.clip(value, 1.0, 5.0)) for name, value in scores.items()}
