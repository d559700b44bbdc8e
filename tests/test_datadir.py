"""Kaldi data dir reading/writing/validation and the audio helpers, on generated files."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dispatch.data.audio import convert_wav, probe, write_wav
from dispatch.data.datadir import (
    DataDirError,
    read_scp,
    spk2utt_from_utt2spk,
    validate_data_dir,
    write_data_dir,
    write_scp,
)

FS = 16000
UTTS = ("spkA_001", "spkA_002", "spkB_001")


def tone(num_samples: int, fs: int = FS, freq: float = 440.0) -> np.ndarray:
    return 0.3 * np.sin(2 * np.pi * freq * np.arange(num_samples) / fs)


@pytest.fixture
def good_dir(tmp_path: Path) -> Path:
    """A valid data dir of three utterances, with noise1.scp."""
    wavs = tmp_path / "wav"
    lists = {"wav": {}, "spk1": {}, "noise1": {}}
    for i, utt in enumerate(UTTS):
        n = 1600 + 160 * i
        for kind in lists:
            path = wavs / f"{utt}_{kind}.wav"
            write_wav(path, tone(n, freq=200.0 * (i + 1)), FS)
            lists[kind][utt] = str(path)
    return write_data_dir(
        tmp_path / "data" / "set",
        wav=lists["wav"],
        spk1=lists["spk1"],
        utt2spk={utt: utt.split("_")[0] for utt in UTTS},
        extra_scps={"noise1.scp": lists["noise1"]},
    )


def audio_path(data_dir: Path, scp: str, utt: str) -> Path:
    return Path(read_scp(data_dir / scp)[utt])


def test_written_dir_is_sorted_and_valid(good_dir: Path):
    assert validate_data_dir(good_dir, fs=FS) == 3
    for name in ("wav.scp", "spk1.scp", "noise1.scp", "utt2spk"):
        keys = [line.split()[0] for line in (good_dir / name).read_text().splitlines()]
        assert keys == sorted(UTTS)
    assert (good_dir / "spk2utt").read_text() == "spkA spkA_001 spkA_002\nspkB spkB_001\n"
    assert not list(good_dir.glob(".*")), "temporary files left behind"


def test_write_scp_sorts_in_c_locale_and_rejects_bad_keys(tmp_path: Path):
    write_scp(tmp_path / "x.scp", {"b": "2", "B": "1", "a_1": "3", "a": "4"})
    assert [ln.split()[0] for ln in (tmp_path / "x.scp").read_text().splitlines()] == ["B", "a", "a_1", "b"]
    with pytest.raises(DataDirError, match="invalid key 'a b'"):
        write_scp(tmp_path / "y.scp", {"a b": "1"})
    assert spk2utt_from_utt2spk({"u2": "s", "u1": "s", "v": "t"}) == {"s": ["u1", "u2"], "t": ["v"]}


def test_write_data_dir_rejects_different_keys(tmp_path: Path):
    with pytest.raises(DataDirError, match=r"spk1.scp and wav.scp differ in keys, e.g. utterance 'u2'"):
        write_data_dir(tmp_path / "d", wav={"u1": "/a", "u2": "/b"}, spk1={"u1": "/c"})


def test_read_scp_rejects_repeated_key_and_malformed_line(tmp_path: Path):
    (tmp_path / "a.scp").write_text("u1 /x\nu1 /y\n")
    with pytest.raises(DataDirError, match="key 'u1' appears more than once"):
        read_scp(tmp_path / "a.scp")
    (tmp_path / "b.scp").write_text("u1 /x\nu2\n")
    with pytest.raises(DataDirError, match=r"b.scp:2: expected '<key> <value>'"):
        read_scp(tmp_path / "b.scp")


def rewrite(path: Path, transform) -> None:
    path.write_text("".join(line + "\n" for line in transform(path.read_text().splitlines())))


def test_unsorted_keys(good_dir: Path):
    rewrite(good_dir / "wav.scp", lambda lines: lines[::-1])
    with pytest.raises(DataDirError, match=r"set: wav.scp: utterance 'spkA_002': key not sorted"):
        validate_data_dir(good_dir, check_audio=False)


def test_repeated_key(good_dir: Path):
    rewrite(good_dir / "utt2spk", lambda lines: [lines[0], *lines])
    with pytest.raises(DataDirError, match=r"utt2spk: utterance 'spkA_001': key repeated"):
        validate_data_dir(good_dir, check_audio=False)


@pytest.mark.parametrize("name", ["spk1.scp", "utt2spk", "noise1.scp"])
def test_mismatched_keys(good_dir: Path, name: str):
    rewrite(good_dir / name, lambda lines: lines[:-1])
    with pytest.raises(DataDirError, match=rf"{name}: utterance 'spkB_001' of wav.scp is missing"):
        validate_data_dir(good_dir, check_audio=False)


def test_extra_key(good_dir: Path):
    rewrite(good_dir / "spk1.scp", lambda lines: [*lines, "spkC_001 /nowhere.wav"])
    with pytest.raises(DataDirError, match=r"spk1.scp: utterance 'spkC_001' is not in wav.scp"):
        validate_data_dir(good_dir, check_audio=False)


def test_spk2utt_must_invert_utt2spk(good_dir: Path):
    (good_dir / "spk2utt").write_text("spkA spkA_001\nspkB spkB_001\n")
    with pytest.raises(DataDirError, match=r"spk2utt: speaker 'spkA' lists 'spkA_001'"):
        validate_data_dir(good_dir, check_audio=False)


def test_missing_list(good_dir: Path):
    (good_dir / "spk1.scp").unlink()
    with pytest.raises(DataDirError, match=r"set: missing spk1.scp"):
        validate_data_dir(good_dir)


def test_missing_audio_only_checked_with_check_audio(good_dir: Path):
    missing = audio_path(good_dir, "spk1.scp", "spkA_002")
    missing.unlink()
    assert validate_data_dir(good_dir, check_audio=False) == 3
    with pytest.raises(DataDirError) as err:
        validate_data_dir(good_dir)
    assert f"spk1.scp: utterance 'spkA_002': {missing}: no such file" in str(err.value)
    assert str(good_dir) in str(err.value)


def corrupt_truncate(path: Path) -> str:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return "truncated: header declares"


def corrupt_garbage(path: Path) -> str:
    path.write_bytes(np.random.default_rng(0).bytes(2000))
    return "not readable audio"


def corrupt_empty(path: Path) -> str:
    path.write_bytes(b"")
    return "empty file"


def corrupt_rate(path: Path) -> str:
    write_wav(path, tone(1760, 8000), 8000)  # same length: only the rate is wrong
    return "sampled at 8000 Hz, expected 16000 Hz"


def corrupt_length(path: Path) -> str:
    write_wav(path, tone(1000), FS)
    return "1000 samples, but wav.scp has 1760"


def corrupt_lfs_pointer(path: Path) -> str:
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n")
    return "a Git LFS pointer"


@pytest.mark.parametrize(
    "corrupt",
    [corrupt_truncate, corrupt_garbage, corrupt_empty, corrupt_rate, corrupt_length, corrupt_lfs_pointer],
)
def test_bad_audio_names_utterance_and_path(good_dir: Path, corrupt):
    path = audio_path(good_dir, "noise1.scp", "spkA_002")
    expected = corrupt(path)
    with pytest.raises(DataDirError) as err:
        validate_data_dir(good_dir, fs=FS)
    message = str(err.value)
    assert f"{good_dir}: 1 audio problem(s)" in message
    assert f"noise1.scp: utterance 'spkA_002': {path}: {expected}" in message


def test_all_audio_problems_are_listed(good_dir: Path):
    for utt in UTTS:
        audio_path(good_dir, "wav.scp", utt).write_bytes(b"")
    with pytest.raises(DataDirError, match=r"3 audio problem") as err:
        validate_data_dir(good_dir)
    assert all(f"utterance '{utt}'" in str(err.value) for utt in UTTS)


def test_cli(good_dir: Path):
    cmd = [sys.executable, "-m", "dispatch.bin.validate_data_dir", str(good_dir), "--fs", str(FS)]
    ok = subprocess.run(cmd, capture_output=True, text=True)
    assert ok.returncode == 0 and "OK, 3 utterances" in ok.stdout
    audio_path(good_dir, "spk1.scp", "spkB_001").write_bytes(b"RIFF")
    bad = subprocess.run(cmd, capture_output=True, text=True)
    assert bad.returncode == 1
    assert "spk1.scp: utterance 'spkB_001'" in bad.stderr and "Traceback" not in bad.stderr


def test_convert_wav_resamples_to_pcm16_and_skips_finished(tmp_path: Path):
    src, dst = tmp_path / "in.wav", tmp_path / "out" / "in.wav"
    x = np.clip(tone(48000, 48000, 1000.0) * 4, -1, 1)  # full scale: resampling overshoots it
    sf.write(src, x, 48000, subtype="FLOAT")
    convert_wav(src, dst, FS)
    info = probe(dst)
    assert (info.samplerate, info.frames, info.subtype) == (FS, 16000, "PCM_16")
    y, _ = sf.read(dst)
    assert np.max(np.abs(y)) <= 1.0 and np.max(y) > 0.99  # clipped, not wrapped around
    mtime = dst.stat().st_mtime_ns
    convert_wav(src, dst, FS)
    assert dst.stat().st_mtime_ns == mtime
