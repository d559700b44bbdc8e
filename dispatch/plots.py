"""Pictures of KD experiments (PNG, matplotlib): spectrograms, patch selection, training curves.

Figures are built with matplotlib's object-oriented API (``matplotlib.figure.Figure``, rendered by Agg),
so importing this module never touches pyplot's global state or needs a display. Every ``save_*``
function writes its PNG atomically (a reader never sees half a file) and returns its path.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dispatch.data.atomic import atomic_path
from dispatch.exptree import TrainingLog
from dispatch.losses.dfkd import dfkd_crossover
from dispatch.losses.dispatch_loss import DISPatchLoss

PathLike = Union[str, Path]

DYNAMIC_RANGE_DB = 80.0  # spectrograms show this many dB below their maximum
_BAND_KEY = re.compile(r"kd_selected_band(\d+)$")


def _save(fig: Figure, path: PathLike) -> Path:
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return Path(path)


def _db(spec: torch.Tensor) -> np.ndarray:
    """|spec| in dB, (freq, frames) complex -> real."""
    return 20.0 * np.log10(spec.abs().numpy() + 1e-8)


def _image(ax, data: np.ndarray, fs: int, hop: int, **kwargs):
    """Show a (freq, frames) map with time in seconds and frequency in kHz (bin edges at k * fs / 2 / n_freq)."""
    n_freq, n_frames = data.shape
    half = 0.5 * hop / fs  # frame j is centred on sample j * hop (centred STFT)
    extent = (-half, (n_frames - 1) * hop / fs + half, 0.0, fs / 2000.0)
    im = ax.imshow(data, origin="lower", aspect="auto", extent=extent, interpolation="nearest", **kwargs)
    ax.set_ylabel("kHz")
    return im


def save_spectrogram_png(wav: np.ndarray, fs: int, path: PathLike, title: Optional[str] = None) -> Path:
    """Log-magnitude spectrogram of a (samples,) waveform at ``fs`` Hz (32 ms Hann window, 75 % overlap)."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"save_spectrogram_png: expected a mono waveform (samples,), got shape {wav.shape}")
    n_fft = 1 << round(math.log2(0.032 * fs))
    hop = n_fft // 4
    if len(wav) <= n_fft // 2:
        raise ValueError(f"save_spectrogram_png: {len(wav)} samples are too short for a {n_fft}-point STFT")
    spec = torch.stft(torch.from_numpy(wav), n_fft, hop, window=torch.hann_window(n_fft), return_complex=True)
    db = _db(spec)
    fig = Figure(figsize=(8, 3.5), layout="constrained")
    ax = fig.subplots()
    im = _image(ax, db, fs, hop, cmap="magma", vmin=db.max() - DYNAMIC_RANGE_DB, vmax=db.max())
    ax.set_xlabel("s")
    ax.set_title(title or "spectrogram")
    fig.colorbar(im, ax=ax, label="dB")
    return _save(fig, path)


def _band_edge_khz(kd_loss: DISPatchLoss, teacher_spec: torch.Tensor, fs: int) -> Optional[np.ndarray]:
    """Where the loss's bands meet, in kHz: (frames,) for DFKD's crossover, (edges,) for fixed edges."""
    bin_khz = fs / 2000.0 / kd_loss.n_freq
    if kd_loss.crossover:
        # The low band ends at the crossover bin: the edge is the top of that bin.
        return (dfkd_crossover(teacher_spec.abs())[0].numpy() + 1) * bin_khz
    if kd_loss.edge_bins:
        return np.asarray(kd_loss.edge_bins, dtype=float) * bin_khz
    return None


def save_selection_png(
    noisy: np.ndarray,
    clean: np.ndarray,
    teacher: np.ndarray,
    student: np.ndarray,
    fs: int,
    kd_loss: torch.nn.Module,
    path: PathLike,
    title: Optional[str] = None,
) -> Path:
    """Where a DISPatch-family KD loss distils on one utterance.

    Six panels, all on the KD loss's own STFT: noisy, clean, teacher and student spectrograms; the
    Knowledge Gap Score of each bin's patch (red: the teacher is closer to the clean target); and the
    selected bins (``kd_loss.last_selection`` after :meth:`DISPatchLoss.forward_spec`). With MSSP the band
    edge is drawn on the last two panels (a line per frame for DFKD's crossover).

    Args:
        noisy, clean, teacher, student: (samples,) waveforms of the same utterance (cut to the shortest).
        kd_loss: a :class:`DISPatchLoss` (or :class:`DFKDLoss`), as built from the KD student's config.
    """
    if not isinstance(kd_loss, DISPatchLoss):
        raise TypeError(
            f"save_selection_png needs a spectrogram KD loss (DISPatchLoss, DFKDLoss), got {type(kd_loss).__name__}"
        )
    waves = [np.asarray(w, dtype=np.float32) for w in (noisy, clean, teacher, student)]
    for name, w in zip(("noisy", "clean", "teacher", "student"), waves):
        if w.ndim != 1:
            raise ValueError(f"save_selection_png: {name} must be a mono waveform (samples,), got shape {w.shape}")
    n = min(len(w) for w in waves)
    with torch.no_grad():
        specs = kd_loss.spectrogram(torch.from_numpy(np.stack([w[:n] for w in waves])))
        noisy_s, clean_s, teacher_s, student_s = specs.split(1, dim=0)
        kgs = kd_loss.patch_scores(student_s, teacher_s, clean_s)[0].numpy()
        kd_loss.forward_spec(student_s, teacher_s, clean_s)
        selected = kd_loss.last_selection[0].float().numpy()
    hop = kd_loss.hop_length

    # A fixed grid (not constrained layout, which doubles the drawing time); every panel has its own
    # colour bar so that all panels keep the same width.
    fig = Figure(figsize=(12, 9))
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.06, top=0.91, wspace=0.12, hspace=0.3)
    axes = fig.subplots(3, 2, sharex=True, sharey=True)
    dbs = [_db(s[0]) for s in (noisy_s, clean_s, teacher_s, student_s)]
    top = max(d.max() for d in dbs)
    for ax, db, name in zip(axes.flat, dbs, ("noisy", "clean", "teacher", "student")):
        im = _image(ax, db, fs, hop, cmap="magma", vmin=top - DYNAMIC_RANGE_DB, vmax=top)
        ax.set_title(name)
        fig.colorbar(im, ax=ax, label="dB", pad=0.02)

    limit = float(np.percentile(np.abs(kgs), 99)) or 1.0  # symmetric, robust to a few extreme patches
    im = _image(axes[2, 0], kgs, fs, hop, cmap="RdBu_r", vmin=-limit, vmax=limit)
    axes[2, 0].set_title("Knowledge Gap Score (student error - teacher error)")
    fig.colorbar(im, ax=axes[2, 0], label="KGS", pad=0.02)
    im = _image(axes[2, 1], selected, fs, hop, cmap="Greys", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=axes[2, 1], ticks=[0, 1], label="selected", pad=0.02)
    axes[2, 1].set_title(f"selected for KD (black: {selected.mean():.0%} of bins)")

    edge = _band_edge_khz(kd_loss, teacher_s, fs)
    if edge is not None:
        for ax in axes[2]:
            if kd_loss.crossover:
                ax.step(np.arange(len(edge)) * hop / fs, edge, where="mid", color="tab:green", lw=1.0,
                        label="DFKD crossover")
            else:
                for e in edge:
                    ax.axhline(e, color="tab:green", lw=1.0, label="MSSP band edge")
        axes[2, 1].legend(loc="upper right", fontsize="small", handles=axes[2, 1].lines[:1])
    for ax in axes[2]:
        ax.set_xlabel("s")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def selection_keys(log: TrainingLog, phase: str = "train") -> List[str]:
    """The selected-fraction statistics of a KD training, one per band: ``kd_selected_band<i>`` in band
    order, or ``kd_selected`` for a single band; empty without KD selection statistics."""
    keys = log.get(phase, {})
    bands = sorted((int(m.group(1)), k) for k in keys if (m := _BAND_KEY.match(k)))
    if bands:
        return [k for _, k in bands]
    return ["kd_selected"] if "kd_selected" in keys else []


def _plot_phases(ax, log: TrainingLog, key: str, label: str, color) -> bool:
    """Train (solid) and valid (dashed) curves of one key, one legend entry; False if neither phase logged it."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs
    drawn = False
    for phase, style in (("train", "-"), ("valid", "--")):
        values = log.get(phase, {}).get(key)
        if values:
            ax.plot(np.arange(1, len(values) + 1), values, style, color=color, marker=".",
                    label="_nolegend_" if drawn else label)
            drawn = True
    return drawn


def save_training_curves_png(
    logs: Mapping[str, TrainingLog],
    path: PathLike,
    keys: Sequence[str] = ("task_loss", "kd_loss", "kd_selected"),
) -> Path:
    """One panel per statistic of ``keys``, one colour per experiment (name -> its
    :meth:`dispatch.exptree.Experiment.training_log`); train solid, valid dashed, over epochs."""
    colors = {name: f"C{i % 10}" for i, name in enumerate(logs)}
    fig = Figure(figsize=(5 * len(keys), 4), layout="constrained")
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys):
        drawn = [_plot_phases(ax, log, key, name, colors[name]) for name, log in logs.items()]
        ax.set_title(f"{key} (train solid, valid dashed)")
        ax.set_xlabel("epoch")
        if any(drawn):
            ax.legend(fontsize="x-small")
        else:
            ax.text(0.5, 0.5, f"no experiment logged {key}", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path)


def save_band_selection_png(logs: Mapping[str, TrainingLog], path: PathLike) -> Path:
    """Fraction of bins selected for KD per band (:func:`selection_keys`) over epochs, one panel per KD
    experiment; experiments without selection statistics (teacher, baseline) are left out."""
    logs = {name: log for name, log in logs.items() if selection_keys(log)}
    fig = Figure(figsize=(5 * max(1, len(logs)), 4), layout="constrained")
    axes = fig.subplots(1, max(1, len(logs)), squeeze=False)[0]
    for ax, (name, log) in zip(axes, logs.items()):
        for i, key in enumerate(selection_keys(log)):
            _plot_phases(ax, log, key, "all bins" if key == "kd_selected" else key[len("kd_selected_"):], f"C{i}")
        ax.set_title(f"{name} (train solid, valid dashed)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("selected fraction")
        ax.set_ylim(0.0, 1.05)
        ax.legend(fontsize="x-small")
    if not logs:
        axes[0].text(0.5, 0.5, "no KD selection statistics logged", ha="center", va="center",
                     transform=axes[0].transAxes)
    return _save(fig, path)


def save_paired_differences_png(
    differences: Mapping[str, Mapping[str, Mapping[str, Optional[float]]]],
    path: PathLike,
    reference: str,
    title: str = "",
) -> Path:
    """One panel per metric: each variant's paired difference to ``reference`` with its interval, 1000 px
    wide (it fits a 1280-px window beside the page margins).

    Args:
        differences: metric -> variant -> {"mean", "low", "high", "n"} (bounds None when undefined, e.g.
            one seed), as :func:`dispatch.ablation.baseline_differences` writes them for one test set.
    """
    names = list(dict.fromkeys(v for per_metric in differences.values() for v in per_metric))
    fig = Figure(figsize=(10, 1.4 + 0.35 * len(names)), layout="constrained")
    axes = fig.subplots(1, max(1, len(differences)), squeeze=False, sharey=True)[0]
    rows = np.arange(len(names))[::-1]  # first variant on top
    for ax, (metric, per_variant) in zip(axes, differences.items()):
        for y, name in zip(rows, names):
            d = per_variant.get(name)
            if d is None or d["mean"] is None:
                continue
            low, high = d["low"], d["high"]
            clear = low is not None and (low > 0 or high < 0)  # the interval excludes zero
            if low is not None:
                ax.plot([low, high], [y, y], color="tab:blue", lw=2)
            ax.plot([d["mean"]], [y], "o", color="tab:blue", mfc="tab:blue" if clear else "white")
        ax.axvline(0.0, color="0.4", lw=0.8)
        ax.set_title(metric)
        ax.set_xlabel(f"difference to {reference}")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(rows, names)
    axes[0].set_ylim(-0.6, len(names) - 0.4)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
