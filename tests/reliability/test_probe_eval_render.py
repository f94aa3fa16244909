"""Regressions of the hostile-input probe's eval_data / render / metrics families (tests/hostile/cases/eval_render.py):
each input was accepted silently or refused with a raw library message before; now it is refused naming the file or
the field and what was expected (or, for the valid edge cases, accepted)."""

from __future__ import annotations

import importlib.util
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from snd.eval.datasets import NYUv2Dataset, ScanNetPairsDataset, ScanNetPPSegmentationDataset, SyntheticEvalConfig
from snd.eval.protocols.data import segmentation_datasets
from snd.eval.protocols.data_probe3d import GeoNetNormals, NYUTestNormals, ScanNetPairsProbe3D
from snd.eval.runner import EvaluationConfig
from snd.metrics import correspondence_metrics, depth_metrics, normal_metrics, segmentation_metrics
from snd.splatting import render_features
from tests.eval.protocols.probe3d_fixtures import write_geonet, write_mat_v5, write_scannet_pairs

REPO = Path(__file__).resolve().parents[2]
NYU = "nyuv2_snorm_all.pkl"


# ------------------------------------------------------------------------------------------------ NYU pickles
def _nyu(tmp_path, protocol=4, **changes):
    rng = np.random.default_rng(0)
    data = {"images": rng.integers(0, 255, (2, 3, 8, 8), dtype=np.uint8), "depths": np.full((2, 8, 8), 2.0, np.float32),
            "snorms": np.ones((2, 3, 8, 8), np.float32), "train_indices": np.array([1]), "test_indices": np.array([0])}
    data.update(changes)
    path = tmp_path / NYU
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    return path


def test_nyu_pickle_protocol_5_loads(tmp_path):
    dataset = NYUv2Dataset(_nyu(tmp_path, protocol=5), split="test")
    assert dataset[0]["image"].shape == (3, 8, 8)


@pytest.mark.parametrize("change, message", [
    ({"images": np.ones((2, 3, 8, 8), np.float32)}, r"'images' is float32; expected uint8"),
    ({"depths": np.ones((2, 4, 4), np.float32)}, r"'depths' has shape \(2, 4, 4\); expected \(2, 8, 8\)"),
    ({"snorms": np.ones((2, 2, 8, 8), np.float32)}, r"'snorms' has shape"),
    ({"test_indices": np.array([-1])}, r"'test_indices' holds \[-1\], outside \[0, 2\)"),
    ({"test_indices": np.array([], np.int64)}, r"'test_indices' is empty"),
    ({"test_indices": np.array([0.5])}, r"'test_indices' is float64; expected integer"),
])
def test_nyu_pickle_arrays_are_checked(tmp_path, change, message):
    path = _nyu(tmp_path, **change)
    for reader in (lambda: NYUv2Dataset(path, split="test"), lambda: NYUTestNormals(path)):
        with pytest.raises(ValueError, match=rf"{NYU}: {message}"):
            reader()


def test_nyu_item_with_nan_or_negative_depth_is_refused(tmp_path):
    depths = np.full((2, 8, 8), 2.0, np.float32)
    depths[0, 3, 4] = np.nan
    path = _nyu(tmp_path, depths=depths)
    for dataset in (NYUv2Dataset(path, split="test"), NYUTestNormals(path)):
        with pytest.raises(ValueError, match=rf"{NYU}: 'depths'\[0\] holds nan at pixel \(3, 4\)"):
            dataset[0]
    depths[0, 3, 4] = -1.0
    with pytest.raises(ValueError, match=r"'depths'\[0\] holds -1\.0"):
        NYUv2Dataset(_nyu(tmp_path, depths=depths), split="test")[0]


def test_nyu_labels_out_of_range_are_refused(tmp_path):
    path = _nyu(tmp_path, labels=np.full((2, 8, 8), 200, np.int64))
    with pytest.raises(ValueError, match=rf"{NYU}: 'labels'\[0\] ranges 200\.\.200; expected NYU-40 ids 0\.\.40"):
        NYUv2Dataset(path, split="test")[0]
    NYUv2Dataset(_nyu(tmp_path, labels=np.full((2, 8, 8), 40, np.int64)), split="test")[0]


# ------------------------------------------------------------------------------------------------ GeoNet .mat
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_geonet_fifo_is_refused_not_skipped(tmp_path):
    folder = write_geonet(tmp_path, count=2)
    first = sorted(folder.iterdir())[0]
    first.unlink()
    os.mkfifo(first)
    dataset = GeoNetNormals(folder, drop_bad_indices=False)
    assert len(dataset) == 2  # listed, so reading it names it (it used to be skipped silently)
    with pytest.raises(ValueError, match=rf"{first.name}: is a named pipe"):
        dataset[0]


def test_geonet_non_finite_normals_are_refused(tmp_path):
    folder = write_geonet(tmp_path, count=1)
    path = sorted(folder.iterdir())[0]
    norm = np.ones((482, 644, 3), np.float32)
    norm[5, 6, 1] = np.nan
    write_mat_v5(path, {"img": np.zeros((482, 644, 3), np.float32), "depth": np.ones((482, 644), np.float32), "norm": norm})
    with pytest.raises(ValueError, match=rf"{path.name}: variable 'norm' holds a non-finite value at \(5, 6, 1\)"):
        GeoNetNormals(folder, drop_bad_indices=False)[0]


# ------------------------------------------------------------------------------------------------ ScanNet pairs
@pytest.fixture(scope="module")
def pairs_fixture(tmp_path_factory):
    return write_scannet_pairs(tmp_path_factory.mktemp("pairs") / "pairs")


@pytest.fixture()
def pairs(pairs_fixture, tmp_path):
    return Path(shutil.copytree(pairs_fixture, tmp_path / "pairs"))


@pytest.mark.parametrize("name, message", [
    (np.zeros((0, 4), np.int64), r"'name' lists no pair"),
    (np.array([["a", "b", "c", "d"]]), r"'name' is <U1; expected integers"),
    (np.array([[707, 0, -15, 30]]), r"'name' row 0 holds a negative id"),
])
def test_pairs_index_is_checked(pairs, name, message):
    np.savez(pairs / "test.npz", name=name)
    for reader in (ScanNetPairsDataset, ScanNetPairsProbe3D):
        with pytest.raises(ValueError, match=rf"test\.npz: {message}"):
            reader(pairs)


@pytest.mark.parametrize("scale", [3.0, 0.0])
def test_non_rigid_pose_is_refused(pairs, scale):
    path = pairs / "scene0707_00" / "pose" / "15.txt"
    pose = np.loadtxt(path)
    pose[:3, :3] *= scale
    np.savetxt(path, pose)
    for reader in (ScanNetPairsDataset, ScanNetPairsProbe3D):
        with pytest.raises(ValueError, match=r"15\.txt is not a rigid camera-to-world transform"):
            reader(pairs)[0]


def test_depth_of_another_size_than_the_frames_is_refused(pairs):
    path = pairs / "scene0707_00" / "depth" / "15.png"
    Image.fromarray(np.asarray(Image.open(path))[:240, :320].copy()).save(path)
    for reader in (ScanNetPairsDataset, ScanNetPairsProbe3D):
        with pytest.raises(ValueError, match=r"15\.png: depth map is 320 x 240 pixels; expected 640 x 480"):
            reader(pairs)[0]


# ------------------------------------------------------------------------------------------------ label maps
def test_segmentation_labels_out_of_range_are_refused(tmp_path):
    base = tmp_path / "data_sem"
    for images, labels in (("nyu_train_rgb", "nyuv2_train_class13"), ("nyu_test_rgb", "nyuv2_test_class13")):
        (base / images).mkdir(parents=True)
        (base / labels).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(base / images / "0000.png")
        Image.fromarray(np.full((8, 8), 13, np.uint8)).save(base / labels / "0000.png")
    train, _, _ = segmentation_datasets("nyuv2", tmp_path, test_set="full")
    assert int(train[0]["labels"].max()) == 12
    Image.fromarray(np.full((8, 8), 40, np.uint8)).save(base / "nyuv2_train_class13" / "0000.png")
    train, _, _ = segmentation_datasets("nyuv2", tmp_path, test_set="full")
    with pytest.raises(ValueError, match=r"0000\.png: label map holds \[40\] \(64 pixels\); expected 0 \(unlabelled\), 1\.\.13"):
        train[0]


def test_scannetpp_labels_out_of_range_are_refused(tmp_path):
    (tmp_path / "images" / "training").mkdir(parents=True)
    (tmp_path / "annotations" / "training").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "training" / "a.JPG")
    Image.fromarray(np.full((8, 8), 180, np.uint8)).save(tmp_path / "annotations" / "training" / "a.png")
    with pytest.raises(ValueError, match=r"a\.png: label map holds \[180\]"):
        ScanNetPPSegmentationDataset(tmp_path, "train")[0]


# ------------------------------------------------------------------------------------------------ renderer, lifter
def _scene():
    count = 4
    means = torch.zeros(count, 3)
    means[:, 2] = 3.0
    return dict(means=means, quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(count, 1), scales=torch.full((count, 3), 0.1),
                opacities=torch.full((count,), 0.5), colors=torch.rand(count, 2), viewmats=torch.eye(4)[None],
                Ks=torch.tensor([[[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]]]), width=16, height=16, backend="torch")


@pytest.mark.parametrize("name", ["Ks", "viewmats", "quats", "backgrounds"])
def test_render_refuses_non_float_tensors(name):
    scene = _scene()
    scene["backgrounds"] = torch.zeros(1, 2)
    scene[name] = scene[name].to(torch.int64)
    with pytest.raises(ValueError, match=rf"render_features: `{name}` must be a floating-point tensor, got dtype torch.int64"):
        render_features(**scene)


@pytest.mark.parametrize("value, message", [
    (16.5, "must be an integer number of pixels"), ("16", "must be an integer number of pixels"),
    (True, "must be an integer number of pixels"), (float("nan"), "must be an integer number of pixels"),
    (10**9, r"must be in \[1, 1048576\] pixels"),
])
def test_render_refuses_bad_image_sizes(value, message):
    with pytest.raises(ValueError, match=rf"render_features: `width` {message}"):
        render_features(**{**_scene(), "width": value})
    assert render_features(**{**_scene(), "width": np.int64(16)}).renders.shape == (1, 16, 16, 2)


@pytest.mark.parametrize("name, value", [("tile_size", 0), ("tile_size", -8), ("max_elements", 0), ("channel_chunk", 0)])
def test_render_refuses_bad_knobs(name, value):
    with pytest.raises(ValueError, match=rf"render_features: `{name}` must be"):
        render_features(**{**_scene(), name: value})


def test_render_with_zero_cameras_is_an_empty_batch():
    scene = _scene()
    output = render_features(**{**scene, "viewmats": scene["viewmats"][:0], "Ks": scene["Ks"][:0]})
    assert output.renders.shape == (0, 16, 16, 2) and output.alphas.shape == (0, 16, 16, 1)


def test_render_gaussians_names_its_own_arguments():
    from snd.gaussians import Gaussians
    from snd.splatting import render_gaussians

    means = torch.zeros(1, 3, 3)
    means[..., 2] = 3.0
    covariances = torch.diag_embed(torch.full((1, 3, 3), 0.01))
    features = torch.rand(1, 3, 2)
    features[0, 1, 0] = float("nan")
    gaussians = Gaussians(means=means, covariances=covariances, opacities=torch.full((1, 3), 0.5))
    cameras = torch.eye(4)[None, None], torch.tensor([[[[1.0, 0, 0.5], [0, 1.0, 0.5], [0, 0, 1]]]])
    with pytest.raises(ValueError, match=r"render_gaussians: `features` must be finite"):
        render_gaussians(gaussians, features, *cameras, 8, 8, backend="torch")
    covariances[0, 2, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"render_gaussians: `covariances` must be finite"):
        render_gaussians(Gaussians(means=means, covariances=covariances, opacities=torch.full((1, 3), 0.5)),
                         features.nan_to_num(), *cameras, 8, 8, backend="torch")
    with pytest.raises(ValueError, match=r"render_gaussians: `height` must be in"):
        render_gaussians(gaussians, features.nan_to_num(), *cameras, 10**7, 8, backend="torch")


@pytest.mark.parametrize("name", ["footprint_scale", "thickness", "placeholder_depth", "opacity"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), "0.5"])
def test_depth_lifter_settings_must_be_finite_numbers(name, value):
    from snd.lifting import DepthLifter

    with pytest.raises(ValueError, match=rf"DepthLifter\.{name} must be a finite number"):
        DepthLifter(**{name: value})


# ------------------------------------------------------------------------------------------------ metrics
def test_depth_metrics_refuse_non_finite_predictions_and_bad_ranges():
    gt = np.full((1, 4, 4), 2.0)
    pred = gt.copy()
    pred[0, 1, 2] = np.nan
    with pytest.raises(ValueError, match=r"depth: `predictions` hold 1 non-finite value\(s\) \(first nan at index \(0, 1, 2\)\)"):
        depth_metrics(pred, gt)
    with pytest.raises(ValueError, match=r"depth: `min_depth` must be a finite number"):
        depth_metrics(gt, gt, min_depth=float("nan"))
    with pytest.raises(ValueError, match=r"depth: `min_depth` \(5\.0\) must be below `max_depth` \(1\.0\)"):
        depth_metrics(gt, gt, min_depth=5.0, max_depth=1.0)
    with pytest.raises(ValueError, match=r"depth: predictions \(0, 4, 4\) and references \(0, 4, 4\) hold no pixel"):
        depth_metrics(np.zeros((0, 4, 4)), np.zeros((0, 4, 4)))
    with pytest.raises(ValueError, match=r"depth: `predictions` must be numeric"):
        depth_metrics(np.array([["a"]]), np.array([["b"]]))
    inf_gt = gt.copy()
    inf_gt[0, 0, 0] = np.inf  # non-finite references stay masked (by design)
    assert depth_metrics(gt, inf_gt)["rmse"] == 0


def test_normal_metrics_refuse_non_finite_predictions_and_bad_thresholds():
    normals = np.zeros((1, 3, 2, 2))
    normals[:, 2] = 1
    bad = normals.copy()
    bad[0, 0, 1, 1] = np.inf
    with pytest.raises(ValueError, match=r"normals: `predictions` hold 1 non-finite"):
        normal_metrics(bad, normals)
    for thresholds in ((float("nan"),), (-5.0,), ()):
        with pytest.raises(ValueError, match=r"normals: `thresholds` must be finite numbers > 0"):
            normal_metrics(normals, normals, thresholds=thresholds)
    with pytest.raises(ValueError, match=r"every one of the `references` normals"):
        normal_metrics(normals, np.zeros_like(normals))


def test_segmentation_metrics_refuse_non_integer_labels_and_settings():
    labels = np.tile(np.arange(4), (1, 4, 1))
    with pytest.raises(ValueError, match=r"mean_iou: `predictions` must hold integer class ids; first 0\.5"):
        segmentation_metrics(labels + 0.5, labels, num_labels=4)
    for num_labels in (4.7, 10**7, True):
        with pytest.raises(ValueError, match=r"mean_iou: num_labels must be an integer in \[1, 11585\]"):
            segmentation_metrics(labels, labels, num_labels=num_labels)
    with pytest.raises(ValueError, match=r"mean_iou: ignore_index must be an integer"):
        segmentation_metrics(labels, labels, num_labels=4, ignore_index=float("nan"))
    with pytest.raises(ValueError, match=r"mean_iou: predictions \(0, 4, 4\) and references \(0, 4, 4\) hold no pixel"):
        segmentation_metrics(np.zeros((0, 4, 4), int), np.zeros((0, 4, 4), int), num_labels=4)
    assert segmentation_metrics(labels.astype(np.float32), labels, num_labels=4)["mean_iou"] == 100.0


def test_correspondence_metrics_refuse_non_finite_points_and_bad_bins():
    points = [np.array([[1.0, 2.0], [3.0, 4.0]])]
    bad = [np.array([[np.nan, 2.0], [3.0, 4.0]])]
    with pytest.raises(ValueError, match=r"correspondence: `predictions\[0\] \(pair 0\)` hold 1 non-finite"):
        correspondence_metrics(bad, points)
    with pytest.raises(ValueError, match=r"correspondence: `references\[0\] \(pair 0\)` hold 1 non-finite"):
        correspondence_metrics(points, bad)
    with pytest.raises(ValueError, match=r"correspondence: pair 0: `predictions` has shape \(3,\); expected \[K, 2\]"):
        correspondence_metrics([np.array([1.0, 2.0, 3.0])], points)
    with pytest.raises(ValueError, match=r"`relative_rotations` hold 1 non-finite"):
        correspondence_metrics(points, points, relative_rotations=[float("nan")])
    with pytest.raises(ValueError, match=r"`rotation_bins` must be at least two increasing"):
        correspondence_metrics(points, points, relative_rotations=[10.0], rotation_bins=(0, 60, 30))
    with pytest.raises(ValueError, match=r"`thresholds` must be finite numbers > 0"):
        correspondence_metrics(points, points, thresholds=(-5,))


# ------------------------------------------------------------------------------------------------ evaluation settings
@pytest.mark.parametrize("field, value, message", [
    ("feature_batch_size", 0, "must be >= 1"), ("feature_batch_size", float("nan"), "must be an integer"),
    ("feature_batch_size", "8", "must be an integer"), ("probe_epochs", 0, "must be >= 1"),
    ("probe_max_steps", -5, "must be >= 1"), ("num_correspondences", 0, "must be >= 1"),
    ("num_figures", -1, "must be >= 0"), ("seed", float("nan"), "must be an integer"),
    ("correspondence_scale", 0.0, r"must be in \(0, 4\]"), ("correspondence_scale", float("nan"), r"must be in \(0, 4\]"),
    ("tasks", [], "must be a non-empty list"), ("tasks", "depth", "must be a non-empty list"),
    ("tasks", ["depht"], "unknown task 'depht'"), ("dataset", "nyu", "must be one of"),
    ("device", "gpu7", "is not a torch device"),
])
def test_evaluation_config_fields_are_checked(field, value, message):
    with pytest.raises(ValueError, match=rf"EvaluationConfig\.{field}.*{message}"):
        EvaluationConfig(**{field: value})


@pytest.mark.parametrize("field, value, message", [
    ("train_scenes", 0, "must be >= 1"), ("test_scenes", 0, "must be >= 1"), ("frames_per_scene", 0, "must be >= 1"),
    ("frame_stride", -2, "must be >= 1"), ("image_size", 10**6, "must be at most 4096"), ("seed", float("nan"), "must be an integer"),
    ("pair_gaps", (0,), "must be >= 1"),
])
def test_synthetic_eval_config_fields_are_checked(field, value, message):
    with pytest.raises(ValueError, match=rf"SyntheticEvalConfig\.{field} {message}"):
        SyntheticEvalConfig(**{field: value})


def test_evaluation_config_defaults_and_edges_stay_valid():
    EvaluationConfig()
    EvaluationConfig(seed=-1, num_figures=0, probe_max_steps=1, correspondence_scale=0.25, tasks=("depth",))
    SyntheticEvalConfig(pair_gaps=[2, 5])


def test_evaluate_script_refuses_non_positive_num_threads(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("evaluate_script", REPO / "scripts" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as raised:  # refused by argparse's range-checked type, naming the flag
        module.main(["--model", "x", "--output-dir", str(tmp_path / "out"), "--num-threads", "-1"])
    assert raised.value.code == 2
    assert "argument --num-threads: expected an integer >= 1, got '-1'" in capsys.readouterr().err
