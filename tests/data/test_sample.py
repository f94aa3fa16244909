import pytest
import torch

from snd.data import MultiViewSample, Views, collate_multiview, concat_views


def make_views(views=2, height=4, width=5, **overrides):
    fields = dict(
        images=torch.rand(views, 3, height, width),
        extrinsics=torch.eye(4).repeat(views, 1, 1),
        intrinsics=torch.tensor([[1.0, 0, 0.5], [0, 1.0, 0.5], [0, 0, 1]]).repeat(views, 1, 1),
        near=torch.full((views,), 0.1),
        far=torch.full((views,), 10.0),
        masks=torch.zeros(views, height, width, dtype=torch.int64),
        depths=torch.rand(views, height, width) + 1,
    )
    fields.update(overrides)
    return Views(**fields)


def test_valid_views_and_properties():
    views = make_views(3)
    assert (views.num_views, views.height, views.width, views.is_batched) == (3, 4, 5, False)
    picked = views.select([2, 0])
    assert torch.equal(picked.images, views.images[[2, 0]])


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("images", torch.rand(2, 4, 4, 5), "Views.images"),
        ("images", torch.randint(0, 255, (2, 3, 4, 5), dtype=torch.uint8), "floating point"),
        ("images", torch.rand(2, 3, 4, 5) + 1, "[0, 1]"),
        ("extrinsics", torch.eye(4).repeat(3, 1, 1), "Views.extrinsics"),
        ("extrinsics", torch.diag(torch.tensor([1.0, 2.0, 1.0, 1.0])).repeat(2, 1, 1), "rigid"),
        ("intrinsics", torch.tensor([[500.0, 0, 16], [0, 500, 12], [0, 0, 1]]).repeat(2, 1, 1), "pixel intrinsics"),
        ("near", torch.zeros(2), "Views.near"),
        ("far", torch.full((2,), 0.05), "Views.far"),
        ("masks", torch.zeros(2, 4, 5, dtype=torch.int32), "Views.masks"),
        ("masks", torch.zeros(2, 4, 6, dtype=torch.int64), "Views.masks"),
        ("depths", -torch.ones(2, 4, 5), "Views.depths"),
        ("normals", torch.ones(2, 3, 4, 5), "unit"),
        ("semantics", torch.zeros(2, 4, 5), "Views.semantics"),
        ("frame_indices", torch.zeros(3, dtype=torch.int64), "Views.frame_indices"),
    ],
)
def test_validation_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make_views(**{field: value})


def test_collate_adds_batch_dimension_and_indexing_inverts_it():
    samples = [MultiViewSample(make_views(2), make_views(1), f"scene{i}") for i in range(3)]
    batch = collate_multiview(samples)
    assert batch.context.images.shape == (3, 2, 3, 4, 5)
    assert batch.target.depths.shape == (3, 1, 4, 5)
    assert batch.context.normals is None
    assert batch.scene == ["scene0", "scene1", "scene2"]
    assert batch.batch_size == 3 and batch.context.is_batched
    second = batch[1]
    assert second.scene == "scene1"
    assert torch.equal(second.context.images, samples[1].context.images)


def test_collate_rejects_mixed_optional_fields_and_sizes():
    with_depth = MultiViewSample(make_views(2), make_views(1), "a")
    without = MultiViewSample(make_views(2, depths=None), make_views(1), "b")
    with pytest.raises(ValueError, match="depths"):
        collate_multiview([with_depth, without])
    other_size = MultiViewSample(make_views(2, height=6), make_views(1), "c")
    with pytest.raises(ValueError, match="shapes differ"):
        collate_multiview([with_depth, other_size])


def test_sample_checks_scene_and_batching():
    with pytest.raises(ValueError, match="scene"):
        MultiViewSample(make_views(2), make_views(1), ["a"])
    batch = collate_multiview([MultiViewSample(make_views(2), make_views(1), "a")])
    with pytest.raises(ValueError, match="batched"):
        MultiViewSample(batch.context, make_views(1), "a")


def test_concat_views_along_view_axis():
    a, b = make_views(2), make_views(1)
    both = concat_views([a, b])
    assert both.num_views == 3 and torch.equal(both.images[2], b.images[0])


def test_to_casts_floats_only():
    views = make_views(2).to(torch.float64)
    assert views.extrinsics.dtype == torch.float64 and views.masks.dtype == torch.int64


def test_select_contiguous_and_out_of_range():
    views = make_views(4)
    assert torch.equal(views.select([1, 2]).images, views.images[1:3])
    assert torch.equal(views.select([-1]).depths, views.depths[3:])
    with pytest.raises(IndexError, match="out of range"):
        views.select([4])
