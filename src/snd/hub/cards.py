"""Model cards for SnD backbones, rendered from the Jinja templates in `hub_cards/`.

A card carries Hub metadata (license, library, pipeline tag, base model, tags) and, where published numbers
exist, a `model-index` built from `ProbeResult`s, so the Hub shows them as evaluation results. Every rendered
card is parsed back with `huggingface_hub.ModelCard` and checked before it is returned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from huggingface_hub import EvalResult, ModelCard, ModelCardData

DEFAULT_TEMPLATE = "snd_backbone.md"
PAPER_URL = "https://arxiv.org/abs/2602.06032"
PAPER_SOURCE = "Splat and Distill (Shavin & Benaim, ICLR 2026)"

# task key -> (model-index task type, pretty name)
TASKS = {
    "depth": ("depth-estimation", "Monocular depth (linear probe)"),
    "normals": ("surface-normal-estimation", "Surface normals (linear probe)"),
    "segmentation": ("image-segmentation", "Semantic segmentation (linear probe)"),
    "correspondence": ("keypoint-matching", "Multiview correspondence"),
}
# dataset key -> (model-index dataset type, pretty name)
DATASETS = {
    "scannetpp": ("scannetpp", "ScanNet++"),
    "scannet": ("scannet", "ScanNet"),
    "nyuv2": ("nyu_depth_v2", "NYUv2"),
    "ade20k": ("scene_parse_150", "ADE20K"),
    "synthetic": ("snd-synthetic", "SnD synthetic benchmark (snd.eval.datasets)"),
}
# metric key -> (model-index metric type, pretty name)
METRICS = {
    "rmse": ("rmse", "RMSE (lower is better)"),
    "angular_rmse": ("angular_rmse", "angular RMSE, degrees (lower is better)"),
    "mean_iou": ("mean_iou", "mIoU, % (higher is better)"),
    "recall_10px": ("recall_10px", "recall at 10 px, % (higher is better)"),
}
VARIANTS = {
    "blending": "trained **with** blending (alpha = {alpha:g}); the variant for depth, surface normals and semantic "
    "segmentation.",
    "no-blending": "trained **without** blending (alpha = 1); the variant for multiview correspondence.",
}
_DEFAULT_BLEND_ALPHA = 0.5  # the authors' released "with blending" models


def weights_license(source: str | None) -> str:
    """The licence (SPDX id, or "other") of weights fine-tuned from ``source``: they inherit their base's.

    A random initialisation or the project's own ``nano-2d``: Apache-2.0 (this package's licence). The SnD authors'
    released ``*_snd.pth``: MIT. DINOv2 (``dinov2*``, ``facebook/dinov2-*``): Apache-2.0. DINOv3 (``dinov3*``): "other"
    (Meta's DINOv3 License). Anything else: "other" (check the base model's licence yourself).
    """
    if source is None:
        return "apache-2.0"
    name = Path(str(source)).name.lower()
    text = str(source).lower()
    if name == "nano-2d":
        return "apache-2.0"
    if "_snd" in name or name.startswith("snd"):
        return "mit"
    if "dinov3" in text:
        return "other"
    if "dinov2" in text:
        return "apache-2.0"
    return "other"


@dataclass(frozen=True)
class ProbeResult:
    """One evaluation number: a key of `TASKS`, `DATASETS` and `METRICS` each, and the value."""

    task: str
    dataset: str
    metric: str
    value: float

    def __post_init__(self):
        for kind, key, table in (("task", self.task, TASKS), ("dataset", self.dataset, DATASETS),
                                 ("metric", self.metric, METRICS)):
            if key not in table:
                raise ValueError(f"ProbeResult.{kind}: unknown {key!r}; expected one of {sorted(table)}")
        if not isinstance(self.value, (int, float)) or not math.isfinite(self.value):
            raise ValueError(f"ProbeResult.value must be a finite number, got {self.value!r}")

    def to_eval_result(self, source_name: str | None, source_url: str | None) -> EvalResult:
        return EvalResult(
            task_type=TASKS[self.task][0],
            task_name=TASKS[self.task][1],
            dataset_type=DATASETS[self.dataset][0],
            dataset_name=DATASETS[self.dataset][1],
            metric_type=METRICS[self.metric][0],
            metric_name=METRICS[self.metric][1],
            metric_value=float(self.value),
            source_name=source_name,
            source_url=source_url,
        )


@dataclass
class ModelCardInfo:
    """What a card says about one repository.

    Args:
        repo_id: the Hub repository the card is for (`org/name`); used in the usage snippet.
        variant: `"blending"`, `"no-blending"` or None (unknown, e.g. a custom run; see `blend_alpha`).
        blend_alpha: blending weight of a distillation run (0.5 blending, 1.0 none); sets `variant` when given.
        title: card heading (defaults to the repository name).
        summary: first paragraph under the heading.
        base_model: Hub id of the model it was fine-tuned from (e.g. `facebook/dinov2-small`).
        results: evaluation numbers; they become the card's `model-index` and a results table.
        results_source: name of where `results` come from (e.g. the paper); None for own measurements.
        results_source_url: link for `results_source`.
        results_note: how the results were obtained (shown above the table).
        provenance: ordered facts about where the weights come from (source file, conversion check, training).
        license: SPDX id for the card metadata.
        tags: extra Hub tags (`snd`, `dinov2`, ... are always added).
        datasets: Hub dataset ids the model was trained on, if any.
        official_organization: organisation that hosts the official SnD repositories (variant table).
        model_name: name used in `model-index` (defaults to the repository name).
        pipeline_tag: the Hub pipeline tag (`image-feature-extraction` for backbones; `depth-estimation` /
            `image-segmentation` for probes saved as task models).
    """

    repo_id: str
    variant: str | None = None
    blend_alpha: float | None = None
    title: str | None = None
    summary: str | None = None
    base_model: str | None = None
    results: list[ProbeResult] = field(default_factory=list)
    results_source: str | None = None
    results_source_url: str | None = None
    results_note: str = "numbers as reported by the SnD authors; not re-measured by this package"
    provenance: dict[str, str] = field(default_factory=dict)
    license: str = "mit"
    tags: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    official_organization: str = "snd"
    model_name: str | None = None
    pipeline_tag: str = "image-feature-extraction"

    def __post_init__(self):
        if self.repo_id.count("/") != 1 or not all(self.repo_id.split("/")):
            raise ValueError(f"ModelCardInfo.repo_id must look like 'organisation/name', got {self.repo_id!r}")
        if self.blend_alpha is not None:
            if not 0.0 <= self.blend_alpha <= 1.0:
                raise ValueError(f"ModelCardInfo.blend_alpha must be in [0, 1], got {self.blend_alpha}")
            implied = "no-blending" if self.blend_alpha == 1.0 else "blending"
            if self.variant is not None and self.variant != implied:
                raise ValueError(
                    f"ModelCardInfo: variant={self.variant!r} contradicts blend_alpha={self.blend_alpha} ({implied})"
                )
            self.variant = implied
        if self.variant is not None and self.variant not in VARIANTS:
            raise ValueError(f"ModelCardInfo.variant must be one of {sorted(VARIANTS)} or None, got {self.variant!r}")

    @property
    def name(self) -> str:
        return self.repo_id.split("/")[1]


def template_dirs() -> list[Path]:
    """Where card templates are looked up: the package's `templates/` (a link to `hub_cards/` in the
    source tree, copied into wheels), then `hub_cards/` of a source checkout."""
    here = Path(__file__).resolve().parent
    return [here / "templates", here.parents[2] / "hub_cards"]


def find_template(name: str = DEFAULT_TEMPLATE) -> Path:
    """Path of a card template by file name (or an existing path)."""
    candidate = Path(name)
    if candidate.is_file():
        return candidate
    for directory in template_dirs():
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"Model card template {name!r} not found in {[str(d) for d in template_dirs()]}")


def _architecture_rows(config: Any | None) -> list[tuple[str, str]]:
    if config is None:
        return [("architecture", "see `config.json`")]
    rows = [("model type", f"`{getattr(config, 'model_type', '?')}`")]
    for label, attribute in (
        ("hidden size", "hidden_size"),
        ("layers", "num_hidden_layers"),
        ("attention heads", "num_attention_heads"),
        ("patch size", "patch_size"),
        ("register tokens", "num_register_tokens"),
        ("MLP", "use_swiglu_ffn"),
        ("native image size", "image_size"),
        ("position-embedding interpolation", "position_interpolation"),
    ):
        if hasattr(config, attribute):
            value = getattr(config, attribute)
            if attribute == "use_swiglu_ffn":
                value = "SwiGLU" if value else "GELU"
            rows.append((label, str(value)))
    return rows


def _format_value(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 1 else f"{value:.2f}"


def render_model_card(
    info: ModelCardInfo,
    config: Any | None = None,
    template: str | Path = DEFAULT_TEMPLATE,
    has_remote_code: bool | None = None,
) -> ModelCard:
    """Render the card for `info` from a `hub_cards/` template and validate it with `ModelCard`.

    Args:
        info: what the card says (repository, variant, results, provenance).
        config: the model's config (e.g. `SnDConfig`) for the architecture table; optional.
        template: template file name in `hub_cards/` or a path.
        has_remote_code: whether the repository carries `auto_map` code (default: `config.auto_map` is set).

    Returns:
        a `huggingface_hub.ModelCard`; `str(card)` is the README, `card.save(path)` writes it.

    Raises:
        ValueError: if the rendered metadata does not parse back into the expected `model-index`.
    """
    model_name = info.model_name or info.name
    source_name = info.results_source
    source_url = info.results_source_url
    eval_results = [r.to_eval_result(source_name, source_url) for r in info.results]
    model_type = getattr(config, "model_type", None) or "snd_dinov2"
    is_snd = model_type == "snd_dinov2"
    family = "dinov2" if is_snd or model_type.startswith("dinov2") else model_type.split("_")[0]
    base_tags = ["snd", "splat-and-distill", family, "vision", "image-feature-extraction", "3d-aware"]
    tags = list(dict.fromkeys(base_tags + list(info.tags)))
    card_data = ModelCardData(
        license=info.license,
        library_name="transformers",
        pipeline_tag=info.pipeline_tag,
        tags=tags,
        base_model=info.base_model,
        datasets=info.datasets or None,
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
    )
    if has_remote_code is None:
        has_remote_code = bool(getattr(config, "auto_map", None))
    if info.variant is None:
        variant_description = "a custom SnD run; see the provenance section for how it was trained."
    else:
        alpha = info.blend_alpha if info.blend_alpha is not None else _DEFAULT_BLEND_ALPHA
        variant_description = VARIANTS[info.variant].format(alpha=alpha)
    results_source = ""
    if info.results and source_name:
        results_source = f"Source: {source_name}" + (f", <{source_url}>." if source_url else ".")
    rows = [
        {"task": TASKS[r.task][1], "dataset": DATASETS[r.dataset][1], "metric": METRICS[r.metric][1],
         "value": _format_value(r.value)}
        for r in info.results
    ]
    environment = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True
    )
    text = environment.from_string(find_template(str(template)).read_text(encoding="utf-8")).render(
        card_data=card_data.to_yaml(),
        title=info.title or info.name,
        summary=info.summary or f"`{info.repo_id}`: a {'DINOv2' if is_snd else model_type} backbone fine-tuned with Splat and Distill (SnD).",
        org=info.official_organization,
        repo_id=info.repo_id,
        variant_description=variant_description,
        has_remote_code=has_remote_code,
        is_snd=is_snd,
        model_type=model_type,
        model_class=", ".join(getattr(config, "architectures", None) or []) or model_type,
        patch_size=getattr(config, "patch_size", 14),
        prefix_tokens=1 + int(getattr(config, "num_register_tokens", 0) or 0),
        architecture=_architecture_rows(config),
        results=rows,
        results_note=info.results_note,
        results_source=results_source,
        provenance=list(info.provenance.items()),
    )
    card = ModelCard(text)
    _check_card(card, model_name, eval_results, pipeline_tag=info.pipeline_tag)
    return card


def _check_card(card: ModelCard, model_name: str, expected: list[EvalResult],
                pipeline_tag: str = "image-feature-extraction") -> None:
    # Parse the README text again, as the Hub will, and compare with what was meant to be written.
    reparsed = ModelCard(str(card))
    data = reparsed.data
    if data.library_name != "transformers" or data.pipeline_tag != pipeline_tag:
        raise ValueError("rendered model card lost its library_name/pipeline_tag metadata")
    found = data.eval_results or []
    if len(found) != len(expected):
        raise ValueError(f"rendered model card has {len(found)} evaluation results, expected {len(expected)}")
    if expected and data.model_name != model_name:
        raise ValueError(f"rendered model-index names {data.model_name!r}, expected {model_name!r}")
    for got, want in zip(found, expected, strict=True):
        same_keys = (got.task_type, got.dataset_type, got.metric_type) == (
            want.task_type, want.dataset_type, want.metric_type
        )
        if not same_keys or not math.isclose(float(got.metric_value), float(want.metric_value), abs_tol=1e-12):
            raise ValueError(f"rendered model-index entry {got} does not match {want}")


__all__ = [
    "DATASETS",
    "METRICS",
    "ModelCardInfo",
    "PAPER_SOURCE",
    "PAPER_URL",
    "ProbeResult",
    "TASKS",
    "VARIANTS",
    "find_template",
    "render_model_card",
    "template_dirs",
]
