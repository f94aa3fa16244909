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

``--bound`` instead measures one render against its hardware bound (issue 15): the scene of two
128x192 context views (N = 49,152) rendered into 128x192 for D = 3, 64, 384, 768. The bound is
what a renderer must at least do: for each contributing (pixel, Gaussian) pair (counted by the
torch backend: weight ``alpha T`` non-zero) ``2 D`` FLOPs of blending plus ``GEOMETRY_FLOPS``
for its alpha and transmittance, at the matmul rate measured in the same run; and reading every
Gaussian's features and writing the image once at the measured copy bandwidth; the larger of
the two times. Reported: CPU time (``time.process_time``) or synchronised wall time on CUDA,
minor page faults per render (``resource.getrusage``), bound and gap = time / bound.
``--baseline REV`` renders the same scenes, in the same process and alternating with the
current code, with ``src/snd/splatting/_torch_impl.py`` as of git revision ``REV`` (loaded into
a temporary module), and reports its time, gap and largest difference from the current render.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import math
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

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


GEOMETRY_FLOPS = 16  # per contributing pair: quadratic form (12), exp (1), 1 - alpha, T update, weight
BOUND_SCENE = dict(num_gaussians=49_152, height=128, width=192)  # issue 15's row: 2 views of 128x192
BOUND_CHANNELS = (3, 64, 384, 768)


@dataclass
class HardwareRates:
    """Rates measured in this process: fp32 matmul GFLOP/s and copy bandwidth (read + write) GB/s."""

    matmul_gflops: float
    copy_gbps: float
    device: str


def measure_hardware(device: str = "cpu", matmul_size: int | None = None, copy_mib: int = 256, repeats: int = 3) -> HardwareRates:
    """Best-of-``repeats`` square fp32 matmul rate and ``copy_`` bandwidth on ``device`` (current thread count)."""
    matmul_size = matmul_size or (1024 if device == "cpu" else 8192)
    a = torch.randn(matmul_size, matmul_size, device=device)
    b = torch.randn(matmul_size, matmul_size, device=device)
    source = torch.ones(copy_mib * (1 << 20) // 4, device=device)
    target = torch.empty_like(source)
    target.copy_(source)  # touch every page before timing
    a @ b
    _synchronize(device)
    # CPU time on CPU (as the renders are timed there: a loaded machine then does not lower the
    # rates), synchronised wall time on CUDA.
    clock = time.process_time if device == "cpu" else time.perf_counter
    matmul_s, copy_s = math.inf, math.inf
    for _ in range(repeats):
        start = clock()
        a @ b
        _synchronize(device)
        matmul_s = min(matmul_s, clock() - start)
        start = clock()
        target.copy_(source)
        _synchronize(device)
        copy_s = min(copy_s, clock() - start)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else f"cpu, {torch.get_num_threads()} thread(s)"
    return HardwareRates(2 * matmul_size**3 / matmul_s / 1e9, 2 * source.numel() * 4 / copy_s / 1e9, name)


def render_bound(contributing_pairs: int, pixels: int, gaussians: int, channels: int, rates: HardwareRates) -> dict:
    """FLOPs, bytes and the roofline time (ms) a render of these sizes cannot beat (see module docstring)."""
    flops = contributing_pairs * (2 * channels + GEOMETRY_FLOPS)
    bytes_moved = 4 * channels * (gaussians + pixels) + 4 * 10 * gaussians  # features in, image out, 10 floats/Gaussian
    bound_ms = 1000.0 * max(flops / (rates.matmul_gflops * 1e9), bytes_moved / (rates.copy_gbps * 1e9))
    return dict(flops=flops, bytes=bytes_moved, bound_ms=bound_ms)


def load_baseline_renderer(revision: str, repository: str | Path | None = None):
    """``src/snd/splatting/_torch_impl.py`` at git ``revision``, imported as a throw-away module."""
    repository = Path(repository) if repository else Path(__file__).resolve().parents[3]
    try:
        source = subprocess.run(
            ["git", "-C", str(repository), "show", f"{revision}:src/snd/splatting/_torch_impl.py"],
            capture_output=True, text=True, check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or str(error)
        raise ValueError(f"--baseline {revision!r}: cannot read src/snd/splatting/_torch_impl.py from git in {repository}: {detail.strip()}") from error
    directory = Path(tempfile.mkdtemp(prefix="snd-baseline-"))
    path = directory / "snd_baseline_torch_impl.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"snd_baseline_torch_impl_{abs(hash(revision))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rasterize_kwargs(scene: dict, colors: torch.Tensor) -> dict:
    """``rasterize_torch`` arguments (batch of one) for a ``synthetic_lifted_scene``."""
    return dict(
        means=scene["means"][None], covars=scene["covars"][None], opacities=scene["opacities"][None], colors=colors[None],
        viewmats=scene["viewmats"][None], Ks=scene["Ks"][None], width=scene["width"], height=scene["height"],
        near_plane=0.01, far_plane=1e10, eps2d=0.3, backgrounds=None, render_depth=False,
    )


def _measure(fn, device: str) -> dict:
    """One call: CPU ms, wall ms and minor page faults (the fault count is process-wide)."""
    import resource

    _synchronize(device)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    cpu, wall = time.process_time(), time.perf_counter()
    output = fn()
    _synchronize(device)
    return dict(
        cpu_ms=(time.process_time() - cpu) * 1000.0,
        wall_ms=(time.perf_counter() - wall) * 1000.0,
        faults=resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults,
        output=output,
    )


@torch.no_grad()
def run_bound_benchmark(
    channels: tuple[int, ...] = BOUND_CHANNELS,
    num_gaussians: int = BOUND_SCENE["num_gaussians"],
    height: int = BOUND_SCENE["height"],
    width: int = BOUND_SCENE["width"],
    repeats: int = 3,
    device: str = "cpu",
    backend: str = "torch",
    baseline: str | None = None,
    threads: int | None = None,
    seed: int = 0,
) -> tuple[list[dict], HardwareRates]:
    """Time one render per channel count against its bound; optionally beside a git revision's renderer."""
    from ..splatting._torch_impl import rasterize_torch

    if threads:
        torch.set_num_threads(threads)
    rates = measure_hardware(device)
    old = load_baseline_renderer(baseline) if baseline else None
    rows = []
    for count in channels:
        scene = synthetic_lifted_scene(num_gaussians, height, width, count, seed=seed, device=device)
        colors = scene.pop("colors")
        stats: dict = {}
        rasterize_torch(**_rasterize_kwargs(scene, colors[:, :1]), stats=stats)  # pair counts (same for any D)

        def current():
            return render_features(colors=colors, backend=backend, **scene).renders

        candidates = {"current": current}
        if old is not None:
            candidates["baseline"] = lambda: old.rasterize_torch(**_rasterize_kwargs(scene, colors))[0][0]
        for fn in candidates.values():  # warm-up (also fills the renderer's reusable buffers)
            fn()
        runs = {name: [] for name in candidates}
        for _ in range(repeats):  # alternate, so both see the same machine load
            for name, fn in candidates.items():
                runs[name].append(_measure(fn, device))
        bound = render_bound(stats["contributing_pairs"], stats["pixels"], num_gaussians, count, rates)
        row = dict(
            gaussians=num_gaussians, height=height, width=width, channels=count,
            pairs_per_pixel=stats["contributing_pairs"] / stats["pixels"],
            evaluated_per_pixel=stats["evaluated_pairs"] / stats["pixels"],
            **bound,
        )
        time_key = "cpu_ms" if device == "cpu" else "wall_ms"
        for name, measured in runs.items():
            row[f"{name}_ms"] = statistics.median(m[time_key] for m in measured)
            row[f"{name}_wall_ms"] = statistics.median(m["wall_ms"] for m in measured)
            row[f"{name}_faults"] = int(statistics.median(m["faults"] for m in measured))
            row[f"{name}_gap"] = row[f"{name}_ms"] / bound["bound_ms"]
        if old is not None:
            row["speedup"] = row["baseline_ms"] / row["current_ms"]
            reference = runs["baseline"][-1]["output"]
            row["max_abs_difference"] = (runs["current"][-1]["output"].reshape(reference.shape) - reference).abs().max().item()
        rows.append(row)
    return rows, rates


def format_bound_table(rows: list[dict], rates: HardwareRates) -> str:
    """Markdown table of ``run_bound_benchmark`` rows (times: CPU ms on CPU, synchronised wall ms on CUDA)."""
    baseline = "baseline_ms" in rows[0] if rows else False
    head = "| N | H x W | D | pairs/pixel | evaluated/pixel | GFLOP | MB | bound ms | ms | faults | gap |"
    rule = "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    if baseline:
        head += " baseline ms | baseline faults | baseline gap | speed-up | max abs diff |"
        rule += "---:|---:|---:|---:|---:|"
    lines = [
        f"device: {rates.device}; fp32 matmul {rates.matmul_gflops:.1f} GFLOP/s, copy {rates.copy_gbps:.1f} GB/s (measured in this run)",
        "",
        head,
        rule,
    ]
    for row in rows:
        line = (
            f"| {row['gaussians']:,} | {row['height']}x{row['width']} | {row['channels']} | {row['pairs_per_pixel']:.1f} | "
            f"{row['evaluated_per_pixel']:.0f} | {row['flops'] / 1e9:.3f} | {row['bytes'] / 1e6:.1f} | {row['bound_ms']:.1f} | "
            f"{row['current_ms']:.1f} | {row['current_faults']:,} | {row['current_gap']:.1f}x |"
        )
        if baseline:
            line += (
                f" {row['baseline_ms']:.1f} | {row['baseline_faults']:,} | {row['baseline_gap']:.1f}x | "
                f"{row['speedup']:.2f}x | {row['max_abs_difference']:.1e} |"
            )
        lines.append(line)
    return "\n".join(lines)


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
    parser.add_argument("--bound", action="store_true", help="one render per D against its FLOP/byte bound (see module docstring)")
    parser.add_argument("--baseline", default=None, metavar="REV", help="with --bound: also time _torch_impl.py from this git revision")
    parser.add_argument("--resolution", default=None, metavar="HxW", help="with --bound: target size (default 128x192)")
    args = parser.parse_args(argv)

    if args.baseline and not args.bound:
        parser.error("--baseline needs --bound")
    if args.bound:
        height, width = BOUND_SCENE["height"], BOUND_SCENE["width"]
        if args.resolution:
            try:
                height, width = (int(v) for v in args.resolution.lower().split("x"))
            except ValueError:
                parser.error(f"--resolution must look like 128x192, got {args.resolution!r}")
        rows, rates = run_bound_benchmark(
            channels=tuple(args.channels or BOUND_CHANNELS),
            num_gaussians=(args.gaussians or [2 * height * width])[0],
            height=height, width=width,
            repeats=args.repeats or 3,
            device=args.device,
            backend="torch" if args.backend == "auto" and args.device == "cpu" else args.backend,
            baseline=args.baseline, threads=args.threads,
        )
        print(f"render bound benchmark: backend={args.backend}, torch {torch.__version__}, {_load_note()}"
              + (f", baseline {args.baseline}" if args.baseline else ""))
        print(format_bound_table(rows, rates))
        return rows

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
