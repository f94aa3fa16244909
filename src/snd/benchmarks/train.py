"""``scripts/benchmark.py train``: time and peak memory of every stage of the SnD training step.

Stages: lift, teacher (EMA backbone on the context views), upsample, render, blend (+ downsample and
hole masking), student, loss (teacher head + cross-entropy), backward, optimizer, ema. Settings:
``default`` (the embedded default: the shipped nano-2d backbone, 64x80 synthetic views), ``tiny``
(the ``tiny_synthetic`` preset: tiny random student, 42x56 views; the embedded default before nano-2d shipped, which
the timings in BENCHMARKS.md labelled ``default`` measured) and ``vits224`` (a
ViT-S-sized random student, DINO heads at paper size, 224x224 synthetic views). Peak memory is
``torch.cuda.max_memory_allocated`` on CUDA; on CPU it is the peak resident set size above the
stage's starting RSS, sampled every millisecond by a thread during one extra, untimed step (the
sampler slows Python-heavy stages, so times come from steps without it). RSS growth is a coarse
view: memory the allocator reuses from earlier stages does not show.

Per stage it also prints CPU time (``time.process_time``, all threads; robust on a shared machine), minor page
faults, the FLOPs counted by ``torch.utils.flop_counter`` over one extra step, the least memory traffic of the
memory-bound stages (:func:`stage_bytes`) and the bound ``max(FLOP / sgemm rate, bytes / copy bandwidth)`` at
rates measured in the same process (:func:`calibrate`), with the gap CPU time / bound. ``--allocator reuse``
(default) applies :func:`snd.runtime.reuse_large_allocations` first, as the trainer does.
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

# setting -> (config it starts from, overrides)
SETTINGS = {
    "default": ("default", []),
    "tiny": ("tiny_synthetic", []),
    "vits224": ("tiny_synthetic", [
        "model.preset=dinov2-s",
        "model.finetune=lora",
        "head.num_prototypes=65536",
        "head.hidden_dim=2048",
        "head.bottleneck_dim=256",
        "data.image_height=224",
        "data.image_width=224",
        "data.num_scenes=2",
        "training.batch_size=1",
    ]),
}
STAGES = ["data", "lift", "teacher", "upsample", "render", "blend", "student", "loss", "backward", "optimizer", "ema"]


class StageProfiler:
    """Context-manager factory recording wall time and peak memory per named stage."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}  # process CPU seconds (all threads)
        self.faults: dict[str, list[int]] = {}  # minor page faults
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
        start_faults = _minor_faults()
        start_cpu = time.process_time()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            elapsed = time.perf_counter() - start
            cpu = time.process_time() - start_cpu
            faults = _minor_faults() - start_faults
            if cuda:
                self.peaks.setdefault(name, []).append(max(torch.cuda.max_memory_allocated(self.device) - start_memory, 0) / 2**20)
            elif sampler is not None:
                self.peaks.setdefault(name, []).append(max(sampler.stop(), 0) / 2**20)
            if not self.measure_memory or cuda:
                self.times.setdefault(name, []).append(elapsed)
                self.cpu.setdefault(name, []).append(cpu)
                self.faults.setdefault(name, []).append(faults)


def _minor_faults() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


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
    from ..distill.trainer import build_loss, build_optimizer, distill_step

    if threads:
        torch.set_num_threads(threads)
    base, setting = SETTINGS[name]
    config = load_config(base, setting + list(overrides) + ["training.output_dir=/tmp/unused"])
    torch.manual_seed(0)
    device = torch.device(device)
    student = build_student(config).to(device)
    patch = backbone_config(student.backbone).patch_size
    teacher = EMATeacher(student.backbone, student.head, config.teacher.momentum, update_every=1)
    splat = SplatTeacher(teacher, build_lifter(config.lifter), patch_size=patch, blend_alpha=config.teacher.blend_alpha).to(device)
    loss_fn = build_loss(config)
    dataset = PreloadedScenes(build_dataset(config.data, 0))
    trainable = [p for p in student.parameters() if p.requires_grad]
    optimizer = build_optimizer(trainable, config.training)
    profiler = StageProfiler(device)
    batch_size = config.training.batch_size
    # warm-up steps, timed steps, one step counting FLOPs, then (CPU) one more step with the RSS sampler
    memory_steps = 0 if device.type == "cuda" else 1
    counter = _FlopCounter()
    for step in range(warmup + steps + 1 + memory_steps):
        counting = step == warmup + steps
        profiler.enabled = step >= warmup and not counting
        profiler.measure_memory = step > warmup + steps
        stage = counter if counting else profiler
        start, start_cpu, start_faults = time.perf_counter(), time.process_time(), _minor_faults()
        with stage("data"):
            batch = collate_multiview([dataset[(step * batch_size + i) % len(dataset)] for i in range(batch_size)]).to(device)
        losses = distill_step(student, splat, loss_fn, batch, stage=stage)
        with stage("backward"):
            losses["loss"].backward()
        with stage("optimizer"):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        with stage("ema"):
            teacher.maybe_update(step + 1, student.backbone, student.head)
        if profiler.enabled and not profiler.measure_memory:
            profiler.times.setdefault("total", []).append(time.perf_counter() - start)
            profiler.cpu.setdefault("total", []).append(time.process_time() - start_cpu)
            profiler.faults.setdefault("total", []).append(_minor_faults() - start_faults)
    parameters = sum(p.numel() for p in student.backbone.parameters())
    hardware = calibrate(device)
    shapes = {
        "context_pixels": batch.context.images.shape[0] * batch.context.images.shape[1] * batch.context.images.shape[-2] * batch.context.images.shape[-1],
        "target_pixels": batch.target.images.shape[0] * batch.target.images.shape[1] * batch.target.images.shape[-2] * batch.target.images.shape[-1],
        "channels": backbone_config(student.backbone).hidden_size,
        "patches": batch.target.images.shape[0] * batch.target.images.shape[1] * (batch.target.images.shape[-2] // patch) * (batch.target.images.shape[-1] // patch),
        "prototypes": config.head.num_prototypes,
        "bottleneck": config.head.bottleneck_dim,
        "trainable": sum(p.numel() for p in trainable),
    }
    minimal_bytes = stage_bytes(shapes)
    stages = {}
    for stage in STAGES + ["total"]:
        if stage not in profiler.times:
            continue
        flops = sum(counter.flops.values()) if stage == "total" else counter.flops.get(stage, 0)
        nbytes = sum(minimal_bytes.values()) if stage == "total" else minimal_bytes.get(stage, 0)
        bound = max(flops / hardware["flops_per_s"], nbytes / hardware["bytes_per_s"])
        if stage == "total":
            bound = sum(values["bound_ms"] for values in stages.values()) / 1000
        cpu_ms = 1000 * statistics.median(profiler.cpu[stage])
        # the gap compares CPU seconds with per-CPU-second rates on CPU; on CUDA, wall time with device rates
        measured_ms = cpu_ms if device.type == "cpu" else 1000 * statistics.median(profiler.times[stage])
        stages[stage] = {
            "median_ms": 1000 * statistics.median(profiler.times[stage]),
            "cpu_ms": cpu_ms,
            "minor_faults": int(statistics.median(profiler.faults[stage])),
            "gflop": flops / 1e9,
            "min_mb": nbytes / 1e6,
            "bound_ms": 1000 * bound,
            "gap": measured_ms / (1000 * bound) if bound > 1e-4 else None,
            "peak_mib": max(profiler.peaks.get(stage, [0.0])),
        }
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
        "hardware": hardware,
        "stages": stages,
    }


def stage_bytes(shapes: dict) -> dict[str, float]:
    """Least memory traffic (bytes, float32) of the memory-bound stages, the byte side of each stage's bound.

    upsample writes the full-resolution context features once; blend reads and writes the rendered target
    features; loss writes and reads the teacher logits and reads the student logits (plus the prototype weight);
    the optimiser is one fused Adam pass (read parameter, gradient, two moments; write parameter and moments);
    the EMA reads two and writes one copy of the trained parameters. Other stages use their FLOP bound only.
    """
    features = shapes["channels"] * 4
    logits = shapes["patches"] * shapes["prototypes"] * 4
    return {
        "upsample": shapes["context_pixels"] * features,
        "blend": 2 * shapes["target_pixels"] * features,
        "loss": 3 * logits + shapes["prototypes"] * shapes["bottleneck"] * 4,
        "optimizer": 7 * 4 * shapes["trainable"],
        "ema": 3 * 4 * shapes["trainable"],
    }


class _FlopCounter:
    """Stage factory (as :class:`StageProfiler`) counting the FLOPs of each stage with ``FlopCounterMode``."""

    def __init__(self) -> None:
        self.flops: dict[str, int] = {}

    @contextmanager
    def __call__(self, name: str):
        from torch.utils.flop_counter import FlopCounterMode

        mode = FlopCounterMode(display=False)
        with mode:
            yield
        self.flops[name] = self.flops.get(name, 0) + mode.get_total_flops()


def calibrate(device: torch.device, size: int = 1024, copy_mib: int = 128, repeats: int = 3) -> dict:
    """Same-process hardware rates: float32 GEMM FLOP/s (``size``^3) and copy bandwidth (read + write bytes/s).

    On CPU the rates are per CPU-second (``time.process_time``, all threads), the unit the stages are
    measured in, so a machine busy with other processes changes neither side of the ratio much.
    """
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    out = torch.empty(size, size, device=device)
    source = torch.randn(copy_mib * 2**20 // 4, device=device)
    target = torch.empty_like(source)
    torch.mm(a, b, out=out)
    target.copy_(source)

    def best(fn) -> float:
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            clock = time.perf_counter if device.type == "cuda" else time.process_time
            start = clock()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(clock() - start)
        return min(times)

    gemm = best(lambda: torch.mm(a, b, out=out))
    copy = best(lambda: target.copy_(source))
    return {"flops_per_s": 2 * size**3 / gemm, "bytes_per_s": 2 * source.numel() * 4 / copy}


def format_table(result: dict) -> str:
    total = result["stages"]["total"]["cpu_ms"]
    hardware = result["hardware"]
    lines = [
        f"### {result['setting']}: batch {result['batch_size']}, {result['image'][0]}x{result['image'][1]}, "
        f"hidden {result['hidden_size']}, {result['prototypes']} prototypes, {result['device']} ({result['threads']} threads)",
        "",
        f"Bounds at this process's sgemm rate {hardware['flops_per_s'] / 1e9:.1f} GFLOP/s and copy bandwidth "
        f"{hardware['bytes_per_s'] / 1e9:.1f} GB/s; a stage's bound is max(FLOP / rate, least bytes / bandwidth).",
        "",
        "| stage | wall ms | CPU ms | share of CPU | GFLOP | least MB | bound ms | gap (CPU / bound) | minor faults | peak MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for stage, values in result["stages"].items():
        share = "" if stage == "total" else f"{100 * values['cpu_ms'] / total:.0f}%"
        peak = "" if stage == "total" else f"{values['peak_mib']:.1f}"
        gap = "" if values["gap"] is None else f"{values['gap']:.1f}x"
        lines.append(
            f"| {stage} | {values['median_ms']:.1f} | {values['cpu_ms']:.1f} | {share} | {values['gflop']:.2f} | {values['min_mb']:.0f} | "
            f"{values['bound_ms']:.1f} | {gap} | {values['minor_faults']} | {peak} |"
        )
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
    parser.add_argument(
        "--allocator",
        choices=["reuse", "default"],
        default="reuse",
        help="reuse: glibc keeps freed large blocks (snd.runtime.reuse_large_allocations, as the trainer does); default: glibc's defaults",
    )
    args = parser.parse_args(argv)
    if args.allocator == "reuse":
        from ..runtime import reuse_large_allocations

        reuse_large_allocations()
    results = [run_setting(name, args.steps, args.warmup, args.device, args.threads, args.set) for name in args.settings]
    for result in results:
        print(format_table(result))
        print()
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
