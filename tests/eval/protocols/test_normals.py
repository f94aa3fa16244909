"""Normals under --protocol snd (Probe3D train_snorm.py): loaders, transforms, head, loss, metric, run()."""

import math
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from snd import SnDConfig, SnDModel
from snd.eval.protocols import normals
from snd.eval.protocols.data_probe3d import GeoNetNormals, NYUTestNormals, load_mat_v5
from snd.metrics import normal_metrics

from .probe3d_fixtures import GEONET_MEAN, geonet_frame, write_geonet, write_mat_v5, write_nyu_pickle


# ----------------------------------------------------------------------------------- MAT reader / loaders
@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("endian", ["<", ">"])
def test_mat_v5_reader(tmp_path, compress, endian):
    rng = np.random.default_rng(0)
    variables = {"img": rng.normal(size=(5, 7, 3)).astype(np.float32), "depth": rng.random((5, 7)),
                 "ab": np.array([[3.0, 200.0]]), "u": rng.integers(0, 255, (4, 6)).astype(np.uint8)}
    write_mat_v5(tmp_path / "a.mat", variables, compress=compress, endian=endian, stored={"ab": "u1"})
    loaded = load_mat_v5(tmp_path / "a.mat")
    for name in ("img", "depth", "u"):
        assert loaded[name].dtype == variables[name].dtype and loaded[name].shape == variables[name].shape
        np.testing.assert_array_equal(loaded[name], variables[name])
    assert loaded["ab"].dtype == np.uint8  # the stored type, as scipy.io.loadmat (mat_dtype=False)
    np.testing.assert_array_equal(loaded["ab"], [[3, 200]])


def test_mat_v5_reader_matches_scipy(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    rng = np.random.default_rng(1)
    variables = {"img": rng.normal(size=(5, 7, 3)).astype(np.float32), "norm": rng.normal(size=(5, 7, 3)),
                 "depth": rng.random((5, 7)), "ab": np.arange(5.0)[None]}
    for compress in (True, False):
        scipy_io.savemat(tmp_path / "s.mat", variables, do_compression=compress)
        ours, reference = load_mat_v5(tmp_path / "s.mat"), scipy_io.loadmat(tmp_path / "s.mat")
        for name in variables:
            assert ours[name].dtype == reference[name].dtype
            np.testing.assert_array_equal(ours[name], reference[name])


def test_mat_v5_reader_errors(tmp_path):
    (tmp_path / "short.mat").write_bytes(b"MATLAB")
    with pytest.raises(ValueError, match="short.mat"):
        load_mat_v5(tmp_path / "short.mat")
    (tmp_path / "h5.mat").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(600))
    with pytest.raises(ValueError, match="v7.3"):
        load_mat_v5(tmp_path / "h5.mat")


def test_geonet_loader(tmp_path):
    folder = write_geonet(tmp_path, count=3)
    with pytest.warns(UserWarning, match="bad-index removal"):
        dataset = GeoNetNormals(folder)
    assert dataset.files == sorted(os.listdir(folder)) and len(dataset) == 3
    with pytest.raises(ValueError, match="need the full set"):
        GeoNetNormals(folder, drop_bad_indices=True)
    item = dataset[1]
    img, depth, normal, rgb = geonet_frame(np.random.default_rng(0))
    variables = load_mat_v5(folder / dataset.files[1])
    expected_rgb = (variables["img"][:480, :640] + 2 * GEONET_MEAN.astype(np.float32)).astype(np.uint8)
    np.testing.assert_array_equal((item["image"] * 255).round().permute(1, 2, 0).numpy(), expected_rgb)
    stored_depth = variables["depth"][:480, :640]
    assert torch.equal(item["depth"][0] == 0, torch.from_numpy((stored_depth > 10) | (stored_depth == 0)))
    assert item["depth"].shape == (1, 480, 640) and item["snorm"].shape == (3, 480, 640)
    np.testing.assert_array_equal(item["snorm"].permute(1, 2, 0).numpy(), variables["norm"][:480, :640])
    write_mat_v5(folder / "zz.mat", {"img": img})
    with pytest.raises(ValueError, match="zz.mat.*'depth'"):
        GeoNetNormals(folder, drop_bad_indices=False)[3]


def test_geonet_bad_indices_are_deleted_from_the_sorted_listing(tmp_path, monkeypatch):
    assert GeoNetNormals.BAD_INDICES == (21181, 6919)  # Probe3D NYU_geonet: del insts[21181]; del insts[6919]
    monkeypatch.setattr(GeoNetNormals, "BAD_INDICES", (8, 3))  # same order of deletion, a small folder
    folder = tmp_path / "nyu_geonet"
    folder.mkdir()
    names = [f"f{i:05d}.mat" for i in range(10)]
    for name in reversed(names):
        (folder / name).touch()
    dataset = GeoNetNormals(folder)
    expected = list(names)
    del expected[8]
    del expected[3]
    assert dataset.files == expected and dataset.dropped == ("f00008.mat", "f00003.mat")


def test_nyu_test_loader(tmp_path):
    path = write_nyu_pickle(tmp_path / "nyuv2" / "nyuv2_snorm_all.pkl", count=3, test_indices=(2, 0))
    dataset = NYUTestNormals(tmp_path / "nyuv2")
    assert len(dataset) == 2
    with open(path, "rb") as handle:
        data = pickle.load(handle)
    item = dataset[0]
    assert item["nyu_index"] == 2
    torch.testing.assert_close(item["image"], torch.from_numpy(data["images"][2]).float() / 255)
    depth = data["depths"][2].copy()
    depth[depth > 10] = 0
    torch.testing.assert_close(item["depth"][0], torch.from_numpy(depth))
    torch.testing.assert_close(item["snorm"], torch.from_numpy(data["snorms"][2]))


def test_nyu_test_loader_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(tmp_path / "nyuv2_snorm_all.pkl", "wb") as handle:
        pickle.dump({"images": Evil()}, handle)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        NYUTestNormals(tmp_path)


# ----------------------------------------------------------------------------------- transforms
def test_center_crop_480():
    frame = torch.arange(3 * 480 * 640, dtype=torch.float32).reshape(3, 480, 640)
    cropped = normals.center_crop(frame)
    assert cropped.shape == (3, 480, 480)
    assert torch.equal(cropped, frame[:, :, 80:560])


def test_test_items_are_centre_cropped(tmp_path):
    write_nyu_pickle(tmp_path / "nyuv2_snorm_all.pkl", count=2, test_indices=(1,))
    base = NYUTestNormals(tmp_path)
    item = normals.NYUTestTransform(base)[0]
    for key in ("image", "depth", "snorm"):
        assert item[key].shape[-2:] == (480, 480)
        assert torch.equal(item[key], base[0][key][..., 80:560])


def test_train_transform_is_seeded_per_frame_and_epoch(tmp_path):
    write_geonet(tmp_path, count=2)
    with pytest.warns(UserWarning):
        base = GeoNetNormals(tmp_path / "nyu_geonet")
    first, again = normals.GeoNetTrainTransform(base, seed=3), normals.GeoNetTrainTransform(base, seed=3)
    item = first[1]
    assert item["image"].shape == (3, 480, 480) and item["depth"].shape == (1, 480, 480)
    torch.manual_seed(123)  # the global RNG (and so the worker count) plays no part
    assert all(torch.equal(item[k], again[1][k]) for k in item)
    draws = set()
    for epoch in range(6):
        first.set_epoch(epoch)
        draws.add(float(first[1]["image"].sum()))
    assert len(draws) > 1


def test_colour_jitter_pieces():
    red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    torch.testing.assert_close(normals.rgb_to_hsv(red).flatten(), torch.tensor([0.0, 1.0, 1.0]))
    grey = torch.full((3, 1, 1), 0.5)
    torch.testing.assert_close(normals.rgb_to_hsv(grey).flatten(), torch.tensor([0.0, 0.0, 0.5]))
    torch.testing.assert_close(normals.adjust_hue(red, 1 / 3).flatten(), torch.tensor([0.0, 1.0, 0.0]), atol=1e-5, rtol=0)
    image = torch.rand(3, 8, 9)
    torch.testing.assert_close(normals.hsv_to_rgb(normals.rgb_to_hsv(image)), image, atol=1e-5, rtol=0)
    assert torch.equal(normals.color_jitter(image, p=0.0), image)


def test_colour_jitter_restated():
    """One draw against torchvision's ColorJitter restated with the same random numbers."""
    image = torch.rand(3, 6, 7)
    generator = torch.Generator().manual_seed(3)
    out = normals.color_jitter(image, generator=torch.Generator().manual_seed(3), p=1.0)
    assert torch.rand(1, generator=generator).item() < 1.0
    order = torch.randperm(4, generator=generator).tolist()
    b, c, s = (float(torch.empty(1).uniform_(0.8, 1.2, generator=generator)) for _ in range(3))
    h = float(torch.empty(1).uniform_(-0.2, 0.2, generator=generator))
    expected = image.clone()
    for op in order:
        gray = 0.2989 * expected[0] + 0.587 * expected[1] + 0.114 * expected[2]
        if op == 0:
            expected = (b * expected).clamp(0, 1)
        elif op == 1:
            expected = (c * expected + (1 - c) * gray.mean()).clamp(0, 1)
        elif op == 2:
            expected = (s * expected + (1 - s) * gray).clamp(0, 1)
        else:
            expected = normals.adjust_hue(expected, h)
    torch.testing.assert_close(out, expected)


def test_opencv_nearest_indices():
    # OpenCV resizeNN picks floor(x / (480 / 340)) in double precision; torch's float32 "nearest" differs here
    expected = torch.tensor([min(math.floor(x * (1.0 / (480 / 340))), 339) for x in range(480)])
    assert torch.equal(normals.nearest_indices(340, 480), expected)
    source = torch.arange(340.0).view(1, 1, 1, 340)
    assert not torch.equal(F.interpolate(source, size=(1, 480), mode="nearest").flatten().long(), expected)
    assert torch.equal(normals.nearest_indices(480, 480), torch.arange(480))


def test_random_resized_crop_is_shared_square_and_nearest():
    ys, xs = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    image = torch.stack([ys, xs, ys * 100 + xs])
    depth = (ys * 100 + xs)[None]
    for seed in range(5):
        out_image, out_depth = normals.random_resized_crop([image, depth], torch.Generator().manual_seed(seed), p=1.0)
        assert out_image.shape == image.shape and out_depth.shape == depth.shape
        assert torch.equal(out_image[2], out_depth[0])  # one crop for every tensor
        rows, cols = out_image[0][:, 0], out_image[1][0]
        side = int(rows.max() - rows.min() + 1)
        assert int(cols.max() - cols.min() + 1) == side  # ratio 1
        assert round(math.sqrt(0.5) * 48) - 1 <= side <= 48  # scale 0.5 .. 1
        top, left = int(rows.min()), int(cols.min())
        index = [top + min(math.floor(x * (1.0 / (48 / side))), side - 1) for x in range(48)]  # cv2 INTER_NEAREST
        assert torch.equal(out_image[0][:, 0], torch.tensor(index, dtype=torch.float32))
        assert torch.equal(out_image, image[:, index][:, :, [i - top + left for i in index]])
    untouched = normals.random_resized_crop([image], torch.Generator().manual_seed(0), p=0.0)
    assert torch.equal(untouched[0], image)


# ----------------------------------------------------------------------------------- head, loss, schedule
def test_head_four_channels_bicubic_align_corners():
    torch.manual_seed(0)
    head = normals.UncertaintyNormalsHead(8)
    features = torch.randn(2, 8, 3, 5)
    out = head(features, size=(30, 41))
    assert out.shape == (2, 4, 30, 41)
    # Restatement: a 1x1 conv commutes with the (linear, per-channel) interpolations.
    conv = F.conv2d(features, head.conv.weight, head.conv.bias)
    upsampled = F.interpolate(conv, scale_factor=4, mode="bilinear", align_corners=False)  # [2, 4, 12, 20]
    torch.testing.assert_close(head(features), upsampled, atol=1e-5, rtol=1e-5)
    # align_corners=True keeps the corner values of the x4 map exactly.
    for y, x in ((0, 0), (-1, -1), (0, -1), (-1, 0)):
        torch.testing.assert_close(out[..., y, x], upsampled[..., y, x], atol=1e-5, rtol=1e-5)
    assert normals.UncertaintyNormalsHead(8, uncertainty_aware=False)(features, size=(7, 7)).shape == (2, 3, 7, 7)


def _loss_restated(normal, kappa_logit, gt, eps=1e-4):
    """Bae et al. / Probe3D angular_loss for one pixel, in plain Python."""
    dot = sum(a * b for a, b in zip(normal, gt))
    norms = math.sqrt(sum(a * a for a in normal)) * math.sqrt(sum(b * b for b in gt))
    cosine = dot / max(norms, 1e-8)
    angle = math.acos(min(max(cosine, -1 + eps), 1 - eps))
    kappa = (kappa_logit if kappa_logit > 0 else math.exp(kappa_logit) - 1) + 1.01
    return math.log(1 + math.exp(-kappa * math.pi)) - math.log(1 + kappa ** 2) + kappa * angle


def test_uncertainty_loss_closed_form():
    pixels = [  # (normal, kappa logit, ground truth, in mask)
        ((1.0, 0.0, 0.0), 0.5, (1.0, 0.0, 0.0), True),  # angle 0 (clamped to acos(1 - 1e-4))
        ((0.0, 2.0, 0.0), -1.5, (1.0, 0.0, 0.0), True),  # 90 degrees, negative kappa logit (elu branch)
        ((1.0, 1.0, 0.0), 3.0, (0.0, 0.0, 1.0), True),
        ((0.3, -0.2, 0.9), 0.0, (0.0, 0.0, 0.0), True),  # zero-length ground truth: cos 0 -> pi / 2
        ((1.0, 0.0, 0.0), 1.0, (-1.0, 0.0, 0.0), False),  # outside the mask
    ]
    prediction = torch.tensor([[*n, k] for n, k, _, _ in pixels]).T.reshape(1, 4, 1, 5)
    target = torch.tensor([g for _, _, g, _ in pixels]).T.reshape(1, 3, 1, 5)
    mask = torch.tensor([m for *_, m in pixels]).reshape(1, 1, 1, 5)
    expected = np.mean([_loss_restated(n, k, g) for n, k, g, m in pixels if m])
    loss = normals.uncertainty_angular_loss(prediction.double(), target.double(), mask)
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    plain = normals.uncertainty_angular_loss(prediction[:, :3], target, mask, uncertainty_aware=False)
    assert plain.item() == pytest.approx(np.mean([math.acos(min(max(c, -1 + 1e-4), 1 - 1e-4))
                                                  for c in (1.0, 0.0, 0.0, 0.0)]), rel=1e-5)
    with pytest.raises(ValueError, match="4 channels"):
        normals.uncertainty_angular_loss(prediction[:, :3], target, mask)


def test_probe3d_schedule_values():
    total, warmup = 100, 15.0
    assert normals.lr_factor(0, total, warmup) == pytest.approx(0.01)
    assert normals.lr_factor(7.5, total, warmup) == pytest.approx(0.99 * 0.5 + 0.01)
    assert normals.lr_factor(15, total, warmup) == pytest.approx(1.0)
    assert normals.lr_factor(57.5, total, warmup) == pytest.approx(0.99 * math.cos(math.pi / 4) + 0.01)
    assert normals.lr_factor(100, total, warmup) == pytest.approx(0.01)


# ----------------------------------------------------------------------------------- metric
def _probe3d_metric(prediction, target, valid):
    """Probe3D evaluate_surface_norm restated in torch: per image, then the mean over images."""
    cosine = torch.cosine_similarity(prediction, target, dim=1).clamp(-1, 1)
    error = torch.acos(cosine) * 180 / math.pi * valid
    count = valid.sum(dim=(1, 2)).clamp(min=1)
    rmse = ((error ** 2).sum(dim=(1, 2)) / count).sqrt()
    within = [((error < t).float() * valid).sum(dim=(1, 2)) / count for t in (11.25, 22.5, 30)]
    return rmse.mean().item(), [100 * w.mean().item() for w in within]


def test_zero_normals_count_as_90_degrees():
    prediction = np.array([[[[1.0, 1.0, 1.0, 1.0]], [[0.0, 0.0, 0.0, 1.0]], [[0.0, 0.0, 0.0, 0.0]]]])  # [1, 3, 1, 4]
    reference = np.array([[[[1.0, 1.0, 0.0, 1.0]], [[0.0, 0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0, 0.0]]]])
    counted = normal_metrics(prediction, reference, zero_normals="count_90")  # errors 0, 0, 90, 45
    assert counted["rmse"] == pytest.approx(math.sqrt((90 ** 2 + 45 ** 2) / 4))
    assert counted["within_11.25"] == pytest.approx(50.0)
    excluded = normal_metrics(prediction, reference)  # errors 0, 0, 45
    assert excluded["rmse"] == pytest.approx(math.sqrt(45 ** 2 / 3))
    with pytest.raises(ValueError, match="zero_normals"):
        normal_metrics(prediction, reference, zero_normals="ignore")


def test_count_90_matches_probe3d_formula():
    rng = np.random.default_rng(0)
    prediction = rng.normal(size=(3, 3, 6, 7))
    target = rng.normal(size=(3, 3, 6, 7))
    target[:, :, 2:4, 1:5] = 0
    valid = rng.random((3, 6, 7)) > 0.3
    rmse, within = _probe3d_metric(torch.from_numpy(prediction), torch.from_numpy(target), torch.from_numpy(valid).double())
    ours = normal_metrics(prediction, target, valid=valid, zero_normals="count_90")
    assert ours["rmse"] == pytest.approx(rmse, rel=1e-9)
    for key, value in zip(("within_11.25", "within_22.5", "within_30"), within):
        assert ours[key] == pytest.approx(value, rel=1e-9)


# ----------------------------------------------------------------------------------- run()
def test_run_end_to_end(tmp_path):
    write_geonet(tmp_path / "data", count=3)
    write_nyu_pickle(tmp_path / "data" / "nyuv2" / "nyuv2_snorm_all.pkl", count=3, test_indices=(2, 0))
    model = SnDModel(SnDConfig.from_preset("tiny")).eval()
    seen = []
    model.register_forward_pre_hook(lambda m, a, k: seen.append(tuple(k["pixel_values"].shape)), with_kwargs=True)
    with pytest.warns(UserWarning, match="not the full GeoNet set"):
        result = normals.run(model, tmp_path / "data", dataset="nyuv2", max_iters=2, output_dir=tmp_path / "out",
                             device="cpu", batch_size=2, progress=False)
    settings = result["settings"]
    assert settings["iterations_run"] == 2 and settings["steps_per_epoch"] == 2 and settings["schedule_iterations"] == 20
    assert settings["batch_size"] == 2 and settings["zero_normals"] == "count_90" and not settings["full_schedule"]
    assert seen[1] == (2, 3, 490, 490)  # 480 x 480 centre crop, zero-padded to 35 x 35 patches
    metrics = result["metrics"]
    assert metrics["num_images"] == 2 and result["iterations_run"] == 2
    assert 0 <= metrics["within_11.25"] <= metrics["within_30"] <= 100 and 0 < metrics["rmse"] <= 180
    assert np.isfinite(result["final_train_loss"])
    assert (tmp_path / "out" / "normals_snd.json").is_file()
    from safetensors import safe_open

    with safe_open(str(tmp_path / "out" / "normals_probe.safetensors"), "pt") as stored:
        assert tuple(stored.get_tensor("conv.weight").shape) == (4, 32, 1, 1)
        assert '"zero_normals": "count_90"' in stored.metadata()["settings"]
    with pytest.raises(ValueError, match="nyuv2"):
        normals.run(model, tmp_path / "data", dataset="scannetpp", max_iters=1, output_dir=None, device="cpu")
    with pytest.raises(FileNotFoundError, match="nyu_geonet"):
        normals.run(model, tmp_path / "out", dataset="nyuv2", max_iters=1, output_dir=None, device="cpu")


def test_evaluate_probe_aggregation():
    """Per image, then the mean over images; Probe3D scores an image without valid depth as all-zero."""
    target = torch.zeros(2, 3, 4, 4)
    target[:, 2] = 1.0
    target[0, :, 0, :] = 0  # 4 of 16 pixels with zero-length ground truth
    depth = torch.ones(2, 1, 4, 4)
    depth[1] = 0  # the second image has no valid pixel

    class Extractor:
        def __call__(self, images):
            return type("Batch", (), {"patches": torch.zeros(len(images), 1, 1, 1)})()

    class Head(torch.nn.Module):
        def forward(self, features, size):
            return torch.tensor([0.0, 0.0, 1.0, 0.0]).view(1, 4, 1, 1).expand(len(features), 4, *size)

    loader = [{"image": torch.zeros(2, 3, 4, 4), "depth": depth, "snorm": target}]
    counted = normals.evaluate_probe(Extractor(), Head(), loader, "cpu")
    assert counted["num_images"] == 2
    assert counted["rmse"] == pytest.approx(math.sqrt(4 / 16 * 90 ** 2) / 2)  # (image rmse + 0) / 2
    assert counted["within_11.25"] == pytest.approx(75.0 / 2)
    excluded = normals.evaluate_probe(Extractor(), Head(), loader, "cpu", zero_normals="exclude")
    assert excluded["num_images"] == 1 and excluded["rmse"] == pytest.approx(0.0, abs=1e-6)
    assert excluded["within_11.25"] == pytest.approx(100.0)
