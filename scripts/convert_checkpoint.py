#!/usr/bin/env python
"""Convert a DINOv2 / SnD backbone checkpoint into an SnD model folder, or an original DINOv3 ViT checkpoint
into a transformers DINOv3ViTModel folder (and optionally push it).

Examples:
    python scripts/convert_checkpoint.py --input dinov2_small_snd.pth --format torchhub --preset dinov2-s --output snd-dinov2-s
    python scripts/convert_checkpoint.py --input facebook/dinov2-base --format transformers --output dinov2-b
    python scripts/convert_checkpoint.py --input vit_small_patch14_reg4_dinov2.safetensors --format timm --preset dinov2-s-reg --output out
    python scripts/convert_checkpoint.py --input dinov3_vits16_pretrain_lvd1689m-08c60483.pth --format dinov3-hub --output dinov3-s
"""

import argparse
import json
import logging
import sys
from pathlib import Path

from snd.convert import FORMATS, ConversionError, convert_backbone, save_backbone
from snd.convert.common import check_output
from snd.models.snd_dinov2 import PRESETS


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="checkpoint file, folder, Hub repo id, or repo/file.pth on the Hub")
    parser.add_argument("--format", required=True, choices=[*FORMATS, "dinov3-hub"],
                        help="layout of the input checkpoint (dinov3-hub: original DINOv3 ViT torch.hub weights -> DINOv3ViTModel)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="architecture (inferred from shapes when omitted; not for dinov3-hub)")
    parser.add_argument("--layer-norm-eps", type=float, default=1e-5, help="dinov3-hub only: norm epsilon (not stored in checkpoints)")
    parser.add_argument("--output", required=True, help="folder to write (model.safetensors, config.json, preprocessor_config.json); must be new or empty unless --overwrite")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --output (by renames; refused otherwise)")
    parser.add_argument("--push-to-hub", metavar="REPO", help="also push the converted model to this Hub repo")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max patch-token difference to the source implementation")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        check_output(args.output, args.overwrite, inputs=(args.input,))  # before the (slow) conversion; never the input itself
        if args.format == "dinov3-hub":
            from snd.convert.dinov3 import convert_dinov3_hub, save_transformers_backbone

            model, report = convert_dinov3_hub(args.input, tolerance=args.tolerance, layer_norm_eps=args.layer_norm_eps)
            folder = save_transformers_backbone(model, args.output, overwrite=args.overwrite)
        else:
            model, report = convert_backbone(args.input, args.format, args.preset, tolerance=args.tolerance)
            folder = save_backbone(model, args.output, overwrite=args.overwrite)
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
    if args.format != "dinov3-hub":  # an SnD/DINOv2 folder gets its model card at save time, not only on push
        render_model_card(card, config=model.config, has_remote_code=True).save(Path(folder) / "README.md")
    print(json.dumps({"output": str(folder), "preset": report.preset, "max_abs_difference": report.max_abs_difference}, indent=2))
    if args.push_to_hub:
        from snd.backbones import default_image_processor

        card.repo_id = args.push_to_hub
        processor = default_image_processor(model) if args.format == "dinov3-hub" else SnDImageProcessor()
        result = push_model(model, processor, args.push_to_hub, card)
        print(f"pushed to {result.commit_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
