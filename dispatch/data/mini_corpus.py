"""Mini enhancement corpus: flite speech mixed with generated noise, as Kaldi-style data dirs.

Built on the machine in well under a minute, for the egs2/mini_flite recipe and for tests. Sentences
(built in, below) are split once: a held-out share is used only by the test set. Each utterance is one
sentence spoken by one flite voice at a random speaking rate, trimmed of silence and fitted to the
duration range, then mixed with one or more generated noises (:mod:`dispatch.data.noise`) at a random
SNR. Everything is drawn from ``--seed``; results do not depend on ``--nj``.

Written::

    <audio_dir>/<set>/clean/<uid>.wav, <audio_dir>/<set>/noisy/<uid>.wav   16-bit PCM at --fs
    <audio_dir>/mini_corpus.json     stamp: the options of the finished build
    <data_dir>/<set>/{wav.scp, spk1.scp, utt2spk, spk2utt, text}          for set in train, valid, test

``wav.scp`` holds the noisy input, ``spk1.scp`` the clean reference; speaker ids are voice names and
prefix the utterance ids. A rerun with the same options does nothing; other options rebuild everything.
Audio is written to ``<audio_dir>.tmp`` and renamed when complete, list files atomically, and the stamp
last, so an interrupted build is redone from scratch.

Usage::

    python -m dispatch.data.mini_corpus --data-dir data --audio-dir data/local/mini_flite --nj 2
"""

from __future__ import annotations

import argparse
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

from dispatch.data import noise
from dispatch.data.atomic import write_text_atomic
from dispatch.data.audio import read_audio, write_wav
from dispatch.data.datadir import write_data_dir, write_scp

logger = logging.getLogger(__name__)

SUBSETS = ("train", "valid", "test")
DEFAULT_SIZES = {"train": 400, "valid": 50, "test": 60}
SMALL_SIZES = {"train": 24, "valid": 6, "test": 8}
DEFAULT_VOICES = ("slt", "rms", "awb", "kal16", "kal")
DEFAULT_NOISES = "babble:3,modulated:2,pink:1,white:1,brown:1,hum:1,clicks:1"
BABBLE_TALKERS = (4, 8)  # enough talkers that none stands out against a target at low SNR
PEAK_RANGE = (0.3, 0.9)  # output level: peak of the louder of noisy/clean, in full scale
STAMP = "mini_corpus.json"
MARKER = ".mini_corpus"  # marks an audio dir this module may delete when it rebuilds
FORMAT = 1  # bump when the same options would give different audio

NoiseMaker = Callable[[int, np.random.Generator, int, Sequence[np.ndarray]], np.ndarray]
NOISES: Dict[str, NoiseMaker] = {
    "white": lambda n, rng, fs, talkers: noise.white(n, rng),
    "pink": lambda n, rng, fs, talkers: noise.pink(n, rng, fs),
    "brown": lambda n, rng, fs, talkers: noise.brown(n, rng, fs),
    "babble": lambda n, rng, fs, talkers: noise.babble(talkers, n, rng),
    "hum": lambda n, rng, fs, talkers: noise.hum(n, rng, fs),
    "clicks": lambda n, rng, fs, talkers: noise.clicks(n, rng, fs),
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
    voices: Tuple[str, ...]
    stretch_range: Tuple[float, float]
    duration_range: Tuple[float, float]
    snr_range: Tuple[float, float]
    noises: Tuple[Tuple[str, float], ...]
    max_noises: int
    test_fraction: float

    def __post_init__(self) -> None:
        def check(ok: bool, option: str, expected: str, got: object) -> None:
            if not ok:
                raise ValueError(f"--{option}: expected {expected}, got {got}")

        check(set(self.sizes) == set(SUBSETS), "num-*", f"sizes for {SUBSETS}", self.sizes)
        for subset, size in self.sizes.items():
            check(size >= 1, f"num-{subset}", "at least 1 utterance", size)
        check(8000 <= self.fs <= 48000, "fs", "a rate in 8000..48000 Hz", self.fs)
        check(len(self.voices) > 0, "voices", "at least one voice", self.voices)
        low, high = self.stretch_range
        check(0.3 <= low <= high <= 3.0, "stretch-range", "0.3 <= low <= high <= 3", self.stretch_range)
        low, high = self.duration_range
        check(0.5 <= low <= high, "duration-range", "0.5 <= min <= max seconds", self.duration_range)
        check(self.snr_range[0] <= self.snr_range[1], "snr-range", "low <= high", self.snr_range)
        check(len(self.noises) > 0, "noises", "at least one noise", self.noises)
        check(1 <= self.max_noises <= len(self.noises), "max-noises", "1..number of noises", self.max_noises)
        check(0.0 < self.test_fraction < 1.0, "test-fraction", "a fraction in (0, 1)", self.test_fraction)

    def stamp(self) -> dict:
        """JSON-comparable description of the build."""
        return json.loads(json.dumps({"format": FORMAT, **asdict(self)}))


@dataclass(frozen=True)
class Utterance:
    """Recipe for one mixture; every random choice is made when planning."""

    uid: str
    subset: str
    sentence: str
    voice: str
    stretch: float
    seed: int
    noises: Tuple[str, ...]
    noise_gains_db: Tuple[float, ...]  # relative level of each noise before the SNR is set
    snr_db: float
    babble: Tuple[str, ...]  # uids of the same subset whose clean speech forms the babble


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
        raise ValueError(f"--voices: flite ({flite}) has no voice {missing}; it has {available}")
    return flite


def split_sentences(seed: int, test_fraction: float) -> Tuple[List[str], List[str]]:
    """Split the built-in sentences into (train/valid pool, held-out test pool)."""
    order = np.random.default_rng([seed, 0]).permutation(len(SENTENCES))
    num_test = max(1, round(test_fraction * len(SENTENCES)))
    return [SENTENCES[i] for i in order[num_test:]], [SENTENCES[i] for i in order[:num_test]]


def _spread(items: Sequence, count: int, rng: np.random.Generator) -> list:
    """``count`` items using each about equally often, in random order."""
    reps = -(-count // len(items))
    return [items[i] for i in rng.permutation(np.tile(np.arange(len(items)), reps))[:count]]


def plan_corpus(config: CorpusConfig) -> List[Utterance]:
    """Draw every random choice of the corpus (sentences, voices, rates, noises, SNRs, seeds)."""
    train_pool, test_pool = split_sentences(config.seed, config.test_fraction)
    names = [name for name, _ in config.noises]
    weights = np.array([weight for _, weight in config.noises])
    plan = []
    for k, subset in enumerate(SUBSETS):
        rng = np.random.default_rng([config.seed, 1, k])
        count = config.sizes[subset]
        sentences = _spread(test_pool if subset == "test" else train_pool, count, rng)
        voices = _spread(config.voices, count, rng)
        uids = [f"{voice}-{subset}{i:04d}" for i, voice in enumerate(voices)]
        for i in range(count):
            others = [uid for uid, sentence in zip(uids, sentences) if sentence != sentences[i]]
            # Without other sentences in the subset (tiny sets) babble cannot be made: draw without it.
            allowed = np.array([name != "babble" or bool(others) for name in names])
            num_noises = int(rng.integers(1, min(config.max_noises, allowed.sum()) + 1))
            p = weights * allowed / (weights * allowed).sum()
            kinds = tuple(str(name) for name in rng.choice(names, size=num_noises, replace=False, p=p))
            num_talkers = min(len(others), int(rng.integers(BABBLE_TALKERS[0], BABBLE_TALKERS[1] + 1)))
            babble = tuple(rng.choice(others, size=num_talkers, replace=False)) if "babble" in kinds else ()
            plan.append(
                Utterance(
                    uid=uids[i],
                    subset=subset,
                    sentence=sentences[i],
                    voice=voices[i],
                    stretch=round(float(rng.uniform(*config.stretch_range)), 3),
                    seed=int(rng.integers(2**31)),
                    noises=kinds,
                    noise_gains_db=(0.0,) + tuple(float(g) for g in rng.uniform(-10.0, 0.0, num_noises - 1)),
                    snr_db=float(rng.uniform(*config.snr_range)),
                    babble=tuple(str(uid) for uid in babble),
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


def synthesize(utt: Utterance, flite: str, config: CorpusConfig, workdir: Path) -> np.ndarray:
    """Clean speech of ``utt``: flite, resampled to ``config.fs``, trimmed and fitted: (T,) float64."""
    raw = workdir / f"{utt.uid}.wav"
    options = ["-voice", utt.voice, "--setf", f"duration_stretch={utt.stretch}", "-o", str(raw)]
    cmd = [flite, *options, "-t", utt.sentence]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or not raw.exists():
        raise RuntimeError(f"flite failed for {utt.uid} ({' '.join(cmd)}): {result.stderr.strip()}")
    speech = read_audio(raw, config.fs)
    raw.unlink()
    noise.audible_rms(speech, f"flite output for {utt.uid}")
    min_len, max_len = (int(round(seconds * config.fs)) for seconds in config.duration_range)
    return fit_duration(
        trim_silence(speech, config.fs), np.random.default_rng([utt.seed, 0]), min_len, max_len
    )


def mix(
    utt: Utterance, speech: np.ndarray, talkers: Sequence[np.ndarray], fs: int
) -> Tuple[np.ndarray, np.ndarray]:
    """Noisy mixture of ``utt``; ``talkers`` are the clean babble sources.

    Returns:
        (clean, noisy), each (T,) float64, scaled together to a random peak level below full scale.
    """
    rng = np.random.default_rng([utt.seed, 1])
    total = np.zeros(len(speech))
    for kind, gain_db in zip(utt.noises, utt.noise_gains_db):
        total += NOISES[kind](len(speech), rng, fs, talkers) * 10.0 ** (gain_db / 20.0)
    noisy, _ = noise.mix_at_snr(speech, total, utt.snr_db)
    scale = rng.uniform(*PEAK_RANGE) / max(np.abs(noisy).max(), np.abs(speech).max())
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
        utt2spk={u.uid: u.voice for u in utts},
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
        nj: number of concurrent flite processes.
    """
    if nj < 1:
        raise ValueError(f"--nj: expected at least 1, got {nj}")
    if is_built(config):
        logger.info(f"{config.audio_dir}: up to date with these options, skipping (remove {STAMP} to force)")
        return False
    flite = find_flite(config.voices)
    audio_dir, data_dir = Path(config.audio_dir), Path(config.data_dir)
    if audio_dir.exists() and not (audio_dir / MARKER).exists():
        raise ValueError(
            f"--audio-dir {audio_dir} exists but was not made by this module (no {MARKER}): move it away"
        )
    plan = plan_corpus(config)
    tmp = audio_dir.with_name(f"{audio_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / MARKER).touch()
    logger.info(f"synthesizing {len(plan)} utterances with {nj} flite processes")
    with tempfile.TemporaryDirectory(dir=tmp) as workdir, ThreadPoolExecutor(nj) as pool:
        # Threads suffice: the work is in flite subprocesses and in numpy/soxr, which release the GIL.
        clips = pool.map(lambda utt: synthesize(utt, flite, config, Path(workdir)), plan)
        speech = {utt.uid: clip for utt, clip in zip(plan, clips)}
    for utt in plan:
        clean, noisy = mix(utt, speech[utt.uid], [speech[uid] for uid in utt.babble], config.fs)
        write_wav(_audio_path(tmp, utt, "clean"), clean, config.fs)
        write_wav(_audio_path(tmp, utt, "noisy"), noisy, config.fs)
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
        prog="python -m dispatch.data.mini_corpus",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data-dir", default="data", help="where data/<set>/ dirs are written")
    parser.add_argument("--audio-dir", default="data/local/mini_flite", help="where the wav files go")
    for subset in SUBSETS:
        parser.add_argument(
            f"--num-{subset}",
            type=int,
            help=f"{subset} utterances; None: {DEFAULT_SIZES[subset]}, or {SMALL_SIZES[subset]} with --small",
        )
    parser.add_argument("--small", action="store_true", help="CI-size defaults for the --num-* options")
    parser.add_argument("--fs", type=int, default=16000, help="sampling rate of the written audio (Hz)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    parser.add_argument("--nj", type=int, default=2, help="concurrent flite processes")
    parser.add_argument("--voices", default=",".join(DEFAULT_VOICES), help="comma-separated flite voices")
    parser.add_argument(
        "--stretch-range",
        type=float,
        nargs=2,
        default=(0.8, 1.3),
        metavar=("LOW", "HIGH"),
        help="flite duration_stretch range (speaking rate; larger is slower)",
    )
    parser.add_argument(
        "--duration-range",
        type=float,
        nargs=2,
        default=(1.5, 3.0),
        metavar=("MIN", "MAX"),
        help="utterance length in seconds: longer speech is cropped, shorter zero-padded",
    )
    parser.add_argument(
        "--snr-range",
        type=float,
        nargs=2,
        default=(-5.0, 5.0),
        metavar=("LOW", "HIGH"),
        help="SNR range in dB, drawn uniformly",
    )
    parser.add_argument("--noises", default=DEFAULT_NOISES, help=f"name:weight,... from {sorted(NOISES)}")
    parser.add_argument("--max-noises", type=int, default=2, help="up to this many noise types per mixture")
    parser.add_argument(
        "--test-fraction", type=float, default=0.2, help="share of sentences held out for test"
    )
    return parser


def config_from_args(args: argparse.Namespace) -> CorpusConfig:
    """The corpus options of parsed arguments, paths made absolute (they go into wav.scp)."""
    defaults = SMALL_SIZES if args.small else DEFAULT_SIZES
    sizes = {s: getattr(args, f"num_{s}") for s in SUBSETS}
    sizes = {s: defaults[s] if n is None else n for s, n in sizes.items()}
    return CorpusConfig(
        data_dir=str(Path(args.data_dir).resolve()),
        audio_dir=str(Path(args.audio_dir).resolve()),
        sizes=sizes,
        fs=args.fs,
        seed=args.seed,
        voices=tuple(v for v in args.voices.split(",") if v),
        stretch_range=tuple(args.stretch_range),
        duration_range=tuple(args.duration_range),
        snr_range=tuple(args.snr_range),
        noises=parse_noises(args.noises),
        max_noises=args.max_noises,
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


if __name__ == "__main__":
    main()
