"""Mini enhancement corpus: flite and espeak-ng speech mixed with generated noise, as Kaldi-style data dirs.

A CPU miniature of VoiceBank+DEMAND's regime, built on the machine in minutes, for the egs2/mini_flite
recipe and for tests. Speakers are flite voices and espeak-ng (accent, voice variant) pairs, each
espeak-ng speaker with its own base pitch; every utterance draws its speaking rate (and, for
espeak-ng, a pitch offset and word gap). Held out for the test set only: a share of the speakers (one
flite voice and whole espeak-ng variants) and a share of the sentences (the built-in ones plus
sentences generated from templates, deterministically). Valid uses training speakers and sentences,
as VoiceBank+DEMAND recipes do. Each utterance is trimmed of silence, fitted to the duration range and
mixed with one or two noises (:mod:`dispatch.corpora.noise`: babble of other utterances of the same
subset, music, alarm tones, speech-shaped and amplitude-modulated coloured noise, stationary coloured
noise, hum, clicks) at an SNR drawn from a set: 0/5/10/15 dB for train and valid, 2.5/7.5/12.5/17.5 dB
for test, as in VoiceBank+DEMAND. The output level (peak) is drawn per utterance. Everything is drawn
from ``--seed``; results do not depend on ``--nj``.

Written::

    <audio_dir>/<set>/clean/<uid>.wav, <audio_dir>/<set>/noisy/<uid>.wav   16-bit PCM at --fs
    <audio_dir>/mini_corpus.json     stamp: the options of the finished build
    <data_dir>/<set>/{wav.scp, spk1.scp, utt2spk, spk2utt, text}          for set in train, valid, test

``wav.scp`` holds the noisy input, ``spk1.scp`` the clean reference; speaker ids (flite voice names,
or ``<accent>_<variant>`` for espeak-ng, e.g. ``en_gb_scotland_m3``) prefix the utterance ids. A rerun
with the same options does nothing; other options rebuild everything. Audio is written to
``<audio_dir>.tmp`` and renamed when complete, list files atomically, and the stamp last, so an
interrupted build is redone from scratch.

Usage::

    python -m dispatch.corpora.mini_corpus --data_dir data --audio_dir data/local/mini_flite --nj 2
    python -m dispatch.corpora.mini_corpus --size evidence ...   # several thousand training utterances
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from dispatch.corpora import noise
from dispatch.data.atomic import write_text_atomic
from dispatch.data.audio import read_audio, write_wav
from dispatch.data.datadir import write_data_dir, write_scp

logger = logging.getLogger(__name__)

SUBSETS = ("train", "valid", "test")
SIZES = {
    "small": {"train": 24, "valid": 6, "test": 8},  # CI
    "default": {"train": 800, "valid": 50, "test": 100},  # the recipe's default run (within 15 min)
    "evidence": {"train": 6000, "valid": 300, "test": 600},  # the evidence runs (VoiceBank: 11572 / 824)
}
# flite's voices that read arbitrary text (awb_time is a limited-domain voice: it only says the time).
DEFAULT_FLITE_VOICES = ("slt", "rms", "awb", "kal16", "kal")
# espeak-ng's English accents (Debian espeak-ng-data; the mbrola voices need mbrola, not installed).
DEFAULT_ESPEAK_ACCENTS = (
    "en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029", "en-us-nyc",
)  # fmt: skip
# espeak-ng voice variants that sound like people (not robots, whispers or effects): 12 F, 17 M, 3 klatt.
DEFAULT_ESPEAK_VARIANTS = (
    "f1", "f2", "f3", "f4", "f5", "Alicia", "Andrea", "Annie", "anika", "belinda", "linda", "steph",
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "adam", "Andy", "david", "edward", "john", "max",
    "Michael", "paul", "robert", "klatt", "klatt2", "klatt3",
)  # fmt: skip
DEFAULT_NOISES = (
    "babble:3,music:2,speech_shaped:2,modulated:2,tones:1,pink:1,white:1,brown:1,hum:1,clicks:1"
)
DEFAULT_TRAIN_SNRS = (0.0, 5.0, 10.0, 15.0)  # VoiceBank+DEMAND's training SNRs
DEFAULT_TEST_SNRS = (2.5, 7.5, 12.5, 17.5)  # and its test SNRs
BABBLE_TALKERS = (3, 8)  # enough talkers that none stands out as a second target
ESPEAK_WPM = 170  # espeak-ng words per minute at stretch 1 (a larger stretch is slower, as for flite)
STAMP = "mini_corpus.json"
MARKER = ".mini_corpus"  # marks an audio dir this module may delete when it rebuilds
FORMAT = 2  # bump when the same options would give different audio

NoiseMaker = Callable[[int, np.random.Generator, int, Sequence[np.ndarray]], np.ndarray]
NOISES: Dict[str, NoiseMaker] = {
    "white": lambda n, rng, fs, talkers: noise.white(n, rng),
    "pink": lambda n, rng, fs, talkers: noise.pink(n, rng, fs),
    "brown": lambda n, rng, fs, talkers: noise.brown(n, rng, fs),
    "babble": lambda n, rng, fs, talkers: noise.babble(talkers, n, rng),
    "hum": lambda n, rng, fs, talkers: noise.hum(n, rng, fs),
    "clicks": lambda n, rng, fs, talkers: noise.clicks(n, rng, fs),
    "music": lambda n, rng, fs, talkers: noise.music(n, rng, fs),
    "tones": lambda n, rng, fs, talkers: noise.tones(n, rng, fs),
    "speech_shaped": lambda n, rng, fs, talkers: noise.speech_shaped(n, rng, fs),
    # Stationary colored noise under a random envelope: bursts and pauses a mask cannot average out.
    "modulated": lambda n, rng, fs, talkers: noise.amplitude_modulate(
        noise.colored(n, rng, float(rng.choice([0.0, 1.0, 2.0])), fs), rng, fs
    ),
}


@dataclass(frozen=True)
class CorpusConfig:
    """Everything that determines the corpus (the stamp is this, serialized); defaults are the CLI's."""

    data_dir: str
    audio_dir: str
    sizes: Dict[str, int]
    fs: int
    seed: int
    flite_voices: Tuple[str, ...]
    espeak_accents: Tuple[str, ...]
    espeak_variants: Tuple[str, ...]
    flite_share: float
    heldout_speakers: float
    stretch_range: Tuple[float, float]
    pitch_range: Tuple[float, float]
    duration_range: Tuple[float, float]
    level_range: Tuple[float, float]
    train_snrs: Tuple[float, ...]
    test_snrs: Tuple[float, ...]
    noises: Tuple[Tuple[str, float], ...]
    max_noises: int
    tilt_range: Tuple[float, float]
    num_sentences: int
    test_fraction: float

    def __post_init__(self) -> None:
        def check(ok: bool, option: str, expected: str, got: object) -> None:
            if not ok:
                raise ValueError(f"--{option}: expected {expected}, got {got}")

        check(set(self.sizes) == set(SUBSETS), "num_*", f"sizes for {SUBSETS}", self.sizes)
        for subset, size in self.sizes.items():
            check(size >= 1, f"num_{subset}", "at least 1 utterance", size)
        check(8000 <= self.fs <= 48000, "fs", "a rate in 8000..48000 Hz", self.fs)
        has_flite, has_espeak = bool(self.flite_voices), bool(self.espeak_accents and self.espeak_variants)
        check(has_flite or has_espeak, "flite_voices", "at least one flite or espeak-ng voice", self.flite_voices)
        check(0.0 <= self.flite_share <= 1.0, "flite_share", "a fraction in [0, 1]", self.flite_share)
        check(has_flite or self.flite_share == 0.0, "flite_share", "0 without --flite_voices", self.flite_share)
        check(has_espeak or self.flite_share == 1.0, "flite_share", "1 without espeak-ng voices", self.flite_share)
        check(0.0 < self.heldout_speakers < 1.0, "heldout_speakers", "a fraction in (0, 1)", self.heldout_speakers)
        for engine, speakers in self.speakers_by_engine().items():
            check(len(speakers) >= 2, "heldout_speakers", f"at least 2 {engine} speakers to hold some out",
                  speakers)  # fmt: skip
        low, high = self.stretch_range
        check(0.3 <= low <= high <= 3.0, "stretch_range", "0.3 <= low <= high <= 3", self.stretch_range)
        low, high = self.pitch_range
        check(0 <= low <= high <= 99, "pitch_range", "0 <= low <= high <= 99 (espeak-ng -p)", self.pitch_range)
        low, high = self.duration_range
        check(0.5 <= low <= high, "duration_range", "0.5 <= min <= max seconds", self.duration_range)
        low, high = self.level_range
        check(0.0 < low <= high < 1.0, "level_range", "0 < low <= high < 1 (peak, full scale)", self.level_range)
        for name in ("train_snrs", "test_snrs"):
            values = getattr(self, name)
            check(len(values) > 0 and all(np.isfinite(values)), name, "finite dB values", values)
        check(len(self.noises) > 0, "noises", "at least one noise", self.noises)
        check(1 <= self.max_noises <= len(self.noises), "max_noises", "1..number of noises", self.max_noises)
        low, high = self.tilt_range
        check(0.0 <= low <= high <= 4.0, "tilt_range", "0 <= low <= high <= 4", self.tilt_range)
        check(self.num_sentences >= 2, "num_sentences", "at least 2 sentences", self.num_sentences)
        check(0.0 < self.test_fraction < 1.0, "test_fraction", "a fraction in (0, 1)", self.test_fraction)

    def speakers_by_engine(self) -> Dict[str, List[str]]:
        """Speaker ids per engine that speaks a share of the utterances."""
        out = {}
        if self.flite_share > 0:
            out["flite"] = list(self.flite_voices)
        if self.flite_share < 1:
            out["espeak"] = [espeak_speaker(a, v) for a in self.espeak_accents for v in self.espeak_variants]
        return out

    def stamp(self) -> dict:
        """JSON-comparable description of the build."""
        return json.loads(json.dumps({"format": FORMAT, **asdict(self)}))


@dataclass(frozen=True)
class Utterance:
    """Recipe for one mixture; every random choice is made when planning."""

    uid: str
    subset: str
    sentence: str
    speaker: str  # speaker id: a flite voice, or <accent>_<variant> (espeak-ng)
    engine: str  # "flite" or "espeak"
    voice: str  # what the engine is given: a flite voice, or espeak-ng's "<accent>+<variant>"
    stretch: float  # duration stretch (speaking rate; larger is slower)
    pitch: int  # espeak-ng base pitch 0..99 (the speaker's plus an offset); unused by flite
    word_gap: int  # espeak-ng pause between words in 10 ms units; unused by flite
    seed: int
    noises: Tuple[str, ...]
    noise_gains_db: Tuple[float, ...]  # relative level of each noise before the SNR is set
    noise_tilt: float  # spectral tilt exponent of the summed noise (0: as generated, 2: -6 dB/octave)
    snr_db: float
    level: float  # peak of the louder of noisy/clean, in full scale
    babble: Tuple[str, ...]  # uids of the same subset whose clean speech forms the babble


def espeak_speaker(accent: str, variant: str) -> str:
    """Speaker id of an espeak-ng (accent, variant) pair: ``en-gb-scotland``, ``m3`` -> en_gb_scotland_m3."""
    return f"{accent}_{variant}".replace("-", "_")


def parse_noises(spec: str) -> Tuple[Tuple[str, float], ...]:
    """Parse ``name:weight,...`` (weight optional, default 1) into ((name, weight), ...)."""
    parsed = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, weight = item.partition(":")
        if name not in NOISES:
            raise ValueError(f"--noises: unknown noise '{name}', expected one of {sorted(NOISES)}")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"--noises: weight of '{name}' must be a number, got '{weight}'") from None
        if not value > 0:
            raise ValueError(f"--noises: weight of '{name}' must be positive, got {value}")
        parsed.append((name, value))
    return tuple(parsed)


def parse_list(spec: str, option: str, kind: type = str) -> tuple:
    """Comma-separated values of ``option`` (empty items dropped), each converted by ``kind``."""
    try:
        return tuple(kind(item.strip()) for item in spec.split(",") if item.strip())
    except ValueError:
        raise ValueError(f"--{option}: expected comma-separated {kind.__name__} values, got '{spec}'") from None


def find_flite(voices: Sequence[str]) -> str:
    """Path of the flite binary, after checking that it has every voice in ``voices``."""
    flite = shutil.which("flite")
    if flite is None:
        raise RuntimeError(
            "the 'flite' binary was not found on PATH: run tools/install.sh (Debian package flite)"
        )
    listing = subprocess.run([flite, "-lv"], capture_output=True, text=True, check=True).stdout
    available = listing.split(":", 1)[-1].split()
    missing = [voice for voice in voices if voice not in available]
    if missing:
        raise ValueError(f"--flite_voices: flite ({flite}) has no voice {missing}; it has {available}")
    return flite


def find_espeak(accents: Sequence[str], variants: Sequence[str]) -> str:
    """Path of the espeak-ng binary, after checking that it has every accent and variant."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise RuntimeError(
            "the 'espeak-ng' binary was not found on PATH: run tools/install.sh (Debian package espeak-ng),"
            " or build without it: --flite_share 1"
        )

    def column(option: str, index: int) -> List[str]:
        listing = subprocess.run([espeak, option], capture_output=True, text=True, check=True).stdout
        return [line.split()[index] for line in listing.splitlines()[1:] if len(line.split()) > index]

    languages = set(column("--voices", 1))
    variant_files = {name.rsplit("/", 1)[-1] for name in column("--voices=variant", 4)}
    for option, wanted, have in (("espeak_accents", accents, languages), ("espeak_variants", variants, variant_files)):
        missing = [name for name in wanted if name not in have]
        if missing:
            raise ValueError(f"--{option}: espeak-ng ({espeak}) has no {missing}; it has {sorted(have)}")
    return espeak


def sentence_pool(count: int) -> List[str]:
    """``count`` distinct sentences: the built-in ones, then template sentences (fixed, seed-independent)."""
    if count <= len(SENTENCES):
        return list(SENTENCES[:count])
    rng = np.random.default_rng(20261201)
    combos = list(itertools.product(range(len(TEMPLATE_SUBJECTS)), range(len(TEMPLATE_ACTIONS)),
                                    range(len(TEMPLATE_ENDINGS))))  # fmt: skip
    extra = count - len(SENTENCES)
    if extra > len(combos):
        raise ValueError(f"--num_sentences: at most {len(SENTENCES) + len(combos)} sentences, got {count}")
    chosen = rng.choice(len(combos), size=extra, replace=False)
    generated = []
    for index in chosen:
        subject, action, ending = combos[int(index)]
        text = f"{TEMPLATE_SUBJECTS[subject]} {TEMPLATE_ACTIONS[action]} {TEMPLATE_ENDINGS[ending]}."
        generated.append(text[0].upper() + text[1:])
    return list(SENTENCES) + generated


def split_sentences(seed: int, test_fraction: float, count: int) -> Tuple[List[str], List[str]]:
    """Split the sentence pool into (train/valid pool, held-out test pool)."""
    sentences = sentence_pool(count)
    order = np.random.default_rng([seed, 0]).permutation(len(sentences))
    num_test = max(1, round(test_fraction * len(sentences)))
    return [sentences[i] for i in order[num_test:]], [sentences[i] for i in order[:num_test]]


def split_speakers(config: CorpusConfig) -> Tuple[Dict[str, List[str]], Dict[str, List[str]]]:
    """(train/valid speakers, held-out test speakers), each per engine.

    flite: a share of the voices. espeak-ng: a share of the variants, held out in every accent, so that
    no test voice timbre is heard in training (its accents are).
    """
    train: Dict[str, List[str]] = {}
    test: Dict[str, List[str]] = {}
    rng = np.random.default_rng([config.seed, 2])
    for engine in config.speakers_by_engine():
        names = list(config.flite_voices if engine == "flite" else config.espeak_variants)
        order = rng.permutation(len(names))
        num_test = min(len(names) - 1, max(1, round(config.heldout_speakers * len(names))))
        held = {names[i] for i in order[:num_test]}
        if engine == "flite":
            train[engine] = [v for v in names if v not in held]
            test[engine] = [v for v in names if v in held]
        else:
            pairs = [(a, v) for a in config.espeak_accents for v in names]
            train[engine] = [espeak_speaker(a, v) for a, v in pairs if v not in held]
            test[engine] = [espeak_speaker(a, v) for a, v in pairs if v in held]
    return train, test


def _spread(items: Sequence, count: int, rng: np.random.Generator) -> list:
    """``count`` items using each about equally often, in random order."""
    reps = -(-count // len(items))
    return [items[i] for i in rng.permutation(np.tile(np.arange(len(items)), reps))[:count]]


def plan_corpus(config: CorpusConfig) -> List[Utterance]:
    """Draw every random choice of the corpus (sentences, speakers, rates, noises, SNRs, seeds)."""
    train_pool, test_pool = split_sentences(config.seed, config.test_fraction, config.num_sentences)
    train_speakers, test_speakers = split_speakers(config)
    espeak_voice = {espeak_speaker(a, v): f"{a}+{v}" for a in config.espeak_accents for v in config.espeak_variants}
    # Each espeak-ng speaker keeps one base pitch (its own), drawn from the seed.
    pitch_rng = np.random.default_rng([config.seed, 3])
    base_pitch = {spk: float(pitch_rng.uniform(*config.pitch_range)) for spk in espeak_voice}
    names = [name for name, _ in config.noises]
    weights = np.array([weight for _, weight in config.noises])
    plan = []
    for k, subset in enumerate(SUBSETS):
        rng = np.random.default_rng([config.seed, 1, k])
        count = config.sizes[subset]
        speakers = test_speakers if subset == "test" else train_speakers
        snrs = config.test_snrs if subset == "test" else config.train_snrs
        sentences = _spread(test_pool if subset == "test" else train_pool, count, rng)
        snr_of = _spread(snrs, count, rng)  # every SNR about equally often, as in VoiceBank+DEMAND
        num_flite = int(round(config.flite_share * count)) if "espeak" in speakers else count
        engines = _spread(["flite"] * num_flite + ["espeak"] * (count - num_flite), count, rng)
        spk_of = {engine: iter(_spread(pool, count, rng)) for engine, pool in speakers.items()}
        utt_speakers = [next(spk_of[engine]) for engine in engines]
        uids = [f"{spk}-{subset}{i:05d}" for i, spk in enumerate(utt_speakers)]
        sentence_ids = np.unique(sentences, return_inverse=True)[1]
        for i in range(count):
            # Babble talkers: other utterances of this subset with other sentences (none on tiny sets).
            order = rng.permutation(count)
            others = order[sentence_ids[order] != sentence_ids[i]]
            allowed = np.array([name != "babble" or len(others) > 0 for name in names])
            num_noises = int(rng.integers(1, min(config.max_noises, allowed.sum()) + 1))
            p = weights * allowed / (weights * allowed).sum()
            kinds = tuple(str(name) for name in rng.choice(names, size=num_noises, replace=False, p=p))
            num_talkers = min(len(others), int(rng.integers(BABBLE_TALKERS[0], BABBLE_TALKERS[1] + 1)))
            babble = tuple(uids[j] for j in others[:num_talkers]) if "babble" in kinds else ()
            spk, engine = utt_speakers[i], engines[i]
            pitch = base_pitch[spk] + rng.uniform(-8.0, 8.0) if engine == "espeak" else 0.0
            plan.append(
                Utterance(
                    uid=uids[i],
                    subset=subset,
                    sentence=sentences[i],
                    speaker=spk,
                    engine=engine,
                    voice=espeak_voice[spk] if engine == "espeak" else spk,
                    stretch=round(float(rng.uniform(*config.stretch_range)), 3),
                    pitch=int(np.clip(round(pitch), 0, 99)),
                    word_gap=int(rng.integers(0, 4)) if engine == "espeak" else 0,
                    seed=int(rng.integers(2**31)),
                    noises=kinds,
                    noise_gains_db=(0.0,) + tuple(float(g) for g in rng.uniform(-10.0, 0.0, num_noises - 1)),
                    noise_tilt=round(float(rng.uniform(*config.tilt_range)), 3),
                    snr_db=float(snr_of[i]),
                    level=round(float(rng.uniform(*config.level_range)), 4),
                    babble=babble,
                )
            )
    return plan


def trim_silence(x: np.ndarray, fs: int, top_db: float = 40.0, margin_s: float = 0.05) -> np.ndarray:
    """Cut leading/trailing 10 ms frames more than ``top_db`` below the loudest one, keeping a margin."""
    hop = fs // 100
    frames = x[: len(x) // hop * hop].reshape(-1, hop)
    energy_db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    active = np.flatnonzero(energy_db > energy_db.max() - top_db)
    margin = int(margin_s * fs)
    return x[max(0, active[0] * hop - margin) : (active[-1] + 1) * hop + margin]


def fit_duration(x: np.ndarray, rng: np.random.Generator, min_len: int, max_len: int) -> np.ndarray:
    """Crop a random window of ``max_len`` samples, or zero-pad at random sides to ``min_len``."""
    if len(x) > max_len:
        start = int(rng.integers(len(x) - max_len + 1))
        return x[start : start + max_len]
    if len(x) < min_len:
        before = int(rng.integers(min_len - len(x) + 1))
        return np.pad(x, (before, min_len - len(x) - before))
    return x


def synthesis_command(utt: Utterance, binary: str, out: Path) -> List[str]:
    """The flite or espeak-ng command line that speaks ``utt`` into the wav file ``out``."""
    if utt.engine == "flite":
        options = ["-voice", utt.voice, "--setf", f"duration_stretch={utt.stretch}", "-o", str(out)]
        return [binary, *options, "-t", utt.sentence]
    options = ["-v", utt.voice, "-s", str(round(ESPEAK_WPM / utt.stretch)), "-p", str(utt.pitch)]
    return [binary, *options, "-g", str(utt.word_gap), "-w", str(out), "--", utt.sentence]


def synthesize(utt: Utterance, binaries: Dict[str, str], config: CorpusConfig, workdir: Path) -> np.ndarray:
    """Clean speech of ``utt``: synthesized, resampled to ``config.fs``, trimmed and fitted: (T,) float32."""
    raw = workdir / f"{utt.uid}.wav"
    cmd = synthesis_command(utt, binaries[utt.engine], raw)
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or not raw.exists():
        raise RuntimeError(f"{utt.engine} failed for {utt.uid} ({' '.join(cmd)}): {result.stderr.strip()}")
    speech = read_audio(raw, config.fs)
    raw.unlink()
    noise.audible_rms(speech, f"{utt.engine} output for {utt.uid}")
    min_len, max_len = (int(round(seconds * config.fs)) for seconds in config.duration_range)
    fitted = fit_duration(trim_silence(speech, config.fs), np.random.default_rng([utt.seed, 0]), min_len, max_len)
    return fitted.astype(np.float32)  # thousands of clips are held in memory for the babble


def mix(
    utt: Utterance, speech: np.ndarray, talkers: Sequence[np.ndarray], fs: int
) -> Tuple[np.ndarray, np.ndarray]:
    """Noisy mixture of ``utt``; ``talkers`` are the clean babble sources.

    Returns:
        (clean, noisy), each (T,) float64, scaled together to the peak level ``utt.level``.
    """
    rng = np.random.default_rng([utt.seed, 1])
    speech = np.asarray(speech, dtype=np.float64)
    total = np.zeros(len(speech))
    for kind, gain_db in zip(utt.noises, utt.noise_gains_db):
        total += NOISES[kind](len(speech), rng, fs, talkers) * 10.0 ** (gain_db / 20.0)
    if utt.noise_tilt:
        total = noise.tilt(total, utt.noise_tilt, fs)
    noisy, _ = noise.mix_at_snr(speech, total, utt.snr_db)
    scale = utt.level / max(np.abs(noisy).max(), np.abs(speech).max())
    return speech * scale, noisy * scale


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished ``tmp`` to ``final``, replacing what was there."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _audio_path(audio_dir: Path, utt: Utterance, kind: str) -> Path:
    """Where the ``kind`` ("clean" or "noisy") audio of ``utt`` lives."""
    return audio_dir / utt.subset / kind / f"{utt.uid}.wav"


def write_subset(data_dir: Path, utts: Sequence[Utterance], audio_dir: Path) -> None:
    """Write the data dir of one subset: wav.scp, spk1.scp, utt2spk, spk2utt and text (the sentence)."""
    write_data_dir(
        data_dir,
        wav={u.uid: str(_audio_path(audio_dir, u, "noisy")) for u in utts},
        spk1={u.uid: str(_audio_path(audio_dir, u, "clean")) for u in utts},
        utt2spk={u.uid: u.speaker for u in utts},
    )
    write_scp(data_dir / "text", {u.uid: u.sentence for u in utts})


def is_built(config: CorpusConfig) -> bool:
    """Whether a finished build with exactly these options is in place."""
    stamp = Path(config.audio_dir) / STAMP
    if not stamp.is_file() or json.loads(stamp.read_text()) != config.stamp():
        return False
    names = ("wav.scp", "spk1.scp", "utt2spk", "spk2utt", "text")
    return all((Path(config.data_dir) / subset / name).is_file() for subset in SUBSETS for name in names)


def build_corpus(config: CorpusConfig, nj: int = 1) -> bool:
    """Build the corpus unless it is up to date. Returns True if it was (re)built.

    Args:
        config: what to build.
        nj: number of concurrent synthesis processes (and mixing threads).
    """
    if nj < 1:
        raise ValueError(f"--nj: expected at least 1, got {nj}")
    if is_built(config):
        logger.info(f"{config.audio_dir}: up to date with these options, skipping (remove {STAMP} to force)")
        return False
    engines = config.speakers_by_engine()
    binaries = {}
    if "flite" in engines:
        binaries["flite"] = find_flite(config.flite_voices)
    if "espeak" in engines:
        binaries["espeak"] = find_espeak(config.espeak_accents, config.espeak_variants)
    audio_dir, data_dir = Path(config.audio_dir), Path(config.data_dir)
    if audio_dir.exists() and not (audio_dir / MARKER).exists():
        raise ValueError(
            f"--audio_dir {audio_dir} exists but was not made by this module (no {MARKER}): move it away"
        )
    plan = plan_corpus(config)
    tmp = audio_dir.with_name(f"{audio_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / MARKER).touch()
    logger.info(f"synthesizing {len(plan)} utterances with {nj} processes")
    with tempfile.TemporaryDirectory(dir=tmp) as workdir, ThreadPoolExecutor(nj) as pool:
        # Threads suffice: the work is in synthesis subprocesses and in numpy/soxr, which release the GIL.
        clips = pool.map(lambda utt: synthesize(utt, binaries, config, Path(workdir)), plan)
        speech = {utt.uid: clip for utt, clip in zip(plan, clips)}

    def write(utt: Utterance) -> None:
        clean, noisy = mix(utt, speech[utt.uid], [speech[uid] for uid in utt.babble], config.fs)
        write_wav(_audio_path(tmp, utt, "clean"), clean, config.fs)
        write_wav(_audio_path(tmp, utt, "noisy"), noisy, config.fs)

    logger.info("mixing")
    with ThreadPoolExecutor(nj) as pool:
        list(pool.map(write, plan))  # every mixture draws from its own seed: any order gives the same audio
    _replace_dir(tmp, audio_dir)
    for subset in SUBSETS:
        write_subset(data_dir / subset, [u for u in plan if u.subset == subset], audio_dir)
    write_text_atomic(audio_dir / STAMP, json.dumps(config.stamp(), indent=1, sort_keys=True) + "\n")
    logger.info(
        f"wrote {', '.join(f'{data_dir / s} ({config.sizes[s]})' for s in SUBSETS)}; audio in {audio_dir}"
    )
    return True


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dispatch.corpora.mini_corpus",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data_dir", default="data", help="where data/<set>/ dirs are written")
    parser.add_argument("--audio_dir", default="data/local/mini_flite", help="where the wav files go")
    parser.add_argument(
        "--size",
        choices=sorted(SIZES),
        default="default",
        help="set sizes for the --num_* not given: "
        + "; ".join(f"{name}: {'/'.join(str(n) for n in sizes.values())}" for name, sizes in SIZES.items()),
    )
    parser.add_argument("--small", action="store_true", help="same as --size small (CI)")
    for subset in SUBSETS:
        parser.add_argument(f"--num_{subset}", type=int, help=f"{subset} utterances; None: from --size")
    parser.add_argument("--fs", type=int, default=16000, help="sampling rate of the written audio (Hz)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    parser.add_argument("--nj", type=int, default=2, help="concurrent synthesis processes")
    parser.add_argument("--flite_voices", default=",".join(DEFAULT_FLITE_VOICES), help="comma-separated")
    parser.add_argument("--espeak_accents", default=",".join(DEFAULT_ESPEAK_ACCENTS), help="comma-separated")
    parser.add_argument("--espeak_variants", default=",".join(DEFAULT_ESPEAK_VARIANTS), help="comma-separated")
    parser.add_argument(
        "--flite_share", type=float, default=0.4, help="share of utterances spoken by flite (1: flite only)"
    )
    parser.add_argument(
        "--heldout_speakers",
        type=float,
        default=0.2,
        help="share of flite voices and of espeak-ng variants heard only in test",
    )
    parser.add_argument(
        "--stretch_range",
        type=float,
        nargs=2,
        default=(0.8, 1.3),
        metavar=("LOW", "HIGH"),
        help="duration stretch range (speaking rate; larger is slower; espeak-ng: 170 wpm / stretch)",
    )
    parser.add_argument(
        "--pitch_range",
        type=float,
        nargs=2,
        default=(25.0, 75.0),
        metavar=("LOW", "HIGH"),
        help="espeak-ng base pitch of each speaker (-p, 0..99), plus an utterance offset of up to 8",
    )
    parser.add_argument(
        "--duration_range",
        type=float,
        nargs=2,
        default=(1.5, 4.0),
        metavar=("MIN", "MAX"),
        help="utterance length in seconds: longer speech is cropped, shorter zero-padded",
    )
    parser.add_argument(
        "--level_range",
        type=float,
        nargs=2,
        default=(0.1, 0.9),
        metavar=("LOW", "HIGH"),
        help="output level: peak of the louder of noisy/clean, in full scale, drawn uniformly",
    )
    parser.add_argument(
        "--train_snrs",
        default=",".join(f"{v:g}" for v in DEFAULT_TRAIN_SNRS),
        help="SNRs (dB) of train and valid, one drawn per mixture",
    )
    parser.add_argument(
        "--test_snrs", default=",".join(f"{v:g}" for v in DEFAULT_TEST_SNRS), help="SNRs (dB) of test"
    )
    parser.add_argument("--noises", default=DEFAULT_NOISES, help=f"name:weight,... from {sorted(NOISES)}")
    parser.add_argument("--max_noises", type=int, default=2, help="up to this many noise types per mixture")
    parser.add_argument(
        "--tilt_range",
        type=float,
        nargs=2,
        default=(1.0, 3.0),
        metavar=("LOW", "HIGH"),
        help="spectral tilt exponent of each mixture's noise, drawn uniformly (power ~ f^-tilt above 50 Hz:"
        " environmental noise is mostly low-frequency)",
    )
    parser.add_argument(
        "--num_sentences",
        type=int,
        default=2000,
        help=f"sentence pool: the {len(SENTENCES)} built-in ones, then template sentences",
    )
    parser.add_argument(
        "--test_fraction", type=float, default=0.2, help="share of sentences held out for test"
    )
    return parser


def config_from_args(args: argparse.Namespace) -> CorpusConfig:
    """The corpus options of parsed arguments, paths made absolute (they go into wav.scp)."""
    defaults = SIZES["small" if args.small else args.size]
    sizes = {s: getattr(args, f"num_{s}") for s in SUBSETS}
    sizes = {s: defaults[s] if n is None else n for s, n in sizes.items()}
    return CorpusConfig(
        data_dir=str(Path(args.data_dir).resolve()),
        audio_dir=str(Path(args.audio_dir).resolve()),
        sizes=sizes,
        fs=args.fs,
        seed=args.seed,
        flite_voices=parse_list(args.flite_voices, "flite_voices"),
        espeak_accents=parse_list(args.espeak_accents, "espeak_accents"),
        espeak_variants=parse_list(args.espeak_variants, "espeak_variants"),
        flite_share=args.flite_share,
        heldout_speakers=args.heldout_speakers,
        stretch_range=tuple(args.stretch_range),
        pitch_range=tuple(args.pitch_range),
        duration_range=tuple(args.duration_range),
        level_range=tuple(args.level_range),
        train_snrs=parse_list(args.train_snrs, "train_snrs", float),
        test_snrs=parse_list(args.test_snrs, "test_snrs", float),
        noises=parse_noises(args.noises),
        max_noises=args.max_noises,
        tilt_range=tuple(args.tilt_range),
        num_sentences=args.num_sentences,
        test_fraction=args.test_fraction,
    )


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s"
    )
    try:
        build_corpus(config_from_args(args), nj=args.nj)
    except (ValueError, RuntimeError) as e:
        sys.exit(f"{parser.prog}: error: {e}")


# Sentences: short (about 1.5-3 s when spoken), varied in words and phonemes, no two alike.
SENTENCES: Tuple[str, ...] = (
    "Please hand me the blue cup on the table.",
    "The train to the city leaves at noon.",
    "She planted tomatoes along the garden fence.",
    "A cold wind blew across the empty field.",
    "We need three more chairs for the meeting.",
    "The old bridge was closed for repairs.",
    "He forgot his umbrella at the bus stop.",
    "Turn left after the second traffic light.",
    "The children laughed at the clever puppet show.",
    "My brother fixed the bicycle with a wrench.",
    "Heavy rain is expected later this evening.",
    "The library opens at nine on weekdays.",
    "Could you send me the report by Friday?",
    "The cat slept all afternoon in the sun.",
    "They painted the kitchen a pale yellow.",
    "Fresh bread smells wonderful in the morning.",
    "The pilot announced a short delay.",
    "Our neighbors moved here from the coast.",
    "Keep the receipt in case it breaks.",
    "The river flooded the lower part of town.",
    "I bought a new pair of running shoes.",
    "The soup needs a little more salt.",
    "A small boat drifted slowly toward the shore.",
    "The museum has a large collection of maps.",
    "Write your name at the top of the page.",
    "The lights went out during the storm.",
    "We watched the sunset from the hill.",
    "The doctor asked him to rest for a week.",
    "Two ducks swam across the quiet pond.",
    "Her phone rang in the middle of the concert.",
    "The printer on the third floor is broken.",
    "Grandmother baked an apple pie for dinner.",
    "The students finished the exam early.",
    "Every morning he walks the dog by the lake.",
    "The store sells fruit, milk and cheese.",
    "A loud noise woke everyone in the house.",
    "The mountain road is narrow and steep.",
    "Please close the window before you leave.",
    "The team celebrated their first victory.",
    "I will call you when the package arrives.",
    "The farmer fed the horses before sunrise.",
    "Thick fog covered the harbor at dawn.",
    "The chef sliced the onions very thin.",
    "We counted the stars on a clear night.",
    "The meeting was moved to next Tuesday.",
    "He carried the heavy box up the stairs.",
    "The orchestra played a slow and gentle song.",
    "A yellow kite flew high above the beach.",
    "The bank is next to the post office.",
    "She reads the newspaper with her coffee.",
    "The engine made a strange rattling sound.",
    "Our flight was cancelled because of snow.",
    "The garden is full of roses in June.",
    "The teacher wrote the answer on the board.",
    "They built a fire to keep warm.",
    "The price of fuel went up again.",
    "A gray squirrel buried nuts under the oak.",
    "Remember to water the plants on Sunday.",
    "The hotel room had a view of the sea.",
    "He spilled orange juice on the carpet.",
    "The clock in the hall stopped at midnight.",
    "Many birds fly south in the autumn.",
    "The bus was crowded with tired workers.",
    "She found an old letter in the attic.",
    "Add two eggs and stir the mixture well.",
    "The parade marched slowly down Main Street.",
    "The glass vase fell and shattered.",
    "We rented a cabin near the forest.",
    "The lawyer read the contract carefully.",
    "Snow fell softly on the silent village.",
    "Wash your hands before you eat.",
    "The baby finally fell asleep at eight.",
    "A red truck blocked the narrow lane.",
    "The radio played music all night long.",
    "He lost his keys somewhere in the park.",
    "The baker opens his shop very early.",
    "Bright lanterns hung along the wooden pier.",
    "The nurse checked his pulse twice.",
    "They argued about the best way home.",
    "The computer needs a new battery.",
    "Honey tastes sweeter than sugar to me.",
    "The waves crashed against the rocks.",
    "My sister speaks four languages fluently.",
    "The firemen rescued a kitten from the tree.",
    "We ate lunch under a shady tree.",
    "The old man told stories about the war.",
    "The shop around the corner sells antiques.",
    "Put the milk back in the fridge.",
    "A sudden gust knocked over the sign.",
    "The painter mixed blue and white paint.",
    "The crowd cheered when the band appeared.",
    "He writes poems in a small notebook.",
    "The elevator stopped between two floors.",
    "The farmers hope for rain this summer.",
    "Lemons grow well in a warm climate.",
    "The guide pointed to the ancient ruins.",
    "Please speak a little more slowly.",
    "The soldiers marched through the valley.",
    "She tied a ribbon around the gift.",
    "The queen waved from the royal carriage.",
    "The dog barked at the mail carrier.",
    "Coffee keeps me awake late at night.",
    "The wooden floor creaked under his feet.",
    "The plane landed safely despite the wind.",
    "Our cousins visit us every summer.",
    "The fisherman caught a large silver trout.",
    "He repaired the roof before winter.",
    "The candle flickered in the dark room.",
    "A map of the world hung on the wall.",
    "The kids built a castle in the sand.",
    "The train was twenty minutes late today.",
    "She poured hot tea into two cups.",
    "The scientist measured the water carefully.",
    "The streets were quiet on Sunday morning.",
    "Hang your coat on the hook by the door.",
    "The jury reached a decision after lunch.",
    "A swarm of bees buzzed near the hive.",
    "The carpenter sanded the table smooth.",
    "The actors bowed as the curtain fell.",
    "He jogged five miles before breakfast.",
    "The tea kettle whistled on the stove.",
    "Green leaves turned golden in October.",
    "The boat rocked gently in the harbor.",
    "The cashier counted the change twice.",
    "Strong coffee and toast make a good breakfast.",
    "The hikers reached the summit by noon.",
    "Thunder rolled across the distant hills.",
    "Bring a sweater in case it gets cold.",
    "The puppy chewed the corner of the rug.",
    "The mayor opened the new city park.",
    "Ice cream melts quickly in the heat.",
    "The singer forgot the words of the song.",
    "Our school has a large sports field.",
    "The mechanic changed the oil and the tires.",
    "A thin crack ran along the ceiling.",
    "The owl hooted from the top of the barn.",
    "The market is busy on Saturday mornings.",
    "He whistled a tune while he worked.",
    "The moon rose slowly over the lake.",
    "Please pass the salt and pepper.",
    "The trumpet player practiced every evening.",
    "The picnic basket was full of sandwiches.",
    "The ship sailed north through the ice.",
    "Dry leaves crunched beneath our boots.",
    "The secretary typed the letter quickly.",
    "Nobody knew the answer to the riddle.",
    "The frogs sang loudly after the rain.",
    "The chess game lasted almost three hours.",
    "A warm blanket lay folded on the bed.",
    "The workers paved the road in one day.",
    "The violin sounded sweet and clear.",
)



# Template sentences (subject + action + ending, about 6-10 words): 40 x 40 x 40 combinations, from which
# sentence_pool draws with a fixed seed. Every part reads naturally with every other.
TEMPLATE_SUBJECTS: Tuple[str, ...] = (
    "the old farmer", "my younger sister", "a tall stranger", "the new teacher", "our neighbor",
    "the tired driver", "a quiet student", "the hotel manager", "her best friend", "the local baker",
    "a young doctor", "the city mayor", "his uncle", "the night nurse", "a clever lawyer",
    "the shy painter", "our coach", "the museum guide", "a busy mechanic", "the kind librarian",
    "my grandfather", "the ship captain", "a retired pilot", "the head chef", "their daughter",
    "the park ranger", "a famous singer", "the bus conductor", "my cousin", "the village priest",
    "a nervous actor", "the bank clerk", "our landlord", "the young soldier", "a friendly waiter",
    "the gardener", "his mother", "the radio host", "a careful builder", "the team captain",
)  # fmt: skip
TEMPLATE_ACTIONS: Tuple[str, ...] = (
    "painted the fence", "found a wallet", "bought fresh bread", "fixed the radio", "lost the keys",
    "wrote a long letter", "cleaned the kitchen", "sold the old car", "carried two boxes",
    "read the morning paper", "missed the last train", "opened the window", "cooked a large meal",
    "planted some roses", "broke a glass", "called the office", "borrowed a ladder", "washed the dishes",
    "locked the gate", "moved the piano", "ordered more coffee", "climbed the hill", "fed the chickens",
    "visited the market", "lit a candle", "packed a small bag", "sang a sad song", "counted the money",
    "repaired the roof", "drew a map", "crossed the river", "checked the engine", "hid the present",
    "folded the blankets", "answered the phone", "watered the garden", "sharpened the knives",
    "tuned the guitar", "closed the shop", "rang the bell",
)  # fmt: skip
TEMPLATE_ENDINGS: Tuple[str, ...] = (
    "before dinner", "after the storm", "on Monday morning", "in the rain", "near the station",
    "late last night", "at the weekend", "during the break", "before sunrise", "without a word",
    "in a hurry", "after lunch", "on the way home", "by the river", "at the end of the day",
    "for the first time", "in the cold", "before the guests arrived", "while it was snowing",
    "on a sunny afternoon", "next to the church", "last Thursday", "in the dark", "behind the barn",
    "at half past seven", "with great care", "in the spring", "after school", "before the meeting",
    "under the bridge", "in the old town", "on her birthday", "at the harbor", "twice a week",
    "all by himself", "in the early evening", "after the concert", "on the top floor",
    "near the border", "before the holidays",
)  # fmt: skip


if __name__ == "__main__":
    main()
