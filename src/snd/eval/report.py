"""Writing results: metrics JSON, the markdown comparison table and pictures."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

# (task, metric key, column title, format); arrows say which direction is better.
TABLE_COLUMNS = (
    ("depth", "rmse", "depth RMSE ↓", "{:.4f}"),
    ("depth", "abs_rel", "depth AbsRel ↓", "{:.4f}"),
    ("depth", "d1", "depth δ1 ↑", "{:.3f}"),
    ("normals", "rmse", "normals RMSE° ↓", "{:.2f}"),
    ("normals", "mean", "normals mean° ↓", "{:.2f}"),
    ("normals", "within_11.25", "normals <11.25° % ↑", "{:.1f}"),
    ("normals", "within_30", "normals <30° % ↑", "{:.1f}"),
    ("segmentation", "mean_iou", "seg mIoU % ↑", "{:.2f}"),
    ("segmentation", "pixel_accuracy", "seg pixel acc % ↑", "{:.2f}"),
    ("correspondence", "recall_5px", "corr R@5px % ↑", "{:.1f}"),
    ("correspondence", "recall_10px", "corr R@10px % ↑", "{:.1f}"),
    ("correspondence", "recall_20px", "corr R@20px % ↑", "{:.1f}"),
    ("correspondence", "recall_10px_rot_0_15", "R@10 0-15° ↑", "{:.1f}"),
    ("correspondence", "recall_10px_rot_15_30", "R@10 15-30° ↑", "{:.1f}"),
    ("correspondence", "recall_10px_rot_30_60", "R@10 30-60° ↑", "{:.1f}"),
    ("correspondence", "recall_10px_rot_60_180", "R@10 60-180° ↑", "{:.1f}"),
)


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN (e.g. an empty rotation bin) is not valid JSON
    return value


#: the summary files an evaluation writes at the top of its output folder
RESULT_FILES = ("results.json", "comparison.md")


class ResultsExistError(FileExistsError):
    """The output folder already holds an earlier evaluation's summary."""


def check_results_dir(output_dir: str | Path, overwrite: bool = False) -> None:
    """Refuse to evaluate into a folder holding an earlier evaluation's ``results.json`` / ``comparison.md`` (they,
    and its per-model files, would be replaced without a trace) unless ``overwrite``."""
    output_dir = Path(output_dir)
    existing = [name for name in RESULT_FILES if (output_dir / name).exists()]
    if existing and not overwrite:
        raise ResultsExistError(
            f"--output-dir {output_dir} already holds an earlier evaluation ({', '.join(existing)}); this one would "
            "replace it and its per-model results. Pass --overwrite to replace them, or choose another --output-dir"
        )


def write_json(data, path: str | Path) -> Path:
    """Write ``data`` as JSON atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "w") as stream:
        json.dump(_json_safe(data), stream, indent=2, sort_keys=False)
    os.replace(temporary, path)
    return path


def write_text(text: str, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    os.replace(temporary, path)
    return path


def comparison_table(results: dict[str, dict[str, dict]], spread: dict[str, dict[str, dict]] | None = None) -> str:
    """Markdown table, one row per model, one column per headline metric of the tasks present.

    ``results[model][task][metric]``; with ``spread`` (same layout, e.g. standard deviations over
    seeds) cells read ``mean ± spread``.
    """
    tasks = {task for per_model in results.values() for task in per_model}
    columns = [c for c in TABLE_COLUMNS if c[0] in tasks]
    lines = ["| model | " + " | ".join(c[2] for c in columns) + " |", "|---|" + "---|" * len(columns)]
    for model, per_model in results.items():
        cells = []
        for task, key, _, fmt in columns:
            value = per_model.get(task, {}).get(key)
            if value is None or (isinstance(value, float) and not math.isfinite(value)):
                cells.append("–")
                continue
            cell = fmt.format(value)
            extra = (spread or {}).get(model, {}).get(task, {}).get(key)
            if extra is not None and math.isfinite(extra):
                cell += " ± " + fmt.format(extra)
            cells.append(cell)
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _label_palette(num_classes: int) -> np.ndarray:
    """``uint8 [K, 3]`` distinct colours: matplotlib's tab20 for up to 20 classes, a fixed random palette beyond."""
    import matplotlib

    if num_classes <= 20:
        return (np.asarray(matplotlib.colormaps["tab20"].colors)[:num_classes] * 255).round().astype(np.uint8)
    return np.random.default_rng(0).integers(40, 256, size=(num_classes, 3)).astype(np.uint8)


def _per_image_metric(task: str, item: dict, prediction: torch.Tensor, dataset) -> str:
    """The headline metric of one test image, for the figure title."""
    if task == "depth":
        truth = item["depth"].float()
        valid = (truth > 0) & (truth <= getattr(dataset, "max_depth", float("inf")))
        if not valid.any():
            return "no valid depth"
        rmse = torch.sqrt(((prediction.float() - truth)[valid] ** 2).mean())
        return f"RMSE {float(rmse):.3f} m"
    if task == "normals":
        valid = item["normal_valid"].bool()
        cosine = torch.nn.functional.cosine_similarity(prediction.float(), item["normals"].float(), dim=0).clamp(-1, 1)
        return f"mean angle {float(torch.rad2deg(torch.acos(cosine[valid])).mean()):.1f}°" if valid.any() else "no valid normals"
    truth, predicted = item["semantics"], prediction
    valid = truth != 255
    ious = []
    for label in torch.unique(torch.cat([truth[valid], predicted[valid]])).tolist():
        intersection = ((truth == label) & (predicted == label) & valid).sum()
        union = (((truth == label) | (predicted == label)) & valid).sum()
        ious.append(float(intersection) / float(union))
    accuracy = float((truth[valid] == predicted[valid]).float().mean()) if valid.any() else float("nan")
    return f"mIoU {100 * np.mean(ious):.1f}%, acc {100 * accuracy:.1f}%" if ious else "no labelled pixels"


def save_dense_figures(task: str, dataset, kept, directory: str | Path, prefix: str = "") -> list[Path]:
    """Image | ground truth | prediction, one PNG per kept test image: depth with a colour bar in metres (one scale
    for truth and prediction), surface normals with their RGB = (n + 1) / 2 key, segmentation with a legend of the
    classes shown; the image's own metric in the prediction's title."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from snd import viz

    paths = []
    for index, prediction in kept:
        item = dataset[index]
        image = viz.to_uint8_image(item["image"])
        height, width = image.shape[:2]
        figure = Figure(figsize=(3 * 3 * width / max(height, width) + 1.6, 3.2 * height / max(height, width) + 0.9))
        FigureCanvasAgg(figure)
        axes = figure.subplots(1, 3, squeeze=False)[0]
        axes[0].imshow(image)
        axes[0].set_title(f"image {index}", fontsize=9)
        metric = _per_image_metric(task, item, prediction, dataset)
        if task == "depth":
            truth = item["depth"].float()
            valid = truth > 0
            low, high = (float(truth[valid].min()), float(truth[valid].max())) if valid.any() else (0.0, 1.0)
            shown_truth = np.where(valid.numpy(), truth.numpy(), np.nan)
            # turbo reversed: near warm, far cool (as viz.colorize_depth); invalid ground truth stays white
            axes[1].imshow(shown_truth, cmap="turbo_r", vmin=low, vmax=high)
            handle = axes[2].imshow(prediction.float().numpy(), cmap="turbo_r", vmin=low, vmax=high)
            bar = figure.colorbar(handle, ax=list(axes), fraction=0.025, pad=0.02)
            bar.set_label("depth (m)", fontsize=8)
            bar.ax.tick_params(labelsize=7)
        elif task == "normals":
            axes[1].imshow(viz.colorize_normals(item["normals"], valid=item["normal_valid"]))
            axes[2].imshow(viz.colorize_normals(torch.nn.functional.normalize(prediction.float(), dim=0)))
            figure.text(0.5, 0.02, "colour = (n + 1) / 2 of the camera-frame normal: x -> red, y -> green, z -> blue; "
                        "black: no ground truth", ha="center", fontsize=7)
        else:
            truth = item["semantics"]
            names = list(getattr(dataset, "class_names", None) or [])
            num_classes = int(getattr(dataset, "num_classes", 0) or (max(int(truth[truth != 255].max(initial=0)), int(prediction.max())) + 1))
            palette = _label_palette(num_classes)
            for axis, labels in ((axes[1], truth), (axes[2], prediction)):
                labels = labels.long().numpy()
                picture = palette[np.clip(labels, 0, num_classes - 1)]
                picture[labels == 255] = 0
                axis.imshow(picture, interpolation="nearest")
            shown = sorted(set(truth[truth != 255].unique().tolist()) | set(prediction.unique().tolist()))
            handles = [Patch(color=palette[k] / 255.0, label=names[k] if k < len(names) else f"class {k}") for k in shown]
            handles.append(Patch(color="black", label="unlabelled"))
            figure.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
            figure.subplots_adjust(right=0.8)
        axes[1].set_title("ground truth", fontsize=9)
        axes[2].set_title(f"prediction: {metric}", fontsize=9)
        for axis in axes:
            axis.axis("off")
        path = Path(directory) / f"{prefix}{task}_{index:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp.png")
        figure.savefig(temporary, dpi=110, bbox_inches="tight")
        temporary.replace(path)
        paths.append(path)
    return paths


def save_pca_figure(images: torch.Tensor, patches: torch.Tensor, path: str | Path) -> Path:
    """Images beside the PCA colouring of their features (one basis shared by all rows)."""
    from snd import viz

    _, basis = viz.pca_project(patches, 3)
    pictures = viz.pca_image(patches, basis=basis, size=tuple(images.shape[-2:]))
    rows = [[viz.to_uint8_image(image), picture] for image, picture in zip(images, pictures)]
    return viz.save_image_grid(rows, path, titles=["image", "feature PCA"])


def save_match_figure(image0: torch.Tensor, image1: torch.Tensor, matches, path: str | Path,
                      threshold: float = 10.0, max_lines: int = 60) -> Path:
    """Both images side by side with match lines: green when the error is below ``threshold``
    (in downsampled pixels), red otherwise."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from snd import viz

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    left, right = viz.to_uint8_image(image0), viz.to_uint8_image(image1)
    height = max(left.shape[0], right.shape[0])
    canvas = np.zeros((height, left.shape[1] + right.shape[1], 3), dtype=np.uint8)
    canvas[: left.shape[0], : left.shape[1]] = left
    canvas[: right.shape[0], left.shape[1] :] = right
    figure, axis = plt.subplots(figsize=(8, 8 * height / canvas.shape[1] + 0.5))
    axis.imshow(canvas)
    axis.axis("off")
    errors = (matches.predicted - matches.reference).norm(dim=-1)
    up = 1.0 / matches.scale
    # An even sample over all matches (the best-scored ones tend to sit in one region).
    for k in torch.linspace(0, len(errors) - 1, min(max_lines, len(errors))).round().long().unique().tolist():
        x0, y0 = (matches.source[k] * up).tolist()
        x1, y1 = (matches.predicted[k] * up).tolist()
        colour = "lime" if errors[k] < threshold else "red"
        axis.plot([x0, x1 + left.shape[1]], [y0, y1], color=colour, linewidth=0.8)
    correct = float((errors < threshold).float().mean()) * 100 if len(errors) else float("nan")
    axis.set_title(f"{len(errors)} matches, {correct:.1f}% within {threshold:g}px, rotation {matches.rotation_degrees:.1f}°")
    temporary = path.with_name(f".{path.stem}.tmp.png")
    figure.savefig(temporary, dpi=100, bbox_inches="tight")
    plt.close(figure)
    os.replace(temporary, path)
    return path


# ------------------------------------------------------------------------- protocol tables
# Published ViT-S numbers (SnD paper via /work/shared/METHOD.md): (task, dataset) -> metric, values.
PUBLISHED_VITS = {
    ("depth", "scannetpp"): ("rmse", {"DINOv2": 0.3777, "FiT3D": 0.3506, "MEF": 0.4000, "SnD": 0.3299}),
    ("depth", "scannet"): ("rmse", {"DINOv2": 0.2817, "FiT3D": 0.2713, "MEF": 0.3042, "SnD": 0.2555}),
    ("depth", "nyuv2"): ("rmse", {"DINOv2": 0.5210, "FiT3D": 0.5075, "MEF": 0.5656, "SnD": 0.4912}),
    ("normals", "nyuv2"): ("rmse", {"DINOv2": 30.99, "FiT3D": 30.57, "MEF": 33.05, "SnD": 28.93}),
    ("segmentation", "scannetpp"): ("mean_iou", {"DINOv2": 29.54, "FiT3D": 31.77, "MEF": 27.44, "SnD": 31.78}),
    ("segmentation", "scannet"): ("mean_iou", {"DINOv2": 51.27, "FiT3D": 54.50, "MEF": 47.44, "SnD": 56.01}),
    ("segmentation", "nyuv2"): ("mean_iou", {"DINOv2": 64.73, "FiT3D": 66.33, "MEF": 63.17, "SnD": 67.50}),
}

# settings named in the table header, per task (keys of a result's "settings")
_HEADER_SETTINGS = {
    "depth": ("iterations_run", "max_iters", "batch_size", "lr_schedule", "momentum_schedule", "loss",
              "train_augmentation", "test", "valid_depth", "eval_crop", "features_final_norm", "features_padding"),
    "segmentation": ("iterations_run", "max_iters", "batch_size", "lr_schedule", "head", "loss",
                     "train_augmentation", "test", "num_classes", "features_final_norm", "features_padding"),
    "normals": ("iterations_run", "schedule_iterations", "batch_size", "crop", "features", "padding", "head", "loss",
                "zero_normals"),
    "correspondence": ("pairs_evaluated", "pairs_total", "image_mean", "scale_factor", "num_corr", "features",
                       "padding"),
}


def protocol_table(results: dict[str, dict[str, dict]], *, protocol: str, version: str, dataset: str) -> str:
    """Markdown report of a protocol run: a header naming the protocol, its version and every setting,
    the metric table, and the published ViT-S numbers for the (task, dataset) rows that exist.

    ``results[model][task]`` is a task module's result (``metrics`` and ``settings``).
    """
    lines = [f"# Evaluation: protocol `{protocol}` version {version}, dataset `{dataset}`", ""]
    if protocol == "quick":
        lines += ["**Quick protocol: NOT comparable with published numbers.**", ""]
    tasks = [task for task in ("depth", "normals", "segmentation", "correspondence")
             if any(task in per_model for per_model in results.values())]
    for task in tasks:
        settings = next(per_model[task].get("settings", {}) for per_model in results.values() if task in per_model)
        keys = _HEADER_SETTINGS.get(task) or tuple(settings)
        shown = [f"{key}={settings[key]}" for key in keys if key in settings]
        lines.append(f"- **{task}**: " + "; ".join(shown))
        run = settings.get("iterations_run", settings.get("pairs_evaluated"))
        full = settings.get("schedule_iterations", settings.get("max_iters", settings.get("pairs_total")))
        if isinstance(run, int) and isinstance(full, int) and run < full:
            unit = "pairs" if "pairs_evaluated" in settings else "iterations"
            lines.append(f"  - **smoke run: stopped after {run} of {full} {unit}; not the published protocol "
                         "length, not comparable with published numbers**")
    lines.append("")
    flat = {model: {task: result.get("metrics", result) for task, result in per_model.items()}
            for model, per_model in results.items()}
    lines.append(comparison_table(flat))
    published = [(task, PUBLISHED_VITS[(task, dataset)]) for task in tasks if (task, dataset) in PUBLISHED_VITS]
    if published:
        lines += ["Published (SnD paper, ViT-S):", "", "| task | metric | " + " | ".join(published[0][1][1]) + " |",
                  "|---|---|" + "---|" * len(published[0][1][1])]
        for task, (metric, values) in published:
            lines.append(f"| {task} ({dataset}) | {metric} | " + " | ".join(f"{v:g}" for v in values.values()) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"
