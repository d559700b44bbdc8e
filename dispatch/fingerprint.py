#!/usr/bin/env python3
"""Fingerprints of a stage's inputs: every output records what it was made from.

A stage writes a stamp (JSON) beside its output holding the fingerprint of each input; a rerun compares
the stamp with the inputs as they are now, skips when nothing changed and otherwise redoes the work,
saying which input changed. Three kinds of input:

    file   a model, a config: its content (sha256), so that the same weights reached through another
           path (an unpacked zip, a copy) are the same input and retrained weights are not;
    audio  a Kaldi scp list: its text, and the size and modification time of every file it names
           (``ark:`` offsets and pipes: the archive file, the command text), so that audio rebuilt
           under the same ids is noticed without reading it;
    value  an option (sampling rate, inference options).

CLI (used by enh_kd.sh; inputs are NAME=VALUE words after --file/--audio/--value):

    python -m dispatch.fingerprint check exp/x/enhanced_test/.inputs.json \\
        --file model=exp/x/valid.loss.best.pth --file train_config=exp/x/config.yaml \\
        --audio wav.scp=dump/raw/test/wav.scp --value fs=16000
    python -m dispatch.fingerprint write exp/x/enhanced_test/.inputs.json <the same inputs>

``check`` exits 0 when the stamp matches, else 1 and prints the reason on one line (e.g. "model
exp/x/valid.loss.best.pth changed"); ``write`` records the inputs (atomically).

This module imports nothing heavy (no torch), so that the shell stages can call it cheaply.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from dispatch.data.atomic import write_text_atomic

VERSION = 1
STAMP = ".inputs.json"  # the usual stamp name of a stage output folder
Record = Dict[str, dict]


def file_digest(path: os.PathLike | str) -> str:
    """sha256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def entry_file(value: str) -> Optional[str]:
    """The file an scp entry's audio lives in: the path itself, an ``ark`` file without its ``:offset``
    (``a.ark:123``, ``ark:a.ark:123``), or None for a piped command (``sox a.wav -t wav - |``)."""
    value = value.strip()
    if value.endswith("|"):
        return None
    if value.startswith("ark"):  # ark:a.ark:12, ark,s,cs:a.ark:12
        value = re.sub(r"^ark(,[a-z]+)*:", "", value)
    if not os.path.exists(value) and ":" in value:
        head, _, offset = value.rpartition(":")
        if offset.isdigit() or (offset.startswith("[") and offset.endswith("]")):
            return head
    return value


def file_stat(path: Optional[str]) -> Optional[List[int]]:
    """[size, mtime in ns] of a file, or None for a missing file (or a pipe: no file)."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def read_entries(scp: os.PathLike | str) -> Tuple[str, Dict[str, str]]:
    """(text, {utterance id: rest of line}) of an scp list; bytes that are not UTF-8 are kept escaped."""
    text = Path(scp).read_bytes().decode("utf-8", errors="surrogateescape")
    entries = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            entries[key] = value.strip()
    return text, entries


def audio_fingerprint(scp: os.PathLike | str) -> dict:
    """The list's text hash and [size, mtime_ns] of the file behind each entry (null: missing or pipe)."""
    text, entries = read_entries(scp)
    stats = {}
    cache: Dict[str, Optional[List[int]]] = {}  # ark entries share their archive
    for utt, value in entries.items():
        path = entry_file(value)
        if path not in cache:
            cache[path] = file_stat(path)
        stats[utt] = cache[path]
    digest = hashlib.sha256(text.encode("utf-8", errors="surrogateescape")).hexdigest()
    return {"kind": "audio", "path": str(scp), "text_sha256": digest, "files": stats}


def audio_digest(scp: os.PathLike | str) -> str:
    """One sha256 of an scp list's entries and of the size and mtime of each audio file behind them."""
    fp = audio_fingerprint(scp)
    return hashlib.sha256(json.dumps([fp["text_sha256"], fp["files"]], sort_keys=True).encode()).hexdigest()


def describe(files: Iterable[Tuple[str, str]] = (), audio: Iterable[Tuple[str, str]] = (),
             values: Iterable[Tuple[str, str]] = ()) -> Record:
    """The fingerprint of named inputs: (name, path) of files and scp lists, (name, text) of options.

    Raises:
        FileNotFoundError: a file or scp list that does not exist (the message names it).
    """
    record: Record = {}
    for name, path in files:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{name}: {path}: no such file")
        record[name] = {"kind": "file", "path": str(path), "sha256": file_digest(path)}
    for name, path in audio:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{name}: {path}: no such file")
        record[name] = audio_fingerprint(path)
    for name, value in values:
        record[name] = {"kind": "value", "value": str(value)}
    return record


def _audio_change(name: str, old: dict, new: dict) -> Optional[str]:
    old_files, new_files = old.get("files", {}), new["files"]
    if set(old_files) != set(new_files):
        gone, added = sorted(set(old_files) - set(new_files)), sorted(set(new_files) - set(old_files))
        parts = [f"{len(gone)} utterance(s) gone" if gone else "", f"{len(added)} new" if added else ""]
        return f"{name} {new['path']}: {', '.join(p for p in parts if p)} (e.g. {(gone + added)[0]})"
    changed = sorted(u for u in new_files if new_files[u] != old_files[u])
    if changed:
        return (f"{name} {new['path']}: the audio of {len(changed)} utterance(s) changed (size or time), "
                f"e.g. {changed[0]}")
    if old.get("text_sha256") != new["text_sha256"]:
        return f"{name} {new['path']}: its entries changed"
    return None


def differences(old: Record, new: Record) -> List[str]:
    """What changed from ``old`` to ``new``, one phrase per input (empty: the same inputs)."""
    reasons = []
    for name in sorted(set(old) - set(new)):
        reasons.append(f"{name} is no longer an input")
    for name, now in new.items():
        before = old.get(name)
        if before is None:
            reasons.append(f"{name} was not recorded")
        elif before.get("kind") != now["kind"]:
            reasons.append(f"{name} is now a {now['kind']}")
        elif now["kind"] == "file" and before.get("sha256") != now["sha256"]:
            moved = "" if before.get("path") == now["path"] else f" (was {before.get('path')})"
            reasons.append(f"{name} {now['path']}{moved} changed")
        elif now["kind"] == "value" and before.get("value") != now["value"]:
            reasons.append(f"{name} was {before.get('value')!r}, now {now['value']!r}")
        elif now["kind"] == "audio" and (why := _audio_change(name, before, now)):
            reasons.append(why)
    return reasons


def read_stamp(stamp: os.PathLike | str) -> Optional[Record]:
    """The inputs recorded in a stamp, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads(Path(stamp).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("inputs"), dict):
        return None
    return data["inputs"]


def check(stamp: os.PathLike | str, record: Record) -> Optional[str]:
    """None when ``stamp`` records exactly ``record``; else why not, in one line."""
    old = read_stamp(stamp)
    if old is None:
        return f"no record of its inputs ({stamp} is missing or unreadable)"
    reasons = differences(old, record)
    return "; ".join(reasons) if reasons else None


def write(stamp: os.PathLike | str, record: Record) -> None:
    """Record the inputs in ``stamp`` (atomically)."""
    write_text_atomic(stamp, json.dumps({"version": VERSION, "inputs": record}, indent=1) + "\n")


def _pair(text: str) -> Tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dispatch.fingerprint", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("check", "write"))
    parser.add_argument("stamp", type=Path, help="stamp file (JSON) of the output")
    parser.add_argument("--file", type=_pair, action="append", default=[], metavar="NAME=PATH",
                        help="a file fingerprinted by its content (model, config)")
    parser.add_argument("--audio", type=_pair, action="append", default=[], metavar="NAME=SCP",
                        help="an scp list: its text and the size and mtime of each file it names")
    parser.add_argument("--value", type=_pair, action="append", default=[], metavar="NAME=TEXT",
                        help="an option value")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        record = describe(args.file, args.audio, args.value)
    except FileNotFoundError as e:
        print(f"fingerprint: {e}", file=sys.stderr)
        return 2
    if args.action == "write":
        write(args.stamp, record)
        return 0
    why = check(args.stamp, record)
    if why is None:
        return 0
    print(why)
    return 1


if __name__ == "__main__":
    sys.exit(main())
