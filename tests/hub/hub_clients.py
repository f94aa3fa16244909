"""Client programs the Hub tests run in a fresh process pointed at the test server (see conftest.HubClient).

Each command prints one JSON object on its last stdout line. Run as `python -m tests.hub.hub_clients CMD ...`
with HF_ENDPOINT / HF_TOKEN set; importing this module before that would bind huggingface_hub to the real Hub.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

if "HF_ENDPOINT" not in os.environ or not os.environ["HF_ENDPOINT"].startswith("http://127.0.0.1:"):
    raise SystemExit("hub_clients must run with HF_ENDPOINT pointing at the loopback test server")



def _emit(payload: dict) -> None:
    print(json.dumps(payload))


def protocol(args) -> dict:
    """Exercise the huggingface_hub calls the package relies on, against the server."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    api = HfApi()
    out: dict = {"whoami": api.whoami()["name"]}
    url = api.create_repo("snd-test/protocol", exist_ok=True)
    out["repo_url_id"] = url.repo_id
    out["create_again_ok"] = api.create_repo("snd-test/protocol", exist_ok=True).repo_id
    folder = Path(tempfile.mkdtemp())
    (folder / "nested").mkdir()
    payload = os.urandom(3000)
    (folder / "nested" / "blob.bin").write_bytes(payload)
    (folder / "README.md").write_text("---\nlicense: mit\ntags:\n- snd\n---\n# card\n")
    first = api.upload_folder(repo_id="snd-test/protocol", folder_path=folder, commit_message="folder")
    out["first_commit"] = first.oid
    out["files"] = api.list_repo_files("snd-test/protocol")
    info = api.model_info("snd-test/protocol")
    out["info_sha"] = info.sha
    out["card_tags"] = info.card_data.tags if info.card_data else None
    path = hf_hub_download("snd-test/protocol", "nested/blob.bin")
    out["download_equal"] = Path(path).read_bytes() == payload
    out["download_in_snapshot_of"] = Path(path).parent.parent.name
    # a commit whose only file is unchanged is a no-op: same head, no new commit
    again = api.upload_file(path_or_fileobj=payload, path_in_repo="nested/blob.bin", repo_id="snd-test/protocol")
    out["noop_commit"] = again.oid
    second = api.upload_file(path_or_fileobj=b"v2", path_in_repo="nested/blob.bin", repo_id="snd-test/protocol")
    out["second_commit"] = second.oid
    out["old_revision_bytes_equal"] = Path(
        hf_hub_download("snd-test/protocol", "nested/blob.bin", revision=first.oid)
    ).read_bytes() == payload
    out["new_revision_bytes"] = Path(hf_hub_download("snd-test/protocol", "nested/blob.bin")).read_text()
    out["file_exists"] = [api.file_exists("snd-test/protocol", "README.md"), api.file_exists("snd-test/protocol", "x")]
    try:
        hf_hub_download("snd-test/protocol", "missing.txt")
        out["missing_file"] = "no error"
    except EntryNotFoundError as error:
        out["missing_file"] = type(error).__name__
    try:
        api.model_info("snd-test/does-not-exist")
        out["missing_repo"] = "no error"
    except RepositoryNotFoundError as error:
        out["missing_repo"] = type(error).__name__
    # branches: a commit on "dev" leaves "main" alone
    api.create_branch("snd-test/protocol", branch="dev")
    api.upload_file(path_or_fileobj=b"dev only", path_in_repo="dev.txt", repo_id="snd-test/protocol", revision="dev")
    out["dev_files"] = api.list_repo_files("snd-test/protocol", revision="dev")
    out["main_has_dev_file"] = api.file_exists("snd-test/protocol", "dev.txt")
    # private repositories are invisible without the token
    api.create_repo("snd-test/private", private=True)
    out["private_with_token"] = api.model_info("snd-test/private").private
    try:
        api.model_info("snd-test/private", token=False)
        out["private_without_token"] = "visible"
    except RepositoryNotFoundError as error:
        out["private_without_token"] = type(error).__name__
    api.delete_file("README.md", "snd-test/protocol")
    out["after_delete"] = api.list_repo_files("snd-test/protocol")
    try:
        api.upload_file(path_or_fileobj=b"x", path_in_repo="y.txt", repo_id="snd-test/protocol", token="hf_wrong")
        out["wrong_token"] = "no error"
    except Exception as error:  # noqa: BLE001 - recording which error the client raised
        out["wrong_token"] = getattr(getattr(error, "response", None), "status_code", type(error).__name__)
    return out


def push_tiny(args) -> dict:
    """Push a tiny random SnDModel with `snd.hub.push_model`; save a reference input/output pair."""
    import numpy as np
    import torch

    import snd
    from snd.hub import ModelCardInfo, push_model

    torch.manual_seed(args.seed)
    model = snd.SnDModel(snd.SnDConfig.tiny()).eval()
    processor = snd.SnDImageProcessor()
    card = ModelCardInfo(repo_id=args.repo, blend_alpha=0.5, provenance={"trained by": "the hub round-trip test"})
    result = push_model(model, processor, args.repo, card, commit_message="tiny push", verify=True)
    image = (np.random.default_rng(args.seed).random((40, 50, 3)) * 255).astype(np.uint8)
    pixel_values = processor(images=image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        output = model(pixel_values)
    torch.save({"image": torch.from_numpy(image), "pixel_values": pixel_values,
                "last_hidden_state": output.last_hidden_state, "patch_features": output.patch_features},
               Path(args.out) / "reference.pt")
    # the verification really compares: a different model against the same commit is refused
    from snd.hub import verify_pushed_model

    other = snd.SnDModel(snd.SnDConfig.tiny()).eval()
    try:
        verify_pushed_model(other, args.repo, result.commit_oid)
        verify_other = "accepted"
    except RuntimeError as error:
        verify_other = str(error)
    # transformers' own push_to_hub goes through the same endpoints (create_repo, preupload, commit)
    model.push_to_hub(args.repo + "-plain")
    # a second push over leftovers of an older, sharded upload removes them in the same commit
    from huggingface_hub import HfApi

    api = HfApi()
    for stale in ("model.safetensors.index.json", "model-00001-of-00002.safetensors", "pytorch_model.bin"):
        api.upload_file(path_or_fileobj=b"{}", path_in_repo=stale, repo_id=args.repo + "-plain")
    again = push_model(model, processor, args.repo + "-plain", commit_message="over stale shards")
    return {"commit": result.commit_oid, "files": result.files, "max_abs_diff": result.max_abs_diff,
            "verify_other_model": verify_other,
            "second_push_removed": again.removed, "second_push_files": again.files}


def load(args) -> dict:
    """Load a repository with AutoModel / AutoImageProcessor, first from its own remote code without snd, then
    after `import snd`, and compare both with the reference saved at push time."""
    import torch
    from transformers import AutoImageProcessor, AutoModel

    reference = torch.load(Path(args.reference), weights_only=True)
    out = {}
    # 1. as a user without the snd package: the repository's own code (auto_map), trust_remote_code=True
    sys.modules["snd"] = None  # makes `import snd` fail in this process
    remote = AutoModel.from_pretrained(args.repo, trust_remote_code=True).eval()
    remote_processor = AutoImageProcessor.from_pretrained(args.repo, trust_remote_code=True)
    remote_pixels = remote_processor(images=reference["image"].numpy(), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        remote_out = remote(remote_pixels)
    out["remote_code_module"] = type(remote).__module__
    out["remote_code_max_abs_diff"] = (remote_out.last_hidden_state - reference["last_hidden_state"]).abs().max().item()
    del sys.modules["snd"]
    # 2. with the package: `import snd` registers the Auto classes
    import snd  # noqa: F401

    model = AutoModel.from_pretrained(args.repo).eval()
    # backend="pil": the pixels are compared bit for bit with SnDImageProcessor's; where torchvision is installed
    # transformers' default would be SnDImageProcessorTorchvision (one uint8 level apart after resizing; tested in
    # tests/models/test_snd_image_processor_torchvision.py)
    processor = AutoImageProcessor.from_pretrained(args.repo, backend="pil")
    pixel_values = processor(images=reference["image"].numpy(), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        output = model(pixel_values)
    return {
        **out,
        "model_module": type(model).__module__,
        "model_class": type(model).__name__,
        "processor_class": type(processor).__name__,
        "pixel_values_equal": bool(torch.equal(pixel_values, reference["pixel_values"])),
        "last_hidden_state_max_abs_diff": (output.last_hidden_state - reference["last_hidden_state"])
        .abs().max().item(),
        "patch_features_shape": list(output.patch_features.shape),
        "patch_features_equal": bool(torch.equal(output.patch_features, reference["patch_features"])),
    }


def check_official(args) -> dict:
    """Load each published repository and compare it with the original DINOv2 forward of its source `.pth`."""
    import numpy as np
    import torch
    from transformers import AutoImageProcessor, AutoModel

    import snd
    from snd.convert.reference import dinov2_reference_patch_tokens

    out = {}
    for item in json.loads(args.pairs):
        repo_id, pth = item["repo"], item["pth"]
        state = {k: v.float() for k, v in torch.load(pth, map_location="cpu", weights_only=True).items()}
        model = AutoModel.from_pretrained(repo_id).eval()
        processor = AutoImageProcessor.from_pretrained(repo_id, backend="pil")  # the PIL backend, as above
        image = (np.random.default_rng(1).random((30, 41, 3)) * 255).astype(np.uint8)
        processed = processor(images=image, return_tensors="pt")["pixel_values"]
        pixels = snd.normalize_images(torch.rand(1, 3, 42, 70, generator=torch.Generator().manual_seed(2)))
        with torch.no_grad():
            ours = model(pixels).last_hidden_state[:, 1 + model.config.num_register_tokens :]
            theirs = dinov2_reference_patch_tokens(
                state.__getitem__, pixels, num_heads=model.config.num_attention_heads,
                num_layers=model.config.num_hidden_layers, num_register_tokens=model.config.num_register_tokens,
            )
            model(processed)
        # every released tensor must reach the model unchanged (names differ, values must not)
        params = [p.detach().flatten() for p in model.state_dict().values()]
        unmatched = [k for k, v in state.items()
                     if not any(p.numel() == v.numel() and torch.equal(p, v.flatten().to(p.dtype)) for p in params)]
        out[repo_id] = {
            "max_abs_diff_vs_original": (ours - theirs).abs().max().item(),
            "unmatched_tensors": unmatched,
            "processed_shape": list(processed.shape),
            "model_class": type(model).__name__,
            "processor_class": type(processor).__name__,
        }
    return out


def publish(script_args: list[str]) -> None:
    """Run scripts/publish_official_weights.py unchanged (tiny test files use the shipped `tiny` preset)."""
    import runpy

    sys.argv = ["publish_official_weights.py", *script_args]
    runpy.run_path(str(Path(__file__).resolve().parents[2] / "scripts" / "publish_official_weights.py"),
                   run_name="__main__")


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "publish":
        publish(argv[1:])
        return
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("protocol")
    p = sub.add_parser("push-tiny")
    p.add_argument("--repo", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("load")
    p.add_argument("--repo", required=True)
    p.add_argument("--reference", required=True)
    p = sub.add_parser("check-official")
    p.add_argument("--pairs", required=True, help='JSON list of {"repo": ..., "pth": ...}')
    args = parser.parse_args(argv)
    handlers = {"protocol": protocol, "push-tiny": push_tiny, "load": load, "check-official": check_official}
    _emit(handlers[args.command](args))


if __name__ == "__main__":
    main()
