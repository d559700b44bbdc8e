#!/usr/bin/env python3
"""Export a trained espnet2 enhancement model to ONNX and check it against PyTorch.

    python -m dispatch.bin.export_onnx --data_dir dump/raw/test \\
        --name kd --model exp/student_x/packed_kd.zip --output_dir exp/student_x [--name ... --model ... --output_dir ...]

Several models (``--name``, ``--model``, ``--output_dir`` given once per model, in the same order) are
exported by one process. For each it writes ``<output_dir>/onnx/model.onnx`` (input ``mix`` (batch, samples)
-> output ``enhanced`` (batch, samples), dynamic length) and ``<output_dir>/onnx/export.json``: the exporter
and opset, onnxruntime vs PyTorch parity on the test utterances (worst SI-SDR and largest absolute
difference), the real-time factors of both on one CPU thread, and for a causal Conv-TasNet or a DCCRN(-CL)
the streaming check on the first ``--stream_utts`` utterances (block-by-block output against the offline
output, algorithmic latency = window + lookahead, per-block real-time factor; ``dispatch.export.streaming``),
in PyTorch and with ``model.stream.onnx``, the stream step as an ONNX graph with its state as inputs/outputs.
A model that cannot be exported gets a record naming the operator that blocked it; the exit status is then 0 unless
``--require true`` (also required: parity at least ``--min_parity_db``). ``python -m dispatch.export.report``
writes the Deployment table of the records into RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from espnet2.utils.types import str2bool

from dispatch.export.check import ort_session, parity, read_test_audio, speed
from dispatch.export.exporter import EXPORTERS, MIN_OPSET, ExportError, export_onnx
from dispatch.export.model import ExportableEnhancer, NotExportableError
from dispatch.export.report import write_record
from dispatch.export.streaming import streaming_error, streaming_report
from dispatch.results import machine_description
from dispatch.teacher import TeacherError, build_teacher, resolve_teacher, teacher_sample_rate


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", action="append", default=[], help="row name in the Deployment table (once per model)")
    p.add_argument("--model", action="append", default=[], help="experiment dir, packed zip or model zoo name")
    p.add_argument("--output_dir", type=Path, action="append", default=[],
                   help="the record and model go to <output_dir>/onnx/")
    p.add_argument("--model_file", default=None, help="weights inside an experiment dir (default: as resolve_teacher picks)")
    p.add_argument("--data_dir", type=Path, action="append", default=[], help="test data dir(s) with wav.scp")
    p.add_argument("--fs", type=int, default=16000, help="sampling rate of a config that does not record one")
    p.add_argument("--opset", type=int, default=MIN_OPSET)
    p.add_argument("--exporters", default=",".join(EXPORTERS), help="tried in this order (comma separated)")
    p.add_argument("--max_utts", type=int, default=0, help="parity on the first N test utterances (0: all)")
    p.add_argument("--rtf_utts", type=int, default=10, help="real-time factors over the first N test utterances")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per utterance (median)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--block_ms", type=float, default=10.0, help="block of the streaming check (causal models)")
    p.add_argument("--stream_utts", type=int, default=10,
                   help="streaming check on the first N test utterances (0: all; block by block is slow on "
                        "one thread: a DCCRN-CL streams at about real time)")
    p.add_argument("--min_parity_db", type=float, default=60.0, help="parity goal (worst SI-SDR, dB)")
    p.add_argument("--require", type=str2bool, default=False,
                   help="exit non-zero when the model cannot be exported or misses the parity goal")
    p.add_argument("--command", default="", help="the recipe command, recorded")
    return p


def export_and_check(args: argparse.Namespace, name: str, model_path: str, output_dir: Path,
                     audio: Dict[str, np.ndarray]) -> dict:
    """Export one model, check it on ``audio`` ({utt: samples}) and return its record (see the module docstring)."""
    model_file = str(Path(model_path) / args.model_file) if args.model_file and Path(model_path).is_dir() else None
    config, weights = resolve_teacher(model_path, teacher_model_file=model_file)
    model, conf = build_teacher(config, weights)
    fs = teacher_sample_rate(conf) or args.fs
    record = {
        "name": name, "model": str(model_path), "config": str(config), "model_file": str(weights),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_description(), "threads": args.threads, "parity_goal_db": args.min_parity_db,
        "test_data": [str(d) for d in args.data_dir], "command": args.command, "fs": fs,
        "onnx": None, "blocked_by": None, "errors": {}, "parity": None, "speed": None,
    }
    onnx_path = Path(output_dir) / "onnx" / "model.onnx"
    try:
        result = export_onnx(ExportableEnhancer(model).eval(), onnx_path, opset=args.opset,
                             exporters=[e for e in args.exporters.split(",") if e])
    except NotExportableError as e:
        record.update(blocked_by=str(e), errors={"wrapper": str(e)})
    except ExportError as e:
        record.update(blocked_by=e.operator, errors=e.errors)
    else:
        record["onnx"] = {"path": str(onnx_path), "exporter": result.exporter, "opset": result.opset,
                          "bytes": onnx_path.stat().st_size}
        record["errors"] = result.failed
    if record["onnx"] and audio:
        try:  # an exported graph onnxruntime refuses or runs differently is recorded, and the next model goes on
            session = ort_session(onnx_path, args.threads)
            record["parity"] = asdict(parity(model, session, audio))
            timed = dict(list(audio.items())[:args.rtf_utts])
            record["speed"] = asdict(speed(model, session, timed, fs, args.repeats, args.threads))
        except Exception as e:
            record["errors"]["onnxruntime"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"
    why = streaming_error(model)
    streamed = dict(list(audio.items())[:args.stream_utts]) if args.stream_utts > 0 else audio
    record["streaming"] = {"why_not": why} if why or not audio else asdict(streaming_report(
        model, streamed, fs, args.block_ms, args.threads, Path(output_dir) / "onnx" / "model.stream.onnx"))
    return record


def failure(record: dict, goal: float) -> Optional[str]:
    """Why the record misses what --require asks, or None."""
    if record["onnx"] is None:
        return f"not exported: blocked by {record['blocked_by']}"
    if "onnxruntime" in record["errors"]:
        return f"exported, but onnxruntime failed: {record['errors']['onnxruntime']}"
    if record["parity"] and record["parity"]["si_sdr_min_db"] < goal:
        return f"parity {record['parity']['si_sdr_min_db']:.1f} dB < {goal:g} dB on {record['parity']['worst_utt']}"
    return None


def main(cmd: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    parser = get_parser()
    args = parser.parse_args(cmd)
    if not args.model or not len(args.name) == len(args.model) == len(args.output_dir):
        parser.error("give --name, --model and --output_dir once per model "
                     f"(got {len(args.name)}, {len(args.model)}, {len(args.output_dir)})")
    for opt in ("max_utts", "rtf_utts", "stream_utts"):
        if getattr(args, opt) < 0:
            parser.error(f"--{opt} {getattr(args, opt)}: expected a count >= 0")
    for d in args.data_dir:
        if not (d / "wav.scp").is_file():
            parser.error(f"--data_dir {d}: {d / 'wav.scp'} does not exist")
    audio = read_test_audio([d / "wav.scp" for d in args.data_dir], args.max_utts) if args.data_dir else {}
    failed = []
    for name, model, output_dir in zip(args.name, args.model, args.output_dir):
        torch.manual_seed(0)
        try:
            record = export_and_check(args, name, model, output_dir, audio)
        except TeacherError as e:
            print(f"export_onnx: {name}: {e}", file=sys.stderr)
            return 1
        path = write_record(output_dir, record)
        why = failure(record, args.min_parity_db)
        onnx = record["onnx"]
        summary = why or (f"{onnx['exporter']} exporter; parity {record['parity']['si_sdr_min_db']:.1f} dB"
                          if record["parity"] else f"{onnx['exporter']} exporter (no test audio checked)")
        print(f"export_onnx: {name}: {summary} -> {path}", flush=True)
        if why:
            failed.append(f"{name}: {why}")
    if failed and args.require:
        print(f"export_onnx: {'; '.join(failed)} (--require true)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
