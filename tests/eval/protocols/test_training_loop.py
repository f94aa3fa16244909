"""Training-loop plumbing: shuffled epochs with drop_last, worker-independent augmentation, periodic evaluation."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from snd.eval.protocols import depth as depth_protocol
from snd.eval.protocols.common import EpochSampler, sample_plan, training_batches

from .fixtures import tiny_backbone, write_nyuv2


def test_epoch_sampler_is_shuffled_epochs_with_drop_last():
    sampler = EpochSampler(5, 2, np.random.default_rng(0))
    batches = [sampler.next() for _ in range(4)]  # two batches per epoch, one item dropped each epoch
    for epoch in (batches[:2], batches[2:]):
        seen = [i for batch in epoch for i in batch]
        assert len(set(seen)) == 4 and set(seen) <= set(range(5))
    assert sampler.epoch == 2


class _Items(torch.utils.data.Dataset):
    def __len__(self):
        return 3

    def __getitem__(self, index):
        return {"value": torch.tensor(float(index))}


def _noisy(item, rng):
    return item["value"] + torch.tensor(rng.random())


def test_augmentation_does_not_depend_on_the_number_of_workers():
    plan = sample_plan(3, 2, 4, seed=7)
    assert plan.shape == (4, 2, 2)
    serial = [batch.clone() for batch in training_batches(_Items(), plan, _noisy, num_workers=0)]
    parallel = [batch.clone() for batch in training_batches(_Items(), plan, _noisy, num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel)) and len(serial) == 4
    assert torch.equal(torch.stack(serial).floor().long(), torch.from_numpy(plan[..., 0]))


@pytest.mark.slow
def test_periodic_evaluation_like_the_official_eval_hook(tmp_path):
    data_dir = write_nyuv2(tmp_path / "nyuv2")
    protocol = replace(depth_protocol.DepthProtocol(), eval_interval=2)
    result = depth_protocol.run(tiny_backbone(), data_dir, dataset="nyuv2", max_iters=3, device="cpu",
                                protocol=protocol)
    assert [entry["iteration"] for entry in result["evaluations"]] == [2, 3]  # every 2 and at the end
    assert result["metrics"] == result["evaluations"][-1]["metrics"]
    assert result["best"]["metrics"]["abs_rel"] == min(e["metrics"]["abs_rel"] for e in result["evaluations"])
    assert result["settings"]["eval_interval"] == 2 and result["iterations_run"] == 3


def test_interpolation_warning_for_transformers_dinov2():
    import snd
    from snd.eval.protocols import interpolation_warning

    assert "torch.hub" in interpolation_warning(tiny_backbone(), "dinov2-small")
    assert interpolation_warning(snd.SnDModel(snd.SnDConfig.tiny()), "snd") is None
