"""Kaldi-style data directories for single-speaker enhancement: read, write, validate.

A data dir holds, one utterance per line, sorted by key in C-locale byte order (``LC_ALL=C sort``,
which is Python's ``str`` order)::

    wav.scp     utt_id /abs/path/noisy.wav
    spk1.scp    utt_id /abs/path/clean.wav
    utt2spk     utt_id speaker_id
    spk2utt     speaker_id utt_id1 utt_id2 ...

and optionally more audio lists with the same keys (``noise1.scp``, ``dereverb1.scp``, ``spk2.scp``).

With a Kaldi ``segments`` file (``utt_id recording_id start_s end_s``, end -1: to the end), the audio
lists are keyed by recording and every list is cut by the same segments (as ESPnet's enh.sh does for
wav.scp and spk1.scp); ``utt2spk`` is keyed by utterance. Entries may also be archive entries
(``a.ark:1234``) or piped commands (``cmd |``): see :func:`dispatch.data.audio.entry_kind`.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from dispatch.data.atomic import PathLike, write_text_atomic
from dispatch.data.audio import AudioInfo, probe_entry

REQUIRED_AUDIO_SCPS = ("wav.scp", "spk1.scp")
_OPTIONAL_AUDIO_SCP = re.compile(r"^(spk|noise|dereverb)\d+\.scp$")
_MAX_LISTED = 20  # audio problems listed in one error message


class DataDirError(ValueError):
    """A data dir (or one of its files) is not what the recipes expect."""


def read_pairs(path: PathLike) -> List[Tuple[str, str]]:
    """Read ``key value`` lines of a Kaldi list in file order (value = rest of the line).

    Raises:
        DataDirError: naming the file and line for a blank line or a key without value.
    """
    pairs = []
    for lineno, raw in enumerate(Path(path).read_bytes().splitlines(), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataDirError(
                f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}): Kaldi "
                "lists are read as UTF-8; re-encode the list (e.g. iconv -f latin1 -t utf-8) and the file names"
            ) from None
        fields = line.strip().split(maxsplit=1)
        if len(fields) != 2:
            raise DataDirError(f"{path}:{lineno}: expected '<key> <value>', got {line!r}")
        pairs.append((fields[0], fields[1]))
    return pairs


MAX_SEGMENT_OVERSHOOT = 0.5  # seconds a segment may end after its recording (cut there), as Kaldi's extract-segments


def read_segments(path: PathLike) -> Dict[str, Tuple[str, float, float]]:
    """Read a Kaldi ``segments`` file: utterance -> (recording, start s, end s); end -1 means to the end.

    Raises:
        DataDirError: naming the file and line for a malformed line, a repeated utterance or an empty span.
    """
    segments: Dict[str, Tuple[str, float, float]] = {}
    for lineno, (utt, rest) in enumerate(read_pairs(path), 1):
        fields = rest.split()
        try:
            if len(fields) != 3:
                raise ValueError
            recording, start, end = fields[0], float(fields[1]), float(fields[2])
        except ValueError:
            raise DataDirError(
                f"{path}:{lineno}: expected '<utterance> <recording> <start s> <end s>', got '{utt} {rest}'"
            ) from None
        if utt in segments:
            raise DataDirError(f"{path}: utterance '{utt}' appears more than once")
        if start < 0 or (end != -1 and end <= start):
            raise DataDirError(f"{path}:{lineno}: utterance '{utt}': segment {start}..{end} s is empty or negative")
        segments[utt] = (recording, start, end)
    return segments


def segment_frames(segment: Tuple[str, float, float], rate: int, frames: int) -> Tuple[int, int]:
    """Sample range [start, stop) of a segment in a recording of ``frames`` samples at ``rate`` Hz."""
    _, start, end = segment
    stop = frames if end == -1 else min(frames, int(round(end * rate)))
    return int(round(start * rate)), stop


def read_scp(path: PathLike) -> Dict[str, str]:
    """Read a Kaldi list (``wav.scp``, ``utt2spk``, ...) into a dict, keeping file order.

    Raises:
        DataDirError: for malformed lines or a repeated key.
    """
    entries: Dict[str, str] = {}
    for key, value in read_pairs(path):
        if key in entries:
            raise DataDirError(f"{path}: key '{key}' appears more than once")
        entries[key] = value
    return entries


def write_scp(path: PathLike, entries: Mapping[str, str]) -> None:
    """Write ``key value`` lines sorted by key (C locale), atomically.

    Raises:
        DataDirError: if a key is empty or holds whitespace, or a value is empty or spans lines.
    """
    for key, value in entries.items():
        if not key or key.split() != [key]:
            raise DataDirError(f"{path}: invalid key {key!r} (must be non-empty, without whitespace)")
        if not value.strip() or "\n" in value:
            raise DataDirError(f"{path}: utterance '{key}': invalid value {value!r}")
    write_text_atomic(path, "".join(f"{k} {entries[k]}\n" for k in sorted(entries)))


def spk2utt_from_utt2spk(utt2spk: Mapping[str, str]) -> Dict[str, List[str]]:
    """Invert ``utt2spk``: speaker -> sorted utterance ids, speakers sorted."""
    spk2utt: Dict[str, List[str]] = {}
    for utt in sorted(utt2spk):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    return {spk: spk2utt[spk] for spk in sorted(spk2utt)}


def write_data_dir(
    path: PathLike,
    wav: Mapping[str, str],
    spk1: Mapping[str, str],
    utt2spk: Optional[Mapping[str, str]] = None,
    extra_scps: Optional[Mapping[str, Mapping[str, str]]] = None,
) -> Path:
    """Write a complete data dir.

    Args:
        path: data dir to create (or overwrite file by file).
        wav: utterance -> noisy audio path (``wav.scp``).
        spk1: utterance -> clean reference path (``spk1.scp``).
        utt2spk: utterance -> speaker; default: each utterance is its own speaker.
        extra_scps: more audio lists by file name, e.g. ``{"noise1.scp": {...}}``.

    Raises:
        DataDirError: if the lists do not have the same keys, or there are none.
    """
    path = Path(path)
    utt2spk = {utt: utt for utt in wav} if utt2spk is None else utt2spk
    lists = {"wav.scp": wav, "spk1.scp": spk1, "utt2spk": utt2spk, **(extra_scps or {})}
    if not wav:
        raise DataDirError(f"{path}: no utterances to write")
    for name, entries in lists.items():
        if entries.keys() != wav.keys():
            odd = sorted(entries.keys() ^ wav.keys())[0]
            raise DataDirError(f"{path}: {name} and wav.scp differ in keys, e.g. utterance '{odd}'")
    for name, entries in lists.items():
        write_scp(path / name, entries)
    spk2utt = spk2utt_from_utt2spk(utt2spk)
    write_scp(path / "spk2utt", {spk: " ".join(utts) for spk, utts in spk2utt.items()})
    return path


def _check_sorted(data_dir: Path, name: str, pairs: Sequence[Tuple[str, str]]) -> None:
    for (prev, _), (key, _) in zip(pairs, pairs[1:]):
        if key <= prev:
            problem = "repeated" if key == prev else f"not sorted (LC_ALL=C): comes after '{prev}'"
            raise DataDirError(f"{data_dir}: {name}: utterance '{key}': key {problem}")


def _read_sorted(data_dir: Path, name: str) -> List[Tuple[str, str]]:
    path = data_dir / name
    if not path.is_file():
        raise DataDirError(f"{data_dir}: missing {name}")
    pairs = read_pairs(path)
    if not pairs:
        raise DataDirError(f"{data_dir}: {name} is empty")
    _check_sorted(data_dir, name, pairs)
    return pairs


def _check_same_keys(data_dir: Path, name: str, keys: Sequence[str], ref: Sequence[str],
                     ref_name: str = "wav.scp", what: str = "utterance") -> None:
    if list(keys) == list(ref):
        return
    only_here, only_ref = sorted(set(keys) - set(ref)), sorted(set(ref) - set(keys))
    if only_here:
        raise DataDirError(f"{data_dir}: {name}: {what} '{only_here[0]}' is not in {ref_name}")
    raise DataDirError(f"{data_dir}: {name}: {what} '{only_ref[0]}' of {ref_name} is missing")


def _check_spk2utt(data_dir: Path, utt2spk: Sequence[Tuple[str, str]]) -> None:
    expected = {spk: " ".join(utts) for spk, utts in spk2utt_from_utt2spk(dict(utt2spk)).items()}
    found = _read_sorted(data_dir, "spk2utt")
    for spk, utts in found:
        if spk not in expected:
            raise DataDirError(f"{data_dir}: spk2utt: speaker '{spk}' is not in utt2spk")
        if utts.split() != expected[spk].split():
            raise DataDirError(
                f"{data_dir}: spk2utt: speaker '{spk}' lists '{utts}', utt2spk gives '{expected[spk]}'"
            )
    missing = sorted(expected.keys() - {spk for spk, _ in found})
    if missing:
        raise DataDirError(f"{data_dir}: spk2utt: speaker '{missing[0]}' of utt2spk is missing")


def _audio_problems(
    scps: Mapping[str, Mapping[str, str]], fs: Optional[int], mono: bool = True, what: str = "utterance",
) -> Tuple[List[str], Dict[str, AudioInfo]]:
    """Check every audio entry of every list; return one message per problem, and wav.scp's headers."""
    problems = []
    lengths: Dict[str, Tuple[str, int]] = {}  # utterance -> (first list, frames)
    infos: Dict[str, AudioInfo] = {}
    for name, entries in scps.items():
        for utt, value in entries.items():
            where = f"{name}: {what} '{utt}'"
            try:
                info = probe_entry(value)
            except ValueError as e:
                problems.append(f"{where}: {e}")
                continue
            if name == "wav.scp":
                infos[utt] = info
            if fs is not None and info.samplerate != fs:
                problems.append(f"{where}: {value}: sampled at {info.samplerate} Hz, expected {fs} Hz")
            if mono and info.channels != 1:
                problems.append(
                    f"{where}: {value}: {info.channels} channels; the recipes train single-channel models: "
                    "give format_data --downmix true (enh_kd.sh --format_args \"--downmix true\") to average "
                    "the channels, or pick one channel when preparing the data"
                )
            first = lengths.setdefault(utt, (name, info.frames))
            if first[1] != info.frames:
                problems.append(
                    f"{where}: {value}: {info.frames} samples, but {first[0]} has {first[1]}"
                )
    return problems, infos


def _segment_problems(segments: Mapping[str, Tuple[str, float, float]], infos: Mapping[str, AudioInfo]) -> List[str]:
    problems = []
    for utt, (recording, start, end) in segments.items():
        info = infos.get(recording)
        if info is None:
            continue  # its recording's own problem is listed
        duration = info.frames / info.samplerate
        if start >= duration or (end != -1 and end > duration + MAX_SEGMENT_OVERSHOOT):
            problems.append(
                f"segments: utterance '{utt}': {start}..{end} s lies outside recording '{recording}' "
                f"({duration:.3f} s)"
            )
    return problems


def validate_data_dir(path: PathLike, fs: Optional[int] = None, check_audio: bool = True, mono: bool = True) -> int:
    """Check a data dir in the spirit of Kaldi's ``utils/validate_data_dir.sh``.

    Checks that ``wav.scp``, ``spk1.scp``, ``utt2spk`` (and any ``noise1.scp`` etc.) are sorted with
    unique, identical keys; that ``spk2utt`` is the inverse of ``utt2spk``; and, with ``check_audio``,
    that every listed file is complete, readable audio, at ``fs`` Hz when given, and that all lists of
    an utterance have the same number of samples; with ``mono``, that it has one channel. With a
    ``segments`` file, the audio lists are keyed by recording, ``utt2spk`` by segment, and every segment
    must lie inside its recording.

    Returns:
        The number of utterances.

    Raises:
        DataDirError: naming the data dir, the file and the utterance at fault. Audio problems are
            collected and listed together (up to 20).
    """
    data_dir = Path(path)
    if not data_dir.is_dir():
        raise DataDirError(f"{data_dir}: not a directory")
    optional = sorted(p.name for p in data_dir.glob("*.scp") if _OPTIONAL_AUDIO_SCP.match(p.name))
    audio_names = list(REQUIRED_AUDIO_SCPS) + [n for n in optional if n not in REQUIRED_AUDIO_SCPS]
    scps = {name: _read_sorted(data_dir, name) for name in audio_names}
    keys = [key for key, _ in scps["wav.scp"]]
    utt2spk = _read_sorted(data_dir, "utt2spk")
    segments = None
    if (data_dir / "segments").exists():  # wav.scp etc. list recordings, segments cuts them into utterances
        _read_sorted(data_dir, "segments")
        segments = read_segments(data_dir / "segments")
        recordings = set(keys)
        for utt, (recording, _, _) in segments.items():
            if recording not in recordings:
                raise DataDirError(f"{data_dir}: segments: utterance '{utt}': recording '{recording}' is not in wav.scp")
    what = "recording" if segments is not None else "utterance"
    for name, pairs in scps.items():
        _check_same_keys(data_dir, name, [key for key, _ in pairs], keys, what=what)
    if segments is not None:
        _check_same_keys(data_dir, "utt2spk", [key for key, _ in utt2spk], list(segments), ref_name="segments")
    else:
        _check_same_keys(data_dir, "utt2spk", [key for key, _ in utt2spk], keys)
    _check_spk2utt(data_dir, utt2spk)
    if check_audio:
        problems, infos = _audio_problems({name: dict(pairs) for name, pairs in scps.items()}, fs, mono, what)
        if segments is not None:
            problems += _segment_problems(segments, infos)
        if problems:
            listed = "\n  ".join(problems[:_MAX_LISTED])
            more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
            raise DataDirError(f"{data_dir}: {len(problems)} audio problem(s):\n  {listed}{more}")
    return len(keys) if segments is None else len(segments)
