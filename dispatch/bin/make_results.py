#!/usr/bin/env python3
"""Write RESULTS.md from scored experiments, and its pictures.

    python -m dispatch.bin.make_results --output RESULTS.md --test_sets "test" --noisy exp/noisy \\
        --scan_dir exp --data_dir dump/raw --images_dir exp/results/images --fs 16000 \\
        teacher=exp/teacher_blstm baseline=exp/student_tcn_small kd_l2=exp/student_tcn_small_kd_l2 \\
        kd_dispatch_l2=exp/student_tcn_small_kd_dispatch_l2

One table per test set: a row per model (noisy input, teacher, baseline student, each KD student), a
column per metric with the change against --baseline and against the row's plain KD reference, plus
parameters and MACs per second of audio. Before the tables, the machine, date, command and each row's
config and KD options. With --images_dir: training curves and the selected fraction per band over
epochs; with --data_dir too, for the best/median/worst --rank_metric gain of the best KD student over
the baseline (the noisy input without one; plus --utts), spectrograms with the Knowledge Gap Score map
and the selected patches of each KD student that selects patches (the same rule as the listening page).
Each --include page (e.g. RESULTS_ablation_method.md, written by run_ablation.sh) is appended, its headings
one level down. RESULTS.md links the pictures relatively. The file and pictures are rewritten (atomically) on each run.
"""
import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

from dispatch.data.atomic import write_text_atomic
from dispatch.exptree import TreeError, model_arg
from dispatch.results import make_results


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=model_arg, help="name=experiment_dir, in table order")
    parser.add_argument("--output", type=Path, required=True, help="RESULTS.md to write")
    parser.add_argument("--test_sets", required=True, help="space-separated test set names")
    parser.add_argument("--noisy", type=Path, default=None, help="dir with enhanced_<set>/scoring of the input")
    parser.add_argument("--baseline", default="baseline", help="row the others are compared with ('' for none)")
    parser.add_argument("--plain_kd", default=None,
                        help="row every KD row is compared with (default: per KD row, the row with "
                             "`selection: all` and the same KD loss and distance options)")
    parser.add_argument("--scan_dir", type=Path, default=None,
                        help="also add every other scored experiment found in this dir (e.g. exp), so that a "
                             "KD variant trained by an earlier run keeps its row")
    parser.add_argument("--fs", type=int, default=16000,
                        help="sampling rate of the 1 s complexity input when a config records none")
    parser.add_argument("--images_dir", type=Path, default=None, help="folder of the pictures (default: none)")
    parser.add_argument("--data_dir", type=Path, default=None,
                        help="folder of the test data dirs, <data_dir>/<set>/{wav,spk1}.scp (utterance pictures)")
    parser.add_argument("--teacher", default="teacher", help="row whose output the selection pictures use")
    parser.add_argument("--rank_metric", default="PESQ_WB", help="per-utterance metric that chooses the utterances")
    parser.add_argument("--utts", default="", help="comma-separated utterance ids pictured besides the chosen ones")
    parser.add_argument("--command", default="", help="the command that made the experiments")
    parser.add_argument("--report", type=Path, default=None, help="listening page to link (exp/report/index.html)")
    parser.add_argument("--include", type=Path, action="append", default=[],
                        help="markdown page appended at the end (repeatable), e.g. RESULTS_ablation_method.md")
    return parser


def main(cmd: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (%(module)s) %(levelname)s: %(message)s")
    models = args.models
    try:
        text = make_results(
            models, args.test_sets.split(), args.noisy, args.baseline or None, args.command,
            plain_kd=args.plain_kd, scan_dir=args.scan_dir, fs=args.fs,
            data_dir=args.data_dir, images_dir=args.images_dir, link_base=args.output.parent,
            teacher=args.teacher, rank_metric=args.rank_metric, utts=[u for u in args.utts.split(",") if u],
            report=args.report, include=args.include,
        )
    except TreeError as e:
        logging.error(f"make_results: {e}")
        return 1
    write_text_atomic(args.output, text)
    logging.info(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
