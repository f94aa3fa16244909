#!/usr/bin/env python
"""Evaluate distillation runs before vs after on the synthetic benchmark (mean ± std over runs).

    python scripts/experiment_before_after.py --run outputs/seed0 --run outputs/seed1 --run outputs/seed2 \
        --output-dir outputs/before_after
Writes OUTPUT_DIR/before_after.md, OUTPUT_DIR/before_after.json and a full report per run.
"""

import argparse
import os
import sys

# Keep the scripts folder off the import path (scripts/evaluate.py would shadow the `evaluate` library).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _HERE]

from snd.eval import EvaluationConfig  # noqa: E402
from snd.eval.experiment import before_after  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, help="distillation output folder (repeat per seed)")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--probe-epochs", type=int, default=None)
    parser.add_argument("--num-threads", type=int, default=None, help="torch CPU threads (1 is fastest on a busy CPU)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.num_threads:
        import torch

        torch.set_num_threads(args.num_threads)
    config = EvaluationConfig(dataset="synthetic", output_dir=args.output_dir, probe_epochs=args.probe_epochs,
                              progress=not args.no_progress)
    before_after(args.run, config)
    with open(os.path.join(args.output_dir, "before_after.md")) as table:
        print(table.read())


if __name__ == "__main__":
    main()
