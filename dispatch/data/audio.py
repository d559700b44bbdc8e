"""Audio file checks, resampling and atomic 16-bit PCM output.

Resampling uses soxr (the SoX resampler, "HQ" quality); reading and writing use soundfile. Samples are
float in [-1, 1); written files are clipped to the int16 range rather than left to wrap around (stage 2
refuses or rescales sources above full scale before that: dispatch.data.formatting).

Besides plain files, a Kaldi list entry may be an archive entry (``a.ark:1234``, as written by Kaldi or
kaldiio, optionally ``ark:`` / ``ark,s,cs:`` before it, or with a ``[start:end]`` slice), read through
kaldiio, or a piped command (``sox a.sph -t wav - |``), run through the shell and read with soundfile
(:func:`entry_kind`, :func:`load_entry`, :func:`probe_entry`).
"""
from __future__ import annotations

import io
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

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


_ARK_PREFIX = re.compile(r"^ark(,[a-z]+)*:")
_ARK_OFFSET = re.compile(r"^(.+):(\d+)(\[[^\]]*\])?$")


def entry_kind(value: str) -> str:
    """What a Kaldi list entry is: ``"pipe"`` (``cmd |``), ``"ark"`` (``a.ark:offset``, with or without
    ``ark[,opts]:`` before it) or ``"file"``."""
    value = value.strip()
    if value.endswith("|"):
        return "pipe"
    if _ARK_PREFIX.match(value):
        return "ark"
    offset = _ARK_OFFSET.match(value)
    if offset and not Path(value).exists() and (offset.group(1).endswith(".ark") or Path(offset.group(1)).is_file()):
        return "ark"
    return "file"


def _as_float(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind == "i":
        return array.astype(np.float64) / float(-np.iinfo(array.dtype).min)
    if array.dtype.kind == "u":  # 8-bit wav
        return (array.astype(np.float64) - 128.0) / 128.0
    return array.astype(np.float64)


def load_entry(value: str) -> Tuple[np.ndarray, int]:
    """Samples (float64, (samples,) or (samples, channels)) and rate of an ``ark`` or ``pipe`` entry.

    Raises:
        ValueError: naming the entry: a failing command, output or archive data that is not audio, a
            missing archive, a wrong offset, a matrix (features) instead of a waveform.
    """
    kind, value = entry_kind(value), value.strip()
    if kind == "pipe":
        proc = subprocess.run(value[:-1], shell=True, capture_output=True)
        if proc.returncode != 0:
            last = (proc.stderr.decode(errors="replace").strip().splitlines() or [""])[-1]
            raise ValueError(f"command '{value}' failed (exit status {proc.returncode}): {last}")
        if not proc.stdout:
            raise ValueError(f"command '{value}' wrote no audio")
        try:
            data, rate = sf.read(io.BytesIO(proc.stdout), dtype="float64")
            return data, rate
        except (sf.SoundFileError, RuntimeError) as e:
            raise ValueError(f"command '{value}': its output is not audio soundfile reads ({e})") from e
    if kind != "ark":
        raise ValueError(f"{value}: not an archive entry or a command")
    import kaldiio

    spec = _ARK_PREFIX.sub("", value)
    try:
        loaded = kaldiio.load_mat(spec)
    except FileNotFoundError as e:
        raise ValueError(f"{value}: no such archive ({e.filename})") from e
    except Exception as e:  # kaldiio raises AssertionError, ValueError, ... for a wrong offset
        raise ValueError(f"{value}: kaldiio cannot read this archive entry ({type(e).__name__}: {e}); "
                         "a wrong offset, or not an archive written by Kaldi or kaldiio?") from e
    if not isinstance(loaded, tuple):
        shape = "x".join(map(str, np.shape(loaded)))
        raise ValueError(f"{value}: a {shape} matrix (features?), not a waveform with a sampling rate")
    rate, array = loaded
    return _as_float(np.asarray(array)), int(rate)


def probe_entry(value: str) -> AudioInfo:
    """:func:`probe` for any list entry: a file's header; an archive entry or a command is read whole."""
    kind = entry_kind(value)
    if kind == "file":
        return probe(value)
    data, rate = load_entry(value)
    if len(data) == 0:
        raise ValueError(f"{value}: no samples")
    channels = 1 if data.ndim == 1 else data.shape[1]
    return AudioInfo(len(data), rate, channels, kind.upper(), "FLOAT")


def read_entry(value: str, start: int = 0, stop: Optional[int] = None) -> Tuple[np.ndarray, int]:
    """Samples ``start:stop`` (float64, (samples,) or (samples, channels)) and rate of any list entry.

    Raises:
        ValueError: naming the entry, for unreadable audio or NaN / infinite samples.
    """
    if entry_kind(value) == "file":
        data, rate = sf.read(str(value), start=start, stop=stop, dtype="float64")
    else:
        data, rate = load_entry(value)
        data = data[start:stop]
    finite = np.isfinite(data)
    if not finite.all():
        bad = ~finite.reshape(len(data), -1).all(axis=1)
        raise ValueError(
            f"{value}: {int(bad.sum())} sample(s) are NaN or infinite, the first at "
            f"{(start + np.argmax(bad)) / rate:.3f} s"
        )
    return data, rate


def resample(data: np.ndarray, rate: int, fs: int) -> np.ndarray:
    """``data`` at ``fs`` Hz (soxr HQ); unchanged when the rates agree."""
    return data if rate == fs else soxr.resample(data, rate, fs, quality="HQ")


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
