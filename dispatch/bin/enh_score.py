#!/usr/bin/env python3
"""Score enhanced speech per utterance; write Kaldi-style score files, summary.json and result.txt.

Example:
    python -m dispatch.bin.enh_score --ref_scp data/test/spk1.scp \\
        --inf_scp exp/x/enhanced_test/spk1.scp --output_dir exp/x/enhanced_test/scoring \\
        --metrics pesq_wb,stoi,estoi,si_sdr,sdr,csig,cbak,covl --nj 2

Outputs (under --output_dir; the unprocessed input of --noisy_scp goes to <output_dir>/noisy/):
    <METRIC>       "uttid value" lines sorted by uttid, e.g. PESQ_WB, SI_SDR ("nan": no score)
    summary.json   {"config": ..., "enhanced": {METRIC: {mean, std, count, num_nan}}, "noisy": ...}
    result.txt     the same summary as a table
Per-utterance scores are appended to partial_scores.jsonl while running, so a killed run resumes
where it stopped; a rerun whose summary.json matches the arguments does nothing.

Split into jobs (stage 8 of enh_kd.sh runs them through ``${decode_cmd} JOB=1:N``, so that on a cluster the
scoring runs on its nodes): ``--num_parts N --part J`` scores the J-th of N shares of the utterances into
partial_scores.J.jsonl (and writes nothing else), then ``--merge`` (same other arguments) writes the outputs
from every partial file, refusing while an utterance is unscored; ``--check`` exits 0 when summary.json is
complete for the arguments, else 1. A part reuses the scores of every partial file with the same arguments,
whatever split wrote them. The arguments include the
lists' text and the size and modification time of every audio file they name: audio rewritten under
the same names is rescored.
"""
import argparse
import hashlib
import json
import logging
import math
import multiprocessing
import sys
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from dispatch.data.atomic import write_text_atomic
from dispatch.fingerprint import audio_digest
from dispatch.scoring import (
    DEFAULT,
    METRICS,
    NON_INTRUSIVE_DEFAULT,
    MetricError,
    Scorer,
)
from dispatch.scoring.dnsmos import DNSMOSUnavailableError
from dispatch.scoring.inputs import (
    ScoringInputError,
    check_pair,
    check_same_keys,
    load_pair,
    read_scp,
)

PARTIAL = "partial_scores.jsonl"
PARTIAL_GLOB = "partial_scores*.jsonl"  # the one of a whole run and those of --part J (partial_scores.J.jsonl)
SUMMARY = "summary.json"
RESULT = "result.txt"
Scores = Dict[str, float]


class Job(NamedTuple):
    system: str  # "enhanced" or "noisy"
    utt: str
    est_path: str
    ref_path: Optional[str]


def file_fingerprint(path: Optional[str]) -> Optional[Dict[str, str]]:
    """Absolute path and content hash of an scp file, and a hash of the size and mtime of every audio
    file it lists (:func:`dispatch.fingerprint.audio_digest`), so that a changed list, or audio
    rewritten under the same names, is rescored."""
    if path is None:
        return None
    return {"path": str(Path(path).resolve()), "sha1": hashlib.sha1(Path(path).read_bytes()).hexdigest(),
            "audio_sha256": audio_digest(path)}


def read_partial(path: Path, config: dict, warn: bool = True) -> Optional[List[dict]]:
    """The records of a partial file written with ``config`` (lines torn by a kill dropped); None if it
    is missing or was written with other arguments."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    try:
        same_config = json.loads(lines[0]).get("config") == config
    except (IndexError, json.JSONDecodeError):
        same_config = False
    if not same_config:
        if warn:
            logging.warning(f"{path} was written with other arguments; starting afresh")
        return None
    records = []
    for line in lines[1:]:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # torn by a kill
    return records


def scored_already(output_dir: Path, config: dict) -> Dict[Tuple[str, str], Scores]:
    """Scores in every partial file of ``output_dir`` written with ``config`` (any split)."""
    done: Dict[Tuple[str, str], Scores] = {}
    for path in sorted(output_dir.glob(PARTIAL_GLOB)):
        for record in read_partial(path, config, warn=False) or []:
            done[record["system"], record["utt"]] = record["scores"]
    return done


class PartialScores:
    """Append-only JSON-lines cache of finished utterances, valid only for one configuration.

    The first line holds the configuration; each later line one {"system", "utt", "scores"}.
    A line cut short by a kill is dropped when the cache is reopened.
    """

    def __init__(self, path: Path, config: dict):
        self.path = path
        self.done: Dict[Tuple[str, str], Scores] = {}
        records = read_partial(path, config) or []
        for record in records:
            self.done[record["system"], record["utt"]] = record["scores"]
        lines = [json.dumps({"config": config})] + [json.dumps(r) for r in records]
        write_text_atomic(path, "".join(line + "\n" for line in lines))  # drops a torn last line
        self._file = open(path, "a", encoding="utf-8")

    def add(self, system: str, utt: str, scores: Scores) -> None:
        self.done[system, utt] = scores
        self._file.write(json.dumps({"system": system, "utt": utt, "scores": scores}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


_scorer: Optional[Scorer] = None
_tolerance_s = 0.0


def _init_worker(scorer: Scorer, tolerance_s: float) -> None:
    global _scorer, _tolerance_s
    _scorer, _tolerance_s = scorer, tolerance_s


def _score(job: Job) -> Tuple[str, str, Scores]:
    """Score one utterance in a worker; errors name the utterance and file."""
    est, ref, fs = load_pair(job.utt, job.est_path, job.ref_path, _tolerance_s)
    try:
        return job.system, job.utt, _scorer(ref, est, fs)
    except MetricError as e:
        raise MetricError(f"{job.utt} ({job.est_path}): {e}") from None


def _run(jobs: Sequence[Job], scorer: Scorer, tolerance_s: float, nj: int) -> Iterator[Tuple[str, str, Scores]]:
    """Scores of the jobs as they finish, from ``nj`` worker processes (in this process if nj is 1)."""
    if nj <= 1 or len(jobs) <= 1:
        _init_worker(scorer, tolerance_s)
        yield from map(_score, jobs)
        return
    with multiprocessing.Pool(nj, initializer=_init_worker, initargs=(scorer, tolerance_s)) as pool:
        yield from pool.imap_unordered(_score, jobs)


def summarize(values: Sequence[float]) -> Dict[str, Optional[float]]:
    """Mean, (population) std and count of the finite values, and how many were NaN."""
    finite = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    has = len(finite) > 0
    return {
        "mean": float(finite.mean()) if has else None,
        "std": float(finite.std()) if has else None,
        "count": len(finite),
        "num_nan": len(values) - len(finite),
    }


def result_table(summary: Dict[str, Dict[str, dict]], metrics: Sequence[str]) -> str:
    """Human-readable "mean ± std (count)" table, with the improvement over the noisy input if scored."""
    systems = [s for s in ("enhanced", "noisy") if s in summary]
    header = ["metric"] + systems + (["improvement"] if len(systems) == 2 else [])
    rows = [header]
    for name in (m.upper() for m in metrics):
        stats = [summary[s][name] for s in systems]
        cells = [name] + [
            "-" if st["mean"] is None else f"{st['mean']:.4f} ± {st['std']:.4f} ({st['count']})" for st in stats
        ]
        if len(systems) == 2:
            gain = None if None in (stats[0]["mean"], stats[1]["mean"]) else stats[0]["mean"] - stats[1]["mean"]
            cells.append("-" if gain is None else f"{gain:+.4f}")
        rows.append(cells)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n" for row in rows)


def write_outputs(output_dir: Path, scores: Dict[Tuple[str, str], Scores], utts_of: Dict[str, List[str]],
                  metrics: Sequence[str], config: dict) -> None:
    """Score files per system and metric, then result.txt, then summary.json (which marks completion)."""
    summary: Dict[str, Dict[str, dict]] = {}
    for system, utts in utts_of.items():
        folder = output_dir if system == "enhanced" else output_dir / system
        folder.mkdir(parents=True, exist_ok=True)
        utts = sorted(utts)
        summary[system] = {}
        for name in metrics:
            values = [scores[system, utt][name] for utt in utts]
            missing = [utt for utt, value in zip(utts, values) if math.isnan(value)]
            if missing:
                logging.warning(f"{system} {name.upper()}: nan for {len(missing)} utterance(s), e.g. {missing[:5]}")
            write_text_atomic(folder / name.upper(), "".join(f"{u} {v!r}\n" for u, v in zip(utts, values)))
            summary[system][name.upper()] = summarize(values)
    write_text_atomic(output_dir / RESULT, result_table(summary, metrics))
    write_text_atomic(output_dir / SUMMARY, json.dumps({"config": config, **summary}, indent=2) + "\n")


def is_complete(output_dir: Path, config: dict) -> bool:
    """True if a previous run with the same configuration wrote its summary."""
    try:
        return json.loads((output_dir / SUMMARY).read_text(encoding="utf-8")).get("config") == config
    except (OSError, json.JSONDecodeError):
        return False


def list_jobs(ref_scp: Optional[str], system_scps: Dict[str, str]) -> List[Job]:
    """Every (system, utterance) to score, in list order; the lists must name the same utterances."""
    ref = None if ref_scp is None else read_scp(ref_scp)
    jobs = []
    for system, scp in system_scps.items():
        entries = read_scp(scp)
        if ref is not None:
            check_same_keys(ref, entries, ref_scp, scp)
        jobs += [Job(system, utt, path, None if ref is None else ref[utt]) for utt, path in entries.items()]
    return jobs


def check_jobs(jobs: Sequence[Job], scorer: Scorer, tolerance_s: float) -> None:
    """Check every pair's headers (rates, lengths) before any scoring."""
    for job in jobs:
        fs = check_pair(job.utt, job.est_path, job.ref_path, tolerance_s)
        try:
            scorer.check_rate(fs)
        except ValueError as e:
            raise ScoringInputError(f"{job.utt}: {job.est_path}: {e}") from None


def plan_jobs(ref_scp: Optional[str], system_scps: Dict[str, str], scorer: Scorer, tolerance_s: float) -> List[Job]:
    """Read the lists and check every pair's headers (keys, rates, lengths) before any scoring."""
    jobs = list_jobs(ref_scp, system_scps)
    check_jobs(jobs, scorer, tolerance_s)
    return jobs


def share(jobs: Sequence[Job], part: int, num_parts: int) -> List[Job]:
    """The ``part``-th (1-based) of ``num_parts`` interleaved shares of the jobs."""
    return list(jobs[part - 1::num_parts])


def score_jobs(jobs: Sequence[Job], partial: Path, config: dict, scorer: Scorer, tolerance_s: float,
               nj: int) -> None:
    """Score the jobs not in any partial file of the folder yet, appending to ``partial``."""
    done = scored_already(partial.parent, config)
    cache = PartialScores(partial, config)
    todo = [job for job in jobs if (job.system, job.utt) not in done and (job.system, job.utt) not in cache.done]
    logging.info(f"scoring {len(todo)} of {len(jobs)} utterances ({len(jobs) - len(todo)} scored already) "
                 f"with {nj} process(es)")
    try:
        with tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="enh_score", unit="utt") as bar:
            for system, utt, scores in _run(todo, scorer, tolerance_s, nj):
                cache.add(system, utt, scores)
                bar.update()
    finally:
        cache.close()


def merge(output_dir: Path, jobs: Sequence[Job], system_scps: Dict[str, str], metrics: Sequence[str],
          config: dict) -> None:
    """Write the outputs from the partial files (every utterance must be scored), then remove them."""
    done = scored_already(output_dir, config)
    missing = [job for job in jobs if (job.system, job.utt) not in done]
    if missing:
        raise ScoringInputError(
            f"{len(missing)} of {len(jobs)} utterances are not scored yet in {output_dir} "
            f"(e.g. {', '.join(f'{j.system} {j.utt}' for j in missing[:5])}): run every --part first")
    utts_of = {system: [job.utt for job in jobs if job.system == system] for system in system_scps}
    write_outputs(output_dir, done, utts_of, metrics, config)
    for path in output_dir.glob(PARTIAL_GLOB):
        path.unlink()
    logging.info(f"wrote {output_dir / RESULT}:\n{(output_dir / RESULT).read_text(encoding='utf-8')}")


def score(args: argparse.Namespace) -> int:
    names = args.metrics or list(NON_INTRUSIVE_DEFAULT if args.no_ref else DEFAULT)
    scorer = Scorer(names, composite_pesq=args.composite_pesq, dnsmos_dir=args.dnsmos_dir)
    if args.no_ref and scorer.needs_ref:
        intrusive = [n for n in scorer.names if METRICS[n].needs_ref]
        raise ScoringInputError(f"--no_ref allows reference-free metrics only, not {intrusive}")
    if not args.no_ref and args.ref_scp is None:
        raise ScoringInputError("--ref_scp is required unless --no_ref is given")
    if args.part is not None and not 1 <= args.part <= args.num_parts:
        raise ScoringInputError(f"--part {args.part} is not between 1 and --num_parts {args.num_parts}")
    if sum((args.part is not None, args.merge, args.check)) > 1:
        raise ScoringInputError("give at most one of --part, --merge and --check")
    ref_scp = None if args.no_ref else args.ref_scp

    config = {
        "metrics": list(scorer.names),
        "ref_scp": file_fingerprint(ref_scp),
        "inf_scp": file_fingerprint(args.inf_scp),
        "noisy_scp": file_fingerprint(args.noisy_scp),
        "composite_pesq": args.composite_pesq,
        "dnsmos_dir": args.dnsmos_dir,
        "length_tolerance": args.length_tolerance,
    }
    output_dir = Path(args.output_dir)
    if is_complete(output_dir, config):
        logging.info(f"{output_dir / SUMMARY} is complete for these arguments; nothing to do")
        return 0
    if args.check:
        return 1

    system_scps = {"enhanced": args.inf_scp}
    if args.noisy_scp is not None:
        system_scps["noisy"] = args.noisy_scp
    jobs = list_jobs(ref_scp, system_scps)
    if args.merge:
        merge(output_dir, jobs, system_scps, scorer.names, config)
        return 0
    mine = jobs if args.part is None else share(jobs, args.part, args.num_parts)
    check_jobs(mine, scorer, args.length_tolerance)

    output_dir.mkdir(parents=True, exist_ok=True)
    partial = output_dir / (PARTIAL if args.part is None else f"partial_scores.{args.part}.jsonl")
    score_jobs(mine, partial, config, scorer, args.length_tolerance, args.nj)
    if args.part is None:
        merge(output_dir, jobs, system_scps, scorer.names, config)
    return 0


def metric_list(text: str) -> List[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown metric(s) {unknown}; choose from {sorted(METRICS)}")
    return names


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Per-utterance speech enhancement scores (PESQ, STOI, SI-SDR, SDR, composite, DNSMOS)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--ref_scp", help="clean references: 'uttid /path.wav' lines")
    parser.add_argument("--inf_scp", required=True, help="estimates to score: 'uttid /path.wav' lines")
    parser.add_argument("--noisy_scp", help="also score the unprocessed input (written to <output_dir>/noisy)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument(
        "--metrics", type=metric_list, default=None,
        help=f"comma-separated, from {', '.join(METRICS)}; None: {','.join(DEFAULT)} "
        f"(with --no_ref: {','.join(NON_INTRUSIVE_DEFAULT)})",
    )
    parser.add_argument("--no_ref", action="store_true", help="no reference: reference-free metrics only")
    parser.add_argument("--nj", type=int, default=1, help="number of worker processes")
    parser.add_argument("--num_parts", type=int, default=1, help="number of shares the utterances are split into")
    parser.add_argument("--part", type=int, help="score only this share (1..num_parts), into partial_scores.<part>.jsonl")
    parser.add_argument("--merge", action="store_true", help="write the outputs from the scored parts")
    parser.add_argument("--check", action="store_true",
                        help="exit 0 if summary.json is complete for these arguments, else 1; scores nothing")
    parser.add_argument(
        "--length_tolerance", type=float, default=0.02,
        help="seconds by which an estimate may differ in length from its reference (both are cut to the shorter)",
    )
    parser.add_argument(
        "--composite_pesq", choices=("nb_raw", "wb"), default="nb_raw",
        help="PESQ inside CSIG/CBAK/COVL: raw narrow-band P.862 as in Loizou's composite.m, or wide-band MOS-LQO",
    )
    parser.add_argument("--dnsmos_dir", help="folder with sig_bak_ovr.onnx and model_v8.onnx; None: speechmos's")
    parser.add_argument(
        "--log_level", type=str.upper, default="INFO", choices=("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    try:
        return score(args)
    except (ScoringInputError, MetricError, DNSMOSUnavailableError) as e:
        sys.exit(f"enh_score: error: {e}")


if __name__ == "__main__":
    sys.exit(main())
