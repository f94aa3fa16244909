"""The thin Accelerate loop around the SnD step (see ``distill_step``): data -> teacher targets ->
student -> loss -> optimiser -> EMA, with atomic checkpoints, exact resume, logs and final export."""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..backbones import backbone_spec
from ..runtime import default_cpu_threads, reuse_large_allocations
from .build import (DistillStudent, PreloadedScenes, build_dataset, build_lifter, build_student, enable_gradient_checkpointing,
                    merged_backbone, move_lifter)
from .checkpoints import (
    CheckpointError,
    load_feature_tensor,
    atomic_save_pretrained,
    check_config_change,
    load_checkpoint,
    raise_if_disk_full,
    read_checkpoint_metadata,
    resume_checkpoint_path,
    save_checkpoint,
    schedule_facts,
    truncate_log,
    write_run_config,
)
from .config import DistillConfig
from . import fsdp, launch
from .loss import CosineDistillLoss, PrototypeCrossEntropy
from .teacher import EMATeacher, SplatTeacher, StageTimer, backbone_patch_features, no_timer

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite (``training.nonfinite_loss="raise"``)."""


class EmptyTargetError(RuntimeError):
    """The teacher target had no valid pixel for ``training.max_empty_steps`` consecutive steps."""


# --------------------------------------------------------------------------------------------
# Deterministic data order


class ShardedEpochBatchSampler:
    """Batches of one process: epoch ``e`` shuffles all indices with a generator seeded by ``(seed, e)``,
    cuts global batches of ``batch_size * num_processes`` (dropping the remainder) and gives process ``r``
    its ``r``-th slice of each. Reads no global RNG, so resuming from ``(epoch, start_batch)`` replays
    the uninterrupted order exactly, and ``P`` processes x batch ``b`` see the same global batches as
    one process x batch ``P * b``.
    """

    def __init__(self, length: int, batch_size: int, num_processes: int = 1, process_index: int = 0, seed: int = 0) -> None:
        self.length = length
        self.batch_size = batch_size
        self.num_processes = num_processes
        self.process_index = process_index
        self.seed = seed
        self.epoch = 0
        self.start_batch = 0
        if len(self) == 0:
            raise ValueError(
                f"the dataset has {length} samples, fewer than one global batch of {batch_size} x {num_processes} processes"
            )

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return self.length // (self.batch_size * self.num_processes)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.length, generator=generator).tolist()
        global_batch = self.batch_size * self.num_processes
        for batch in range(self.start_batch, len(self)):
            start = batch * global_batch + self.process_index * self.batch_size
            yield order[start : start + self.batch_size]


@dataclass
class TrainState:
    """Counters saved with every checkpoint."""

    step: int = 0  # optimiser steps attempted (batches consumed per process)
    skipped: int = 0  # steps skipped for a non-finite loss
    empty_streak: int = 0  # consecutive steps whose teacher target had no valid pixel

    def state_dict(self) -> dict:
        return {"step": self.step, "skipped": self.skipped, "empty_streak": self.empty_streak}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.skipped = int(state["step"]), int(state["skipped"])
        self.empty_streak = int(state.get("empty_streak", 0))


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    skipped: int
    final_loss: float | None
    wall_time_s: float
    files: dict = field(default_factory=dict)
    steps_trained: int | None = None  # optimiser steps this call took (0: resumed a run that had reached max_steps)


# --------------------------------------------------------------------------------------------
# The SnD step


def distill_step(student: nn.Module, splat_teacher: SplatTeacher, loss_fn: nn.Module, batch, stage: StageTimer = no_timer,
                 return_targets: bool = False) -> dict:
    """Forward part of one step on a batched :class:`snd.data.MultiViewSample`; returns the loss dict
    (plus ``"targets"``, the rendered teacher targets, when ``return_targets``, for pictures).

    ``student`` is the (possibly DDP-wrapped) :class:`DistillStudent`; the caller does backward/step/EMA.
    """
    target_images = batch.target.images.flatten(0, 1)  # [B*T, 3, H, W]
    patch = splat_teacher.patch_size
    grid = ((target_images.shape[-2] // patch), (target_images.shape[-1] // patch))
    targets = splat_teacher(batch.context, batch.target, grid, stage=stage)
    valid = targets.valid.flatten(0, 1)  # [B*T, h, w]
    with stage("student"):
        output = student(target_images, valid)
    with stage("loss"):
        teacher_features = targets.features.flatten(0, 1)  # [B*T, C, h, w]
        channels = teacher_features.shape[1]
        flat_valid = valid.reshape(-1)
        if isinstance(loss_fn, PrototypeCrossEntropy):
            with torch.no_grad():
                teacher_logits = splat_teacher.teacher.head(teacher_features.permute(0, 2, 3, 1).reshape(-1, channels))
            losses = loss_fn(output["logits"], teacher_logits, flat_valid)
        else:
            student_features = output["features"].permute(0, 2, 3, 1).reshape(-1, channels)
            losses = loss_fn(student_features, teacher_features.permute(0, 2, 3, 1).reshape(-1, channels), flat_valid)
    losses["valid_fraction"] = flat_valid.float().mean()
    if return_targets:
        losses["targets"] = targets
    return losses


def build_optimizer(parameters: list[torch.nn.Parameter], training, implementation: str = "auto") -> torch.optim.Adam:
    """Adam over ``parameters`` with the ``training`` section's settings.

    Args:
        parameters: the trainable parameters (all on one device).
        training: the config's ``training`` section (``lr``, ``adam_betas``, ``adam_eps``, ``weight_decay``).
        implementation: ``"auto"`` (default: ``fused=True`` where torch has a fused Adam kernel for the
            parameters' device and dtype, i.e. CPU/CUDA floating point, else torch's default), ``"fused"``,
            ``"foreach"`` or ``"for-loop"``. The same update rule in every case (equal within float rounding);
            the fused kernel makes one pass over parameter, gradient and moments instead of ~10 (on CPU
            the ViT-S + paper-size head step's optimiser fell from 184 ms to 21 ms, BENCHMARKS.md).
    """
    if implementation not in ("auto", "fused", "foreach", "for-loop"):
        raise ValueError(f"optimizer implementation must be 'auto', 'fused', 'foreach' or 'for-loop', got {implementation!r}")
    parameters = list(parameters)
    if implementation == "auto":
        fusable = bool(parameters) and all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64) for p in parameters)
        implementation = "fused" if fusable and len({p.device for p in parameters}) == 1 else "default"
    options = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}, "default": {}}[implementation]
    return torch.optim.Adam(parameters, lr=training.lr, betas=tuple(training.adam_betas), eps=training.adam_eps, weight_decay=training.weight_decay, **options)


def build_loss(config: DistillConfig) -> nn.Module:
    if config.loss.kind == "prototype":
        return PrototypeCrossEntropy(config.loss.student_temperature, config.loss.teacher_temperature, config.loss.average)
    return CosineDistillLoss()


def one_cycle_factor(step: int, total_steps: int, pct_start: float, div_factor: float = 25.0, final_div_factor: float = 1e4) -> float:
    """Learning-rate multiplier of ``torch.optim.lr_scheduler.OneCycleLR`` (cosine, no momentum cycling) at ``step``.

    Warm up from ``1 / div_factor`` to 1 over ``pct_start * total_steps - 1`` steps, then anneal to
    ``1 / (div_factor * final_div_factor)`` at ``total_steps - 1``; unlike torch's class it also
    handles runs too short for a warm-up (they start at the peak).
    """
    initial = 1.0 / div_factor
    minimum = initial / final_div_factor

    def anneal(start: float, end: float, fraction: float) -> float:
        return end + (start - end) / 2.0 * (math.cos(math.pi * fraction) + 1.0)

    warm_end = float(pct_start * total_steps) - 1.0
    if warm_end > 0 and step <= warm_end:
        return anneal(initial, 1.0, step / warm_end)
    start = max(warm_end, 0.0)
    span = (total_steps - 1) - start
    fraction = 1.0 if span <= 0 else min(max((step - start) / span, 0.0), 1.0)
    return anneal(1.0, minimum, fraction)


def build_scheduler(optimizer, config: DistillConfig):
    """One-cycle cosine (as released: ``OneCycleLR(pct_start=0.01, anneal_strategy="cos")`` over
    ``max_steps + one_cycle_extra_steps`` steps; the release adds 10) or constant."""
    training = config.training
    if training.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    total = training.max_steps + training.one_cycle_extra_steps
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: one_cycle_factor(step, total, training.warmup_fraction))


def _unwrap(accelerator, module):
    return accelerator.unwrap_model(module)


# --------------------------------------------------------------------------------------------
# The loop


def _trackers(config: DistillConfig) -> list[str]:
    return launch.tracker_names(config.training.report_to)


def _flat_hparams(config: DistillConfig) -> dict:
    flat = {}
    for section, values in config.to_dict().items():
        for key, value in values.items():
            if isinstance(value, (int, float, str, bool)):
                flat[f"{section}.{key}"] = value
    return flat


@launch.locks_output_dir  # one run at a time in an output_dir (a lock file held by the global main process)
def train(
    config: DistillConfig,
    resume_from_checkpoint: str | None = None,
    push_to_hub: str | None = None,
    progress: bool = True,
    overwrite_output_dir: bool = False,
    allow_config_change: bool = False,
) -> TrainResult:
    """Run one distillation as configured; returns where things were written.

    ``allow_config_change``: resume even when the checkpoint's schedule-defining values (max_steps, lr, batch
    size, schedule, seed) differ from ``config`` (otherwise refused; see ``snd.distill.checkpoints``).

    Writes to ``config.training.output_dir``: ``checkpoints/checkpoint-XXXXXXXX`` (accelerate state),
    ``student/`` and ``teacher/`` (``save_pretrained``, LoRA merged), ``heads.safetensors``,
    ``config.yaml``, ``loss_log.jsonl``, ``train_summary.json``, ``pca_before_after.png`` and TensorBoard event files under ``snd-distill/`` (when tensorboard is installed).

    Before the first step (see :mod:`snd.distill.launch`): an ``output_dir`` holding an earlier run is refused unless
    resuming or ``overwrite_output_dir``; the mixed precision is the config's, else the launcher's, written to
    ``config.yaml``; ``push_to_hub`` checks the token and creates the repository. No run file is written to
    ``output_dir`` until the run's parts (student, lifter, dataset) are built, so a run that fails while building
    leaves no ``config.yaml`` behind and its retry is not refused.

    Resuming a run that already reached ``training.max_steps`` trains nothing (``TrainResult.steps_trained`` is 0,
    and a warning says so): the exports are refreshed from its final checkpoint, ``train_summary.json`` is kept
    and its ``final_loss`` returned.

    Distribution: one process, DDP (``accelerate launch --multi_gpu``) or FSDP2 (``configs/accelerate/fsdp2.yaml`` or
    ``training.distributed=fsdp2``: student and EMA teacher sharded alike, sharded pickle-free checkpoints; see
    :mod:`snd.distill.fsdp` and :meth:`Trainer.prepare`).

    The process-wide settings a run changes (torch's float32 matmul precision and, on the CPU, its thread count)
    are restored when it returns or raises. The stages are the methods of :class:`Trainer`.
    """
    return Trainer(config, resume_from_checkpoint, push_to_hub, progress, overwrite_output_dir, allow_config_change).run()


class Trainer:
    """One :func:`train` run, one method per stage, called in order by :meth:`run`:

    :meth:`setup` (checks, accelerator, which checkpoint) -> :meth:`build` (parts; :meth:`prepare` wraps them for
    the launcher's distribution) -> :meth:`resume` -> :meth:`start` (run files, trackers, "before" features) ->
    :meth:`loop` (per batch: :meth:`step`, :meth:`log`, :meth:`log_images`, :meth:`checkpoint`) ->
    :meth:`finish` (final checkpoint, consistency check, :meth:`export`).

    A choice that concerns one stage (how the student is distributed, what the teacher renders) belongs in that
    stage's method; :func:`train` is the public entry point and the arguments mean the same here.
    """

    def __init__(
        self,
        config: DistillConfig,
        resume_from_checkpoint: str | None = None,
        push_to_hub: str | None = None,
        progress: bool = True,
        overwrite_output_dir: bool = False,
        allow_config_change: bool = False,
    ) -> None:
        self.config = config
        self.training = config.training
        self.resume_from_checkpoint = resume_from_checkpoint
        self.push_to_hub = push_to_hub
        self.progress = progress
        self.overwrite_output_dir = overwrite_output_dir
        self.allow_config_change = allow_config_change
        self.state = TrainState()  # saved with the EMA teacher by save_checkpoint (JSON + safetensors, never pickled)
        self.start_step = 0  # the step this call starts from (the checkpoint's when resuming)
        self.nothing_left = False  # resumed a run that had already reached max_steps
        self.last_loss: float | None = None
        self.bar = None
        self._previous_precision: str | None = None
        self._previous_threads: int | None = None
        self.fsdp = False  # FSDP2 (snd.distill.fsdp), decided by setup()
        self.export_template: DistillStudent | None = None  # FSDP2, main process: a plain copy the exports load into
        self.plain = None  # FSDP2, main process, while exporting: (student, teacher, after features)

    # ---------------------------------------------------------------------------------------- driver
    def run(self) -> TrainResult:
        """Every stage in order; whatever happens, the process-wide settings are put back as the caller had them."""
        self._previous_threads = torch.get_num_threads()
        try:
            self.setup()
            self.build()
            self.resume()
            self.start()
            self.loop()
            return self.finish()
        finally:
            if self.bar is not None:
                self.bar.close()
            self.restore_process_settings()

    def restore_process_settings(self) -> None:
        """Put back torch's float32 matmul precision (when :meth:`setup` set it) and its intra-op thread count
        (changed by :meth:`build` on the CPU) as they were when :meth:`run` began."""
        if self._previous_precision is not None:
            torch.set_float32_matmul_precision(self._previous_precision)
            self._previous_precision = None
        if self._previous_threads is not None and torch.get_num_threads() != self._previous_threads:
            torch.set_num_threads(self._previous_threads)

    # ---------------------------------------------------------------------------------------- set-up
    def setup(self) -> None:
        """Settle what the run is before building anything, writing no run file to ``output_dir``: validate the config,
        refuse an ``output_dir`` holding another run, check the Hub, set the matmul precision, create the
        ``Accelerator`` (mixed precision: the config's, else the launcher's), resolve and verify the checkpoint to
        resume from, and refuse a resume that would change the run definition."""
        from accelerate import Accelerator

        config, training = self.config, self.training
        config.validate()
        self.output_dir = Path(training.output_dir)
        self.log_path = self.output_dir / "loss_log.jsonl"
        launch.check_output_dir(self.output_dir, self.resume_from_checkpoint, self.overwrite_output_dir)
        if self.push_to_hub:
            launch.preflight_push(self.push_to_hub)
        self._previous_precision = torch.get_float32_matmul_precision()  # process-wide: restored by run()
        torch.set_float32_matmul_precision(training.float32_matmul_precision)
        self.trackers = _trackers(config)
        self.accelerator = accelerator = Accelerator(
            cpu=training.cpu or not torch.cuda.is_available(),
            mixed_precision=training.mixed_precision,  # None: the launcher's choice (accelerate launch / config file)
            log_with=self.trackers or None,
            project_dir=str(self.output_dir),
            step_scheduler_with_optimizer=False,
        )
        training.mixed_precision = launch.resolve_mixed_precision(accelerator, training.mixed_precision)
        launch.check_shared_output_dir(accelerator, self.output_dir)  # several machines: one shared output_dir
        self.fsdp = fsdp.use_fsdp2(accelerator, training.distributed)
        if self.fsdp and accelerator.num_processes == 1:
            logger.warning("training.distributed=fsdp2 with one process: nothing to shard across, training unsharded")
            self.fsdp = False
        if self.fsdp and training.mixed_precision == "fp16":
            raise ValueError("FSDP2 runs take bf16 or no mixed precision (fp16 needs a gradient scaler the sharded path does not have)")
        self.started = time.perf_counter()
        self.resume_path = resume_checkpoint_path(accelerator, self.output_dir, self.resume_from_checkpoint)
        self.resume_metadata = read_checkpoint_metadata(self.resume_path) if self.resume_path is not None else {}
        self.run_facts = schedule_facts(config, accelerator.num_processes)
        check_config_change(self.resume_metadata.get("run"), self.run_facts, self.allow_config_change, self.resume_path)

    def build(self) -> None:
        """Seed, then build the run's parts in a fixed order (the global RNG draws of a resumed run replay the
        uninterrupted run's): student, lifter, optimiser and schedule (wrapped by :meth:`prepare`), EMA teacher and
        splat teacher, loss, dataset and the deterministic loader. Sets the CPU allocator and thread defaults."""
        from accelerate.utils import set_seed

        from ..data import collate_multiview

        config, training, accelerator = self.config, self.training, self.accelerator
        set_seed(training.seed)
        student = build_student(config)
        if training.gradient_checkpointing:
            enable_gradient_checkpointing(student.backbone)
        self.patch_size = backbone_spec(student.backbone).patch_size
        lifter = build_lifter(config.lifter)
        launch.check_lifter_image_size(lifter, config.data.image_height, config.data.image_width)
        move_lifter(lifter, accelerator.device)
        # glibc keeps freed large blocks for reuse (no page faults per step), and a CPU run uses 1 torch thread unless
        # OMP_NUM_THREADS says otherwise (snd.runtime; BENCHMARKS.md "Training step" and "Threads").
        reuse_large_allocations()
        default_cpu_threads(accelerator.device)  # restored by run()
        self.prepare(student)
        self.splat_teacher = SplatTeacher.from_config(self.teacher, lifter, self.patch_size, config.teacher).to(accelerator.device)
        self.loss_fn = build_loss(config)
        dataset = build_dataset(config.data, training.seed, load_depth=config.lifter.kind == "depth")
        if config.data.preload:
            dataset = PreloadedScenes(dataset, progress=self.progress and accelerator.is_main_process)
        self.dataset = dataset
        self.batch_sampler = ShardedEpochBatchSampler(len(dataset), training.batch_size, accelerator.num_processes,
                                                      accelerator.process_index, training.seed)
        # A private generator: creating a DataLoader iterator otherwise draws from the global RNG, which
        # would shift dropout's random stream after a resume (the iterator is created at a different step).
        loader_generator = torch.Generator().manual_seed(training.seed)
        self.loader = DataLoader(
            dataset, batch_sampler=self.batch_sampler, collate_fn=collate_multiview, num_workers=config.data.num_workers,
            generator=loader_generator,
        )

    def prepare(self, student: DistillStudent) -> None:
        """Distribute the student and build what depends on its parameters: sets ``self.student``, ``trainable`` (the
        trainable parameters as the optimiser and the clipping see them, read after wrapping), ``optimizer``,
        ``scheduler`` and the EMA ``teacher``.

        DDP or one process: ``accelerator.prepare`` wraps student, optimiser and schedule, then the teacher is copied
        from the wrapped student (DDP has broadcast rank 0's weights, so every rank starts equal). FSDP2
        (:func:`snd.distill.fsdp.use_fsdp2`): every process checks it built the same student, the teacher is copied
        before sharding, both are sharded alike on one mesh (:func:`snd.distill.fsdp.shard`), and the optimiser is
        built on the sharded parameters (``fully_shard`` replaces the parameter objects); the main process keeps a
        plain CPU copy of the student as the template the exports are loaded into."""
        config, training, accelerator = self.config, self.training, self.accelerator
        if not self.fsdp:
            optimizer = build_optimizer([p for p in student.parameters() if p.requires_grad], training)
            scheduler = build_scheduler(optimizer, config)
            self.student, self.optimizer, self.scheduler = accelerator.prepare(student, optimizer, scheduler)
            unwrapped = _unwrap(accelerator, self.student)
            self.trainable = [p for p in unwrapped.parameters() if p.requires_grad]
            self.teacher = self._new_teacher(unwrapped)
            return
        fsdp.check_same_weights(accelerator, student)
        self.teacher = self._new_teacher(student)
        self.export_template = copy.deepcopy(student) if accelerator.is_main_process else None
        mesh = fsdp.device_mesh(accelerator)
        reshard = fsdp.reshard_after_forward(accelerator)
        fsdp.shard(student, mesh, reshard)
        fsdp.shard(self.teacher, mesh, reshard)
        self.student = student
        self.trainable = [p for p in student.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.trainable, training)
        self.scheduler = build_scheduler(self.optimizer, config)

    def _new_teacher(self, student: DistillStudent) -> EMATeacher:
        teacher = self.config.teacher
        return EMATeacher(student.backbone, student.head, momentum=teacher.momentum, update_every=teacher.update_every,
                          dropout=teacher.dropout_in_teacher)

    def _save_checkpoint(self, metadata: dict) -> Path:
        """An atomic checkpoint at the current step (all processes): Accelerate's state plus the EMA teacher and the
        counters, or under FSDP2 the per-process sharded safetensors of :func:`snd.distill.fsdp.save_sharded_checkpoint`."""
        state, training = self.state, self.training
        metadata = {**metadata, "run": self.run_facts}
        if self.fsdp:
            return fsdp.save_sharded_checkpoint(self.accelerator, self.output_dir, state.step, metadata, training.keep_checkpoints,
                                                self.student, self.teacher, self.optimizer, self.scheduler, state.state_dict())
        return save_checkpoint(self.accelerator, self.output_dir, state.step, metadata, training.keep_checkpoints,
                               tensors=self.teacher.state_dict(), state=state.state_dict())

    # ---------------------------------------------------------------------------------------- resume
    def resume(self) -> None:
        """Load the checkpoint :meth:`setup` chose (weights, optimiser, schedule, RNG states, EMA teacher, counters)
        and drop loss-log lines written after it; with ``latest`` and no checkpoint yet, start from scratch without
        the dead run's log lines. A checkpoint already at ``max_steps`` leaves nothing to train (said as a warning)."""
        accelerator, state = self.accelerator, self.state
        if self.resume_path is not None:
            if self.fsdp:
                fsdp.load_sharded_checkpoint(accelerator, self.resume_path, self.student, self.teacher, self.optimizer,
                                             self.scheduler, state)
            elif self.resume_metadata.get("distributed") == "fsdp2":
                raise CheckpointError(f"{self.resume_path}: a sharded FSDP2 checkpoint; resume it with FSDP2 "
                                      "(training.distributed=fsdp2 or the FSDP2 accelerate config) and as many processes")
            else:
                load_checkpoint(accelerator, self.resume_path, tensor_module=self.teacher, state=state, verify=False)  # verified in setup
            if accelerator.is_main_process:
                logger.info("resumed from %s at step %d", self.resume_path, state.step)
                truncate_log(self.log_path, state.step)
            self.nothing_left = state.step >= self.training.max_steps
            if self.nothing_left and accelerator.is_main_process:
                logger.warning(
                    "nothing left to train: %s is at step %d and training.max_steps is %d; the exports are refreshed from it "
                    "and train_summary.json is kept (raise --max_steps, with --allow_config_change, to train further)",
                    self.resume_path, state.step, self.training.max_steps,
                )
        elif self.resume_from_checkpoint is not None and accelerator.is_main_process:
            logger.warning("--resume_from_checkpoint %s: no checkpoint yet in %s; starting from scratch",
                           self.resume_from_checkpoint, self.output_dir)
            truncate_log(self.log_path, 0)  # lines of a run killed before its first checkpoint
        self.start_step = state.step

    # ---------------------------------------------------------------------------------------- start
    def start(self) -> None:
        """Now that the parts are built and the state loaded, write the run files (``config.yaml``, or
        ``config.resume-XXXXXXXX.yaml`` beside a different one), start the trackers, and compute the student's
        "before" features on a held-out view for the final picture (main process, no RNG used)."""
        accelerator = self.accelerator
        if accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            write_run_config(self.output_dir, self.config.to_yaml(), int(self.resume_metadata.get("step", 0)))
        accelerator.wait_for_everyone()
        if self.trackers:
            accelerator.init_trackers("snd-distill", config=_flat_hparams(self.config))
        self.held_out_image = None
        before_path = self.output_dir / "pca_before_features.pt"
        if self.fsdp:  # a sharded student runs on every process at once: all read the view and run it, the main saves
            self.held_out_image = _held_out_image(self.config, self.patch_size)
            needed = self.resume_path is None or not before_path.exists()
            accelerator.wait_for_everyone()  # every process has looked before the main process writes
            features = self._held_out_features()
            if accelerator.is_main_process and needed:
                torch.save(features, before_path)
        elif accelerator.is_main_process:
            self.held_out_image = _held_out_image(self.config, self.patch_size)
            if self.resume_path is None or not before_path.exists():
                torch.save(self._held_out_features(), before_path)

    # ---------------------------------------------------------------------------------------- the loop
    def loop(self) -> None:
        """Until ``max_steps``: each epoch's batches in the sampler's order (resuming mid-epoch), each one a
        :meth:`step`, then :meth:`log`, :meth:`log_images` and :meth:`checkpoint` as due."""
        from ..progress import progress_bar

        training, state = self.training, self.state
        # throttled to ~20 redraws when stderr is not a terminal (log files): see snd.progress
        self.bar = progress_bar(total=training.max_steps, initial=state.step, desc="distill",
                                disable=not (self.progress and self.accelerator.is_main_process), dynamic_ncols=True)
        self.window_start, self.window_steps = time.perf_counter(), 0
        self.student.train()
        while state.step < training.max_steps:
            epoch, start_batch = divmod(state.step, len(self.batch_sampler))
            self.batch_sampler.set_epoch(epoch, start_batch)
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            for batch in self.loader:
                if state.step >= training.max_steps:
                    break
                batch = batch.to(self.accelerator.device)
                image_step = bool(self.trackers) and training.log_images_every > 0 and (state.step + 1) % training.log_images_every == 0
                losses = self.step(batch, return_targets=image_step)
                self.log(losses, epoch)
                if image_step:
                    self.log_images(losses["targets"], batch)
                self.checkpoint(epoch)
        self.bar.close()

    def step(self, batch, return_targets: bool = False) -> dict:
        """One optimiser step on ``batch``: :func:`distill_step` under autocast, one health check shared by all
        processes (finite loss, non-empty target), then backward, clipping, optimiser and schedule steps and the EMA
        update at ``teacher.update_timing``; or a skipped step (``training.nonfinite_loss``). Returns the loss dict."""
        accelerator, training, state = self.accelerator, self.training, self.state
        with accelerator.autocast():
            losses = distill_step(self.student, self.splat_teacher, self.loss_fn, batch, return_targets=return_targets)
        loss = losses["loss"]
        # one collective and one host sync per step: (loss finite on every process, target non-empty on any)
        health = torch.stack([torch.isfinite(loss.detach()).float(), losses["valid_fraction"].detach().float().reshape(())])
        if accelerator.num_processes > 1:
            gathered = accelerator.gather(health[None])  # [P, 2]
            health = torch.stack([gathered[:, 0].min(), gathered[:, 1].max()])
        finite, valid_fraction = health.tolist()
        _check_empty_target(valid_fraction, state, training.max_empty_steps)
        if finite < 1:
            self._skip_nonfinite(loss)
        else:
            self._update(loss)
        self.window_steps += 1
        return losses

    def _skip_nonfinite(self, loss: torch.Tensor) -> None:
        """A non-finite loss: raise (``nonfinite_loss="raise"``, or past ``max_skipped_steps``) or count the step as
        skipped, with no update."""
        training, state = self.training, self.state
        message = f"non-finite loss ({loss.item()}) at step {state.step + 1}"
        if training.nonfinite_loss == "raise":
            raise NonFiniteLossError(f"{message}; set training.nonfinite_loss=skip to skip such steps")
        state.skipped += 1
        if self.accelerator.is_main_process:
            logger.warning("%s: skipped (%d so far)", message, state.skipped)
        if state.skipped > training.max_skipped_steps:
            raise NonFiniteLossError(f"{message}: more than training.max_skipped_steps={training.max_skipped_steps} steps skipped")
        self.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        self.bar.update(1)

    def _update(self, loss: torch.Tensor) -> None:
        """Backward, gradient clipping, optimiser and schedule steps, and the EMA teacher update (before the optimiser
        step, as the release's ``on_after_backward`` hook, or after it)."""
        accelerator, training, state = self.accelerator, self.training, self.state
        accelerator.backward(loss)
        if state.step == 0 and accelerator.num_processes > 1:
            unused = [name for name, p in _unwrap(accelerator, self.student).named_parameters() if p.requires_grad and p.grad is None]
            if unused:  # DDP would leave their gradient buckets unsynchronised
                raise RuntimeError(f"trainable parameters received no gradient (freeze them): {unused[:10]}")
        if training.max_grad_norm > 0:
            if self.fsdp:  # DTensor gradients: torch computes the norm over all shards
                torch.nn.utils.clip_grad_norm_(self.trainable, training.max_grad_norm)
            else:
                accelerator.clip_grad_norm_(self.trainable, training.max_grad_norm)
        if self.fsdp:  # drop the teacher's gathered copies (FSDP2 keeps a root's after a no-grad forward): the next
            fsdp.reshard(self.teacher)  # forward must gather the updated shards
        unwrapped = _unwrap(accelerator, self.student)
        timing = self.config.teacher.update_timing
        if timing == "before_step":  # the release's on_after_backward hook
            self.teacher.maybe_update(state.step - state.skipped, unwrapped.backbone, unwrapped.head)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        if timing == "after_step":
            self.teacher.maybe_update(state.step - state.skipped, unwrapped.backbone, unwrapped.head)
        self.bar.update(1)

    def log(self, losses: dict, epoch: int) -> None:
        """Every ``log_every`` steps and at the last: the loss (mean over processes), KL and teacher entropy, lr,
        valid fraction, samples/s since the last record, skipped steps and epoch, appended to ``loss_log.jsonl``
        (main process) and sent to the trackers."""
        accelerator, training, state = self.accelerator, self.training, self.state
        if not (state.step % training.log_every == 0 or state.step == training.max_steps):
            return
        mean_loss = accelerator.reduce(losses["loss"].detach().float().reshape(1), reduction="mean").item()
        elapsed = time.perf_counter() - self.window_start
        samples_per_s = self.window_steps * training.batch_size * accelerator.num_processes / max(elapsed, 1e-9)
        self.window_start, self.window_steps = time.perf_counter(), 0
        self.last_loss = mean_loss
        record = {
            "step": state.step,
            "loss": mean_loss,
            **{name: accelerator.reduce(losses[name].detach().float().reshape(1), reduction="mean").item()
               for name in ("kl", "teacher_entropy") if name in losses},
            "lr": self.scheduler.get_last_lr()[0],
            "valid_fraction": float(losses["valid_fraction"]),
            "samples_per_s": samples_per_s,
            "skipped": state.skipped,
            "epoch": epoch,
        }
        if accelerator.is_main_process:
            try:
                with self.log_path.open("a") as handle:
                    handle.write(json.dumps(record) + "\n")
            except OSError as error:
                raise_if_disk_full(error, self.log_path)
                raise
            self.bar.set_postfix(loss=f"{mean_loss:.4f}", samples_s=f"{samples_per_s:.1f}", refresh=False)
        if self.trackers:
            accelerator.log({k: v for k, v in record.items() if k != "step"}, step=state.step)

    def log_images(self, targets, batch) -> None:
        """Pictures for the trackers that take images (main process): PCA of the student's features on the held-out
        view, and of the teacher's rendered target features of the batch's first target view."""
        features = self._held_out_features() if (self.fsdp or self.accelerator.is_main_process) else None  # collective under FSDP2
        if not self.accelerator.is_main_process:
            return
        pictures = launch.step_images(self.held_out_image, features, targets.features[0, 0].detach(),
                                      targets.valid[0, 0], batch.target.images[0, 0].detach())
        launch.log_images(self.accelerator, pictures, self.state.step)

    def checkpoint(self, epoch: int) -> None:
        """Every ``checkpoint_every`` steps before the last (the last is :meth:`finish`'s): an atomic checkpoint with
        the EMA teacher and counters, pruned to ``keep_checkpoints``; one log line."""
        training, state = self.training, self.state
        if not (training.checkpoint_every and state.step % training.checkpoint_every == 0 and state.step < training.max_steps):
            return
        saved = self._save_checkpoint({"epoch": epoch})
        if self.accelerator.is_main_process:
            logger.info("step %d/%d: loss %s; checkpoint %s", state.step, training.max_steps,
                        "n/a" if self.last_loss is None else f"{self.last_loss:.4f}", saved)

    # ---------------------------------------------------------------------------------------- the end
    def finish(self) -> TrainResult:
        """The final checkpoint (not rewritten when nothing was left to train), the check that every process holds
        the same EMA teacher, :meth:`export`, and the trackers' end."""
        accelerator, state = self.accelerator, self.state
        if not self.nothing_left:
            self._save_checkpoint({"final": True})
        if self.fsdp:  # the whole teacher's (sum, sum of squares): each process's local shards, summed over processes
            whole = accelerator.reduce(fsdp.local_fingerprint_sums(self.teacher).to(accelerator.device), reduction="sum")
            fingerprints = accelerator.gather(whole[None]).cpu()  # [processes, 2]
        else:
            fingerprints = accelerator.gather(_fingerprint(self.teacher).to(accelerator.device)[None]).cpu()  # [processes, 2]
        if not torch.equal(fingerprints, fingerprints[:1].expand_as(fingerprints)):
            raise RuntimeError(f"the EMA teacher differs across processes after step {state.step}: fingerprints {fingerprints.tolist()}")
        if self.nothing_left:
            self.last_loss = _previous_final_loss(self.output_dir, state.step)
        wall_time = time.perf_counter() - self.started
        self.plain = self._gather_plain() if self.fsdp else None  # collective: before the main process exports
        files = self.export(fingerprints, wall_time) if accelerator.is_main_process else {}
        self.plain = None
        accelerator.wait_for_everyone()
        if self.trackers:
            accelerator.end_training()
        return TrainResult(self.output_dir, state.step, state.skipped, self.last_loss, wall_time, files,
                           steps_trained=state.step - self.start_step)

    def export(self, fingerprints: torch.Tensor, wall_time: float) -> dict:
        """Main process: ``student/`` and ``teacher/`` (LoRA merged, image processor, model card), the heads, the
        before/after PCA picture, ``train_summary.json`` (kept as it is when nothing was left to train) and the
        ``--push_to_hub`` upload. Returns the files written."""
        accelerator, state = self.accelerator, self.state
        if self.plain is not None:  # FSDP2: plain copies of the gathered weights, on the CPU
            student, teacher, after = self.plain
            files = _export(self.config, student, teacher, self.output_dir, self.held_out_image, self.patch_size,
                            torch.device("cpu"), after=after)
        else:
            files = _export(self.config, _unwrap(accelerator, self.student), self.teacher, self.output_dir,
                            self.held_out_image, self.patch_size, accelerator.device)
        summary_path = self.output_dir / "train_summary.json"
        if not (self.nothing_left and summary_path.exists()):
            summary = {
                "steps": state.step,
                "skipped_nonfinite_steps": state.skipped,
                "final_loss": self.last_loss,
                "num_processes": accelerator.num_processes,
                "global_batch_size": self.training.batch_size * accelerator.num_processes,
                "wall_time_s": wall_time,
                "teacher_fingerprints": fingerprints.tolist(),
            }
            temporary = self.output_dir / ".train_summary.json.tmp"
            temporary.write_text(json.dumps(summary, indent=2))
            temporary.replace(summary_path)
        if self.push_to_hub:
            files["hub"] = _push(self.config, self.output_dir, self.push_to_hub)
        return files

    def _gather_plain(self):
        """FSDP2, every process: the student's "after" features on the held-out view (a collective forward) and the
        full state dicts of student and EMA teacher (``get_model_state_dict``); on the main process, the export
        template loaded with each (the student in the template itself, the teacher in a copy of it). Returns
        ``(student, teacher, after)`` on the main process, None elsewhere."""
        after = self._held_out_features()
        student_state = fsdp.full_state_dict(self.student)
        teacher_state = fsdp.full_state_dict(self.teacher)
        if not self.accelerator.is_main_process:
            return None
        student = self.export_template
        student.load_state_dict(student_state)
        teacher = copy.deepcopy(student)
        teacher.load_state_dict(teacher_state)
        return student, teacher, after

    def _held_out_features(self) -> torch.Tensor:
        """The student's patch features ``[C, h, w]`` on the held-out view (eval mode; no RNG used). Under FSDP2 a
        collective: every process runs the sharded student on the view."""
        return _student_features(_unwrap(self.accelerator, self.student).backbone, self.held_out_image, self.patch_size,
                                 self.accelerator.device)


def _previous_final_loss(output_dir: Path, step: int) -> float | None:
    """The final loss of a run that already reached ``step``: its ``train_summary.json``'s, else its loss log's
    record at ``step`` (a run killed while exporting has no summary yet); None when neither says."""
    summary_path = output_dir / "train_summary.json"
    try:
        summary = json.loads(summary_path.read_text())
        if isinstance(summary, dict) and summary.get("steps") == step and summary.get("final_loss") is not None:
            return float(summary["final_loss"])
    except (OSError, ValueError, TypeError):
        pass
    try:
        lines = (output_dir / "loss_log.jsonl").read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("step") == step and record.get("loss") is not None:
            return float(record["loss"])
    return None


def _check_empty_target(valid_fraction: float, state: TrainState, limit: int) -> None:
    """Count consecutive steps whose teacher target is empty on every process (``valid_fraction``: the largest over
    processes); raise after ``limit`` (0: never)."""
    state.empty_streak = state.empty_streak + 1 if valid_fraction == 0 else 0
    if limit and state.empty_streak >= limit:
        raise EmptyTargetError(
            f"the teacher target was empty (valid_fraction 0: no Gaussian rendered into any target pixel) for "
            f"{state.empty_streak} consecutive steps up to step {state.step + 1}; the student is learning nothing. "
            "Check the lifter (checkpoint, near/far planes, depth maps) and the cameras; training.max_empty_steps "
            f"(now {limit}, 0 disables) sets the limit"
        )


@torch.no_grad()
def _fingerprint(module: nn.Module) -> torch.Tensor:
    """``[2]`` float64 (sum, sum of squares) of all parameters: equal on every process iff (almost surely) the weights are."""
    values = [p.detach().double() for p in module.parameters()]
    return torch.stack([sum(v.sum() for v in values), sum((v * v).sum() for v in values)]).cpu()


# --------------------------------------------------------------------------------------------
# Pictures and export


def _held_out_image(config: DistillConfig, patch_size: int = 14, min_patches: int = 16) -> torch.Tensor:
    """One target image ``[3, H, W]`` from a scene the run does not train on (see ``build_dataset``), for the
    before/after PCA picture: read at the training aspect ratio but with at least ``min_patches`` patches on its
    shorter side (a 42 x 56 training view is only 3 x 4 patches, too few to show anything), sides multiples of
    ``patch_size``."""
    import dataclasses

    data = config.data
    scale = max(1.0, min_patches * patch_size / min(data.image_height, data.image_width))
    if scale > 1.0:
        data = dataclasses.replace(
            data,
            image_height=max(min_patches, round(data.image_height * scale / patch_size)) * patch_size,
            image_width=max(min_patches, round(data.image_width * scale / patch_size)) * patch_size,
        )
    dataset = build_dataset(data, config.training.seed, held_out=True, load_depth=config.lifter.kind == "depth")
    return dataset[0].target.images[0]


@torch.no_grad()
def _student_features(backbone: nn.Module, image: torch.Tensor, patch_size: int, device) -> torch.Tensor:
    was_training = backbone.training
    backbone.eval()
    try:
        return backbone_patch_features(backbone, image[None].to(device), patch_size)[0].float().cpu()
    finally:
        backbone.train(was_training)


def _export(config, student: DistillStudent, teacher: EMATeacher, output_dir: Path, image, patch_size, device,
            after: torch.Tensor | None = None) -> dict:
    from safetensors.torch import save_file

    from ..backbones import default_image_processor
    from ..viz import _colormap, pca_image, pca_project, save_image_grid

    student_model = merged_backbone(student.backbone)
    teacher_model = merged_backbone(teacher.backbone)
    # The architecture's (or the source checkpoint's) preprocessing, so AutoImageProcessor and
    # pipeline("image-feature-extraction") work on the exports.
    source = config.model.pretrained if config.model.pretrained and not Path(config.model.pretrained).is_file() else None
    processor = default_image_processor(student_model, source)
    files = {
        "student": atomic_save_pretrained(student_model, output_dir / "student", processor),
        "teacher": atomic_save_pretrained(teacher_model, output_dir / "teacher", processor),
    }
    _write_card(config, student_model, output_dir / "student")
    _write_card(config, teacher_model, output_dir / "teacher")  # every exported folder has its card at save time
    if student.head is not None:
        heads = {f"student.{k}": v.detach().cpu().contiguous() for k, v in student.head.state_dict().items()}
        heads.update({f"teacher.{k}": v.detach().cpu().contiguous() for k, v in teacher.head.state_dict().items()})
        temporary = output_dir / ".heads.safetensors.tmp"
        save_file(heads, str(temporary), metadata={"format": "pt"})
        temporary.replace(output_dir / "heads.safetensors")
        files["heads"] = output_dir / "heads.safetensors"
    if after is None:
        after = _student_features(student_model, image, patch_size, device)
    # checked before use: a regular file, size-bounded, a contiguous finite float tensor of the picture's shape; a bad
    # file costs the picture, never the finished run's exports (written above)
    try:
        before = load_feature_tensor(output_dir / "pca_before_features.pt", expected_shape=tuple(after.shape))
    except CheckpointError as error:
        logger.warning("no PCA picture written: %s", error)
        return files
    if not (torch.isfinite(before).all() and torch.isfinite(after).all()):
        logger.warning("student features are not finite; no PCA picture written")
        return files
    _, basis = pca_project(torch.stack([before, after]))
    size = tuple(image.shape[-2:])
    pictures = [image, pca_image(before, basis=basis, size=size), pca_image(after, basis=basis, size=size)]
    # how much each patch's feature turned: 1 - cosine(before, after), [h, w], on one scale from 0 to its maximum
    change = 1 - torch.nn.functional.cosine_similarity(before.float(), after.float(), dim=0)
    peak = max(float(change.max()), 1e-6)
    change_picture = torch.nn.functional.interpolate((change / peak)[None, None], size=size, mode="nearest")[0, 0]
    pictures.append(_colormap(change_picture.numpy(), "viridis"))
    titles = ["held-out view", "student before (PCA)", "student after (same PCA basis)", f"change 1 - cos (max {peak:.3f})"]
    grid = (before.shape[-2], before.shape[-1])
    files["pca"] = save_image_grid([pictures], output_dir / "pca_before_after.png", titles=titles, scale=3.5)
    logger.info("pca_before_after.png: %d x %d patches, mean feature change 1 - cos = %.4f", *grid, float(change.mean()))
    return files


def _write_card(config: DistillConfig, model: nn.Module, folder: Path) -> None:
    """A README.md model card in the exported folder naming the base model (best effort: a failure only warns)."""
    try:
        from ..hub.cards import render_model_card

        repo_id = config.training.hub_model_id or f"local/{folder.parent.name or 'snd-distill'}"
        info = card_info(config, repo_id, folder.parent, model_config=model.config)
        text = str(render_model_card(info, model.config))
    except Exception as error:  # the card is documentation; never lose a finished run over it
        logger.warning("no model card written to %s: %s", folder, error)
        return
    temporary = folder / ".README.md.tmp"
    temporary.write_text(text)
    temporary.replace(folder / "README.md")


def _push(config: DistillConfig, output_dir: Path, repo_id: str):
    """Push the exported student (weights, image processor, model card) with ``snd.hub.push_model``."""
    from transformers import AutoImageProcessor, AutoModel

    from ..hub import push_model

    model = AutoModel.from_pretrained(str(output_dir / "student"))
    processor = AutoImageProcessor.from_pretrained(str(output_dir / "student"))  # the export's own class (SnD, Bit...)
    return push_model(model, processor, repo_id, card=card_info(config, repo_id, output_dir, model_config=model.config), commit_message="Upload SnD student (snd distill)")


def card_info(config: DistillConfig, repo_id: str, output_dir: Path | None = None, model_config=None):
    """Model-card facts of a run: variant, base model, data, lifter, schedule; results from ``eval_results.json`` when present.

    ``eval_results.json`` (written next to the run by the user or ``scripts/evaluate.py``) holds a list of
    ``{"task", "dataset", "metric", "value"}`` records. ``model_config`` (the student's config) adds its
    architecture (class and ``model_type``) to the card.
    """
    from ..hub import ModelCardInfo, ProbeResult

    pretrained = config.model.pretrained
    base_model = pretrained if pretrained and not Path(pretrained).exists() and pretrained.count("/") == 1 else None
    provenance = {
        "training": f"snd distill: {config.training.max_steps} steps, batch {config.training.batch_size} per process, "
        f"lr {config.training.lr}, {config.model.finetune} fine-tuning",
        "initialisation": pretrained or f"random {config.model.preset} preset",
        "data": f"{config.data.dataset} at {config.data.image_height}x{config.data.image_width}" + (f" ({config.data.root})" if config.data.root else ""),
        "lifter": config.lifter.kind + (f" ({config.lifter.checkpoint})" if config.lifter.checkpoint else ""),
        "teacher": f"EMA momentum {config.teacher.momentum} every {config.teacher.update_every} steps, "
        f"{config.teacher.upsample} upsampling, blend alpha {config.teacher.blend_alpha}",
    }
    results = []
    results_file = None if output_dir is None else Path(output_dir) / "eval_results.json"
    if results_file is not None and results_file.exists():
        results = [ProbeResult(**record) for record in json.loads(results_file.read_text())]
    tags = []
    if model_config is not None:
        architecture = ", ".join(getattr(model_config, "architectures", None) or []) or model_config.model_type
        provenance["architecture"] = f"{architecture} (model_type {model_config.model_type}), loads with transformers AutoModel"
        tags.append(model_config.model_type)
    from ..hub.cards import weights_license

    return ModelCardInfo(
        repo_id=repo_id,
        license=weights_license(pretrained),
        tags=tags,
        blend_alpha=config.teacher.blend_alpha,
        base_model=base_model,
        summary="An SnD backbone distilled with `snd distill` (Splat and Distill, ICLR 2026).",
        results=results,
        results_source=None,
        results_note="measured with snd's evaluation suite on this checkpoint" if results else "no evaluation results recorded",
        provenance=provenance,
    )
