"""Atomic file output: write to a temporary name beside the target, then rename.

A reader (or a rerun that skips finished work) never sees a half-written file: the target either does
not exist or is complete. The temporary name keeps the target's suffix so that libraries which infer the
format from the extension (soundfile) still work.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success rename it to ``path``, on error remove it.

    The parent folder is created if needed. The temporary file is in the same folder, so the final
    ``os.replace`` is atomic on POSIX file systems.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
