"""RESULTS.md from an experiment tree: one table per test set, rows = models, columns = metrics.

The tree is read through :mod:`dispatch.exptree` (configs, scores, enhanced audio, training statistics,
the KD loss of each student). Each KD row is compared with the baseline student and with its *plain KD*
reference: the KD row with ``selection: all`` and the same KD loss and options apart from the patch
selection ones (:data:`dispatch.exptree.SELECTION_OPTIONS`), e.g. ``kd_dispatch_l2`` with ``kd_l2``; or
one row named by the user.
"""
from __future__ import annotations

import datetime
import logging
import math
import os
import platform
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from dispatch.export.report import deployment_section
from dispatch.exptree import (
    AudioList,
    Experiment,
    TrainingLog,
    TreeError,
    load_models,
    ordered_metrics,
    read_summary,
    scan_experiments,
    stale_scores,
)
from dispatch.plots import save_band_selection_png, save_selection_png, save_training_curves_png, selection_keys
from dispatch.report.assets import safe_name
from dispatch.report.choose import check_utts, choose_for_set
from dispatch.version import __version__

# Training statistics drawn as curves (espnet2's "loss" is task_weight * task + kd_weight * KD).
CURVE_KEYS = ("loss", "task_loss", "kd_loss", "kd_selected")
MAC_INPUT_SECONDS = 1.0


def plain_kd_references(exps: Sequence[Experiment], plain_kd: Optional[str] = None) -> Dict[str, str]:
    """Row name -> the plain KD row it is compared with: ``plain_kd`` for every other KD row, or (None) for
    each selective KD row the plain KD row of the same :meth:`Experiment.distance_signature`, if any."""
    if plain_kd is not None:
        if plain_kd not in {e.name for e in exps}:
            raise TreeError(f"--plain_kd {plain_kd}: no such row (rows: {', '.join(e.name for e in exps)})")
        return {e.name: plain_kd for e in exps if e.kd_loss_name and e.name != plain_kd}
    plain = {}
    for e in exps:
        if e.is_plain_kd:
            plain.setdefault(e.distance_signature(), e.name)
    return {e.name: plain[e.distance_signature()] for e in exps
            if e.is_selective and e.distance_signature() in plain}


def model_complexity(config_file: Path, fs: int) -> Tuple[float, float]:
    """(Millions of parameters, millions of multiply-accumulates per second of audio) of an espnet2 model.

    The model is built from its config alone (weights do not change the count) and its ``forward_enhance``
    run on ``MAC_INPUT_SECONDS`` of noise under :class:`torch.utils.flop_counter.FlopCounterMode`; MACs =
    FLOPs / 2. The counter sees matrix products and convolutions (RNNs too: oneDNN's fused RNN kernel, which
    it cannot see, is switched off); FFTs, normalisations and activations are not counted.
    """
    from espnet2.tasks.enh import EnhancementTask
    from torch.utils.flop_counter import FlopCounterMode

    model, _ = EnhancementTask.build_model_from_file(str(config_file), None, "cpu")
    model.eval()
    n = int(round(MAC_INPUT_SECONDS * fs))
    mix = torch.randn(1, n, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # oneDNN's flags warn about TF32 on Intel GPUs
        with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False), FlopCounterMode(display=False) as counter:
            model.forward_enhance(mix, torch.tensor([n]), {})
    n_params = sum(p.numel() for p in model.parameters())
    return n_params / 1e6, counter.get_total_flops() / 2 / MAC_INPUT_SECONDS / 1e6


def fmt(x: Optional[float], signed: bool = False, digits: int = 3) -> str:
    """A table cell of a number: ``-`` for None or NaN."""
    if x is None or math.isnan(x):
        return "-"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]], align: str) -> str:
    """A markdown table; ``align`` holds one letter per column, ``l`` (text) or ``r`` (numbers)."""
    rule = "|" + "".join("---:|" if a == "r" else "---|" for a in align)
    return "\n".join(["| " + " | ".join(header) + " |", rule, *("| " + " | ".join(cells) + " |" for cells in rows)])


@dataclass
class Row:
    name: str
    summary: Dict[str, dict]
    params: Optional[float] = None  # millions
    macs: Optional[float] = None  # millions per second of audio
    plain: Optional[str] = None  # plain KD row this one is compared with


def set_table(rows: Sequence[Row], baseline: Optional[str]) -> str:
    """Markdown table: model | params | MMAC/s | metric means (changes against baseline / plain KD) | plain KD."""
    metrics = ordered_metrics([r.summary for r in rows])
    means = {r.name: {m: v.get("mean") for m, v in r.summary.items()} for r in rows}
    lines = []
    for r in rows:
        base = baseline if baseline in means and r.name not in (baseline, "noisy") else None
        # Positional: "(baseline)" or "(baseline / plain KD)", "-" where a reference has no value.
        refs = [base, r.plain] if r.plain else [base] if base else []
        cells = []
        for m in metrics:
            value = means[r.name].get(m)
            deltas = ["-" if value is None or (ref := means.get(ref_name, {}).get(m)) is None
                      else fmt(value - ref, signed=True) for ref_name in refs]
            cells.append(fmt(value) + (f" ({' / '.join(deltas)})" if deltas else ""))
        lines.append([r.name, fmt(r.params), fmt(r.macs, digits=1), *cells, r.plain or ""])
    return markdown_table(["model", "params (M)", "MMAC/s", *metrics, "plain KD"], lines, "lrr" + "r" * len(metrics) + "l")


def utterance_pictures(
    exps: Sequence[Experiment],
    dset: str,
    data_dir: Path,
    images_dir: Path,
    teacher: str,
    reference: Optional[Experiment],
    rank_metric: str,
    utts: Sequence[str] = (),
    fs: int = 16000,
    link_base: Path = Path("."),
) -> List[str]:
    """RESULTS.md's table of the selection figures (:func:`dispatch.plots.save_selection_png`) of a test set.

    The utterances are those of :func:`dispatch.report.choose.choose_for_set` (gains over ``reference``,
    the baseline student or the noisy input), plus ``utts``. Each KD row that distils a selection of
    spectrogram patches gets one figure per utterance, its KGS and mask computed from its own output, the
    teacher's and the clean reference with its own KD loss. Files: ``<images_dir>/<dset>_<utt>_<row>.png``.
    """
    by_name = {e.name: e for e in exps}
    if teacher not in by_name:
        raise TreeError(f"--teacher {teacher}: no such row (rows: {', '.join(by_name)})")
    losses = {e.name: loss for e in exps if (loss := e.selection_loss(fs)) is not None}
    if not losses:
        return []
    noisy, clean = AudioList.read("noisy", data_dir / dset / "wav.scp"), AudioList.read("clean", data_dir / dset / "spk1.scp")
    chosen, rule = choose_for_set(exps, dset, reference.name if reference else "a reference",
                                  reference.scores(dset, rank_metric) if reference else None, noisy.paths.keys(),
                                  utts, rank_metric)
    outputs = {name: by_name[name].enhanced(dset) for name in [teacher, *losses]}
    rows = []
    for utt, reasons in chosen.items():
        wav_fs = noisy.sample_rate(utt)
        inputs = [noisy.mono(utt, wav_fs), clean.mono(utt, wav_fs)]
        waves = {name: audio.mono(utt, wav_fs) for name, audio in outputs.items()}
        figures = [save_selection_png(*inputs, waves[teacher], waves[name], wav_fs, loss,
                                      images_dir / f"{safe_name(dset)}_{safe_name(utt)}_{safe_name(name)}.png",
                                      title=f"{dset} / {utt}: {name} ({'; '.join(reasons)})")
                   for name, loss in losses.items()]
        rows.append([utt, "; ".join(reasons), *(f"[png]({_link(f, link_base)})" for f in figures)])
    if not rows:
        return []
    return ["", f"Spectrograms, Knowledge Gap Score and selected patches per KD student, for {rule}:", "",
            markdown_table(["utterance", "chosen as", *losses], rows, "l" * (len(losses) + 2))]


def training_section(logs: Dict[str, TrainingLog], images_dir: Optional[Path], link_base: Path) -> List[str]:
    """RESULTS.md's training section: the cost table, and with ``images_dir`` the curves of every row with
    statistics and the selected fraction per band of the KD rows ([] when no row has statistics)."""
    cost = training_cost_table(logs)
    trained = {name: log for name, log in logs.items() if log}
    pictures = {}
    if images_dir is not None and trained:
        pictures["training curves"] = save_training_curves_png(
            trained, images_dir / "training_curves.png", keys=CURVE_KEYS)
    if images_dir is not None and any(map(selection_keys, trained.values())):  # the KD rows that select bins
        pictures["fraction of bins selected for KD per frequency band"] = save_band_selection_png(
            trained, images_dir / "band_selection.png")
    if not (cost or pictures):
        return []
    return ["", "## Training", "", *([cost, ""] if cost else []),
            *(f"![{caption}]({_link(path, link_base)})\n" for caption, path in pictures.items())]


def training_cost_table(logs: Dict[str, TrainingLog]) -> str:
    """Markdown table of the training cost of every row with a training log ("" without one).

    espnet2 reports ``train_time`` as the mean seconds per step of an epoch and ``total_count`` as the
    steps so far; their product is the training time proper (no validation or data loading stalls).
    """
    lines = []
    for name, log in logs.items():
        train = log.get("train", {})
        times, counts = train.get("train_time"), train.get("total_count")
        if times and counts:
            steps = [b - a for a, b in zip([0.0, *counts[:-1]], counts)]
            total = sum(t * n for t, n in zip(times, steps)) / 60
            lines.append([name, str(len(times)), str(int(counts[-1])), f"{sum(times) / len(times):.3f}", f"{total:.1f}"])
    return markdown_table(["model", "epochs", "steps", "s/step", "training min"], lines, "lrrrr") if lines else ""


def _link(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def date_text() -> str:
    """Now, as the results pages record it: ``2026-12-08 00:20 UTC``."""
    return datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")


def machine_description() -> str:
    """This machine as the results pages record it: host, architecture, CPUs, GPU, torch and dispatch versions."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.node()}, {platform.machine()}, {os.cpu_count()} CPU(s), {gpu}; "
            f"torch {torch.__version__}, dispatch {__version__}")


def make_results(
    models: Sequence[Tuple[str, Path]],
    test_sets: Sequence[str],
    noisy_dir: Optional[Path] = None,
    baseline: Optional[str] = "baseline",
    command: str = "",
    *,
    plain_kd: Optional[str] = None,
    scan_dir: Optional[Path] = None,
    fs: int = 16000,
    data_dir: Optional[Path] = None,
    images_dir: Optional[Path] = None,
    link_base: Path = Path("."),
    teacher: str = "teacher",
    rank_metric: str = "PESQ_WB",
    utts: Sequence[str] = (),
    report: Optional[Path] = None,
    include: Sequence[Path] = (),
) -> str:
    """The whole RESULTS.md text; pictures are written to ``images_dir`` when it is given. The arguments are
    the options of ``python -m dispatch.bin.make_results`` (see its ``--help``); ``link_base`` is the folder
    RESULTS.md is written to (its links are relative to it), ``plain_kd`` None matches each KD row's
    reference by distance (:func:`plain_kd_references`), ``fs`` also places the KD loss band edges of a
    config that records no rate."""
    exps = load_models(models, reserved=("noisy",))
    names = [e.name for e in exps]
    base = next((e for e in exps if e.name == baseline), None)
    if baseline and base is None:
        raise TreeError(f"--baseline {baseline}: no such row (rows: {', '.join(names)})")
    if scan_dir is not None:
        exps += scan_experiments(scan_dir, exps, test_sets, base and base.exp_dir)
    plain = plain_kd_references(exps, plain_kd)
    if images_dir is not None and data_dir is not None and utts:
        check_utts(utts, set().union(*(AudioList.read("noisy", Path(data_dir) / s / "wav.scp").paths
                                       for s in test_sets)), test_sets)

    complexity = {}
    for e in exps:
        if not e.config_path.is_file():
            continue  # e.g. the outputs of a teacher given as a packed zip
        try:
            complexity[e.name] = model_complexity(e.config_path, e.sample_rate(fs))
        except Exception as err:  # any espnet2 model may fail a 1 s random input; the table must still be written
            logging.warning(f"{e.name}: parameters and MACs not counted ({type(err).__name__}: {err})")

    parts = [
        "# Results",
        "",
        f"- date: {date_text()}",
        f"- machine: {machine_description()}",
        *([f"- command: `{command}`"] if command else []),
        "- values are means over the test set; in brackets the change against the baseline student"
        f" ({baseline}), then after ' / ' against the row's plain KD reference (last column: the KD row with"
        " `selection: all` and the same distance)",
        "- params: parameters of the model; MMAC/s: millions of multiply-accumulates per second of audio"
        " (FLOPs / 2 counted by torch.utils.flop_counter on 1 s of input; matrix products, convolutions"
        " and RNNs; FFTs, normalisations and activations not counted)",
        "",
        markdown_table(["model", "experiment", "config", "KD"],
                       ([e.name, f"`{e.exp_dir}`", f"`{e.config_path}`", e.kd_description()] for e in exps), "llll"),
    ]
    if report is not None:
        parts += ["", f"Listening page: [{_link(Path(report), link_base)}]({_link(Path(report), link_base)})"
                  " (the page and the pictures below are written with the experiments, which git does not keep:"
                  " rerun the results stage to see them)"]
    # Scores of other audio than the lists name now are refused (a row given on the command line) or
    # left out with a warning (a row found by --scan_dir): no row may describe data no longer there.
    configured = {"noisy", *names}
    noisy = Experiment("noisy", Path(noisy_dir)) if noisy_dir is not None else None
    for dset in test_sets:
        rows = []
        for e in ([noisy] if noisy else []) + exps:
            if (summary := read_summary(e.scoring_dir(dset))) is None:
                continue
            if why := stale_scores(e.scoring_dir(dset)):
                message = f"{e.name}: the scores in {e.scoring_dir(dset)} are stale: {why}; rerun the scoring (stage 8)"
                if e.name in configured:
                    raise TreeError(message)
                logging.warning(f"{message}; row left out")
                continue
            rows.append(Row(e.name, summary, *complexity.get(e.name, (None, None)), plain.get(e.name)))
        parts += ["", f"## {dset}", "", set_table(rows, baseline) if rows else "(no scores yet)"]
        if images_dir is not None and data_dir is not None and rows:
            # The gains that choose the pictured utterances are over the baseline, else the noisy input.
            parts += utterance_pictures(exps, dset, Path(data_dir), Path(images_dir), teacher, base or noisy,
                                        rank_metric, utts, fs, link_base)
    parts += training_section({e.name: e.training_log() for e in exps}, images_dir and Path(images_dir), link_base)
    # The ONNX export records of stage 12, so that a rerun of this stage keeps their table.
    deployment = deployment_section([(e.name, e.exp_dir) for e in exps])
    parts += ["", *deployment] if deployment else []
    for page in include:
        parts += ["", *demoted_headings(page)]
    return "\n".join(parts) + "\n"


def demoted_headings(page: Path) -> List[str]:
    """The lines of a markdown page with every heading one level down, to sit inside RESULTS.md."""
    try:
        text = Path(page).read_text()
    except OSError as e:
        raise TreeError(f"--include {page}: cannot read it ({e})") from e
    return [("#" + line) if re.match(r"#{1,5} ", line) else line for line in text.rstrip("\n").splitlines()]
