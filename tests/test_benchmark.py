"""The benchmark runs at a tiny size and writes its table (not a timed test: no figure is checked)."""
import os
import re
import subprocess
import sys
import time

import pytest
import torch
from conftest import run_module

from dispatch.benchmark import (
    LOSS_CASES,
    STEP_MODES,
    STUDENT_CONFIGS,
    ReferenceStyleDISPatchL2,
    bench_losses,
    involuntary_switches,
)
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
    assert len(verdicts) == 7  # 4 loss targets, the mini recipe's KD step, the peak memory of two KD steps
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


class FakeLoad:
    """An involuntary-switch counter whose first ``loaded`` rounds look loaded (1000 switches each)."""

    def __init__(self, loaded):
        self.loaded, self.calls, self.count = loaded, 0, 0

    def __call__(self):
        self.calls += 1
        if self.calls % 2 == 0 and self.calls // 2 <= self.loaded:  # the end of one of the first rounds
            self.count += 1000
        return self.count


@pytest.mark.parametrize("loaded, retried, loaded_kept", [(2, 2, False), (99, 3, True)])
def test_loss_rounds_taken_under_load_are_run_again(loaded, retried, loaded_kept):
    log = []
    timings, rounds = bench_losses(torch.device("cpu"), 1, 4000, warmup=0, repeats=3, max_spread=10.0, retries=0,
                                   log=log.append, switches=FakeLoad(loaded))
    assert (rounds.kept, rounds.retried, rounds.loaded_kept) == (3, retried, loaded_kept)
    assert set(timings) == {c.key for c in LOSS_CASES}
    assert f"{retried} run again because other processes ran during them" in log[-1]
    assert ("measured under load" in log[-1]) == loaded_kept and "largest ratio spread" in log[-1]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_involuntary_switches_count_another_process_on_the_same_core():
    cpu = min(os.sched_getaffinity(0))
    saved = os.sched_getaffinity(0)
    hog = subprocess.Popen([sys.executable, "-c", "import os; os.sched_setaffinity(0, {%d})\nwhile True: pass" % cpu])
    try:
        os.sched_setaffinity(0, {cpu})
        time.sleep(0.2)  # the hog is running
        before, start = involuntary_switches(), time.perf_counter()
        while time.perf_counter() - start < 0.5:
            pass
        assert involuntary_switches() - before >= 5
    finally:
        hog.kill()
        hog.wait()
        os.sched_setaffinity(0, saved)
