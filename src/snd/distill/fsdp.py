"""FSDP2 (torch's ``fully_shard``) for the distillation trainer: the student and the EMA teacher sharded alike,
collective pictures and exports, and sharded checkpoints written as per-process safetensors (no pickle).

When it is used (:func:`use_fsdp2`): ``training.distributed: fsdp2``, or a launch with Accelerate's FSDP2 config
(``accelerate launch --config_file configs/accelerate/fsdp2.yaml``). Either way the trainer shards the models itself
(:meth:`snd.distill.trainer.Trainer.prepare`), never through ``accelerator.prepare``: Accelerate turns an FSDP plugin
into plain DDP on the CPU, so ``training.distributed: fsdp2`` is also how the CPU tests (two gloo processes) drive this
exact code path.

How the models are cut (:func:`shard`): the backbone's transformer blocks (its largest ``nn.ModuleList``) one unit each,
then the backbone (embeddings, final norm) and the projection head as two roots. The EMA teacher is a copy of the student
taken before sharding and sharded the same way on the same mesh, so every teacher shard sits beside the student shard it
averages: the EMA update reads and writes local shards only, never a full parameter.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

SHARD_FILE = "fsdp-rank{rank:05d}-of-{world:05d}.safetensors"
SHARD_JSON = "fsdp-rank{rank:05d}-of-{world:05d}.json"


def use_fsdp2(accelerator, distributed: str) -> bool:
    """Whether this run shards with FSDP2: ``training.distributed == "fsdp2"`` or Accelerate's FSDP config (version 2),
    also on the CPU, where Accelerate itself would run DDP. Accelerate's FSDP version 1, and FSDP2 options the trainer
    does not implement, are refused."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        plugin = accelerator.state.fsdp_plugin
        if getattr(plugin, "fsdp_version", 1) != 2:
            raise ValueError("accelerate's FSDP version 1 is not supported; set fsdp_version: 2 (configs/accelerate/fsdp2.yaml)")
        unsupported = [name for name in ("cpu_offload", "activation_checkpointing") if getattr(plugin, name, None)]
        if getattr(plugin, "cpu_ram_efficient_loading", False):
            unsupported.append("cpu_ram_efficient_loading")
        if unsupported:
            raise ValueError(
                f"accelerate FSDP options {unsupported} are not supported by snd's FSDP2 path (it shards the student and the "
                "EMA teacher itself); remove them from the accelerate config (configs/accelerate/fsdp2.yaml)"
            )
        return True
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and accelerator.num_processes > 1:
        # launched with Accelerate's FSDP config, which it turned into DDP on the CPU (MULTI_CPU): shard as asked
        if os.environ.get("FSDP_VERSION", "1") != "2":
            raise ValueError("accelerate's FSDP version 1 is not supported; set fsdp_version: 2 (configs/accelerate/fsdp2.yaml)")
        return True
    return distributed == "fsdp2"


def reshard_after_forward(accelerator) -> bool:
    """Accelerate's ``fsdp_reshard_after_forward`` when launched with its FSDP config (its plugin, or on the CPU, where
    Accelerate builds no plugin, the launcher's ``FSDP_RESHARD_AFTER_FORWARD``), else True (ZeRO-3-like)."""
    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    if plugin is not None:
        value = getattr(plugin, "reshard_after_forward", True)
        return value if isinstance(value, bool) else True
    return os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() not in ("false", "0", "no")


def device_mesh(accelerator):
    """One-dimensional mesh over every process of the run (on the accelerator's device type: cuda or cpu)."""
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(accelerator.device.type, (accelerator.num_processes,))


def _block_list(module: nn.Module) -> nn.ModuleList | None:
    """The module's largest ``nn.ModuleList`` by parameter count: a ViT's transformer blocks."""
    best, best_count = None, 0
    for child in module.modules():
        if isinstance(child, nn.ModuleList) and len(child) > 1:
            count = sum(p.numel() for p in child.parameters())
            if count > best_count:
                best, best_count = child, count
    return best


def shard(model: nn.Module, mesh, reshard: bool = True) -> list[str]:
    """``fully_shard`` ``model.backbone``'s blocks, then ``model.backbone`` and ``model.head`` (each a root; ``model``
    itself holds no parameter of its own and stays a plain module). Works for :class:`DistillStudent` and
    :class:`EMATeacher` alike. Returns the sharded modules' names."""
    from torch.distributed.fsdp import fully_shard

    own = [name for name, _ in model.named_parameters(recurse=False)]
    if own:
        raise ValueError(f"{type(model).__name__} holds parameters outside its backbone and head: {own}")
    names = {module: name for name, module in model.named_modules()}
    sharded = []
    for part in (model.backbone, getattr(model, "head", None)):
        if part is None:
            continue
        blocks = _block_list(part)
        for block in blocks if blocks is not None else []:
            fully_shard(block, mesh=mesh, reshard_after_forward=reshard)
            sharded.append(names[block])
        fully_shard(part, mesh=mesh, reshard_after_forward=reshard)
        sharded.append(names[part])
    return sharded


def local(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard (the storage it holds on this process); a plain tensor itself."""
    from torch.distributed.tensor import DTensor

    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


@torch.no_grad()
def check_same_weights(accelerator, module: nn.Module) -> None:
    """Before sharding: every process must have built the same model (seeded build); DDP broadcasts rank 0's weights,
    FSDP2 keeps each process's own shard, so a difference would train a model that no process built. Compares a
    float64 (sum, sum of squares) fingerprint over processes."""
    values = [p.detach().double() for p in module.parameters()]
    fingerprint = torch.stack([sum(v.sum() for v in values), sum((v * v).sum() for v in values)]).to(accelerator.device)
    gathered = accelerator.gather(fingerprint[None]).cpu()
    if not torch.equal(gathered, gathered[:1].expand_as(gathered)):
        raise RuntimeError(f"the processes built different students before sharding (fingerprints {gathered.tolist()}); "
                           "FSDP2 needs the same seeded build on every process")


@torch.no_grad()
def local_fingerprint_sums(module: nn.Module) -> torch.Tensor:
    """``[2]`` float64 (sum, sum of squares) over this process's local shards (all-reduce them for the whole model)."""
    values = [local(p.detach()).double() for p in module.parameters()]
    return torch.stack([sum(v.sum() for v in values), sum((v * v).sum() for v in values)])


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Collective (every process calls it): the full, unsharded state dict of ``module`` on the CPU, on the main process
    (empty elsewhere)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


# --------------------------------------------------------------------------------------------
# Sharded checkpoints: per-process safetensors, JSON, no pickle


def _flat_local_state(prefix: str, state: dict, tensors: dict, layout: dict) -> None:
    from torch.distributed.tensor import DTensor

    for name, value in state.items():
        key = f"{prefix}{name}"
        if isinstance(value, DTensor):
            tensors[key] = value.to_local().detach().cpu().contiguous().clone()
            layout[key] = "dtensor"
        elif isinstance(value, torch.Tensor):
            tensors[key] = value.detach().cpu().contiguous().clone()
            layout[key] = "tensor"
        else:
            raise TypeError(f"{key}: cannot checkpoint a {type(value).__name__}")


def _rng_state() -> tuple[dict, dict]:
    import numpy

    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = state
    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = numpy.random.get_state()
    return tensors, {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(position), int(has_gauss), float(cached)],
    }


def _set_rng_state(tensors: dict, values: dict) -> None:
    import numpy

    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted((int(key.rsplit(".", 1)[1]), value) for key, value in tensors.items() if key.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([value for _, value in cuda])
    version, internal, gauss = values["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = values["numpy"]
    numpy.random.set_state((kind, numpy.asarray(keys, dtype=numpy.uint32), position, has_gauss, cached))


def save_sharded_checkpoint(accelerator, output_dir, step: int, metadata: dict, keep: int, student: nn.Module,
                            teacher: nn.Module, optimizer, scheduler, state: dict) -> Path:
    """Every process calls this. Writes ``checkpoint-XXXXXXXX/`` atomically (temporary folder, manifest marker, rename,
    prune to ``keep``, as :func:`snd.distill.checkpoints.save_checkpoint`): per process ``fsdp-rankRRRRR-of-WWWWW``
    ``.safetensors`` (its local shards of the student, the EMA teacher (``get_model_state_dict``) and the optimiser
    moments, and its RNG states) and ``.json`` (the layout, optimiser hyper-parameters, schedule, Python/NumPy RNG);
    ``snd_state.json`` (the counters). Nothing is pickled; resuming needs the same number of processes."""
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    from .checkpoints import STATE_JSON, _fsync_dir, begin_checkpoint, publish_checkpoint, raise_if_disk_full, write_checkpoint_marker

    rank, world = accelerator.process_index, accelerator.num_processes
    final, temporary = begin_checkpoint(accelerator, output_dir, step)
    tensors, layout = {}, {}
    _flat_local_state("student.", get_model_state_dict(student), tensors, layout)
    _flat_local_state("teacher.", get_model_state_dict(teacher), tensors, layout)
    optimizer_state = optimizer.state_dict()
    for index, values in optimizer_state["state"].items():
        _flat_local_state(f"optimizer.{index}.", values, tensors, layout)
    rng_tensors, rng_values = _rng_state()
    tensors.update(rng_tensors)
    record = {
        "rank": rank,
        "world_size": world,
        "layout": layout,
        "param_groups": optimizer_state["param_groups"],
        "scheduler": scheduler.state_dict(),
        "rng": rng_values,
    }
    try:
        save_file(tensors, str(temporary / SHARD_FILE.format(rank=rank, world=world)), metadata={"format": "pt"})
        (temporary / SHARD_JSON.format(rank=rank, world=world)).write_text(json.dumps(record))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (temporary / STATE_JSON).write_text(json.dumps(state, indent=2))
            write_checkpoint_marker(temporary, step, {**metadata, "distributed": "fsdp2", "world_size": world})
            _fsync_dir(temporary)
    except (OSError, RuntimeError) as error:
        try:
            raise_if_disk_full(error, temporary, "writing checkpoint")
        finally:
            if accelerator.is_main_process:
                shutil.rmtree(temporary, ignore_errors=True)
        raise
    return publish_checkpoint(accelerator, temporary, final, output_dir, keep)


def _as_like(saved: torch.Tensor, like, kind: str):
    """``saved`` (a local shard) as a DTensor with ``like``'s mesh, placements, shape and stride; a plain tensor as is."""
    from torch.distributed.tensor import DTensor

    if kind != "dtensor":
        return saved
    if not isinstance(like, DTensor):
        raise ValueError("a sharded tensor in the checkpoint where the run has a plain one")
    return DTensor.from_local(saved.to(like.device, like.dtype), like.device_mesh, like.placements, run_check=False,
                              shape=like.shape, stride=like.stride())


def load_sharded_checkpoint(accelerator, path, student: nn.Module, teacher: nn.Module, optimizer, scheduler, state) -> dict:
    """Resume from a checkpoint written by :func:`save_sharded_checkpoint` (same number of processes): every process
    reads its own file; student and teacher via ``set_model_state_dict``, optimiser, schedule, RNG states and counters.
    Returns the checkpoint's metadata. Raises :class:`snd.distill.checkpoints.CheckpointError` naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    from .checkpoints import STATE_JSON, CheckpointError, _read_counters, read_checkpoint_metadata

    path = Path(path)
    metadata = read_checkpoint_metadata(path)
    rank, world = accelerator.process_index, accelerator.num_processes
    if metadata.get("distributed") != "fsdp2":
        raise CheckpointError(f"{path}: written without FSDP2 (DDP or one process); resume it with the same distribution")
    if metadata.get("world_size") != world:
        raise CheckpointError(f"{path}: written by {metadata.get('world_size')} processes; this run has {world} "
                              "(a sharded checkpoint resumes with the same number of processes)")
    tensor_file = path / SHARD_FILE.format(rank=rank, world=world)
    json_file = path / SHARD_JSON.format(rank=rank, world=world)
    try:
        tensors = load_file(str(tensor_file))
        record = json.loads(json_file.read_text())
    except (SafetensorError, OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{tensor_file}: missing, corrupt or truncated ({type(error).__name__}: {error})") from error
    layout = record["layout"]
    try:
        for prefix, module in (("student.", student), ("teacher.", teacher)):
            current = get_model_state_dict(module)
            values = {}
            for name, like in current.items():
                key = prefix + name
                if key not in tensors:
                    raise CheckpointError(f"{tensor_file}: no {key}; it does not fit this run's {prefix[:-1]}")
                values[name] = _as_like(tensors[key], like, layout[key])
            set_model_state_dict(module, values)
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        optimizer_state = {"state": {}, "param_groups": record["param_groups"]}
        for key, kind in layout.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                optimizer_state["state"].setdefault(int(index), {})[name] = _as_like(tensors[key], parameters[int(index)], kind)
        optimizer.load_state_dict(optimizer_state)
        scheduler.load_state_dict(record["scheduler"])
        _set_rng_state(tensors, record["rng"])
    except (KeyError, ValueError, RuntimeError, IndexError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{tensor_file}: does not fit this run ({type(error).__name__}: {error})") from error
    if state is not None:  # a regular UTF-8 JSON object of non-negative int counters, of the checkpoint's own step
        state.load_state_dict(_read_counters(path / STATE_JSON, metadata.get("step")))
    return metadata


def reshard(module: nn.Module) -> None:
    """Free the gathered (unsharded) parameters every FSDP2 unit of ``module`` holds, so the next forward gathers the
    current shards (a root keeps its gathered parameters after a forward without backward: the EMA teacher's)."""
    from torch.distributed.fsdp import FSDPModule

    for child in module.modules():
        if isinstance(child, FSDPModule):
            child.reshard()
