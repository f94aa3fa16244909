"""Both converters refuse to replace what the user had (unless --overwrite, then atomically and keeping
permissions), and an MVSplat checkpoint with NaN weights or a non-finite forward is never saved."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest
import torch

from snd.convert.common import ConversionError
from snd.convert.mvsplat import convert_checkpoint, ours_to_official
from snd.models.mvsplat import MVSplatConfig, MVSplatModel
from tests.convert.test_convert_backbone import to_torchhub_layout, transformers_reference
from tests.models.test_mvsplat_convert import lightning_checkpoint

REPO = Path(__file__).resolve().parents[2]


def _script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    mvsplat = lightning_checkpoint(MVSplatModel(MVSplatConfig.tiny(num_depth_candidates=12)), folder / "re10k.ckpt")
    backbone = folder / "dinov2_tiny.pth"
    torch.save(to_torchhub_layout(transformers_reference(0)), backbone)
    return {
        "convert_mvsplat": ["--input", str(mvsplat)],
        "convert_checkpoint": ["--input", str(backbone), "--format", "torchhub", "--preset", "tiny"],
    }


@pytest.mark.parametrize("name", ["convert_checkpoint", "convert_mvsplat"])
def test_existing_output_is_refused_then_replaced_only_with_overwrite(inputs, tmp_path, name, capsys):
    main = _script(name)
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    assert main(inputs[name] + ["--output", str(user)]) == 2
    error = capsys.readouterr().err
    assert "mine: exists and is not empty" in error and "--overwrite" in error
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt"] and (user / "notes.txt").read_text() == "keep me"
    a_file = tmp_path / "model.bin"
    a_file.write_bytes(b"user data")
    assert main(inputs[name] + ["--output", str(a_file)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert a_file.read_bytes() == b"user data"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no hidden copies left behind"

    # an empty folder is fine and keeps normal permissions (mkdtemp's 0700 is not inherited)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(inputs[name] + ["--output", str(empty)]) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert (empty.stat().st_mode & 0o777) == (0o777 & ~umask)

    assert main(inputs[name] + ["--output", str(user), "--overwrite"]) == 0
    assert (user / "model.safetensors").is_file() and not (user / "notes.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_refusal_happens_before_converting(inputs, tmp_path, capsys):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "x").write_text("x")
    assert _script("convert_checkpoint")(["--input", str(tmp_path / "does-not-exist.pth"), "--format", "torchhub", "--output", str(user)]) == 2
    assert "not empty" in capsys.readouterr().err  # the output problem is reported, not the (later) input one


def test_mvsplat_with_nan_weights_is_not_converted(tmp_path):
    torch.manual_seed(0)
    model = MVSplatModel(MVSplatConfig.tiny(num_depth_candidates=12))
    name = next(k for k, v in model.state_dict().items() if v.is_floating_point() and v.numel() > 3)
    with torch.no_grad():
        model.state_dict()[name].view(-1)[3] = float("nan")
    path = lightning_checkpoint(model, tmp_path / "nan.ckpt")
    with pytest.raises(ConversionError, match=rf"1 tensors hold NaN/Inf.*{re.escape(ours_to_official(name))}.*nothing was saved"):
        convert_checkpoint(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_mvsplat_with_a_non_finite_forward_is_not_converted(tmp_path):
    torch.manual_seed(0)
    model = MVSplatModel(MVSplatConfig.tiny(num_depth_candidates=12))
    # finite weights that overflow float32 inside the network
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.fill_(3e38)
    path = lightning_checkpoint(model, tmp_path / "huge.ckpt")
    with pytest.raises(ConversionError, match=r"non-finite .* two-view input; nothing was saved"):
        convert_checkpoint(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
