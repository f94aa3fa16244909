"""Students keep their class: a Dinov2WithRegistersModel stays one; plain DINOv2 becomes SnDModel (paper presets)."""

import pytest

from snd.backbones import random_backbone
from snd.distill.build import _dinov2_as_snd, load_backbone
from snd.distill.config import ModelConfig


@pytest.mark.parametrize("preset, as_snd, expected", [
    ("dinov2reg-tiny", True, "Dinov2WithRegistersModel"),
    ("dinov2-tiny", True, "SnDModel"),
    ("dinov2-tiny", False, "Dinov2Model"),
])
def test_pretrained_folder_class(tmp_path, preset, as_snd, expected):
    source = random_backbone(preset)
    source.save_pretrained(tmp_path / "source")
    student = load_backbone(ModelConfig(pretrained=str(tmp_path / "source"), dinov2_as_snd=as_snd))
    assert type(student).__name__ == expected


def test_hub_ids_convert_only_plain_dinov2():
    on, off = ModelConfig(), ModelConfig(dinov2_as_snd=False)
    assert _dinov2_as_snd(on, hub_id="facebook/dinov2-small")  # the paper presets' student
    assert not _dinov2_as_snd(on, hub_id="facebook/dinov2-with-registers-small")
    assert not _dinov2_as_snd(on, hub_id="facebook/dinov3-vits16-pretrain-lvd1689m")
    assert not _dinov2_as_snd(off, hub_id="facebook/dinov2-small")
    assert _dinov2_as_snd(on, model_type="dinov2") and not _dinov2_as_snd(on, model_type="dinov2_with_registers")
