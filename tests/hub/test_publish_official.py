"""scripts/publish_official_weights.py end to end through the loopback Hub.

Random tiny `.pth` files in the authors' torch.hub layout are served as `david-shavin/SnD`; the real script
downloads, converts (with its numerical check) and pushes them; the published repositories are loaded back with
AutoModel / AutoImageProcessor and compared with the original DINOv2 forward pass of each source file.
"""

from __future__ import annotations

import hashlib
import io
import json

import torch
from huggingface_hub import ModelCard

from snd.hub.official import OFFICIAL_CHECKPOINTS

HIDDEN, LAYERS, MLP, PATCH, GRID = 32, 2, 128, 14, 4  # the test-only "tiny" preset: 56 px native grid


def torchhub_state_dict(seed: int, hidden: int = HIDDEN) -> dict[str, torch.Tensor]:
    """Random weights with the names and shapes of a DINOv2 torch.hub / SnD release file."""
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape, mean=0.0, std=0.02):
        return mean + std * torch.randn(*shape, generator=generator)

    state = {
        "cls_token": normal(1, 1, hidden),
        "pos_embed": normal(1, 1 + GRID * GRID, hidden),
        "mask_token": normal(1, hidden),
        "patch_embed.proj.weight": normal(hidden, 3, PATCH, PATCH),
        "patch_embed.proj.bias": normal(hidden),
        "norm.weight": normal(hidden, mean=1.0, std=0.1),
        "norm.bias": normal(hidden),
    }
    for i in range(LAYERS):
        block = f"blocks.{i}"
        state.update({
            f"{block}.norm1.weight": normal(hidden, mean=1.0, std=0.1),
            f"{block}.norm1.bias": normal(hidden),
            f"{block}.attn.qkv.weight": normal(3 * hidden, hidden, std=0.2),
            f"{block}.attn.qkv.bias": normal(3 * hidden),
            f"{block}.attn.proj.weight": normal(hidden, hidden, std=0.2),
            f"{block}.attn.proj.bias": normal(hidden),
            f"{block}.ls1.gamma": normal(hidden, mean=0.5, std=0.1),
            f"{block}.norm2.weight": normal(hidden, mean=1.0, std=0.1),
            f"{block}.norm2.bias": normal(hidden),
            f"{block}.mlp.fc1.weight": normal(MLP, hidden, std=0.2),
            f"{block}.mlp.fc1.bias": normal(MLP),
            f"{block}.mlp.fc2.weight": normal(hidden, MLP, std=0.2),
            f"{block}.mlp.fc2.bias": normal(hidden),
            f"{block}.ls2.gamma": normal(hidden, mean=0.5, std=0.1),
        })
    return state


def _pth_bytes(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _tiny_presets() -> list[str]:
    args = []
    for checkpoint in OFFICIAL_CHECKPOINTS:
        args += ["--preset", f"{checkpoint.filename}=tiny"]
    return args


def test_publish_official_weights_end_to_end(hub_client, tmp_path):
    server = hub_client.server
    files = {c.filename: _pth_bytes(torchhub_state_dict(seed)) for seed, c in enumerate(OFFICIAL_CHECKPOINTS)}
    source_commit = server.seed_repo("david-shavin/SnD", {**files, "README.md": b"# SnD weights\n"})
    summary_path = tmp_path / "summary.json"
    hub_client.run(["-m", "tests.hub.hub_clients", "publish", *_tiny_presets(), "--summary-json", str(summary_path),
                    "--output-dir", str(tmp_path / "converted")])
    summary = {entry["file"]: entry for entry in json.loads(summary_path.read_text())}

    assert set(summary) == set(files)
    for checkpoint in OFFICIAL_CHECKPOINTS:
        entry = summary[checkpoint.filename]
        assert entry["repo_id"] == f"snd/{checkpoint.repo_name}"
        assert entry["sha256"] == hashlib.sha256(files[checkpoint.filename]).hexdigest()
        assert max(entry["conversion_max_abs_difference"].values()) <= 1e-4
        assert entry["reload_max_abs_diff"] == 0.0
        readme = server.store.read("model", entry["repo_id"], "README.md").decode()
        assert f"`{checkpoint.filename}`" in readme and source_commit in readme and entry["sha256"] in readme
        for name in ("model.safetensors", "config.json", "preprocessor_config.json"):
            server.store.read("model", entry["repo_id"], name)  # raises KeyError when missing
        assert (tmp_path / "converted" / checkpoint.repo_name / "model.safetensors").is_file()

    card_s = ModelCard(server.store.read("model", "snd/dinov2-s", "README.md").decode())
    assert len(card_s.data.eval_results) == 7 and card_s.data.base_model == "facebook/dinov2-small"
    assert "depth, surface normals and semantic segmentation" in card_s.text
    card_b_nb = ModelCard(server.store.read("model", "snd/dinov2-b-no-blending", "README.md").decode())
    assert card_b_nb.data.eval_results is None and "multiview correspondence." in card_b_nb.text

    pth_dir = tmp_path / "pth"
    pth_dir.mkdir()
    pairs = []
    for checkpoint in OFFICIAL_CHECKPOINTS:
        (pth_dir / checkpoint.filename).write_bytes(files[checkpoint.filename])
        pairs.append({"repo": f"snd/{checkpoint.repo_name}", "pth": str(pth_dir / checkpoint.filename)})
    checked = hub_client.call("check-official", "--pairs", json.dumps(pairs))
    for pair in pairs:
        result = checked[pair["repo"]]
        assert result["model_class"] == "SnDModel" and result["processor_class"] == "SnDImageProcessor"
        assert result["max_abs_diff_vs_original"] <= 1e-4, result
        assert result["unmatched_tensors"] == [], result
        assert result["processed_shape"] == [1, 3, 224, 224]
    assert server.unhandled == []


def test_publish_stops_before_pushing_anything_when_a_file_does_not_convert(hub_client, tmp_path):
    server = hub_client.server
    files = {c.filename: _pth_bytes(torchhub_state_dict(seed)) for seed, c in enumerate(OFFICIAL_CHECKPOINTS)}
    # the last file is a wider model than its preset says: conversion must refuse it
    files[OFFICIAL_CHECKPOINTS[-1].filename] = _pth_bytes(torchhub_state_dict(7, hidden=48))
    server.seed_repo("david-shavin/SnD", files)
    result = hub_client.run(["-m", "tests.hub.hub_clients", "publish", *_tiny_presets()], check=False)
    assert result.returncode != 0
    assert "hidden_size" in result.stderr and OFFICIAL_CHECKPOINTS[-1].filename in result.stderr
    assert not (server.store.root / "models" / "snd").exists(), "nothing may be published after a failed conversion"
    assert not any("/api/repos/create" in r.path for r in server.requests)
