"""egs2/voicebank_demand/enh_kd1/local/data.sh on a small fake corpus with the real layout (48 kHz)."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dispatch.corpora.common import CorpusError
from dispatch.corpora.voicebank import FOLDERS, prepare
from dispatch.data.datadir import read_scp, validate_data_dir

RECIPE = Path(__file__).resolve().parents[1] / "egs2" / "voicebank_demand" / "enh_kd1"
TRAIN = {"p226": 2, "p230": 2, "p239": 1, "p287": 2}  # p226 and p287 are the validation speakers
TEST = {"p232": 2, "p257": 1}
CORPUS_FS, FS = 48000, 16000


def make_corpus(root: Path, train=TRAIN, test=TEST, seconds=lambda rng: rng.uniform(0.1, 0.2)) -> Path:
    """Folders clean/noisy_{trainset_28spk,testset}_wav of p<spk>_<nnn>.wav at 48 kHz.

    ``train``/``test``: utterances per speaker; ``seconds(rng)``: the duration of the next utterance.
    """
    rng = np.random.default_rng(0)
    for split, speakers in (("trainset_28spk", train), ("testset", test)):
        for spk, count in speakers.items():
            for i in range(1, count + 1):
                n = int(CORPUS_FS * seconds(rng))
                t = np.arange(n) / CORPUS_FS
                # A harmonic tone gated at a syllable rate: speech-like enough for the metrics.
                clean = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) * (np.sin(2 * np.pi * 3 * t) > -0.5)
                noisy = clean + 0.05 * rng.standard_normal(n)
                for kind, audio in (("clean", clean), ("noisy", noisy)):
                    folder = root / f"{kind}_{split}_wav"
                    folder.mkdir(parents=True, exist_ok=True)
                    sf.write(folder / f"{spk}_{i:03d}.wav", audio, CORPUS_FS, subtype="PCM_16")
    return root


def zip_folders(root: Path) -> None:
    """Replace each folder by <folder>.zip holding <folder>/<file>, as the DataShare archives do."""
    for folder in FOLDERS:
        with zipfile.ZipFile(root / f"{folder}.zip", "w") as zf:
            for wav in sorted((root / folder).iterdir()):
                zf.write(wav, f"{folder}/{wav.name}")
                wav.unlink()
        (root / folder).rmdir()


def run_data_sh(root: Path, data_dir: Path, *options: str) -> subprocess.CompletedProcess:
    """Run local/data.sh from the recipe dir, with all outputs under ``data_dir``."""
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"  # the venv's python, as path.sh gives
    env = dict(os.environ, VOICEBANK_DEMAND=str(root), PATH=path)
    cmd = ["bash", "local/data.sh", "--data_dir", str(data_dir), "--nj", "1", "--strict_counts", "false"]
    cmd += options
    return subprocess.run(cmd, cwd=RECIPE, env=env, capture_output=True, text=True, timeout=120)


def test_data_sh_writes_valid_16k_sets_and_reruns(tmp_path: Path):
    root = make_corpus(tmp_path / "corpus")
    data = tmp_path / "data"
    proc = run_data_sh(root, data, "--download", "false")
    assert proc.returncode == 0, proc.stderr
    expected = {
        "tr_26spk": {"p230_001", "p230_002", "p239_001"},
        "cv_2spk": {"p226_001", "p226_002", "p287_001", "p287_002"},
        "tt_2spk": {"p232_001", "p232_002", "p257_001"},
    }
    for name, utts in expected.items():
        assert validate_data_dir(data / name, fs=FS) == len(utts)
        wav, spk1 = read_scp(data / name / "wav.scp"), read_scp(data / name / "spk1.scp")
        assert set(wav) == utts and list(wav) == sorted(wav)
        assert read_scp(data / name / "utt2spk") == {utt: utt[:4] for utt in sorted(utts)}
        for utt in utts:
            noisy, clean = Path(wav[utt]), Path(spk1[utt])
            assert noisy.is_absolute() and noisy.name == clean.name == f"{utt}.wav"
            assert noisy.parent.name.startswith("noisy_") and clean.parent.name.startswith("clean_")
            original = root / noisy.parent.name / noisy.name
            assert sf.info(noisy).frames == round(sf.info(original).frames * FS / CORPUS_FS)
            assert sf.info(noisy).subtype == "PCM_16"
    assert str(tmp_path) in wav[utt] and not (RECIPE / "data").exists()

    resampled = Path(read_scp(data / "tt_2spk" / "wav.scp")["p232_001"])
    mtime = resampled.stat().st_mtime_ns
    assert run_data_sh(root, data, "--download", "false").returncode == 0
    assert resampled.stat().st_mtime_ns == mtime, "a finished resampled file was redone"


def test_missing_root_without_download_names_the_path(tmp_path: Path):
    proc = run_data_sh(tmp_path / "nowhere", tmp_path / "data", "--download", "false")
    assert proc.returncode != 0
    assert f"{tmp_path / 'nowhere'} (VOICEBANK_DEMAND) lacks clean_trainset_28spk_wav" in proc.stdout


def test_failed_download_names_url_and_path(tmp_path: Path):
    proc = run_data_sh(tmp_path / "corpus", tmp_path / "data", "--base_url", "http://127.0.0.1:9")
    url = "http://127.0.0.1:9/clean_trainset_28spk_wav.zip"
    assert proc.returncode != 0
    assert f"could not download {url} into {tmp_path / 'corpus'}" in proc.stdout


def test_zip_archives_are_checked_and_unpacked(tmp_path: Path):
    root = make_corpus(tmp_path / "corpus")
    zip_folders(root)
    prepare(root, tmp_path / "data", tmp_path / "wav", FS, nj=1, strict=False)
    assert all((root / folder).is_dir() for folder in FOLDERS)
    assert validate_data_dir(tmp_path / "data" / "tt_2spk", fs=FS) == 3


def test_truncated_archive_is_reported(tmp_path: Path):
    root = make_corpus(tmp_path / "corpus")
    zip_folders(root)
    archive = root / "noisy_testset_wav.zip"
    archive.write_bytes(archive.read_bytes()[:-200])
    with pytest.raises(CorpusError, match=rf"{archive}: not a complete zip archive"):
        prepare(root, tmp_path / "data", tmp_path / "wav", FS, nj=1, strict=False)
    assert not (root / "noisy_testset_wav").exists()


def test_archive_with_other_layout_is_reported(tmp_path: Path):
    root = make_corpus(tmp_path / "corpus")
    zip_folders(root)
    archive = root / "clean_testset_wav.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("p232_001.wav", b"")
    with pytest.raises(CorpusError, match=rf"{archive}: member p232_001.wav outside clean_testset_wav/"):
        prepare(root, tmp_path / "data", tmp_path / "wav", FS, nj=1, strict=False)


def test_nested_root_is_reported(tmp_path: Path):
    make_corpus(tmp_path / "corpus" / "DS_10283_2791")
    root = tmp_path / "corpus"
    with pytest.raises(CorpusError, match=rf"{root}: neither noisy_trainset_28spk_wav/ nor noisy_"):
        prepare(root, tmp_path / "data", tmp_path / "wav", FS, nj=1, strict=False)


def test_missing_partner_and_wrong_count_are_reported(tmp_path: Path):
    root = make_corpus(tmp_path / "corpus")
    with pytest.raises(CorpusError, match=r"noisy_trainset_28spk_wav: 7 utterances, expected 11572"):
        prepare(root, tmp_path / "data", tmp_path / "wav", FS, nj=1, strict=True)
    (root / "clean_testset_wav" / "p257_001.wav").unlink()
    with pytest.raises(CorpusError, match=rf"{root / 'clean_testset_wav' / 'p257_001.wav'}: missing"):
        prepare(root, tmp_path / "data", tmp_path / "wav", FS, nj=1, strict=False)


def test_unexpected_file_name_is_reported(tmp_path: Path):
    root = make_corpus(tmp_path / "corpus")
    odd = root / "noisy_testset_wav" / "speaker1.wav"
    odd.write_bytes(b"")
    with pytest.raises(CorpusError, match=rf"{odd}: unexpected file name"):
        prepare(root, tmp_path / "data", tmp_path / "wav", FS, nj=1, strict=False)
