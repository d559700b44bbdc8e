"""What the listening page reads from an experiment tree: audio lists, per-utterance scores, KD configs.

Layout (as written by stages 7-8 of ``enh_kd.sh``)::

    <data_dir>/wav.scp, spk1.scp                 noisy input and clean reference
    <noisy_scoring>/<METRIC>                     scores of the noisy input
    <exp>/enhanced_<set>/spk1.scp                a model's enhanced audio
    <exp>/enhanced_<set>/scoring/<METRIC>        its scores, "uttid value" lines ("nan": no score)
    <exp>/config.yaml                            ``kd_loss`` / ``kd_loss_conf`` for a KD student
    <exp>/log/train.log                          espnet2's training log (training curves)
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

from dispatch.data.datadir import DataDirError, read_scp

Scores = Dict[str, float]


def model_arg(item: str) -> Tuple[str, Path]:
    """argparse type of the ``name=experiment_dir`` arguments of make_results and make_report."""
    name, sep, path = item.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"'{item}' is not name=experiment_dir")
    return name, Path(path)


class ReportInputError(ValueError):
    """An input of the listening page is missing or malformed; the message names the file or option."""


@dataclass(frozen=True)
class System:
    """One column of the listening table: the noisy input, the clean reference or a model's output.

    Attributes:
        name: column title (``noisy``, ``clean`` or the model name given on the command line).
        audio_scp: ``uttid path`` list of its audio.
        audio: that list read, {uttid: path}.
        scoring_dir: folder of its per-utterance score files; None for the clean reference.
        exp_dir: experiment folder of a model; None for noisy and clean.
        kd_loss: ``(name, conf)`` from the config.yaml of a KD student; None otherwise.
    """

    name: str
    audio_scp: Path
    audio: Dict[str, str]
    scoring_dir: Optional[Path] = None
    exp_dir: Optional[Path] = None
    kd_loss: Optional[Tuple[str, dict]] = None

    def audio_path(self, utt: str) -> Path:
        """Path of ``utt``'s audio, or an error naming the utterance and the list."""
        if utt not in self.audio:
            raise ReportInputError(f"{self.name}: utterance {utt} is not listed in {self.audio_scp}")
        return Path(self.audio[utt])

    def scores(self, metric: str) -> Optional[Scores]:
        """Per-utterance ``metric`` scores, or None when this system has no such score file."""
        if self.scoring_dir is None or not (self.scoring_dir / metric).is_file():
            return None
        return read_scores(self.scoring_dir / metric)


def read_scores(path: Path) -> Scores:
    """``uttid value`` lines of a score file -> {uttid: value} ("nan" for an utterance without score)."""
    try:
        entries = read_scp(path)
    except (OSError, DataDirError) as e:
        raise ReportInputError(f"score file {path}: {e}") from e
    scores = {}
    for utt, value in entries.items():
        try:
            scores[utt] = float(value)
        except ValueError:
            raise ReportInputError(f"score file {path}: utterance {utt}: {value!r} is not a number") from None
    return scores


def mean_score(scores: Scores) -> float:
    """Mean over the utterances that have a score (NaN if none has)."""
    values = [v for v in scores.values() if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def read_kd_loss(exp_dir: Path) -> Optional[Tuple[str, dict]]:
    """``(kd_loss, kd_loss_conf)`` from ``exp_dir/config.yaml``, or None for a model trained without KD."""
    path = exp_dir / "config.yaml"
    if not path.is_file():
        return None  # e.g. a teacher given as a packed zip: not a KD student either way
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ReportInputError(f"{path}: not valid yaml: {e}") from e
    if not config.get("kd_loss"):
        return None
    return config["kd_loss"], dict(config.get("kd_loss_conf") or {})


def _system(name: str, audio_scp: Path, scoring_dir: Optional[Path] = None, exp_dir: Optional[Path] = None) -> System:
    """A :class:`System` with its audio list read and, for a model, its KD loss."""
    try:
        audio = read_scp(audio_scp)
    except FileNotFoundError:
        hint = " (run the enhancement stage first)" if exp_dir else ""
        raise ReportInputError(f"{name}: {audio_scp}: no such file{hint}") from None
    except DataDirError as e:
        raise ReportInputError(f"{name}: {e}") from e
    return System(name, audio_scp, audio, scoring_dir, exp_dir, read_kd_loss(exp_dir) if exp_dir else None)


def collect_systems(
    data_dir: Path, noisy_scoring: Path, models: Sequence[Tuple[str, Path]], test_set: str
) -> List[System]:
    """Noisy, clean, then the models in the given order, each with its audio list read.

    Raises:
        ReportInputError: for a repeated or reserved model name, a missing audio list or scoring folder.
    """
    names = [name for name, _ in models]
    for reserved in ("noisy", "clean"):
        if reserved in names:
            raise ReportInputError(f"model name {reserved!r} is reserved for the input and reference columns")
    if len(set(names)) != len(names):
        raise ReportInputError(f"model names must be unique, got {names}")
    if not noisy_scoring.is_dir():
        raise ReportInputError(f"--noisy_scoring {noisy_scoring}: no such folder (run the scoring stage first)")
    systems = [_system("noisy", data_dir / "wav.scp", noisy_scoring), _system("clean", data_dir / "spk1.scp")]
    for name, exp_dir in models:
        enhanced = exp_dir / f"enhanced_{test_set}"
        systems.append(_system(name, enhanced / "spk1.scp", enhanced / "scoring", exp_dir))
    return systems
