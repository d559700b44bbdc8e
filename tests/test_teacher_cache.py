"""Teacher output cache: cache_teacher writes teacher_ref1.scp; KD training reads it instead of a teacher."""
import contextlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from conftest import data_args, run_module

from dispatch.bin.cache_teacher import STAMP, cache_teacher
from dispatch.bin.cache_teacher import main as cache_main
from dispatch.data.datadir import read_scp
from dispatch.model import ESPnetEnhancementKDModel, teacher_autocast_context
from dispatch.teacher import load_teacher, teacher_enhance

CRITERION = [{"name": "si_snr", "conf": {"eps": 1.0e-7}, "wrapper": "fixed_order", "wrapper_conf": {"weight": 1.0}}]
TEACHER = {
    "fs": 16000,
    "encoder": "stft", "encoder_conf": {"n_fft": 256, "hop_length": 64},
    "decoder": "stft", "decoder_conf": {"n_fft": 256, "hop_length": 64},
    "separator": "rnn",
    "separator_conf": {"rnn_type": "blstm", "num_spk": 1, "nonlinear": "relu", "layer": 1, "unit": 16, "dropout": 0.0},
    "criterions": CRITERION,
}
STUDENT = {
    "fs": 16000,
    "encoder": "stft", "encoder_conf": {"n_fft": 256, "hop_length": 64},
    "decoder": "stft", "decoder_conf": {"n_fft": 256, "hop_length": 64},
    "separator": "tcn",
    "separator_conf": {"num_spk": 1, "layer": 2, "stack": 1, "bottleneck_dim": 16, "hidden_dim": 32, "kernel": 3,
                       "causal": False, "norm_type": "gLN", "nonlinear": "relu"},
    "criterions": CRITERION,
    "batch_type": "folded", "batch_size": 4, "optim": "adam", "optim_conf": {"lr": 1e-3}, "max_epoch": 1,
    "best_model_criterion": [["valid", "loss", "min"]], "keep_nbest_models": 1, "seed": 0,
    "kd_loss": "dispatch",
    "kd_loss_conf": {"distance": "mag_l2", "bands": [[10, 1], [40, 1]], "band_edges": "crossover", "topk": 0.8},
}


def make_teacher(exp: Path, conf: dict = TEACHER, seed: int = 0) -> Path:
    """An untrained teacher experiment dir (config.yaml + weights), as espnet2's trainer leaves one."""
    from dispatch.task import EnhancementKDTask

    exp.mkdir(parents=True)
    (exp / "given.yaml").write_text(yaml.safe_dump(conf))
    args = EnhancementKDTask.get_parser().parse_args(["--config", str(exp / "given.yaml")])
    torch.manual_seed(seed)
    model = EnhancementKDTask.build_model(args)
    (exp / "config.yaml").write_text(yaml.safe_dump(vars(args)))
    torch.save(model.state_dict(), exp / "valid.loss.best.pth")
    return exp


@pytest.fixture(scope="module")
def cached(tmp_path_factory, data_root):
    """A teacher, and the train/valid data dirs of the session with their teacher_ref1.scp."""
    work = tmp_path_factory.mktemp("cache")
    teacher = make_teacher(work / "teacher")
    data = work / "data"
    for name in ("train", "valid"):  # copy the lists: teacher_ref1.scp is written beside them
        (data / name).mkdir(parents=True)
        for f in (data_root / name).iterdir():
            if f.is_file():
                (data / name / f.name).write_text(f.read_text())
        cache_teacher(str(teacher), data / name, work / "wavs" / name)
    return teacher, data, work


def test_cache_holds_whole_utterance_teacher_outputs_in_float(cached):
    teacher_dir, data, _ = cached
    wav, ref = read_scp(data / "train" / "wav.scp"), read_scp(data / "train" / "teacher_ref1.scp")
    assert list(ref) == sorted(wav)
    teacher, _ = load_teacher(teacher_dir / "config.yaml", teacher_dir / "valid.loss.best.pth")
    for utt in list(wav)[:2]:
        info = sf.info(ref[utt])
        assert info.subtype == "FLOAT" and info.frames == sf.info(wav[utt]).frames
        noisy = torch.from_numpy(sf.read(wav[utt], dtype="float32")[0])[None]
        expected = teacher_enhance(teacher, noisy, torch.tensor([noisy.shape[1]]))[0].numpy()
        np.testing.assert_allclose(sf.read(ref[utt], dtype="float32")[0], expected, rtol=1e-5, atol=1e-6)


def test_rerun_skips_finished_files_and_redoes_missing_ones(cached, capsys):
    teacher_dir, data, work = cached
    out = work / "wavs" / "train"
    files = sorted(out.glob("*.wav"))
    before = {f: f.stat().st_mtime_ns for f in files}
    files[0].unlink()
    assert cache_main(["--teacher_model", str(teacher_dir), "--data_dir", str(data / "train"),
                       "--output_dir", str(out)]) == 0
    assert files[0].exists()
    assert all(f.stat().st_mtime_ns == before[f] for f in files[1:])
    assert f"teacher outputs of {len(files)} utterances" in capsys.readouterr().out


def test_another_teacher_is_refused(cached, tmp_path, capsys):
    teacher_dir, data, work = cached
    stamp = work / "wavs" / "train" / STAMP
    first = stamp.read_text()
    other = make_teacher(tmp_path / "other", seed=1)
    code = cache_main(["--teacher_model", str(other), "--data_dir", str(data / "train"),
                       "--output_dir", str(work / "wavs" / "train")])
    assert code == 1
    assert f"{work / 'wavs' / 'train'} holds outputs of another teacher" in capsys.readouterr().err
    assert stamp.read_text() == first  # the first teacher's record stays


def test_unreadable_input_is_named(cached, tmp_path, capsys):
    teacher_dir, _, _ = cached
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "wav.scp").write_text(f"utt_x {tmp_path / 'missing.wav'}\n")
    code = cache_main(["--teacher_model", str(teacher_dir), "--data_dir", str(bad), "--output_dir", str(tmp_path / "o")])
    assert code == 1
    assert "utterance 'utt_x': cannot read" in capsys.readouterr().err


def test_teacher_autocast_is_a_no_op_on_cpu_and_checked():
    assert isinstance(teacher_autocast_context("bf16", torch.device("cpu")), contextlib.nullcontext)
    with pytest.raises(ValueError, match="teacher_autocast='fp8'"):
        ESPnetEnhancementKDModel(kd_loss=torch.nn.Identity(), teacher_autocast="fp8", encoder=None,
                                 separator=None, decoder=None, mask_module=None)


def cached_data_args(data: Path) -> list:
    args = data_args(data)
    for mode in ("train", "valid"):
        args += [f"--{mode}_data_path_and_name_and_type", f"{data / mode / 'teacher_ref1.scp'},teacher_ref1,sound"]
    return args


def test_kd_training_reads_the_cache_without_a_teacher(cached, tmp_path):
    """Chunked training batches (streams cut together, no lengths) and padded validation batches."""
    _, data, _ = cached
    config = tmp_path / "student.yaml"
    config.write_text(yaml.safe_dump(STUDENT))
    proc = run_module("dispatch.bin.enh_kd_train", "--config", config, "--output_dir", tmp_path / "exp",
                      "--iterator_type", "chunk", "--chunk_length", "8000", "--valid_iterator_type", "sequence",
                      *cached_data_args(data))
    log = proc.stderr
    assert "without --teacher_model" in log and "Teacher:" not in log  # no teacher was built
    for key in ("kd_loss=", "kd_selected_band1="):
        assert log.count(key) >= 2, f"{key} missing in the [train] or [valid] epoch stats"
    assert (tmp_path / "exp" / "1epoch.pth").exists()
