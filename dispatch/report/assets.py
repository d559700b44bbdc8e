"""Files beside the listening page: the audio itself, placed so that the page folder can be moved."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from dispatch.data.atomic import atomic_path
from dispatch.data.audio import probe, read_audio, write_wav

# Formats that Chromium, Firefox and Safari all play from an <audio> element.
BROWSER_FORMATS = {("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("FLAC", "PCM_24")}


def safe_name(name: str) -> str:
    """``name`` reduced to characters that need no escaping in a file name or a relative URL."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def place_audio(src: Path, dst_stem: Path) -> Path:
    """Put the audio file ``src`` into the report as ``dst_stem`` plus a suffix; return that path.

    A file that browsers play is hard-linked (copied across file systems): the page plays the very
    bytes that were scored. Any other format (float wav, 32-bit PCM, ...) is written as 16-bit PCM wav,
    the only conversion a browser needs. Written atomically.

    Raises:
        ValueError: naming ``src`` when it is missing, truncated or not audio.
    """
    info = probe(src)
    if (info.format, info.subtype) not in BROWSER_FORMATS:
        dst = dst_stem.with_suffix(".wav")
        write_wav(dst, read_audio(src, info.samplerate), info.samplerate)
        return dst
    dst = dst_stem.with_suffix("." + info.format.lower())
    with atomic_path(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:  # another file system, or links not allowed there
            shutil.copyfile(src, tmp)
    return dst
