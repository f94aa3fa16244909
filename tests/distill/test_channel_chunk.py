"""The teacher path in channel chunks (``teacher.channel_chunk``) equals the unchunked path: upsampling, splatting,
blending and downsampling are linear per channel, and the holes come from the same render."""

from __future__ import annotations

import pytest
import torch

from snd.data import collate_multiview
from snd.distill.build import PreloadedScenes, build_dataset
from snd.distill.config import DataConfig, DistillConfig, load_config
from snd.distill.teacher import EMATeacher, SplatTeacher, auto_channel_chunk, feature_map_bytes_per_channel
from snd.lifting import DepthLifter
from snd.models.snd_dinov2 import SnDConfig, SnDModel


def _batch():
    data = DataConfig(dataset="synthetic", image_height=32, image_width=40, num_scenes=1, num_frames=12, min_gap=4, max_gap=8)
    return collate_multiview([PreloadedScenes(build_dataset(data, seed=0, load_depth=True))[0]])


@pytest.mark.parametrize("target,holes,upsample", [("splat", "alpha", "mask_aware"), ("splat", "rgb", "bilinear"),
                                                   ("same_view", "alpha", "mask_aware")])
def test_channel_chunks_equal_the_unchunked_teacher_path(target, holes, upsample):
    torch.manual_seed(0)
    teacher = EMATeacher(SnDModel(SnDConfig.tiny(patch_size=8, image_size=32)))
    batch = _batch()

    def run(chunk):
        splat = SplatTeacher(teacher, DepthLifter(footprint_scale=0.5), patch_size=8, blend_alpha=0.5, target=target, holes=holes,
                             upsample_mode=upsample, render_backend="torch", channel_chunk=chunk)
        return splat(batch.context, batch.target, grid_size=(4, 5))

    whole = run(None)  # auto: 32 channels of 32 x 40 maps fit 2 GiB, one chunk
    channels = whole.features.shape[2]
    assert channels % 5 != 0
    chunked = run(5)  # 7 chunks, the last of 2 channels
    assert whole.holes.any() and not whole.holes.all()
    assert torch.equal(chunked.holes, whole.holes) and torch.equal(chunked.valid, whole.valid)
    assert (chunked.features - whole.features).abs().max() <= 1e-6
    assert whole.features.abs().max() > 0.1


def test_auto_channel_chunk_follows_the_budget():
    context, target = 2 * 2 * 518 * 518, 2 * 518 * 518
    per_channel = feature_map_bytes_per_channel(context, target)
    assert per_channel == 4 * (2 * context + 3 * target)
    assert auto_channel_chunk(1536, context, target, budget_bytes=2 * 2**30) == (2 * 2**30) // per_channel == 142
    assert auto_channel_chunk(384, 4 * 32 * 40, 2 * 32 * 40) == 384  # fits: every channel at once
    assert auto_channel_chunk(384, context, target, budget_bytes=1) == 1


def test_channel_chunk_config():
    config = load_config(overrides=["teacher.channel_chunk=64", "teacher.feature_budget_gib=0.5"])
    assert config.teacher.channel_chunk == 64 and config.teacher.feature_budget_gib == 0.5
    splat = SplatTeacher.from_config(EMATeacher(SnDModel(SnDConfig.tiny())), DepthLifter(), 14, config.teacher)
    assert splat.channel_chunk == 64 and splat.feature_budget_bytes == 2**29
    assert DistillConfig().teacher.channel_chunk is None
    with pytest.raises(ValueError, match="teacher.channel_chunk"):
        load_config(overrides=["teacher.channel_chunk=0"]).validate()
