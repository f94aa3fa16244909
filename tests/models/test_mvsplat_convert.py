"""scripts/convert_mvsplat.py and snd.convert.mvsplat on checkpoints in the official Lightning layout.

The official encoder code is not in this repo, so the fake checkpoints are written from OUR model through the
inverse key mapping (`ours_to_official`). Independent anchors on the official layout: the number of entries of
the released encoder (471, counted on the official code) and a few of its key names spelled out below.
"""

import importlib.util
from pathlib import Path

import pytest
import torch

from snd.convert.common import ConversionError
from snd.convert.mvsplat import convert_checkpoint, infer_config, load_official_checkpoint, ours_to_official
from snd.models.mvsplat import MVSplatConfig, MVSplatModel

REPO = Path(__file__).resolve().parents[2]

# Spelled out from MVSplat's module tree (BackboneMultiview / DepthPredictorMultiView / UNetModel).
OFFICIAL_KEYS_SAMPLE = [
    "encoder.backbone.backbone.conv1.weight",
    "encoder.backbone.backbone.layer2.0.downsample.0.weight",
    "encoder.backbone.backbone.layer3.0.downsample.0.bias",
    "encoder.backbone.transformer.layers.5.cross_attn_ffn.mlp.2.weight",
    "encoder.backbone.transformer.layers.0.self_attn.norm1.bias",
    "encoder.depth_predictor.corr_refine_net.3.input_blocks.5.1.qkv.weight",
    "encoder.depth_predictor.corr_refine_net.3.middle_block.2.out_layers.1.weight",
    "encoder.depth_predictor.corr_refine_net.3.output_blocks.1.2.conv.weight",
    "encoder.depth_predictor.refine_unet.3.input_blocks.9.1.proj_out.weight",
    "encoder.depth_predictor.refine_unet.3.out.1.bias",
    "encoder.depth_predictor.regressor_residual.weight",
    "encoder.depth_predictor.to_disparity.2.bias",
    "encoder.depth_predictor.upsampler.0.weight",
]


ARCHITECTURE_FIELDS = (
    "feature_channels",
    "num_transformer_layers",
    "ffn_dim_expansion",
    "num_depth_candidates",
    "costvolume_unet_feat_dim",
    "costvolume_unet_channel_mult",
    "costvolume_unet_attn_res",
    "depth_unet_feat_dim",
    "depth_unet_channel_mult",
    "depth_unet_attn_res",
    "sh_degree",
)


def lightning_checkpoint(model: MVSplatModel, path: Path, drop: str | None = None, extra: dict | None = None) -> Path:
    """Write `model` as MVSplat's Lightning trainer would: `state_dict` with `encoder.` keys plus non-encoder entries."""
    state = {ours_to_official(key): value.clone() for key, value in model.state_dict().items()}
    if drop:
        del state[drop]
    state["losses.1.lpips.net.lin0.model.1.weight"] = torch.randn(1, 64, 1, 1)  # LPIPS loss: not encoder, ignored
    state.update(extra or {})
    checkpoint = {
        "epoch": 3,
        "global_step": 300001,
        "pytorch-lightning_version": "2.1.2",
        "state_dict": state,
        "loops": {"fit_loop": {"epoch_progress": {"total": {"ready": 3, "completed": 3}}}},
        "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(0.5), "best_model_path": "epoch=3.ckpt"}},
        "optimizer_states": [],
        "lr_schedulers": [],
    }
    torch.save(checkpoint, path)
    return path


def outputs(model: MVSplatModel):
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(1, 2, 3, 16, 24, generator=generator)
    extrinsics = torch.eye(4).repeat(1, 2, 1, 1)
    extrinsics[0, 1, 0, 3] = 0.3
    intrinsics = torch.tensor([[0.8, 0.0, 0.5], [0.0, 1.2, 0.5], [0.0, 0.0, 1.0]]).repeat(1, 2, 1, 1)
    with torch.no_grad():
        return model.eval()(images, extrinsics, intrinsics, torch.ones(1, 2), torch.full((1, 2), 50.0))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return MVSplatModel(MVSplatConfig.tiny(num_depth_candidates=12)).eval()


def test_released_layout_has_the_official_key_names():
    official = {ours_to_official(key) for key in MVSplatModel(MVSplatConfig()).state_dict()}
    assert len(official) == 471
    missing = [key for key in OFFICIAL_KEYS_SAMPLE if key not in official]
    assert not missing, missing


def test_infer_config_recovers_the_architecture(tiny):
    for config in (tiny.config, MVSplatConfig()):
        state = {ours_to_official(key): value for key, value in MVSplatModel(config).state_dict().items()}
        inferred = infer_config(state)
        for name in ARCHITECTURE_FIELDS:
            assert getattr(inferred, name) == getattr(config, name), name


def test_script_converts_every_key_and_reproduces_the_model(tiny, tmp_path):
    path = lightning_checkpoint(tiny, tmp_path / "re10k.ckpt")
    spec = importlib.util.spec_from_file_location("convert_mvsplat", REPO / "scripts" / "convert_mvsplat.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--input", str(path), "--output", str(tmp_path / "converted")]) == 0
    assert (tmp_path / "converted" / "model.safetensors").is_file()
    converted = MVSplatModel.from_pretrained(tmp_path / "converted")
    expected, actual = outputs(tiny), outputs(converted)
    for name in ("means", "covariances", "opacities", "harmonics"):
        torch.testing.assert_close(getattr(actual, name), getattr(expected, name), rtol=0, atol=0)


def test_missing_unexpected_and_mismatched_keys_are_listed(tiny, tmp_path):
    dropped = "encoder.depth_predictor.refine_unet.3.out.1.bias"
    with pytest.raises(ConversionError, match=r"missing \(1\): encoder\.depth_predictor\.refine_unet\.3\.out\.1\.bias"):
        convert_checkpoint(lightning_checkpoint(tiny, tmp_path / "a.ckpt", drop=dropped), tmp_path / "a")
    # A key the architecture is read from is named too.
    dropped = "encoder.depth_predictor.to_gaussians.2.weight"
    with pytest.raises(ConversionError, match=r"lacks the encoder key 'encoder\.depth_predictor\.to_gaussians\.2\.weight'"):
        convert_checkpoint(lightning_checkpoint(tiny, tmp_path / "a2.ckpt", drop=dropped), tmp_path / "a")
    extra = {"encoder.depth_predictor.not_a_layer.weight": torch.zeros(3)}
    with pytest.raises(ConversionError, match=r"unexpected \(1\): encoder\.depth_predictor\.not_a_layer\.weight"):
        convert_checkpoint(lightning_checkpoint(tiny, tmp_path / "b.ckpt", extra=extra), tmp_path / "b")
    wrong = {"encoder.depth_predictor.regressor_residual.bias": torch.zeros(5)}
    with pytest.raises(ConversionError, match=r"shape mismatch \(1\): encoder\.depth_predictor\.regressor_residual\.bias"):
        convert_checkpoint(lightning_checkpoint(tiny, tmp_path / "c.ckpt", extra=wrong), tmp_path / "c")
    # Nothing half-written on failure.
    assert not any((tmp_path / name).exists() for name in ("a", "b", "c"))


class _ConfigObject:
    """Stands in for a pickled non-tensor object (e.g. a saved config) inside a checkpoint."""

    def __init__(self):
        self.lr = 1e-4


class _Payload:
    """Pickles as a call to `Path.touch(marker)`: a stand-in for code a malicious checkpoint would run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_non_tensor_pickles_load_without_running_code(tiny, tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "with_object.ckpt"
    state = {ours_to_official(k): v for k, v in tiny.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": _ConfigObject(), "payload": _Payload(marker)}, path)
    with pytest.raises(Exception):  # the weights-only loader refuses this file on its own
        torch.load(path, weights_only=True)
    loaded = load_official_checkpoint(path)
    assert not marker.exists()  # the pickled call was never made
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)


def test_not_an_mvsplat_checkpoint(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"model.weight": torch.zeros(2)}}, path)
    with pytest.raises(ConversionError, match="no 'encoder"):
        load_official_checkpoint(path)
    with pytest.raises(ConversionError, match="no such checkpoint"):
        load_official_checkpoint(tmp_path / "absent.ckpt")
