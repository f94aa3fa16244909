#!/usr/bin/env python
"""Convert a DINOv2 / SnD backbone checkpoint into an SnD model folder (and optionally push it).

Examples:
    python scripts/convert_checkpoint.py --input dinov2_small_snd.pth --format torchhub --preset dinov2-s --output snd-dinov2-s
    python scripts/convert_checkpoint.py --input facebook/dinov2-base --format transformers --output dinov2-b
    python scripts/convert_checkpoint.py --input vit_small_patch14_reg4_dinov2.safetensors --format timm --preset dinov2-s-reg --output out
"""

import argparse
import json
import logging
import sys
from pathlib import Path

from snd.convert import FORMATS, ConversionError, convert_backbone, save_backbone
from snd.models.snd_dinov2 import PRESETS


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="checkpoint file, folder, Hub repo id, or repo/file.pth on the Hub")
    parser.add_argument("--format", required=True, choices=FORMATS, help="layout of the input checkpoint")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="architecture (inferred from shapes when omitted)")
    parser.add_argument("--output", required=True, help="folder to write (model.safetensors, config.json, preprocessor_config.json)")
    parser.add_argument("--push-to-hub", metavar="REPO", help="also push the converted model to this Hub repo")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max patch-token difference to the source implementation")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        model, report = convert_backbone(args.input, args.format, args.preset, tolerance=args.tolerance)
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from snd import SnDImageProcessor
    from snd.hub import ModelCardInfo, push_model, render_model_card

    differences = ", ".join(f"{name}: {value:.2g}" for name, value in report.max_abs_difference.items())
    card = ModelCardInfo(
        repo_id=args.push_to_hub or f"local/{Path(args.output).name}",  # the card is written now, pushed or not
        provenance={"source": str(args.input), "format": args.format, "preset": report.preset, "conversion check": differences},
    )
    folder = save_backbone(model, args.output, card=render_model_card(card, config=model.config, has_remote_code=True))
    print(json.dumps({"output": str(folder), "preset": report.preset, "max_abs_difference": report.max_abs_difference}, indent=2))
    if args.push_to_hub:
        result = push_model(model, SnDImageProcessor(), args.push_to_hub, card)
        print(f"pushed to {result.commit_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
