"""Publish the SnD authors' released weights as transformers repositories.

The authors released four torch.hub-layout state dicts in the Hub repository `david-shavin/SnD`. Each is
downloaded, converted and numerically checked by `snd.convert.convert_backbone`, and pushed with its image
processor and a model card (variant guidance, published numbers as `model-index`, provenance) to
`{organization}/dinov2-s`, `-b`, `-s-no-blending`, `-b-no-blending`. All four are converted before the first
push, so a bad file stops the run before anything is published.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from tqdm.auto import tqdm

from .cards import PAPER_SOURCE, PAPER_URL, ModelCardInfo, ProbeResult
from .push import PushResult, push_model, save_for_hub

logger = logging.getLogger(__name__)

SOURCE_REPO = "david-shavin/SnD"
ORGANIZATION = "snd"


@dataclass(frozen=True)
class OfficialCheckpoint:
    """One released file and where it is published."""

    filename: str  # in the authors' repository
    repo_name: str  # published as {organization}/{repo_name}
    preset: str  # snd.PRESETS architecture
    variant: str  # "blending" | "no-blending"
    base_model: str  # the DINOv2 it was fine-tuned from


OFFICIAL_CHECKPOINTS: tuple[OfficialCheckpoint, ...] = (
    OfficialCheckpoint("dinov2_small_snd.pth", "dinov2-s", "dinov2-s", "blending", "facebook/dinov2-small"),
    OfficialCheckpoint("dinov2_base_snd.pth", "dinov2-b", "dinov2-b", "blending", "facebook/dinov2-base"),
    OfficialCheckpoint(
        "dinov2_small_snd_no_blending.pth", "dinov2-s-no-blending", "dinov2-s", "no-blending", "facebook/dinov2-small"
    ),
    OfficialCheckpoint(
        "dinov2_base_snd_no_blending.pth", "dinov2-b-no-blending", "dinov2-b", "no-blending", "facebook/dinov2-base"
    ),
)

#: Linear-probe numbers the authors report for each released model (see the package's METHOD.md): the main
#: table for ViT-S with blending, the ViT-B normals and ADE20K numbers, and the ViT-S no-blending ablation.
PUBLISHED_RESULTS: dict[str, tuple[ProbeResult, ...]] = {
    "dinov2-s": (
        ProbeResult("depth", "scannetpp", "rmse", 0.3299),
        ProbeResult("depth", "scannet", "rmse", 0.2555),
        ProbeResult("depth", "nyuv2", "rmse", 0.4912),
        ProbeResult("normals", "nyuv2", "angular_rmse", 28.93),
        ProbeResult("segmentation", "scannetpp", "mean_iou", 31.78),
        ProbeResult("segmentation", "scannet", "mean_iou", 56.01),
        ProbeResult("segmentation", "nyuv2", "mean_iou", 67.50),
    ),
    "dinov2-b": (
        ProbeResult("normals", "nyuv2", "angular_rmse", 29.37),
        ProbeResult("segmentation", "ade20k", "mean_iou", 50.01),
    ),
    "dinov2-s-no-blending": (
        ProbeResult("segmentation", "scannetpp", "mean_iou", 30.99),
        ProbeResult("depth", "scannetpp", "rmse", 0.3435),
    ),
    "dinov2-b-no-blending": (),
}


RESULT_NOTES: dict[str, str] = {
    "dinov2-s-no-blending": "the authors' ablation without blending, ViT-S on ScanNet++; reported by the SnD "
    "authors, not re-measured by this package",
}


@dataclass
class PublishConfig:
    """Options of `publish_official_weights` (and of `scripts/publish_official_weights.py`).

    Args:
        source_repo: Hub repository holding the released `.pth` files.
        source_revision: branch or commit of `source_repo` (default `main`); the resolved commit is recorded.
        organization: namespace the converted repositories are pushed to.
        only: file names to publish (default all four).
        presets: file name -> architecture override (a `snd.PRESETS` name), e.g. to publish tiny test files.
        private: create the target repositories as private.
        verify: after each push, load the commit back with `AutoModel` and compare outputs.
        dry_run: download, convert and render cards, but push nothing.
        output_dir: also save each converted repository (weights, config, processor, README) under
            `output_dir/{repo_name}`.
        license: license id for the cards.
        tolerance: max abs patch-token difference the conversion check accepts.
        token: Hub token (default: the one huggingface_hub finds).
    """

    source_repo: str = SOURCE_REPO
    source_revision: str | None = None
    organization: str = ORGANIZATION
    only: list[str] | None = None
    presets: dict[str, str] = field(default_factory=dict)
    private: bool = False
    verify: bool = True
    dry_run: bool = False
    output_dir: Path | None = None
    license: str = "mit"
    tolerance: float = 1e-4
    token: str | None = None


@dataclass
class PublishedCheckpoint:
    checkpoint: OfficialCheckpoint
    repo_id: str
    preset: str
    sha256: str
    conversion_max_abs_difference: dict[str, float]
    push: PushResult | None = None
    local_dir: Path | None = None


def select_checkpoints(config: PublishConfig) -> list[OfficialCheckpoint]:
    known = {c.filename: c for c in OFFICIAL_CHECKPOINTS}
    for name in list(config.only or []) + list(config.presets):
        if name not in known:
            raise ValueError(f"unknown released file {name!r}; expected one of {sorted(known)}")
    return [c for c in OFFICIAL_CHECKPOINTS if config.only is None or c.filename in config.only]


def official_card(
    checkpoint: OfficialCheckpoint,
    repo_id: str,
    source_repo: str,
    source_commit: str,
    sha256: str,
    conversion: dict[str, float],
    organization: str,
    license: str = "mit",
) -> ModelCardInfo:
    """The card of one published checkpoint: variant guidance, published numbers, provenance."""
    kind = {"dinov2-s": "ViT-S/14", "dinov2-b": "ViT-B/14"}.get(checkpoint.preset, checkpoint.preset)
    blending = "with blending" if checkpoint.variant == "blending" else "without blending"
    checks = ", ".join(f"{name}: {value:.2g}" for name, value in conversion.items())
    return ModelCardInfo(
        repo_id=repo_id,
        variant=checkpoint.variant,
        title=f"SnD DINOv2 {kind} ({blending})",
        summary=(
            f"The Splat and Distill authors' released `{checkpoint.filename}` ({kind}, {blending}) as a transformers "
            f"model: load it with `AutoModel.from_pretrained(\"{repo_id}\")` after `import snd`."
        ),
        base_model=checkpoint.base_model,
        results=list(PUBLISHED_RESULTS.get(checkpoint.repo_name, ())),
        results_source=PAPER_SOURCE,
        results_source_url=PAPER_URL,
        **({"results_note": RESULT_NOTES[checkpoint.repo_name]} if checkpoint.repo_name in RESULT_NOTES else {}),
        provenance={
            "source": f"`{checkpoint.filename}` in [`{source_repo}`](https://huggingface.co/{source_repo}) "
            f"at commit `{source_commit}`",
            "source sha256": f"`{sha256}`",
            "conversion": "torch.hub layout -> `snd_dinov2` with `snd.convert.convert_backbone`; patch tokens match "
            f"the original DINOv2 forward pass (max abs difference {checks})",
        },
        license=license,
        tags=["snd-official"],
        official_organization=organization,
    )


def _sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _save_atomically(model, processor, card: ModelCardInfo, target: Path) -> Path:
    # staged next to the target and renamed into place: an interrupted run leaves no half-written folder
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        save_for_hub(model, processor, staging, card)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def publish_official_weights(config: PublishConfig) -> list[PublishedCheckpoint]:
    """Download, convert (with the numerical check) and push the released SnD weights; see `PublishConfig`."""
    from ..convert.backbone import convert_backbone
    from ..models.snd_dinov2 import SnDImageProcessor

    checkpoints = select_checkpoints(config)
    api = HfApi()
    source_commit = api.model_info(config.source_repo, revision=config.source_revision, token=config.token).sha
    converted = []
    for checkpoint in tqdm(checkpoints, desc="download + convert"):
        try:
            path = hf_hub_download(config.source_repo, checkpoint.filename, revision=source_commit, token=config.token)
        except EntryNotFoundError as error:
            raise FileNotFoundError(
                f"{config.source_repo}@{source_commit} has no {checkpoint.filename!r}; nothing was published"
            ) from error
        preset = config.presets.get(checkpoint.filename, checkpoint.preset)
        model, report = convert_backbone(path, format="torchhub", preset=preset, tolerance=config.tolerance)
        repo_id = f"{config.organization}/{checkpoint.repo_name}"
        record = PublishedCheckpoint(checkpoint, repo_id, preset, _sha256(path), dict(report.max_abs_difference))
        card = official_card(checkpoint, repo_id, config.source_repo, source_commit, record.sha256,
                             record.conversion_max_abs_difference, config.organization, config.license)
        converted.append((record, model, card))

    for record, model, card in tqdm(converted, desc="push" if not config.dry_run else "render"):
        processor = SnDImageProcessor()
        if config.output_dir is not None:
            target = Path(config.output_dir) / record.checkpoint.repo_name
            record.local_dir = _save_atomically(model, processor, card, target)
        if config.dry_run:
            continue
        record.push = push_model(
            model,
            processor,
            record.repo_id,
            card,
            private=config.private,
            commit_message=f"Publish {record.checkpoint.filename} from {config.source_repo}",
            commit_description=f"Converted from {config.source_repo}@{source_commit} (sha256 {record.sha256}).",
            token=config.token,
            verify=config.verify,
        )
        logger.info("published %s -> %s@%s", record.checkpoint.filename, record.repo_id, record.push.commit_oid)
    return [record for record, _, _ in converted]


__all__ = [
    "OFFICIAL_CHECKPOINTS",
    "ORGANIZATION",
    "OfficialCheckpoint",
    "PUBLISHED_RESULTS",
    "RESULT_NOTES",
    "PublishConfig",
    "PublishedCheckpoint",
    "SOURCE_REPO",
    "official_card",
    "publish_official_weights",
    "select_checkpoints",
]
