"""The benchmark runs at a tiny size and writes its table (not a timed test: no figure is checked)."""
import re

import pytest
import torch
from conftest import run_module

from dispatch.benchmark import LOSS_CASES, STEP_MODES, STUDENT_CONFIGS, ReferenceStyleDISPatchL2
from dispatch.losses import DISPatchLoss


def test_tiny_run_writes_a_table_with_every_row(tmp_path):
    out = tmp_path / "BENCHMARK.md"
    proc = run_module("dispatch.bin.benchmark", "--tiny", "--device", "cpu", "--threads", "1", "--output", out)
    table = out.read_text()
    assert table.strip() in proc.stdout  # also printed
    for fact in ("- date: ", "- machine: ", f"- torch {torch.__version__}, 1 thread(s)", "--tiny"):
        assert fact in table
    rows = [c.label for c in LOSS_CASES] + [m.label for m in STEP_MODES] + list(STUDENT_CONFIGS)
    for label in rows:
        assert re.search(rf"^\| {re.escape(label)} \|( [0-9.]+ M \|)? [0-9.]+ m?s \|", table, re.M), label
    verdicts = re.findall(r"^\| .+ \| [0-9.]+(?:x|%) \| [0-9.]+(?:x|%) \| (pass|\*\*miss\*\* by [0-9.]+x) \|$",
                          table, re.M)
    assert len(verdicts) == 5
    assert ("## Note on missed targets" in table) == any(v != "pass" for v in verdicts)
    assert not list(tmp_path.glob(".*tmp*")), "the table is written atomically"


def test_cuda_without_a_gpu_is_refused(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    proc = run_module("dispatch.bin.benchmark", "--tiny", "--device", "cuda", "--output", tmp_path / "b.md",
                      check=False)
    assert proc.returncode == 1 and "torch sees no CUDA device" in proc.stderr
    assert not (tmp_path / "b.md").exists()


def test_reference_style_selection_matches_dispatch_where_patches_fit():
    """With 1-bin patches (no zero padding) both select the same bins; only the normalisation differs."""
    torch.manual_seed(0)
    s, t, y = torch.randn(3, 2, 4000).unbind(0)
    ours = DISPatchLoss(distance="mag_l2", patch=(1, 1), topk=0.5)(s, t, y)  # sum / selected bins
    ref = ReferenceStyleDISPatchL2(patch_bins=1, topk=0.5)(s, t, y)  # sum / (batch * patches * topk)
    patches = 257 * (1 + 4000 // 128)
    selected = 2 * int(patches * 0.5)
    torch.testing.assert_close(ref, ours * selected / (2 * patches * 0.5))
