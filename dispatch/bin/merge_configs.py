#!/usr/bin/env python3
"""Write one training config from a base yaml and overrides (later files win; mappings merge).

    python -m dispatch.bin.merge_configs exp/kd/train_config.yaml conf/train_student.yaml conf/kd/kd_dispatch_l2.yaml

Stage 6 uses it so that one student config serves every KD variant: a KD yaml holds only what it
changes (kd_loss, kd_loss_conf, kd_weight, ...).
"""
import argparse
import sys
from pathlib import Path
from typing import List, Optional

import yaml

from dispatch.data.atomic import write_text_atomic


def merge(base: dict, override: dict) -> dict:
    """Recursive merge: mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load(path: Path) -> dict:
    try:
        conf = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise SystemExit(f"merge_configs: cannot read {path}: {e}")
    if not isinstance(conf, dict):
        raise SystemExit(f"merge_configs: {path} must hold a mapping of options, not {type(conf).__name__}")
    return conf


def main(cmd: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path)
    parser.add_argument("configs", type=Path, nargs="+")
    args = parser.parse_args(cmd)
    merged: dict = {}
    for path in args.configs:
        merged = merge(merged, load(path))
    header = "".join(f"# merged from {p}\n" for p in args.configs)
    write_text_atomic(args.output, header + yaml.safe_dump(merged, sort_keys=False))


if __name__ == "__main__":
    sys.exit(main())
