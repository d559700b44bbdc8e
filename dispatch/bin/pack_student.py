#!/usr/bin/env python3
"""Pack a trained model as a plain espnet2 enhancement zip (espnet2.bin.pack enh).

    python -m dispatch.bin.pack_student --exp_dir exp/enh_kd --model_file valid.loss.best.pth --outpath x.zip

The KD options (teacher path, kd_loss, ...) are removed from the packed config.yaml: the zip is an
ordinary espnet2 model that SeparateSpeech.from_pretrained loads without this package. Teacher weights
are never in a student's checkpoint. The zip's README.md is the model card (dispatch.export.card):
architecture, size, speed, test scores beside the ``--compare`` rows, the KD config and teacher, the
data and the commands.
"""
import argparse
import sys
import zipfile
from pathlib import Path
from typing import List, Optional

import yaml
from espnet2.bin.pack import main as espnet_pack

from dispatch.data.atomic import atomic_path, write_text_atomic
from dispatch.export.card import CardInputs, model_card
from dispatch.task import KD_CONFIG_KEYS


def main(cmd: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp_dir", type=Path, required=True)
    parser.add_argument("--model_file", default="valid.loss.best.pth", help="weights inside exp_dir")
    parser.add_argument("--outpath", type=Path, required=True)
    parser.add_argument("--option", action="append", default=[], help="extra files to pack (e.g. RESULTS.md)")
    card = parser.add_argument_group("model card (README.md at the root of the zip)")
    card.add_argument("--name", default=None, help="the model's row name (default: the experiment folder's name)")
    card.add_argument("--compare", action="append", default=[], metavar="NAME=DIR",
                      help="a row whose test scores (DIR/enhanced_<set>/scoring) the card shows, e.g. teacher=exp/t;"
                           " the model's own outputs are its exp_dir unless given as <name>=DIR")
    card.add_argument("--test_sets", default="", help="test set names, space separated")
    card.add_argument("--command", default="", help="the recipe command that trained the model")
    card.add_argument("--fs", type=int, default=16000, help="sampling rate of a config that does not record one")
    args = parser.parse_args(cmd)
    bad = [c for c in args.compare if "=" not in c]
    if bad:
        parser.error(f"--compare expects NAME=DIR, got {', '.join(bad)}")
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
        name = args.name or args.exp_dir.name
        outputs = {name: args.exp_dir, **{k: Path(v) for k, v in (c.split("=", 1) for c in args.compare)}}
        text = model_card(CardInputs(name, args.exp_dir, model_file, outputs, args.test_sets.split(),
                                     args.command, args.fs))
        with zipfile.ZipFile(out, "a") as z:
            z.writestr("README.md", text)
    print(args.outpath)
    return 0


if __name__ == "__main__":
    sys.exit(main())
