#!/usr/bin/env python
"""snd benchmarks. Each subcommand hands its remaining arguments to ``snd.benchmarks.<name>.main``.

Examples:
    python scripts/benchmark.py render --quick
    python scripts/benchmark.py render --threads 1
    python scripts/benchmark.py lift --help
    python scripts/benchmark.py train --help
    python scripts/benchmark.py data --sizes 64x64
    python scripts/benchmark.py memory --config scannetpp_dinov2g --gpus 8
"""

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "render": "one-pass feature splatting vs. 3 channels per rasterizer call",
    "lift": "Gaussian lifting (depth / MVSplat) throughput",
    "train": "distillation training step throughput",
    "data": "synthetic scene rendering throughput (views/s)",
    "memory": "per-GPU memory estimate of a config (DDP and FSDP2 on --gpus GPUs)",
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmark", choices=sorted(SUBCOMMANDS), help="; ".join(f"{k}: {v}" for k, v in SUBCOMMANDS.items()))
    parser.add_argument("args", nargs="*", help="arguments for the benchmark (see `<benchmark> --help`)")
    argv = sys.argv[1:] if argv is None else list(argv)
    # Everything after the subcommand belongs to the benchmark (its own --help included).
    args = parser.parse_args(argv[:1])
    args.args = argv[1:]
    # Imported on demand, so each benchmark only needs its own module (and they can land independently).
    name = f"snd.benchmarks.{args.benchmark}"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name != name:
            raise
        parser.error(f"benchmark {args.benchmark!r} is not installed ({name} is missing)")
    module.main(args.args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
