#!/usr/bin/env python3
"""Run a frozen teacher once over a data dir and add its outputs as the ``teacher_ref1`` stream.

    python -m dispatch.bin.cache_teacher --teacher_model exp/teacher_conv_tasnet_teacher \\
        --data_dir dump/raw/train --output_dir exp/teacher_conv_tasnet_teacher/cache_train --nj 4

Every utterance of ``<data_dir>/wav.scp`` is enhanced whole (batch of one, no chunking) with
:func:`dispatch.teacher.teacher_enhance`, written as ``<output_dir>/<utt>.wav`` and listed in
``<data_dir>/teacher_ref1.scp``. KD training then reads the stream like ``spk1.scp``::

    --train_data_path_and_name_and_type <data_dir>/teacher_ref1.scp,teacher_ref1,sound

and skips the teacher (:class:`dispatch.model.ESPnetEnhancementKDModel`). With the chunk iterator the
noisy input, the clean target and the teacher output are cut at the same positions. The difference
from the online teacher: a cached output was computed from the whole utterance, an online one from the
training chunk only (Conv-TasNet's global layer norm and receptive field see the chunk's context).

Outputs are 32-bit float wav (subtype FLOAT): the KD target is exactly what the teacher produced,
neither quantised to 16 bits nor clipped to [-1, 1). Every file is written atomically, so a killed run
is resumed by running it again: finished files are kept. ``<output_dir>/teacher.json`` records which
teacher made the files; a rerun with another teacher is refused rather than mixing outputs.
``<output_dir>/inputs.json`` records the size and mtime of each utterance's input: an output whose input
changed since (a data dir rebuilt under the same ids) is made again.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import multiprocessing
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
import torch

from dispatch.data.atomic import atomic_path, write_text_atomic
from dispatch.data.datadir import DataDirError, read_scp, write_scp
from dispatch.fingerprint import entry_file, file_stat
from dispatch.model import TEACHER_AUTOCAST_CHOICES, TEACHER_STREAM, teacher_autocast_context
from dispatch.teacher import TeacherError, load_teacher, resolve_teacher, teacher_enhance, teacher_sample_rate

STAMP = "teacher.json"
INPUTS = "inputs.json"  # utterance -> [size, mtime_ns] of its input file when its output was made
SUBTYPE = "FLOAT"


class CacheError(RuntimeError):
    """The cache cannot be built or does not match its data dir."""


@dataclass(frozen=True)
class Shard:
    """The work of one process: utterances (key, noisy path) to enhance with one teacher."""

    config: Path
    model_file: Path
    items: Sequence[Tuple[str, str]]
    output_dir: Path
    device: str
    autocast: str
    num_threads: int


def output_path(output_dir: Path, utt: str) -> Path:
    return output_dir / f"{utt}.wav"


def teacher_identity(config: Path, model_file: Path, autocast: str) -> Dict[str, object]:
    """What decides the cached outputs: the teacher's weights (by content) and its precision.

    Content, not path or mtime: a packed teacher is unpacked by espnet_model_zoo into a cache whose
    files may be rewritten with new times, and the same weights may be reached through other paths.
    """
    digest = hashlib.sha256()
    with open(model_file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"model_sha256": digest.hexdigest(), "autocast": autocast}


def claim_output_dir(output_dir: Path, identity: Dict[str, object]) -> None:
    """Record the teacher in ``output_dir``, or refuse if earlier outputs came from another one."""
    stamp = output_dir / STAMP
    if stamp.exists():
        previous = json.loads(stamp.read_text())
        if previous != identity:
            raise CacheError(
                f"{output_dir} holds outputs of another teacher ({stamp}: {previous}); "
                f"remove it or choose another --output_dir"
            )
        return
    write_text_atomic(stamp, json.dumps(identity, indent=1) + "\n")


def read_mono(utt: str, path: str) -> Tuple[np.ndarray, int]:
    """(samples as float32 (n,), sampling rate) of one wav.scp entry, with errors naming the utterance."""
    if path.rstrip().endswith("|"):
        raise CacheError(f"utterance '{utt}': {path!r} is a piped command; format the data dir first")
    try:
        wav, fs = sf.read(path, dtype="float32")
    except (sf.SoundFileError, RuntimeError) as e:
        raise CacheError(f"utterance '{utt}': cannot read {path} ({e})") from e
    if wav.ndim != 1:
        raise CacheError(f"utterance '{utt}': {path} has {wav.shape[1]} channels; the teacher cache is for mono input")
    return wav, fs


def enhance_shard(shard: Shard) -> int:
    """Enhance the utterances of one shard; returns how many were written."""
    torch.set_num_threads(shard.num_threads)
    teacher, conf = load_teacher(shard.config, shard.model_file, shard.device)
    teacher_fs = teacher_sample_rate(conf)
    device = torch.device(shard.device)
    for i, (utt, path) in enumerate(shard.items, 1):
        wav, fs = read_mono(utt, path)
        if teacher_fs and fs != teacher_fs:
            raise CacheError(f"utterance '{utt}': {path} is sampled at {fs} Hz, the teacher at {teacher_fs} Hz")
        mix = torch.from_numpy(wav).to(device).unsqueeze(0)
        with teacher_autocast_context(shard.autocast, device):
            enhanced = teacher_enhance(teacher, mix, torch.tensor([mix.shape[1]], device=device))
        enhanced = enhanced[0].float().cpu().numpy()
        if enhanced.shape != wav.shape:  # teacher_enhance fits the length; a change here is a bug
            raise CacheError(f"utterance '{utt}': teacher output has {enhanced.shape} samples, input {wav.shape}")
        with atomic_path(output_path(shard.output_dir, utt)) as tmp:
            sf.write(str(tmp), enhanced, fs, subtype=SUBTYPE, format="WAV")
        if i % 100 == 0:
            logging.info(f"{i}/{len(shard.items)} utterances of this shard done")
    return len(shard.items)


def drop_stale_outputs(wav_scp: Dict[str, str], output_dir: Path) -> None:
    """Remove the outputs whose input changed (size or mtime) since they were made, then record the
    inputs of now. A cache made before inputs were recorded is taken as it is (and recorded)."""
    now = {utt: file_stat(entry_file(path)) for utt, path in wav_scp.items()}
    record = output_dir / INPUTS
    try:
        made_from = json.loads(record.read_text())
    except (OSError, ValueError):
        made_from = None
    if made_from is None:
        if any(output_path(output_dir, utt).exists() for utt in wav_scp):
            logging.info(f"{output_dir}: no record of the inputs of its outputs; recording them as they are now")
    else:
        stale = [utt for utt in wav_scp if output_path(output_dir, utt).exists() and made_from.get(utt) != now[utt]]
        if stale:
            logging.info(f"{output_dir}: the input of {len(stale)} utterance(s) changed since their output was "
                         f"made (e.g. {stale[0]}): enhancing them again")
        for utt in stale:
            output_path(output_dir, utt).unlink()
        now = {**made_from, **now}
    write_text_atomic(record, json.dumps(now) + "\n")


def check_outputs(wav_scp: Dict[str, str], output_dir: Path) -> Dict[str, str]:
    """Output path of every utterance, after checking it has the input's length and rate."""
    outputs = {}
    for utt, path in wav_scp.items():
        out = output_path(output_dir, utt)
        src, dst = sf.info(path), sf.info(str(out))
        if (dst.frames, dst.samplerate) != (src.frames, src.samplerate):
            raise CacheError(
                f"utterance '{utt}': {out} has {dst.frames} samples at {dst.samplerate} Hz, the input "
                f"{path} {src.frames} at {src.samplerate} Hz; remove {out} and rerun"
            )
        outputs[utt] = str(out.resolve())
    return outputs


def cache_teacher(
    teacher_model: str,
    data_dir: Path,
    output_dir: Path,
    nj: int = 1,
    ngpu: int = 0,
    autocast: str = "none",
    teacher_config: Optional[str] = None,
    teacher_model_file: Optional[str] = None,
) -> Path:
    """Write the teacher outputs of ``data_dir`` and its ``teacher_ref1.scp``; returns that scp's path."""
    config, model_file = resolve_teacher(teacher_model, teacher_config, teacher_model_file)
    wav_scp = read_scp(data_dir / "wav.scp")
    if not wav_scp:
        raise DataDirError(f"{data_dir / 'wav.scp'} is empty")
    output_dir.mkdir(parents=True, exist_ok=True)
    claim_output_dir(output_dir, teacher_identity(config, model_file, autocast))
    drop_stale_outputs(wav_scp, output_dir)

    todo = [(utt, path) for utt, path in wav_scp.items() if not output_path(output_dir, utt).exists()]
    logging.info(f"{data_dir}: {len(wav_scp) - len(todo)} of {len(wav_scp)} utterances cached already")
    if todo:
        nj = max(1, min(nj, len(todo)))
        device = "cuda" if ngpu > 0 else "cpu"
        threads = max(1, torch.get_num_threads() // nj)
        shards = [Shard(config, model_file, todo[i::nj], output_dir, device, autocast, threads) for i in range(nj)]
        if nj == 1:
            enhance_shard(shards[0])
        else:  # spawn: forked children of a process that used OpenMP or CUDA can hang
            with multiprocessing.get_context("spawn").Pool(nj) as pool:
                pool.map(enhance_shard, shards)

    scp = data_dir / f"{TEACHER_STREAM}.scp"
    write_scp(scp, check_outputs(wav_scp, output_dir))
    return scp


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher_model", required=True,
                        help="teacher: espnet2 enh experiment dir, packed zip, or espnet_model_zoo name")
    parser.add_argument("--teacher_config", default=None, help="override the teacher's config.yaml")
    parser.add_argument("--teacher_model_file", default=None, help="override the teacher's weights")
    parser.add_argument("--data_dir", type=Path, required=True, help="data dir with wav.scp (e.g. dump/raw/train)")
    parser.add_argument("--output_dir", type=Path, required=True, help="folder for the teacher's wavs")
    parser.add_argument("--nj", type=int, default=1, help="parallel processes")
    parser.add_argument("--ngpu", type=int, default=0, choices=(0, 1), help="1: run the teacher on cuda")
    parser.add_argument("--teacher_autocast", default="none", choices=TEACHER_AUTOCAST_CHOICES,
                        help="autocast dtype of the teacher on cuda (outputs are stored as float32 anyway)")
    return parser


def main(cmd: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (%(module)s) %(levelname)s: %(message)s")
    args = get_parser().parse_args(cmd)
    if args.ngpu > 0 and not torch.cuda.is_available():
        print("cache_teacher: --ngpu 1 but torch sees no CUDA device", file=sys.stderr)
        return 1
    try:
        scp = cache_teacher(args.teacher_model, args.data_dir, args.output_dir, args.nj, args.ngpu,
                            args.teacher_autocast, args.teacher_config, args.teacher_model_file)
    except (CacheError, DataDirError, TeacherError) as e:
        print(f"cache_teacher: {e}", file=sys.stderr)
        return 1
    print(f"{scp}: teacher outputs of {len(read_scp(scp))} utterances")
    return 0


if __name__ == "__main__":
    sys.exit(main())
