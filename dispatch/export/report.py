"""The export record (``<out>/onnx/export.json``) and its markdown: the Deployment table of RESULTS.md.

One record per model, written atomically by ``dispatch.bin.export_onnx``; the results stage and the
export stage both render the same table from the records (:func:`deployment_section`). The export stage
writes it into RESULTS.md with (no torch import, so it is quick)::

    python -m dispatch.export.report RESULTS.md teacher=exp/teacher_given baseline=exp/student_x ...
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from dispatch.data.atomic import write_text_atomic

RECORD = Path("onnx") / "export.json"
HEADING = "## Deployment"


def record_path(out_dir: Path) -> Path:
    return Path(out_dir) / RECORD


def read_record(out_dir: Path) -> Optional[dict]:
    """The export record of a model's output folder, or None if it was not exported."""
    path = record_path(out_dir)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from e


def write_record(out_dir: Path, record: dict) -> Path:
    path = record_path(out_dir)
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")
    return path


def _num(x: Optional[float], fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def table_row(name: str, record: dict) -> str:
    """One row: exporter, parity (worst SI-SDR, max abs diff), RTFs, streaming latency and block RTF, blocker."""
    parity, speed, stream = record.get("parity") or {}, record.get("speed") or {}, record.get("streaming") or {}
    onnx = record.get("onnx") or {}
    exporter = f"{onnx['exporter']}, opset {onnx['opset']}" if onnx else f"not exported: {record.get('blocked_by')}"
    if "onnxruntime" in (record.get("errors") or {}):
        exporter += f"; onnxruntime failed: {record['errors']['onnxruntime']}"
    streaming = "-"
    if "latency_ms" in stream:
        parts = (f" ({stream['window_ms']:g} ms window + {stream['lookahead_ms']:g} ms lookahead)"
                 if stream.get("window_ms") is not None else "")
        streaming = (f"{stream['latency_ms']:.2f} ms{parts}; {stream['block_ms']:g} ms blocks: RTF torch "
                     f"{stream['rtf_per_block']:.3f} (max diff {stream['max_abs_diff']:.1e} over {stream['utterances']} utt.)")
        if stream.get("onnx_rtf_per_block") is not None:
            streaming += f", onnx {stream['onnx_rtf_per_block']:.3f} ({stream['onnx_max_abs_diff']:.1e})"
    return (f"| {name} | {exporter} | {_num(parity.get('si_sdr_min_db'), '.1f')} | {_num(parity.get('max_abs_diff'), '.1e')} "
            f"| {_num(speed.get('rtf_torch'), '.4f')} | {_num(speed.get('rtf_onnx'), '.4f')} | {streaming} |")


def deployment_section(rows: Sequence[Tuple[str, Path]]) -> List[str]:
    """Markdown lines of the Deployment section for the rows that have an export record (empty if none)."""
    records = [(name, rec) for name, out_dir in rows if (rec := read_record(Path(out_dir))) is not None]
    if not records:
        return []
    first = records[0][1]
    lines = [HEADING, "",
             f"ONNX export (`python -m dispatch.bin.export_onnx`, stage 12) on {first.get('machine', '?')}, "
             f"{first.get('date', '?')}; one CPU thread for PyTorch (`torch.set_num_threads(1)`) and onnxruntime "
             "(`intra_op_num_threads=1`). Parity: onnxruntime's output against PyTorch's (espnet2's forward) on "
             f"the test utterances, worst SI-SDR (goal >= {first.get('parity_goal_db', 60):g} dB) and largest absolute "
             "sample difference. RTF: processing time / audio duration over the utterances timed. Streaming: "
             "algorithmic latency (window + lookahead), then the real-time factor of one block step and the "
             "largest difference from the offline output, in PyTorch and with the ONNX stream graph "
             "(`onnx/model.stream.onnx`; causal models only).", "",
             "| model | exporter | parity SI-SDR (dB) | max abs diff | RTF torch | RTF onnx | streaming |",
             "|---|---|---:|---:|---:|---:|---|"]
    lines += [table_row(name, rec) for name, rec in records]
    return lines + [""]


def replace_section(markdown: str, section: Sequence[str]) -> str:
    """``markdown`` with its Deployment section (up to the next level-2 heading) replaced by ``section``,
    or ``section`` appended."""
    pattern = re.compile(rf"^{re.escape(HEADING)}\n.*?(?=^## |\Z)", re.S | re.M)
    body = "\n".join(section)
    if pattern.search(markdown):
        return pattern.sub(lambda _: body + ("\n" if body else ""), markdown, count=1)
    return markdown.rstrip("\n") + "\n\n" + body + "\n" if body else markdown


def update_results_md(results_md: Path, rows: Sequence[Tuple[str, Path]]) -> None:
    """Write the Deployment section of the rows' export records into ``results_md`` (atomically)."""
    text = Path(results_md).read_text(encoding="utf-8") if Path(results_md).is_file() else ""
    write_text_atomic(results_md, replace_section(text, deployment_section(rows)))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Write the Deployment table of export records into RESULTS.md.")
    parser.add_argument("results_md", type=Path)
    parser.add_argument("rows", nargs="+", help="name=<outputs folder> (holding onnx/export.json), in table order")
    args = parser.parse_args(argv)
    bad = [r for r in args.rows if "=" not in r]
    if bad:
        parser.error(f"rows must be name=<outputs folder>: {', '.join(bad)}")
    update_results_md(args.results_md, [(name, Path(d)) for name, d in (r.split("=", 1) for r in args.rows)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
