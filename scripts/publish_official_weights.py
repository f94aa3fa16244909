#!/usr/bin/env python
"""Publish the SnD authors' released weights as transformers repositories on the Hub.

Downloads dinov2_{small,base}_snd[_no_blending].pth from david-shavin/SnD, converts each with the numerical check
of `snd.convert.convert_backbone`, and pushes {organization}/dinov2-s, -b, -s-no-blending, -b-no-blending with their
image processor and model card. Needs a write token for the organisation (`hf auth login` or HF_TOKEN).

    python scripts/publish_official_weights.py --organization snd
    python scripts/publish_official_weights.py --dry-run --output-dir converted/   # convert and render only
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from snd.hub.official import OFFICIAL_CHECKPOINTS, ORGANIZATION, SOURCE_REPO, PublishConfig, publish_official_weights


def _file_preset(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected FILE=PRESET (e.g. dinov2_small_snd.pth=dinov2-s), got {text!r}")
    name, preset = text.split("=", 1)
    return name, preset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    files = ", ".join(c.filename for c in OFFICIAL_CHECKPOINTS)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source-repo", default=SOURCE_REPO, help=f"Hub repo with the released files ({SOURCE_REPO})")
    parser.add_argument("--source-revision", default=None, help="branch or commit of --source-repo (default main)")
    parser.add_argument("--organization", default=ORGANIZATION, help=f"namespace to push to ({ORGANIZATION})")
    parser.add_argument("--only", action="append", metavar="FILE", help=f"publish only these files (of {files})")
    parser.add_argument(
        "--preset",
        action="append",
        type=_file_preset,
        default=[],
        metavar="FILE=PRESET",
        help="architecture override for one file (a snd.PRESETS name), e.g. for tiny test files",
    )
    parser.add_argument("--private", action="store_true", help="create the target repositories as private")
    parser.add_argument("--no-verify", action="store_true", help="skip loading each push back and comparing outputs")
    parser.add_argument("--dry-run", action="store_true", help="download, convert and render cards; push nothing")
    parser.add_argument("--output-dir", type=Path, default=None, help="also save each converted repository here")
    parser.add_argument("--license", default="mit", help="license id written into the model cards")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max abs patch-token difference accepted")
    parser.add_argument("--summary-json", type=Path, default=None, help="write a JSON summary of what was published")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2", "huggingface_hub"):  # one line per HTTP request otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = parse_args(argv)
    config = PublishConfig(
        source_repo=args.source_repo,
        source_revision=args.source_revision,
        organization=args.organization,
        only=args.only,
        presets=dict(args.preset),
        private=args.private,
        verify=not args.no_verify,
        dry_run=args.dry_run,
        output_dir=args.output_dir,
        license=args.license,
        tolerance=args.tolerance,
    )
    published = publish_official_weights(config)
    summary = [
        {
            "file": record.checkpoint.filename,
            "repo_id": record.repo_id,
            "preset": record.preset,
            "sha256": record.sha256,
            "conversion_max_abs_difference": record.conversion_max_abs_difference,
            "commit": record.push.commit_oid if record.push else None,
            "reload_max_abs_diff": record.push.max_abs_diff if record.push else None,
            "local_dir": str(record.local_dir) if record.local_dir else None,
        }
        for record in published
    ]
    text = json.dumps(summary, indent=2)
    print(text)
    if args.summary_json is not None:
        args.summary_json.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
