"""DNS Challenge (Interspeech 2020): synthesize training mixtures, prepare Kaldi data dirs.

``root`` is a checkout of https://github.com/microsoft/DNS-Challenge, branch ``interspeech2020/master``
(with its Git LFS audio pulled)::

    datasets/clean/*.wav         Librivox clips, e.g. book_00000_chp_0009_reader_06709_0.wav
    datasets/noise/*.wav         Audioset/Freesound noise clips
    datasets/test_set/synthetic/{no_reverb,with_reverb}/
        noisy/<clean>_<noise>_snr<S>_tl<L>_fileid_<N>.wav     150 files each
        clean/clean_fileid_<N>.wav

``synthesize`` re-implements the challenge's noisyspeech_synthesizer (single-process version, the
``snr_mixer`` path) with the settings of its ``noisyspeech_synthesizer.cfg`` on that branch. As there,
integer SNRs and levels are drawn from half-open ranges ([0, 40) dB, [-35, -15) dBFS), and a mixture is
built from consecutive clips. Unlike there, each mixture ``N`` draws from its own generator seeded by
``(seed, N)`` and starts at a random clip (the challenge walks one shuffled list), so the output does not
depend on the number of processes and an interrupted run resumes where it stopped. Clean and noise clips
are taken from one flat list each (the challenge can also pick a noise category first). Files are named
as the challenge names them::

    <wav_dir>/noisy/<clean sources>_<noise sources>_snr<S>_tl<L>_fileid_<N>.wav
    <wav_dir>/clean/clean_fileid_<N>.wav    <wav_dir>/noise/noise_fileid_<N>.wav

``prepare`` writes data dirs named as in ESPnet's egs2/dns_ins20/enh1: ``tr_synthetic`` and
``cv_synthetic`` (first 90 % / last 10 % of the mixtures sorted by utterance id
``reader_<R>_fileid_<N>``, with ``noise1.scp``), ``tt_synthetic_no_reverb`` and
``tt_synthetic_with_reverb`` (utterance id ``fileid_<N>``, noisy and clean paired by ``N``).
"""
from __future__ import annotations

import argparse
import json
import re
from dataclasses import asdict, dataclass
from multiprocessing import Pool
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from espnet2.utils.types import str2bool

from dispatch.corpora.common import (
    CorpusError,
    check_count,
    check_first_audio,
    list_wavs,
    run_main,
    to_pcm16,
    validate_sets,
)
from dispatch.data.atomic import write_text_atomic
from dispatch.data.audio import read_audio, write_wav
from dispatch.data.datadir import write_data_dir

BRANCH = "interspeech2020/master"
TEST_CONDITIONS = ("no_reverb", "with_reverb")
NUM_TEST = 150
TRAIN_SET, VALID_SET = "tr_synthetic", "cv_synthetic"
MAX_TRIES = 50  # clipped source files skipped, or signals rebuilt, before giving up (as the challenge)
MAX_NAME_LEN = 100  # source names kept in a mixture's file name (as the challenge)
CLIP_LEVEL = 0.99
EPS = np.finfo(float).eps
STAMP = "synthesis.json"
_FILEID = re.compile(r"_fileid_(\d+)\.wav$")
_READER = re.compile(r"reader_(\d+)")


@dataclass(frozen=True)
class SynthesisConfig:
    """Mixture settings; defaults are noisyspeech_synthesizer.cfg of the interspeech2020 branch."""

    fs: int = 16000
    audio_length: float = 30.0  # seconds per mixture
    silence_length: float = 0.2  # seconds between concatenated source clips
    total_hours: float = 100.0
    snr_lower: int = 0
    snr_upper: int = 40
    target_level_lower: int = -35
    target_level_upper: int = -15
    clean_activity_threshold: float = 0.6
    noise_activity_threshold: float = 0.0
    seed: int = 0

    @property
    def num_files(self) -> int:
        return int(self.total_hours * 3600 / self.audio_length)

    @property
    def num_samples(self) -> int:
        return int(self.audio_length * self.fs)


# ---------------------------------------------------------------------------------------------- checks


def _expected(what: str) -> str:
    return f"{what} of a DNS-Challenge checkout (branch {BRANCH}; set DNS2020 in db.sh)"


def source_files(root: Path) -> Tuple[List[Path], List[Path]]:
    """Clean and noise clips of the checkout, checked for Git LFS pointers."""
    lists = []
    for kind in ("clean", "noise"):
        folder = root / "datasets" / kind
        files = list_wavs(folder, _expected(f"the {kind} clips"))
        check_first_audio(folder, files)
        lists.append(files)
    return lists[0], lists[1]


# ---------------------------------------------------------------------------------------- synthesis


def is_clipped(x: np.ndarray) -> bool:
    """Whether any sample exceeds the challenge's clipping level (0.99)."""
    return bool(np.any(np.abs(x) > CLIP_LEVEL))


def normalize(x: np.ndarray, level_db: float = -25.0) -> np.ndarray:
    """Scale ``x`` to an RMS of ``level_db`` dBFS."""
    return x * (10 ** (level_db / 20) / (np.sqrt(np.mean(x**2)) + EPS))


def active_fraction(x: np.ndarray, fs: int) -> float:
    """Fraction of 50 ms frames the challenge's ``activitydetector`` counts as active.

    Energies of -25 dBFS-normalized frames go through a logistic curve and a rise/fall smoother which,
    as in the challenge, mixes each frame's probability with the previous frame's raw probability.
    """
    hop = int(fs * 0.05)
    x = normalize(x)
    # The challenge calls this "frame_rms", but takes 20 log10 of the frame's energy (sum of squares).
    energy_db = 20 * np.log10(np.add.reduceat(x**2, np.arange(0, len(x), hop)) + EPS)
    prob = 1.0 / (1.0 + np.exp(-(-1.0 + 0.2 * energy_db)))
    prev = np.concatenate([[0.0], prob[:-1]])
    alpha = np.where(prob > prev, 0.8, 0.05)
    smoothed = prob * alpha + prev * (1 - alpha)
    return float(np.mean(smoothed > 0.13))


def build_signal(
    files: Sequence[Path], rng: np.random.Generator, num_samples: int, cfg: SynthesisConfig
) -> Tuple[np.ndarray, List[Path]]:
    """Concatenate consecutive clips (from a random start) with silences, to ``num_samples``.

    A clip longer than what is still missing is cut at a random offset; clipped clips are skipped.

    Raises:
        CorpusError: after MAX_TRIES clipped clips.
    """
    silence = np.zeros(int(cfg.fs * cfg.silence_length))
    pieces, used, remaining, tries = [], [], num_samples, MAX_TRIES
    idx = int(rng.integers(len(files)))
    while remaining > 0:
        idx = (idx + 1) % len(files)
        audio = read_audio(files[idx], cfg.fs)
        audio = audio.mean(axis=1) if audio.ndim > 1 else audio
        if len(audio) > remaining:
            start = int(rng.integers(len(audio) - remaining))
            audio = audio[start : start + remaining]
        if is_clipped(audio):
            tries -= 1
            if tries == 0:
                raise CorpusError(f"{files[idx].parent}: {MAX_TRIES} clipped clips in a row")
            continue
        pieces += [audio, silence[: max(0, min(remaining - len(audio), len(silence)))]]
        used.append(files[idx])
        remaining -= len(audio) + len(pieces[-1])
    return np.concatenate(pieces), used


def active_signal(
    files: Sequence[Path], rng: np.random.Generator, num_samples: int, threshold: float, cfg: SynthesisConfig
) -> Tuple[np.ndarray, List[Path]]:
    """:func:`build_signal` until the result is active above ``threshold`` (0 accepts anything)."""
    for _ in range(MAX_TRIES):
        audio, used = build_signal(files, rng, num_samples, cfg)
        if threshold == 0.0 or active_fraction(audio, cfg.fs) > threshold:
            return audio, used
    raise CorpusError(f"{files[0].parent}: no signal active above {threshold} in {MAX_TRIES} tries")


def snr_mix(
    clean: np.ndarray, noise: np.ndarray, snr: float, level_db: float
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The challenge's ``snr_mixer``: mix at ``snr`` dB, scale the mixture to ``level_db`` dBFS RMS.

    Both signals are peak- then RMS-normalized to -25 dBFS before the noise is scaled. If the mixture
    then exceeds the clipping level, all three signals are scaled down together and the reported level
    is recomputed.

    Returns:
        (clean, noise, noisy, level in dBFS), all signals of equal length.
    """
    length = max(len(clean), len(noise))
    clean, noise = (np.pad(x, (0, length - len(x))) for x in (clean, noise))
    clean = normalize(clean / (np.max(np.abs(clean)) + EPS))
    noise = normalize(noise / (np.max(np.abs(noise)) + EPS))
    rms_clean, rms_noise = np.sqrt(np.mean(clean**2)), np.sqrt(np.mean(noise**2))
    noise = noise * rms_clean / (10 ** (snr / 20)) / (rms_noise + EPS)
    noisy = clean + noise
    rms_noisy = np.sqrt(np.mean(noisy**2))
    gain = 10 ** (level_db / 20) / (rms_noisy + EPS)
    level = int(level_db)
    if is_clipped(noisy * gain):
        gain *= (CLIP_LEVEL - EPS) / np.max(np.abs(noisy * gain))
        level = int(20 * np.log10(gain * (rms_noisy + EPS)))
    return clean * gain, noise * gain, noisy * gain, level


def _joined_names(files: Sequence[Path]) -> str:
    return "-".join(f.stem for f in files)[:MAX_NAME_LEN]


def synthesize_one(
    fileid: int, clean_files: Sequence[Path], noise_files: Sequence[Path], out: Path, cfg: SynthesisConfig
) -> None:
    """Write noisy, clean and noise files of mixture ``fileid`` (noisy last: it marks completion)."""
    rng = np.random.default_rng((cfg.seed, fileid))
    for _ in range(MAX_TRIES):
        clean, clean_used = active_signal(
            clean_files, rng, cfg.num_samples, cfg.clean_activity_threshold, cfg
        )
        noise, noise_used = active_signal(noise_files, rng, len(clean), cfg.noise_activity_threshold, cfg)
        snr = int(rng.integers(cfg.snr_lower, cfg.snr_upper))
        level = int(rng.integers(cfg.target_level_lower, cfg.target_level_upper))
        clean, noise, noisy, level = snr_mix(clean, noise, snr, level)
        if not (is_clipped(clean) or is_clipped(noise) or is_clipped(noisy)):
            break
    else:
        raise CorpusError(f"mixture {fileid}: clipped in {MAX_TRIES} tries")
    clean_path, noise_path = _references(out, fileid)
    write_wav(clean_path, clean, cfg.fs)
    write_wav(noise_path, noise, cfg.fs)
    name = f"{_joined_names(clean_used)}_{_joined_names(noise_used)}_snr{snr}_tl{level}_fileid_{fileid}"
    write_wav(out / "noisy" / f"{name}.wav", noisy, cfg.fs)


_WORKER: Dict[str, object] = {}


def _init_worker(clean_files: List[Path], noise_files: List[Path], out: Path, cfg: SynthesisConfig) -> None:
    _WORKER.update(clean=clean_files, noise=noise_files, out=out, cfg=cfg)


def _synthesize_in_worker(fileid: int) -> None:
    synthesize_one(fileid, _WORKER["clean"], _WORKER["noise"], _WORKER["out"], _WORKER["cfg"])


def _by_fileid(folder: Path) -> Dict[int, Path]:
    """fileid -> file of ``folder`` named ``*_fileid_<N>.wav``; CorpusError for another name or a repeat."""
    files: Dict[int, Path] = {}
    for wav in sorted(folder.glob("*.wav")) if folder.is_dir() else []:
        match = _FILEID.search(wav.name)
        if not match:
            raise CorpusError(f"{wav}: unexpected file name; expected <...>_fileid_<N>.wav")
        fileid = int(match.group(1))
        if fileid in files:
            raise CorpusError(f"{wav}: fileid {fileid} also in {files[fileid].name}")
        files[fileid] = wav
    return files


def _references(out: Path, fileid: int) -> Tuple[Path, Path]:
    """Clean and noise files of mixture ``fileid`` under ``out``."""
    return out / "clean" / f"clean_fileid_{fileid}.wav", out / "noise" / f"noise_fileid_{fileid}.wav"


def finished_mixtures(out: Path) -> List[int]:
    """File ids whose noisy, clean and noise files all exist under ``out``."""
    noisy = _by_fileid(out / "noisy")
    return sorted(i for i in noisy if all(p.exists() for p in _references(out, i)))


def synthesize(root: Path, out: Path, cfg: SynthesisConfig, nj: int = 1) -> None:
    """Synthesize ``cfg.num_files`` mixtures under ``out``; skip those already finished.

    ``out/synthesis.json`` records the settings (and the checkout, for information); rerunning into
    ``out`` with other settings is an error.
    """
    clean_files, noise_files = source_files(root)
    stamp = {"config": asdict(cfg), "root": str(root.resolve())}
    stamp_file = out / STAMP
    if stamp_file.exists() and json.loads(stamp_file.read_text())["config"] != stamp["config"]:
        raise CorpusError(
            f"{stamp_file}: {out} was synthesized with other settings; remove it or choose another folder"
        )
    write_text_atomic(stamp_file, json.dumps(stamp, indent=2) + "\n")
    todo = sorted(set(range(cfg.num_files)) - set(finished_mixtures(out)))
    print(f"Synthesizing {len(todo)} of {cfg.num_files} mixtures into {out}", flush=True)
    context = (clean_files, noise_files, out, cfg)
    if nj <= 1:
        _init_worker(*context)
        for fileid in todo:
            _synthesize_in_worker(fileid)
    else:
        with Pool(nj, initializer=_init_worker, initargs=context) as pool:
            for _ in pool.imap_unordered(_synthesize_in_worker, todo, chunksize=8):
                pass


# -------------------------------------------------------------------------------------- data dirs


def _training_utt_id(noisy: Path, fileid: int) -> Tuple[str, str]:
    """(utterance id, speaker) of a synthesized mixture: ``reader_<R>_fileid_<N>``, as ESPnet names it."""
    reader = _READER.search(noisy.name)
    if reader is None:  # sources without Librivox names: each mixture is its own speaker
        return f"fileid_{fileid}", f"fileid_{fileid}"
    speaker = f"reader_{reader.group(1)}"
    return f"{speaker}_fileid_{fileid}", speaker


def prepare_training_sets(out: Path, data_root: Path, strict: bool) -> List[str]:
    """Write ``tr_synthetic`` / ``cv_synthetic`` from the mixtures in ``out``.

    As in ESPnet's dns_ins20, the first 90 % of the utterance ids (sorted) train, the rest validate. With
    ``strict``, all mixtures that ``out/synthesis.json`` asked for must be there.
    """
    noisy = _by_fileid(out / "noisy")
    if not noisy:
        raise CorpusError(f"{out / 'noisy'}: no mixtures *_fileid_<N>.wav; run the synthesis stage first")
    stamp_file = out / STAMP
    if stamp_file.exists():
        expected = SynthesisConfig(**json.loads(stamp_file.read_text())["config"]).num_files
        check_count(out / "noisy", len(noisy), expected, strict)
    lists: Dict[str, Dict[str, str]] = {"wav.scp": {}, "spk1.scp": {}, "noise1.scp": {}, "utt2spk": {}}
    for fileid, noisy_path in noisy.items():
        utt, speaker = _training_utt_id(noisy_path, fileid)
        clean_path, noise_path = _references(out, fileid)
        for name, path in (("wav.scp", noisy_path), ("spk1.scp", clean_path), ("noise1.scp", noise_path)):
            if not path.is_file():
                raise CorpusError(f"{path}: missing (partner of {noisy_path})")
            lists[name][utt] = str(path.resolve())
        lists["utt2spk"][utt] = speaker
    utts = sorted(lists["wav.scp"])
    num_train = len(utts) * 9 // 10
    for name, subset in ((TRAIN_SET, utts[:num_train]), (VALID_SET, utts[num_train:])):
        if not subset:
            raise CorpusError(f"{out}: too few mixtures ({len(utts)}) to split into train and valid")
        part = {list_name: {u: entries[u] for u in subset} for list_name, entries in lists.items()}
        write_data_dir(
            data_root / name,
            wav=part["wav.scp"],
            spk1=part["spk1.scp"],
            utt2spk=part["utt2spk"],
            extra_scps={"noise1.scp": part["noise1.scp"]},
        )
    return [TRAIN_SET, VALID_SET]


def prepare_test_sets(
    root: Path, data_root: Path, wav_dir: Path, fs: int, nj: int, strict: bool
) -> List[str]:
    """Write ``tt_synthetic_{no,with}_reverb`` from the challenge's synthetic test set."""
    names = []
    for condition in TEST_CONDITIONS:
        base = root / "datasets" / "test_set" / "synthetic" / condition
        noisy_dir, clean_dir = base / "noisy", base / "clean"
        for folder in (noisy_dir, clean_dir):
            check_first_audio(folder, list_wavs(folder, _expected("the synthetic test set")))
        noisy, clean = _by_fileid(noisy_dir), _by_fileid(clean_dir)
        for fileid in sorted(noisy.keys() ^ clean.keys()):
            have, other = (noisy, clean_dir) if fileid in noisy else (clean, noisy_dir)
            raise CorpusError(f"{have[fileid]}: no file with fileid {fileid} in {other}")
        check_count(noisy_dir, len(noisy), NUM_TEST, strict)
        ids = sorted(noisy)
        jobs = [(src, wav_dir / "test_set" / condition / src.parent.name / src.name)
                for i in ids for src in (noisy[i], clean[i])]
        paths = [str(p) for p in to_pcm16(jobs, fs, nj)]
        name = f"tt_synthetic_{condition}"
        write_data_dir(
            data_root / name,
            wav={f"fileid_{i}": p for i, p in zip(ids, paths[0::2])},
            spk1={f"fileid_{i}": p for i, p in zip(ids, paths[1::2])},
        )
        names.append(name)
    return names


# ------------------------------------------------------------------------------------------------ CLI


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser("synthesize", help="synthesize training mixtures")
    prep = sub.add_parser("prepare", help="write and validate the data dirs")
    for command in (synth, prep):
        command.add_argument("--root", type=Path, required=True, help="DNS-Challenge checkout")
        command.add_argument(
            "--wav_dir", type=Path, required=True,
            help="folder of the mixtures (noisy/, clean/, noise/) and of converted test files (test_set/)",
        )
        command.add_argument("--nj", type=int, default=1, help="parallel processes")
    for field, value in asdict(SynthesisConfig()).items():
        synth.add_argument(f"--{field}", type=type(value), default=value, help=f"default {value}")
    prep.add_argument("--data_dir", type=Path, default=Path("data"), help="where data dirs go")
    prep.add_argument("--fs", type=int, default=16000, help="sampling rate of the data dirs (Hz)")
    prep.add_argument(
        "--strict_counts", type=str2bool, default=True,
        help=f"require all synthesized mixtures and {NUM_TEST} test files per condition",
    )
    return parser


def main(cmd: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(cmd)
    if args.command == "synthesize":
        cfg = SynthesisConfig(**{field: getattr(args, field) for field in asdict(SynthesisConfig())})
        synthesize(args.root, args.wav_dir, cfg, args.nj)
    else:
        names = prepare_training_sets(args.wav_dir, args.data_dir, args.strict_counts)
        names += prepare_test_sets(
            args.root, args.data_dir, args.wav_dir, args.fs, args.nj, args.strict_counts
        )
        validate_sets(args.data_dir, names, args.fs)


if __name__ == "__main__":
    raise SystemExit(run_main(main))
