"""What a transformers user reaches for on the SnD backbone: gradient checkpointing, attention implementations,
output_attentions, AutoBackbone on a folder, pipelines without a remote-code prompt, dynamic-shape export, and the
depth / segmentation task models (tiny configs)."""

from __future__ import annotations

import builtins
import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoBackbone, AutoModelForDepthEstimation, AutoModelForSemanticSegmentation, pipeline

import snd
from snd import SnDBackbone, SnDConfig, SnDForDepthEstimation, SnDForSemanticSegmentation, SnDImageProcessor, SnDModel


def _loss(model, pixels):
    out = model(pixels)
    maps = out.feature_maps if hasattr(out, "feature_maps") else (out.patch_features,)
    return sum(m.square().mean() for m in maps)


@pytest.mark.parametrize("cls", [SnDModel, SnDBackbone])
def test_gradient_checkpointing_gives_the_same_gradients(cls):
    model = cls(SnDConfig.tiny(num_register_tokens=4)).train()
    pixels = torch.randn(2, 3, 42, 56)
    _loss(model, pixels).backward()
    plain = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    calls = []
    hook = model.encoder.layer[0].mlp.register_forward_hook(lambda *args: calls.append(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # transformers 5.25's name: no deprecation warning
        model.activation_checkpointing_enable()
        assert model.is_activation_checkpointing
    _loss(model, pixels).backward()
    hook.remove()
    assert len(calls) == 2  # the block ran again in the backward pass: it really was checkpointed
    checkpointed = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert checkpointed.keys() == plain.keys() and len(plain) > 10
    for name, grad in plain.items():
        assert torch.allclose(checkpointed[name], grad, atol=1e-6, rtol=1e-5), name
    model.activation_checkpointing_disable()
    assert not any(layer.gradient_checkpointing for layer in model.encoder.layer)


def _reference_attention(model, pixels):
    """Softmax(q k^T / sqrt(d)) of every block, recomputed by hand from the block inputs."""
    hidden = model(pixels, output_hidden_states=True).hidden_states
    probabilities = []
    for layer, block_input in zip(model.encoder.layer, hidden[:-1]):
        x = layer.norm1(block_input)
        batch, tokens, channels = x.shape
        heads = model.config.num_attention_heads
        q, k, _ = layer.attention.qkv(x).reshape(batch, tokens, 3, heads, channels // heads).permute(2, 0, 3, 1, 4)
        probabilities.append(torch.softmax(q @ k.transpose(-1, -2) / (channels // heads) ** 0.5, dim=-1))
    return probabilities


def test_attention_implementations_and_output_attentions(tmp_path, monkeypatch):
    SnDModel(SnDConfig.tiny(num_register_tokens=4)).save_pretrained(tmp_path)
    pixels = torch.randn(2, 3, 42, 56)
    sdpa = SnDModel.from_pretrained(tmp_path).eval()
    assert sdpa.config._attn_implementation == "sdpa"
    eager = SnDModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert eager.config._attn_implementation == "eager"

    calls = []
    real_sdpa = F.scaled_dot_product_attention

    def counting_sdpa(*args, **kwargs):
        calls.append(1)
        return real_sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting_sdpa)
    with torch.no_grad():
        out_sdpa = sdpa(pixels)
        assert len(calls) == 2 and out_sdpa.attentions is None  # one SDPA call per block
        out_eager = eager(pixels, output_attentions=True)
        assert len(calls) == 2  # eager never calls SDPA
        reference = _reference_attention(eager, pixels)
        # sdpa asked for attentions computes that call eagerly (with a warning) instead of dropping them
        out_sdpa_attn = sdpa(pixels, output_attentions=True)
    assert torch.allclose(out_eager.patch_features, out_sdpa.patch_features, atol=1e-5)
    assert len(out_eager.attentions) == 2
    for got, got_sdpa, want in zip(out_eager.attentions, out_sdpa_attn.attentions, reference):
        assert got.shape == (2, 2, 1 + 4 + 12, 1 + 4 + 12)
        assert torch.allclose(got, want, atol=1e-5) and torch.allclose(got_sdpa, want, atol=1e-5)
    # the backbone returns them too, and the implementation can be switched at run time
    backbone = SnDBackbone.from_pretrained(tmp_path, attn_implementation="eager").eval()
    with torch.no_grad():
        assert len(backbone(pixels, output_attentions=True).attentions) == 2
    sdpa.set_attn_implementation("eager")
    assert sdpa.config._attn_implementation == "eager"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flash_attention_2 needs CUDA and flash-attn")
def test_flash_attention_2_matches_sdpa(tmp_path):
    pytest.importorskip("flash_attn")
    SnDModel(SnDConfig.tiny()).save_pretrained(tmp_path)
    pixels = torch.randn(2, 3, 42, 56, device="cuda", dtype=torch.bfloat16)
    flash = SnDModel.from_pretrained(tmp_path, attn_implementation="flash_attention_2", dtype=torch.bfloat16).cuda()
    plain = SnDModel.from_pretrained(tmp_path, dtype=torch.bfloat16).cuda()
    with torch.no_grad():
        assert torch.allclose(flash(pixels).patch_features, plain(pixels).patch_features, atol=3e-2)


def test_auto_backbone_from_an_absolute_folder_offline(tmp_path):
    model = SnDModel(SnDConfig.tiny()).eval()
    model.save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoBackbone"] == "modeling_snd_dinov2.SnDBackbone"
    assert auto_map["AutoModel"] == "modeling_snd_dinov2.SnDModel"
    backbone = AutoBackbone.from_pretrained(str(tmp_path.resolve()), out_indices=[1, 2]).eval()
    assert isinstance(backbone, SnDBackbone) and backbone.out_indices == [1, 2]
    pixels = torch.randn(1, 3, 42, 56)
    with torch.no_grad():
        assert torch.allclose(backbone(pixels).feature_maps[-1], model(pixels).patch_features, atol=1e-6)


def _image(height=60, width=90, seed=0):
    return Image.fromarray((np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8))


def test_pipelines_never_prompt_for_remote_code(tmp_path, monkeypatch):
    prompts = []
    monkeypatch.setattr(builtins, "input", lambda *args: prompts.append(args) or "n")
    SnDModel(SnDConfig.tiny()).save_pretrained(tmp_path)
    SnDImageProcessor(do_center_crop=False, size={"height": 56, "width": 84}).save_pretrained(tmp_path)
    features = pipeline("image-feature-extraction", model=str(tmp_path))
    assert np.asarray(features(_image())).shape == (1, 1 + 4 * 6, 32)
    assert prompts == []


def test_depth_and_segmentation_models_in_pipelines(tmp_path, monkeypatch):
    prompts = []
    monkeypatch.setattr(builtins, "input", lambda *args: prompts.append(args) or "n")
    processor = SnDImageProcessor(do_center_crop=False, size={"height": 56, "width": 84})
    depth_model = SnDForDepthEstimation(SnDConfig.tiny(depth_max=5.0, depth_num_bins=16)).eval()
    depth_model.save_pretrained(tmp_path / "depth")
    processor.save_pretrained(tmp_path / "depth")
    labels = {0: "wall", 1: "floor", 2: "chair"}
    segmentation_model = SnDForSemanticSegmentation(SnDConfig.tiny(id2label=labels)).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, which must survive the round trip
        segmentation_model.head.norm.running_mean.normal_()
        segmentation_model.head.norm.running_var.uniform_(0.5, 2.0)
    segmentation_model.save_pretrained(tmp_path / "segmentation")
    processor.save_pretrained(tmp_path / "segmentation")
    assert json.loads((tmp_path / "depth" / "config.json").read_text())["auto_map"]["AutoModelForDepthEstimation"] == (
        "modeling_snd_dinov2.SnDForDepthEstimation"
    )

    image = _image()
    pixels = processor(image, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 56, 84)
    # depth: the head is the probe's formula, restated here
    loaded = AutoModelForDepthEstimation.from_pretrained(tmp_path / "depth").eval()
    assert isinstance(loaded, SnDForDepthEstimation)
    with torch.no_grad():
        predicted = loaded(pixels).predicted_depth
        base = loaded.snd(pixels)
        features = torch.cat([base.patch_features, base.pooler_output[:, :, None, None].expand_as(base.patch_features)], 1)
        scores = torch.relu(loaded.head.conv(F.interpolate(features, scale_factor=4, mode="bilinear"))) + 0.1
        expected = (scores / scores.sum(1, keepdim=True) * torch.linspace(1e-3, 5.0, 16)[:, None, None]).sum(1)
        expected = F.interpolate(expected[:, None], size=(56, 84), mode="bilinear")[:, 0]
    assert predicted.shape == (1, 56, 84) and torch.allclose(predicted, expected, atol=1e-5)
    assert 1e-3 <= predicted.min() and predicted.max() <= 5.0
    depth_pipeline = pipeline("depth-estimation", model=str(tmp_path / "depth"))
    depth = depth_pipeline(image)
    assert tuple(depth["predicted_depth"].shape) == (60, 90) and depth["depth"].size == (90, 60)
    # the pipeline's own processor: AutoImageProcessor's pick, SnDImageProcessorTorchvision where torchvision is
    # installed (its pixels differ from the PIL backend's by a uint8 level here and there)
    with torch.no_grad():
        predicted = loaded(depth_pipeline.image_processor(image, return_tensors="pt")["pixel_values"]).predicted_depth
    resized = F.interpolate(predicted[:, None], size=(60, 90), mode="bilinear")[0, 0]
    assert torch.allclose(depth["predicted_depth"], resized, atol=1e-5)

    # segmentation: BatchNorm (running statistics) + 1x1 conv, upsampled; the pipeline's masks are its argmax
    loaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path / "segmentation").eval()
    assert isinstance(loaded, SnDForSemanticSegmentation)
    with torch.no_grad():
        logits = loaded(pixels).logits
        patches = loaded.snd(pixels).patch_features
        norm = segmentation_model.head.norm
        normed = (patches - norm.running_mean[:, None, None]) / torch.sqrt(norm.running_var[:, None, None] + norm.eps)
        expected = F.interpolate(loaded.head.conv(normed), size=(56, 84), mode="bilinear")
    assert logits.shape == (1, 3, 56, 84) and torch.allclose(logits, expected, atol=1e-5)
    from transformers.testing_utils import CaptureLogger
    from transformers.utils import logging as transformers_logging

    with CaptureLogger(transformers_logging.get_logger("transformers.pipelines.base")) as log:
        segmenter = pipeline("image-segmentation", model=str(tmp_path / "segmentation"))
    assert "not supported" not in log.out, log.out  # the pipeline knows SnDForSemanticSegmentation
    segments = segmenter(image)
    with torch.no_grad():
        pipeline_logits = loaded(segmenter.image_processor(image, return_tensors="pt")["pixel_values"]).logits
    classes = F.interpolate(pipeline_logits, size=(60, 90), mode="bilinear")[0].argmax(0)
    for segment in segments:
        label_id = {v: k for k, v in labels.items()}[segment["label"]]
        assert np.array_equal(np.asarray(segment["mask"]) > 0, (classes == label_id).numpy())
    assert {s["label"] for s in segments} == {labels[int(i)] for i in classes.unique()}
    assert prompts == []

    # labels give the probes' losses
    out = loaded(pixels, labels=torch.full((1, 56, 84), 255).index_fill_(2, torch.tensor([0]), 1))
    assert torch.allclose(out.loss, F.cross_entropy(logits[..., :1], torch.ones(1, 56, 1, dtype=torch.long)), atol=1e-5)


def test_dynamic_shape_torch_export(tmp_path):
    from snd.models.export import export_program

    model = SnDModel(SnDConfig.tiny(num_register_tokens=4)).eval()
    program, names = export_program(model)
    assert names == ["last_hidden_state", "pooler_output", "patch_features"]
    for batch, height, width in [(1, 42, 56), (3, 56, 84), (2, 56, 56), (1, 28, 126)]:  # 56 x 56 is the native grid
        pixels = torch.randn(batch, 3, height, width)
        with torch.no_grad():
            expected = model(pixels)
        got = program.module()(pixels)
        for name, value in zip(names, got):
            assert value.shape == expected[name].shape
            assert torch.allclose(value, expected[name], atol=1e-5), (name, height, width)


@pytest.mark.slow
def test_onnx_export_has_named_outputs_and_dynamic_axes(tmp_path):
    pytest.importorskip("onnxscript")
    onnxruntime = pytest.importorskip("onnxruntime")
    from snd.models.export import export_onnx

    model = SnDModel(SnDConfig.tiny(num_register_tokens=4)).eval()
    names = ["last_hidden_state", "pooler_output", "patch_features"]
    path = export_onnx(model, tmp_path / "snd.onnx")
    session = onnxruntime.InferenceSession(str(path))
    assert [o.name for o in session.get_outputs()] == names
    assert session.get_inputs()[0].name == "pixel_values"
    assert isinstance(session.get_inputs()[0].shape[0], str)  # dynamic batch
    for batch, height, width in [(1, 42, 56), (2, 56, 98)]:
        pixels = torch.randn(batch, 3, height, width)
        with torch.no_grad():
            expected = model(pixels)
        for name, value in zip(names, session.run(None, {"pixel_values": pixels.numpy()})):
            assert np.allclose(value, expected[name].numpy(), atol=1e-4), name


@pytest.mark.slow
def test_task_models_export_with_dynamic_shapes():
    from snd.models.export import export_program

    for cls, name in ((SnDForDepthEstimation, "predicted_depth"), (SnDForSemanticSegmentation, "logits")):
        model = cls(SnDConfig.tiny(depth_num_bins=8, id2label={0: "a", 1: "b"})).eval()
        program, names = export_program(model)
        assert names == [name]
        for height, width in [(42, 56), (56, 84)]:
            pixels = torch.randn(2, 3, height, width)
            with torch.no_grad():
                expected = model(pixels)[name]
            assert torch.allclose(program.module()(pixels)[0], expected, atol=1e-5)


# What transformers' common tests (tests/models/test_transformers_common.py) found, checked here too, where their
# mixins may be unavailable (offline, no cached sdist).


@pytest.mark.parametrize("cls", [SnDModel, SnDBackbone, SnDForDepthEstimation, SnDForSemanticSegmentation])
def test_input_embeddings_meta_device_and_peft_input_grads(cls):
    config = SnDConfig.tiny()
    with torch.device("meta"):  # how transformers builds a model before loading weights
        assert cls(config).get_input_embeddings().projection.weight.is_meta
    model = cls(config)
    assert model.get_input_embeddings() is model.base_model.embeddings.patch_embeddings
    model.enable_input_require_grads()  # PEFT + gradient checkpointing hook the input embeddings' output
    model.activation_checkpointing_enable()
    out = model(torch.randn(1, 3, 28, 28))
    first = out[0][0] if isinstance(out[0], tuple) else out[0]
    assert first.requires_grad


def test_segmentation_head_batchnorm_counter_is_reset_by_init_weights():
    model = SnDForSemanticSegmentation(SnDConfig.tiny(num_labels=3))
    model.head.norm.num_batches_tracked.fill_(7)
    model._init_weights(model.head.norm)
    assert model.head.norm.num_batches_tracked.item() == 0


def test_backbone_type_and_hidden_states_from_the_config():
    from transformers.backbone_utils import BackboneType

    model = SnDBackbone(SnDConfig.tiny(out_indices=[1, 2], output_hidden_states=True)).eval()
    assert model.backbone_type == BackboneType.TRANSFORMERS
    out = model(torch.randn(1, 3, 28, 28))
    assert len(out.hidden_states) == 3 and len(out.feature_maps) == 2
    assert model(torch.randn(1, 3, 28, 28), output_hidden_states=False).hidden_states is None


def test_post_process_semantic_segmentation_scores():
    logits = torch.randn(2, 3, 4, 5)
    processor = SnDImageProcessor()
    maps = processor.post_process_semantic_segmentation({"logits": logits}, target_sizes=[(8, 10), (4, 5)])
    scored = processor.post_process_semantic_segmentation(
        {"logits": logits}, target_sizes=[(8, 10), (4, 5)], return_segmentation_scores=True
    )
    assert [m.shape for m in maps] == [(8, 10), (4, 5)]
    for plain, result in zip(maps, scored):
        assert torch.equal(result.segmentation, plain)
        assert result.segmentation_scores.shape == (3, *plain.shape)
        assert torch.equal(result.segmentation_scores.argmax(0), plain)


def test_torchvision_image_processor_backend_only_where_torchvision_is_installed():
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING
    from transformers.utils import is_torchvision_available

    backends = IMAGE_PROCESSOR_MAPPING[SnDConfig]
    assert backends["pil"] is SnDImageProcessor
    if is_torchvision_available():
        assert backends["torchvision"] is snd.SnDImageProcessorTorchvision
    else:
        assert "torchvision" not in backends
        with pytest.raises(ImportError, match="torchvision"):
            snd.SnDImageProcessorTorchvision()


@pytest.mark.parametrize("first", ["BitImageProcessorPil", "BitImageProcessor"])
def test_image_processor_registered_when_a_bit_processor_is_imported_first(first):
    """Importing a Bit processor after snd runs Bit's `@auto_docstring`, which imports transformers' auto modules and
    so snd's registration hook while Bit is half-defined: SnD's processors must not derive from Bit (they did, and
    the circular import left SnDConfig out of AutoImageProcessor's mapping, with or without torchvision)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    script = (
        "import snd\n"
        f"from transformers import {first}\n"
        "from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING\n"
        "assert IMAGE_PROCESSOR_MAPPING[snd.SnDConfig]['pil'] is snd.SnDImageProcessor\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "callback after importing" not in done.stderr, done.stderr[-3000:]
