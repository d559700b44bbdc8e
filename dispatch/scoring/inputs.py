"""Kaldi-style scp lists and audio loading with checks that name the utterance and file.

Lists are read by :func:`dispatch.data.datadir.read_scp`, the one reader of Kaldi lists (UTF-8, one
``key value`` per line, no repeated key); entries may be files, archive entries (``a.ark:123``, read
through kaldiio) or piped commands (``cmd |``), as in stage 2 (:mod:`dispatch.data.audio`).
"""
from typing import Dict, Optional, Tuple

import numpy as np
import soundfile as sf

from dispatch.data.audio import probe_entry, read_entry
from dispatch.data.datadir import DataDirError
from dispatch.data.datadir import read_scp as read_kaldi_list


class ScoringInputError(ValueError):
    """An scp list or audio file is not what scoring expects."""


def read_scp(path: str) -> Dict[str, str]:
    """``uttid entry`` lines -> {uttid: entry}, in file order (:func:`dispatch.data.datadir.read_scp`'s
    rules); an empty list is refused too."""
    try:
        entries = read_kaldi_list(path)
    except OSError as e:
        raise ScoringInputError(f"cannot read scp file {path}: {e.strerror}") from e
    except DataDirError as e:
        raise ScoringInputError(str(e)) from None
    if not entries:
        raise ScoringInputError(f"scp file {path} lists no utterance")
    return entries


def check_same_keys(ref: Dict[str, str], est: Dict[str, str], ref_scp: str, est_scp: str) -> None:
    """Raise if the two lists do not name the same utterances (shows up to 5 of each side)."""
    only_ref = sorted(ref.keys() - est.keys())
    only_est = sorted(est.keys() - ref.keys())
    if only_ref or only_est:
        parts = [f"{len(keys)} only in {scp} (e.g. {', '.join(keys[:5])})"
                 for keys, scp in ((only_ref, ref_scp), (only_est, est_scp)) if keys]
        raise ScoringInputError("utterance lists differ: " + "; ".join(parts))


def audio_info(utt: str, path: str) -> Tuple[int, int]:
    """(sampling rate, number of samples) of a mono entry, from a file's header (archive entries and
    commands are read)."""
    try:
        info = probe_entry(path)
    except (ValueError, OSError, sf.SoundFileError) as e:
        raise ScoringInputError(f"{utt}: cannot read audio file {path}: {e}") from e
    if info.channels != 1:
        raise ScoringInputError(f"{utt}: {path} has {info.channels} channels, expected mono")
    return info.samplerate, info.frames


def check_pair(utt: str, est_path: str, ref_path: Optional[str], tolerance_s: float) -> int:
    """Check headers of an estimate and its reference; return the sampling rate."""
    fs, n_est = audio_info(utt, est_path)
    if ref_path is None:
        return fs
    fs_ref, n_ref = audio_info(utt, ref_path)
    if fs_ref != fs:
        raise ScoringInputError(f"{utt}: {est_path} is {fs} Hz but its reference {ref_path} is {fs_ref} Hz")
    if abs(n_est - n_ref) > tolerance_s * fs:
        raise ScoringInputError(
            f"{utt}: {est_path} has {n_est} samples but its reference {ref_path} has {n_ref} "
            f"(allowed difference {tolerance_s} s = {int(tolerance_s * fs)} samples)"
        )
    return fs


def load_pair(
    utt: str, est_path: str, ref_path: Optional[str], tolerance_s: float
) -> Tuple[np.ndarray, Optional[np.ndarray], int]:
    """Checked (est, ref, fs), float64 (T,), both cut to the shorter length; ref is None if not given."""
    fs = check_pair(utt, est_path, ref_path, tolerance_s)
    est = _read(utt, est_path)
    if ref_path is None:
        return est, None, fs
    ref = _read(utt, ref_path)
    n = min(len(est), len(ref))
    return est[:n], ref[:n], fs


def _read(utt: str, path: str) -> np.ndarray:
    try:
        audio, _ = read_entry(path)  # refuses NaN and infinite samples
    except (ValueError, OSError, sf.SoundFileError) as e:
        raise ScoringInputError(f"{utt}: cannot read audio file {path}: {e}") from e
    return audio
