#!/usr/bin/env python3
"""Names of the experiment tree, for the stage scripts (:mod:`dispatch.exptree` is the one namer).

    # enh_kd.sh: every experiment of a run, as shell assignments to eval
    eval "$(python -m dispatch.bin.exptree layout --expdir exp --student_config conf/train_student.yaml \\
        --teacher_config conf/train_teacher.yaml --kd_configs "conf/kd/kd_l2.yaml conf/kd/kd_dispatch_l2.yaml")"
    # run_ablation.sh: the baseline student's name, and the tag suffix of one seed's runs
    python -m dispatch.bin.exptree name --student_config conf/train_student.yaml   # student_tcn_small
    python -m dispatch.bin.exptree seed_suffix 3                                     # _seed3

``layout`` prints ``teacher_tag``, ``student_tag``, ``teacher_exp`` (the given ``--teacher_model`` as
given), ``teacher_outputs`` (where the teacher's enhanced sets and cache go), ``student_exp``,
``noisy_dir``, ``ablation_root``, ``models`` (an array of ``name=dir``: teacher, baseline unless skipped, one per KD config)
and ``kd_exps`` (an array, one folder per ``--kd_configs`` entry, in order).
"""
import argparse
import shlex
import sys
from typing import List, Optional

from dispatch.exptree import Layout, config_name, seed_suffix


def layout(args: argparse.Namespace) -> str:
    tree = Layout.of(args.expdir, args.student_config, args.teacher_config or None, args.tag_suffix,
                     args.teacher_tag, args.student_tag, args.teacher_model)
    kd_configs = args.kd_configs.split()
    models = tree.models(kd_configs, baseline=not args.skip_baseline)
    values = {"teacher_tag": tree.teacher_tag, "student_tag": tree.student_tag, "teacher_exp": tree.teacher_dir,
              "teacher_outputs": str(tree.outputs_dir(tree.teacher_dir)), "student_exp": str(tree.student_dir()),
              "noisy_dir": str(tree.noisy_dir), "ablation_root": str(tree.ablation_root)}
    lines = [f"{k}={shlex.quote(v)}" for k, v in values.items()]
    lines.append("models=(" + " ".join(shlex.quote(f"{n}={d}") for n, d in models.items()) + ")")
    lines.append("kd_exps=(" + " ".join(shlex.quote(str(tree.student_dir(config_name(c)))) for c in kd_configs) + ")")
    return "\n".join(lines)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("layout", help="every experiment of an enh_kd.sh run, as shell assignments")
    p.add_argument("--expdir", default="exp")
    p.add_argument("--student_config", required=True)
    p.add_argument("--teacher_config", default="", help="the teacher trained in stage 4 (names its experiment)")
    p.add_argument("--teacher_model", default="", help="a given teacher: experiment dir, zip or zoo name")
    p.add_argument("--teacher_tag", default="", help="name of the teacher experiment (default: from its config)")
    p.add_argument("--student_tag", default="", help="name of the baseline student (default: from its config)")
    p.add_argument("--tag_suffix", default="", help="suffix of every student experiment name")
    p.add_argument("--kd_configs", default="", help="space-separated KD configs")
    p.add_argument("--skip_baseline", action="store_true", help="no baseline student among the models")
    p.set_defaults(func=layout)

    p = sub.add_parser("name", help="the baseline student's experiment name")
    p.add_argument("--student_config", required=True)
    p.set_defaults(func=lambda args: Layout.of(".", args.student_config).student_tag)

    p = sub.add_parser("seed_suffix", help="the tag suffix of one seed's ablation runs")
    p.add_argument("seed", type=int)
    p.set_defaults(func=lambda args: seed_suffix(args.seed))
    return parser


def main(cmd: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(cmd)
    print(args.func(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
