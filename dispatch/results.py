"""RESULTS.md from an experiment tree: one table per test set, rows = models, columns = metrics."""
from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

# Column order; metrics not listed here follow in alphabetical order.
METRIC_ORDER = ("PESQ_WB", "PESQ_NB", "STOI", "ESTOI", "SI_SDR", "SDR", "CSIG", "CBAK", "COVL",
                "DNSMOS_SIG", "DNSMOS_BAK", "DNSMOS_OVRL")


def read_summary(scoring_dir: Path) -> Optional[Dict[str, dict]]:
    """Metric -> {mean, std, count} of one scored set (dispatch.bin.enh_score's summary.json), or None."""
    path = scoring_dir / "summary.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("enhanced")


def count_parameters(model_file: Path) -> Optional[float]:
    """Millions of parameters in an espnet2 checkpoint."""
    if not model_file.is_file():
        return None
    state = torch.load(model_file, map_location="cpu", weights_only=True)
    return sum(t.numel() for t in state.values() if torch.is_tensor(t) and t.is_floating_point()) / 1e6


def ordered_metrics(rows: Sequence[Dict[str, dict]]) -> List[str]:
    found = {m for row in rows for m in row}
    return [m for m in METRIC_ORDER if m in found] + sorted(found - set(METRIC_ORDER))


def _fmt(x: Optional[float], signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def set_table(rows: List[Tuple[str, Optional[float], Dict[str, dict]]], baseline: Optional[str]) -> str:
    """Markdown table: name | params | metric means (with the change against the baseline row)."""
    metrics = ordered_metrics([r[2] for r in rows])
    base = next((r[2] for r in rows if r[0] == baseline), None)
    lines = ["| model | params (M) | " + " | ".join(metrics) + " |",
             "|---|---:|" + "---:|" * len(metrics)]
    for name, params, summary in rows:
        cells = []
        for m in metrics:
            value = summary.get(m, {}).get("mean")
            cell = _fmt(value)
            if base is not None and name != baseline and name != "noisy" and value is not None and m in base:
                cell += f" ({_fmt(value - base[m]['mean'], signed=True)})"
            cells.append(cell)
        p = "-" if params is None else f"{params:.3f}"
        lines.append(f"| {name} | {p} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def make_results(
    models: Sequence[Tuple[str, Path]],
    test_sets: Sequence[str],
    noisy_dir: Optional[Path] = None,
    baseline: Optional[str] = "baseline",
    model_file: str = "valid.loss.best.pth",
    command: str = "",
) -> str:
    """The whole RESULTS.md text."""
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    parts = [
        "# Results",
        "",
        f"- date: {now}",
        f"- machine: {platform.node()}, {platform.machine()}, {os.cpu_count()} CPU(s), "
        f"torch {torch.__version__}, {'CUDA ' + torch.version.cuda if torch.cuda.is_available() else 'no GPU'}",
        f"- command: `{command}`" if command else "",
        "- values are means over the test set; in brackets the change against the baseline student",
        "",
        "| model | experiment | config |",
        "|---|---|---|",
    ]
    parts += [f"| {name} | `{d}` | `{d / 'config.yaml'}` |" for name, d in models]
    params = {name: count_parameters(d / model_file) for name, d in models}
    for dset in test_sets:
        rows = []
        if noisy_dir is not None and (summary := read_summary(noisy_dir / f"enhanced_{dset}" / "scoring")):
            rows.append(("noisy", None, summary))
        for name, d in models:
            summary = read_summary(d / f"enhanced_{dset}" / "scoring")
            if summary is not None:
                rows.append((name, params[name], summary))
        parts += ["", f"## {dset}", "", set_table(rows, baseline) if rows else "(no scores yet)"]
    return "\n".join(p for p in parts if p is not None) + "\n"
