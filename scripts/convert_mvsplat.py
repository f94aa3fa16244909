#!/usr/bin/env python
"""Convert an official MVSplat Lightning checkpoint (re10k.ckpt, acid.ckpt) into an MVSplatModel folder.

Example:
    python scripts/convert_mvsplat.py --input re10k.ckpt --output mvsplat-re10k [--push-to-hub USER/mvsplat-re10k]
The folder loads with `MVSplatModel.from_pretrained(folder)` (or `AutoModel` after `import snd`).
"""

import argparse
import json
import sys

from snd.convert.common import ConversionError
from snd.convert.mvsplat import convert_checkpoint


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="official MVSplat checkpoint (.ckpt)")
    parser.add_argument("--output", required=True, help="folder to write (config.json, model.safetensors); must be new or empty unless --overwrite")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --output (by renames; refused otherwise)")
    parser.add_argument("--push-to-hub", metavar="REPO", help="also push the converted model to this Hub repo")
    args = parser.parse_args(argv)
    try:
        report = convert_checkpoint(args.input, args.output, push_to_hub=args.push_to_hub, overwrite=args.overwrite)
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    summary = {
        "output": args.output,
        "converted_keys": report.converted,
        "ignored_non_encoder_keys": report.ignored_non_encoder,
        "num_depth_candidates": report.config.num_depth_candidates,
        "sh_degree": report.config.sh_degree,
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
