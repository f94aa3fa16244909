"""Truncated, corrupt or hostile files raise errors that name the file and what is wrong; size fields in a
pickle are checked against the file size before anything is allocated; unclear errors became clear."""

from __future__ import annotations

import struct

import pytest
import torch
from safetensors.torch import save_file

from snd import SnDConfig
from snd.convert import ConversionError, convert_backbone
from snd.convert.common import read_torch_checkpoint
from snd.convert.layouts import transformers_layout
from snd.distill.build import load_backbone
from snd.distill.config import ModelConfig


class _StorageBomb:
    """Pickles to ``torch.UntypedStorage(2**40)``: a constructor call that allocates a terabyte when run."""

    def __reduce__(self):
        return (torch.UntypedStorage, (2**40,))


def test_stride_zero_tensor_asking_for_terabytes_is_refused_before_allocating(tmp_path):
    path = tmp_path / "re10k.ckpt"
    torch.save({"state_dict": {"encoder.w": torch.zeros(1).expand(2**40)}}, path)  # a 1.6 kB file
    with pytest.raises(ConversionError, match=r"re10k\.ckpt.*shape \(1099511627776,\).*larger than the whole file.*before allocating"):
        read_torch_checkpoint(path)


def test_storage_constructor_in_a_pickle_is_refused(tmp_path):
    path = tmp_path / "model.pth"
    torch.save({"model": {"w": torch.zeros(3)}, "args": _StorageBomb()}, path)
    with pytest.raises(ConversionError, match=r"model\.pth.*UntypedStorage\(1099511627776,\).*allocate"):
        read_torch_checkpoint(path)


def test_storage_size_field_larger_than_the_file_is_refused(tmp_path):
    import zipfile

    path = tmp_path / "model.pth"
    torch.save({"w": torch.arange(6.0)}, path)
    # rewrite the persistent id's element count (6 -> 2**40) inside data.pkl, keeping the archive valid
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    name = next(n for n in entries if n.endswith("data.pkl"))
    assert b"K\x06" in entries[name]
    entries[name] = entries[name].replace(b"K\x06", b"\x8a\x06\x00\x00\x00\x00\x00\x01", 1)  # BININT1 6 -> LONG1 2**40
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for entry, data in entries.items():
            archive.writestr(entry, data)
    with pytest.raises(ConversionError, match=r"model\.pth.*claims 1099511627776 elements.*more than the file holds"):
        read_torch_checkpoint(path)


@pytest.mark.parametrize("damage", ["truncated", "header_bomb"])
def test_corrupt_safetensors_input_names_the_file(tmp_path, damage):
    path = tmp_path / "vit_small.safetensors"
    save_file({"w": torch.zeros(64, 64)}, str(path))
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:  # a header length of 2**60 bytes
        path.write_bytes(struct.pack("<Q", 2**60) + data[8:])
    with pytest.raises(ConversionError, match=r"vit_small\.safetensors: corrupt or truncated safetensors"):
        convert_backbone(str(path), "timm")


def test_corrupt_config_json_in_a_model_folder_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "dinov2", ')
    save_file({"w": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ConversionError, match=r"config\.json: not valid JSON"):
        convert_backbone(str(tmp_path), "transformers")


@pytest.mark.parametrize("field, value", [("patch_size", 0), ("num_attention_heads", 0), ("hidden_size", -8), ("num_hidden_layers", -1)])
def test_zero_and_negative_sizes_name_the_field(field, value):
    with pytest.raises(ValueError, match=rf"SnDConfig\.{field} must be a positive integer, got {value}"):
        SnDConfig.tiny(**{field: value})


def test_misshapen_transformers_projection_lists_the_shapes():
    prefix = "encoder.layer.0.attention.attention"
    state = {f"{prefix}.query.weight": torch.zeros(8, 8), f"{prefix}.key.weight": torch.zeros(8, 8), f"{prefix}.value.weight": torch.zeros(6, 8)}
    with pytest.raises(ConversionError, match=r"layer 0 attention.*weight have different shapes \{.*'v': \(6, 8\)"):
        transformers_layout(state)


def test_pretrained_path_that_does_not_exist_says_so(tmp_path):
    missing = tmp_path / "nonexistent"
    with pytest.raises(FileNotFoundError, match=r"model\.pretrained=.*nonexistent.*no such file or directory"):
        load_backbone(ModelConfig(pretrained=str(missing)))


def test_corrupt_checkpoint_marker_names_the_file(tmp_path):
    from snd.distill.checkpoints import CheckpointError, read_checkpoint_metadata

    (tmp_path / "snd_checkpoint.json").write_text('{"step": 3, "fi')
    with pytest.raises(CheckpointError, match=r"snd_checkpoint\.json: corrupt checkpoint marker"):
        read_checkpoint_metadata(tmp_path)


def test_lifter_checkpoint_that_does_not_exist_or_holds_nan_says_so(tmp_path):
    from snd.distill.build import build_lifter
    from snd.distill.config import LifterConfig
    from snd.models.mvsplat import MVSplatConfig, MVSplatModel
    from tests.models.test_mvsplat_convert import lightning_checkpoint

    with pytest.raises(FileNotFoundError, match=r"lifter\.checkpoint=.*missing\.ckpt.*no such file"):
        build_lifter(LifterConfig(kind="mvsplat", checkpoint=str(tmp_path / "missing.ckpt")))
    model = MVSplatModel(MVSplatConfig.tiny(num_depth_candidates=12))
    name = next(k for k, v in model.state_dict().items() if v.is_floating_point())
    with torch.no_grad():
        model.state_dict()[name].view(-1)[0] = float("nan")
    path = lightning_checkpoint(model, tmp_path / "nan.ckpt")
    with pytest.raises(ConversionError, match=r"nan\.ckpt: 1 tensors hold NaN/Inf"):
        build_lifter(LifterConfig(kind="mvsplat", checkpoint=str(path)))
