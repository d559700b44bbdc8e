"""ONNX export of a ``waveform -> waveform`` module with torch's exporters, naming what blocks it.

Two exporters are tried in the order given, the first that succeeds is kept:

- ``torchscript``: ``torch.onnx.export(..., dynamo=False)``, deprecated in torch 2.9+ but the one that
  keeps an ``nn.LSTM`` as one ONNX ``LSTM`` node with a dynamic length (measured with torch 2.13 and
  DCCRN-CL: exported in about 1 s);
- ``dynamo``: ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript), the default of
  torch 2.9+; it unrolls LSTMs over the example's frames (DCCRN-CL: about 6 minutes, and the graph
  was fixed to the example's 161 frames) but is fine for convolutional models.
"""
from __future__ import annotations

import contextlib
import io
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence

import torch

from dispatch.data.atomic import atomic_path

EXPORTERS = ("torchscript", "dynamo")
MIN_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "mix", "enhanced"
# The shortest input the dynamic axis is declared for (the longest STFT window and a few frames).
MIN_SAMPLES = 1024

# What the exporters say when an operator blocks them, most specific first.
_BLOCKER_PATTERNS = (
    re.compile(r"operator '([\w:.]+)'"),  # torchscript: Exporting the operator 'aten::x' to ONNX ...
    re.compile(r"\b(STFT) does not currently support complex types"),
    re.compile(r"Unsupported FX nodes: \{'call_function': \[([^\]]+)\]"),  # dynamo
    re.compile(r"\b(aten[:.]{1,2}\w+(?:\.\w+)?)"),
)


class ExportError(RuntimeError):
    """No exporter could translate the module; ``operator`` names what blocked it, ``errors`` each exporter's error."""

    def __init__(self, operator: str, errors: Dict[str, str]):
        self.operator, self.errors = operator, errors
        tried = "; ".join(f"{name}: {msg}" for name, msg in errors.items())
        super().__init__(f"ONNX export blocked by {operator} ({tried})")


@dataclass
class ExportResult:
    """The ONNX file written, the exporter that wrote it, and the errors of those tried before it."""

    path: Path
    exporter: str
    opset: int
    failed: Dict[str, str] = field(default_factory=dict)


def blocking_operator(error: BaseException) -> str:
    """The operator an exporter's error names (``aten::linalg_eigvalsh``, ``STFT``, ...), else its first line."""
    text = str(error)
    for pattern in _BLOCKER_PATTERNS:
        match = pattern.search(text)
        if match:
            return match.group(1).replace("'", "").strip()
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(error).__name__}: {first}"[:200]


def _atan2_nan_to_zero(g, y, x):
    """aten::atan2 for the TorchScript exporter: its own (Atan of y / x) gives NaN at y = x = 0 where torch
    gives 0 (DCCRN's mask phase at the padded DC bin); as onnxscript's torchlib does, NaN is mapped to 0."""
    from torch.onnx._internal.torchscript_exporter.symbolic_opset9 import atan2

    result = atan2(g, y, x)
    return g.op("Where", g.op("IsNaN", result), g.op("Constant", value_t=torch.tensor(0.0)), result)


@contextlib.contextmanager
def torchscript_symbolics(opset: int) -> Iterator[None]:
    """The TorchScript exporter's symbolics of this module (``aten::atan2``, see above) for one export."""
    torch.onnx.register_custom_op_symbolic("aten::atan2", _atan2_nan_to_zero, opset)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::atan2", opset)


def _export(module: torch.nn.Module, example: torch.Tensor, path: Path, exporter: str, opset: int) -> None:
    names = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
    if exporter == "dynamo":
        samples = torch.export.Dim("samples", min=MIN_SAMPLES)
        torch.onnx.export(module, (example,), str(path), dynamo=True, opset_version=opset,
                          dynamic_shapes=({1: samples},), external_data=False, **names)
        return
    axes = {0: "batch", 1: "samples"}
    with torchscript_symbolics(opset), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation notice and tracer warnings on shape arithmetic
        torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=opset,
                          dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes}, **names)


def export_onnx(module: torch.nn.Module, path: Path, example: Optional[torch.Tensor] = None, opset: int = MIN_OPSET,
                exporters: Sequence[str] = EXPORTERS) -> ExportResult:
    """Export ``module`` (``(batch, samples) -> (batch, samples)``, eval mode) to ``path`` atomically.

    Args:
        example: the input traced (default: 1 s of noise at 16 kHz); the time axis stays dynamic.
        opset: ONNX opset (at least :data:`MIN_OPSET`).
        exporters: names from :data:`EXPORTERS`, tried in this order.

    Raises:
        ExportError: every exporter failed; it names the blocking operator of the first one.
    """
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset}: at least {MIN_OPSET} is needed")
    unknown = [e for e in exporters if e not in EXPORTERS]
    if unknown or not exporters:
        raise ValueError(f"exporters {', '.join(unknown) or '(none)'}: choose from {', '.join(EXPORTERS)}")
    if example is None:
        example = torch.randn(1, 16000, generator=torch.Generator().manual_seed(0))
    errors: Dict[str, str] = {}
    for exporter in exporters:
        try:
            # The exporters print their progress and the whole graph of a failure: kept out of the logs.
            with atomic_path(path) as tmp, contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
                _export(module, example, tmp, exporter, opset)
            return ExportResult(Path(path), exporter, opset, errors)
        except Exception as e:  # each exporter raises its own kinds; what blocked it is recorded
            errors[exporter] = f"{type(e).__name__}: {blocking_operator(e)}"
    raise ExportError(blocking_operator_of(errors), errors)


def blocking_operator_of(errors: Dict[str, str]) -> str:
    """The operator named by the first exporter's error (``"Type: operator"`` as :func:`export_onnx` records it)."""
    first = next(iter(errors.values()))
    return first.split(": ", 1)[1] if ": " in first else first
