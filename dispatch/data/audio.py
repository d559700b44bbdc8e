"""Audio file checks, resampling and atomic 16-bit PCM output.

Resampling uses soxr (the SoX resampler, "HQ" quality); reading and writing use soundfile. Samples are
float in [-1, 1); written files are clipped to the int16 range rather than left to wrap around.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from dispatch.data.atomic import PathLike, atomic_path

PCM_16 = "PCM_16"
_INT16_MAX = 32767 / 32768
# libsndfile's header log flags a data chunk longer than the file as "data : <declared> (should be <n>)".
_DATA_CHUNK_LOG = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_LFS_POINTER = b"version https://git-lfs.github.com/spec/"


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file that passed :func:`probe`."""

    frames: int
    samplerate: int
    channels: int
    format: str
    subtype: str

    def is_pcm16_wav_at(self, fs: int) -> bool:
        """Whether the file already is what the recipes write: 16-bit PCM wav at ``fs`` Hz."""
        return self.format == "WAV" and self.subtype == PCM_16 and self.samplerate == fs


def probe(path: PathLike) -> AudioInfo:
    """Read the header of ``path`` and check that the file is complete audio.

    Raises:
        ValueError: with the path and the problem: missing, empty, a Git LFS pointer instead of the
            audio, not a format libsndfile reads, or truncated (header declares more sample bytes than
            the file holds).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file")
    with open(path, "rb") as f:
        if f.read(len(_LFS_POINTER)) == _LFS_POINTER:
            raise ValueError(f"{path}: a Git LFS pointer, not audio (run `git lfs pull` in its repository)")
    try:
        info = sf.info(str(path))
    except sf.SoundFileError as e:
        raise ValueError(f"{path}: not readable audio ({e})") from e
    truncated = _DATA_CHUNK_LOG.search(info.extra_info)
    if truncated and int(truncated.group(1)) > int(truncated.group(2)):
        raise ValueError(
            f"{path}: truncated: header declares {truncated.group(1)} bytes of samples, "
            f"file holds {truncated.group(2)}"
        )
    if info.frames == 0:
        raise ValueError(f"{path}: no samples")
    return AudioInfo(info.frames, info.samplerate, info.channels, info.format, info.subtype)


def read_audio(path: PathLike, fs: int) -> np.ndarray:
    """Read ``path`` as float64 samples at rate ``fs``, resampling if needed.

    Returns:
        (samples,) for mono files, (samples, channels) otherwise.

    Raises:
        ValueError: naming ``path``, when a (float) file holds NaN or infinite samples: they would turn
            into arbitrary 16-bit values when written, or into NaN losses in training.
    """
    data, rate = sf.read(str(path), dtype="float64")
    finite = np.isfinite(data)
    if not finite.all():
        bad = ~finite.reshape(len(data), -1).all(axis=1)
        raise ValueError(
            f"{path}: {int(bad.sum())} sample(s) are NaN or infinite, the first at {np.argmax(bad) / rate:.3f} s"
        )
    return data if rate == fs else soxr.resample(data, rate, fs, quality="HQ")


def write_wav(path: PathLike, data: np.ndarray, fs: int) -> None:
    """Write float samples ``data`` ((samples,) or (samples, channels)) as 16-bit PCM wav, atomically."""
    data = np.clip(data, -1.0, _INT16_MAX)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), data, fs, subtype=PCM_16, format="WAV")


def convert_wav(src: PathLike, dst: PathLike, fs: int) -> Path:
    """Write ``src`` resampled to ``fs`` as 16-bit PCM wav ``dst``; skip if ``dst`` exists.

    ``dst`` is only ever written whole (atomic rename), so an existing one is a finished conversion.

    Returns:
        ``dst`` as a Path.
    """
    dst = Path(dst)
    if not dst.exists():
        write_wav(dst, read_audio(src, fs), fs)
    return dst
