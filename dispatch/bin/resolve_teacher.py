#!/usr/bin/env python3
"""Print "<config.yaml> <model file>" of a model given as exp dir, packed zip or model zoo name.

    python -m dispatch.bin.resolve_teacher exp/enh_teacher --model_file_name valid.loss.best.pth

Exits 1 with the reason when the model cannot be found (e.g. a zoo name offline).
"""
import argparse
import sys
from pathlib import Path
from typing import List, Optional

from dispatch.teacher import TeacherError, resolve_teacher


def main(cmd: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="experiment dir, packed zip or espnet_model_zoo name")
    parser.add_argument("--model_file_name", default=None,
                        help="weights inside an experiment dir (default: the best found)")
    args = parser.parse_args(cmd)
    model_file = None
    if args.model_file_name and Path(args.model).is_dir():
        model_file = str(Path(args.model) / args.model_file_name)
    try:
        config, weights = resolve_teacher(args.model, teacher_model_file=model_file)
    except TeacherError as e:
        print(f"resolve_teacher: {e}", file=sys.stderr)
        return 1
    print(config, weights)
    return 0


if __name__ == "__main__":
    sys.exit(main())
