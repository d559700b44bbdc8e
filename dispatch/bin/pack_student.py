#!/usr/bin/env python3
"""Pack a trained model as a plain espnet2 enhancement zip (espnet2.bin.pack enh).

    python -m dispatch.bin.pack_student --exp_dir exp/enh_kd --model_file valid.loss.best.pth --outpath x.zip

The KD options (teacher path, kd_loss, ...) are removed from the packed config.yaml: the zip is an
ordinary espnet2 model that SeparateSpeech.from_pretrained loads without this package. Teacher weights
are never in a student's checkpoint.
"""
import argparse
import sys
from pathlib import Path
from typing import List, Optional

import yaml
from espnet2.bin.pack import main as espnet_pack

from dispatch.data.atomic import atomic_path, write_text_atomic
from dispatch.task import KD_CONFIG_KEYS


def main(cmd: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp_dir", type=Path, required=True)
    parser.add_argument("--model_file", default="valid.loss.best.pth", help="weights inside exp_dir")
    parser.add_argument("--outpath", type=Path, required=True)
    parser.add_argument("--option", action="append", default=[], help="extra files to pack (e.g. RESULTS.md)")
    args = parser.parse_args(cmd)
    model_file = args.exp_dir / args.model_file
    for path in (args.exp_dir / "config.yaml", model_file):
        if not path.is_file():
            print(f"pack_student: {path} does not exist (is training finished?)", file=sys.stderr)
            return 1
    config = yaml.safe_load((args.exp_dir / "config.yaml").read_text())
    for key in KD_CONFIG_KEYS:
        config.pop(key, None)
    # Beside the experiment, so that the zip holds recipe-relative paths like espnet2's own packs.
    plain = args.exp_dir / "packed" / "config.yaml"
    write_text_atomic(plain, yaml.safe_dump(config, sort_keys=False))
    with atomic_path(args.outpath) as out:
        cmd = ["enh", "--train_config", str(plain), "--model_file", str(model_file.resolve()), "--outpath", str(out)]
        for extra in args.option:
            cmd += ["--option", extra]
        espnet_pack(cmd)
    print(args.outpath)
    return 0


if __name__ == "__main__":
    sys.exit(main())
