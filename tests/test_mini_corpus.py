"""Noise generators, SNR mixing and the flite/espeak-ng mini corpus (dispatch.corpora.noise, dispatch.corpora.mini_corpus)."""

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import welch

from dispatch.corpora import mini_corpus, noise
from dispatch.data.datadir import read_scp, validate_data_dir

FS = 16000
needs_flite = pytest.mark.skipif(
    shutil.which("flite") is None or shutil.which("espeak-ng") is None,
    reason="flite or espeak-ng not installed (tools/install.sh)",
)

GENERATORS = {
    "white": lambda rng: noise.white(FS, rng),
    "pink": lambda rng: noise.pink(FS, rng, FS),
    "brown": lambda rng: noise.brown(FS, rng, FS),
    "babble": lambda rng: noise.babble([np.sin(np.arange(900) * k) for k in (0.1, 0.2, 0.3)], FS, rng),
    "hum": lambda rng: noise.hum(FS, rng, FS),
    "clicks": lambda rng: noise.clicks(FS, rng, FS),
    "modulated": lambda rng: noise.amplitude_modulate(noise.white(FS, rng), rng, FS),
    "music": lambda rng: noise.music(FS, rng, FS),
    "tones": lambda rng: noise.tones(FS, rng, FS),
    "speech_shaped": lambda rng: noise.speech_shaped(FS, rng, FS),
    "tilt": lambda rng: noise.tilt(noise.white(FS, rng), 2.0, FS),
}


def slope_db_per_octave(x: np.ndarray, low: float = 100.0, high: float = 4000.0) -> float:
    """Least-squares slope of the Welch PSD (dB) against log2(frequency) between low and high Hz."""
    freqs, psd = welch(x, fs=FS, nperseg=4096)
    band = (freqs >= low) & (freqs <= high)
    return float(np.polyfit(np.log2(freqs[band]), 10 * np.log10(psd[band]), 1)[0])


@pytest.mark.parametrize("name, expected", [("white", 0.0), ("pink", -3.01), ("brown", -6.02)])
def test_colored_noise_slope(name, expected):
    rng = np.random.default_rng(0)
    x = noise.white(10 * FS, rng) if name == "white" else getattr(noise, name)(10 * FS, rng, FS)
    assert slope_db_per_octave(x) == pytest.approx(expected, abs=0.5)


@pytest.mark.parametrize("base", [50.0, 60.0])
def test_hum_energy_at_mains_harmonics(base):
    x = noise.hum(4 * FS, np.random.default_rng(2), FS, base_hz=base)
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / FS)
    harmonics = np.isin(np.round(freqs, 6), base * np.arange(1, 9))
    assert harmonics.sum() == 8
    assert spectrum[harmonics].sum() > 0.999 * spectrum.sum()


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generators_seeded_unit_rms(name):
    make = GENERATORS[name]
    a, b = make(np.random.default_rng(5)), make(np.random.default_rng(5))
    assert a.shape == (FS,) and np.array_equal(a, b)
    assert not np.array_equal(a, make(np.random.default_rng(6)))
    assert noise.rms(a) == pytest.approx(1.0)


def test_tilt_makes_white_noise_brown():
    x = noise.tilt(noise.white(10 * FS, np.random.default_rng(1)), 2.0, FS)
    assert slope_db_per_octave(x) == pytest.approx(-6.02, abs=0.5)


def test_music_is_harmonic_and_changes_notes():
    x = noise.music(4 * FS, np.random.default_rng(8), FS, voices=(1, 1))
    # Tonal: a few spectral lines hold most of the power of each 100 ms frame, far more than in noise.
    frames = np.abs(np.fft.rfft(x[: 40 * (FS // 10)].reshape(40, -1), axis=1)) ** 2
    top = np.sort(frames, axis=1)[:, -20:].sum(axis=1) / frames.sum(axis=1)
    assert np.median(top) > 0.8
    peaks = set(np.argmax(frames, axis=1))
    assert len(peaks) > 3  # the melody moves


@pytest.mark.parametrize("make", [noise.speech_shaped, noise.tones])
def test_speech_shaped_and_tones_are_nonstationary(make):
    levels = []
    for seed in range(4):
        x = make(4 * FS, np.random.default_rng(seed), FS)
        frame_db = 10 * np.log10(np.mean(x.reshape(-1, FS // 20) ** 2, axis=1) + 1e-12)
        levels.append(frame_db.max() - frame_db.min())
    assert max(levels) > 10.0


def test_modulated_noise_is_nonstationary():
    x = noise.amplitude_modulate(noise.white(4 * FS, np.random.default_rng(3)), np.random.default_rng(4), FS)
    frame_db = 10 * np.log10(np.mean(x.reshape(-1, FS // 10) ** 2, axis=1))
    assert frame_db.max() - frame_db.min() > 10.0


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 7.3])
def test_mix_at_snr_hits_snr(snr_db):
    rng = np.random.default_rng(7)
    speech, raw_noise = 0.1 * rng.standard_normal(FS), 3.0 * noise.pink(FS, rng, FS)
    noisy, scaled = noise.mix_at_snr(speech, raw_noise, snr_db)
    assert 10 * np.log10(np.sum(speech**2) / np.sum(scaled**2)) == pytest.approx(snr_db, abs=0.01)
    np.testing.assert_allclose(noisy, speech + scaled)


def test_mix_at_snr_rejects_bad_input():
    ones = np.ones(100)
    with pytest.raises(ValueError, match="speech is empty, silent"):
        noise.mix_at_snr(np.zeros(100), ones, 0.0)
    with pytest.raises(ValueError, match="noise is empty, silent"):
        noise.mix_at_snr(ones, np.zeros(100), 0.0)
    with pytest.raises(ValueError, match="same shape"):
        noise.mix_at_snr(ones, np.ones(99), 0.0)
    with pytest.raises(ValueError, match="babble source 1"):
        noise.babble([ones, np.zeros(10)], 100, np.random.default_rng(0))


def tiny_args(tmp: Path, *extra: str) -> list:
    return ["--data_dir", str(tmp / "data"), "--audio_dir", str(tmp / "data/local/mini"), "--num_train", "8",
            "--num_valid", "3", "--num_test", "4", "--nj", "2", *extra]  # fmt: skip


def plan_of(tmp: Path, *args: str) -> list:
    return mini_corpus.plan_corpus(mini_corpus.config_from_args(mini_corpus.get_parser().parse_args(
        ["--data_dir", str(tmp / "data"), "--audio_dir", str(tmp / "a"), *args])))  # fmt: skip


def test_plan_keeps_test_sentences_out_and_babble_from_other_sentences(tmp_path):
    config = mini_corpus.config_from_args(mini_corpus.get_parser().parse_args(tiny_args(tmp_path)))
    plan = mini_corpus.plan_corpus(config)
    assert plan == mini_corpus.plan_corpus(config)
    by_uid = {u.uid: u for u in plan}
    train_valid = {u.sentence for u in plan if u.subset != "test"}
    assert not train_valid & {u.sentence for u in plan if u.subset == "test"}
    assert any(u.babble for u in plan)
    for utt in plan:
        assert all(by_uid[b].subset == utt.subset and by_uid[b].sentence != utt.sentence for b in utt.babble)


@pytest.fixture(scope="module")
def default_plan(tmp_path_factory) -> list:
    return plan_of(tmp_path_factory.mktemp("plan"))


def test_default_plan_holds_out_speakers_and_sentences(default_plan):
    sizes = {s: sum(u.subset == s for u in default_plan) for s in mini_corpus.SUBSETS}
    assert sizes == mini_corpus.SIZES["default"]
    speakers = {s: {u.speaker for u in default_plan if u.subset == s} for s in mini_corpus.SUBSETS}
    sentences = {s: {u.sentence for u in default_plan if u.subset == s} for s in mini_corpus.SUBSETS}
    assert not speakers["test"] & (speakers["train"] | speakers["valid"])
    assert not sentences["test"] & (sentences["train"] | sentences["valid"])
    assert speakers["valid"] <= speakers["train"]  # valid: training speakers, as VoiceBank recipes do
    # Both engines in every set; test's espeak-ng variants (voice timbres) never heard in training.
    for subset in mini_corpus.SUBSETS:
        assert {u.engine for u in default_plan if u.subset == subset} == {"flite", "espeak"}
    variants = {s: {u.voice.split("+")[1] for u in default_plan if u.subset == s and u.engine == "espeak"}
                for s in ("train", "test")}  # fmt: skip
    assert variants["test"] and not variants["test"] & variants["train"]
    flite_test = {u.speaker for u in default_plan if u.subset == "test" and u.engine == "flite"}
    assert len(flite_test) == 1 and flite_test <= set(mini_corpus.DEFAULT_FLITE_VOICES)
    # Many speakers and sentences: far more than the built-in list of sentences.
    assert len(speakers["train"]) > 100 and len(sentences["train"]) > len(mini_corpus.SENTENCES)
    assert all(uid.startswith(u.speaker + "-") for u in default_plan for uid in [u.uid])


def test_default_plan_uses_voicebank_snr_sets_evenly(default_plan):
    for subset, snrs in (("train", {0, 5, 10, 15}), ("valid", {0, 5, 10, 15}), ("test", {2.5, 7.5, 12.5, 17.5})):
        drawn = [u.snr_db for u in default_plan if u.subset == subset]
        values, counts = np.unique(drawn, return_counts=True)
        assert set(values) == snrs and counts.max() - counts.min() <= 1
    kinds = {kind for u in default_plan for kind in u.noises}
    assert kinds == set(mini_corpus.NOISES)
    assert all(1.0 <= u.noise_tilt <= 3.0 and 0.1 <= u.level <= 0.9 for u in default_plan)
    rates = [u.stretch for u in default_plan]
    pitches = {u.pitch for u in default_plan if u.engine == "espeak"}
    assert min(rates) < 0.85 and max(rates) > 1.25 and len(pitches) > 30


def test_plan_depends_on_seed_not_on_size_of_held_out_pools(tmp_path, default_plan):
    def held_out(*args):
        config = mini_corpus.config_from_args(mini_corpus.get_parser().parse_args(
            ["--data_dir", str(tmp_path / "d"), "--audio_dir", str(tmp_path / "a"), *args]))  # fmt: skip
        _, test = mini_corpus.split_speakers(config)
        test_pool = mini_corpus.split_sentences(config.seed, config.test_fraction, config.num_sentences)[1]
        return {spk for pool in test.values() for spk in pool}, set(test_pool)

    speakers, sentences = held_out()
    assert {u.speaker for u in default_plan if u.subset == "test"} <= speakers
    assert {u.sentence for u in default_plan if u.subset == "test"} <= sentences
    assert held_out("--size", "small") == held_out("--size", "evidence") == (speakers, sentences)
    small = plan_of(tmp_path, "--size", "small")
    assert {u.speaker for u in small if u.subset == "test"} <= speakers  # same held-out speakers, any size
    other_speakers, other_sentences = held_out("--seed", "1")
    assert other_speakers != speakers and other_sentences != sentences


def test_sentence_pool_is_fixed_and_distinct():
    pool = mini_corpus.sentence_pool(2000)
    assert pool == mini_corpus.sentence_pool(2000) and len(set(pool)) == 2000
    assert pool[: len(mini_corpus.SENTENCES)] == list(mini_corpus.SENTENCES)
    assert all(s[0].isupper() and s[-1] in ".?" and 5 <= len(s.split()) <= 14 for s in pool)


def test_espeak_command_carries_rate_pitch_and_gap(default_plan):
    utt = next(u for u in default_plan if u.engine == "espeak")
    cmd = mini_corpus.synthesis_command(utt, "espeak-ng", Path("x.wav"))
    assert cmd[cmd.index("-v") + 1] == utt.voice and cmd[cmd.index("-p") + 1] == str(utt.pitch)
    assert cmd[cmd.index("-s") + 1] == str(round(mini_corpus.ESPEAK_WPM / utt.stretch))
    assert cmd[-1] == utt.sentence and cmd[-2] == "--"


def test_bad_options_name_the_option(tmp_path):
    with pytest.raises(SystemExit, match="--level_range: expected 0 < low <= high < 1"):
        mini_corpus.main(tiny_args(tmp_path, "--level_range", "0.9", "0.1"))
    with pytest.raises(SystemExit, match="--noises: unknown noise 'rain'"):
        mini_corpus.main(tiny_args(tmp_path, "--noises", "babble:2,rain:1"))
    with pytest.raises(SystemExit, match="--test_snrs: expected comma-separated float values"):
        mini_corpus.main(tiny_args(tmp_path, "--test_snrs", "2.5,high"))
    with pytest.raises(SystemExit, match="--flite_share: expected 1 without espeak-ng voices"):
        mini_corpus.main(tiny_args(tmp_path, "--espeak_variants", ""))
    with pytest.raises(SystemExit, match="--heldout_speakers: expected at least 2 flite speakers"):
        mini_corpus.main(tiny_args(tmp_path, "--flite_voices", "slt"))


def test_missing_flite_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SystemExit, match="'flite' binary was not found.*tools/install.sh"):
        mini_corpus.main(tiny_args(tmp_path))


@needs_flite
def test_missing_espeak_or_voice_says_what(tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match=r"--espeak_variants: espeak-ng .* has no \['m99'\]"):
        mini_corpus.main(tiny_args(tmp_path, "--espeak_variants", "m1,m99"))
    with pytest.raises(SystemExit, match="--flite_voices: flite .* has no voice \\['bob'\\]"):
        mini_corpus.main(tiny_args(tmp_path, "--flite_voices", "slt,bob"))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/flite").symlink_to(shutil.which("flite"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(SystemExit, match="'espeak-ng' binary was not found.*--flite_share 1"):
        mini_corpus.main(tiny_args(tmp_path))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mini")
    mini_corpus.main(tiny_args(root))
    return root


@needs_flite
def test_corpus_data_dirs_are_valid(corpus):
    sentences, speakers = {}, {}
    for subset, count in (("train", 8), ("valid", 3), ("test", 4)):
        data_dir = corpus / "data" / subset
        assert validate_data_dir(data_dir, fs=FS) == count
        lists = [read_scp(data_dir / name) for name in ("wav.scp", "spk1.scp", "utt2spk", "text")]
        assert all(list(scp) == sorted(lists[0]) for scp in lists)
        for utt, noisy_path in lists[0].items():
            noisy, clean = sf.info(noisy_path), sf.info(lists[1][utt])
            assert Path(noisy_path).is_absolute() and utt.startswith(lists[2][utt] + "-")
            assert (noisy.samplerate, noisy.subtype, noisy.frames) == (FS, "PCM_16", clean.frames)
            assert 1.5 * FS <= noisy.frames <= 4.0 * FS
        sentences[subset] = set(lists[3].values())
        speakers[subset] = set(lists[2].values())
    assert not sentences["test"] & (sentences["train"] | sentences["valid"])
    assert not speakers["test"] & (speakers["train"] | speakers["valid"])


@needs_flite
def test_written_mixtures_hit_the_planned_snr_and_level(corpus):
    config = mini_corpus.config_from_args(mini_corpus.get_parser().parse_args(tiny_args(corpus)))
    for utt in mini_corpus.plan_corpus(config):
        clean = sf.read(corpus / "data/local/mini" / utt.subset / "clean" / f"{utt.uid}.wav")[0]
        noisy = sf.read(corpus / "data/local/mini" / utt.subset / "noisy" / f"{utt.uid}.wav")[0]
        snr = 10 * np.log10(np.sum(clean**2) / np.sum((noisy - clean) ** 2))
        assert snr == pytest.approx(utt.snr_db, abs=0.05)
        assert max(np.abs(clean).max(), np.abs(noisy).max()) == pytest.approx(utt.level, abs=1e-3)
        assert utt.snr_db in ((2.5, 7.5, 12.5, 17.5) if utt.subset == "test" else (0, 5, 10, 15))


@needs_flite
def test_rerun_skips_and_changed_options_rebuild(corpus, caplog):
    wav_scp = corpus / "data/train/wav.scp"
    stamp = corpus / "data/local/mini" / mini_corpus.STAMP
    before = (wav_scp.stat().st_mtime_ns, stamp.stat().st_mtime_ns)
    caplog.set_level(logging.INFO, logger=mini_corpus.__name__)
    mini_corpus.main(tiny_args(corpus))
    assert "up to date" in caplog.text
    assert (wav_scp.stat().st_mtime_ns, stamp.stat().st_mtime_ns) == before

    first_utt, first_path = next(iter(read_scp(wav_scp).items()))
    old_audio = sf.read(first_path)[0]
    mini_corpus.main(tiny_args(corpus, "--seed", "1", "--num_train", "5"))
    assert json.loads(stamp.read_text())["seed"] == 1
    assert len(read_scp(wav_scp)) == 5 and len(list(Path(first_path).parent.glob("*.wav"))) == 5
    new_path = read_scp(wav_scp).get(first_utt)
    assert new_path is None or not np.array_equal(sf.read(new_path)[0], old_audio)


@needs_flite
def test_same_seed_same_audio_whatever_nj(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    mini_corpus.main(tiny_args(a, "--nj", "1", "--num_train", "3"))
    mini_corpus.main(tiny_args(b, "--nj", "2", "--num_train", "3"))
    files = sorted(p.relative_to(a) for p in a.rglob("*.wav"))
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.wav"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


@needs_flite
def test_refuses_to_replace_a_foreign_audio_dir(tmp_path):
    (tmp_path / "data/local/mini").mkdir(parents=True)
    with pytest.raises(SystemExit, match="was not made by this module"):
        mini_corpus.main(tiny_args(tmp_path))
