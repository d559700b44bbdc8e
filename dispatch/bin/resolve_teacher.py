#!/usr/bin/env python3
"""Print "<config.yaml> <model file>" of a model given as exp dir, packed zip or model zoo name.

    python -m dispatch.bin.resolve_teacher exp/enh_teacher --model_file_name valid.loss.best.pth

Exits 1 with the reason when the model cannot be found (e.g. a zoo name offline). With ``--check`` the
model is also built and its weights loaded, so that a truncated checkpoint is named where it is given
(enh_kd.sh's stage 4), not when the first training or cache job loads it.
"""
import argparse
import sys
from pathlib import Path
from typing import List, Optional

from dispatch.teacher import TeacherError, load_teacher, resolve_teacher, teacher_sample_rate


def main(cmd: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="experiment dir, packed zip or espnet_model_zoo name")
    parser.add_argument("--model_file_name", default=None,
                        help="weights inside an experiment dir (default: the best found)")
    parser.add_argument("--check", action="store_true",
                        help="also build the model and load its weights (stage 4 does, for a given teacher)")
    parser.add_argument("--fs", type=int, default=None,
                        help="with --check: the recipe's sampling rate, which the teacher's config must match")
    args = parser.parse_args(cmd)
    model_file = None
    if args.model_file_name and Path(args.model).is_dir():
        model_file = str(Path(args.model) / args.model_file_name)
    try:
        config, weights = resolve_teacher(args.model, teacher_model_file=model_file)
        if args.check:
            _, conf = load_teacher(config, weights)
            teacher_fs = teacher_sample_rate(conf)
            if args.fs and teacher_fs and teacher_fs != args.fs:
                raise TeacherError(f"{config} runs at fs={teacher_fs}, but the recipe's --fs is {args.fs}")
    except TeacherError as e:
        message = str(e) if str(e).startswith("teacher_model=") else f"teacher_model={args.model}: {e}"
        print(f"resolve_teacher: {message}", file=sys.stderr)
        return 1
    print(config, weights)
    return 0


if __name__ == "__main__":
    sys.exit(main())
