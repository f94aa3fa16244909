"""Benchmark: MVSplat lifting (2 context views -> per-pixel Gaussians), time per scene and peak memory.

Each resolution runs in a fresh child process so its peak memory is its own: on CPU the peak resident set
size of the child (and its increase over the loaded model), on CUDA `torch.cuda.max_memory_allocated`.
Times are medians over `repeats` forward passes after one warm-up, batch 1, `torch.no_grad()`, random
weights of the default (released RE10K) architecture unless `--config tiny`.

Usage: ``python scripts/benchmark.py lift [--quick] [--repeats 2] [--resolutions 256x256 576x880] [--json out.json]``.

``--compare-official DIR`` times the official encoder's two networks (``BackboneMultiview`` +
``DepthPredictorMultiView`` from a donydchen/mvsplat checkout in DIR; needs ``einops`` and ``jaxtyping``)
side by side with ours in one child process: the official weights (random) are converted with
``snd.convert.mvsplat.convert_state_dict``, both run on the same scene, alternating, and the table gives CPU
(or CUDA wall) time per scene, the ratio ours / official and the largest depth difference.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import torch


@dataclass
class LiftBenchmarkConfig:
    resolutions: tuple[tuple[int, int], ...] = ((256, 256), (576, 880))  # (height, width)
    views: int = 2
    repeats: int = 2
    warmup: int = 1
    config: str = "default"  # "default" (released RE10K architecture) or "tiny"
    device: str = "cpu"
    threads: int | None = None
    seed: int = 0


QUICK = dict(resolutions=((64, 64),), repeats=1, warmup=0, config="tiny")


def _peak_rss_bytes() -> int:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _current_rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


def scene_inputs(height: int, width: int, views: int, seed: int, device) -> tuple[torch.Tensor, ...]:
    """Random images and a plausible camera rig: views 0.2 apart along x, fx = fy = 1 (normalised), near 1, far 100."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(1, views, 3, height, width, generator=generator)
    extrinsics = torch.eye(4).repeat(1, views, 1, 1)
    extrinsics[0, :, 0, 3] = torch.linspace(-0.1, 0.1, views)
    intrinsics = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0 * width / height, 0.5], [0.0, 0.0, 1.0]]).repeat(1, views, 1, 1)
    near, far = torch.full((1, views), 1.0), torch.full((1, views), 100.0)
    return tuple(tensor.to(device) for tensor in (images, extrinsics, intrinsics, near, far))


def _child_setup(config: LiftBenchmarkConfig):
    """In a benchmark child: threads and seed as configured; returns ``(device, MVSplatConfig)``."""
    from ..models.mvsplat import MVSplatConfig

    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    return torch.device(config.device), (MVSplatConfig.tiny() if config.config == "tiny" else MVSplatConfig())


def _measure(config: LiftBenchmarkConfig, height: int, width: int, queue) -> None:
    """Child process: build the model, run warm-up + repeats at one resolution, report timings and memory."""
    try:
        from ..models.mvsplat import MVSplatModel

        device, model_config = _child_setup(config)
        model = MVSplatModel(model_config).to(device).eval()
        inputs = scene_inputs(height, width, config.views, config.seed, device)
        cuda = device.type == "cuda"
        baseline = _current_rss_bytes()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            baseline = torch.cuda.memory_allocated()
        times = []
        with torch.no_grad():
            for index in range(config.warmup + config.repeats):
                start = time.perf_counter()
                output = model(*inputs)
                if cuda:
                    torch.cuda.synchronize()
                if index >= config.warmup:
                    times.append(time.perf_counter() - start)
                del output
        peak = torch.cuda.max_memory_allocated() if cuda else _peak_rss_bytes()
        queue.put(
            dict(
                resolution=f"{height}x{width}",
                views=config.views,
                gaussians=config.views * height * width,
                ms_per_scene=1000 * statistics.median(times),
                runs=len(times),
                peak_memory_mib=peak / 2**20,
                peak_over_model_mib=None if baseline is None else (peak - baseline) / 2**20,
                memory_kind="cuda max_memory_allocated" if cuda else "peak RSS of the process",
                parameters=sum(p.numel() for p in model.parameters()),
                threads=torch.get_num_threads(),
            )
        )
    except Exception as error:  # noqa: BLE001 - reported by the parent with the resolution named
        queue.put(dict(resolution=f"{height}x{width}", error=f"{type(error).__name__}: {error}"))


_OFFICIAL_PACKAGES = ("src", "src.model", "src.model.encoder", "src.model.encoder.backbone", "src.model.encoder.costvolume", "src.geometry")


def official_networks(directory: str, config):
    """The official ``BackboneMultiview`` and ``DepthPredictorMultiView`` built from the checkout in ``directory``
    with ``config``'s (an :class:`MVSplatConfig`) architecture. The checkout's package ``__init__`` files (which
    import its datasets and renderers) are bypassed with empty stand-in packages; only the encoder's modules run."""
    import importlib
    import types
    from pathlib import Path

    root = Path(directory)
    if not (root / "src" / "model" / "encoder" / "costvolume" / "depth_predictor_multiview.py").is_file():
        raise FileNotFoundError(f"{directory} is not an MVSplat checkout (no src/model/encoder/costvolume/depth_predictor_multiview.py)")
    for name in _OFFICIAL_PACKAGES:
        package = types.ModuleType(name)
        package.__path__ = [str(root.joinpath(*name.split(".")))]
        sys.modules[name] = package
    backbone_module = importlib.import_module("src.model.encoder.backbone.backbone_multiview")
    depth_module = importlib.import_module("src.model.encoder.costvolume.depth_predictor_multiview")
    backbone = backbone_module.BackboneMultiview(
        feature_channels=config.feature_channels, downscale_factor=config.downscale_factor, no_cross_attn=False, use_epipolar_trans=False
    )
    depth_predictor = depth_module.DepthPredictorMultiView(
        feature_channels=config.feature_channels,
        upscale_factor=config.downscale_factor,
        num_depth_candidates=config.num_depth_candidates,
        costvolume_unet_feat_dim=config.costvolume_unet_feat_dim,
        costvolume_unet_channel_mult=tuple(config.costvolume_unet_channel_mult),
        costvolume_unet_attn_res=tuple(config.costvolume_unet_attn_res),
        gaussian_raw_channels=config.gaussian_raw_channels,
        gaussians_per_pixel=config.gaussians_per_pixel,
        num_views=2,
        depth_unet_feat_dim=config.depth_unet_feat_dim,
        depth_unet_attn_res=tuple(config.depth_unet_attn_res),
        depth_unet_channel_mult=tuple(config.depth_unet_channel_mult),
    )
    return backbone, depth_predictor


def _compare_official(config: LiftBenchmarkConfig, height: int, width: int, directory: str, queue) -> None:
    """Child process: official encoder networks vs ours with the same weights, timed alternately."""
    try:
        from torch import nn

        from ..convert.mvsplat import convert_state_dict

        device, model_config = _child_setup(config)
        official = nn.Module()
        official.backbone, official.depth_predictor = official_networks(directory, model_config)
        ours, _ = convert_state_dict({f"encoder.{key}": value for key, value in official.state_dict().items()}, model_config)
        official, ours = official.to(device).eval(), ours.to(device).eval()
        images, extrinsics, intrinsics, near, far = scene_inputs(height, width, config.views, config.seed, device)
        cuda = device.type == "cuda"

        def run_official():
            features, cnn_features = official.backbone(images, attn_splits=model_config.multiview_trans_attn_split, return_cnn_features=True)
            extra = {"images": images.transpose(0, 1).flatten(0, 1), "scene_names": None}
            depths = official.depth_predictor(
                features, intrinsics, extrinsics, near, far, gaussians_per_pixel=1, deterministic=True, extra_info=extra, cnn_features=cnn_features
            )[0]
            return depths.reshape(-1)

        def run_ours():
            features, cnn_features = ours.backbone(images)
            return ours.depth_predictor(features, cnn_features, images, intrinsics, extrinsics, near, far)[0].reshape(-1)

        def timed(fn):
            if cuda:
                torch.cuda.synchronize()
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            result = fn()
            if cuda:
                torch.cuda.synchronize()
            return result, time.perf_counter() - start_wall, time.process_time() - start_cpu

        times = {"official": [], "ours": []}
        difference = 0.0
        with torch.no_grad():
            for index in range(config.warmup + config.repeats):
                official_depths, *official_time = timed(run_official)
                our_depths, *our_time = timed(run_ours)
                difference = max(difference, float((official_depths - our_depths).abs().max()))
                spread = float(our_depths.std())
                if index >= config.warmup:
                    times["official"].append(official_time[0] if cuda else official_time[1])
                    times["ours"].append(our_time[0] if cuda else our_time[1])
        official_ms = 1000 * statistics.median(times["official"])
        ours_ms = 1000 * statistics.median(times["ours"])
        queue.put(
            dict(
                resolution=f"{height}x{width}",
                clock="CUDA wall" if cuda else "CPU (process_time)",
                official_ms=official_ms,
                ours_ms=ours_ms,
                ratio=ours_ms / official_ms,
                runs=len(times["ours"]),
                max_depth_difference=difference,
                depth_std=spread,
                threads=torch.get_num_threads(),
            )
        )
    except Exception as error:  # noqa: BLE001 - reported by the parent with the resolution named
        queue.put(dict(resolution=f"{height}x{width}", error=f"{type(error).__name__}: {error}"))


def _per_resolution_children(config: LiftBenchmarkConfig, target, *extra) -> list[dict]:
    """Run ``target(config, height, width, *extra, queue)`` in a fresh spawned process per resolution (clean peak
    memory and caches each time); a child that dies becomes an error row."""
    context = multiprocessing.get_context("spawn")
    rows = []
    for height, width in config.resolutions:
        queue = context.Queue()
        process = context.Process(target=target, args=(config, height, width, *extra, queue))
        process.start()
        process.join()
        rows.append(queue.get() if not queue.empty() else dict(resolution=f"{height}x{width}", error=f"child exited with {process.exitcode}"))
    return rows


def run_comparison(config: LiftBenchmarkConfig, directory: str) -> list[dict]:
    """One child process per resolution running :func:`_compare_official`."""
    return _per_resolution_children(config, _compare_official, directory)


def format_comparison(rows: list[dict]) -> str:
    lines = ["| resolution | clock | official ms / scene | ours ms / scene | ours / official | max depth difference | runs |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['resolution']} | - | error: {row['error']} | - | - | - | - |")
            continue
        lines.append(
            f"| {row['resolution']} | {row['clock']} | {row['official_ms']:.0f} | {row['ours_ms']:.0f} | {row['ratio']:.3f}x | "
            f"{row['max_depth_difference']:.2e} (depth std {row['depth_std']:.3g}) | {row['runs']} |"
        )
    return "\n".join(lines)


def run_benchmark(config: LiftBenchmarkConfig) -> list[dict]:
    """One child process per resolution running :func:`_measure`."""
    return _per_resolution_children(config, _measure)


def format_table(rows: list[dict]) -> str:
    lines = ["| resolution | views | Gaussians | ms / scene | peak memory (MiB) | over model (MiB) | runs |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['resolution']} | - | - | error: {row['error']} | - | - | - |")
            continue
        over = "-" if row["peak_over_model_mib"] is None else f"{row['peak_over_model_mib']:.0f}"
        lines.append(
            f"| {row['resolution']} | {row['views']} | {row['gaussians']:,} | {row['ms_per_scene']:.0f} | "
            f"{row['peak_memory_mib']:.0f} | {over} | {row['runs']} |"
        )
    return "\n".join(lines)


def _resolution(text: str) -> tuple[int, int]:
    try:
        height, width = (int(value) for value in text.lower().split("x"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 256x256, got {text!r}") from error
    return height, width


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="benchmark.py lift", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model at 64x64, one run (a smoke test)")
    parser.add_argument("--resolutions", nargs="+", type=_resolution, help="HEIGHTxWIDTH (multiples of 16); default 256x256 576x880")
    parser.add_argument("--views", type=int, help="context views (default 2)")
    parser.add_argument("--repeats", type=int, help="timed runs per resolution (default 2)")
    parser.add_argument("--warmup", type=int, help="untimed runs before the timed ones (default 1)")
    parser.add_argument("--config", choices=("default", "tiny"), help="model architecture (default: the released RE10K one)")
    parser.add_argument("--device", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    parser.add_argument(
        "--compare-official",
        metavar="DIR",
        help="a donydchen/mvsplat checkout: time its encoder networks side by side with ours (same weights, same scene)",
    )
    args = parser.parse_args(argv)
    settings = dict(QUICK) if args.quick else {}
    for name in ("views", "repeats", "warmup", "config", "device", "threads"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    if args.resolutions:
        settings["resolutions"] = tuple(args.resolutions)
    config = LiftBenchmarkConfig(**settings)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"lift benchmark: MVSplat ({config.config} architecture, random weights), device={config.device}, "
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {load:.1f}"
    )
    if args.compare_official:
        rows = run_comparison(config, args.compare_official)
        print(format_comparison(rows))
    else:
        rows = run_benchmark(config)
        print(format_table(rows))
        print(
            "(no --compare-official DIR: with a donydchen/mvsplat checkout in DIR this would also time the official "
            "BackboneMultiview + DepthPredictorMultiView with the same converted weights on the same scene, alternating "
            "with ours in one process, and print ours / official and the largest depth difference)"
        )
    if args.json:
        payload = dict(config=asdict(config), rows=rows)
        temporary = f"{args.json}.tmp"
        with open(temporary, "w") as handle:
            json.dump(payload, handle, indent=2)
        os.replace(temporary, args.json)
    return rows


if __name__ == "__main__":
    main()
