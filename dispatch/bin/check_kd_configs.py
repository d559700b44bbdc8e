#!/usr/bin/env python3
"""Check training configs before any stage runs: every KD yaml, and the student and teacher configs.

    python -m dispatch.bin.check_kd_configs --student_config conf/train_student.yaml --fs 16000 \\
        conf/kd/kd_dispatch_l2.yaml conf/kd/kd_dfkd.yaml

enh_kd.sh runs it at its start, so that a typo in the last KD yaml stops the run before the teacher is
trained or cached, not at stage 6. Each file is read as yaml (a mapping); its keys must be options of
dispatch.bin.enh_kd_train; each KD yaml, merged on top of the student config the way stage 6 merges it,
must name a KD loss whose options exist, have the right types (``topk: "0.5"`` is refused, not coerced)
and lie in range, with ``kd_weight`` and ``task_weight`` numbers >= 0, not both 0. enh_kd_train makes
the same KD checks itself (dispatch.kd_config). Every problem is printed, naming the file and the key;
exits 1 if there is any.
"""
import argparse
import difflib
import sys
from pathlib import Path
from typing import List, Optional

import yaml

from dispatch.bin.merge_configs import merge
from dispatch.kd_config import KDConfigError, check_kd_options
from dispatch.teacher import teacher_sample_rate


def load_config(path: Path) -> dict:
    """The yaml mapping of ``path``; KDConfigError naming the file if it cannot be read as one."""
    try:
        conf = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise KDConfigError(f"cannot be read as yaml: {e}") from e
    if conf is None:
        return {}
    if not isinstance(conf, dict):
        raise KDConfigError(f"must hold a mapping of options, not {type(conf).__name__}")
    return conf


def training_options() -> List[str]:
    """Option names (yaml keys) of dispatch.bin.enh_kd_train: espnet2's enh_train ones and the KD ones."""
    from dispatch.task import EnhancementKDTask  # espnet2: a few seconds, once

    return sorted({a.dest for a in EnhancementKDTask.get_parser()._actions} - {"help", "config"})


def unknown_keys(conf: dict, options: List[str]) -> List[str]:
    problems = []
    for key in conf:
        if key not in options:
            close = difflib.get_close_matches(str(key), options, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            problems.append(f"unknown key '{key}' (not an option of enh_kd_train){hint}")
    return problems


def check(kd_configs: List[Path], student_config: Optional[Path] = None, teacher_config: Optional[Path] = None,
          fs: Optional[int] = None, check_keys: bool = True) -> List[str]:
    """All problems of the given configs, each as '<file>: <problem>'."""
    problems: List[str] = []
    loaded = {}
    for path in [p for p in (teacher_config, student_config) if p] + list(kd_configs):
        try:
            loaded[path] = load_config(path)
        except KDConfigError as e:
            problems.append(f"{path}: {e}")
    options = training_options() if check_keys and loaded else []
    for path, conf in loaded.items():
        problems += [f"{path}: {p}" for p in unknown_keys(conf, options)] if check_keys else []
    student = loaded.get(student_config, {}) if student_config else {}
    if student.get("kd_loss") is not None:  # a student config with KD of its own (stage 5 trains it)
        try:
            check_kd_options(student, fs or teacher_sample_rate(student))
        except KDConfigError as e:
            problems.append(f"{student_config}: {e}")
    for path in kd_configs:
        if path not in loaded:
            continue
        if "kd_loss" not in loaded[path]:
            problems.append(f"{path}: no kd_loss: a KD config must name its KD loss (dispatch, dfkd, si_snr); "
                            "without one stage 6 would train a plain student")
            continue
        merged = merge(student, loaded[path])
        try:
            check_kd_options(merged, fs or teacher_sample_rate(merged))
        except KDConfigError as e:
            problems.append(f"{path}: {e}")
    return problems


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kd_configs", type=Path, nargs="*", help="KD yamls (merged on top of the student config)")
    parser.add_argument("--student_config", type=Path, default=None, help="student config")
    parser.add_argument("--teacher_config", type=Path, default=None, help="teacher config (its keys are checked)")
    parser.add_argument("--fs", type=int, default=None, help="sampling rate of the data (enh_kd.sh's --fs)")
    return parser


def main(cmd: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(cmd)
    problems = check(args.kd_configs, args.student_config, args.teacher_config, args.fs)
    for problem in problems:
        print(f"check_kd_configs: {problem}", file=sys.stderr)
    if problems:
        print(f"check_kd_configs: {len(problems)} problem(s); fix them before training", file=sys.stderr)
        return 1
    print(f"check_kd_configs: {len(args.kd_configs)} KD config(s) OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
