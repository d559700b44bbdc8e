#!/usr/bin/env python3
"""Write the listening page of scored experiments: exp/report/index.html, a static page with its assets.

    python -m dispatch.bin.make_report --output_dir exp/report --results_md RESULTS.md --test_set test \\
        --data_dir dump/raw/test --noisy_scoring exp/noisy/enhanced_test/scoring --baseline baseline \\
        --ablation_root exp/ablation teacher=exp/teacher_blstm baseline=exp/student_tcn_small \\
        kd_dispatch_l2=exp/student_tcn_small_kd_dispatch_l2

The page shows, for the utterances with the best, median and worst per-utterance --rank_metric gain of
the best KD student over --baseline (plus --utts), a player, a spectrogram and, for DISPatch/DFKD
students, the selection mask of every system; with --ablation_root, one picture per ablation grid of its
paired differences to the student alone; the training curves; and RESULTS.md's tables, folded. Audio files are
hard-linked (copied across file systems) into <output_dir>/assets, so the folder can be moved. A rerun
with unchanged inputs does nothing.
"""
import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

from dispatch.exptree import TreeError, model_arg
from dispatch.report.page import build_report


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=model_arg, help="name=experiment_dir, in column order")
    parser.add_argument("--output_dir", type=Path, required=True, help="folder of index.html and assets/")
    parser.add_argument("--results_md", type=Path, required=True, help="RESULTS.md of dispatch.bin.make_results")
    parser.add_argument("--test_set", required=True, help="test set shown (<exp>/enhanced_<test_set>)")
    parser.add_argument("--data_dir", type=Path, required=True, help="its data dir (wav.scp, spk1.scp)")
    parser.add_argument("--noisy_scoring", type=Path, required=True, help="scoring folder of the noisy input")
    parser.add_argument("--baseline", default="baseline",
                        help="model the gains are measured against ('' for the noisy input)")
    parser.add_argument("--teacher", default="teacher", help="model whose output the selection masks use")
    parser.add_argument("--utts", default="", help="comma-separated utterance ids shown besides the ranked ones")
    parser.add_argument("--rank_metric", default="PESQ_WB", help="per-utterance metric that ranks the gains")
    parser.add_argument("--ablation_root", type=Path, default=None,
                        help="folder of the ablation grids (exp/ablation): a picture of each grid's paired "
                             "differences to the student alone follows the players")
    parser.add_argument("--show_metrics", default="PESQ_WB,STOI,SI_SDR",
                        help="comma-separated per-utterance scores shown under each player")
    return parser


def main(cmd: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (%(module)s) %(levelname)s: %(message)s")
    models = args.models
    try:
        build_report(
            args.output_dir, args.results_md, args.test_set, args.data_dir, args.noisy_scoring, models,
            baseline=args.baseline, teacher=args.teacher,
            utts=[u for u in args.utts.split(",") if u],
            rank_metric=args.rank_metric,
            show_metrics=[m for m in args.show_metrics.split(",") if m],
            ablation_root=args.ablation_root,
        )
    except (TreeError, ValueError) as e:
        logging.error(str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
