"""End to end through the CLI: tiny teacher -> KD student, interruption and resume, plain-espnet2 loading."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import data_args, run_module

CRITERION = [{"name": "si_snr", "conf": {"eps": 1.0e-7}, "wrapper": "fixed_order", "wrapper_conf": {"weight": 1.0}}]
TRAIN = {"batch_type": "folded", "batch_size": 4, "optim": "adam", "optim_conf": {"lr": 1e-3},
         "best_model_criterion": [["valid", "loss", "min"]], "keep_nbest_models": 1, "seed": 0}
TEACHER = {
    "fs": 16000,
    "encoder": "stft", "encoder_conf": {"n_fft": 256, "hop_length": 64},
    "decoder": "stft", "decoder_conf": {"n_fft": 256, "hop_length": 64},
    "separator": "rnn",
    "separator_conf": {"rnn_type": "blstm", "num_spk": 1, "nonlinear": "relu", "layer": 1, "unit": 32, "dropout": 0.0},
    "criterions": CRITERION, "max_epoch": 2, **TRAIN,
}
STUDENT = {  # a tiny Conv-TasNet: conv encoder + TCN separator + conv decoder
    "fs": 16000,
    "encoder": "conv", "encoder_conf": {"channel": 16, "kernel_size": 32, "stride": 16},
    "decoder": "conv", "decoder_conf": {"channel": 16, "kernel_size": 32, "stride": 16},
    "separator": "tcn",
    "separator_conf": {"num_spk": 1, "layer": 2, "stack": 1, "bottleneck_dim": 16, "hidden_dim": 32, "kernel": 3,
                       "causal": False, "norm_type": "gLN", "nonlinear": "relu"},
    "criterions": CRITERION, "max_epoch": 2, **TRAIN,
    "kd_loss": "dispatch",
    "kd_loss_conf": {"distance": "mag_l2", "bands": [[10, 1], [40, 1]], "band_edges": "crossover", "topk": 0.8,
                     "n_fft": 512, "hop_length": 128},
    "kd_weight": 1.0,
}


def write_config(path: Path, conf: dict) -> Path:
    path.write_text(yaml.safe_dump(conf))
    return path


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, data_root) -> Path:
    work = tmp_path_factory.mktemp("teacher")
    config = write_config(work / "teacher.yaml", TEACHER)
    run_module("dispatch.bin.enh_kd_train", "--config", config, "--output_dir", work / "exp", *data_args(data_root))
    return work / "exp"


def test_teacher_is_a_plain_enhancement_model(teacher_dir):
    assert (teacher_dir / "valid.loss.best.pth").exists()
    conf = yaml.safe_load((teacher_dir / "config.yaml").read_text())
    assert conf["kd_loss"] is None


def test_kd_student_trains_resumes_and_loads_in_plain_espnet2(tmp_path, data_root, teacher_dir):
    config = write_config(tmp_path / "student.yaml", {**STUDENT, "max_epoch": 100, "keep_nbest_models": 100})
    out = tmp_path / "student"
    args = ["--config", config, "--output_dir", out, "--teacher_model", teacher_dir, *data_args(data_root)]

    # Interrupt (SIGKILL) the training once the first epoch is on disk.
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "dispatch.bin.enh_kd_train", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    while not (out / "1epoch.pth").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "1epoch.pth").exists(), "training never finished an epoch"
    done = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=False)["reporter"]["epoch"]
    first_epoch = (out / "1epoch.pth").read_bytes()

    # Rerunning the same command with --resume true continues after the last finished epoch.
    resumed = run_module("dispatch.bin.enh_kd_train", *args, "--resume", "true", "--max_epoch", done + 1)
    log = resumed.stderr
    assert "The training was resumed using" in log
    assert f"{done + 1}epoch results" in log and "1epoch results" not in log.replace(f"{done + 1}epoch", "")
    assert (out / "1epoch.pth").read_bytes() == first_epoch
    for key in ("task_loss=", "kd_loss=", "kd_selected=", "kd_selected_band0=", "kd_selected_band1="):
        assert key in log

    # The student is a plain espnet2 model: no teacher weights, loadable without this package.
    state = torch.load(out / "valid.loss.best.pth", map_location="cpu")
    assert not any(k.startswith(("teacher", "kd_loss")) for k in state)
    assert any(k.startswith("separator.") for k in state)
    check = (
        "import sys; sys.modules['dispatch'] = None\n"
        "import numpy as np\n"
        "from espnet2.bin.enh_inference import SeparateSpeech\n"
        f"sep = SeparateSpeech(r'{out / 'config.yaml'}', r'{out / 'valid.loss.best.pth'}')\n"
        "assert type(sep.enh_model).__name__ == 'ESPnetEnhancementModel'\n"
        "wav = sep(np.random.randn(1, 16000).astype('float32'), fs=16000)[0]\n"
        "assert wav.shape == (1, 16000), wav.shape\n"
        "print('plain-ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert "plain-ok" in proc.stdout, proc.stderr[-3000:]


def test_teacher_from_a_packed_zip(tmp_path, data_root, teacher_dir):
    zip_path = tmp_path / "teacher.zip"
    run_module("espnet2.bin.pack", "enh", "--train_config", teacher_dir / "config.yaml",
               "--model_file", teacher_dir / "valid.loss.best.pth", "--outpath", zip_path)
    config = write_config(tmp_path / "student.yaml", {**STUDENT, "max_epoch": 1,
                                                       "kd_loss": "dfkd", "kd_loss_conf": {"beta": 0.5}})
    out = tmp_path / "student"
    proc = run_module("dispatch.bin.enh_kd_train", "--config", config, "--output_dir", out,
                      "--teacher_model", zip_path, *data_args(data_root))
    assert "kd_loss=" in proc.stderr and (out / "1epoch.pth").exists()


def test_teacher_at_another_sample_rate_is_refused(tmp_path, data_root, teacher_dir):
    config = write_config(tmp_path / "student.yaml", {**STUDENT, "fs": 8000})
    proc = run_module("dispatch.bin.enh_kd_train", "--config", config, "--output_dir", tmp_path / "s",
                      "--teacher_model", teacher_dir, *data_args(data_root), check=False)
    assert proc.returncode != 0
    assert f"teacher {teacher_dir / 'config.yaml'} runs at fs=16000 but the student config has fs=8000" in proc.stderr


def test_missing_teacher_is_refused_before_training(tmp_path, data_root):
    config = write_config(tmp_path / "student.yaml", STUDENT)
    proc = run_module("dispatch.bin.enh_kd_train", "--config", config, "--output_dir", tmp_path / "s",
                      "--teacher_model", tmp_path / "nowhere.zip", *data_args(data_root), check=False)
    assert proc.returncode != 0
    assert f"teacher_model={tmp_path / 'nowhere.zip'}: no such experiment dir or packed zip" in proc.stderr
    assert not (tmp_path / "s" / "checkpoint.pth").exists()


def test_teacher_from_the_model_zoo_offline(tmp_path, data_root, teacher_dir):
    """A Hugging Face name resolved by espnet_model_zoo from a cache laid out as huggingface_hub lays it
    (models--<user>--<repo>/refs/main -> snapshots/<commit>/ holding the unpacked espnet2 zip), offline."""
    import zipfile

    name = "muqiaoy/muqiaoy_dns_ins20_enh_train_enh_conv_tasnet_raw"  # a real espnet2 DNS 2020 model's name
    zip_path = tmp_path / "teacher.zip"
    # Packed from the recipe folder with relative paths, as ESPnet's recipes pack what they upload.
    run_module("espnet2.bin.pack", "enh", "--train_config", f"{teacher_dir.name}/config.yaml",
               "--model_file", f"{teacher_dir.name}/valid.loss.best.pth", "--outpath", zip_path,
               cwd=teacher_dir.parent)
    cache = tmp_path / "zoo"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{name.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(repo / "snapshots" / commit)
    assert (repo / "snapshots" / commit / "meta.yaml").exists()

    config = write_config(tmp_path / "student.yaml", {**STUDENT, "max_epoch": 1})
    env = dict(os.environ, DISPATCH_ZOO_CACHEDIR=str(cache), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    out = tmp_path / "student"
    proc = subprocess.run([sys.executable, "-m", "dispatch.bin.enh_kd_train", "--config", str(config),
                           "--output_dir", str(out), "--teacher_model", name, *map(str, data_args(data_root))],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "1epoch.pth").exists()
    # The resolved teacher is the cached snapshot's, not a download.
    resolved = subprocess.run([sys.executable, "-m", "dispatch.bin.resolve_teacher", name],
                              capture_output=True, text=True, env=env)
    assert resolved.returncode == 0, resolved.stderr[-2000:]
    assert str(repo / "snapshots" / commit) in resolved.stdout
