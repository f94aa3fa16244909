#!/usr/bin/env python
"""Evaluate backbones on 3D awareness (depth, normals, segmentation probes; correspondence).

Two protocols:
  --protocol snd    (default for real datasets) the SnD authors' published protocols, exactly:
                    iteration schedules, per-iteration augmentation, their feature layers and test-time
                    procedures. Example: --protocol snd --task depth --dataset nyuv2 --data-dir eval_data/nyuv2
  --protocol quick  (default for --dataset synthetic) short probes on cached features, for the synthetic
                    benchmark and CPU smoke runs; NOT comparable with published numbers.

Example (CPU, a couple of minutes with a tiny model):
    python scripts/evaluate.py --model path/to/model --task all --dataset synthetic --output-dir eval_out
Writes eval_out/results.json, eval_out/comparison.md, eval_out/<model>/<task>.json and pictures; an --output-dir
that already holds results.json or comparison.md is refused unless --overwrite.
"""

import argparse
import os
import sys

# This file shares its name with the `evaluate` library that snd.metrics imports: keep the
# scripts folder off the import path so `import evaluate` finds the library.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _HERE]

from snd.eval import EvaluationConfig, SyntheticEvalConfig, evaluate_backbones  # noqa: E402
from snd.eval.datasets import DATASETS, TASKS  # noqa: E402
from snd.eval.protocols import PROTOCOLS, evaluate_snd  # noqa: E402
from snd.eval.report import ResultsExistError, check_results_dir  # noqa: E402
from snd.errors import SourceNotFoundError, check_model_source  # noqa: E402

ALL_DATASETS = tuple(dict.fromkeys(DATASETS + ("scannet",)))


def _number(kind, low, what):
    """An argparse type: ``kind`` (int/float), finite and >= ``low`` (> ``low`` for a float ``low`` of 0)."""

    def parse(text):
        import math

        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (kind is float and low == 0 and value == 0):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what
    return parse


POSITIVE = _number(int, 1, "an integer >= 1")
NON_NEGATIVE = _number(int, 0, "an integer >= 0")
POSITIVE_FLOAT = _number(float, 0.0, "a finite number > 0")


def _device(text):
    import torch

    try:
        torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a torch device such as cpu, cuda or cuda:1, got {text!r}") from None
    return text


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True,
                        help="model folder (save_pretrained) or hub id; repeat to compare several")
    parser.add_argument("--task", action="append", choices=list(TASKS) + ["all"],
                        help="task to run (repeatable); default all tasks the dataset supports")
    parser.add_argument("--dataset", choices=ALL_DATASETS, default="synthetic")
    parser.add_argument("--data-dir", default=None, help="dataset root (Probe3D / FiT3D layout); unused for synthetic")
    parser.add_argument("--protocol", choices=PROTOCOLS, default=None,
                        help="snd: the published protocols (default for real datasets); quick: cached-feature "
                             "probes, not comparable with published numbers (default for synthetic)")
    parser.add_argument("--max-iters", type=POSITIVE, default=None,
                        help="snd protocol: stop each task after N iterations of its official schedule (smoke runs)")
    parser.add_argument("--max-test-images", type=POSITIVE, default=None, help="snd protocol: evaluate the first N test images")
    parser.add_argument("--train-batch-size", type=POSITIVE, default=None,
                        help="snd protocol: override the official training batch size (changes the protocol)")
    parser.add_argument("--num-workers", type=NON_NEGATIVE, default=None,
                        help="snd protocol: data loader processes (default 0 on CPU, 4 on GPU; results do not depend on it)")
    parser.add_argument("--nyu-seg-test-set", choices=("auto", "full", "vis"), default=None,
                        help="snd protocol, NYUv2 segmentation test set: auto (default) = as the released config of "
                             "the model size (ViT-S: nyu_test_rgb_vis, ViT-B: the full nyu_test_rgb)")
    parser.add_argument("--output-dir", default="evaluation")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier evaluation's results.json / comparison.md in --output-dir (refused otherwise)")
    parser.add_argument("--probe-epochs", type=POSITIVE, default=None, help="override every probe's epochs")
    parser.add_argument("--probe-max-steps", type=POSITIVE, default=None, help="cap every probe's optimiser steps")
    parser.add_argument("--num-correspondences", type=POSITIVE, default=1000)
    parser.add_argument("--correspondence-scale", type=POSITIVE_FLOAT, default=None,
                        help="image scale of the matching (default 0.25 as Probe3D; 1.0 for synthetic)")
    parser.add_argument("--num-figures", type=NON_NEGATIVE, default=3, help="test images / pairs drawn per task")
    parser.add_argument("--batch-size", type=POSITIVE, default=8, help="images per backbone call")
    parser.add_argument("--seed", type=NON_NEGATIVE, default=0, help="probe initialisation and data order")
    parser.add_argument("--device", type=_device, default=None, help="default: cpu for --protocol quick, cuda if available for snd")
    parser.add_argument("--cache-features", action="store_true", help="store features under OUTPUT_DIR/feature_cache")
    parser.add_argument("--num-threads", type=POSITIVE, default=None, help="torch CPU threads (1 is fastest on a busy CPU)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--save-heads", action="store_true",
                        help="save trained depth/segmentation probes as SnDForDepthEstimation / SnDForSemanticSegmentation "
                             "folders (backbone included, image processor, card) under OUTPUT_DIR/<model>/heads/<task>")
    synthetic = parser.add_argument_group("synthetic benchmark")
    defaults = SyntheticEvalConfig()
    synthetic.add_argument("--synthetic-train-scenes", type=POSITIVE, default=defaults.train_scenes)
    synthetic.add_argument("--synthetic-test-scenes", type=POSITIVE, default=defaults.test_scenes)
    synthetic.add_argument("--synthetic-image-size", type=POSITIVE, default=defaults.image_size)
    synthetic.add_argument("--synthetic-frame-stride", type=POSITIVE, default=defaults.frame_stride)
    synthetic.add_argument("--synthetic-seed", type=NON_NEGATIVE, default=defaults.seed)
    return parser.parse_args(argv)


def check_sources(args) -> None:
    """Every --model and the --data-dir exist (or, for a Hub id offline, are cached) before any work starts."""
    from snd.assets import resolve

    for model in args.model:
        check_model_source(resolve(model), "--model")
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        raise SourceNotFoundError(f"--data-dir={args.data_dir!r}: no such directory")
    if args.dataset != "synthetic" and args.data_dir is None:
        raise SourceNotFoundError(f"--data-dir is required for dataset {args.dataset!r}")


def main(argv=None):
    args = parse_args(argv)
    try:
        return _main(args)
    except SourceNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _main(args):
    if args.num_threads:
        import torch

        torch.set_num_threads(args.num_threads)
    try:
        check_results_dir(args.output_dir, args.overwrite)
    except ResultsExistError as error:
        raise SystemExit(f"error: {error}") from None
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        raise SystemExit(f"error: --output-dir {args.output_dir} is a file, not a folder; choose another --output-dir")
    check_sources(args)
    protocol = args.protocol or ("quick" if args.dataset == "synthetic" else "snd")
    if protocol == "snd":
        if args.dataset == "synthetic":
            raise SystemExit("--protocol snd needs a real dataset (nyuv2, scannet, scannetpp, scannet_pairs); "
                             "the synthetic benchmark runs under --protocol quick")
        if args.data_dir is None:
            raise SystemExit(f"--protocol snd: --data-dir is required for dataset {args.dataset!r}")
        evaluate_snd(args.model, tasks=args.task or ["all"], dataset=args.dataset, data_dir=args.data_dir,
                     output_dir=args.output_dir, max_iters=args.max_iters, device=args.device, seed=args.seed,
                     batch_size=args.train_batch_size, max_test_images=args.max_test_images,
                     num_workers=args.num_workers, progress=not args.no_progress, nyu_test_set=args.nyu_seg_test_set,
                     warn=lambda message: print(message, file=sys.stderr))
        with open(os.path.join(args.output_dir, "comparison.md")) as table:
            print(table.read())
        return
    if args.dataset == "scannet":
        raise SystemExit("--protocol quick has no 'scannet' dataset (its correspondence pairs are 'scannet_pairs')")
    config = EvaluationConfig(
        tasks=args.task or ["all"],
        dataset=args.dataset,
        data_dir=args.data_dir,
        output_dir=args.output_dir,
        synthetic=SyntheticEvalConfig(
            train_scenes=args.synthetic_train_scenes,
            test_scenes=args.synthetic_test_scenes,
            image_size=args.synthetic_image_size,
            frame_stride=args.synthetic_frame_stride,
            seed=args.synthetic_seed,
        ),
        probe_epochs=args.probe_epochs,
        probe_max_steps=args.probe_max_steps,
        num_correspondences=args.num_correspondences,
        correspondence_scale=args.correspondence_scale,
        num_figures=args.num_figures,
        feature_batch_size=args.batch_size,
        seed=args.seed,
        device=args.device or "cpu",
        cache_features=args.cache_features,
        progress=not args.no_progress,
        save_heads=args.save_heads,
    )
    try:
        config.resolved_tasks()
    except ValueError as error:  # a task the dataset has no ground truth for
        raise SystemExit(f"error: --task: {error}") from None
    evaluate_backbones(args.model, config)
    with open(os.path.join(args.output_dir, "comparison.md")) as table:
        print(table.read())


if __name__ == "__main__":
    sys.exit(main())
