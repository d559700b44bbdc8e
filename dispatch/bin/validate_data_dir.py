#!/usr/bin/env python3
"""Check a Kaldi-style enhancement data dir; exit 1 with the reason if it is not valid.

    python -m dispatch.bin.validate_data_dir data/tr_26spk --fs 16000
"""
import argparse
import sys
from typing import List, Optional

from dispatch.data.datadir import DataDirError, validate_data_dir


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("data_dir", help="data dir with wav.scp, spk1.scp, utt2spk, spk2utt")
    parser.add_argument("--fs", type=int, default=None, help="expected sampling rate in Hz")
    parser.add_argument(
        "--no_audio", action="store_true", help="check the lists only, do not open audio files"
    )
    return parser


def main(cmd: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(cmd)
    try:
        num_utts = validate_data_dir(args.data_dir, fs=args.fs, check_audio=not args.no_audio)
    except DataDirError as e:
        print(f"validate_data_dir: {e}", file=sys.stderr)
        return 1
    print(f"{args.data_dir}: OK, {num_utts} utterances")
    return 0


if __name__ == "__main__":
    sys.exit(main())
