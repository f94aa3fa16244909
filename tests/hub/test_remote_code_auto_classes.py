"""AutoBackbone and AutoModelForDepthEstimation through remote code from a Hub repo, in a process without snd."""

from __future__ import annotations

import json
import textwrap

import torch

from snd import SnDConfig, SnDForDepthEstimation, SnDImageProcessor


def test_remote_code_serves_backbone_and_depth_model(hub_client, tmp_path):
    model = SnDForDepthEstimation(SnDConfig.tiny(depth_num_bins=8)).eval()
    folder = tmp_path / "depth"
    model.save_pretrained(folder)
    SnDImageProcessor(do_center_crop=False, size={"height": 42, "width": 56}).save_pretrained(folder)
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert {"AutoBackbone", "AutoModel", "AutoModelForDepthEstimation"} <= set(auto_map)
    hub_client.server.seed_repo("snd-test/depth", {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()})
    pixels = torch.randn(1, 3, 42, 56)
    with torch.no_grad():
        torch.save({"pixels": pixels, "depth": model(pixels).predicted_depth, "features": model.snd(pixels).patch_features},
                   tmp_path / "reference.pt")
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.modules["snd"] = None  # snd is not installed here
        import torch
        from transformers import AutoBackbone, AutoModelForDepthEstimation
        ref = torch.load({str(tmp_path / 'reference.pt')!r}, weights_only=True)
        backbone = AutoBackbone.from_pretrained("snd-test/depth", trust_remote_code=True).eval()
        depth = AutoModelForDepthEstimation.from_pretrained("snd-test/depth", trust_remote_code=True).eval()
        with torch.no_grad():
            features = backbone(ref["pixels"]).feature_maps[-1]
            predicted = depth(ref["pixels"]).predicted_depth
        print(json.dumps(dict(
            backbone=type(backbone).__module__ + "." + type(backbone).__name__,
            depth=type(depth).__module__ + "." + type(depth).__name__,
            features_diff=(features - ref["features"]).abs().max().item(),
            depth_diff=(predicted - ref["depth"]).abs().max().item(),
        )))
        """
    )
    result = json.loads(hub_client.run(["-c", script]).stdout.strip().splitlines()[-1])
    assert result["backbone"].startswith("transformers_modules.") and result["backbone"].endswith(".SnDBackbone")
    assert result["depth"].endswith(".SnDForDepthEstimation")
    assert result["features_diff"] < 1e-6 and result["depth_diff"] == 0.0
