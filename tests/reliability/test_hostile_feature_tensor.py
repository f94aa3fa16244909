"""``snd.distill.checkpoints.load_feature_tensor`` (issue 21 part 2): the saved ``pca_before_features.pt`` is checked
right after loading, so a stride-0, huge, NaN, misshapen or non-tensor file is refused naming the file instead of
failing (or allocating) at export."""

from __future__ import annotations

import os

import pytest
import torch

from snd.distill.checkpoints import CheckpointError, load_feature_tensor


def test_valid_features_load(tmp_path):
    path = tmp_path / "pca_before_features.pt"
    features = torch.rand(6, 8)
    torch.save(features, path)
    torch.testing.assert_close(load_feature_tensor(path, expected_shape=(6, None)), features)
    permuted = torch.rand(8, 6).t()  # a dense permuted view, as the trainer saves its [C, h, w] maps: accepted
    torch.save(permuted, path)
    torch.testing.assert_close(load_feature_tensor(path, expected_shape=(6, None)), permuted)


@pytest.mark.parametrize(
    "value, message",
    [
        (torch.zeros(1, 8).expand(6, 8), r"non-contiguous view \(shape \(6, 8\), strides \(0, 1\)\).*stride-0"),
        (torch.zeros(1, 8).expand(4096, 8), r"shape \(4096, 8\).*larger than the whole file.*refused before allocating"),
        (torch.zeros(1).expand(2**40), r"larger than the whole file|more than the file|refused"),
        (torch.ones(6, 2).index_fill_(1, torch.tensor([1]), float("nan")), r"6 NaN/Inf values; expected finite features"),
        (torch.ones(3, 3, dtype=torch.int64), r"torch\.int64 tensor; expected a dense floating-point tensor"),
        ({"features": torch.ones(2)}, r"holds dict; expected a saved feature tensor"),
        (torch.ones(5, 8), r"shape \(5, 8\); expected \(6, None\)"),
    ],
)
def test_hostile_feature_files_are_refused(tmp_path, value, message):
    path = tmp_path / "pca_before_features.pt"
    torch.save(value, path)
    with pytest.raises(CheckpointError, match=rf"pca_before_features\.pt.*{message}"):
        load_feature_tensor(path, expected_shape=(6, None))


def test_huge_dense_tensor_is_refused(tmp_path):
    path = tmp_path / "pca_before_features.pt"
    torch.save(torch.zeros(300, 300), path)
    with pytest.raises(CheckpointError, match=r"a tensor of 360000 bytes .* expected at most 1000"):
        load_feature_tensor(path, max_bytes=1000)


def test_corrupt_and_non_regular_files_are_refused(tmp_path):
    path = tmp_path / "pca_before_features.pt"
    path.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=r"pca_before_features\.pt: refused; expected a saved feature tensor"):
        load_feature_tensor(path)
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "fifo.pt"
        os.mkfifo(fifo)
        from tests.reliability.test_hostile_data import _without_blocking

        result = _without_blocking(lambda: load_feature_tensor(fifo), fifo)
        assert "fifo.pt: is a named pipe (FIFO), not a regular file" in str(result.get("error"))


@pytest.mark.parametrize("content", [b"[" * 200_000, b'{"step": "\xff"}'])
def test_deep_or_non_utf8_checkpoint_marker_is_corrupt(tmp_path, content):
    from snd.distill.checkpoints import read_checkpoint_metadata

    (tmp_path / "snd_checkpoint.json").write_bytes(content)
    with pytest.raises(CheckpointError, match=r"snd_checkpoint\.json: corrupt checkpoint marker \((JSON nested too deeply|not UTF-8)"):
        read_checkpoint_metadata(tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_checkpoint_marker_named_pipe_is_refused(tmp_path):
    from snd.distill.checkpoints import read_checkpoint_metadata

    from tests.reliability.test_hostile_data import _without_blocking

    os.mkfifo(tmp_path / "snd_checkpoint.json")
    result = _without_blocking(lambda: read_checkpoint_metadata(tmp_path), tmp_path / "snd_checkpoint.json")
    assert isinstance(result.get("error"), CheckpointError)
    assert "snd_checkpoint.json: corrupt checkpoint marker (is a named pipe" in str(result["error"])
