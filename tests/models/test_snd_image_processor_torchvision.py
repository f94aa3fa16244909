"""`SnDImageProcessorTorchvision` against `SnDImageProcessor` (the PIL backend), and against transformers' own pair
for DINOv2 (`BitImageProcessor` / `BitImageProcessorPil` with DINOv2's sizes and statistics): the bar is that SnD's
two backends differ no more than transformers' do on the same inputs.

Runs only where torchvision imports. snd never depends on torchvision and the project's CI does not install it
(PyPI's torchvision does not import beside the CPU torch the project pins); `scripts/check_torchvision_backend.sh`
builds a separate venv with torch 2.14.1 + torchvision 0.29.1 (x86_64, ~5.5 GB) and runs this module plus the
common image-processor tests of tests/models/test_transformers_common.py there.

Measured there (transformers 5.25.0), inputs uint8 PIL RGB / grayscale, numpy HWC and torch CHW at 100x75 and
37x53, a batch of both, and a 720x477 photo, max |pixel_values difference| after ImageNet normalisation:

    resize (bicubic, antialiased) + crop    SnD 0.0175 (0.0350 grayscale)  | reference pair the same, to the bit
    do_resize=False, image larger than crop SnD 0 (identical)              | reference 0
    do_resize=False, image smaller than crop SnD up to 4.46                | reference the same, to the bit

0.0175 = 1 / 255 / 0.224 is one uint8 level divided by the smallest std: torchvision resizes the uint8 tensor with
the same antialiased kernel as PIL and rounds one level differently on a few pixels (mean difference ~1e-4);
0.0350 (two levels) on grayscale inputs. The last row is transformers' centre crop padding an image smaller than
the crop: where the padding is odd the PIL backend puts the extra row / column at the top / left and the
torchvision backend at the bottom / right (a one-pixel shift of the whole image). SnD keeps transformers' behaviour
there (its classes are the Bit pair's transform): those tests assert it equals the reference pair's difference.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

try:
    import torchvision  # noqa: F401
except Exception as error:  # not installed, or a wheel that does not import beside this torch
    pytest.skip(
        f"torchvision does not import here ({type(error).__name__}): SnDImageProcessorTorchvision is tested only where "
        "it does (snd does not depend on torchvision; scripts/check_torchvision_backend.sh makes such a venv)",
        allow_module_level=True,
    )

from PIL import Image  # noqa: E402
from transformers import AutoImageProcessor, BitImageProcessor, BitImageProcessorPil  # noqa: E402
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD  # noqa: E402
from transformers.modeling_outputs import DepthEstimatorOutput, SemanticSegmenterOutput  # noqa: E402

from snd import SnDImageProcessor, SnDImageProcessorTorchvision  # noqa: E402

# One uint8 level after normalisation by the smallest ImageNet std, times two (grayscale: the reference pair's own
# measured maximum is 0.0350); mean difference: measured ~1e-4 for both pairs.
LEVEL = 1 / 255 / min(IMAGENET_DEFAULT_STD)
RESIZE_MAX = 2 * LEVEL + 1e-5
RESIZE_MEAN = 1e-3
DINOV2 = {
    "size": {"shortest_edge": 256},
    "crop_size": {"height": 224, "width": 224},
    "image_mean": list(IMAGENET_DEFAULT_MEAN),
    "image_std": list(IMAGENET_DEFAULT_STD),
}


def _realish(height, width, seed, channels=3):
    """Smooth texture, hard-edged rectangles and sensor-like noise, uint8 [H, W, C]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    planes = []
    for _ in range(channels):
        v = 128 + 60 * np.sin(x / rng.uniform(3, 12) + rng.uniform(0, 6)) * np.cos(y / rng.uniform(3, 12))
        for _ in range(4):
            y0, x0 = rng.integers(0, height - 5), rng.integers(0, width - 5)
            v[y0 : y0 + rng.integers(3, height // 2), x0 : x0 + rng.integers(3, width // 2)] = rng.uniform(0, 255)
        planes.append(v + rng.normal(0, 8, size=v.shape))
    return np.clip(np.stack(planes, -1), 0, 255).round().astype(np.uint8)


def _inputs():
    cases = {}
    for height, width in ((75, 100), (53, 37), (240, 300)):
        array = _realish(height, width, seed=height)
        cases[f"pil-rgb-{width}x{height}"] = Image.fromarray(array)
        cases[f"pil-gray-{width}x{height}"] = Image.fromarray(_realish(height, width, height + 1, 1)[..., 0], mode="L")
        cases[f"numpy-hwc-{width}x{height}"] = array
        cases[f"torch-chw-{width}x{height}"] = torch.from_numpy(array).permute(2, 0, 1).contiguous()
    cases["noise-101x67"] = Image.fromarray(np.random.default_rng(0).integers(0, 256, (67, 101, 3), dtype=np.uint8))
    cases["batch-mixed-sizes"] = [cases["pil-rgb-100x75"], cases["pil-rgb-37x53"], cases["numpy-hwc-300x240"]]
    return cases


INPUTS = _inputs()


def _pixels(processor, images):
    return processor(images, return_tensors="pt").pixel_values


def _difference(pil, torchvision_processor, images):
    a, b = _pixels(pil, images), _pixels(torchvision_processor, images)
    assert a.shape == b.shape and a.dtype == b.dtype == torch.float32
    return (a - b).abs()


@pytest.mark.parametrize("name", sorted(INPUTS))
@pytest.mark.parametrize(
    "sizes",
    [{}, {"size": {"shortest_edge": 64}, "crop_size": {"height": 56, "width": 56}}],
    ids=["default-256-224", "64-56"],
)
def test_resize_and_crop_match_the_pil_backend(name, sizes):
    images = INPUTS[name]
    ours = _difference(SnDImageProcessor(**sizes), SnDImageProcessorTorchvision(**sizes), images)
    reference = _difference(BitImageProcessorPil(**{**DINOV2, **sizes}), BitImageProcessor(**{**DINOV2, **sizes}), images)
    assert ours.max().item() <= RESIZE_MAX, f"{name}: max {ours.max().item():.4f} (reference pair {reference.max().item():.4f})"
    assert ours.mean().item() <= RESIZE_MEAN
    assert ours.max().item() <= reference.max().item() + 1e-6  # no worse than transformers' own pair


@pytest.mark.parametrize("name", ["pil-rgb-300x240", "pil-gray-300x240", "numpy-hwc-300x240", "torch-chw-300x240"])
def test_without_resize_a_crop_inside_the_image_is_identical(name):
    crop = {"do_resize": False, "crop_size": {"height": 224, "width": 224}}
    assert _difference(SnDImageProcessor(**crop), SnDImageProcessorTorchvision(**crop), INPUTS[name]).max().item() <= 1e-5


@pytest.mark.parametrize("name", ["pil-rgb-100x75", "pil-gray-37x53", "torch-chw-37x53", "batch-mixed-sizes"])
def test_without_resize_a_padding_crop_differs_as_transformers_pair_does(name):
    """An image smaller than the crop is padded; odd padding goes top/left in PIL, bottom/right in torchvision."""
    images = INPUTS[name]
    ours = _difference(SnDImageProcessor(do_resize=False), SnDImageProcessorTorchvision(do_resize=False), images)
    reference = _difference(BitImageProcessorPil(**DINOV2, do_resize=False), BitImageProcessor(**DINOV2, do_resize=False), images)
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=0)


def test_same_transform_as_transformers_dinov2_processors():
    for name in ("pil-rgb-100x75", "pil-gray-37x53", "torch-chw-300x240"):
        torch.testing.assert_close(_pixels(SnDImageProcessor(), INPUTS[name]), _pixels(BitImageProcessorPil(**DINOV2), INPUTS[name]), atol=0, rtol=0)
        torch.testing.assert_close(_pixels(SnDImageProcessorTorchvision(), INPUTS[name]), _pixels(BitImageProcessor(**DINOV2), INPUTS[name]), atol=0, rtol=0)


def test_post_processing_is_the_same_on_both_backends():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 16, 16, generator=generator)
    depth = torch.rand(2, 16, 16, generator=generator)
    sizes = [(75, 100), (53, 37)]
    pil, tv = SnDImageProcessor(), SnDImageProcessorTorchvision()
    for kwargs in ({}, {"target_sizes": sizes}):
        a = pil.post_process_semantic_segmentation(SemanticSegmenterOutput(logits=logits), **kwargs)
        b = tv.post_process_semantic_segmentation(SemanticSegmenterOutput(logits=logits), **kwargs)
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)
        scored = tv.post_process_semantic_segmentation(SemanticSegmenterOutput(logits=logits), return_segmentation_scores=True, **kwargs)
        for x, y in zip(a, scored, strict=True):
            assert torch.equal(x, y["segmentation"]) and y["segmentation_scores"].shape[0] == 5
    a = pil.post_process_depth_estimation(DepthEstimatorOutput(predicted_depth=depth), target_sizes=sizes)
    b = tv.post_process_depth_estimation(DepthEstimatorOutput(predicted_depth=depth), target_sizes=sizes)
    for x, y, size in zip(a, b, sizes, strict=True):
        assert torch.equal(x["predicted_depth"], y["predicted_depth"]) and tuple(y["predicted_depth"].shape) == size


def test_a_folder_saved_from_either_backend_is_the_same_and_loads_with_either(tmp_path):
    kwargs = {"size": {"shortest_edge": 64}, "crop_size": {"height": 56, "width": 56}}
    SnDImageProcessor(**kwargs).save_pretrained(tmp_path / "pil")
    SnDImageProcessorTorchvision(**kwargs).save_pretrained(tmp_path / "tv")
    saved = {name: json.loads((tmp_path / name / "preprocessor_config.json").read_text()) for name in ("pil", "tv")}
    assert saved["tv"] == saved["pil"]
    assert saved["tv"]["image_processor_type"] == "SnDImageProcessor"
    assert saved["tv"]["auto_map"] == {"AutoImageProcessor": "image_processing_snd_dinov2.SnDImageProcessor"}
    assert sorted(os.listdir(tmp_path / "tv")) == sorted(os.listdir(tmp_path / "pil"))  # the module file for remote code
    image = INPUTS["pil-rgb-100x75"]
    expected = _pixels(SnDImageProcessor(**kwargs), image)
    for folder in ("pil", "tv"):
        for backend, cls in (("pil", SnDImageProcessor), ("torchvision", SnDImageProcessorTorchvision)):
            loaded = AutoImageProcessor.from_pretrained(tmp_path / folder, backend=backend)
            assert type(loaded) is cls
            assert (_pixels(loaded, image) - expected).abs().max().item() <= RESIZE_MAX
    # transformers' rule: with torchvision installed, no backend= means torchvision
    assert type(AutoImageProcessor.from_pretrained(tmp_path / "pil")) is SnDImageProcessorTorchvision
