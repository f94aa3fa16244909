"""The nano pretraining: its 2D geometry and losses against brute-force restatements, the script on a tiny setting,
and the shipped nano-2d folder (loads offline, reproduces its fingerprint and SHA-256)."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch
import torch.nn.functional as F

from snd.pretrain.nano import (
    NanoPretrainConfig,
    crop_images,
    dense_contrastive_loss,
    feature_fingerprint,
    learning_rate,
    patch_correspondence,
    soft_patch_targets,
)


def _crop_point(box, u, v):
    """Image position (x, y in [0, 1]) of crop coordinates (u, v), restated from the crop definition."""
    x0, y0, width, height, flip = box.tolist()
    if flip > 0:
        u = 1 - u
    return x0 + u * width, y0 + v * height


def test_patch_correspondence_matches_a_per_patch_restatement():
    boxes_a = torch.tensor([[0.1, 0.2, 0.6, 0.5, 0.0], [0.0, 0.0, 1.0, 1.0, 1.0]])
    boxes_b = torch.tensor([[0.2, 0.1, 0.7, 0.8, 1.0], [0.25, 0.3, 0.5, 0.5, 0.0]])
    grid = 4
    positions, inside = patch_correspondence(boxes_a, boxes_b, grid)
    for image in range(2):
        for row in range(grid):
            for col in range(grid):
                x, y = _crop_point(boxes_a[image], (col + 0.5) / grid, (row + 0.5) / grid)
                x0, y0, width, height, flip = boxes_b[image].tolist()
                u, v = (x - x0) / width, (y - y0) / height
                if flip > 0:
                    u = 1 - u
                k = row * grid + col
                assert bool(inside[image, k]) == (0 <= u <= 1 and 0 <= v <= 1)
                assert positions[image, k].tolist() == pytest.approx([u * grid - 0.5, v * grid - 0.5], abs=1e-5)


def test_identical_crops_correspond_patch_to_patch_and_targets_are_one_hot():
    boxes = torch.tensor([[0.1, 0.1, 0.5, 0.5, 1.0]])
    positions, inside = patch_correspondence(boxes, boxes, 3)
    assert inside.all()
    expected = torch.stack(torch.meshgrid(torch.arange(3.0), torch.arange(3.0), indexing="ij")[::-1], -1).reshape(9, 2)
    torch.testing.assert_close(positions[0], expected)
    targets = soft_patch_targets(positions, inside, 3)  # [1, 9, 9]
    torch.testing.assert_close(targets[0], torch.eye(9))


def test_soft_targets_are_the_bilinear_weights_of_the_four_neighbours():
    positions = torch.tensor([[[0.25, 1.5], [2.0, 0.0], [1.0, 1.0]]])  # (col, row) in patch units, grid 3
    inside = torch.tensor([[True, True, False]])
    targets = soft_patch_targets(positions, inside, 3)[0]  # [3, 9]
    expected = torch.zeros(3, 9)
    expected[0, 1 * 3 + 0] = 0.75 * 0.5
    expected[0, 1 * 3 + 1] = 0.25 * 0.5
    expected[0, 2 * 3 + 0] = 0.75 * 0.5
    expected[0, 2 * 3 + 1] = 0.25 * 0.5
    expected[1, 0 * 3 + 2] = 1.0
    torch.testing.assert_close(targets, expected)  # the third query lies outside crop b: no target


def test_dense_contrastive_loss_equals_a_per_query_cross_entropy():
    torch.manual_seed(0)
    queries = F.normalize(torch.randn(2, 4, 8), dim=-1)
    keys = F.normalize(torch.randn(2, 4, 8), dim=-1)
    targets = torch.rand(2, 4, 8) * (torch.rand(2, 4, 8) < 0.4)
    targets[0, 1] = 0  # a query with no target is ignored
    keep = torch.tensor([True, True, False, True, True, True, True, True])
    loss = dense_contrastive_loss(queries, keys, targets, 0.2, keep)
    flat_keys = keys.reshape(-1, 8)
    terms = []
    for index in range(8):
        b, q = divmod(index, 4)
        weights = targets[b, q]
        if not keep[index] or weights.sum() == 0:
            continue
        logits = flat_keys @ queries[b, q] / 0.2
        probabilities = logits.softmax(0)
        terms.append(-(weights / weights.sum() * probabilities.log()).sum())
    torch.testing.assert_close(loss, torch.stack(terms).mean())


def test_crop_of_the_whole_image_at_its_own_size_is_the_image():
    images = torch.rand(2, 3, 8, 8)
    whole = torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0, 1.0]])
    crops = crop_images(images, whole, 8)
    torch.testing.assert_close(crops[0], images[0])
    torch.testing.assert_close(crops[1], images[1].flip(-1))


def test_learning_rate_warms_up_then_follows_the_cosine():
    config = NanoPretrainConfig(steps=100, warmup_fraction=0.1, lr=1.0, num_scenes=1)
    assert learning_rate(0, config) == pytest.approx(0.1)
    assert learning_rate(9, config) == pytest.approx(1.0)
    assert learning_rate(10, config) == pytest.approx(1.0)
    assert learning_rate(55, config) == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert learning_rate(100, config) == pytest.approx(0.0, abs=1e-12)


def test_bad_settings_are_refused_with_the_field_named():
    with pytest.raises(ValueError, match="batch_size"):
        NanoPretrainConfig(batch_size=1)
    with pytest.raises(ValueError, match="image_size"):
        NanoPretrainConfig(image_size=60, patch_size=8)


def test_pretrain_script_runs_two_steps_and_writes_a_loadable_model(tmp_path):
    import snd  # noqa: F401
    from transformers import AutoModel

    from tests.script_main import script_module

    main = script_module("pretrain_nano").main
    output = tmp_path / "nano"
    assert main(["--output-dir", str(output), "--steps", "2", "--num-scenes", "2", "--frames-per-scene", "2",
                 "--batch-size", "4", "--hidden-size", "32", "--num-hidden-layers", "1", "--num-attention-heads", "2",
                 "--image-size", "32", "--render-size", "40", "--no-progress", "--log-every", "1"]) == 0
    log = [json.loads(line) for line in (output / "pretrain_log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in log] == [0, 1] and all(math.isfinite(r["loss"]) for r in log)
    model = AutoModel.from_pretrained(output)
    assert model.config.patch_size == 8 and model.config.hidden_size == 32
    assert feature_fingerprint(model) == json.loads((output / "fingerprint.json").read_text())
    card = (output / "README.md").read_text()
    assert hashlib.sha256((output / "model.safetensors").read_bytes()).hexdigest() in card
    assert "--steps 2" in card
    with pytest.raises(FileExistsError):  # never overwrites a model
        main(["--output-dir", str(output), "--steps", "1", "--no-progress"])


# ---------------------------------------------------------------------------------------------- the shipped model


def test_shipped_nano_2d_loads_offline_and_reproduces_its_fingerprint():
    import snd
    from transformers import AutoImageProcessor, AutoModel

    folder = snd.assets.path("nano-2d")
    assert "nano-2d" in snd.assets.names()
    model = AutoModel.from_pretrained(folder)
    assert type(model).__name__ == "SnDModel" and model.config.patch_size == 8
    stored = json.loads((folder / "fingerprint.json").read_text())
    actual = feature_fingerprint(model)
    assert actual["shape"] == stored["shape"]
    assert actual["sum"] == pytest.approx(stored["sum"], rel=1e-4, abs=1e-3)
    assert actual["abs_sum"] == pytest.approx(stored["abs_sum"], rel=1e-5)
    assert actual["first"] == pytest.approx(stored["first"], abs=1e-4)
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert digest in (folder / "README.md").read_text()
    assert json.loads((folder / "pretrain_summary.json").read_text())["sha256"] == digest
    processor = AutoImageProcessor.from_pretrained(folder)
    assert processor.crop_size == {"height": 64, "width": 64}
    assert (folder / "model.safetensors").stat().st_size < 20 * 2**20


def test_model_pretrained_nano_2d_resolves_to_the_shipped_folder(tmp_path, monkeypatch):
    import snd
    from snd.distill.build import load_backbone
    from snd.distill.config import ModelConfig

    monkeypatch.chdir(tmp_path)  # no local folder named nano-2d
    backbone = load_backbone(ModelConfig(pretrained="nano-2d"))
    reference = type(backbone).from_pretrained(snd.assets.path("nano-2d"))
    for (name, a), (_, b) in zip(backbone.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(FileNotFoundError, match="ships no model"):
        snd.assets.path("nano-3d")
