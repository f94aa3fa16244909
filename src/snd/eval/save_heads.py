"""Save trained probes as transformers task models: `SnDForDepthEstimation` / `SnDForSemanticSegmentation` folders
(backbone weights included), with the image processor that reproduces the evaluation's input size and a model
card carrying the probe's metrics, so `pipeline("depth-estimation", model=folder)` runs the probe.

Surface-normal probes have no transformers task class and are not saved. Backbones other than SnD (e.g.
transformers' `Dinov2Model`) are skipped with a message: the task classes hold an SnD trunk.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

logger = logging.getLogger(__name__)

SAVABLE_TASKS = ("depth", "segmentation")
_CARD_METRICS = {"depth": "rmse", "segmentation": "mean_iou"}


#: (task, metric key in snd.eval results) -> the model-card metric of `snd.hub.cards.METRICS`
_CARD_RESULT_KEYS = {("depth", "rmse"): "rmse", ("normals", "rmse"): "angular_rmse",
                     ("segmentation", "mean_iou"): "mean_iou", ("correspondence", "recall_10px"): "recall_10px"}
#: evaluation dataset -> model-card dataset key
_CARD_DATASETS = {"scannet_pairs": "scannet"}


def card_results(results: dict[str, dict], dataset_name: str) -> list[dict]:
    """One model's evaluation results (`{task: metrics}`) as model-card records `{"task", "dataset", "metric",
    "value"}` (what `ProbeResult` takes, and what a run's `eval_results.json` holds): the headline metric of each
    task, for datasets the cards know; others are left out."""
    from snd.hub.cards import DATASETS

    dataset = _CARD_DATASETS.get(dataset_name, dataset_name)
    if dataset not in DATASETS:
        return []
    records = []
    for (task, key), metric in _CARD_RESULT_KEYS.items():
        value = results.get(task, {}).get(key)
        if isinstance(value, (int, float)) and value == value:  # finite numbers only (NaN != NaN)
            records.append({"task": task, "dataset": dataset, "metric": metric, "value": float(value)})
    return records


def probe_task_model(task: str, head: nn.Module, backbone: nn.Module, dataset) -> nn.Module:
    """The transformers task model equal to `backbone` followed by the trained probe `head` (eval mode).

    Args:
        task: "depth" (a `DepthBinsHead`) or "segmentation" (a `SegmentationHead`).
        head: the trained probe from `snd.eval.probes.train_probe`.
        backbone: the SnD backbone (`SnDModel`) the probe was trained on.
        dataset: the evaluation dataset (depth range; class names).
    """
    from snd import SnDConfig, SnDForDepthEstimation, SnDForSemanticSegmentation, SnDModel

    if not isinstance(backbone, SnDModel):
        raise TypeError(f"probe_task_model needs an SnDModel backbone, got {type(backbone).__name__}")
    config_dict = backbone.config.to_dict()
    for key in ("auto_map", "architectures", "id2label", "label2id", "num_labels"):
        config_dict.pop(key, None)
    if task == "depth":
        config_dict.update(
            depth_min=float(head.bins[0]),
            depth_max=float(head.bins[-1]),
            depth_num_bins=head.conv.out_channels,
            depth_head_upsample=head.upsample,
            depth_head_use_cls=head.use_cls,
        )
        config = SnDConfig(**config_dict)
        model = SnDForDepthEstimation(config)
        model.head.conv.load_state_dict(head.conv.state_dict())
    elif task == "segmentation":
        names = list(getattr(dataset, "class_names", None) or [f"class_{i}" for i in range(head.conv.out_channels)])
        if len(names) != head.conv.out_channels:
            raise ValueError(f"{dataset.name}: {len(names)} class names for a probe with {head.conv.out_channels} classes")
        config = SnDConfig(**config_dict, id2label=dict(enumerate(names)))
        model = SnDForSemanticSegmentation(config)
        model.head.norm.load_state_dict(head.norm.state_dict())
        model.head.conv.load_state_dict(head.conv.state_dict())
    else:
        raise ValueError(f"probe_task_model: task must be one of {SAVABLE_TASKS}, got {task!r}")
    model.snd.load_state_dict(backbone.state_dict())
    return model.eval()


def probe_image_processor(extractor, dataset):
    """An `SnDImageProcessor` giving the evaluation's input: the test images' size rounded to patch multiples
    (as `FeatureExtractor` does), bilinear, no centre crop, ImageNet normalisation."""
    from transformers.image_utils import PILImageResampling

    from snd import SnDImageProcessor

    height, width = dataset[0]["image"].shape[-2:]
    input_height, input_width = extractor.input_size(int(height), int(width))
    return SnDImageProcessor(
        do_center_crop=False,
        size={"height": input_height, "width": input_width},
        resample=PILImageResampling.BILINEAR,
    )


def save_probe_model(
    task: str,
    head: nn.Module,
    extractor,
    dataset,
    metrics: dict,
    directory: str | Path,
    model_name: str = "model",
    dataset_name: str = "synthetic",
) -> Path | None:
    """Write the probe of `task` as a task-model folder with image processor and `README.md` (metrics in its
    `model-index`). Returns the folder, or None (with a log line) when the task or backbone cannot be saved."""
    from snd import SnDModel
    from snd.hub.cards import DATASETS, ModelCardInfo, ProbeResult, render_model_card

    if task not in SAVABLE_TASKS:
        logger.info("--save-heads: %s probes have no transformers task class; not saved", task)
        return None
    backbone = extractor.model
    if not isinstance(backbone, SnDModel):
        logger.warning("--save-heads: %s is a %s, not an SnD backbone; its %s probe is not saved",
                       model_name, type(backbone).__name__, task)
        return None
    from .probes import DepthBinsHead, SegmentationHead

    expected = DepthBinsHead if task == "depth" else SegmentationHead
    if not isinstance(head, expected):
        logger.warning("--save-heads: the %s probe is a %s, not the %s that %s reproduces; not saved",
                       task, type(head).__name__, expected.__name__, "SnDForDepthEstimation" if task == "depth"
                       else "SnDForSemanticSegmentation")
        return None
    directory = Path(directory)
    model = probe_task_model(task, head, backbone, dataset)
    model.save_pretrained(directory)
    probe_image_processor(extractor, dataset).save_pretrained(directory)
    results = []
    metric = _CARD_METRICS[task]
    if dataset_name in DATASETS and metric in metrics:
        results.append(ProbeResult(task, dataset_name, metric, float(metrics[metric])))
    pipeline_task = "depth-estimation" if task == "depth" else "image-segmentation"
    measured = ", ".join(f"{k} = {v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float)))
    info = ModelCardInfo(
        repo_id=f"local/{model_name}-{task}-probe",
        title=f"{model_name}: {task} probe",
        summary=(
            f"The `{model_name}` backbone with its trained linear {task} probe ({dataset_name} evaluation), as a "
            f"transformers `{type(model).__name__}`: `pipeline(\"{pipeline_task}\", model=<this folder>)`."
        ),
        results=results,
        results_note=f"measured by `scripts/evaluate.py` on the {dataset_name} test split: {measured}",
        provenance={"backbone": model_name, "probe": f"snd.eval.probes ({task})", "evaluation dataset": dataset_name},
        pipeline_tag=pipeline_task,
    )
    render_model_card(info, config=model.config).save(directory / "README.md")
    logger.info("--save-heads: saved the %s probe of %s to %s", task, model_name, directory)
    return directory


__all__ = ["SAVABLE_TASKS", "card_results", "probe_image_processor", "probe_task_model", "save_probe_model"]
