import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from snd.data import SceneDataError, SyntheticMultiViewDataset, SyntheticSceneConfig, ViewSampler, collate_multiview


def test_bounds_and_targets_between_context_inclusive():
    sampler = ViewSampler(min_gap=3, max_gap=5, num_target=2, seed=1)
    gaps, targets_at_edges = set(), 0
    for index in range(400):
        context, target = sampler.sample(10, index)
        left, right = context.tolist()
        gaps.add(right - left)
        assert 0 <= left < right <= 9
        assert ((target >= left) & (target <= right)).all()
        assert len(set(target.tolist())) == 2  # distinct when possible
        targets_at_edges += int(((target == left) | (target == right)).any())
    assert gaps == {3, 4, 5}
    assert targets_at_edges > 0  # the interval is inclusive


def test_min_distance_to_context_excludes_context_frames():
    sampler = ViewSampler(min_gap=4, max_gap=4, min_distance_to_context=1)
    for index in range(100):
        context, target = sampler.sample(6, index)
        assert context[0] < target[0] < context[1]


def test_gap_is_capped_by_scene_length_and_short_scenes_raise():
    sampler = ViewSampler(min_gap=2, max_gap=50)
    for index in range(50):
        context, _ = sampler.sample(4, index)
        assert context[1] - context[0] <= 3
    with pytest.raises(SceneDataError, match=r"scene 'tiny'.*needs at least 3"):
        ViewSampler(min_gap=2, max_gap=4).sample(2, 0, scene="tiny")


def test_deterministic_in_seed_epoch_index_and_independent_of_global_rng():
    sampler = ViewSampler(seed=7)
    first = [sampler.sample(40, i) for i in range(20)]
    torch.manual_seed(123)
    np.random.seed(5)
    again = [ViewSampler(seed=7).sample(40, i) for i in reversed(range(20))][::-1]
    for (c1, t1), (c2, t2) in zip(first, again):
        assert np.array_equal(c1, c2) and np.array_equal(t1, t2)
    other_epoch = [sampler.sample(40, i, epoch=1) for i in range(20)]
    other_seed = [ViewSampler(seed=8).sample(40, i) for i in range(20)]
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other_epoch))
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other_seed))


def test_defaults_follow_the_authors_scannetpp_config():
    sampler = ViewSampler()
    assert (sampler.min_gap, sampler.max_gap, sampler.num_target, sampler.min_distance_to_context) == (8, 12, 1, 0)


def _frames(batch):
    return [(scene, c.tolist(), t.tolist()) for scene, c, t in zip(batch.scene, batch.context.frame_indices, batch.target.frame_indices)]


def test_accelerate_sharding_reproduces_single_process_samples():
    from accelerate.data_loader import prepare_data_loader

    config = SyntheticSceneConfig(num_scenes=4, num_frames=12, height=8, width=8)
    dataset = SyntheticMultiViewDataset(config, ViewSampler(min_gap=3, max_gap=6, seed=2), samples_per_scene=2)
    single = []
    for batch in DataLoader(dataset, batch_size=2, collate_fn=collate_multiview):
        single.extend(_frames(batch))
    assert len(single) == 8
    sharded = {}
    for process in range(2):
        loader = prepare_data_loader(
            DataLoader(dataset, batch_size=2, collate_fn=collate_multiview), num_processes=2, process_index=process, put_on_device=False
        )
        sharded[process] = [item for batch in loader for item in _frames(batch)]
    # Process p gets batches p, p + 2, ...: together exactly the single-process samples.
    assert sharded[0] == single[0:2] + single[4:6]
    assert sharded[1] == single[2:4] + single[6:8]


def test_dataloader_workers_give_the_same_samples_as_the_main_process():
    config = SyntheticSceneConfig(num_scenes=3, num_frames=10, height=8, width=8)
    dataset = SyntheticMultiViewDataset(config, ViewSampler(min_gap=2, max_gap=5, seed=4))
    main = [item for b in DataLoader(dataset, batch_size=1, collate_fn=collate_multiview) for item in _frames(b)]
    workers = [item for b in DataLoader(dataset, batch_size=1, collate_fn=collate_multiview, num_workers=2) for item in _frames(b)]
    assert main == workers
    dataset.set_epoch(1)
    next_epoch = [item for b in DataLoader(dataset, batch_size=1, collate_fn=collate_multiview) for item in _frames(b)]
    assert next_epoch != main
