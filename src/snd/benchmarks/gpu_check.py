"""GPU check (issue 15): everything that needs a CUDA device, in one time-boxed run with a markdown report.

``scripts/gpu_check.sh OUTDIR`` runs ``python -m snd.benchmarks.gpu_check OUTDIR``. Made for a machine
with one CUDA GPU, no network and a preinstalled stack (python3, torch + CUDA, transformers,
accelerate, peft, safetensors, einops, nvcc). Stages, each in its own process under ``timeout`` and
within the overall ``--budget`` (default 470 s, i.e. under 8 minutes); a stage that fails or times out
is recorded and the next one runs:

1. ``environment``: python, torch, CUDA, GPU name and memory, nvcc, CPU count.
2. ``install``: the wheels that travel with the checkout (``wheels/``, made by
   ``scripts/prepare_gpu_wheels.sh`` where a registry is reachable) go into ``CACHE/site`` with
   ``pip install --no-index --no-deps --find-links wheels --target`` (the system's packages are
   left alone); ``CACHE/site`` is put first on ``PYTHONPATH`` for the later stages.
3. ``gsplat_build``: gsplat's JIT CUDA extension, built once into ``CACHE/torch_extensions`` for this
   GPU's architecture only (``TORCH_CUDA_ARCH_LIST`` from ``torch.cuda.get_device_capability``,
   ``MAX_JOBS`` = CPU count, capped at 32); later stages reuse it.
4. ``cuda_tests``: ``pytest -m cuda`` (gsplat parity with the torch renderer, the depth lifter on CUDA).
5. ``render``: ``scripts/benchmark.py render`` on CUDA: one pass vs 3-channel calls (ms per view),
   and ``--bound`` for gsplat and for the torch backend (distance from the bandwidth/FLOP bound).
6. ``train_step``: ``scripts/benchmark.py train`` with the paper preset ``scannetpp_dinov2s`` at
   576x880 (ViT-S, LoRA, 65,536 prototypes, MVSplat lifter with random weights, synthetic scenes):
   time and peak GPU memory per stage.
7. ``preset_memory``: peak GPU memory of one full training step (forward, backward, Adam, EMA) for
   each paper preset at 576x880 and several per-GPU batch sizes: measured, not estimated.

``OUTDIR/gpu_check.md`` is the report; ``OUTDIR/logs/`` keeps every stage's output. Without a CUDA
device the GPU stages are reported as skipped (that path is what the CPU tests exercise).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
STAGES = ("environment", "install", "gsplat_build", "cuda_tests", "render", "train_step", "preset_memory")
NEEDS_CUDA = {"gsplat_build", "cuda_tests", "render", "train_step", "preset_memory"}
# Stage time limits (s); each is also cut to what is left of the budget.
STAGE_TIMEOUTS = {
    "environment": 30,
    "install": 60,
    "gsplat_build": 280,
    "cuda_tests": 120,
    "render": 90,
    "train_step": 90,
    "preset_memory": 150,
}
# Wheels the GPU machine lacks (gsplat and its runtime dependencies, pytest); see prepare_gpu_wheels.sh.
WHEELS = (
    "gsplat", "ninja", "jaxtyping", "wadler-lindig", "rich", "markdown-it-py", "mdurl", "pygments",
    "pytest", "pluggy", "iniconfig",
)
PAPER_PRESETS = ("scannetpp_dinov2s", "scannetpp_dinov2b")
PRESET_BATCHES = (1, 2, 4)
CHECK_RESOLUTION = (576, 880)
# Synthetic scenes small enough to build quickly (the presets' frame gaps need >= 13 frames otherwise).
SYNTHETIC_DATA = ["data.dataset=synthetic", "data.root=null", "data.num_scenes=2", "data.num_frames=4", "data.min_gap=1",
                  "data.max_gap=2", "data.num_workers=0", "data.samples_per_scene=1"]
ARCHITECTURE_OF = {"facebook/dinov2-small": "dinov2-s", "facebook/dinov2-base": "dinov2-b", "facebook/dinov2-large": "dinov2-l"}


@dataclass
class StageResult:
    name: str
    status: str  # "ok" | "failed" | "timed out" | "skipped"
    seconds: float = 0.0
    note: str = ""
    output: str = ""  # what the report shows (tables, summaries)
    log: str | None = None


@dataclass
class CheckContext:
    outdir: Path
    cache: Path
    wheels: Path
    python: str
    budget: float
    started: float = field(default_factory=time.monotonic)
    env: dict = field(default_factory=lambda: dict(os.environ))
    has_cuda: bool = False
    gsplat_ok: bool = True  # False once gsplat_build failed: training stages then render with the torch backend

    def remaining(self) -> float:
        return self.budget - (time.monotonic() - self.started)


def run_command(name: str, command: list[str], context: CheckContext, timeout: float, cwd: Path = REPO) -> StageResult:
    """Run ``command`` with a time limit; its output goes to ``OUTDIR/logs/NAME.log`` (appended)."""
    log = context.outdir / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    timeout = max(1.0, min(timeout, context.remaining()))
    start = time.monotonic()
    with open(log, "a") as handle:
        handle.write(f"$ {' '.join(command)}  (timeout {timeout:.0f} s)\n")
        handle.flush()
        try:
            # Its own process group, so that a time-out also ends what it started (ninja, nvcc, pytest workers).
            process = subprocess.Popen(
                command, cwd=cwd, env=context.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
            )
        except OSError as error:
            handle.write(f"[could not start: {error}]\n")
            return StageResult(name, "failed", time.monotonic() - start, f"could not start: {error}", "", str(log))
        try:
            output, _ = process.communicate(timeout=timeout)
            code = process.returncode
        except subprocess.TimeoutExpired:
            _kill_group(process)
            output, _ = process.communicate()
            output = output or ""
            handle.write(output + f"\n[timed out after {timeout:.0f} s]\n")
            return StageResult(name, "timed out", time.monotonic() - start, f"killed after {timeout:.0f} s", _tail(output), str(log))
        handle.write(output)
    status = "ok" if code == 0 else "failed"
    note = "" if code == 0 else f"exit status {code}"
    return StageResult(name, status, time.monotonic() - start, note, output, str(log))


def _kill_group(process: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _python(context: CheckContext, *arguments: str) -> list[str]:
    return [context.python, *arguments]


# --------------------------------------------------------------------------------------------
# Stages


def stage_environment(context: CheckContext) -> StageResult:
    code = (
        "import json, os, platform, torch\n"
        "info = dict(python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda,\n"
        "            cuda_available=torch.cuda.is_available(), cpus=os.cpu_count())\n"
        "if torch.cuda.is_available():\n"
        "    p = torch.cuda.get_device_properties(0)\n"
        "    info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), capability='%d.%d' % (p.major, p.minor))\n"
        "print(json.dumps(info))\n"
    )
    result = run_command("environment", _python(context, "-c", code), context, STAGE_TIMEOUTS["environment"])
    if result.status == "ok":
        info = json.loads(result.output.strip().splitlines()[-1])
        context.has_cuda = bool(info.get("cuda_available"))
        nvcc = shutil.which("nvcc", path=context.env.get("PATH"))
        if nvcc:
            version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines()
            info["nvcc"] = version[-1] if version else nvcc
        else:
            info["nvcc"] = "not found"
        result.output = "\n".join(f"- {key}: {value}" for key, value in info.items())
    return result


def stage_install(context: CheckContext) -> StageResult:
    site = context.cache / "site"
    if not context.wheels.is_dir() or not any(context.wheels.glob("*.whl")):
        return StageResult("install", "skipped", note=f"no wheels in {context.wheels} (run scripts/prepare_gpu_wheels.sh where a registry is reachable)")
    site.mkdir(parents=True, exist_ok=True)
    command = _python(
        context, "-m", "pip", "install", "--no-index", "--no-deps", "--upgrade", "--find-links", str(context.wheels),
        "--target", str(site), *WHEELS,
    )
    result = run_command("install", command, context, STAGE_TIMEOUTS["install"])
    _use_site(context, site)
    if result.status == "ok":
        result.output = f"installed into {site}: {', '.join(WHEELS)}"
    else:  # no pip, or pip refused: these wheels are plain zip files that need no build step
        extracted = extract_wheels(context.wheels, site, WHEELS)
        missing = sorted(set(_normalise(name) for name in WHEELS) - set(extracted))
        result.status = "ok" if not missing else "failed"
        result.note = f"pip failed ({result.note}); unpacked {len(extracted)} wheels" + (f", missing: {', '.join(missing)}" if missing else "")
        result.output = f"unpacked into {site}: {', '.join(sorted(extracted))}"
    return result


def _normalise(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def extract_wheels(wheels: Path, site: Path, names) -> list[str]:
    """Unpack the pure-python / any-CPython wheels of ``names`` into ``site`` (scripts into ``site/bin``).

    The fallback when pip is unavailable; returns the normalised names unpacked.
    """
    import stat
    import zipfile

    wanted = {_normalise(name) for name in names}
    done = []
    for wheel in sorted(wheels.glob("*.whl")):
        parts = wheel.name[:-4].split("-")
        name, tags = _normalise(parts[0]), parts[-3:]
        if name not in wanted or name in done or tags[0] != "py3" or tags[1] != "none":
            continue
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                target_name = member
                if ".data/scripts/" in member:
                    target_name = "bin/" + member.split(".data/scripts/", 1)[1]
                target = (site / target_name).resolve()
                if not str(target).startswith(str(site.resolve())):  # no path escapes the site folder
                    continue
                if member.endswith("/"):
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(member))
                if target_name.startswith("bin/"):
                    target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        done.append(name)
    return done


def _use_site(context: CheckContext, site: Path) -> None:
    """Later stages import from ``site`` first and find its console scripts (ninja) on PATH."""
    paths = [str(site), str(REPO / "src")]
    if context.env.get("PYTHONPATH"):
        paths.append(context.env["PYTHONPATH"])
    context.env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    context.env["PATH"] = os.pathsep.join([str(site / "bin"), context.env.get("PATH", "")])


def cuda_arch_list(capability: tuple[int, int]) -> str:
    """``TORCH_CUDA_ARCH_LIST`` for exactly this device (e.g. (9, 0) -> "9.0")."""
    major, minor = capability
    return f"{major}.{minor}"


def stage_gsplat_build(context: CheckContext) -> StageResult:
    code = (
        "import torch, time\n"
        "start = time.time()\n"
        "from gsplat.cuda._backend import _C\n"
        "assert _C is not None, 'gsplat extension did not build (see the log above)'\n"
        "print(f'gsplat CUDA extension ready in {time.time() - start:.0f} s')\n"
    )
    result = run_command("gsplat_build", _python(context, "-c", code), context, STAGE_TIMEOUTS["gsplat_build"])
    context.gsplat_ok = result.status == "ok"
    if not context.gsplat_ok:
        result.note += "; later training stages render with teacher.render_backend=torch"
    return result


def _backend_overrides(context: CheckContext) -> list[str]:
    return [] if context.gsplat_ok else ["teacher.render_backend=torch"]


def cuda_test_files(root: Path = REPO / "tests") -> list[str]:
    """Test modules with CUDA-marked tests (collecting only these keeps out modules whose optional
    dependencies, e.g. datasets or matplotlib, the GPU machine lacks)."""
    return sorted(str(path) for path in root.rglob("test_*.py") if "mark.cuda" in path.read_text(errors="replace"))


def stage_cuda_tests(context: CheckContext) -> StageResult:
    files = cuda_test_files()
    if not files:
        return StageResult("cuda_tests", "skipped", note="no test module marks tests with pytest.mark.cuda")
    command = _python(
        context, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "-p", "no:xdist", "-o", "addopts=",
        "--junitxml", str(context.outdir / "cuda_tests.xml"), *files,
    )
    result = run_command("cuda_tests", command, context, STAGE_TIMEOUTS["cuda_tests"])
    result.output = _tail(result.output, 15)
    return result


def stage_render(context: CheckContext) -> StageResult:
    benchmark = str(REPO / "scripts" / "benchmark.py")
    runs = [
        ("one pass vs 3-channel calls (gsplat)", [benchmark, "render", "--device", "cuda", "--channels", "384", "768",
                                                 "--gaussians", "100000", "--repeats", "5", "--chunked-sample", "16"]),
        ("bound, gsplat", [benchmark, "render", "--bound", "--device", "cuda", "--backend", "gsplat", "--repeats", "5"]),
        ("bound, torch backend on CUDA", [benchmark, "render", "--bound", "--device", "cuda", "--backend", "torch", "--repeats", "3"]),
    ]
    parts, statuses, start = [], [], time.monotonic()
    for title, arguments in runs:
        share = STAGE_TIMEOUTS["render"] / len(runs)
        result = run_command("render", _python(context, *arguments), context, share)
        statuses.append(result.status)
        body = result.output.strip() if result.status == "ok" else f"{result.status}: {result.note}\n\n```\n{_tail(result.output)}\n```"
        parts.append(f"#### {title}\n\n{body}")
    status = "ok" if all(s == "ok" for s in statuses) else ("timed out" if "timed out" in statuses else "failed")
    return StageResult("render", status, time.monotonic() - start, "" if status == "ok" else ", ".join(statuses),
                       "\n\n".join(parts), str(context.outdir / "logs" / "render.log"))


def preset_overrides(preset: str) -> list[str]:
    """Every field of a shipped preset as ``section.key=value`` overrides (values as JSON, which is YAML)."""
    from ..distill.config import load_config

    config = dataclasses.asdict(load_config(preset))
    return [f"{section}.{key}={json.dumps(value)}" for section, values in config.items() for key, value in values.items()]


def check_overrides(preset: str, mvsplat_dir: Path, batch_size: int, resolution: tuple[int, int] = CHECK_RESOLUTION) -> list[str]:
    """The preset, made runnable offline: random backbone of the preset's size, random MVSplat, synthetic scenes."""
    from ..distill.config import load_config

    pretrained = load_config(preset).model.pretrained
    architecture = ARCHITECTURE_OF.get(pretrained, "dinov2-s")
    height, width = resolution
    return preset_overrides(preset) + [
        "model.pretrained=null", f"model.preset={architecture}", f"lifter.checkpoint={mvsplat_dir}",
        f"data.image_height={height}", f"data.image_width={width}", f"training.batch_size={batch_size}",
        "training.output_dir=/tmp/snd-gpu-check-unused",
    ] + SYNTHETIC_DATA


def make_random_mvsplat(directory: Path) -> Path:
    """A converted MVSplat directory with random weights (the re10k architecture)."""
    from ..models.mvsplat import MVSplatConfig, MVSplatModel

    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / "config.json").is_file():
        MVSplatModel(MVSplatConfig()).save_pretrained(directory)
    return directory


def stage_train_step(context: CheckContext) -> StageResult:
    mvsplat = context.cache / "mvsplat-random"
    setup = run_command("train_step", _python(context, "-m", "snd.benchmarks.gpu_check", "--child", "random-mvsplat", str(mvsplat)), context, 60)
    if setup.status != "ok":
        setup.note = "random MVSplat could not be built: " + setup.note
        return setup
    output = context.outdir / "train_step.json"
    arguments = [str(REPO / "scripts" / "benchmark.py"), "train", "--settings", "default", "--device", "cuda", "--steps", "2", "--warmup", "1",
                 "--output", str(output)]
    for override in check_overrides("scannetpp_dinov2s", mvsplat, batch_size=1) + _backend_overrides(context):
        arguments += ["--set", override]
    result = run_command("train_step", _python(context, *arguments), context, STAGE_TIMEOUTS["train_step"])
    result.seconds += setup.seconds
    return result


def stage_preset_memory(context: CheckContext) -> StageResult:
    mvsplat = make_random_mvsplat_in_child(context)
    if isinstance(mvsplat, StageResult):
        return mvsplat
    # One child for every preset and batch (data built once); it prints one JSON line per measurement,
    # so what it measured before a time-out still reaches the report.
    command = _python(context, "-m", "snd.benchmarks.gpu_check", "--child", "preset-memory", str(mvsplat), *_backend_overrides(context))
    result = run_command("preset_memory", command, context, STAGE_TIMEOUTS["preset_memory"])
    measured = {}
    for line in result.output.splitlines():
        if line.startswith("{") and '"preset"' in line:
            row = json.loads(line)
            measured[(row["preset"], row["batch"])] = row
    rows = [measured.get((preset, batch), dict(preset=preset, batch=batch, status=f"not reached ({result.status})"))
            for preset in PAPER_PRESETS for batch in PRESET_BATCHES]
    context.outdir.mkdir(parents=True, exist_ok=True)
    (context.outdir / "preset_memory.json").write_text(json.dumps(rows, indent=2))
    result.output = format_memory_table(rows)
    return result


def make_random_mvsplat_in_child(context: CheckContext):
    directory = context.cache / "mvsplat-random"
    if (directory / "config.json").is_file():
        return directory
    result = run_command("preset_memory", _python(context, "-m", "snd.benchmarks.gpu_check", "--child", "random-mvsplat", str(directory)), context, 60)
    return directory if result.status == "ok" else result


def format_memory_table(rows: list[dict]) -> str:
    height, width = CHECK_RESOLUTION
    lines = [
        f"One full step (forward, backward, Adam, EMA) at {height}x{width}, random weights, synthetic scenes; "
        "peak = torch.cuda.max_memory_allocated / max_memory_reserved over the step.",
        "",
        "| preset | batch per GPU | status | peak allocated GiB | peak reserved GiB | step s |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for row in rows:
        allocated = f"{row['peak_allocated_gib']:.1f}" if "peak_allocated_gib" in row else ""
        reserved = f"{row['peak_reserved_gib']:.1f}" if "peak_reserved_gib" in row else ""
        seconds = f"{row['step_s']:.2f}" if "step_s" in row else ""
        lines.append(f"| {row['preset']} | {row['batch']} | {row['status']} | {allocated} | {reserved} | {seconds} |")
    return "\n".join(lines)


def child_preset_memory(
    mvsplat_dir: str,
    extra: list[str] = (),
    presets: tuple[str, ...] = PAPER_PRESETS,
    batches: tuple[int, ...] = PRESET_BATCHES,
    device: str = "cuda",
    resolution: tuple[int, int] = CHECK_RESOLUTION,
    emit=print,
) -> list[dict]:
    """Peak memory of full training steps (forward, backward, Adam, EMA) for each preset and batch size.

    Runs in a child process; ``emit`` gets one JSON line per measurement as soon as it is made. Out of
    memory is a result (status "out of memory"), not a failure. On CPU (to test the code path) the
    peaks are 0.
    """
    import gc

    import torch

    from ..data import collate_multiview
    from ..distill.build import PreloadedScenes, backbone_config, build_dataset, build_lifter, build_student
    from ..distill.config import load_config
    from ..distill.teacher import EMATeacher, SplatTeacher
    from ..distill.trainer import build_loss, build_optimizer, distill_step

    device = torch.device(device)
    cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    dataset = None
    rows = []
    for preset in presets:
        config = load_config("default", check_overrides(preset, Path(mvsplat_dir), 1, resolution) + list(extra))
        if dataset is None:  # the same synthetic scenes for every preset
            dataset = PreloadedScenes(build_dataset(config.data, 0))
        torch.manual_seed(0)
        student = build_student(config).to(device)
        teacher = EMATeacher(student.backbone, student.head, config.teacher.momentum, update_every=1)
        patch = backbone_config(student.backbone).patch_size
        splat = SplatTeacher(teacher, build_lifter(config.lifter), patch_size=patch, blend_alpha=config.teacher.blend_alpha).to(device)
        loss_fn = build_loss(config)
        optimizer = build_optimizer([p for p in student.parameters() if p.requires_grad], config.training)
        for batch_size in batches:
            row = dict(preset=preset, batch=batch_size, status="ok")
            try:
                if cuda:
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(device)
                for step in range(2):  # the second step has Adam's moments allocated
                    sync()
                    start = time.perf_counter()
                    batch = collate_multiview([dataset[(step * batch_size + i) % len(dataset)] for i in range(batch_size)]).to(device)
                    losses = distill_step(student, splat, loss_fn, batch)
                    losses["loss"].backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    teacher.maybe_update(step + 1, student.backbone, student.head)
                    sync()
                    row["step_s"] = time.perf_counter() - start
                row["loss"] = float(losses["loss"].detach())
                row["peak_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else 0.0
                row["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30 if cuda else 0.0
            except torch.cuda.OutOfMemoryError:
                row = dict(preset=preset, batch=batch_size, status="out of memory")
            optimizer.zero_grad(set_to_none=True)
            losses = batch = None
            rows.append(row)
            emit(json.dumps(row))
            sys.stdout.flush()
        del student, teacher, splat, optimizer
        gc.collect()
    return rows


STAGE_FUNCTIONS = {
    "environment": stage_environment,
    "install": stage_install,
    "gsplat_build": stage_gsplat_build,
    "cuda_tests": stage_cuda_tests,
    "render": stage_render,
    "train_step": stage_train_step,
    "preset_memory": stage_preset_memory,
}


# --------------------------------------------------------------------------------------------
# Report


def write_report(path: Path, results: list[StageResult], context: CheckContext, total_seconds: float) -> Path:
    lines = [
        "# snd GPU check",
        "",
        f"`scripts/gpu_check.sh` on {platform.node()} ({time.strftime('%Y-%m-%d %H:%M %Z')}), "
        f"total {total_seconds:.0f} s of a {context.budget:.0f} s budget; logs in `{context.outdir / 'logs'}`.",
        "",
        "| stage | status | seconds | note |",
        "|---|---|---:|---|",
    ]
    for result in results:
        lines.append(f"| {result.name} | {result.status} | {result.seconds:.1f} | {result.note.replace('|', '/')} |")
    for result in results:
        if not result.output.strip():
            continue
        lines += ["", f"## {result.name}", ""]
        text = result.output.strip()
        looks_like_markdown = text.startswith(("|", "-", "#")) or "\n|" in text
        lines += [text] if looks_like_markdown else ["```", _tail(text, 40), "```"]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_check(context: CheckContext, stages: tuple[str, ...] = STAGES) -> list[StageResult]:
    """Run ``stages`` in order; GPU stages are skipped without CUDA, any stage when the budget is spent."""
    context.outdir.mkdir(parents=True, exist_ok=True)
    context.cache.mkdir(parents=True, exist_ok=True)
    context.env.setdefault("HF_HUB_OFFLINE", "1")
    context.env["TORCH_EXTENSIONS_DIR"] = str(context.cache / "torch_extensions")
    context.env.setdefault("MAX_JOBS", str(min(32, os.cpu_count() or 1)))
    _use_site(context, context.cache / "site")
    results = []
    for name in stages:
        if name in NEEDS_CUDA and not context.has_cuda:
            results.append(StageResult(name, "skipped", note="no CUDA device"))
            continue
        if context.remaining() < 5:
            results.append(StageResult(name, "skipped", note="time budget spent"))
            continue
        if name == "gsplat_build" and "TORCH_CUDA_ARCH_LIST" not in context.env:
            import torch

            context.env["TORCH_CUDA_ARCH_LIST"] = cuda_arch_list(torch.cuda.get_device_capability(0))
        try:
            result = STAGE_FUNCTIONS[name](context)
        except Exception as error:  # a broken stage must not stop the check
            result = StageResult(name, "failed", note=f"{type(error).__name__}: {error}")
        results.append(result)
        write_report(context.outdir / "gpu_check.md", results, context, time.monotonic() - context.started)  # partial report
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_check.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", nargs="?", help="where gpu_check.md and logs/ are written")
    parser.add_argument("--budget", type=float, default=470.0, help="seconds for the whole check (default 470: under 8 minutes)")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="run only these stages (in the standard order)")
    parser.add_argument("--wheels", default=str(REPO / "wheels"), help="folder of wheels to install offline (default: ./wheels)")
    parser.add_argument("--cache", default=None, help="build cache: site-packages, gsplat build, random MVSplat (default: OUTDIR/cache)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the stages (default: this one)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        kind, *rest = args.child
        if kind == "random-mvsplat":
            print(make_random_mvsplat(Path(rest[0])))
        elif kind == "preset-memory":
            child_preset_memory(rest[0], rest[1:])
        else:
            parser.error(f"unknown child task {kind!r}")
        return 0
    if not args.outdir:
        parser.error("OUTDIR is required (where the report goes)")
    if args.budget <= 0:
        parser.error(f"--budget must be positive, got {args.budget}")
    outdir = Path(args.outdir).resolve()
    if outdir.exists() and not outdir.is_dir():
        parser.error(f"OUTDIR {outdir} exists and is not a directory")
    context = CheckContext(
        outdir=outdir,
        cache=Path(args.cache).resolve() if args.cache else outdir / "cache",
        wheels=Path(args.wheels).resolve(),
        python=args.python,
        budget=args.budget,
    )
    stages = tuple(name for name in STAGES if name in args.stages)
    if "environment" not in stages:  # CUDA detection is needed to plan the rest
        stages = ("environment",) + stages
    results = run_check(context, stages)
    report = write_report(outdir / "gpu_check.md", results, context, time.monotonic() - context.started)
    print(report.read_text())
    print(f"report: {report}")
    return 0 if all(result.status in ("ok", "skipped") for result in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
