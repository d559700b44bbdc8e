"""Shared fixtures: small Kaldi-style data dirs of generated audio, espnet2 CLI helpers."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

FS = 16000
# Recipes run by the tests activate the environment running pytest (tools/activate_python.sh reads it),
# so a suite run by tools/venv-espnet202611/bin/python tests that release end to end.
os.environ["DISPATCH_VENV"] = sys.prefix


def write_data_dir(root: Path, name: str, n_utts: int, seed: int, seconds=(0.8, 1.2)) -> Path:
    """Noisy/clean pairs of harmonic 'speech' in white noise as a Kaldi data dir, plus a shape file."""
    rng = np.random.default_rng(seed)
    d = root / name
    (d / "wav").mkdir(parents=True, exist_ok=True)
    rows = {"wav.scp": [], "spk1.scp": [], "utt2spk": [], "spk2utt": [], "speech_mix_shape": []}
    for i in range(n_utts):
        n = int(FS * rng.uniform(*seconds))
        t = np.arange(n) / FS
        f0 = rng.uniform(100, 250)
        clean = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6)) * 0.1
        clean *= (np.sin(2 * np.pi * rng.uniform(2, 5) * t) > -0.2)
        noisy = clean + rng.uniform(0.02, 0.1) * rng.standard_normal(n)
        utt = f"{name}_{i:03d}"
        for kind, sig in (("noisy", noisy), ("clean", clean)):
            sf.write(d / "wav" / f"{utt}_{kind}.wav", sig, FS, subtype="PCM_16")
        rows["wav.scp"].append(f"{utt} {d / 'wav' / f'{utt}_noisy.wav'}")
        rows["spk1.scp"].append(f"{utt} {d / 'wav' / f'{utt}_clean.wav'}")
        rows["utt2spk"].append(f"{utt} {utt}")
        rows["spk2utt"].append(f"{utt} {utt}")
        rows["speech_mix_shape"].append(f"{utt} {n}")
    for file, lines in rows.items():
        (d / file).write_text("\n".join(sorted(lines)) + "\n")
    return d


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_data_dir(root, "train", 8, seed=0)
    write_data_dir(root, "valid", 4, seed=1)
    return root


def data_args(root: Path) -> list:
    args = ["--ngpu", "0", "--fold_length", "80000", "--num_workers", "0"]
    for mode, name in (("train", "train"), ("valid", "valid")):
        d = root / name
        args += [
            f"--{mode}_data_path_and_name_and_type", f"{d / 'wav.scp'},speech_mix,sound",
            f"--{mode}_data_path_and_name_and_type", f"{d / 'spk1.scp'},speech_ref1,sound",
            f"--{mode}_shape_file", str(d / "speech_mix_shape"),
        ]
    return args


def run_module(module: str, *args, check: bool = True, cwd=None) -> subprocess.CompletedProcess:
    """Run `python -m module args` in a fresh interpreter, as a recipe would."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture
def float64():
    """torch's default dtype float64 for one test (loss tests compare against loop references)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
