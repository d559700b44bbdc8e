"""Ablation grids of KD variants, and their statistics over seeds.

An ablation spec (``conf/ablation/<name>.yaml`` in a recipe) names the variants to train, the seeds to
train each with, and the reference variant that every other one is compared with::

    seeds: [0, 1, 2]
    reference: kd_l2                  # the plain-KD row of the paired differences
    also_compare: [kd_dfkd, none]     # optional: further tables of paired differences to these rows
    metrics: [PESQ_WB, STOI, SI_SDR]  # optional: table columns (default: every metric scored)
    variants:                         # fixed variants, in table order
        none: null                    # the baseline student without KD (enh_kd.sh stage 5)
        kd_l2: conf/kd/kd_l2.yaml     # a KD config as it is
        kd_dfkd_dispatch:             # a KD config with some options changed
            base: conf/kd/kd_dfkd_dispatch_mssp.yaml
            set: {kd_loss_conf.bands: [[20, 1], [20, 1]]}
    grid:                             # variants from every combination of values (one grid or a list)
        base: conf/kd/kd_dispatch_l2.yaml
        prefix: kd_dispatch_l2        # optional: names start with it (default: the base file's name)
        vary:
            kd_loss_conf.topk: [0.2, 0.4, 0.6, 0.8, 1.0]            # -> kd_dispatch_l2_topk0.2, ...
            kd_loss_conf.band_edges: {xover: crossover, 2k: [2000]}  # labelled values -> ..._xover, ..._2k

Config paths are relative to the recipe folder, like ``--kd_configs``. Dotted keys address nested
options (``kd_loss_conf.topk``). Every KD variant is expanded into one self-contained KD yaml, which
the recipe merges onto its student config as for any ``--kd_configs`` entry; its KD loss is built at
expansion time so that a typo or an impossible combination fails before any training.

Statistics (:func:`seed_summary`, :func:`paired_over_seeds`, :func:`paired_over_utterances`) work on
per-utterance scores of every variant and seed; :func:`ablation_table` writes them as markdown.
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import yaml
from scipy import stats

from dispatch.exptree import Experiment, Layout, compact_value, load_experiment, ordered_metrics, seed_suffix
from dispatch.kd_config import KDConfigError, check_kd_options
from dispatch.results import date_text, fmt, machine_description, markdown_table

SPEC_KEYS = ("description", "seeds", "reference", "also_compare", "metrics", "variants", "grid")
GRID_KEYS = ("base", "prefix", "vary")
# Variant names become file names and experiment names (exp/<student_tag>_<name>_seed<N>); enh_kd.sh
# strips a leading train_ or enh_ from config names, so such names would not round-trip.
VARIANT_NAME = re.compile(r"^(?!train_|enh_)[A-Za-z0-9][A-Za-z0-9._-]*$")

# variant -> seed -> utterance -> value, for one test set and metric
Scores = Mapping[str, Mapping[int, Mapping[str, float]]]


class AblationError(ValueError):
    """An ablation spec, a KD config it names or a score file is unusable; the message names the file."""


@dataclass(frozen=True)
class Variant:
    """One row of an ablation: ``name`` names its KD config file and experiments; ``kd_config`` is merged
    onto the student config (None: the baseline student without KD); ``source`` says where it comes from,
    e.g. ``conf/kd/kd_dispatch_l2.yaml + kd_loss_conf.topk=0.2``."""

    name: str
    kd_config: Optional[Dict[str, Any]]
    source: str


@dataclass(frozen=True)
class AblationSpec:
    """A parsed ablation spec (see the module docstring)."""

    name: str
    seeds: Tuple[int, ...]
    reference: str
    metrics: Tuple[str, ...]
    variants: Tuple[Variant, ...]
    description: str = ""
    also_compare: Tuple[str, ...] = ()

    @property
    def baseline(self) -> Optional[Variant]:
        return next((v for v in self.variants if v.kd_config is None), None)

    @property
    def kd_variants(self) -> List[Variant]:
        return [v for v in self.variants if v.kd_config is not None]


# ------------------------------------------------------------------ grid expansion


def set_dotted(conf: Mapping[str, Any], key: str, value: Any) -> Dict[str, Any]:
    """A copy of ``conf`` with the nested option ``a.b.c`` set to ``value`` (missing levels created)."""
    head, _, rest = key.partition(".")
    if not rest:
        return {**conf, head: value}
    inner = conf.get(head) or {}
    if not isinstance(inner, Mapping):
        raise AblationError(f"cannot set {key!r}: {head!r} is {inner!r}, not a mapping of options")
    return {**conf, head: set_dotted(inner, rest, value)}


def value_label(value: Any) -> str:
    """Short, file-name-safe text of an option value: 0.2 -> 0.2, [20, 1] -> 20x1, [[10, 1], [40, 1]] -> 10x1-40x1."""
    if isinstance(value, (list, tuple)):
        return ("-" if any(isinstance(v, (list, tuple)) for v in value) else "x").join(map(value_label, value))
    if isinstance(value, float):
        return str(value)
    return re.sub(r"[^A-Za-z0-9.-]+", "-", str(value))


def _check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not VARIANT_NAME.match(name):
        raise AblationError(
            f"{where}: variant name {name!r} must be letters, digits, '.', '_' or '-', not starting with "
            "train_ or enh_ (it names files and experiments)"
        )
    return name


def _load_kd_yaml(path: Union[str, Path], root: Path, where: str) -> Dict[str, Any]:
    path = Path(path)
    try:
        conf = yaml.safe_load((path if path.is_absolute() else root / path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise AblationError(f"{where}: cannot read KD config {path}: {e}") from e
    if not isinstance(conf, dict):
        raise AblationError(f"{where}: KD config {path} must hold a mapping of options")
    return conf


def _variant(name: str, base: str, conf: Dict[str, Any], overrides: Mapping[str, Any], where: str) -> Variant:
    """The KD config ``conf`` read from ``base``, with the dotted ``overrides`` set. Its KD loss is built as
    EnhancementKDTask does (:func:`dispatch.kd_config.check_kd_options`), so that bad options fail now
    rather than after hours of training; at 16 kHz (the training checks band edges in Hz again at the
    data's rate)."""
    for key, value in overrides.items():
        conf = set_dotted(conf, str(key), value)
    if conf.get("kd_loss") is None:
        raise AblationError(f"{where}: no kd_loss: a variant without KD is written `name: null`")
    try:
        check_kd_options(conf)
    except KDConfigError as e:
        raise AblationError(f"{where}: {e}") from e
    return Variant(name, conf, " + ".join([base, *(f"{k}={v}" for k, v in overrides.items())]))


def _fixed_variant(name: str, entry: Any, root: Path, where: str) -> Variant:
    if entry is None:
        return Variant(name, None, "no KD (baseline student)")
    entry = {"base": entry} if isinstance(entry, str) else entry
    if isinstance(entry, Mapping) and set(entry) <= {"base", "set"} and isinstance(entry.get("base"), str):
        overrides = entry.get("set") or {}
        if not isinstance(overrides, Mapping):
            raise AblationError(f"{where}: `set` must map dotted options to values")
        return _variant(name, entry["base"], _load_kd_yaml(entry["base"], root, where), overrides, where)
    raise AblationError(f"{where}: expected null, a KD config path, or {{base: <path>, set: {{...}}}}")


def _grid_variants(grid: Any, root: Path, where: str) -> List[Variant]:
    if not isinstance(grid, Mapping) or not isinstance(grid.get("base"), str) or set(grid) - set(GRID_KEYS):
        raise AblationError(f"{where}: a grid is {{base: <KD config>, prefix: <name>, vary: {{option: values}}}}")
    vary = grid.get("vary")
    if not isinstance(vary, Mapping) or not vary:
        raise AblationError(f"{where}: `vary` must map dotted options to lists (or labelled mappings) of values")
    base = _load_kd_yaml(grid["base"], root, where)
    prefix = grid.get("prefix") or Path(grid["base"]).stem
    axes: List[List[Tuple[str, str, Any]]] = []  # per option: (option, label, value)
    for option, values in vary.items():
        if isinstance(values, Mapping):
            axes.append([(option, str(label), v) for label, v in values.items()])
        elif isinstance(values, list) and values:
            leaf = str(option).rsplit(".", 1)[-1]
            axes.append([(option, f"{leaf}{value_label(v)}", v) for v in values])
        else:
            raise AblationError(f"{where}: vary.{option} must be a non-empty list or mapping of values")
    variants = []
    for combo in itertools.product(*axes):
        name = _check_name("_".join([prefix, *(label for _, label, _ in combo)]), where)
        overrides = {option: value for option, _, value in combo}
        variants.append(_variant(name, grid["base"], base, overrides, f"{where} ({name})"))
    return variants


def parse_spec(raw: Any, name: str, root: Path = Path("."), where: str = "ablation spec") -> AblationSpec:
    """An :class:`AblationSpec` from the loaded yaml; KD config paths are relative to ``root``.

    Raises:
        AblationError: naming ``where`` (the spec file) and the faulty entry.
    """
    if not isinstance(raw, Mapping):
        raise AblationError(f"{where}: expected a mapping with keys {SPEC_KEYS}")
    unknown = sorted(set(raw) - set(SPEC_KEYS))
    if unknown:
        raise AblationError(f"{where}: unknown key(s) {unknown}; the keys are {SPEC_KEYS}")

    seeds = raw.get("seeds")
    if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise AblationError(f"{where}: seeds must be a non-empty list of distinct integers >= 0, not {seeds!r}")
    metrics = raw.get("metrics") or []
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise AblationError(f"{where}: metrics must be a list of metric names (e.g. [PESQ_WB, STOI])")

    fixed = raw.get("variants") or {}
    if not isinstance(fixed, Mapping):
        raise AblationError(f"{where}: variants must map names to KD configs")
    variants = [_fixed_variant(_check_name(n, where), e, root, f"{where}: variants.{n}") for n, e in fixed.items()]
    grids = raw.get("grid") or []
    for i, grid in enumerate(grids if isinstance(grids, list) else [grids]):
        variants += _grid_variants(grid, root, f"{where}: grid[{i}]" if isinstance(grids, list) else f"{where}: grid")
    if not variants:
        raise AblationError(f"{where}: no variants (give `variants` and/or `grid`)")

    names = [v.name for v in variants]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise AblationError(f"{where}: variant name(s) {repeated} occur twice")
    if sum(v.kd_config is None for v in variants) > 1:
        raise AblationError(f"{where}: only one variant can be the baseline without KD (null)")
    reference = raw.get("reference")
    if reference not in names:
        raise AblationError(f"{where}: reference {reference!r} must be one of the variants {names}")
    also = raw.get("also_compare") or []
    if not isinstance(also, list) or any(a not in names or a == reference for a in also) or len(set(also)) != len(also):
        raise AblationError(f"{where}: also_compare must list distinct variants other than the reference, "
                            f"from {names}, not {also!r}")
    return AblationSpec(name, tuple(seeds), reference, tuple(metrics), tuple(variants),
                        str(raw.get("description", "")), tuple(also))


def load_spec(path: Path, root: Path = Path(".")) -> AblationSpec:
    """Read and expand an ablation spec file; its name is the file name without ``.yaml``."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise AblationError(f"cannot read ablation spec {path}: {e}") from e
    return parse_spec(raw, Path(path).stem, root, where=str(path))


def kd_config_text(variant: Variant, spec_path: Union[str, Path]) -> str:
    """The yaml of one expanded KD variant, with a header saying where it comes from."""
    header = f"# {variant.name}: expanded by dispatch.bin.ablation from {spec_path}\n# {variant.source}\n"
    return header + yaml.safe_dump(variant.kd_config, sort_keys=False, default_flow_style=None)


# ------------------------------------------------------------------ experiments and scores


# (variant name, seed) -> its run, in spec and seed order
Runs = Dict[Tuple[str, int], Experiment]


def _runs(spec: AblationSpec, expdir: Path, student_tag: str, seeds: Optional[Sequence[int]],
          test_sets: Optional[Sequence[str]]) -> Tuple[List[int], Runs, List[str]]:
    """The seeds (default: the spec's), every run, named as enh_kd.sh names it for run_ablation.sh
    (:class:`dispatch.exptree.Layout`), and the test sets (default: those scored in any run)."""
    seeds = list(seeds if seeds is not None else spec.seeds)
    dirs = {(v.name, s): Layout(Path(expdir), "", student_tag, seed_suffix(s)).student_dir(
        None if v.kd_config is None else v.name) for v in spec.variants for s in seeds}
    runs = {key: load_experiment(d.name, d) for key, d in dirs.items()}
    return seeds, runs, list(test_sets) if test_sets else sorted({d for e in runs.values() for d in e.scored_sets()})


def load_scores(spec: AblationSpec, runs: Runs, test_set: str) -> Tuple[Dict[str, Scores], List[str]]:
    """Per-utterance scores of every finished run of a test set, metric -> variant -> seed -> utterance ->
    value, and the metrics found in table order."""
    scores: Dict[str, Any] = {}
    summaries = []
    for (name, seed), exp in runs.items():
        summary = exp.summary(test_set)
        if summary is None:  # scoring not finished
            continue
        summaries.append(summary)
        for metric in summary:
            if (values := exp.scores(test_set, metric)) is not None:
                scores.setdefault(metric, {}).setdefault(name, {})[seed] = values
    found = ordered_metrics(summaries)
    metrics = [m for m in spec.metrics if m in found] if spec.metrics else found
    return scores, metrics


# ------------------------------------------------------------------ statistics


@dataclass(frozen=True)
class Estimate:
    """A mean with its spread (standard deviation or standard error, NaN when undefined) over n units."""

    mean: float
    spread: float
    n: int


def _estimate(values: Sequence[float], spread=stats.sem) -> Estimate:
    """Mean and ``spread`` of ``values`` (NaN spread for fewer than 2; NaN mean for none)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return Estimate(math.nan, math.nan, 0)
    return Estimate(float(np.mean(values)), float(spread(values)) if values.size > 1 else math.nan, int(values.size))


def seed_summary(per_seed: Mapping[int, Mapping[str, float]]) -> Estimate:
    """Mean and sample standard deviation (ddof=1; how much the score moves with the seed) over seeds of
    each seed's mean over utterances (NaN scores left out, as in summary.json)."""
    return _estimate([np.nanmean(list(u.values())) for u in per_seed.values()], lambda v: np.std(v, ddof=1))


def _differences(
    variant: Mapping[int, Mapping[str, float]], reference: Mapping[int, Mapping[str, float]]
) -> Dict[int, Dict[str, float]]:
    """Seed finished for both -> utterance (sorted) -> variant - reference; both scored on the same utterances."""
    diffs = {}
    for s in sorted(set(variant) & set(reference)):
        if set(variant[s]) != set(reference[s]):
            only = sorted(set(variant[s]) ^ set(reference[s]))[:5]
            raise AblationError(
                f"seed {s}: variant and reference were scored on different utterances (e.g. {only}): "
                "rescore both on the same test set"
            )
        diffs[s] = {u: variant[s][u] - reference[s][u] for u in sorted(variant[s])}
    return diffs


def paired_over_seeds(
    variant: Mapping[int, Mapping[str, float]], reference: Mapping[int, Mapping[str, float]]
) -> Estimate:
    """Paired difference variant - reference, seed by seed (seeds finished for both); mean and standard
    error over seeds.

    Runs with the same seed share the initialisation and the data order, so their difference removes what
    the seed does to both; the standard error says how much the gain would move with other training runs
    (n - 1 degrees of freedom: with 3 seeds it is itself rough).
    """
    return _estimate([np.nanmean(list(d.values())) for d in _differences(variant, reference).values()])


def paired_over_utterances(
    variant: Mapping[int, Mapping[str, float]], reference: Mapping[int, Mapping[str, float]]
) -> Estimate:
    """Paired difference variant - reference per utterance (averaged over the common seeds); mean and
    standard error over utterances: how much it would move with another test set of the same size, not
    with other training runs (it understates a method comparison's uncertainty when seeds vary a lot).
    """
    diffs = _differences(variant, reference)
    if not diffs:
        return _estimate([])
    first = min(diffs)
    for s, d in diffs.items():
        if list(d) != list(diffs[first]):
            raise AblationError(f"seed {s} was scored on other utterances than seed {first}")
    per_utt = np.nanmean(np.array([list(d.values()) for d in diffs.values()], dtype=float), axis=0)
    return _estimate(per_utt[~np.isnan(per_utt)])


PAIRED = {"seed": paired_over_seeds, "utterance": paired_over_utterances}


def interval(diff: Estimate, level: float = 0.95) -> Tuple[float, float]:
    """The two-sided Student-t interval mean ± t(1 - (1 - level) / 2, n - 1) x SE of a paired difference
    (``spread``: its standard error over ``n`` seeds or utterances; with 3 seeds t is 4.30); NaN bounds
    with fewer than 2 units."""
    if diff.n < 2 or math.isnan(diff.spread) or math.isnan(diff.mean):
        return math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, diff.n - 1)) * diff.spread
    return diff.mean - half, diff.mean + half


def exceeds_noise(diff: Estimate, level: float = 0.95) -> bool:
    """Whether the :func:`interval` of a paired difference excludes zero (with 3 seeds: a difference of
    more than about four standard errors)."""
    low, high = interval(diff, level)
    return low > 0 or high < 0


def paired_differences(
    spec: AblationSpec, scores: Mapping[str, Scores], metrics: Sequence[str], reference: str, pairing: str = "seed"
) -> Dict[str, Dict[str, Estimate]]:
    """Variant (every one but ``reference``, in spec order) -> metric -> paired difference to ``reference``."""
    paired = PAIRED[pairing]
    return {v.name: {m: paired(scores.get(m, {}).get(v.name, {}), scores.get(m, {}).get(reference, {}))
                     for m in metrics}
            for v in spec.variants if v.name != reference}


# ------------------------------------------------------------------ table


def _text(e: Estimate, signed: bool = False) -> str:
    """A cell: ``mean ± spread`` ("-" over no units); a paired difference (``signed``) gets a † where its
    :func:`interval` excludes zero."""
    if e.n == 0:
        return "-"
    return (fmt(e.mean, signed) + ("" if math.isnan(e.spread) else f" ± {fmt(e.spread)}")
            + (" †" if signed and exceeds_noise(e) else ""))


def set_table(
    spec: AblationSpec,
    scores: Mapping[str, Scores],
    metrics: Sequence[str],
    extra: Mapping[str, Mapping[str, float]],
    planned: int,
    pairing: str = "seed",
) -> str:
    """Markdown table of one test set: a row per variant, a cell per metric.

    Args:
        scores: metric -> variant -> seed -> utterance -> value (finished seeds only).
        extra: single-run rows shown first (noisy input, teacher): name -> metric -> mean.
        planned: number of seeds asked for (the `seeds` column shows finished/planned).
        pairing: a key of :data:`PAIRED`.
    """
    diffs = paired_differences(spec, scores, metrics, spec.reference, pairing)
    rows = [[name, "-", *(fmt(means.get(m)) for m in metrics)] for name, means in extra.items()]
    for v in spec.variants:
        runs = {m: scores.get(m, {}).get(v.name, {}) for m in metrics}
        cells = []
        for m in metrics:
            summary, diff = seed_summary(runs[m]), diffs.get(v.name, {}).get(m)
            cells.append(_text(summary) + (f" ({_text(diff, signed=True)})" if summary.n and diff and diff.n else ""))
        label = f"{v.name} (reference)" if v.name == spec.reference else v.name
        rows.append([label, f"{max(map(len, runs.values()), default=0)}/{planned}", *cells])
    return markdown_table(["variant", "seeds", *metrics], rows, "lr" + "r" * len(metrics))


def difference_table(
    spec: AblationSpec, scores: Mapping[str, Scores], metrics: Sequence[str], reference: str, pairing: str = "seed"
) -> str:
    """Markdown table of the paired differences of every other variant to ``reference`` (± standard error)."""
    rows = [[name, str(max((d.n for d in diffs.values()), default=0)),
             *(_text(diffs[m], signed=True) for m in metrics)]
            for name, diffs in paired_differences(spec, scores, metrics, reference, pairing).items()]
    return markdown_table([f"variant - {reference}", "pairs", *metrics], rows, "lr" + "r" * len(metrics))


BUDGET_KEYS = ("max_epoch", "num_iters_per_epoch", "batch_size", "chunk_length", "optim", "optim_conf",
               "scheduler", "scheduler_conf")


def training_budget(exps: Sequence[Experiment]) -> str:
    """The training budget the experiments' config.yaml files record (epochs, batches, optimiser, schedule);
    differing budgets are listed each with its experiments: a table over mixed budgets must say so."""
    budgets: Dict[str, List[str]] = {}
    for exp in exps:
        if not exp.config:  # not trained yet
            continue
        text = ", ".join(f"{k} {compact_value(exp.config[k])}" for k in BUDGET_KEYS if exp.config.get(k) is not None)
        budgets.setdefault(text, []).append(exp.name)
    if len(budgets) <= 1:
        return next(iter(budgets), "")
    return "; ".join(f"{text} ({', '.join(names)})" for text, names in budgets.items())


def convergence(exp: Experiment) -> Optional[Tuple[str, int, int, float, float]]:
    """How far one training got along its model-selection criterion (the config's first
    ``best_model_criterion``): (criterion, epochs, best epoch, best value, mean gain of the last quarter of
    the epochs over the quarter before in the criterion's direction, ~0 once converged); None without a
    training log or criterion."""
    criteria = exp.config.get("best_model_criterion") or []
    if not criteria:
        return None
    phase, key, mode = criteria[0]
    values = np.array(exp.training_log().get(phase, {}).get(key, []), dtype=float)
    if values.size == 0 or np.isnan(values).all():
        return None
    sign = -1.0 if mode == "min" else 1.0
    best = int(np.nanargmax(sign * values))
    q = max(1, values.size // 4)
    gain = sign * (np.nanmean(values[-q:]) - np.nanmean(values[-2 * q:-q])) if values.size >= 2 else math.nan
    return f"{phase} {key} ({mode})", int(values.size), best + 1, float(values[best]), float(gain)


def convergence_table(spec: AblationSpec, runs: Runs) -> str:
    """Markdown table: per variant, the means over seeds of :func:`convergence` (scored runs only)."""
    rows, criterion = [], ""
    for v in spec.variants:
        found = [c for (name, _), e in runs.items() if name == v.name and e.scored_sets() and (c := convergence(e))]
        if found:
            criterion = found[0][0]
            epochs, best_epoch, best, gain = (np.mean([r[i] for r in found]) for i in range(1, 5))
            rows.append([v.name, str(len(found)), f"{epochs:.0f}", f"{best_epoch:.1f}", f"{best:.3f}", f"{gain:+.3f}"])
    header = ["variant", "runs", "epochs", "best epoch", f"best {criterion}", "gain of the last quarter"]
    return markdown_table(header, rows, "lrrrrr") if rows else ""


def baseline_differences(
    spec: AblationSpec,
    expdir: Path,
    student_tag: str,
    seeds: Optional[Sequence[int]] = None,
    test_sets: Optional[Sequence[str]] = None,
    pairing: str = "seed",
    level: float = 0.95,
) -> Optional[Dict[str, Any]]:
    """Paired difference of every KD variant to the student trained alone (the spec's baseline variant),
    with its ``level`` :func:`interval`, per test set and metric: what the listening page draws.

    Returns:
        ``{"spec", "reference", "pairing", "level", "sets": {set: {metric: {variant: {"mean", "low",
        "high", "n"}}}}}`` (NaN as null); None for a spec without a baseline variant or KD variants.
    """
    if spec.baseline is None or not spec.kd_variants:
        return None
    _, runs, sets = _runs(spec, expdir, student_tag, seeds, test_sets)
    out: Dict[str, Any] = {"spec": spec.name, "reference": spec.baseline.name, "pairing": pairing, "level": level,
                           "sets": {}}
    for dset in sets:
        scores, metrics = load_scores(spec, runs, dset)
        diffs = paired_differences(spec, scores, metrics, spec.baseline.name, pairing)
        out["sets"][dset] = {
            m: {name: {**{k: None if math.isnan(x) else x  # JSON has no NaN
                          for k, x in zip(("mean", "low", "high"), (d[m].mean, *interval(d[m], level)))}, "n": d[m].n}
                for name, d in diffs.items() if d[m].n > 0}
            for m in metrics}
    return out


def ablation_table(
    spec: AblationSpec,
    spec_path: Union[str, Path],
    expdir: Path,
    student_tag: str,
    seeds: Optional[Sequence[int]] = None,
    test_sets: Optional[Sequence[str]] = None,
    extra: Optional[Mapping[str, Path]] = None,
    pairing: str = "seed",
) -> str:
    """The whole ablation results page (markdown) from the runs of :func:`_runs`; ``spec_path`` is only
    quoted, ``extra`` maps the single-run rows shown above the variants (noisy, teacher) to their
    experiment dirs; the other arguments are ``python -m dispatch.bin.ablation table``'s options."""
    if pairing not in PAIRED:
        raise ValueError(f"pairing={pairing!r}: choose one of {sorted(PAIRED)}")
    seeds, runs, sets = _runs(spec, expdir, student_tag, seeds, test_sets)
    training = training_budget(list(runs.values()))
    spread = {
        "seed": "standard error over seeds (differences taken seed by seed)",
        "utterance": "standard error over utterances (differences per utterance, averaged over seeds)",
    }[pairing]
    parts = [
        f"# Ablation: {spec.name}",
        "",
        *([spec.description.strip(), ""] if spec.description.strip() else []),
        f"- date: {date_text()}",
        f"- machine: {machine_description()}",
        *([f"- training: {training}"] if training else []),
        f"- spec: `{spec_path}`; seeds: {' '.join(map(str, seeds))}; "
        f"experiments: `{expdir}/{student_tag}[_<variant>]_seed<N>`",
        "- cells: mean ± standard deviation over seeds of the test-set mean; in brackets the paired "
        f"difference to `{spec.reference}`, mean ± {spread}; † where its 95% Student-t interval excludes zero "
        "(the difference exceeds that noise); `seeds`: finished/planned",
        "",
        markdown_table(["variant", "KD config"], ([v.name, f"`{v.source}`"] for v in spec.variants), "ll"),
    ]
    for dset in sets:
        scores, metrics = load_scores(spec, runs, dset)
        extra_means = {}
        for name, d in (extra or {}).items():
            if (summary := Experiment(name, Path(d)).summary(dset)) is not None:
                extra_means[name] = {m: s["mean"] for m, s in summary.items()}
        table = set_table(spec, scores, metrics, extra_means, len(seeds), pairing) if metrics else "(no scores yet)"
        parts += ["", f"## {dset}", "", table]
        for reference in spec.also_compare if metrics else ():
            parts += ["", f"Paired differences to `{reference}`: mean ± {spread}; † as above.", "",
                      difference_table(spec, scores, metrics, reference, pairing)]
    if not sets:
        parts += ["", "(no scores yet)"]
    training_table = convergence_table(spec, runs)
    if training_table:
        parts += ["", "## Convergence", "",
                  "Means over seeds of each training's model-selection criterion: the epoch of its best value, "
                  "that value, and how much the last quarter of the epochs improved on the quarter before "
                  "(in the criterion's direction; about 0 once the training has converged).", "", training_table]
    return "\n".join(parts) + "\n"
