"""Push an SnD backbone to the Hub: weights (safetensors), config, image processor and a rendered model card,
in one commit, then optionally load the commit back and compare outputs."""

from __future__ import annotations

import fnmatch
import json
import logging
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, ModelCard

from .cards import ModelCardInfo, render_model_card

logger = logging.getLogger(__name__)


@dataclass
class PushResult:
    """Where a push landed: the repository, its commit and the files it holds at that commit."""

    repo_id: str
    commit_oid: str
    commit_url: str
    files: list[str]
    removed: list[str] = field(default_factory=list)
    max_abs_diff: float | None = None  # set when the push was verified by loading it back


_WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.bin.index.json", "*.pth", "*.pt")


def _stale_weight_files(api: HfApi, repo_id: str, revision: str | None, token: str | None, new: set[str]) -> list[str]:
    existing = api.list_repo_files(repo_id, revision=revision, token=token)
    return sorted(
        f for f in existing if f not in new and any(fnmatch.fnmatch(f.rsplit("/", 1)[-1], p) for p in _WEIGHT_PATTERNS)
    )


def _check_pushable(model: Any) -> None:
    if hasattr(model, "peft_config") or any("lora_" in name for name, _ in model.named_parameters()):
        raise ValueError(
            "push_model: the model still has LoRA adapters; merge them first (`model = model.merge_and_unload()`) "
            "so the repository holds plain SnD weights that load with AutoModel"
        )
    if not hasattr(model, "save_pretrained") or not hasattr(model, "config"):
        raise TypeError(f"push_model expects a transformers PreTrainedModel, got {type(model).__name__}")


def save_for_hub(
    model: Any, image_processor: Any | None, directory: str | Path, card: ModelCardInfo | ModelCard
) -> list[str]:
    """Write what `push_model` uploads into `directory`: weights (safetensors), config (+ remote code when the
    classes are registered for auto classes), image processor and `README.md`. Returns relative file paths.

    Arguments in `push_model`'s order: `save_for_hub(model, processor, directory, card)` writes what
    `push_model(model, processor, repo_id, card)` pushes. The earlier positional order `(model, processor, card,
    directory)` still works (with a `FutureWarning`); keywords work either way.

    A `ModelCardInfo` is rendered after the model is saved, so the card knows whether `auto_map` was written."""
    if isinstance(directory, (ModelCardInfo, ModelCard)) and isinstance(card, (str, Path)):
        warnings.warn(
            "save_for_hub(model, image_processor, card, directory) is the old argument order; use "
            "save_for_hub(model, image_processor, directory, card), as push_model(model, image_processor, repo_id, card)",
            FutureWarning,
            stacklevel=2,
        )
        directory, card = card, directory
    directory = Path(directory)
    model.save_pretrained(directory)
    if image_processor is not None:
        image_processor.save_pretrained(directory)
    if isinstance(card, ModelCardInfo):
        saved_config = json.loads((directory / "config.json").read_text())
        card = render_model_card(card, config=model.config, has_remote_code="auto_map" in saved_config)
    card.save(directory / "README.md")
    files = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())
    if not any(f.endswith(".safetensors") for f in files):
        raise RuntimeError(f"save_pretrained wrote no safetensors file into {directory}: {files}")
    return files


def push_model(
    model: Any,
    image_processor: Any | None,
    repo_id: str,
    card: ModelCardInfo | ModelCard | None = None,
    *,
    private: bool = False,
    commit_message: str = "Upload SnD backbone",
    commit_description: str | None = None,
    revision: str | None = None,
    token: str | None = None,
    verify: bool = False,
    api: HfApi | None = None,
) -> PushResult:
    """Push `model` (safetensors + config), `image_processor` and a model card to `repo_id` in one commit.

    Weight files of an earlier push that the new one does not overwrite (other shards, indexes, `.bin`) are
    deleted in the same commit, so the repository never mixes two models.

    Args:
        model: a transformers model, e.g. `snd.SnDModel` (LoRA adapters must be merged first).
        image_processor: saved next to the weights so `AutoImageProcessor.from_pretrained(repo_id)` works;
            None to push weights and card only.
        repo_id: `organisation/name`; created if missing (`private` applies only then).
        card: a `ModelCardInfo` (rendered from `hub_cards/` with the model's config), a ready `ModelCard`, or
            None for a minimal card about `repo_id`.
        private: create the repository as private.
        commit_message / commit_description: of the Hub commit.
        revision: branch to push to (created from `main` if missing); default `main`.
        token: Hub token; default the one `huggingface_hub` finds (`HF_TOKEN` or the login cache).
        verify: load the pushed commit back with `AutoModel` into a fresh cache and compare outputs on a random
            input; raises if they differ (`PushResult.max_abs_diff` holds the difference).
        api: an `HfApi` to use (default one for `HF_ENDPOINT`).

    Returns:
        `PushResult` with the commit id, the files the repository holds at that commit and the stale weight files
        it removed.
    """
    _check_pushable(model)
    api = api or HfApi()
    if card is None:
        card = ModelCardInfo(repo_id=repo_id)
    if isinstance(card, ModelCardInfo):
        if card.repo_id != repo_id:
            raise ValueError(f"push_model: card is for {card.repo_id!r} but the push goes to {repo_id!r}")
        render_model_card(card, config=model.config)  # fail on a bad card before creating the repository

    repo_id = api.create_repo(repo_id, private=private, exist_ok=True, token=token).repo_id
    if revision not in (None, "main"):
        api.create_branch(repo_id, branch=revision, exist_ok=True, token=token)
    with tempfile.TemporaryDirectory(prefix="snd-push-") as staging:
        files = save_for_hub(model, image_processor, staging, card)
        operations: list = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(Path(staging) / f)) for f in files]
        # Weights left from an earlier push (other shards, an index, .bin files) would shadow or break the new
        # ones at load time, so the commit removes them.
        stale = _stale_weight_files(api, repo_id, revision, token, set(files))
        operations += [CommitOperationDelete(path_in_repo=f) for f in stale]
        commit = api.create_commit(
            repo_id,
            operations,
            commit_message=commit_message,
            commit_description=commit_description,
            revision=revision,
            token=token,
        )
    remote = set(api.list_repo_files(repo_id, revision=commit.oid, token=token))
    missing = sorted(set(files) - remote)
    if missing:
        raise RuntimeError(f"push to {repo_id}@{commit.oid} is missing {missing}")
    leftover = sorted(set(stale) & remote)
    if leftover:
        raise RuntimeError(f"push to {repo_id}@{commit.oid} did not remove stale weights {leftover}")
    result = PushResult(repo_id=repo_id, commit_oid=commit.oid, commit_url=str(commit.commit_url), files=sorted(remote),
                        removed=stale)
    logger.info("pushed %s files to %s at %s", len(files), repo_id, commit.oid)
    if verify:
        result.max_abs_diff = verify_pushed_model(model, repo_id, commit.oid, token=token)
    return result


def _first_tensor(output: Any) -> torch.Tensor:
    if getattr(output, "last_hidden_state", None) is not None:
        return output.last_hidden_state
    if getattr(output, "feature_maps", None) is not None:
        return torch.cat([f.flatten() for f in output.feature_maps])
    return output[0]


@torch.no_grad()
def verify_pushed_model(
    reference: Any, repo_id: str, revision: str, token: str | None = None, atol: float = 1e-6
) -> float:
    """Download `repo_id@revision` into a fresh cache, load it (with `AutoModel` for an `SnDModel`, else with
    the reference's own class) and compare outputs with `reference` on a fixed random input.

    Returns the max abs difference; raises `RuntimeError` if it exceeds `atol`."""
    from transformers import AutoModel

    config = reference.config
    patch = getattr(config, "patch_size", 14)
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(1, getattr(config, "num_channels", 3), 2 * patch, 3 * patch, generator=generator)
    loader = AutoModel if type(reference).__name__ == "SnDModel" else type(reference)
    with tempfile.TemporaryDirectory(prefix="snd-verify-") as cache:
        loaded = loader.from_pretrained(repo_id, revision=revision, cache_dir=cache, token=token).eval()
    was_training = reference.training
    reference.eval()
    try:
        expected = _first_tensor(reference(pixel_values.to(reference.dtype))).float()
    finally:
        reference.train(was_training)
    got = _first_tensor(loaded(pixel_values.to(loaded.dtype))).float()
    if got.shape != expected.shape:
        raise RuntimeError(
            f"{repo_id}@{revision}: loaded model gives {tuple(got.shape)}, expected {tuple(expected.shape)}"
        )
    diff = (got - expected).abs().max().item()
    if not diff <= atol:
        raise RuntimeError(f"{repo_id}@{revision}: loaded model differs from the pushed one (max abs diff {diff:.3g})")
    return diff


__all__ = ["PushResult", "push_model", "save_for_hub", "verify_pushed_model"]
