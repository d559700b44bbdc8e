#!/usr/bin/env python3
"""Stage 2 of enh_kd.sh: copy a data dir to dump/, resampled to --fs, validated, with utt2num_samples.

    python -m dispatch.bin.format_data data/train dump/raw/train --fs 16000 --nj 8 --min_duration 0.1

Every source file is checked first (missing, empty, truncated or non-audio files and noisy/clean length
mismatches are all listed with their utterance ids). Audio that already is 16-bit PCM wav at --fs is
referenced where it is; other files are converted under <dst>/data/. Training sets may drop utterances
shorter than --min_duration (counted in the log). A rerun with the same options and an unchanged source
(lists, and the size and mtime of every audio file) skips; a partial output is redone, and converted
copies older than their source are converted again.
"""
import argparse
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from dispatch.data.atomic import write_text_atomic
from dispatch.data.audio import probe
from dispatch.data.corpus import CorpusError, to_pcm16
from dispatch.data.datadir import DataDirError, read_scp, validate_data_dir, write_data_dir, write_scp
from dispatch.fingerprint import audio_digest

STAMP = ".format_done.json"


def read_stamp(stamp: Path) -> Optional[dict]:
    try:
        return json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None


def drop_stale_copies(jobs: List[Tuple[str, Path]], fs: int) -> None:
    """Remove converted copies (kept by an earlier, possibly killed, run) that are older than their source
    or at another rate than ``fs``: conversion then redoes them instead of keeping old audio."""
    stale = 0
    for source, copy in jobs:
        try:
            if copy.stat().st_mtime_ns >= Path(source).stat().st_mtime_ns and probe(copy).samplerate == fs:
                continue
        except (OSError, ValueError):
            pass  # no copy (nothing to do), or an unreadable one (redone)
        if copy.exists():
            copy.unlink()
            stale += 1
    if stale:
        logging.info(f"{stale} converted file(s) older than their source or at another rate: converting again")


def format_data_dir(src: Path, dst: Path, fs: int, nj: int = 1, min_duration: float = 0.0) -> int:
    """Write the formatted copy of ``src`` into ``dst``; returns the number of utterances kept.

    Raises:
        DataDirError: naming the file and utterance, for broken lists or audio, before anything is written.
    """
    validate_data_dir(src, check_audio=False)  # lists first: cheap, and names the broken file
    options = {"src": str(src.resolve()), "fs": fs, "min_duration": min_duration,
               "mtimes": {n: (src / n).stat().st_mtime for n in ("wav.scp", "spk1.scp", "utt2spk")},
               # size and mtime of every source audio file: audio rebuilt under the same ids is redone
               "audio": {n: audio_digest(src / n) for n in ("wav.scp", "spk1.scp")}}
    stamp = dst / STAMP
    if read_stamp(stamp) == options:
        logging.info(f"{dst}: formatted already")
        return len(read_scp(dst / "wav.scp"))
    validate_data_dir(src)  # every file is readable audio and noisy/clean lengths agree, before any work
    previous = read_stamp(stamp)
    if previous is not None and any(previous.get(k) != options[k] for k in ("src", "fs", "audio")):
        logging.info(f"{dst}: the source audio or the rate changed since it was formatted: converting anew")
        shutil.rmtree(dst / "data", ignore_errors=True)  # no copy of the old audio may be kept
    stamp.unlink(missing_ok=True)  # a stale stamp (other options) must not vouch for a killed run's lists

    wav, spk1, utt2spk = (read_scp(src / n) for n in ("wav.scp", "spk1.scp", "utt2spk"))
    keys = sorted(wav)
    jobs = [(wav[k], dst / "data" / "noisy" / f"{k}.wav") for k in keys]
    jobs += [(spk1[k], dst / "data" / "clean" / f"{k}.wav") for k in keys]
    drop_stale_copies(jobs, fs)
    try:
        paths = to_pcm16(jobs, fs, nj)
    except CorpusError as e:
        raise DataDirError(f"{src}: {e}") from e
    noisy, clean = dict(zip(keys, map(str, paths[: len(keys)]))), dict(zip(keys, map(str, paths[len(keys):])))
    samples = {k: probe(noisy[k]).frames for k in keys}
    kept = [k for k in keys if samples[k] >= min_duration * fs]
    if len(kept) < len(keys):
        logging.warning(f"{src}: dropped {len(keys) - len(kept)} utterance(s) shorter than {min_duration} s")
    if not kept:
        raise DataDirError(f"{src}: no utterance is at least {min_duration} s long")
    write_data_dir(dst, {k: noisy[k] for k in kept}, {k: clean[k] for k in kept}, {k: utt2spk[k] for k in kept})
    write_scp(dst / "utt2num_samples", {k: str(samples[k]) for k in kept})
    validate_data_dir(dst, fs=fs)  # rates, lengths, readable audio
    write_text_atomic(stamp, json.dumps(options))
    return len(kept)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="source data dir (wav.scp, spk1.scp, utt2spk)")
    parser.add_argument("dst", type=Path, help="formatted data dir to write")
    parser.add_argument("--fs", type=int, required=True, help="sampling rate in Hz")
    parser.add_argument("--nj", type=int, default=1, help="parallel processes for conversion")
    parser.add_argument("--min_duration", type=float, default=0.0, help="drop shorter utterances (seconds)")
    return parser


def main(cmd: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (%(module)s) %(levelname)s: %(message)s")
    args = get_parser().parse_args(cmd)
    try:
        n = format_data_dir(args.src, args.dst, args.fs, args.nj, args.min_duration)
    except DataDirError as e:
        print(f"format_data: {e}", file=sys.stderr)
        return 1
    print(f"{args.dst}: {n} utterances at {args.fs} Hz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
