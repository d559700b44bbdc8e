"""The listening page: chosen test utterances (audio, spectrograms, DISPatch selection masks), the paired
differences of each ablation grid to the student alone, the training curves and RESULTS.md (folded), as
one static ``index.html`` with its files in ``assets/``. The tree is read through :mod:`dispatch.exptree`.

The page needs no server and no network: every link is relative and every file it shows is inside the
output folder, so the folder can be moved, zipped or opened straight from the file system.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple
from urllib.parse import quote, unquote, urlsplit

import jinja2
import markdown
from markdown.treeprocessors import Treeprocessor
from markupsafe import Markup

from dispatch.data.atomic import atomic_path, write_text_atomic
from dispatch.exptree import (
    AudioList,
    Experiment,
    Scores,
    TreeError,
    load_models,
    read_grid_differences,
    read_scores,
)
from dispatch.losses import DISPatchLoss
from dispatch.plots import (
    save_band_selection_png,
    save_paired_differences_png,
    save_selection_png,
    save_spectrogram_png,
    save_training_curves_png,
)
from dispatch.report.assets import place_audio, safe_name
from dispatch.report.choose import check_utts, choose_for_set
from dispatch.results import date_text
from dispatch.version import __version__

PAGE = "index.html"
ASSETS = "assets"
INPUTS = "inputs.json"  # what the page was made from; a rerun with the same inputs does nothing
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp"}
GRID_METRICS = ("SI_SDR", "PESQ_WB")  # the paired differences an ablation grid's picture shows


@dataclass(frozen=True)
class Column:
    """One column of the listening table: the noisy input, the clean reference or a model's output;
    ``scoring_dir`` is None for the clean reference, ``experiment`` None for noisy and clean."""

    audio: AudioList
    scoring_dir: Optional[Path] = None
    experiment: Optional[Experiment] = None

    @property
    def name(self) -> str:
        return self.audio.name


class _LocalLinks(Treeprocessor):
    """Relative links of a markdown file made to work from the page: the images it shows or links to are
    copied into ``copy_dir`` (the page folder stays self-contained), other targets rebased onto it."""

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
    """HTML of a markdown file (tables included), its links made local (:class:`_LocalLinks`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise TreeError(f"--results_md {path}: {e.strerror} (run the results stage first)") from e
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


def _utterance_row(utt: str, reasons: List[str], folder: Path, page_dir: Path, columns: Sequence[Column], fs: int,
                   scores: Dict[str, Dict[str, Scores]], masks: Dict[str, DISPatchLoss], teacher: str) -> dict:
    """The template's row of ``utt``: per column (system) its audio, spectrogram, scores and (for DISPatch
    students) selection mask, the files written under ``folder``; paths are relative to ``page_dir``."""
    wavs = {c.name: c.audio.mono(utt, fs) for c in columns}
    row = {"utt": utt, "reasons": reasons, "cells": []}
    for c in columns:
        stem = folder / safe_name(c.name)
        audio = place_audio(c.audio.path(utt), stem)
        spectrogram = save_spectrogram_png(wavs[c.name], fs, stem.with_suffix(".png"), title=c.name)
        selection = save_selection_png(
            *(wavs[k] for k in ("noisy", "clean", teacher, c.name)), fs, masks[c.name],
            folder / f"{safe_name(c.name)}_selection.png", title=f"{c.name} on {utt}: patches distilled",
        ) if c.name in masks else None
        values = [(m, f"{per_utt[utt]:.3f}") for m, per_utt in scores[c.name].items() if per_utt.get(utt) is not None]
        row["cells"].append({"system": c.name, "audio": _relative(audio, page_dir), "scores": values,
                             "spectrogram": _relative(spectrogram, page_dir),
                             "selection": selection and _relative(selection, page_dir)})
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
    ablation_root: Optional[Path] = None,
) -> Path:
    """Write ``output_dir/index.html`` and its assets (``assets/`` is rewritten); return the page's path.
    The arguments are the options of ``python -m dispatch.bin.make_report`` (see its ``--help``).

    Raises:
        TreeError: naming the option, file or utterance that is missing or malformed.
    """
    exps = load_models(models, reserved=("noisy", "clean"))
    if not noisy_scoring.is_dir():
        raise TreeError(f"--noisy_scoring {noisy_scoring}: no such folder (run the scoring stage first)")
    columns = [Column(AudioList.read("noisy", data_dir / "wav.scp"), noisy_scoring),
               Column(AudioList.read("clean", data_dir / "spk1.scp")),
               *(Column(e.enhanced(test_set), e.scoring_dir(test_set), e) for e in exps)]
    by_name = {c.name: c for c in columns}
    for option, name in (("--baseline", baseline), ("--teacher", teacher)):
        if name and (name not in by_name or by_name[name].experiment is None):
            raise TreeError(f"{option} {name}: not one of the models ({', '.join(n for n, _ in models)})")
    check_utts(utts, by_name["noisy"].audio.paths, [test_set])
    reference = by_name[baseline or "noisy"]
    chosen, rule = choose_for_set(exps, test_set, reference.name, read_scores(reference.scoring_dir / rank_metric),
                                  by_name["noisy"].audio.paths.keys(), utts, rank_metric)
    if not chosen:
        raise TreeError(f"no utterance to show: no {rank_metric} scores to rank and no --utts")
    logging.info(f"utterances: {', '.join(chosen)} ({rule})")
    # Formatted test sets have one sampling rate; audio at another one is resampled for the images.
    fs = by_name["noisy"].audio.sample_rate(next(iter(chosen)))
    masks = {e.name: loss for e in exps if (loss := e.selection_loss(fs)) is not None}
    if masks and not teacher:
        raise TreeError("--teacher is needed for the selection masks of the KD students")

    metrics = list(dict.fromkeys([rank_metric, *show_metrics]))
    trained = {e.name: e for e in exps if e.training_stats()}
    grids = read_grid_differences(ablation_root)
    options = {"version": __version__, "test_set": test_set, "models": [f"{n}={d}" for n, d in models],
               "baseline": baseline, "teacher": teacher, "chosen": chosen, "metrics": metrics, "grids": grids}
    inputs = [results_md] + [f for e in trained.values() for f in e.training_stats()]
    for c in columns:
        inputs += [c.audio.scp] + [c.audio.path(u) for u in chosen]
        inputs += [c.scoring_dir / m for m in metrics] if c.scoring_dir else []
        inputs += [c.experiment.config_path] if c.experiment else []
    fingerprint = _fingerprint(options, inputs)
    page, stamp = output_dir / PAGE, output_dir / INPUTS
    if page.is_file() and stamp.is_file() and json.loads(stamp.read_text()).get("fingerprint") == fingerprint:
        logging.info(f"{page}: up to date")
        return page

    # The old page goes first: an interrupted rebuild leaves no page pointing at missing assets.
    for old in (stamp, page):
        old.unlink(missing_ok=True)
    shutil.rmtree(output_dir / ASSETS, ignore_errors=True)

    scores = {c.name: {m: read_scores(c.scoring_dir / m) or {} for m in metrics} if c.scoring_dir else {}
              for c in columns}
    rows = [
        _utterance_row(utt, reasons, output_dir / ASSETS / f"{i:02d}_{safe_name(utt)}", output_dir, columns, fs,
                       scores, masks, teacher)
        for i, (utt, reasons) in enumerate(chosen.items(), 1)
    ]
    logs = {name: e.training_log() for name, e in trained.items()}
    curves = [
        (save_training_curves_png(logs, output_dir / ASSETS / "training_curves.png"),
         "task loss, KD loss and fraction of bins distilled; train solid, valid dashed"),
        (save_band_selection_png(logs, output_dir / ASSETS / "kd_selected.png"),
         "fraction of bins distilled per MSSP band, per KD student"),
    ] if trained else []
    grids = grid_pictures(grids, test_set, output_dir / ASSETS)
    html = render_page(
        test_set=test_set, rule=rule, rows=rows, columns=[c.name for c in columns], masks=list(masks),
        grids=[(_relative(path, output_dir), caption) for path, caption in grids],
        curves=[(_relative(path, output_dir), caption) for path, caption in curves],
        results=render_markdown(results_md, output_dir, output_dir / ASSETS / "results_md"),
        date=date_text(),
    )
    write_text_atomic(page, html)
    write_text_atomic(stamp, json.dumps({"fingerprint": fingerprint, "utterances": chosen, "rule": rule}, indent=2))
    logging.info(f"wrote {page}")
    return page


def grid_pictures(grids: Sequence[dict], test_set: str, folder: Path) -> List[Tuple[Path, str]]:
    """One picture per ablation grid scored on ``test_set``: the paired differences of its KD variants to
    the student trained alone (:data:`GRID_METRICS`), with their intervals; (path, caption) each."""
    pictures = []
    for grid in grids:
        per_metric = grid["sets"].get(test_set, {})
        shown = {m: per_metric[m] for m in GRID_METRICS if per_metric.get(m)}
        if not shown:
            continue
        level = f"{grid['level']:.0%}"
        over = {"seed": "seeds (differences taken seed by seed)", "utterance": "utterances"}[grid["pairing"]]
        path = save_paired_differences_png(shown, folder / f"ablation_{safe_name(grid['spec'])}.png", grid["reference"],
                                           title=f"ablation {grid['spec']} on {test_set}")
        pictures.append((path, f"ablation {grid['spec']}: each KD variant minus {grid['reference']} (the student "
                               f"trained alone), mean over {over} with its {level} Student-t interval; a filled "
                               "dot: the interval excludes zero"))
    return pictures


def _relative(path: Path, root: Path) -> str:
    return Path(path).relative_to(root).as_posix()
