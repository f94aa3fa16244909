#!/usr/bin/env python
"""Distil a 3D-aware DINOv2 with Splat and Distill.

    accelerate launch --quiet --config_file configs/accelerate/cpu.yaml scripts/distill.py   # embedded CPU default
    accelerate launch --quiet --config_file configs/accelerate/multi_gpu.yaml scripts/distill.py --config scannetpp_dinov2s \\
        --data.root /data/scannetpp --lifter.checkpoint checkpoints/re10k.ckpt
    accelerate launch --quiet ... scripts/distill.py --config my.yaml   # your fields over the embedded default (or its `base:`)

Any config field can be set with ``--set section.key=value`` or ``--section.key value``. The launcher's
``--mixed_precision`` applies unless the config sets ``training.mixed_precision``. An ``--output_dir`` that holds a
run needs ``--resume_from_checkpoint latest`` or ``--overwrite_output_dir``.

A configuration mistake (a bad field, a missing path, a Hub model while offline, an unreadable dataset or weights file)
ends with one ``error: ...`` line on stderr and exit status 2 (``accelerate launch --quiet`` leaves out the launcher's
own traceback; it exits 1).
"""

import argparse
import os
import sys

from snd.distill import ConfigError, SourceNotFoundError, preset_names, run
from snd.convert import ConversionError
from snd.data.errors import SceneDataError
from snd.distill.checkpoints import CheckpointError
from snd.distill.config import dotted_flags_to_overrides


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help=f"shipped preset ({', '.join(preset_names())}) or your YAML file, whose fields are layered over the embedded default (or over the preset its `base:` key names); default: the embedded default")
    parser.add_argument("--output_dir", default=None, help="where checkpoints, weights, logs and pictures go (training.output_dir)")
    parser.add_argument("--max_steps", type=int, default=None, help="optimiser steps (training.max_steps)")
    parser.add_argument("--seed", type=int, default=None, help="seed of init, data order and view sampling (training.seed)")
    parser.add_argument("--resume_from_checkpoint", default=None, help="'latest' (newest checkpoint in --output_dir) or a checkpoint directory")
    parser.add_argument("--overwrite_output_dir", action="store_true", help="replace the snd run already in --output_dir (its checkpoint folders, logs, pictures and exports are removed, its config.yaml renamed config.overwritten.yaml; other files, e.g. lifter weights under checkpoints/, stay)")
    parser.add_argument("--allow_config_change", action="store_true", help="resume even if max_steps/lr/batch size/schedule/seed differ from the checkpoint's")
    parser.add_argument("--push_to_hub", default=None, metavar="REPO", help="push the final student to this Hub repository (token and repository are checked before training)")
    parser.add_argument("--verbose", action="store_true", help="log Accelerate's and transformers' INFO lines too")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config field (repeatable)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    args, unknown = parser.parse_known_args(argv)
    try:
        args.overrides = list(args.set) + dotted_flags_to_overrides(unknown)
    except ConfigError as error:
        parser.error(str(error))
    return args


def _is_main_process() -> bool:
    """Rank 0 of the launch (``accelerate launch`` / torchrun set ``RANK``); a plain ``python`` run is rank 0."""
    return os.environ.get("RANK", "0") == "0"


def main(argv=None):
    args = parse_args(argv)
    try:
        result = run(
            config=args.config,
            overrides=args.overrides,
            output_dir=args.output_dir,
            max_steps=args.max_steps,
            seed=args.seed,
            resume_from_checkpoint=args.resume_from_checkpoint,
            push_to_hub=args.push_to_hub,
            progress=not args.no_progress,
            overwrite_output_dir=args.overwrite_output_dir,
            verbose=args.verbose,
            allow_config_change=args.allow_config_change,
        )
    except (ConfigError, CheckpointError, SourceNotFoundError, SceneDataError, ConversionError) as error:
        # One line, once: every process of a multi-process launch fails the same way, only the first says so.
        if _is_main_process():
            print(f"error: {error}", file=sys.stderr)
        return 2
    if not _is_main_process():
        return 0
    if result.steps_trained == 0:
        print(f"nothing left to train: the run in {result.output_dir} had already reached {result.steps} steps "
              "(training.max_steps); its exports were refreshed and train_summary.json kept")
    else:
        print(f"done: {result.steps} steps in {result.wall_time_s:.1f} s; outputs in {result.output_dir}")
    return 0


def _exit_launched(code: int) -> None:
    """End a process of a multi-process launch without the interpreter's shutdown: with gloo, a process that finished
    its run could abort in a C++ destructor while exiting ("terminate called without an active exception",
    SIGABRT; seen on 2-process CPU launches), failing a run whose outputs were all written. Every collective has
    completed by now (the trainer ends with a barrier), so only buffered output needs flushing."""
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    status = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        _exit_launched(status)
    sys.exit(status)
