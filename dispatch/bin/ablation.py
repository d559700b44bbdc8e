#!/usr/bin/env python3
"""Ablation grids of KD variants: expand a spec into KD configs, collect the scores into one table.

Run from the recipe folder (KD config paths in the spec are relative to it):

    # one KD yaml per KD variant, their paths printed one per line
    python -m dispatch.bin.ablation expand conf/ablation/method.yaml --expdir exp   # -> exp/ablation/method/conf
    # what the runner needs to know: the seeds ("0 1 2"), the baseline variant's name (or nothing)
    python -m dispatch.bin.ablation query conf/ablation/method.yaml seeds
    # mean ± std over seeds per variant and metric, paired difference to the reference ± standard error;
    # and exp/ablation/method/paired_differences.json (to the student alone), drawn on the listening page
    python -m dispatch.bin.ablation table conf/ablation/method.yaml --student_tag student_tcn_small \\
        --expdir exp --teacher_model exp/teacher_blstm --output RESULTS_ablation_method.md

The spec format is described in :mod:`dispatch.ablation`. run_ablation.sh calls all three.
"""
import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

import yaml

from dispatch.ablation import PAIRED, AblationError, ablation_table, baseline_differences, kd_config_text, load_spec
from dispatch.data.atomic import write_text_atomic
from dispatch.exptree import PAIRED_DIFFERENCES, Layout, TreeError, model_arg


def expand(args: argparse.Namespace) -> None:
    """Write the KD yaml of every KD variant; a rerun keeps identical files and refuses changed ones.

    A changed file would silently relabel experiments already trained under the old options.
    """
    spec = load_spec(args.spec)
    outdir = args.outdir or Layout(args.expdir, "", "").ablation_dir(spec.name) / "conf"
    for variant in spec.kd_variants:
        path = outdir / f"{variant.name}.yaml"
        if path.is_file():
            if yaml.safe_load(path.read_text()) != variant.kd_config:
                raise AblationError(
                    f"{path} holds other options than variant {variant.name} of {args.spec} now: experiments "
                    f"named {variant.name} were trained with the old ones. Rename the variant, or delete {path} "
                    "and those experiments"
                )
        else:
            write_text_atomic(path, kd_config_text(variant, args.spec))
        print(path)


def query(args: argparse.Namespace) -> None:
    spec = load_spec(args.spec)
    if args.field == "seeds":
        print(" ".join(map(str, spec.seeds)))
    elif spec.baseline is not None:
        print(spec.baseline.name)


def table(args: argparse.Namespace) -> None:
    spec = load_spec(args.spec)
    layout = Layout(args.expdir, "", args.student_tag, teacher_model=args.teacher_model)
    extra = {"noisy": layout.noisy_dir}
    if args.teacher_model:
        extra["teacher"] = layout.outputs_dir(args.teacher_model)
    extra.update(args.extra)
    seeds = [int(s) for s in args.seeds.split()] if args.seeds else None
    test_sets = args.test_sets.split() if args.test_sets else None
    text = ablation_table(spec, args.spec, args.expdir, args.student_tag, seeds, test_sets, extra, args.pairing)
    write_text_atomic(args.output, text)
    print(f"wrote {args.output}")
    # The listening page draws the differences to the student alone from this file.
    figure = layout.ablation_dir(spec.name) / PAIRED_DIFFERENCES
    differences = baseline_differences(spec, args.expdir, args.student_tag, seeds, test_sets, args.pairing)
    if differences is None:
        figure.unlink(missing_ok=True)
    else:
        write_text_atomic(figure, json.dumps(differences, indent=1, allow_nan=False) + "\n")
        print(f"wrote {figure}")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("expand", help="write one KD yaml per KD variant, print their paths")
    p.add_argument("spec", type=Path, help="ablation spec (conf/ablation/<name>.yaml)")
    p.add_argument("--expdir", type=Path, default=Path("exp"))
    p.add_argument("--outdir", type=Path, default=None,
                   help="folder of the KD yamls (default: <expdir>/ablation/<spec name>/conf)")
    p.set_defaults(func=expand)

    p = sub.add_parser("query", help="print the spec's seeds, or the name of its baseline variant (if any)")
    p.add_argument("spec", type=Path)
    p.add_argument("field", choices=("seeds", "baseline"))
    p.set_defaults(func=query)

    p = sub.add_parser("table", help="write the markdown table of an ablation's scored experiments")
    p.add_argument("spec", type=Path)
    p.add_argument("--output", type=Path, required=True, help="markdown file to write")
    p.add_argument("--student_tag", required=True, help="enh_kd.sh's student tag (experiment name prefix)")
    p.add_argument("--expdir", type=Path, default=Path("exp"))
    p.add_argument("--seeds", default="", help="space-separated seeds (default: the spec's)")
    p.add_argument("--test_sets", default="", help="space-separated test sets (default: every scored one)")
    p.add_argument("--teacher_model", default="",
                   help="the teacher of every run (experiment dir, zip or zoo name): its row is shown above the "
                        "variants, as the noisy input's (<expdir>/noisy)")
    p.add_argument("--extra", action="append", default=[], type=model_arg,
                   help="name=experiment_dir of another single-run row shown above the variants")
    p.add_argument("--pairing", choices=sorted(PAIRED), default="seed",
                   help="paired difference to the reference taken seed by seed (default) or per utterance")
    p.set_defaults(func=table)
    return parser


def main(cmd: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(cmd)
    try:
        args.func(args)
    except (AblationError, TreeError) as e:
        print(f"ablation {args.command}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
