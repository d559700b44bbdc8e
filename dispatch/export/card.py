"""Model cards (README.md of a packed zip and of a Hugging Face repo), built from the experiment tree.

What a card says and where it is read from::

    architecture, KD config, data        <exp>/config.yaml (as training wrote it)
    the teacher it learned from          config.yaml's teacher_model, <exp>/.teacher.json (weights by sha256)
    parameters, MACs per second          the model built from config.yaml (dispatch.results.model_complexity)
    real-time factor (PyTorch, 1 thread) measured when the card is written (4 s of noise)
    ONNX parity, RTF, streaming          <outputs>/onnx/export.json (stage 12), if its stamp
                                         (onnx/.inputs.json) names these weights
    test metrics + baseline, teacher     <outputs>/enhanced_<set>/scoring/summary.json of each row
    the training command                 <exp>/log/train.log's first line (espnet2's launcher writes it)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
import yaml

from dispatch.export.report import read_record, table_row
from dispatch.fingerprint import file_digest, read_stamp
from dispatch.task import KD_CONFIG_KEYS

CARD_RTF_SECONDS = 4.0
ARCH_KEYS = ("encoder", "separator", "decoder", "mask_module")
DATA_KEYS = ("train_data_path_and_name_and_type", "valid_data_path_and_name_and_type")


@dataclass
class CardInputs:
    """What a card is written from.

    Attributes:
        name: the model's row name (``baseline``, ``kd_dispatch_l2``, ...).
        exp_dir: its experiment folder (config.yaml, weights, logs).
        model_file: its weights.
        outputs: {row name: folder with enhanced_<set>/scoring} for this model and those it is compared
            with (``noisy``, ``teacher``, ``baseline``).
        test_sets: the test set names.
        command: the recipe command that made it.
        fs: sampling rate of a config that does not record one.
    """

    name: str
    exp_dir: Path
    model_file: Path
    outputs: Dict[str, Path] = field(default_factory=dict)
    test_sets: Sequence[str] = ()
    command: str = ""
    fs: int = 16000


def _yaml_block(data: dict) -> List[str]:
    return ["```yaml", yaml.safe_dump(data, sort_keys=False).rstrip("\n"), "```"]


def training_command(exp_dir: Path) -> Optional[str]:
    """The command line espnet2's launcher logged first in ``<exp>/log/train.log`` (``# python ...``)."""
    log = Path(exp_dir) / "log" / "train.log"
    if not log.is_file():
        return None
    with open(log, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("# ") and "python" in line:
                return line[2:].strip()
    return None


def teacher_lines(exp_dir: Path, config: dict) -> List[str]:
    """The teacher a KD student learned from: the configured path and the weights' sha256 recorded at training."""
    lines = []
    if config.get("teacher_model"):
        lines.append(f"- teacher_model: `{config['teacher_model']}`")
    for name, entry in (read_stamp(Path(exp_dir) / ".teacher.json") or {}).items():
        if entry.get("kind") == "file":
            lines.append(f"- {name} weights: `{entry['path']}` (sha256 {entry['sha256'][:16]}...)")
    return lines


def torch_rtf(model: torch.nn.Module, fs: int, seconds: float = CARD_RTF_SECONDS) -> float:
    """Real-time factor of the model's PyTorch inference on one CPU thread (median of 3 after a warm-up)."""
    from dispatch.benchmark import measure, num_threads
    from dispatch.teacher import teacher_enhance

    n = int(seconds * fs)
    mix = torch.randn(1, n, generator=torch.Generator().manual_seed(0))
    with num_threads(1), torch.inference_mode():
        t = measure(partial(teacher_enhance, model, mix, torch.tensor([n])), torch.device("cpu"), 1, 3)
    return t.median / seconds


def metrics_table(outputs: Dict[str, Path], dset: str) -> List[str]:
    """Mean test metrics of every row with scores on ``dset`` (markdown)."""
    from dispatch.results import read_summary

    summaries = {name: s for name, d in outputs.items()
                 if (s := read_summary(Path(d) / f"enhanced_{dset}" / "scoring")) is not None}
    if not summaries:
        return [f"(no scores on {dset})"]
    metrics = sorted({m for s in summaries.values() for m in s})
    lines = ["| model | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
    for name, s in summaries.items():
        cells = [f"{s[m]['mean']:.3f}" if m in s and s[m].get("mean") is not None else "-" for m in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def model_card(inputs: CardInputs, rtf: Optional[float] = None) -> str:
    """The card's markdown (without Hugging Face front matter).

    Args:
        rtf: PyTorch real-time factor on one thread; None: measured now (:func:`torch_rtf`).
    """
    from dispatch.results import machine_description, model_complexity
    from dispatch.teacher import build_teacher, teacher_sample_rate

    config_path = Path(inputs.exp_dir) / "config.yaml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    fs = teacher_sample_rate(config) or inputs.fs
    try:  # any espnet2 model may fail a 1 s random input (as in the results stage): the card says so
        params, macs = model_complexity(config_path, fs)
        size = [f"- parameters: {params:.4f} M", f"- MACs per second of audio: {macs:.1f} M (torch.utils.flop_counter"
                " on 1 s of input; matrix products, convolutions and RNNs)"]
        if rtf is None:
            rtf = torch_rtf(build_teacher(config_path, inputs.model_file)[0], fs)
        speed = [f"- PyTorch real-time factor, one CPU thread: {rtf:.4f} ({CARD_RTF_SECONDS:g} s of input, "
                 f"median of 3 runs; {machine_description()})"]
    except Exception as e:
        size, speed = [f"- parameters and MACs: not counted ({type(e).__name__}: {e})"], []
    kd = {k: config[k] for k in KD_CONFIG_KEYS if config.get(k) is not None} if config.get("kd_loss") else {}
    lines = [f"# {inputs.name}: espnet2 speech enhancement model", "",
             "Trained with the DISPatch recipes (knowledge distillation for speech enhancement, "
             "arXiv 2509.15922) on espnet2. Load it with `espnet2.bin.enh_inference.SeparateSpeech`.", "",
             "## Architecture", "", *_yaml_block({k: config.get(k) for k in ARCH_KEYS + tuple(f"{k}_conf" for k in ARCH_KEYS)
                                                  if config.get(k) is not None}), "",
             *size, f"- sampling rate: {fs} Hz", "", "## Speed", "", *(speed or ["- not measured (see above)"])]
    out_dir = Path(inputs.outputs.get(inputs.name, inputs.exp_dir))
    record = read_record(out_dir)
    exported = (read_stamp(out_dir / "onnx" / ".inputs.json") or {}).get("model", {}).get("sha256")
    if record is not None and exported != file_digest(inputs.model_file):
        lines += ["", f"(`{out_dir}/onnx/export.json` describes other weights than these: rerun stage 12 and repack"
                  " for the ONNX figures)"]
    elif record is not None:
        lines += ["", "ONNX export (stage 12, `<exp>/onnx/export.json`, "
                  f"{record.get('date')}):", "",
                  "| model | exporter | parity SI-SDR (dB) | max abs diff | RTF torch | RTF onnx | streaming |",
                  "|---|---|---:|---:|---:|---:|---|", table_row(inputs.name, record)]
    lines += ["", "## Test results", "",
              "Means over each test set; the baseline is the same student trained without KD."]
    for dset in inputs.test_sets:
        lines += ["", f"### {dset}", "", *metrics_table(inputs.outputs, dset)]
    lines += ["", "## Knowledge distillation", ""]
    lines += [*_yaml_block(kd), "", *teacher_lines(inputs.exp_dir, config)] if kd else ["Trained without KD."]
    data = {k: config[k] for k in DATA_KEYS if config.get(k)}
    lines += ["", "## Data", "", *(_yaml_block(data) if data else ["(not recorded in config.yaml)"]),
              "", "## How it was trained", ""]
    if inputs.command:
        lines += ["Recipe command:", "", "```sh", inputs.command, "```", ""]
    command = training_command(inputs.exp_dir)
    lines += ["Training command (from log/train.log):", "", "```sh", command, "```"] if command else \
        ["(no training log found)"]
    return "\n".join(lines) + "\n"
