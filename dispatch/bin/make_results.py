#!/usr/bin/env python3
"""Write RESULTS.md from scored experiments.

    python -m dispatch.bin.make_results --output RESULTS.md --test_sets "test" --noisy exp/noisy \\
        teacher=exp/enh_teacher baseline=exp/enh_student kd_dispatch=exp/enh_student_kd_dispatch
"""
import argparse
import sys
from pathlib import Path
from typing import List, Optional

from dispatch.data.atomic import write_text_atomic
from dispatch.results import make_results


def main(cmd: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="name=experiment_dir, in table order")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--test_sets", required=True, help="space-separated test set names")
    parser.add_argument("--noisy", type=Path, default=None, help="dir with enhanced_<set>/scoring of the input")
    parser.add_argument("--baseline", default="baseline", help="row the others are compared with")
    parser.add_argument("--model_file", default="valid.loss.best.pth")
    parser.add_argument("--command", default="", help="the command that made the experiments")
    args = parser.parse_args(cmd)
    models = []
    for item in args.models:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            print(f"make_results: '{item}' is not name=experiment_dir", file=sys.stderr)
            return 2
        models.append((name, Path(path)))
    text = make_results(models, args.test_sets.split(), args.noisy, args.baseline, args.model_file, args.command)
    write_text_atomic(args.output, text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
