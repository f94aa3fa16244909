"""Export SnD models with dynamic batch, height and width: `torch.export` programs and ONNX files with named outputs.

Any SnD model class works (`SnDModel`, `SnDBackbone`, `SnDForDepthEstimation`, `SnDForSemanticSegmentation`): the
outputs are the fields of its `ModelOutput` (`last_hidden_state`, `pooler_output`, `patch_features`; `feature_maps.0`,
...; `predicted_depth`; `logits`), in that order and under those names.

Example:
    ```python
    >>> import snd
    >>> from snd.models.export import export_onnx
    >>> model = snd.SnDModel(snd.SnDConfig.tiny()).eval()
    >>> export_onnx(model, "snd.onnx")          # inputs: pixel_values [batch, 3, height, width]
    ```
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class _NamedOutputs(nn.Module):
    """`model(pixel_values)` as a flat tuple of tensors, in the order of `names`."""

    def __init__(self, model: nn.Module, names: list[str]):
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(_flatten_outputs(self.model(pixel_values, return_dict=True)).values())


def _flatten_outputs(outputs) -> dict[str, torch.Tensor]:
    flat = {}
    for key, value in outputs.items():
        if isinstance(value, torch.Tensor):
            flat[key] = value
        elif isinstance(value, (tuple, list)):  # e.g. backbone feature maps
            for index, item in enumerate(value):
                flat[f"{key}.{index}"] = item
    return flat


def _example_and_names(model: nn.Module, example_pixel_values: torch.Tensor | None) -> tuple[torch.Tensor, list[str]]:
    patch = model.config.patch_size
    if example_pixel_values is None:
        # batch 2 and a non-square, non-native grid: sizes 0/1 and the native grid would be specialised by the tracer
        example_pixel_values = torch.randn(2, model.config.num_channels, 3 * patch, 5 * patch)
    if example_pixel_values.ndim != 4 or example_pixel_values.shape[0] < 2 or min(example_pixel_values.shape[-2:]) < 2 * patch:
        raise ValueError(
            f"export: example_pixel_values must be [B >= 2, C, H, W] with H, W >= {2 * patch} (dynamic dimensions of "
            f"size 0 or 1 are specialised by torch.export), got {tuple(example_pixel_values.shape)}"
        )
    device = next(model.parameters()).device
    example_pixel_values = example_pixel_values.to(device)
    with torch.no_grad():
        names = list(_flatten_outputs(model(example_pixel_values, return_dict=True)))
    return example_pixel_values, names


def _dynamic_shapes(model: nn.Module, max_side: int):
    patch = model.config.patch_size
    batch = torch.export.Dim("batch", min=1, max=1024)
    rows = torch.export.Dim("patch_rows", min=2, max=max_side // patch)
    columns = torch.export.Dim("patch_columns", min=2, max=max_side // patch)
    return {"pixel_values": {0: batch, 2: patch * rows, 3: patch * columns}}


def export_program(
    model: nn.Module,
    example_pixel_values: torch.Tensor | None = None,
    max_side: int = 4096,
) -> tuple[torch.export.ExportedProgram, list[str]]:
    """`torch.export` of `model` (in eval mode) with a dynamic batch size and dynamic height and width (multiples of
    the patch size, from 2 patches to `max_side` pixels). Returns the program and the names of its outputs.

    Args:
        model: an SnD model (`config.patch_size` is read).
        example_pixel_values: `[B, 3, H, W]` traced input (default `randn(2, 3, 3 * 14, 5 * 14)`).
        max_side: largest height or width, in pixels, the program accepts.
    """
    model = model.eval()
    example, names = _example_and_names(model, example_pixel_values)
    program = torch.export.export(_NamedOutputs(model, names).eval(), (example,), dynamic_shapes=_dynamic_shapes(model, max_side))
    return program, names


def export_onnx(
    model: nn.Module,
    path: str | Path,
    example_pixel_values: torch.Tensor | None = None,
    max_side: int = 4096,
    opset_version: int = 18,
) -> Path:
    """Write `model` as an ONNX file with input `pixel_values [batch, 3, height, width]` (all three dynamic) and outputs
    named after its `ModelOutput` fields (see the module docstring). Needs `onnx` and `onnxscript`
    (`pip install onnx onnxscript`); check the file with `onnxruntime`."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ImportError("export_onnx needs the `onnx` and `onnxscript` packages: pip install onnx onnxscript") from error
    model = model.eval()
    example, names = _example_and_names(model, example_pixel_values)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        _NamedOutputs(model, names).eval(),
        (example,),
        str(path),
        input_names=["pixel_values"],
        output_names=names,
        dynamic_shapes=_dynamic_shapes(model, max_side),
        opset_version=opset_version,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    return path


__all__ = ["export_program", "export_onnx"]
