#!/usr/bin/env python3
"""Stage 2 of enh_kd.sh: copy a data dir to dump/, resampled to --fs, validated, with utt2num_samples.

    python -m dispatch.bin.format_data data/train dump/raw/train --fs 16000 --nj 8 --min_duration 0.1

Every source file is checked first (missing, empty, truncated or non-audio files and noisy/clean length
mismatches are all listed with their utterance ids). Audio that already is 16-bit PCM wav at --fs is
referenced where it is; other files are converted under <dst>/data/. Training sets may drop utterances
shorter than --min_duration (counted in the log). A rerun with the same options and an unchanged source
(lists, and the size and mtime of every audio file) skips; a partial output is redone, and converted
copies older than their source are converted again.

Checked at the door as well (dispatch.data.formatting): multi-channel audio is refused, or averaged with
--downmix true; samples above full scale are refused with the count and the loudest file, or with
--rescale true each such noisy/clean pair is scaled by one factor (never clipped silently); a Kaldi
``segments`` file cuts the recordings of wav.scp and spk1.scp alike into per-segment wavs; archive
entries (``a.ark:123``, ``ark:``/``ark,s,cs:`` prefixes) are read through kaldiio and ``cmd |`` entries
through the shell; a list that is not UTF-8 is named with its line; a dump made at another rate is redone.

Split into jobs (stage 2 of enh_kd.sh runs the conversion through ``${decode_cmd} JOB=1:N``, so that on a
cluster it runs on its nodes), each step with the same source, destination and options:

    --check                  exit 0 if <dst> is formatted already for them, else 1 (changes nothing)
    --prepare                validate the source and remove what an earlier run made another way
    --num_parts N --part J   convert the J-th of N shares (a recording's segments stay in one share)
    --merge                  write the lists from the parts' results, validate, stamp

Without any of them, the whole is done in this process (with --nj processes for the conversion).
"""
import argparse
import dataclasses
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from dispatch.data.atomic import write_text_atomic
from dispatch.data.audio import probe
from dispatch.data.datadir import DataDirError, read_scp, read_segments, validate_data_dir, write_data_dir, write_scp
from dispatch.data.formatting import PairJob, PairResult, convert_pairs, over_full_scale, prepare_copies, summarize
from dispatch.fingerprint import audio_digest, file_digest

STAMP = ".format_done.json"
PARTS = ".format_parts"  # --prepare's plan.json and the results of each --part


def str2bool(value: str) -> bool:
    if value.lower() in ("true", "yes", "1"):
        return True
    if value.lower() in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


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


@dataclasses.dataclass
class Plan:
    """What formatting ``src`` into ``dst`` with some options involves (read from the lists, no audio)."""

    src: Path
    dst: Path
    fs: int
    min_duration: float
    downmix: bool
    rescale: bool
    options: dict  # the stamp of a finished formatting with these inputs
    jobs: List[PairJob]


def make_plan(src: Path, dst: Path, fs: int, min_duration: float = 0.0, downmix: bool = False,
              rescale: bool = False) -> Plan:
    """Read and check the lists of ``src`` (not the audio); raises DataDirError naming the fault."""
    validate_data_dir(src, check_audio=False)  # lists first: cheap, and names the broken file
    options = {"src": str(src.resolve()), "fs": fs, "min_duration": min_duration,
               "mtimes": {n: (src / n).stat().st_mtime for n in ("wav.scp", "spk1.scp", "utt2spk")},
               # size and mtime of every source audio file: audio rebuilt under the same ids is redone
               "audio": {n: audio_digest(src / n) for n in ("wav.scp", "spk1.scp")}}
    segments_file = src / "segments"
    has_segments = segments_file.exists()
    options["convert"] = {  # what the converted copies depend on, besides their source
        "fs": fs, "downmix": downmix, "rescale": rescale, "segments": file_digest(segments_file) if has_segments else None}
    wav, spk1 = (read_scp(src / n) for n in ("wav.scp", "spk1.scp"))
    # With segments, wav.scp and spk1.scp list recordings, cut by the same segments (as ESPnet's enh.sh).
    segments = read_segments(segments_file) if has_segments else None
    keys = sorted(segments if segments is not None else wav)
    recording = {k: segments[k][0] for k in keys} if segments is not None else {k: k for k in keys}
    jobs = [PairJob(k, wav[recording[k]], spk1[recording[k]], dst / "data" / "noisy" / f"{k}.wav",
                    dst / "data" / "clean" / f"{k}.wav", fs, segments[k] if segments is not None else None,
                    downmix, rescale) for k in keys]
    return Plan(src, dst, fs, min_duration, downmix, rescale, options, jobs)


def is_formatted(plan: Plan) -> bool:
    return read_stamp(plan.dst / STAMP) == plan.options


def prepare(plan: Plan) -> None:
    """Validate the source audio and remove what an earlier run made from other inputs or options."""
    src, dst, fs = plan.src, plan.dst, plan.fs
    validate_data_dir(src, mono=not plan.downmix)  # readable audio, one channel, equal noisy/clean lengths
    stamp = dst / STAMP
    previous = read_stamp(stamp)
    if previous is not None and previous.get("fs") != fs:
        logging.info(f"{dst} was formatted at {previous.get('fs')} Hz; this run formats at {fs} Hz: "
                     "converting anew")
        shutil.rmtree(dst / "data", ignore_errors=True)
    elif previous is not None and any(previous.get(k) != plan.options[k] for k in ("src", "fs", "audio")):
        logging.info(f"{dst}: the source audio or the rate changed since it was formatted: converting anew")
        shutil.rmtree(dst / "data", ignore_errors=True)  # no copy of the old audio may be kept
    stamp.unlink(missing_ok=True)  # a stale stamp (other options) must not vouch for a killed run's lists
    prepare_copies(dst / "data", plan.options["convert"])  # copies made with other options are removed
    shutil.rmtree(dst / PARTS, ignore_errors=True)  # results of parts of an earlier run
    (dst / PARTS).mkdir(parents=True)
    write_text_atomic(dst / PARTS / "plan.json", json.dumps(plan.options))


def share(jobs: List[PairJob], part: int, num_parts: int) -> List[PairJob]:
    """The ``part``-th (1-based) of ``num_parts`` shares; the segments of one recording stay together."""
    recordings = sorted({(j.noisy, j.clean) for j in jobs})
    index = {r: i for i, r in enumerate(recordings)}
    return [j for j in jobs if index[j.noisy, j.clean] % num_parts == part - 1]


def convert(plan: Plan, jobs: List[PairJob], nj: int) -> List[PairResult]:
    """Convert ``jobs`` (copies older than their source, or at another rate, are redone)."""
    drop_stale_copies([(j.noisy, j.noisy_dst) for j in jobs] + [(j.clean, j.clean_dst) for j in jobs], plan.fs)
    try:
        return convert_pairs(jobs, nj)
    except ValueError as e:
        raise DataDirError(f"{plan.src}: {e}") from e


def convert_part(plan: Plan, part: int, num_parts: int) -> int:
    """Convert one share after --prepare; its results go to <dst>/.format_parts/part.<part>.json."""
    if not 1 <= part <= num_parts:
        raise DataDirError(f"--part {part} is not between 1 and --num_parts {num_parts}")
    if read_stamp(plan.dst / PARTS / "plan.json") != plan.options:
        raise DataDirError(f"{plan.dst}: not prepared for these inputs and options: run format_data --prepare "
                           "with them first")
    mine = share(plan.jobs, part, num_parts)
    results = convert(plan, mine, 1)
    write_text_atomic(plan.dst / PARTS / f"part.{part}.json", json.dumps([dataclasses.asdict(r) for r in results]))
    return len(results)


def part_results(plan: Plan) -> List[PairResult]:
    """The results of every part, in the plan's order; raises DataDirError when a pair is missing."""
    if read_stamp(plan.dst / PARTS / "plan.json") != plan.options:
        raise DataDirError(f"{plan.dst}: not prepared for these inputs and options: run format_data --prepare, "
                           "the parts, then --merge")
    found = {}
    for path in sorted((plan.dst / PARTS).glob("part.*.json")):
        for record in json.loads(path.read_text()):
            record["downmixed"] = [tuple(d) for d in record["downmixed"]]
            record["over"] = tuple(record["over"]) if record["over"] else None
            found[record["utt"]] = PairResult(**record)
    missing = [j.utt for j in plan.jobs if j.utt not in found]
    if missing:
        raise DataDirError(f"{plan.dst}: {len(missing)} of {len(plan.jobs)} utterances are not converted yet "
                           f"(e.g. {', '.join(missing[:5])}): run every --part first")
    return [found[j.utt] for j in plan.jobs]


def finish(plan: Plan, results: List[PairResult]) -> int:
    """Check the conversion results, write the lists, validate them, stamp; returns the utterances kept."""
    src, dst, fs, min_duration = plan.src, plan.dst, plan.fs, plan.min_duration
    refused = over_full_scale(results)
    if refused:
        raise DataDirError(f"{src}: {refused}")
    summarize(src, results)
    keys = [j.utt for j in plan.jobs]
    utt2spk = read_scp(src / "utt2spk")
    noisy, clean = {r.utt: r.noisy for r in results}, {r.utt: r.clean for r in results}
    samples = {k: probe(noisy[k]).frames for k in keys}
    kept = [k for k in keys if samples[k] >= min_duration * fs]
    if len(kept) < len(keys):
        logging.warning(f"{src}: dropped {len(keys) - len(kept)} utterance(s) shorter than {min_duration} s")
    if not kept:
        raise DataDirError(f"{src}: no utterance is at least {min_duration} s long")
    write_data_dir(dst, {k: noisy[k] for k in kept}, {k: clean[k] for k in kept}, {k: utt2spk[k] for k in kept})
    write_scp(dst / "utt2num_samples", {k: str(samples[k]) for k in kept})
    validate_data_dir(dst, fs=fs)  # rates, lengths, readable audio
    write_text_atomic(dst / STAMP, json.dumps(plan.options))
    shutil.rmtree(dst / PARTS, ignore_errors=True)
    return len(kept)


def format_data_dir(src: Path, dst: Path, fs: int, nj: int = 1, min_duration: float = 0.0,
                    downmix: bool = False, rescale: bool = False) -> int:
    """Write the formatted copy of ``src`` into ``dst``; returns the number of utterances kept.

    Multi-channel audio is refused unless ``downmix`` (channels averaged); samples above full scale are
    refused unless ``rescale`` (each such noisy/clean pair scaled by one factor); a ``segments`` file cuts
    the recordings of wav.scp and spk1.scp into utterances (dispatch.data.formatting).

    Raises:
        DataDirError: naming the file and utterance, for broken lists or audio, before anything is written.
    """
    plan = make_plan(src, dst, fs, min_duration, downmix, rescale)
    if is_formatted(plan):
        logging.info(f"{dst}: formatted already")
        return len(read_scp(dst / "wav.scp"))
    prepare(plan)
    return finish(plan, convert(plan, plan.jobs, nj))


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="source data dir (wav.scp, spk1.scp, utt2spk)")
    parser.add_argument("dst", type=Path, help="formatted data dir to write")
    parser.add_argument("--fs", type=int, required=True, help="sampling rate in Hz")
    parser.add_argument("--nj", type=int, default=1, help="parallel processes for conversion")
    parser.add_argument("--min_duration", type=float, default=0.0, help="drop shorter utterances (seconds)")
    parser.add_argument("--downmix", type=str2bool, default=False,
                        help="average the channels of multi-channel audio (default: refuse it)")
    parser.add_argument("--rescale", type=str2bool, default=False,
                        help="scale each noisy/clean pair above full scale by one factor (default: refuse it)")
    steps = parser.add_mutually_exclusive_group()
    steps.add_argument("--check", action="store_true", help="exit 0 if dst is formatted already, else 1")
    steps.add_argument("--prepare", action="store_true", help="first step of a split run (see above)")
    steps.add_argument("--part", type=int, help="convert this share (1..--num_parts) after --prepare")
    steps.add_argument("--merge", action="store_true", help="last step of a split run, after every --part")
    parser.add_argument("--num_parts", type=int, default=1, help="number of shares (with --part)")
    return parser


def main(cmd: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (%(module)s) %(levelname)s: %(message)s")
    args = get_parser().parse_args(cmd)
    try:
        if not (args.check or args.prepare or args.part is not None or args.merge):
            n = format_data_dir(args.src, args.dst, args.fs, args.nj, args.min_duration, args.downmix, args.rescale)
            print(f"{args.dst}: {n} utterances at {args.fs} Hz")
            return 0
        plan = make_plan(args.src, args.dst, args.fs, args.min_duration, args.downmix, args.rescale)
        if args.check:
            done = is_formatted(plan)
            if done:
                logging.info(f"{args.dst}: formatted already")
            return 0 if done else 1
        if args.prepare:
            prepare(plan)
        elif args.part is not None:
            n = convert_part(plan, args.part, args.num_parts)
            print(f"{args.dst}: part {args.part} of {args.num_parts}: {n} utterances converted or referenced")
        else:
            n = finish(plan, part_results(plan))
            print(f"{args.dst}: {n} utterances at {args.fs} Hz")
    except DataDirError as e:
        if not args.check:  # --check only answers; --prepare, which comes next, names the fault
            print(f"format_data: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
