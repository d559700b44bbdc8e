"""The experiment tree of a recipe: the one module that names its experiments and reads what they hold.

Names (``enh_kd.sh`` and ``run_ablation.sh`` ask for them through ``python -m dispatch.bin.exptree``)::

    <expdir>/teacher_<teacher config>                           the teacher trained in stage 4
    <expdir>/student_<student config><tag_suffix>               the baseline student (stage 5)
    <expdir>/student_<student config>_<kd config><tag_suffix>   a KD student (stage 6)
    <expdir>/teacher_given                                      outputs of a teacher given as a zip or zoo name
    <expdir>/noisy                                              scores of the unprocessed input
    <expdir>/ablation/<spec>/conf, paired_differences.json      an ablation grid (run_ablation.sh)

A config's name is its file name (symlinks resolved) less ``.yaml`` and a leading ``train_``, then
``enh_``: ``conf/tuning/train_enh_conv_tasnet.yaml`` -> ``conv_tasnet``. The runs of an ablation have
the tag suffix ``_seed<N>``.

What an experiment holds (stages 4-8)::

    <exp>/config.yaml                          the model; kd_loss / kd_loss_conf of a KD student
    <exp>/enhanced_<set>/spk1.scp              enhanced audio (stage 7)
    <exp>/enhanced_<set>/scoring/summary.json  metric means (stage 8, dispatch.bin.enh_score)
    <exp>/enhanced_<set>/scoring/<METRIC>      per-utterance scores, ``uttid value`` lines ("nan": none)
    <exp>/checkpoint.pth or log/train.log      training statistics

torch is imported only where a KD loss is built or a checkpoint read: the naming CLI runs at the start
of every stage script.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import yaml

from dispatch.data.datadir import DataDirError, read_scp
from dispatch.fingerprint import audio_digest

PathLike = Union[str, Path]
Scores = Dict[str, float]  # utterance -> value of one metric
TrainingLog = Dict[str, Dict[str, List[float]]]  # phase -> statistic -> value per epoch

CONFIG = "config.yaml"
GIVEN_TEACHER = "teacher_given"
NOISY = "noisy"
ABLATIONS = "ablation"
PAIRED_DIFFERENCES = "paired_differences.json"  # of an ablation grid, written by dispatch.bin.ablation table
SEED_RUN = re.compile(r"_seed\d+$")  # the tag suffix of :func:`seed_suffix`
# Where a training's statistics are, the checkpoint first (see :func:`read_training_log`).
TRAINING_STATS = ("checkpoint.pth", "log/train.log")
_EPOCH_LINE = re.compile(r"(\d+)epoch results: (.*)$")
_PHASE = re.compile(r"\[(\w+)\] ([^\[]*)")
# Column order of the tables; metrics not listed here follow in alphabetical order.
METRIC_ORDER = ("PESQ_WB", "PESQ_NB", "STOI", "ESTOI", "SI_SDR", "SDR", "CSIG", "CBAK", "COVL",
                "DNSMOS_SIG", "DNSMOS_BAK", "DNSMOS_OVRL")
# kd_loss_conf options that choose *where* KD applies; the others define the distance it applies.
SELECTION_OPTIONS = ("selection", "topk", "patch", "bands", "band_edges")
# Lists whose fingerprints dispatch.bin.enh_score records in summary.json's config.
SCORED_LISTS = ("inf_scp", "ref_scp", "noisy_scp")


class TreeError(ValueError):
    """A file, option or experiment of the tree is missing or malformed; the message names it."""


# ------------------------------------------------------------------ names


def config_name(config: PathLike) -> str:
    """Experiment name part of a config file: ``conf/tuning/train_enh_x.yaml`` (symlinks resolved) -> ``x``."""
    name = Path(os.path.realpath(config)).name
    name = name[:-len(".yaml")] if name.endswith(".yaml") else name
    for prefix in ("train_", "enh_"):
        name = name[len(prefix):] if name.startswith(prefix) else name
    return name


def seed_suffix(seed: int) -> str:
    """The tag suffix of one seed's runs of an ablation."""
    return f"_seed{seed}"


@dataclass(frozen=True)
class Layout:
    """Where one run of ``enh_kd.sh`` puts its experiments: ``tag_suffix`` is appended to every student's
    name (the teacher is shared); ``teacher_model`` is a given teacher (experiment dir, zip or zoo name),
    "" for the trained one."""

    expdir: Path
    teacher_tag: str
    student_tag: str
    tag_suffix: str = ""
    teacher_model: str = ""

    @classmethod
    def of(cls, expdir: PathLike, student_config: PathLike, teacher_config: Optional[PathLike] = None,
           tag_suffix: str = "", teacher_tag: str = "", student_tag: str = "", teacher_model: str = "") -> "Layout":
        """The layout named from the config files, unless ``teacher_tag`` / ``student_tag`` are given."""
        return cls(Path(expdir), teacher_tag or f"teacher_{config_name(teacher_config or 'given')}",
                   student_tag or f"student_{config_name(student_config)}", tag_suffix, teacher_model)

    @property
    def teacher_dir(self) -> str:
        """The teacher: the given one as it was given, else its experiment folder."""
        return self.teacher_model or str(self.expdir / self.teacher_tag)

    def student_dir(self, kd: Optional[str] = None) -> Path:
        """The baseline student (``kd`` None) or the student of the KD config named ``kd``."""
        return self.expdir / (self.student_tag + (f"_{kd}" if kd else "") + self.tag_suffix)

    def outputs_dir(self, model: str) -> Path:
        """Where a model's enhanced test sets and teacher cache go: its experiment folder, or
        ``<expdir>/teacher_given`` for a teacher given as a packed zip or model zoo name."""
        return self.expdir / GIVEN_TEACHER if model == self.teacher_model and not Path(model).is_dir() else Path(model)

    @property
    def noisy_dir(self) -> Path:
        return self.expdir / NOISY

    @property
    def ablation_root(self) -> Path:
        return self.expdir / ABLATIONS

    def ablation_dir(self, spec: str) -> Path:
        return self.ablation_root / spec

    def models(self, kd_configs: Sequence[PathLike], baseline: bool = True) -> Dict[str, str]:
        """Row name -> model of a run: ``teacher``, ``baseline`` (unless skipped), one per KD config."""
        models = {"teacher": self.teacher_dir}
        if baseline:
            models["baseline"] = str(self.student_dir())
        models.update({config_name(c): str(self.student_dir(config_name(c))) for c in kd_configs})
        return models


# ------------------------------------------------------------------ reading


def read_scores(path: Path) -> Optional[Scores]:
    """``uttid value`` lines of a score file -> {uttid: value} ("nan": no score); None without the file."""
    if not path.is_file():
        return None
    try:
        entries = read_scp(path)
    except (OSError, DataDirError) as e:
        raise TreeError(f"score file {path}: {e}") from e
    scores = {}
    for utt, value in entries.items():
        try:
            scores[utt] = float(value)
        except ValueError:
            raise TreeError(f"score file {path}: utterance {utt}: {value!r} is not a number") from None
    return scores


def _summary_json(scoring_dir: Path) -> Optional[Dict[str, Any]]:
    path = scoring_dir / "summary.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise TreeError(f"{path}: not valid JSON: {e}") from e


def read_summary(scoring_dir: Path) -> Optional[Dict[str, dict]]:
    """Metric -> {mean, std, count} of one scored set (dispatch.bin.enh_score's summary.json), or None."""
    summary = _summary_json(scoring_dir)
    return None if summary is None else summary.get("enhanced")


def stale_scores(scoring_dir: Path) -> Optional[str]:
    """Why the scores in ``scoring_dir`` no longer describe the audio they name, or None if they do.

    enh_score records in summary.json the text hash of each list it scored and a hash of the size and
    mtime of every audio file it names: a list or file changed since (stage 2 or 7 redone without stage
    8) makes the scores stale. A summary without these records cannot be checked and is taken as it is.
    """
    config = (_summary_json(scoring_dir) or {}).get("config") or {}
    for key in SCORED_LISTS:
        recorded = config.get(key)
        if not isinstance(recorded, dict) or "audio_sha256" not in recorded:
            continue
        scp = Path(recorded["path"])
        if not scp.is_file():
            return f"{scp} (its --{key}) no longer exists"
        if hashlib.sha1(scp.read_bytes()).hexdigest() != recorded.get("sha1"):
            return f"{scp} (its --{key}) changed after scoring"
        if audio_digest(scp) != recorded["audio_sha256"]:
            return f"audio files listed in {scp} (its --{key}) changed after scoring"
    return None


def ordered_metrics(summaries: Sequence[Dict[str, Any]]) -> List[str]:
    """The metrics of some summaries (or any mappings keyed by metric) in table order."""
    found = {m for s in summaries for m in s}
    return [m for m in METRIC_ORDER if m in found] + sorted(found - set(METRIC_ORDER))


def compact_value(value: Any) -> str:
    """An option value on one line (lists and mappings as JSON)."""
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


@dataclass(frozen=True)
class AudioList:
    """The ``uttid path`` list of one column of a test set: the noisy input, the clean reference or a
    model's output. The listening page and RESULTS.md read an utterance's audio only through it."""

    name: str
    scp: Path
    paths: Dict[str, str]

    @classmethod
    def read(cls, name: str, scp: Path, hint: str = "") -> "AudioList":
        try:
            return cls(name, scp, read_scp(scp))
        except FileNotFoundError:
            raise TreeError(f"{name}: {scp}: no such file{hint}") from None
        except DataDirError as e:
            raise TreeError(f"{name}: {e}") from e

    def path(self, utt: str) -> Path:
        if utt not in self.paths:
            raise TreeError(f"{self.name}: utterance {utt} is not listed in {self.scp}")
        return Path(self.paths[utt])

    def sample_rate(self, utt: str) -> int:
        """The rate of ``utt``'s file: formatted test sets have one, so one file gives the set's."""
        from dispatch.data.audio import probe

        try:
            return probe(self.path(utt)).samplerate
        except ValueError as e:
            raise TreeError(f"{self.name}: utterance {utt}: {e}") from e

    def mono(self, utt: str, fs: int) -> np.ndarray:
        """``utt``'s samples at ``fs`` (resampled if needed), (samples,)."""
        from dispatch.data.audio import read_audio

        path = self.path(utt)
        try:
            wav = read_audio(path, fs)
        except (OSError, RuntimeError, ValueError) as e:  # soundfile raises LibsndfileError, a RuntimeError
            raise TreeError(f"{self.name}: utterance {utt}: cannot read {path}: {e}") from e
        if wav.ndim != 1:
            raise TreeError(f"{self.name}: utterance {utt}: {path} has {wav.shape[1]} channels, expected mono")
        return wav


@dataclass(frozen=True)
class Experiment:
    """One espnet2 enhancement experiment under its row name (``teacher``, ``baseline``, ``kd_l2``, ...):
    ``exp_dir`` is the folder of its outputs (of a teacher given packed too), ``config`` its config.yaml."""

    name: str
    exp_dir: Path
    config: Dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def config_path(self) -> Path:
        return self.exp_dir / CONFIG

    # ---- the KD loss

    @property
    def kd_loss_name(self) -> Optional[str]:
        return self.config.get("kd_loss")

    @cached_property
    def kd_options(self) -> Dict[str, Any]:
        """``kd_loss_conf`` with the KD loss's defaults filled in, so that two configs compare."""
        from dispatch.losses import KD_LOSSES, kd_loss_defaults

        if self.kd_loss_name not in KD_LOSSES:
            return {}
        # Tuples in defaults vs lists in yaml: compare through JSON.
        return json.loads(json.dumps({**kd_loss_defaults(self.kd_loss_name), **(self.config.get("kd_loss_conf") or {})}))

    @property
    def is_selective(self) -> bool:
        """A KD loss that distils a selection of patches (DISPatch)."""
        return self.kd_options.get("selection", "all") != "all"

    @property
    def is_plain_kd(self) -> bool:
        """A patch-based KD loss that distils every bin (conventional KD with the same distance)."""
        return self.kd_options.get("selection") == "all"

    def distance_signature(self) -> str:
        """KD loss and its options except the selection ones: equal for a DISPatch row and its plain KD."""
        options = {k: v for k, v in self.kd_options.items() if k not in SELECTION_OPTIONS}
        return json.dumps([self.kd_loss_name, options], sort_keys=True)

    def kd_description(self) -> str:
        """``kd_loss`` and its options as configured (defaults left out), and the loss weights."""
        if not self.kd_loss_name:
            return "-"
        conf = ", ".join(f"{k}={compact_value(v)}" for k, v in (self.config.get("kd_loss_conf") or {}).items())
        weights = f"kd_weight={self.config.get('kd_weight', 1.0)}, task_weight={self.config.get('task_weight', 1.0)}"
        return f"{self.kd_loss_name}({conf}); {weights}"

    def sample_rate(self, default: int) -> int:
        """The sampling rate the config records, else ``default``."""
        from dispatch.teacher import teacher_sample_rate

        return teacher_sample_rate(self.config) or default

    def selection_loss(self, fs: int):
        """The KD loss as training built it (:func:`dispatch.kd_config.check_kd_options`, at ``fs`` unless
        the config records a rate), if it distils a selection of spectrogram patches; None otherwise (no
        KD, si_snr KD, or conventional KD of every bin: no mask to show)."""
        if not self.is_selective:
            return None
        from dispatch.kd_config import KDConfigError, check_kd_options
        from dispatch.losses import DISPatchLoss

        try:
            loss = check_kd_options(self.config, self.sample_rate(fs))
        except KDConfigError as e:
            raise TreeError(f"{self.config_path}: {e}") from e
        return loss if isinstance(loss, DISPatchLoss) else None

    # ---- outputs and scores

    def scoring_dir(self, dset: str) -> Path:
        return self.exp_dir / f"enhanced_{dset}" / "scoring"

    def enhanced(self, dset: str) -> AudioList:
        return AudioList.read(self.name, self.exp_dir / f"enhanced_{dset}" / "spk1.scp",
                              " (run the enhancement stage first)")

    def summary(self, dset: str) -> Optional[Dict[str, dict]]:
        """Metric means of ``dset`` once its scoring finished (summary.json marks completion), else None."""
        return read_summary(self.scoring_dir(dset))

    def scores(self, dset: str, metric: str) -> Optional[Scores]:
        """Per-utterance ``metric`` of ``dset``, or None without that score file."""
        return read_scores(self.scoring_dir(dset) / metric)

    def scored_sets(self) -> List[str]:
        """Test sets whose scoring finished, sorted."""
        return sorted(p.parent.parent.name[len("enhanced_"):] for p in self.exp_dir.glob("enhanced_*/scoring/summary.json"))

    def training_log(self) -> TrainingLog:
        """Per-epoch training statistics (:func:`read_training_log`)."""
        return read_training_log(self.exp_dir)

    def training_stats(self) -> List[Path]:
        """The files training statistics are read from that exist (none: not trained here)."""
        return [self.exp_dir / name for name in TRAINING_STATS if (self.exp_dir / name).is_file()]


def _numeric(value) -> Optional[float]:
    """A logged statistic as float; None for what is not a number (durations, text)."""
    if isinstance(value, (int, float, np.number, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _parse_train_log(path: Path) -> Dict[int, Dict[str, Dict[str, object]]]:
    """espnet2's ``<N>epoch results: [train] k=v, ... [valid] k=v, ...`` lines -> epoch -> phase -> key -> value."""
    stats: Dict[int, Dict[str, Dict[str, object]]] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _EPOCH_LINE.search(line)
        if not match:
            continue
        phases = stats.setdefault(int(match.group(1)), {})
        for phase, body in _PHASE.findall(match.group(2)):
            items = (item.partition("=") for item in body.split(", "))
            phases[phase] = {k.strip(): v.strip() for k, sep, v in items if sep}
    return stats


def read_training_log(exp_dir: PathLike) -> TrainingLog:
    """Per-epoch statistics of an espnet2 training: phase (train, valid) -> key -> values of epochs 1..N
    (NaN for an epoch missing from the source; keys that are not numbers left out; {} if nothing is logged).

    The source is the reporter state in ``checkpoint.pth``: unlike ``log/train.log``, which the job
    backend rewrites each time the training is resumed (a finished training rerun with ``--resume true``
    leaves a log without a single epoch line), it holds every epoch at full precision. Without a
    checkpoint the ``<N>epoch results`` lines of ``log/train.log`` are read.
    """
    checkpoint, log = (Path(exp_dir) / name for name in TRAINING_STATS)
    if checkpoint.is_file():
        import torch

        # The reporter state holds numpy scalars and timedeltas: not loadable with weights_only=True.
        stats = torch.load(checkpoint, map_location="cpu", weights_only=False)["reporter"]["stats"]
    elif log.is_file():
        stats = _parse_train_log(log)
    else:
        return {}
    n_epochs = max(stats, default=0)
    out: TrainingLog = {}
    for epoch, phases in stats.items():
        for phase, values in phases.items():
            for key, value in values.items():
                number = _numeric(value)
                if number is not None:
                    out.setdefault(phase, {}).setdefault(key, [math.nan] * n_epochs)[epoch - 1] = number
    return out


def read_grid_differences(ablation_root: Optional[Path]) -> List[Dict[str, Any]]:
    """The paired differences to the student alone of every ablation grid under ``ablation_root``
    (:func:`dispatch.ablation.baseline_differences`), sorted by spec name; [] when there is none."""
    grids = []
    for path in sorted(Path(ablation_root).glob(f"*/{PAIRED_DIFFERENCES}")) if ablation_root else []:
        try:
            grids.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:
            raise TreeError(f"{path}: cannot read it ({e}): rerun the ablation table (run_ablation.sh --stage 2)") from e
    return grids


def load_experiment(name: str, exp_dir: PathLike) -> Experiment:
    """The experiment with its ``config.yaml`` ({} for a folder without one, e.g. a packed teacher's outputs)."""
    path = Path(exp_dir) / CONFIG
    if not path.is_file():
        return Experiment(name, Path(exp_dir))
    try:
        return Experiment(name, Path(exp_dir), yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except yaml.YAMLError as e:
        raise TreeError(f"{path}: not valid yaml: {e}") from e


def load_models(models: Sequence[Tuple[str, PathLike]], reserved: Sequence[str]) -> List[Experiment]:
    """The ``(row name, experiment dir)`` arguments of make_results and make_report, loaded; names must be
    unique and none of ``reserved`` (the rows or columns of the data)."""
    names = [name for name, _ in models]
    bad = sorted({n for n in names if names.count(n) > 1} | (set(reserved) & set(names)))
    if bad:
        raise TreeError(f"row names must be unique and not {' or '.join(map(repr, reserved))}: {', '.join(bad)}")
    return [load_experiment(name, d) for name, d in models]


def model_arg(item: str) -> Tuple[str, Path]:
    """argparse type of the ``name=experiment_dir`` arguments of make_results and make_report."""
    name, sep, path = item.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"'{item}' is not name=experiment_dir")
    return name, Path(path)


def scan_experiments(scan_dir: Path, known: Sequence[Experiment], test_sets: Sequence[str],
                     baseline_dir: Optional[Path] = None) -> List[Experiment]:
    """Scored experiments under ``scan_dir`` (a config.yaml and a summary.json of one of ``test_sets``) not
    in ``known``, sorted by name: a KD variant trained by an earlier run keeps its row. The row name is the
    folder name less ``<baseline folder>_``; ablation runs (``_seed<N>``) are left to their own tables.
    """
    seen = {e.exp_dir.resolve() for e in known}
    names = {e.name for e in known}
    prefix = f"{baseline_dir.name}_" if baseline_dir is not None else None
    found = []
    for d in sorted(p for p in scan_dir.iterdir() if p.is_dir()):
        if d.resolve() in seen or not (d / CONFIG).is_file() or SEED_RUN.search(d.name):
            continue
        if not any(Experiment(d.name, d).summary(s) is not None for s in test_sets):
            continue
        name = d.name[len(prefix):] if prefix and d.name.startswith(prefix) else d.name
        found.append(load_experiment(d.name if name in names else name, d))
    return sorted(found, key=lambda e: e.name)


def best_student(exps: Sequence[Experiment], dset: str, metric: str,
                 exclude: Sequence[str] = ()) -> Optional[Experiment]:
    """The KD student with the highest mean per-utterance ``metric`` on ``dset`` (the best experiment
    when none was trained with KD); ties: the first. Experiments without that score file do not compete.
    """
    candidates = [e for e in exps if e.name not in exclude]
    candidates = [e for e in candidates if e.kd_loss_name] or candidates
    best, best_mean = None, -math.inf
    for e in candidates:
        values = [v for v in (e.scores(dset, metric) or {}).values() if not math.isnan(v)]  # NaN: no score
        mean = sum(values) / len(values) if values else math.nan
        if mean > best_mean:
            best, best_mean = e, mean
    return best
