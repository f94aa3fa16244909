"""Pretrain the nano-2d backbone (2D-only self-supervision on single synthetic images) on a CPU.

    python scripts/pretrain_nano.py --output-dir src/snd/assets/nano-2d

reproduces the shipped weights (see the model card there for the measured time). Every field of
``snd.pretrain.NanoPretrainConfig`` is a flag (``--steps 2``, ``--num-scenes 4``... for a smoke test).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys


def parse_args(argv=None):
    from snd.pretrain import NanoPretrainConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", required=True, help="folder for the weights, card and logs (must not hold a model)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--log-every", type=int, default=50, help="steps between lines of pretrain_log.jsonl")
    defaults = NanoPretrainConfig()
    for field in dataclasses.fields(NanoPretrainConfig):
        value = getattr(defaults, field.name)
        flag = "--" + field.name.replace("_", "-")
        if isinstance(value, tuple):
            parser.add_argument(flag, type=float, nargs=len(value), default=value, help=f"default {value}")
        elif value is None:
            parser.add_argument(flag, type=int, default=None, help="default: torch's")
        else:
            parser.add_argument(flag, type=type(value), default=value, help=f"default {value}")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    import snd  # noqa: F401  (registers the model classes)
    from snd.pretrain import NanoPretrainConfig, pretrain

    args = parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(NanoPretrainConfig)}
    values["crop_scale"] = tuple(values["crop_scale"])
    try:
        config = NanoPretrainConfig(**values)
    except ValueError as error:
        print(f"pretrain_nano.py: {error}", file=sys.stderr)
        return 2
    command = "python scripts/pretrain_nano.py " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    summary = pretrain(config, args.output_dir, progress=not args.no_progress, command=command.strip(), log_every=args.log_every)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
