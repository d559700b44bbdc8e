#!/usr/bin/env python3
"""Measure KD losses, KD training steps and inference speed; write the markdown table (BENCHMARK.md).

    python -m dispatch.bin.benchmark                      # full size: 16 x 4 s, every device found
    python -m dispatch.bin.benchmark --device cpu --threads 2 --output /tmp/bench.md
    python -m dispatch.bin.benchmark --tiny --output /tmp/tiny.md   # seconds; checks that it runs

Run it on a quiet machine: timings of a busy one vary by 2x or more. See :mod:`dispatch.benchmark` for
what each row measures and the targets it checks.
"""
import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

import torch

from dispatch.benchmark import REPO_ROOT, BenchmarkOptions, default_devices, run_benchmark
from dispatch.data.atomic import write_text_atomic

TINY = {"batch": 1, "seconds": 0.25, "warmup": 0, "repeats": 1}


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", nargs="+", default=default_devices(), choices=("cpu", "cuda"),
                        help="devices to measure, each in turn (default: cpu, and cuda when available)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch CPU threads for (a)-(c); (d) always uses one")
    parser.add_argument("--batch", type=int, default=16, help="utterances per batch")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each utterance in seconds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before each measurement")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the median is reported")
    parser.add_argument("--sections", nargs="+", default=["losses", "steps", "rtf"], choices=("losses", "steps", "rtf"),
                        help="what to measure: (a) KD losses (always), (b, c) training steps, (d) inference RTF")
    parser.add_argument("--max_spread", type=float, default=0.2,
                        help="loss ratios whose spread (IQR / median) exceeds this are measured again (loaded machine)")
    parser.add_argument("--retries", type=int, default=2, help="extra sets of --repeats rounds at most, see --max_spread")
    parser.add_argument("--max_switch_rate", type=float, default=10.0,
                        help="a loss round during which the process was switched out for other processes more than "
                             "this many times per second is run again (a loaded machine)")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "BENCHMARK.md", help="markdown file to write")
    parser.add_argument("--tiny", action="store_true",
                        help=f"a seconds-long smoke run ({', '.join(f'{k}={v}' for k, v in TINY.items())})")
    return parser


def main(cmd: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    args = get_parser().parse_args(cmd)
    if args.tiny:
        for key, value in TINY.items():
            setattr(args, key, value)
    if "cuda" in args.device and not torch.cuda.is_available():
        print("benchmark: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 1
    if min(args.batch, args.warmup + 1, args.repeats, args.threads) < 1 or args.seconds * 16000 <= 256:
        print("benchmark: --batch, --repeats, --threads must be >= 1, --warmup >= 0, --seconds > 0.016",
              file=sys.stderr)
        return 1
    opts = BenchmarkOptions(devices=args.device, threads=args.threads, batch=args.batch, seconds=args.seconds,
                            warmup=args.warmup, repeats=args.repeats, sections=args.sections,
                            max_spread=args.max_spread, retries=max(0, args.retries),
                            max_switch_rate=args.max_switch_rate,
                            command=" ".join(["python -m dispatch.bin.benchmark", *(sys.argv[1:] if cmd is None else cmd)]))
    report = run_benchmark(opts, log=lambda msg: print(f"benchmark: {msg}", file=sys.stderr, flush=True))
    write_text_atomic(args.output, report)
    print(report)
    print(f"benchmark: wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
