"""Helpers shared by the corpus preparation modules (VoiceBank+DEMAND, DNS 2020)."""
from __future__ import annotations

import sys
from multiprocessing import Pool
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

from dispatch.data.atomic import PathLike
from dispatch.data.audio import convert_wav, probe
from dispatch.data.datadir import DataDirError, validate_data_dir


class CorpusError(ValueError):
    """A corpus on disk is missing, incomplete or laid out differently than expected."""


def require_dir(path: Path, expected: str) -> Path:
    """Return ``path`` if it is a folder, else raise CorpusError saying what was ``expected`` there."""
    if not path.is_dir():
        raise CorpusError(f"{path}: no such folder; expected {expected}")
    return path


def list_wavs(folder: Path, expected: str) -> List[Path]:
    """Sorted ``*.wav`` files of ``folder`` (not recursive); CorpusError if there are none."""
    wavs = sorted(require_dir(folder, expected).glob("*.wav"))
    if not wavs:
        raise CorpusError(f"{folder}: no .wav files; expected {expected}")
    return wavs


def check_count(folder: Path, found: int, expected: int, strict: bool) -> None:
    """With ``strict``, raise CorpusError unless ``folder`` held exactly ``expected`` utterances."""
    if strict and found != expected:
        raise CorpusError(
            f"{folder}: {found} utterances, expected {expected} (incomplete download or unpacking? "
            "--strict_counts false accepts any number)"
        )


def check_first_audio(folder: Path, files: Sequence[Path]) -> None:
    """Probe the first file of a folder, so that LFS pointers or garbage stop the run early."""
    try:
        probe(files[0])
    except ValueError as e:
        raise CorpusError(f"{folder}: {e}") from e


def _convert(job: Tuple[Path, Path, int]) -> Path:
    src, dst, fs = job
    try:
        info = probe(src)
        return src.resolve() if info.is_pcm16_wav_at(fs) else convert_wav(src, dst, fs).resolve()
    except ValueError as e:
        raise CorpusError(str(e)) from e


def to_pcm16(
    jobs: Iterable[Tuple[Path, Path]], fs: int, nj: int = 1
) -> List[Path]:
    """Make 16-bit PCM wavs at ``fs`` Hz of ``(src, dst)`` pairs, in order, using ``nj`` processes.

    A source that already is 16-bit PCM at ``fs`` is used as is; others are resampled/converted to
    ``dst`` (skipped if ``dst`` exists: it is written atomically).

    Returns:
        Absolute paths to use, one per job.
    """
    work = [(Path(src), Path(dst), fs) for src, dst in jobs]
    if nj <= 1:
        return [_convert(job) for job in work]
    with Pool(nj) as pool:
        return pool.map(_convert, work, chunksize=64)


def validate_sets(data_root: PathLike, names: Sequence[str], fs: int) -> None:
    """Validate the data dirs ``data_root/<name>`` (audio included); print one line each."""
    for name in names:
        num = validate_data_dir(Path(data_root) / name, fs=fs)
        print(f"{Path(data_root) / name}: {num} utterances", flush=True)


def run_main(main: Callable[[Optional[List[str]]], None], cmd: Optional[List[str]] = None) -> int:
    """Run a preparation ``main``; print corpus and data dir errors without traceback, return 1."""
    try:
        main(cmd)
    except (CorpusError, DataDirError) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    return 0
