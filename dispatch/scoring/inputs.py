"""Kaldi-style scp lists and audio loading with checks that name the utterance and file."""
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import soundfile as sf


class ScoringInputError(ValueError):
    """An scp list or audio file is not what scoring expects."""


def read_scp(path: str) -> Dict[str, str]:
    """``uttid /path/to/audio.wav`` lines -> {uttid: path}, in file order."""
    entries: Dict[str, str] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ScoringInputError(f"cannot read scp file {path}: {e.strerror}") from e
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=1)
        if len(fields) != 2:
            raise ScoringInputError(f"{path}:{lineno}: expected 'uttid /path/audio.wav', got {line!r}")
        utt, audio = fields[0], fields[1].strip()
        if audio.endswith("|") or ".ark:" in audio:
            raise ScoringInputError(f"{path}:{lineno}: {utt}: pipes and ark entries are not supported, got {audio!r}")
        if utt in entries:
            raise ScoringInputError(f"{path}:{lineno}: utterance {utt} is listed twice")
        entries[utt] = audio
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
    """(sampling rate, number of samples) of a mono file, from its header."""
    try:
        info = sf.info(path)
    except (OSError, RuntimeError) as e:  # soundfile raises LibsndfileError (a RuntimeError)
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
        audio, _ = sf.read(path, dtype="float64")
    except (OSError, RuntimeError) as e:
        raise ScoringInputError(f"{utt}: cannot read audio file {path}: {e}") from e
    if not np.all(np.isfinite(audio)):
        raise ScoringInputError(f"{utt}: {path} contains NaN or infinite samples")
    return audio
