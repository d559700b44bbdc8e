"""egs2/dns_ins20/enh_kd1/local/data.sh and the DNS synthesizer on a tiny fake challenge checkout."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dispatch.corpora.common import CorpusError
from dispatch.corpora.dns import (
    SynthesisConfig,
    active_fraction,
    finished_mixtures,
    prepare_test_sets,
    prepare_training_sets,
    snr_mix,
    synthesize,
)
from dispatch.data.datadir import read_scp, validate_data_dir

RECIPE = Path(__file__).resolve().parents[1] / "egs2" / "dns_ins20" / "enh_kd1"
FS = 16000
CLEAN = ("book_00000_chp_0009_reader_06709_0", "book_00000_chp_0009_reader_06709_1",
         "book_01234_chp_0002_reader_00042_0")
NOISE = ("--65x-naOz0", "traffic_248091_3", "G3hs6PFniM0")
TEST_IDS = (0, 5, 12)
# 10 mixtures of 1 s: 0.003 h * 3600 / 1 s = 10.8 -> 10 files.
SMALL = {"total_hours": 0.003, "audio_length": 1.0}


def speech_like(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Harmonic tone switched on and off at a syllable rate: mostly active, with pauses."""
    t = np.arange(int(seconds * FS)) / FS
    voiced = sum(np.sin(2 * np.pi * rng.uniform(100, 200) * h * t) / h for h in range(1, 5))
    return 0.2 * voiced * (np.sin(2 * np.pi * 3 * t) > -0.7)


def make_checkout(root: Path, clean_seconds=1.5, noise_seconds=0.7, test_seconds=0.5, test_ids=TEST_IDS) -> Path:
    """datasets/{clean,noise} and datasets/test_set/synthetic/{no,with}_reverb/{clean,noisy}, real names.

    The challenge's own clips are 30 s (clean), up to 10 s (noise) and 10 s (test); the defaults are small.
    """
    rng = np.random.default_rng(0)
    for name in CLEAN:
        path = root / "datasets" / "clean" / f"{name}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, speech_like(rng, clean_seconds), FS, subtype="PCM_16")
    for name in NOISE:
        path = root / "datasets" / "noise" / f"{name}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, 0.1 * rng.standard_normal(int(noise_seconds * FS)), FS, subtype="PCM_16")
    for condition, subtype in (("no_reverb", "PCM_16"), ("with_reverb", "FLOAT")):
        base = root / "datasets" / "test_set" / "synthetic" / condition
        for fileid in test_ids:
            clean = speech_like(rng, test_seconds)
            noisy = clean + 0.05 * rng.standard_normal(len(clean))
            for kind, name, audio in (
                ("clean", f"clean_fileid_{fileid}", clean),
                ("noisy", f"clnsp{fileid + 100}_traffic_248091_3_snr{fileid}_tl-21_fileid_{fileid}", noisy),
            ):
                (base / kind).mkdir(parents=True, exist_ok=True)
                sf.write(base / kind / f"{name}.wav", audio, FS, subtype=subtype)
    return root


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    return make_checkout(tmp_path_factory.mktemp("dns") / "DNS-Challenge")


def run_data_sh(root: Path, data_dir: Path, *options: str) -> subprocess.CompletedProcess:
    """Run local/data.sh from the recipe dir with all outputs under ``data_dir``."""
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"  # the venv's python, as path.sh gives
    env = dict(os.environ, DNS2020=str(root), PATH=path)
    cmd = ["bash", "local/data.sh", "--data_dir", str(data_dir), "--nj", "2", *options]
    return subprocess.run(cmd, cwd=RECIPE, env=env, capture_output=True, text=True, timeout=120)


def test_data_sh_synthesizes_and_prepares_valid_sets(checkout: Path, tmp_path: Path):
    data = tmp_path / "data"
    proc = run_data_sh(
        checkout, data, "--total_hours", str(SMALL["total_hours"]), "--seed", "3",
        "--synth_opts", "--audio_length 1", "--strict_counts", "false",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (RECIPE / "data").exists()

    # Training: 10 mixtures, 9/1 by sorted utterance id reader_<R>_fileid_<N>, with noise1.scp.
    train, valid = read_scp(data / "tr_synthetic" / "wav.scp"), read_scp(data / "cv_synthetic" / "wav.scp")
    assert (len(train), len(valid)) == (9, 1) and max(train) < min(valid)
    for name in ("tr_synthetic", "cv_synthetic"):
        validate_data_dir(data / name, fs=FS)
        wav, spk1, noise = (read_scp(data / name / f) for f in ("wav.scp", "spk1.scp", "noise1.scp"))
        for utt, speaker in read_scp(data / name / "utt2spk").items():
            reader, fileid = utt.split("_fileid_")
            assert speaker == reader and reader in {"reader_06709", "reader_00042"}
            assert Path(wav[utt]).name.startswith("book_") and wav[utt].endswith(f"_fileid_{fileid}.wav")
            assert Path(spk1[utt]).name == f"clean_fileid_{fileid}.wav"
            assert Path(noise[utt]).name == f"noise_fileid_{fileid}.wav"
            check_mixture(Path(wav[utt]), Path(spk1[utt]), Path(noise[utt]))

    # Test sets: paired by fileid; PCM_16 files used in place, float ones converted.
    for condition in ("no_reverb", "with_reverb"):
        name = f"tt_synthetic_{condition}"
        assert validate_data_dir(data / name, fs=FS) == len(TEST_IDS)
        wav, spk1 = read_scp(data / name / "wav.scp"), read_scp(data / name / "spk1.scp")
        assert list(wav) == sorted(f"fileid_{i}" for i in TEST_IDS)
        for utt in wav:
            assert wav[utt].endswith(f"_{utt}.wav") and Path(spk1[utt]).name == f"clean_{utt}.wav"
            in_place = Path(wav[utt]).is_relative_to(checkout)
            assert in_place == (condition == "no_reverb")


def check_mixture(noisy_path: Path, clean_path: Path, noise_path: Path) -> None:
    """noisy = clean + noise, at the SNR and level its name states (within 16-bit rounding)."""
    noisy, clean, noise = (sf.read(p)[0] for p in (noisy_path, clean_path, noise_path))
    assert len(noisy) == len(clean) == len(noise) == FS
    np.testing.assert_allclose(noisy, clean + noise, atol=2 / 32768)
    fields = noisy_path.stem.split("_")
    snr = int(next(f for f in fields if f.startswith("snr"))[3:])
    level = int(next(f for f in fields if f.startswith("tl"))[2:])
    assert 0 <= snr < 40 and -35 <= level < -15
    assert 10 * np.log10(np.sum(clean**2) / np.sum(noise**2)) == pytest.approx(snr, abs=0.2)
    assert 20 * np.log10(np.sqrt(np.mean(noisy**2))) == pytest.approx(level, abs=1.0)
    assert np.max(np.abs(noisy)) <= 0.99
    assert active_fraction(clean, FS) > 0.6


def reference_activity(audio: np.ndarray, fs: int) -> float:
    """The challenge's audiolib.activitydetector, written as its frame loop."""
    audio = audio * (10 ** (-25 / 20) / (np.sqrt(np.mean(audio**2)) + np.finfo(float).eps))
    hop, prev, active, count = int(fs * 0.05), 0.0, 0, 0
    for start in range(0, len(audio), hop):
        energy_db = 20 * np.log10(np.sum(audio[start : start + hop] ** 2) + np.finfo(float).eps)
        prob = 1 / (1 + np.exp(-(-1 + 0.2 * energy_db)))
        alpha = 0.8 if prob > prev else 0.05
        active += prob * alpha + prev * (1 - alpha) > 0.13
        prev, count = prob, count + 1
    return active / count


def test_active_fraction_matches_the_challenge_loop():
    rng = np.random.default_rng(1)
    for seconds in (0.5, 1.23):
        audio = speech_like(rng, seconds) * (rng.uniform(size=int(seconds * FS)) > 0.3)
        audio[: int(0.2 * FS)] = 0.0
        assert active_fraction(audio, FS) == pytest.approx(reference_activity(audio, FS))


def test_snr_mix_sets_snr_and_level_and_avoids_clipping():
    rng = np.random.default_rng(2)
    clean, noise = speech_like(rng, 1.0), rng.standard_normal(FS // 2)  # noise is zero-padded
    out_clean, out_noise, noisy, level = snr_mix(clean, noise, snr=7, level_db=-30)
    np.testing.assert_allclose(noisy, out_clean + out_noise)
    assert 10 * np.log10(np.sum(out_clean**2) / np.sum(out_noise**2)) == pytest.approx(7)
    assert level == -30 and 20 * np.log10(np.sqrt(np.mean(noisy**2))) == pytest.approx(-30)
    spiky = np.zeros(FS)
    spiky[::4000] = 1.0  # peak far above RMS: at -16 dBFS the mixture would clip
    *_, noisy, level = snr_mix(spiky, noise, snr=30, level_db=-16)
    assert np.max(np.abs(noisy)) == pytest.approx(0.99) and level < -16
    assert level == int(20 * np.log10(np.sqrt(np.mean(noisy**2))))


def test_synthesis_is_deterministic_and_resumes(checkout: Path, tmp_path: Path):
    cfg = SynthesisConfig(**SMALL, seed=1)
    synthesize(checkout, tmp_path / "a", cfg, nj=1)
    first = {p.name: p.read_bytes() for p in sorted((tmp_path / "a").rglob("*.wav"))}
    assert len(first) == 30 and finished_mixtures(tmp_path / "a") == list(range(10))

    # An interrupted run: mixture 4 lost its noisy file; only it is redone (with 2 processes).
    lost = next((tmp_path / "a" / "noisy").glob("*_fileid_4.wav"))
    lost.unlink()
    kept = next((tmp_path / "a" / "noisy").glob("*_fileid_7.wav"))
    mtime = kept.stat().st_mtime_ns
    synthesize(checkout, tmp_path / "a", cfg, nj=2)
    assert {p.name: p.read_bytes() for p in sorted((tmp_path / "a").rglob("*.wav"))} == first
    assert kept.stat().st_mtime_ns == mtime

    with pytest.raises(CorpusError, match=rf"{tmp_path / 'a' / 'synthesis.json'}: .* other settings"):
        synthesize(checkout, tmp_path / "a", SynthesisConfig(**SMALL, seed=2))


def test_incomplete_synthesis_is_reported(checkout: Path, tmp_path: Path):
    synthesize(checkout, tmp_path, SynthesisConfig(**SMALL), nj=1)
    next((tmp_path / "noisy").glob("*_fileid_2.wav")).unlink()
    with pytest.raises(CorpusError, match=rf"{tmp_path / 'noisy'}: 9 utterances, expected 10"):
        prepare_training_sets(tmp_path, tmp_path / "data", strict=True)
    (tmp_path / "clean" / "clean_fileid_3.wav").unlink()
    with pytest.raises(CorpusError, match=rf"{tmp_path / 'clean' / 'clean_fileid_3.wav'}: missing"):
        prepare_training_sets(tmp_path, tmp_path / "data", strict=False)


def test_missing_root_without_clone_names_the_path(tmp_path: Path):
    proc = run_data_sh(tmp_path / "nowhere", tmp_path / "data", "--clone", "false")
    assert proc.returncode != 0
    assert f"{tmp_path / 'nowhere'} (DNS2020) does not exist, and --clone is false" in proc.stdout


def test_failed_clone_names_the_path(tmp_path: Path):
    proc = run_data_sh(tmp_path / "nowhere", tmp_path / "data", "--repo_url", str(tmp_path / "no_repo"))
    assert proc.returncode != 0
    assert "could not clone" in proc.stdout or "needs git-lfs" in proc.stdout
    assert str(tmp_path / "nowhere") in proc.stdout and not (tmp_path / "nowhere").exists()


def test_wrong_layout_is_reported(tmp_path: Path):
    (tmp_path / "datasets" / "noise").mkdir(parents=True)
    with pytest.raises(CorpusError, match=rf"{tmp_path / 'datasets' / 'clean'}: no such folder; expected"):
        synthesize(tmp_path, tmp_path / "out", SynthesisConfig(**SMALL))


def test_lfs_pointers_are_reported(checkout: Path, tmp_path: Path):
    root = make_checkout(tmp_path / "DNS-Challenge")
    pointer = root / "datasets" / "clean" / f"{CLEAN[0]}.wav"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 992044\n")
    with pytest.raises(CorpusError, match=rf"{pointer}: a Git LFS pointer, not audio"):
        synthesize(root, tmp_path / "out", SynthesisConfig(**SMALL))


def test_test_set_count_and_pairs_are_checked(tmp_path: Path):
    root = make_checkout(tmp_path / "DNS-Challenge")
    with pytest.raises(CorpusError, match=r"no_reverb/noisy: 3 utterances, expected 150"):
        prepare_test_sets(root, tmp_path / "data", tmp_path / "wav", FS, nj=1, strict=True)
    orphan = root / "datasets" / "test_set" / "synthetic" / "no_reverb" / "clean" / "clean_fileid_5.wav"
    orphan.unlink()
    with pytest.raises(CorpusError, match=r"_fileid_5.wav: no file with fileid 5 in .*no_reverb/clean"):
        prepare_test_sets(root, tmp_path / "data", tmp_path / "wav", FS, nj=1, strict=False)
