#!/usr/bin/env python
"""snd benchmarks. Each subcommand hands its remaining arguments to ``snd.benchmarks.<name>.main``.

Examples:
    python scripts/benchmark.py render --quick
    python scripts/benchmark.py render --threads 1
    python scripts/benchmark.py lift --help
    python scripts/benchmark.py train --help
"""

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "render": "one-pass feature splatting vs. 3 channels per rasterizer call",
    "lift": "Gaussian lifting (depth / MVSplat) throughput",
    "train": "distillation training step throughput",
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmark", choices=sorted(SUBCOMMANDS), help="; ".join(f"{k}: {v}" for k, v in SUBCOMMANDS.items()))
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the benchmark (see `<benchmark> --help`)")
    args = parser.parse_args(argv)
    # Imported on demand, so each benchmark only needs its own module (and they can land independently).
    module = importlib.import_module(f"snd.benchmarks.{args.benchmark}")
    module.main(args.args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
