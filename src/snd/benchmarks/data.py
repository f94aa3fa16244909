"""Synthetic scene rendering throughput (views per second), the embedded default's data source."""

from __future__ import annotations

import argparse
import json

from ..data import SyntheticSceneConfig, render_throughput


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="benchmark.py data", description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=["64x64", "128x128"], help="HxW image sizes")
    parser.add_argument("--scenes", type=int, default=4, help="full trajectories rendered per size")
    parser.add_argument("--frames", type=int, default=24, help="frames per trajectory")
    parser.add_argument("--render-threads", type=int, default=1, help="torch threads used while ray casting")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = parser.parse_args(argv)
    rows = []
    for size in args.sizes:
        height, width = (int(v) for v in size.lower().split("x"))
        config = SyntheticSceneConfig(height=height, width=width, num_frames=args.frames, render_threads=args.render_threads)
        rows.append(render_throughput(config, num_scenes=args.scenes))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print("| H x W | views | seconds | views/s |\n|---:|---:|---:|---:|")
        for row in rows:
            print(f"| {row['height']}x{row['width']} | {row['views']} | {row['seconds']:.2f} | {row['views_per_second']:.1f} |")
    return rows
