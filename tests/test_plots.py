"""Pictures (dispatch.plots) and the Knowledge Gap Score map they show (DISPatchLoss.patch_scores)."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from dispatch.exptree import read_training_log
from dispatch.losses import DFKDLoss, DISPatchLoss, SISNRKDLoss
from dispatch.plots import (
    save_band_selection_png,
    save_selection_png,
    save_spectrogram_png,
    save_training_curves_png,
    selection_keys,
)

FS = 16000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> np.ndarray:
    """A complete, non-blank PNG, and no temporary file left beside it."""
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0.01
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []
    return image


def signals(seconds: float = 1.0, seed: int = 0):
    """Clean harmonic speech-like signal; noisy input; a teacher closer to clean than the student."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(FS * seconds)) / FS
    clean = sum(np.sin(2 * np.pi * 150 * h * t) / h for h in range(1, 8)) * 0.1 * (np.sin(2 * np.pi * 3 * t) > 0)
    noise = rng.standard_normal(len(t))
    return clean + 0.1 * noise, clean, clean + 0.01 * noise, clean + 0.03 * rng.standard_normal(len(t))


# --- patch_scores -------------------------------------------------------------------------------------


def reference_scores(student, teacher, clean, patch_bins: int) -> torch.Tensor:
    """KGS written plainly: per frame, consecutive groups of `patch_bins` bins (the last one shorter)."""
    out = torch.zeros(student.shape, dtype=torch.float64)
    n_freq = student.shape[1]
    for b in range(student.shape[0]):
        for t in range(student.shape[2]):
            for lo in range(0, n_freq, patch_bins):
                sl = slice(lo, min(lo + patch_bins, n_freq))
                e_s = ((student[b, sl, t].abs() - clean[b, sl, t].abs()) ** 2).mean()
                e_t = ((teacher[b, sl, t].abs() - clean[b, sl, t].abs()) ** 2).mean()
                out[b, sl, t] = e_s - e_t
    return out


def test_patch_scores_match_a_plain_reference_and_rank_the_selection():
    torch.manual_seed(0)
    loss = DISPatchLoss(distance="mag_l2", patch=(4, 1), topk=0.5, n_fft=30, hop_length=8)  # 16 bins: 4 patches
    s, t, y = (torch.randn(2, 16, 6, dtype=torch.complex128) for _ in range(3))
    kgs = loss.patch_scores(s, t, y)
    assert kgs.shape == (2, 16, 6)
    torch.testing.assert_close(kgs.double(), reference_scores(s, t, y, 4))
    # The selection forward_spec makes is the top half by exactly these scores.
    loss.forward_spec(s, t, y)
    sel = loss.last_selection
    for b in range(2):
        assert kgs[b][sel[b]].min() >= kgs[b][~sel[b]].max()
    assert sel.float().mean().item() == pytest.approx(0.5)


def test_patch_scores_work_for_plain_kd_and_zero_outside_the_utterance():
    loss = DISPatchLoss(distance="mag_l2", patch=(4, 1), selection="all", n_fft=30, hop_length=8)
    s, t, y = (torch.randn(1, 16, 6, dtype=torch.complex64) for _ in range(3))
    frame_valid = torch.tensor([[True] * 4 + [False] * 2])
    kgs = loss.patch_scores(s, t, y, frame_valid)
    assert (kgs[:, :, 4:] == 0).all()
    assert (kgs[:, :, :4] != 0).any()


# --- pictures -----------------------------------------------------------------------------------------


def test_spectrogram_png(tmp_path):
    noisy, *_ = signals()
    out = save_spectrogram_png(noisy, FS, tmp_path / "spec.png", title="noisy")
    assert out == tmp_path / "spec.png"
    assert_png(out)


@pytest.mark.parametrize("kd_loss", [
    DISPatchLoss(distance="mag_l2", bands=[(10, 1), (40, 1)], band_edges=[2000.0], topk=0.8),  # MSSP, fixed edge
    DFKDLoss(bands=[(10, 1), (40, 1)], topk=0.8, selection="topk"),  # DFKD crossover per frame
], ids=["mssp_fixed_edge", "dfkd_crossover"])
def test_selection_png(tmp_path, kd_loss):
    noisy, clean, teacher, student = signals()
    # Outputs a few samples shorter than the input, as enhancement may give: cut to the shortest.
    out = save_selection_png(noisy, clean, teacher, student[:-7], FS, kd_loss, tmp_path / "sel.png", title="utt1")
    assert_png(out)
    n_frames = 1 + (len(student) - 7) // kd_loss.hop_length
    assert kd_loss.last_selection.shape == (1, kd_loss.n_freq, n_frames)
    assert 0.5 < kd_loss.last_selection.float().mean() < 0.95  # top 80 % of patches per band


def test_selection_png_rejects_what_it_cannot_draw(tmp_path):
    noisy, clean, teacher, student = signals()
    with pytest.raises(TypeError, match="SISNRKDLoss"):
        save_selection_png(noisy, clean, teacher, student, FS, SISNRKDLoss(), tmp_path / "x.png")
    with pytest.raises(ValueError, match="student must be a mono waveform"):
        stereo = np.stack([student, student], 1)
        save_selection_png(noisy, clean, teacher, stereo, FS, DISPatchLoss(), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# --- training logs and curves -------------------------------------------------------------------------

STATS = {
    1: {"train": {"loss": -1.5, "task_loss": -2.0, "kd_loss": 0.5, "kd_selected": 0.8, "kd_selected_band0": 0.75,
                  "kd_selected_band1": 0.82, "grad_norm": np.float64(3.0)},
        "valid": {"loss": -2.5, "task_loss": -3.0, "kd_loss": 0.5, "kd_selected": 0.8, "kd_selected_band0": 0.7,
                  "kd_selected_band1": 0.8}},
    2: {"train": {"loss": -3.5, "task_loss": -4.0, "kd_loss": 0.5, "kd_selected": 0.81, "kd_selected_band0": 0.76,
                  "kd_selected_band1": 0.83, "grad_norm": np.float64(2.0)},
        "valid": {"loss": -4.5, "task_loss": -5.0, "kd_loss": 0.5, "kd_selected": 0.8, "kd_selected_band0": 0.71,
                  "kd_selected_band1": 0.81}},
}


def log_line(epoch: int, phases: dict) -> str:
    """An espnet2 trainer line, durations included as it writes them."""
    parts = [f"[{phase}] " + ", ".join(f"{k}={v:.3f}" for k, v in stats.items()) + ", time=4.23 seconds"
             for phase, stats in phases.items()]
    return f"[vm] 2026-11-25 17:21:55,838 (trainer:394) INFO: {epoch}epoch results: " + ", ".join(parts)


def write_log(exp: Path, stats: dict) -> Path:
    (exp / "log").mkdir(parents=True, exist_ok=True)
    lines = ["[vm] 2026-11-25 17:21:50,000 (trainer:300) INFO: some other line"]
    lines += [log_line(e, p) for e, p in stats.items()]
    (exp / "log" / "train.log").write_text("\n".join(lines) + "\n")
    return exp


def write_checkpoint(exp: Path, stats: dict) -> Path:
    exp.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {}, "reporter": {"stats": stats, "epoch": max(stats)}}, exp / "checkpoint.pth")
    return exp


def test_read_training_log_prefers_the_checkpoint_and_falls_back_to_train_log(tmp_path):
    both = write_log(write_checkpoint(tmp_path / "both", STATS), {2: STATS[2]})  # a log rewritten by a resume
    log = read_training_log(both)
    assert log["train"]["task_loss"] == [-2.0, -4.0]
    assert log["valid"]["kd_selected_band0"] == [0.7, 0.71]
    assert log["train"]["grad_norm"] == [3.0, 2.0]

    only_log = read_training_log(write_log(tmp_path / "log_only", {2: STATS[2]}))
    assert math.isnan(only_log["train"]["kd_loss"][0]) and only_log["train"]["kd_loss"][1] == 0.5
    assert "time" not in only_log["train"]  # durations are not numbers
    assert read_training_log(tmp_path / "nothing") == {}
    assert selection_keys(log) == ["kd_selected_band0", "kd_selected_band1"]
    assert selection_keys({"train": {"kd_selected": [0.8]}}) == ["kd_selected"]
    assert selection_keys({"train": {"loss": [1.0]}}) == []


def test_training_curves_and_band_selection_png(tmp_path):
    exps = {
        "kd_mssp": write_checkpoint(tmp_path / "kd", STATS),
        "kd_single": write_log(tmp_path / "single", {e: {p: {k: v for k, v in s.items() if "band" not in k}
                                                         for p, s in ph.items()} for e, ph in STATS.items()}),
        "baseline": write_log(tmp_path / "base", {1: {"train": {"loss": -1.0}, "valid": {"loss": -1.2}}}),
    }
    logs = {name: read_training_log(exp) for name, exp in exps.items()}
    assert_png(save_training_curves_png(logs, tmp_path / "img" / "curves.png"))
    assert_png(save_training_curves_png(logs, tmp_path / "img" / "curves2.png", keys=("loss", "not_logged")))
    band = assert_png(save_band_selection_png(logs, tmp_path / "img" / "bands.png"))
    assert band.shape[1] > band.shape[0] * 2  # two panels side by side: the baseline has no selection
