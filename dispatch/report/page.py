"""The listening page: RESULTS.md's metric table, chosen test utterances (audio, spectrograms, DISPatch
selection masks) and the training curves, as one static ``index.html`` with its files in ``assets/``.

The page needs no server and no network: every link is relative and every file it shows is inside the
output folder, so the folder can be moved, zipped or opened straight from the file system.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple
from urllib.parse import quote, unquote, urlsplit

import jinja2
import markdown
import numpy as np
from markdown.treeprocessors import Treeprocessor
from markupsafe import Markup

from dispatch.data.atomic import atomic_path, write_text_atomic
from dispatch.data.audio import probe, read_audio
from dispatch.losses import KD_LOSSES, DISPatchLoss, build_kd_loss
from dispatch.plots import (
    save_band_selection_png,
    save_selection_png,
    save_spectrogram_png,
    save_training_curves_png,
)
from dispatch.report.assets import place_audio, safe_name
from dispatch.report.choose import choose_utterances
from dispatch.report.inputs import ReportInputError, System, collect_systems, mean_score
from dispatch.version import __version__

PAGE = "index.html"
ASSETS = "assets"
INPUTS = "inputs.json"  # what the page was made from; a rerun with the same inputs does nothing
# Where dispatch.plots.read_training_log finds the statistics of a training (the checkpoint first).
TRAINING_STATS = ("checkpoint.pth", "log/train.log")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp"}


@dataclass
class Cell:
    """One system's view of one utterance; paths are relative to the page."""

    system: str
    audio: str
    spectrogram: str
    scores: List[Tuple[str, str]]
    selection: Optional[str] = None


@dataclass
class Row:
    utt: str
    reasons: List[str]
    cells: List[Cell] = field(default_factory=list)


class _LocalLinks(Treeprocessor):
    """Make the relative links of a markdown file work from the page.

    Images it shows or links to are copied into ``copy_dir`` (so that the page stays self-contained when
    moved); other targets (the page itself, experiment files) are rebased onto the page's folder.
    """

    def __init__(self, md: markdown.Markdown, src_dir: Path, page_dir: Path, copy_dir: Path):
        super().__init__(md)
        self.src_dir, self.page_dir, self.copy_dir = src_dir, page_dir, copy_dir
        self.copied: Dict[Path, Path] = {}

    def _local_target(self, target: Path) -> Path:
        if target.suffix.lower() not in IMAGE_SUFFIXES:
            return target
        if not target.is_file():
            logging.warning(f"RESULTS.md refers to a missing picture {target}")
            return target
        if target not in self.copied:
            self.copied[target] = self.copy_dir / f"{len(self.copied):02d}_{safe_name(target.name)}"
            with atomic_path(self.copied[target]) as tmp:
                shutil.copyfile(target, tmp)
        return self.copied[target]

    def run(self, root) -> None:
        for element in root.iter():
            for attr in ("href", "src"):
                url = urlsplit(element.get(attr) or "")
                if url.path and not url.scheme and not url.netloc and not url.path.startswith("/"):
                    target = self._local_target((self.src_dir / unquote(url.path)).resolve())
                    path = Path(os.path.relpath(target, self.page_dir)).as_posix()
                    element.set(attr, url._replace(path=quote(path)).geturl())


def render_markdown(path: Path, page_dir: Path, copy_dir: Path) -> Markup:
    """HTML of a markdown file (tables included); its pictures copied to ``copy_dir``, its other relative
    links rebased onto ``page_dir`` (see :class:`_LocalLinks`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ReportInputError(f"--results_md {path}: {e.strerror} (run the results stage first)") from e
    md = markdown.Markdown(extensions=["tables"])
    links = _LocalLinks(md, path.resolve().parent, page_dir.resolve(), copy_dir.resolve())
    # After the inline patterns (priority 20), which create the <a> and <img> elements.
    md.treeprocessors.register(links, "local_links", 5)
    return Markup(md.convert(text))


def render_page(**context) -> str:
    """``index.html`` from the package's jinja2 template."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("dispatch.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template(PAGE + ".j2").render(**context)


def _fingerprint(options: dict, files: Iterable[Path]) -> str:
    """Hash of the options and of each file's path, size and modification time (missing files too)."""
    stats = []
    for path in sorted(set(files)):
        st = path.stat() if path.exists() else None
        stats.append((str(path.absolute()), st and st.st_size, st and st.st_mtime_ns))
    return hashlib.sha1(json.dumps([options, stats], sort_keys=True, default=str).encode()).hexdigest()


def _read_mono(system: System, utt: str, fs: int) -> np.ndarray:
    path = system.audio_path(utt)
    try:
        wav = read_audio(path, fs)
    except (OSError, RuntimeError) as e:  # soundfile raises LibsndfileError, a RuntimeError
        raise ReportInputError(f"{system.name}: utterance {utt}: cannot read {path}: {e}") from e
    if wav.ndim != 1:
        raise ReportInputError(f"{system.name}: utterance {utt}: {path} has {wav.shape[1]} channels, expected mono")
    return wav


def _selection_losses(systems: Sequence[System], fs: int) -> Dict[str, DISPatchLoss]:
    """The patch-selecting KD losses (DISPatch, DFKD) of the KD students, rebuilt from their configs."""
    losses = {}
    for s in systems:
        if s.kd_loss is None:
            continue
        name, conf = s.kd_loss
        if not issubclass(KD_LOSSES.get(name, DISPatchLoss), DISPatchLoss):
            continue  # si_snr KD distils the whole signal: no mask to show
        try:
            loss = build_kd_loss(name, **{"fs": fs, **conf})  # as in training, the config's own fs wins
        except (TypeError, ValueError) as e:
            raise ReportInputError(f"{s.exp_dir / 'config.yaml'}: kd_loss {name}: {e}") from e
        if loss.selection != "all":  # conventional KD with a patch distance: every bin, nothing to show
            losses[s.name] = loss
    return losses


def _choose(
    systems: Sequence[System], baseline: str, utts: Sequence[str], metric: str
) -> Tuple[Dict[str, List[str]], str]:
    """The utterances to show (id -> reasons, see :mod:`dispatch.report.choose`) and the rule in words.

    The subject is the KD student with the best mean ``metric`` (the best model when none was trained
    with KD); the reference is the baseline student (the noisy input when ``baseline`` is empty).
    """
    by_name = {s.name: s for s in systems}
    reference = by_name[baseline or "noisy"]
    models = [s for s in systems if s.exp_dir is not None and s is not reference]
    candidates = [s for s in models if s.kd_loss is not None] or models
    if not candidates:
        return choose_utterances({}, {}, utts, by_name["noisy"].audio, metric), "by --utts only (no model to rank)"
    scores = {}
    for s in candidates + [reference]:
        scores[s.name] = s.scores(metric)
        if scores[s.name] is None:
            raise ReportInputError(f"--rank_metric {metric}: {s.name} has no score file {s.scoring_dir / metric}")
    subject = max(candidates, key=lambda s: mean_score(scores[s.name]))
    chosen = choose_utterances(scores[subject.name], scores[reference.name], utts, by_name["noisy"].audio, metric)
    role = "the best KD student" if subject.kd_loss is not None else "the best model (no KD student given)"
    rule = (f"best, median and worst per-utterance {metric} gain of {subject.name} ({role} by mean {metric}) "
            f"over {reference.name}")
    return chosen, rule


def _utterance_row(
    utt: str,
    reasons: List[str],
    folder: Path,
    page_dir: Path,
    systems: Sequence[System],
    fs: int,
    scores: Dict[str, Dict[str, Dict[str, float]]],
    masks: Dict[str, DISPatchLoss],
    teacher: str,
) -> Row:
    """Audio, spectrogram, scores and (for DISPatch students) selection mask of every system on ``utt``,
    the files written under ``folder``; paths in the row are relative to ``page_dir``."""
    wavs = {s.name: _read_mono(s, utt, fs) for s in systems}
    row = Row(utt, reasons)
    for s in systems:
        stem = folder / safe_name(s.name)
        audio = place_audio(s.audio_path(utt), stem)
        spectrogram = save_spectrogram_png(wavs[s.name], fs, stem.with_suffix(".png"), title=s.name)
        selection = None
        if s.name in masks:
            selection = save_selection_png(
                *(wavs[k] for k in ("noisy", "clean", teacher, s.name)), fs, masks[s.name],
                folder / f"{safe_name(s.name)}_selection.png", title=f"{s.name} on {utt}: patches distilled",
            )
        values = [(m, per_utt.get(utt)) for m, per_utt in scores[s.name].items()]
        row.cells.append(Cell(
            s.name, _relative(audio, page_dir), _relative(spectrogram, page_dir),
            [(m, f"{v:.3f}") for m, v in values if v is not None],
            selection and _relative(selection, page_dir),
        ))
    return row


def build_report(
    output_dir: Path,
    results_md: Path,
    test_set: str,
    data_dir: Path,
    noisy_scoring: Path,
    models: Sequence[Tuple[str, Path]],
    baseline: str = "baseline",
    teacher: str = "teacher",
    utts: Sequence[str] = (),
    rank_metric: str = "PESQ_WB",
    show_metrics: Sequence[str] = ("PESQ_WB", "STOI", "SI_SDR"),
) -> Path:
    """Write ``output_dir/index.html`` and its assets; return the page's path.

    Args:
        output_dir: folder of the page (``exp/report``); its ``assets/`` is rewritten.
        results_md: RESULTS.md, whose tables head the page.
        test_set: name of the test set (``<exp>/enhanced_<test_set>``).
        data_dir: formatted data dir of the test set (``wav.scp`` noisy, ``spk1.scp`` clean).
        noisy_scoring: scoring folder of the noisy input.
        models: ``(name, experiment dir)`` in column order.
        baseline: model name of the student trained without KD; "" to rank gains over the noisy input.
        teacher: model name of the teacher, whose output the selection masks need.
        utts: utterance ids shown besides the ranked ones.
        rank_metric: per-utterance metric of the choice rule (see :mod:`dispatch.report.choose`).
        show_metrics: per-utterance scores printed under each player (those that were scored).

    Raises:
        ReportInputError: naming the option, file or utterance that is missing or malformed.
    """
    systems = collect_systems(data_dir, noisy_scoring, models, test_set)
    by_name = {s.name: s for s in systems}
    for option, name in (("--baseline", baseline), ("--teacher", teacher)):
        if name and (name not in by_name or by_name[name].exp_dir is None):
            raise ReportInputError(f"{option} {name}: not one of the models ({', '.join(n for n, _ in models)})")
    chosen, rule = _choose(systems, baseline, utts, rank_metric)
    if not chosen:
        raise ReportInputError(f"no utterance to show: no {rank_metric} scores to rank and no --utts")
    logging.info(f"utterances: {', '.join(chosen)} ({rule})")
    # Formatted test sets have one sampling rate; audio at another one is resampled for the images.
    fs = probe(by_name["noisy"].audio_path(next(iter(chosen)))).samplerate
    masks = _selection_losses(systems, fs)
    if masks and not teacher:
        raise ReportInputError("--teacher is needed for the selection masks of the KD students")

    metrics = list(dict.fromkeys([rank_metric, *show_metrics]))
    curve_exps = {s.name: s.exp_dir for s in systems
                  if s.exp_dir is not None and any((s.exp_dir / f).is_file() for f in TRAINING_STATS)}
    options = {"version": __version__, "test_set": test_set, "models": [f"{n}={d}" for n, d in models],
               "baseline": baseline, "teacher": teacher, "chosen": chosen, "metrics": metrics}
    inputs = [results_md] + [e / f for e in curve_exps.values() for f in TRAINING_STATS]
    for s in systems:
        inputs += [s.audio_scp] + [s.audio_path(u) for u in chosen]
        inputs += [s.scoring_dir / m for m in metrics] if s.scoring_dir else []
        inputs += [s.exp_dir / "config.yaml"] if s.exp_dir else []
    fingerprint = _fingerprint(options, inputs)
    page, stamp = output_dir / PAGE, output_dir / INPUTS
    if page.is_file() and stamp.is_file() and json.loads(stamp.read_text()).get("fingerprint") == fingerprint:
        logging.info(f"{page}: up to date")
        return page

    # The old page goes first: an interrupted rebuild leaves no page pointing at missing assets.
    for old in (stamp, page):
        old.unlink(missing_ok=True)
    shutil.rmtree(output_dir / ASSETS, ignore_errors=True)

    scores = {s.name: {m: s.scores(m) or {} for m in metrics} if s.scoring_dir else {} for s in systems}
    rows = [
        _utterance_row(utt, reasons, output_dir / ASSETS / f"{i:02d}_{safe_name(utt)}", output_dir, systems, fs,
                       scores, masks, teacher)
        for i, (utt, reasons) in enumerate(chosen.items(), 1)
    ]
    curves = []  # (path, caption)
    if curve_exps:
        curves = [
            (save_training_curves_png(curve_exps, output_dir / ASSETS / "training_curves.png"),
             "task loss, KD loss and fraction of bins distilled; train solid, valid dashed"),
            (save_band_selection_png(curve_exps, output_dir / ASSETS / "kd_selected.png"),
             "fraction of bins distilled per MSSP band, per KD student"),
        ]
    html = render_page(
        test_set=test_set,
        results=render_markdown(results_md, output_dir, output_dir / ASSETS / "results_md"),
        rule=rule,
        rows=rows,
        columns=[s.name for s in systems],
        masks=list(masks),
        curves=[(_relative(path, output_dir), caption) for path, caption in curves],
        date=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    )
    write_text_atomic(page, html)
    write_text_atomic(stamp, json.dumps({"fingerprint": fingerprint, "utterances": chosen, "rule": rule}, indent=2))
    logging.info(f"wrote {page}")
    return page


def _relative(path: Path, root: Path) -> str:
    return Path(path).relative_to(root).as_posix()
