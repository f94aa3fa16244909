"""Benchmark: render D feature channels in one pass vs. the authors' 3 channels per rasterizer call.

The SnD reference code splats a C-channel teacher map by calling a 3-channel rasterizer C/3
times (128 calls for ViT-S). ``render_features`` does the projection, tile sort and
alpha evaluation once and blends all channels with one batched matmul. Both sides here use
the same backend and the same scene; times are medians over repeats, measured in one run.

Scenes mimic SnD training: one Gaussian per pixel of two context views (smooth random depth,
pixel-footprint-sized Gaussians) rendered into a target camera between them.

Usage: ``python scripts/benchmark.py render [--quick] [--threads 1] [--chunked-sample 32] [--device cuda]``.
``--chunked-sample K`` times K evenly spaced 3-channel calls instead of all D/3 and scales the
time (each call does identical work on different channels); the table shows how many were timed.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..splatting import render_features

CHANNELS_PER_CALL = 3  # the authors' rasterizer is compiled for RGB


@dataclass
class RenderBenchmarkConfig:
    channels: tuple[int, ...] = (384, 768)
    num_gaussians: tuple[int, ...] = (20_000, 100_000)
    resolutions: tuple[tuple[int, int], ...] = ((64, 96), (128, 192))  # (height, width)
    repeats: int = 3  # one-pass repeats; the 3-channel loop (D/3 renders) runs ``chunked_repeats`` times
    chunked_repeats: int = 1
    chunked_sample: int | None = None  # time only this many evenly spaced 3-channel calls, scaled to D/3
    backend: str = "auto"
    device: str = "cpu"
    threads: int | None = None
    seed: int = 0


QUICK = dict(channels=(384,), num_gaussians=(20_000,), resolutions=((64, 96),), repeats=2, chunked_repeats=1)


def synthetic_lifted_scene(
    num_gaussians: int, height: int, width: int, channels: int, seed: int = 0, device="cpu", dtype=torch.float32
) -> dict:
    """``render_features`` kwargs for per-pixel Gaussians of two context views seen from a middle view.

    Each context view contributes half of the ``num_gaussians`` Gaussians on a ``3:2`` pixel grid,
    unprojected at a smooth random depth in [2, 6], isotropic with the pixel's footprint as
    standard deviation, opacity in [0.3, 1]. Cameras share normalised intrinsics (fx = fy = 1
    relative to width/height, centred) and sit 0.2 apart along x; the target sits in between.
    """
    generator = torch.Generator().manual_seed(seed)
    means, scales = [], []
    for view, offset in enumerate((-0.1, 0.1)):
        per_view = num_gaussians // 2 + (num_gaussians % 2) * view
        context_h = max(1, round(math.sqrt(per_view * 2 / 3)))
        context_w = max(1, math.ceil(per_view / context_h))
        coarse = torch.rand(1, 1, 6, 9, generator=generator)
        depth = 2.0 + 4.0 * torch.nn.functional.interpolate(coarse, size=(context_h, context_w), mode="bicubic", align_corners=True)
        depth = depth[0, 0].clamp(2.0, 6.0)
        v, u = torch.meshgrid(
            (torch.arange(context_h) + 0.5) / context_h - 0.5, (torch.arange(context_w) + 0.5) / context_w - 0.5, indexing="ij"
        )
        # normalised fx = fy = 1: x/z = u * (1), y/z = v * (H / W) keeps square pixels on the 3:2 grid
        points = torch.stack([u * depth + offset, v * (context_h / context_w) * depth, depth], -1).reshape(-1, 3)
        # The last grid row may be partial so that the count is exactly num_gaussians.
        means.append(points[:per_view])
        scales.append((depth / context_w).reshape(-1)[:per_view])
    means = torch.cat(means)
    count = means.shape[0]
    scale = torch.cat(scales)
    covars = torch.diag_embed(scale[:, None].expand(count, 3) ** 2)
    opacities = 0.3 + 0.7 * torch.rand(count, generator=generator)
    colors = torch.randn(count, channels, generator=generator)
    Ks = torch.tensor([[[float(width), 0.0, width / 2], [0.0, float(width), height / 2], [0.0, 0.0, 1.0]]])
    viewmats = torch.eye(4)[None]
    tensors = dict(means=means, covars=covars, opacities=opacities, colors=colors, viewmats=viewmats, Ks=Ks)
    scene = {name: tensor.to(device=device, dtype=dtype) for name, tensor in tensors.items()}
    return dict(scene, width=width, height=height)


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(fn, repeats: int, device: str, warmup: bool = True) -> tuple[float, torch.Tensor]:
    """Median wall time in ms over ``repeats`` calls, and the last call's output."""
    if warmup:
        fn()
        _synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        output = fn()
        _synchronize(device)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times), output


@torch.no_grad()
def run_render_benchmark(config: RenderBenchmarkConfig) -> list[dict]:
    """Time one-pass vs. 3-channel chunked rendering for every grid point; returns table rows."""
    if config.threads:
        torch.set_num_threads(config.threads)
    rows = []
    grid = list(itertools.product(config.num_gaussians, config.resolutions, config.channels))
    for count, (height, width), channels in tqdm(grid, desc="render benchmark"):
        scene = synthetic_lifted_scene(count, height, width, channels, seed=config.seed, device=config.device)
        colors = scene.pop("colors")

        def one_pass():
            return render_features(colors=colors, backend=config.backend, **scene).renders

        starts = list(range(0, channels, CHANNELS_PER_CALL))
        timed_starts = starts
        if config.chunked_sample and config.chunked_sample < len(starts):
            step = len(starts) / config.chunked_sample
            timed_starts = [starts[int(i * step)] for i in range(config.chunked_sample)]

        def three_channels_per_call():
            parts = [
                render_features(colors=colors[:, start : start + CHANNELS_PER_CALL], backend=config.backend, **scene).renders
                for start in timed_starts
            ]
            return torch.cat(parts, dim=-1)

        one_ms, one_output = _time(one_pass, config.repeats, config.device)
        # No separate warm-up: the one-pass warm-up already ran the same code on the same scene.
        chunked_ms, chunked_output = _time(three_channels_per_call, config.chunked_repeats, config.device, warmup=False)
        chunked_ms *= len(starts) / len(timed_starts)  # every call does the same work on other channels
        channel_index = torch.tensor([start + i for start in timed_starts for i in range(CHANNELS_PER_CALL) if start + i < channels])
        max_difference = (one_output[..., channel_index.to(one_output.device)] - chunked_output).abs().max().item()
        rows.append(
            dict(
                gaussians=count,
                height=height,
                width=width,
                channels=channels,
                calls=len(starts),
                timed_calls=len(timed_starts),
                one_pass_ms=one_ms,
                chunked_ms=chunked_ms,
                speedup=chunked_ms / one_ms,
                max_abs_difference=max_difference,
            )
        )
    return rows


def format_table(rows: list[dict]) -> str:
    """Markdown table of benchmark rows."""
    lines = [
        "| N Gaussians | H x W | D | calls (3 ch) | timed calls | one pass ms/view | 3 ch/call ms/view | speed-up | max abs diff |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['gaussians']:,} | {row['height']}x{row['width']} | {row['channels']} | {row['calls']} | {row['timed_calls']} | "
            f"{row['one_pass_ms']:.1f} | {row['chunked_ms']:.1f} | {row['speedup']:.1f}x | {row['max_abs_difference']:.1e} |"
        )
    return "\n".join(lines)


def _load_note() -> str:
    try:
        one, five, fifteen = __import__("os").getloadavg()
        return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f}"
    except OSError:  # pragma: no cover - not on every platform
        return "load average unavailable"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="benchmark.py render", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small grid: D=384, N=20k, 64x96")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "gsplat"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=None, help="timed one-pass repeats (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--channels", type=int, nargs="+", default=None)
    parser.add_argument("--gaussians", type=int, nargs="+", default=None)
    parser.add_argument(
        "--chunked-sample",
        type=int,
        default=None,
        help="time only this many evenly spaced 3-channel calls and scale to D/3 calls (default: time them all)",
    )
    args = parser.parse_args(argv)

    settings = dict(QUICK) if args.quick else {}
    if args.repeats is not None:
        settings["repeats"] = args.repeats
    if args.channels:
        settings["channels"] = tuple(args.channels)
    if args.gaussians:
        settings["num_gaussians"] = tuple(args.gaussians)
    config = RenderBenchmarkConfig(
        backend=args.backend, device=args.device, threads=args.threads, chunked_sample=args.chunked_sample, **settings
    )
    rows = run_render_benchmark(config)
    device = torch.cuda.get_device_name() if config.device.startswith("cuda") else f"cpu, {torch.get_num_threads()} threads"
    print(f"render benchmark: backend={config.backend}, device={device}, torch {torch.__version__}, {_load_note()}")
    print(format_table(rows))
    if any(row["timed_calls"] < row["calls"] for row in rows):
        print("3 ch/call times with fewer timed calls than calls are scaled by calls / timed calls.")
    return rows
