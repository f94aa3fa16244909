"""Evaluation inputs (issue 21 part 2): split-list paths leaving the dataset root, ScanNet pairs index archives whose
members claim TiBs, and named pipes where a pose file is expected are refused naming the file (and line)."""

from __future__ import annotations

import os
import struct
import threading
import zipfile

import numpy as np
import pytest

from snd.eval.datasets import ScanNetPairsDataset, ScanNetPPDepthDataset
from snd.eval.protocols.data import SplitListDepthDataset
from tests.eval.protocols.probe3d_fixtures import write_scannet_pairs


@pytest.mark.parametrize("entry, reason", [("../secret.png", "resolves outside"), ("a/../../x.png", "resolves outside"),
                                           ("//etc/passwd", "must be relative")])
def test_split_list_paths_must_stay_inside_the_root(tmp_path, entry, reason):
    root = tmp_path / "data"
    root.mkdir()
    (root / "list.txt").write_text(f"rgb/a.jpg depth/a.png\n{entry} depth/b.png 518.8\n")
    with pytest.raises(ValueError, match=rf"list\.txt:2: path .* {reason}"):
        SplitListDepthDataset(root, "list.txt")
    if entry.startswith("/"):
        return  # ScanNet++ lists strip every leading slash: "//etc/passwd" is root/etc/passwd there
    (root / "scannetpp_train.txt").write_text(f"/scenes/a.JPG {entry}\n")
    with pytest.raises(ValueError, match=rf"scannetpp_train\.txt:1: path .* {reason}"):
        ScanNetPPDepthDataset(root, "train")


def test_split_list_symlink_out_of_the_root_is_refused(tmp_path):
    root = tmp_path / "data"
    (root / "rgb").mkdir(parents=True)
    (root / "rgb" / "link").symlink_to(tmp_path)
    (root / "list.txt").write_text("rgb/link/secret.jpg depth/a.png\n")
    with pytest.raises(ValueError, match=r"list\.txt:1: path 'rgb/link/secret\.jpg' resolves outside"):
        SplitListDepthDataset(root, "list.txt")


def test_npz_member_claiming_terabytes_is_refused(tmp_path):
    root = write_scannet_pairs(tmp_path / "pairs")
    header = "{'descr': '<i8', 'fortran_order': False, 'shape': (1099511627776, 4), }".ljust(117) + "\n"
    with zipfile.ZipFile(root / "test.npz", "w") as archive:
        archive.writestr("name.npy", np.lib.format.magic(1, 0) + struct.pack("<H", len(header)) + header.encode() + b"\0" * 64)
    with pytest.raises(ValueError, match=r"test\.npz: member 'name' declares shape \(1099511627776, 4\).*refused before allocating"):
        ScanNetPairsDataset(root)


def test_corrupt_npz_names_the_file(tmp_path):
    root = write_scannet_pairs(tmp_path / "pairs")
    (root / "intrinsics.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ValueError, match=r"intrinsics\.npz: not a readable \.npz archive.*LoFTR's intrinsics\.npz"):
        ScanNetPairsDataset(root)


def test_valid_pairs_still_load(tmp_path):
    dataset = ScanNetPairsDataset(write_scannet_pairs(tmp_path / "pairs"))
    assert len(dataset) == 2
    assert isinstance(dataset[1], dict)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_pose_named_pipe_is_refused_without_blocking(tmp_path):
    root = write_scannet_pairs(tmp_path / "pairs")
    pose = root / "scene0707_00" / "pose" / "15.txt"
    pose.unlink()
    os.mkfifo(pose)
    dataset = ScanNetPairsDataset(root)
    result = {}

    def load():
        try:
            dataset[0]
        except Exception as error:  # noqa: BLE001 - the test inspects it
            result["error"] = error

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(timeout=30)
    if thread.is_alive():
        with open(pose, "w"):
            pass
        pytest.fail("blocked on a named pipe")
    assert "15.txt: is a named pipe (FIFO), not a regular file; expected a 4 x 4 pose text file" in str(result.get("error"))


@pytest.mark.parametrize("focal", [1e30, 0.0, float("nan")])
def test_pairs_with_extreme_focal_lengths_are_refused(tmp_path, focal):
    root = write_scannet_pairs(tmp_path / "pairs")
    with np.load(root / "intrinsics.npz") as stored:
        intrinsics = {key: stored[key].copy() for key in stored.files}
    intrinsics["scene0708_01"][0, 0] = focal
    np.savez(root / "intrinsics.npz", **intrinsics)
    with pytest.raises(ValueError, match=r"intrinsics\.npz: 'scene0708_01' (has focal lengths|is float64).*expected"):
        ScanNetPairsDataset(root)
