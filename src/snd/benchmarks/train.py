"""``scripts/benchmark.py train``: time and peak memory of every stage of the SnD training step.

Stages: lift, teacher (EMA backbone on the context views), upsample, render, blend (+ downsample and
hole masking), student, loss (teacher head + cross-entropy), backward, optimizer, ema. Settings:
``default`` (the embedded default: tiny student, 56x84 synthetic views) and ``vits224`` (a
ViT-S-sized random student, DINO heads at paper size, 224x224 synthetic views). Peak memory is
``torch.cuda.max_memory_allocated`` on CUDA; on CPU it is the peak resident set size above the
stage's starting RSS, sampled every millisecond by a thread during one extra, untimed step (the
sampler slows Python-heavy stages, so times come from steps without it). RSS growth is a coarse
view: memory the allocator reuses from earlier stages does not show.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch

SETTINGS = {
    "default": [],
    "vits224": [
        "model.preset=dinov2-s",
        "model.finetune=lora",
        "head.num_prototypes=65536",
        "head.hidden_dim=2048",
        "head.bottleneck_dim=256",
        "data.image_height=224",
        "data.image_width=224",
        "data.num_scenes=2",
        "training.batch_size=1",
    ],
}
STAGES = ["data", "lift", "teacher", "upsample", "render", "blend", "student", "loss", "backward", "optimizer", "ema"]


class StageProfiler:
    """Context-manager factory recording wall time and peak memory per named stage."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times: dict[str, list[float]] = {}
        self.peaks: dict[str, list[float]] = {}
        self.enabled = True
        self.measure_memory = False  # on CPU the RSS sampling thread competes for the GIL: never time with it on

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def __call__(self, name: str):
        if not self.enabled:
            yield
            return
        self._sync()
        cuda = self.device.type == "cuda"
        sampler = _RSSPeak() if self.measure_memory and not cuda else None
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            start_memory = torch.cuda.memory_allocated(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            elapsed = time.perf_counter() - start
            if cuda:
                self.peaks.setdefault(name, []).append(max(torch.cuda.max_memory_allocated(self.device) - start_memory, 0) / 2**20)
            elif sampler is not None:
                self.peaks.setdefault(name, []).append(max(sampler.stop(), 0) / 2**20)
            if not self.measure_memory or cuda:
                self.times.setdefault(name, []).append(elapsed)


class _RSSPeak:
    """Peak RSS growth (bytes) of this process while it runs, sampled by a thread."""

    def __init__(self, interval: float = 0.001) -> None:
        import psutil

        self.process = psutil.Process()
        self.start = self.process.memory_info().rss
        self.peak = self.start
        self.interval = interval
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def stop(self) -> int:
        self._stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
        return self.peak - self.start


def run_setting(name: str, steps: int, warmup: int, device: str, threads: int | None, overrides: list[str] = ()) -> dict:
    """Time ``steps`` training steps (after ``warmup``) of setting ``name``; returns per-stage statistics."""
    from ..data import collate_multiview
    from ..distill.build import PreloadedScenes, backbone_config, build_dataset, build_lifter, build_student
    from ..distill.config import load_config
    from ..distill.teacher import EMATeacher, SplatTeacher
    from ..distill.trainer import build_loss, distill_step

    if threads:
        torch.set_num_threads(threads)
    config = load_config("default", SETTINGS[name] + list(overrides) + ["training.output_dir=/tmp/unused"])
    torch.manual_seed(0)
    device = torch.device(device)
    student = build_student(config).to(device)
    patch = backbone_config(student.backbone).patch_size
    teacher = EMATeacher(student.backbone, student.head, config.teacher.momentum, update_every=1)
    splat = SplatTeacher(teacher, build_lifter(config.lifter), patch_size=patch, blend_alpha=config.teacher.blend_alpha).to(device)
    loss_fn = build_loss(config)
    dataset = PreloadedScenes(build_dataset(config.data, 0))
    trainable = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config.training.lr)
    profiler = StageProfiler(device)
    batch_size = config.training.batch_size
    # warm-up steps, timed steps, then (CPU) one more step with the RSS sampler for the memory column
    memory_steps = 0 if device.type == "cuda" else 1
    for step in range(warmup + steps + memory_steps):
        profiler.enabled = step >= warmup
        profiler.measure_memory = step >= warmup + steps
        start = time.perf_counter()
        with profiler("data"):
            batch = collate_multiview([dataset[(step * batch_size + i) % len(dataset)] for i in range(batch_size)]).to(device)
        losses = distill_step(student, splat, loss_fn, batch, stage=profiler)
        with profiler("backward"):
            losses["loss"].backward()
        with profiler("optimizer"):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        with profiler("ema"):
            teacher.maybe_update(step + 1, student.backbone, student.head)
        if profiler.enabled and not profiler.measure_memory:
            profiler.times.setdefault("total", []).append(time.perf_counter() - start)
    parameters = sum(p.numel() for p in student.backbone.parameters())
    return {
        "setting": name,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "image": [config.data.image_height, config.data.image_width],
        "backbone_parameters": parameters,
        "hidden_size": backbone_config(student.backbone).hidden_size,
        "prototypes": config.head.num_prototypes,
        "steps": steps,
        "stages": {
            stage: {
                "median_ms": 1000 * statistics.median(profiler.times[stage]),
                "peak_mib": max(profiler.peaks.get(stage, [0.0])),
            }
            for stage in STAGES + ["total"]
            if stage in profiler.times
        },
    }


def format_table(result: dict) -> str:
    total = result["stages"]["total"]["median_ms"]
    lines = [
        f"### {result['setting']}: batch {result['batch_size']}, {result['image'][0]}x{result['image'][1]}, "
        f"hidden {result['hidden_size']}, {result['prototypes']} prototypes, {result['device']} ({result['threads']} threads)",
        "",
        "| stage | median ms | share of step | peak MiB |",
        "|---|---:|---:|---:|",
    ]
    for stage, values in result["stages"].items():
        share = "" if stage == "total" else f"{100 * values['median_ms'] / total:.0f}%"
        peak = "" if stage == "total" else f"{values['peak_mib']:.1f}"
        lines.append(f"| {stage} | {values['median_ms']:.1f} | {share} | {peak} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="benchmark.py train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", default=["default", "vits224"], choices=sorted(SETTINGS))
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting (after --warmup)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="config override applied to every setting")
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    results = [run_setting(name, args.steps, args.warmup, args.device, args.threads, args.set) for name in args.settings]
    for result in results:
        print(format_table(result))
        print()
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
