"""Probe cases for checkpoints, model folders, saved feature tensors and the checkpoint converters (issue 21).

Families:

* ``checkpoint``: one finished tiny run (checkpoints at steps 2 and 4) is built once in :func:`prepare`; each case copies
  it, damages one file of the newest checkpoint (every file x empty / truncated / random bytes / deleted / a directory /
  a FIFO / a symlink out of the folder), or rewrites one file with crafted content and re-signs the manifest as a careful
  attacker (or a checkpoint of another model) would, then resumes with ``snd.distill.trainer.train`` (a few through
  ``scripts/distill.py``'s ``main``).
* ``model_folder``: a tiny ``SnDModel`` save_pretrained folder; config.json, model.safetensors and
  preprocessor_config.json broken one way each, loaded with ``snd.distill.build.load_backbone`` (the path
  ``model.pretrained`` takes), ``AutoModel.from_pretrained`` after ``import snd``, or ``snd.backbones.read_preprocessor_config``.
* ``feature_tensor``: ``snd.distill.checkpoints.load_feature_tensor`` on ``pca_before_features.pt``-like files.
* ``converter``: ``scripts/convert_checkpoint.py`` / ``scripts/convert_mvsplat.py`` ``main`` and ``read_torch_checkpoint``
  on hostile torch checkpoints, and outputs that already hold the user's files.

Names a clear error must mention are strict: the damaged file's base name (for a model folder, ``student/<file>`` so that
the folder listing a wrapper prints does not count) and/or the field.
"""

from __future__ import annotations

import collections
import json
import math
import os
import pickle
import shutil
import sys
import warnings
import zipfile
from pathlib import Path

import torch

from tests.hostile.harness import Case, register

FIXTURES: dict[str, Path] = {}
LAST = "checkpoints/checkpoint-00000004"
FIRST = "checkpoints/checkpoint-00000002"
CKPT_TIMEOUT = 180.0


# ----------------------------------------------------------------------------------------------------------------------
# Fixtures


def prepare(fixture_dir: Path) -> None:
    import torch

    import snd
    from snd.distill.trainer import train
    from tests.convert.test_convert_backbone import to_torchhub_layout, transformers_reference
    from tests.models.test_mvsplat_convert import lightning_checkpoint
    from snd.models.mvsplat import MVSplatConfig, MVSplatModel

    fixture_dir.mkdir(parents=True, exist_ok=True)
    run = fixture_dir / "run"
    train(_config(run), progress=False)
    FIXTURES["run"] = run
    torch.manual_seed(0)
    model = snd.SnDModel(snd.SnDConfig.tiny())
    model.save_pretrained(fixture_dir / "student")
    snd.SnDImageProcessor().save_pretrained(fixture_dir / "student")
    FIXTURES["student"] = fixture_dir / "student"
    torch.save(to_torchhub_layout(transformers_reference(0)), fixture_dir / "dinov2_tiny.pth")
    FIXTURES["torchhub"] = fixture_dir / "dinov2_tiny.pth"
    torch.manual_seed(0)
    FIXTURES["mvsplat"] = lightning_checkpoint(MVSplatModel(MVSplatConfig.tiny(num_depth_candidates=12)), fixture_dir / "re10k.ckpt")


def _config(output_dir, *overrides):
    from snd.distill import load_config
    from tests.distill.helpers import TINY_CONFIG, TINY_OVERRIDES

    return load_config(TINY_CONFIG, [*TINY_OVERRIDES, f"training.output_dir={output_dir}", "training.max_steps=4",
                                     "training.checkpoint_every=2", *overrides])


def _copy_run(ctx) -> Path:
    run = ctx.work / "run"
    shutil.copytree(FIXTURES["run"], run, symlinks=True)
    return run


def _resume(run: Path, resume: str, *overrides):
    def thunk():
        from snd.distill.trainer import train

        train(_config(run, *overrides), resume_from_checkpoint=resume, progress=False)

    return thunk


class _Payload:
    """Pickles to ``pathlib.Path.touch(marker)``: full unpickling creates the marker (code ran)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


class _StorageBomb:
    def __reduce__(self):
        import torch

        return (torch.UntypedStorage, (2**40,))


class _BuildBomb:
    """A 1-element tensor re-shaped by a BUILD (set_) step to 2**40 elements of stride 0."""

    def __reduce_ex__(self, protocol):
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            storage = torch.zeros(1).storage()
        return (torch._utils._rebuild_tensor_v2, (storage, 0, (1,), (1,), False, collections.OrderedDict()), (storage, 0, (2**40,), (0,)))


def _torch_save_raw_pickle(path: Path, data_pkl: bytes) -> None:
    """A zip-format torch file whose data.pkl is ``data_pkl`` (the archive otherwise as torch writes it)."""
    import torch

    torch.save({}, path)
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    name = next(n for n in entries if n.endswith("data.pkl"))
    entries[name] = data_pkl
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for entry, data in entries.items():
            archive.writestr(entry, data)


def _deep_list_pickle(depth: int) -> bytes:
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


def _lying_storage_size(path: Path, value) -> None:
    """torch.save ``value`` (a tensor of 6 elements) then rewrite its storage's element count 6 -> 2**40 in data.pkl."""
    import torch

    torch.save(value, path)
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    name = next(n for n in entries if n.endswith("data.pkl"))
    assert b"K\x06" in entries[name]
    entries[name] = entries[name].replace(b"K\x06", b"\x8a\x06\x00\x00\x00\x00\x00\x01", 1)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for entry, data in entries.items():
            archive.writestr(entry, data)


# ----------------------------------------------------------------------------------------------------------------------
# Damages applied to one file


def _damage(path: Path, how: str, ctx) -> None:
    data = path.read_bytes() if path.is_file() else b""
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "random":
        path.write_bytes(os.urandom(max(len(data), 64)))
    elif how == "deleted":
        path.unlink()
    elif how == "directory":
        path.unlink()
        path.mkdir()
        (path / "inner").write_bytes(b"x")
    elif how == "fifo":
        path.unlink()
        os.mkfifo(path)
    elif how == "symlink_out":
        outside = ctx.work / f"outside-{path.name}"
        outside.write_bytes(os.urandom(max(len(data), 64)))
        path.unlink()
        path.symlink_to(outside)
    elif how == "non_utf8":
        path.write_bytes(b'{"step": "\xff\xfe"}')
    elif how == "deep_json":
        path.write_bytes(b"[" * 200_000)
    else:
        raise ValueError(how)


DAMAGES = ("empty", "truncated", "random", "deleted", "directory", "fifo", "symlink_out")
CHECKPOINT_FILES = ("model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl", "snd_state.json",
                    "snd_state.safetensors", "snd_checkpoint.json")


def _file_damage_case(file: str, how: str):
    def setup(ctx):
        run = _copy_run(ctx)
        _damage(run / LAST / file, how, ctx)
        return _resume(run, str(run / LAST))

    return setup


for _file in CHECKPOINT_FILES:
    for _how in DAMAGES:
        register(Case("checkpoint", f"{_how}/{_file}", _file_damage_case(_file, _how), names=(_file,), timeout_s=CKPT_TIMEOUT,
                      note=f"the newest checkpoint's {_file}: {_how}"))
for _how in ("non_utf8", "deep_json"):
    for _file in ("snd_checkpoint.json", "snd_state.json"):
        register(Case("checkpoint", f"{_how}/{_file}", _file_damage_case(_file, _how), names=(_file,), timeout_s=CKPT_TIMEOUT,
                      note=f"{_file} {_how.replace('_', ' ')}, not re-signed"))


# ----------------------------------------------------------------------------------------------------------------------
# Crafted files, manifest re-signed


def _resign(last: Path) -> None:
    from snd.distill.checkpoints import write_checkpoint_marker

    record = json.loads((last / "snd_checkpoint.json").read_text())
    write_checkpoint_marker(last, record["step"], {k: v for k, v in record.items() if k not in ("format", "step", "files")})


def _loaded(last: Path, name: str):
    import torch

    return torch.load(last / name, map_location="cpu", weights_only=True)


def _edit_pickle(name: str, edit):
    """Load ``name`` of the newest checkpoint (weights_only), ``edit(ctx, value)`` -> new value (or None: edited in
    place), torch.save it back and re-sign the manifest."""

    def setup(ctx):
        import torch

        from snd.distill.checkpoints import _check_weights_only

        run = _copy_run(ctx)
        last = run / LAST
        value = _check_weights_only(last / name)
        result = edit(ctx, value)
        torch.save(value if result is None else result, last / name)
        _resign(last)
        return _resume(run, str(last))

    return setup


def _moment(state):
    return next(iter(state["state"].values()))


def _nan_state(key):
    def edit(ctx, s):
        _moment(s)[key] = _moment(s)[key].clone().fill_(float("nan"))

    return edit


CRAFTED = [
    # (file, name, edit, names, valid, note)
    ("optimizer.bin", "exp_avg_wrong_shape", lambda c, s: _moment(s).update(exp_avg=torch.zeros(3, 5)), ("optimizer.bin", "exp_avg"), False, ""),
    ("optimizer.bin", "exp_avg_int64", lambda c, s: _moment(s).update(exp_avg=_moment(s)["exp_avg"].to(torch.int64)), ("optimizer.bin", "exp_avg"), False, ""),
    ("optimizer.bin", "exp_avg_float64", lambda c, s: _moment(s).update(exp_avg=_moment(s)["exp_avg"].double()), ("optimizer.bin", "exp_avg"), True,
     "a float64 moment of the right shape: torch's load_state_dict casts it to the parameter's dtype"),
    ("optimizer.bin", "exp_avg_string", lambda c, s: _moment(s).update(exp_avg="zeros"), ("optimizer.bin", "exp_avg"), False, ""),
    ("optimizer.bin", "exp_avg_sq_nan", _nan_state("exp_avg_sq"), ("optimizer.bin", "exp_avg_sq"), False, "NaN second moments"),
    ("optimizer.bin", "step_huge_vector", lambda c, s: _moment(s).update(step=torch.zeros(1000)), ("optimizer.bin", "step"), False, ""),
    ("optimizer.bin", "two_param_groups", lambda c, s: s["param_groups"].append(dict(s["param_groups"][0])), ("optimizer.bin", "param_groups"), False, ""),
    ("optimizer.bin", "no_param_groups", lambda c, s: s.update(param_groups=[]), ("optimizer.bin", "param_groups"), False, ""),
    ("optimizer.bin", "top_level_list", lambda c, s: [1, 2, 3], ("optimizer.bin",), False, ""),
    ("optimizer.bin", "lr_nan", lambda c, s: s["param_groups"][0].update(lr=float("nan")), ("optimizer.bin", "lr"), False, ""),
    ("optimizer.bin", "lr_string", lambda c, s: s["param_groups"][0].update(lr="fast"), ("optimizer.bin", "lr"), False, ""),
    ("optimizer.bin", "betas_wrong_length", lambda c, s: s["param_groups"][0].update(betas=(0.9,)), ("optimizer.bin", "betas"), False, ""),
    ("optimizer.bin", "unknown_param_id", lambda c, s: s["state"].update({10_000: {}}), ("optimizer.bin", "state"), False, ""),
    ("optimizer.bin", "payload", lambda c, s: s["param_groups"][0].update(extra=_Payload(c.marker)), ("optimizer.bin",), False, "code-execution pickle"),
    ("optimizer.bin", "storage_bomb", lambda c, s: s.update(x=_StorageBomb()), ("optimizer.bin",), False, "UntypedStorage(2**40)"),
    ("optimizer.bin", "build_bomb", lambda c, s: _moment(s).update(exp_avg=_BuildBomb()), ("optimizer.bin",), False, "BUILD set_ to 2**40 elements"),
    ("scheduler.bin", "last_epoch_huge", lambda c, s: s.update(last_epoch=10**18), ("scheduler.bin", "last_epoch"), False,
     "the scheduler claims step 10**18 of a 4-step run"),
    ("scheduler.bin", "last_epoch_negative", lambda c, s: s.update(last_epoch=-50), ("scheduler.bin", "last_epoch"), False, ""),
    ("scheduler.bin", "last_epoch_string", lambda c, s: s.update(last_epoch="4"), ("scheduler.bin", "last_epoch"), False, ""),
    ("scheduler.bin", "last_epoch_float_nan", lambda c, s: s.update(last_epoch=float("nan")), ("scheduler.bin", "last_epoch"), False, ""),
    ("scheduler.bin", "base_lrs_nan", lambda c, s: s.update(base_lrs=[float("nan")] * len(s["base_lrs"])), ("scheduler.bin", "base_lrs"), False, ""),
    ("scheduler.bin", "last_lr_nan", lambda c, s: s.update(_last_lr=[float("nan")] * len(s["_last_lr"])), ("scheduler.bin", "_last_lr"), False, ""),
    ("scheduler.bin", "base_lrs_wrong_count", lambda c, s: s.update(base_lrs=[1.0, 2.0, 3.0]), ("scheduler.bin", "base_lrs"), False, ""),
    ("scheduler.bin", "top_level_list", lambda c, s: [0.1], ("scheduler.bin",), False, ""),
    ("scheduler.bin", "payload", lambda c, s: s.update(extra=_Payload(c.marker)), ("scheduler.bin",), False, "code-execution pickle"),
    ("random_states_0.pkl", "torch_state_wrong_size", lambda c, s: s.update(torch_manual_seed=torch.zeros(3, dtype=torch.uint8)),
     ("random_states_0.pkl", "torch_manual_seed"), False, ""),
    ("random_states_0.pkl", "torch_state_wrong_dtype", lambda c, s: s.update(torch_manual_seed=s["torch_manual_seed"].float()),
     ("random_states_0.pkl", "torch_manual_seed"), False, ""),
    ("random_states_0.pkl", "python_state_short", lambda c, s: s.update(random_state=(3, tuple(range(10)), None)), ("random_states_0.pkl", "random_state"), False, ""),
    ("random_states_0.pkl", "python_state_version", lambda c, s: s.update(random_state=(99, *s["random_state"][1:])), ("random_states_0.pkl", "random_state"), False, ""),
    ("random_states_0.pkl", "numpy_state_missing", lambda c, s: s.pop("numpy_random_seed"), ("random_states_0.pkl", "numpy_random_seed"), False, ""),
    ("random_states_0.pkl", "payload", lambda c, s: s.update(extra=_Payload(c.marker)), ("random_states_0.pkl",), False, "code-execution pickle"),
    ("random_states_0.pkl", "storage_bomb", lambda c, s: s.update(extra=_StorageBomb()), ("random_states_0.pkl",), False, ""),
]
for _file, _name, _edit, _names, _valid, _note in CRAFTED:
    register(Case("checkpoint", f"crafted/{_file}/{_name}", _edit_pickle(_file, _edit), names=_names, valid=_valid, timeout_s=CKPT_TIMEOUT,
                  note=_note or f"{_file}: {_name.replace('_', ' ')}, manifest re-signed"))


def _raw_pickle_case(file: str, data_pkl: bytes):
    def setup(ctx):
        run = _copy_run(ctx)
        _torch_save_raw_pickle(run / LAST / file, data_pkl)
        _resign(run / LAST)
        return _resume(run, str(run / LAST))

    return setup


register(Case("checkpoint", "crafted/scheduler.bin/deep_nesting", _raw_pickle_case("scheduler.bin", _deep_list_pickle(200_000)),
              names=("scheduler.bin",), timeout_s=CKPT_TIMEOUT, note="a list nested 200,000 deep"))
register(Case("checkpoint", "crafted/optimizer.bin/deep_nesting", _raw_pickle_case("optimizer.bin", _deep_list_pickle(200_000)),
              names=("optimizer.bin",), timeout_s=CKPT_TIMEOUT, note="a list nested 200,000 deep"))


def _lying_size_case(file: str):
    def setup(ctx):
        import torch

        run = _copy_run(ctx)
        _lying_storage_size(run / LAST / file, {"state": {}, "param_groups": [], "w": torch.arange(6.0)})
        _resign(run / LAST)
        return _resume(run, str(run / LAST))

    return setup


register(Case("checkpoint", "crafted/optimizer.bin/storage_size_lie", _lying_size_case("optimizer.bin"), names=("optimizer.bin",),
              timeout_s=CKPT_TIMEOUT, note="a storage claiming 2**40 elements"))


def _json_case(file: str, content):
    def setup(ctx):
        run = _copy_run(ctx)
        path = run / LAST / file
        path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
        _resign(run / LAST)
        return _resume(run, str(run / LAST))

    return setup


STATE_JSON_CASES = [
    ("non_utf8", b'{"step": 4, "skipped": "\xff"}', ("snd_state.json",), False),
    ("deep", b"[" * 200_000, ("snd_state.json",), False),
    ("list", [4, 0, 0], ("snd_state.json",), False),
    ("step_string", {"step": "four", "skipped": 0, "empty_streak": 0}, ("snd_state.json", "step"), False),
    ("step_negative", {"step": -3, "skipped": 0, "empty_streak": 0}, ("snd_state.json", "step"), False),
    ("step_nan", b'{"step": NaN, "skipped": 0, "empty_streak": 0}', ("snd_state.json", "step"), False),
    ("step_float", {"step": 4.5, "skipped": 0, "empty_streak": 0}, ("snd_state.json", "step"), False),
    ("step_huge", {"step": 10**30, "skipped": 0, "empty_streak": 0}, ("snd_state.json", "step"), False),
    ("skipped_negative", {"step": 4, "skipped": -1, "empty_streak": 0}, ("snd_state.json", "skipped"), False),
    ("empty_object", {}, ("snd_state.json", "step"), False),
    ("extra_key", {"step": 4, "skipped": 0, "empty_streak": 0, "comment": "x"}, (), True),
]
for _name, _content, _names, _valid in STATE_JSON_CASES:
    register(Case("checkpoint", f"crafted/snd_state.json/{_name}", _json_case("snd_state.json", _content), names=_names, valid=_valid,
                  timeout_s=CKPT_TIMEOUT, note="an unknown extra counter is ignored" if _valid else "train counters, manifest re-signed"))


def _safetensors_case(file: str, edit):
    def setup(ctx):
        from safetensors.torch import load_file, save_file

        run = _copy_run(ctx)
        path = run / LAST / file
        tensors = load_file(str(path))
        edit(tensors)
        save_file(tensors, str(path))
        _resign(run / LAST)
        return _resume(run, str(run / LAST))

    return setup


def _first_key(tensors, predicate=lambda v: v.dim() >= 2):
    return next(k for k, v in sorted(tensors.items()) if predicate(v))


def _st_nan(t):
    key = _first_key(t)
    t[key] = t[key].clone().fill_(float("nan"))


def _st_shape(t):
    key = _first_key(t)
    t[key] = t[key].new_zeros(3, 3)


def _st_missing(t):
    del t[_first_key(t)]


def _st_double(t):
    for key in list(t):
        t[key] = t[key].double()


def _st_extra(t):
    import torch

    t["backbone.unexpected.weight"] = torch.zeros(2)


for _file in ("model.safetensors", "snd_state.safetensors"):
    for _name, _edit, _valid in (("nan", _st_nan, False), ("wrong_shape", _st_shape, False), ("missing_tensor", _st_missing, False),
                                 ("float64", _st_double, True), ("extra_tensor", _st_extra, False)):
        register(Case("checkpoint", f"crafted/{_file}/{_name}", _safetensors_case(_file, _edit), names=(_file,), valid=_valid,
                      timeout_s=CKPT_TIMEOUT, note="float64 copies of the right shapes: load_state_dict casts them exactly as "
                      "torch does for any state dict (valid)" if _valid else f"{_file}: {_name.replace('_', ' ')}, manifest re-signed"))


def _manifest_case(edit):
    def setup(ctx):
        run = _copy_run(ctx)
        marker = run / LAST / "snd_checkpoint.json"
        record = json.loads(marker.read_text())
        edit(ctx, run, record)
        marker.write_text(json.dumps(record))
        return _resume(run, str(run / LAST))

    return setup


def _outside_entry(relative):
    def edit(ctx, run, record):
        import hashlib

        outside = (run / LAST / relative).resolve() if not relative.startswith("/") else Path(relative)
        if not relative.startswith("/"):
            outside.write_bytes(b"secret")
        data = outside.read_bytes()
        record["files"][relative] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    return edit


MANIFEST_CASES = [
    ("lists_parent_file", _outside_entry("../../outside.txt"), ("snd_checkpoint.json", "../"), False, "the manifest lists ../../outside.txt"),
    ("lists_absolute_file", _outside_entry("/etc/hostname"), ("snd_checkpoint.json", "/etc/hostname"), False, "the manifest lists /etc/hostname"),
    ("files_not_dict", lambda c, r, m: m.update(files=["model.safetensors"]), ("snd_checkpoint.json", "files"), False, ""),
    ("entry_size_string", lambda c, r, m: m["files"]["model.safetensors"].update(size="big"), ("snd_checkpoint.json", "model.safetensors"), False, ""),
    ("entry_not_dict", lambda c, r, m: m["files"].update({"model.safetensors": 7}), ("snd_checkpoint.json", "model.safetensors"), False, ""),
    ("step_string", lambda c, r, m: m.update(step="four"), ("snd_checkpoint.json", "step"), False, ""),
    ("step_mismatch", lambda c, r, m: m.update(step=999), ("snd_checkpoint.json", "step"), False, "marker step 999 in checkpoint-00000004"),
    ("step_negative", lambda c, r, m: m.update(step=-1), ("snd_checkpoint.json", "step"), False, ""),
    ("run_not_dict", lambda c, r, m: m.update(run="x"), ("snd_checkpoint.json", "run"), False, ""),
    ("format_string", lambda c, r, m: m.update(format="2"), ("snd_checkpoint.json", "format"), False, ""),
    ("file_unlisted", lambda c, r, m: m["files"].pop("scheduler.bin"), ("snd_checkpoint.json", "scheduler.bin"), False,
     "scheduler.bin present but not in the manifest (would load unverified)"),
    ("top_level_list", None, ("snd_checkpoint.json",), False, ""),
]
for _name, _edit, _names, _valid, _note in MANIFEST_CASES:
    if _edit is None:
        def _setup(ctx):
            run = _copy_run(ctx)
            (run / LAST / "snd_checkpoint.json").write_text("[1, 2]")
            return _resume(run, str(run / LAST))
    else:
        _setup = _manifest_case(_edit)
    register(Case("checkpoint", f"manifest/{_name}", _setup, names=_names, valid=_valid, timeout_s=CKPT_TIMEOUT, note=_note or f"marker: {_name}"))


def _unlisted_pickle(ctx):
    import torch

    run = _copy_run(ctx)
    torch.save({"state": {}, "param_groups": [], "x": _Payload(ctx.marker)}, run / LAST / "optimizer_1.bin")
    return _resume(run, str(run / LAST))


register(Case("checkpoint", "unlisted/optimizer_1.bin_payload", _unlisted_pickle, names=("optimizer_1.bin",), timeout_s=CKPT_TIMEOUT,
              note="an extra pickle with a payload, not in the manifest"))


def _custom_pickle_signed(ctx):
    import torch

    run = _copy_run(ctx)
    torch.save({"step": 4, "p": _Payload(ctx.marker)}, run / LAST / "custom_checkpoint_0.pkl")
    _resign(run / LAST)
    return _resume(run, str(run / LAST))


register(Case("checkpoint", "crafted/custom_checkpoint_0.pkl/payload", _custom_pickle_signed, names=("custom_checkpoint_0.pkl",),
              timeout_s=CKPT_TIMEOUT, note="Accelerate's custom pickle (full unpickle) with a payload, re-signed"))


# "latest" and fall-backs


def _latest_case(damage_first: bool, how: str, file: str):
    def setup(ctx):
        run = _copy_run(ctx)
        _damage(run / LAST / file, how, ctx)
        if damage_first:
            _damage(run / FIRST / file, how, ctx)
        return _resume(run, "latest")

    return setup


register(Case("checkpoint", "latest/newest_truncated_falls_back", _latest_case(False, "truncated", "model.safetensors"), valid=True,
              timeout_s=CKPT_TIMEOUT, note="documented: 'latest' skips a corrupt newest checkpoint with a warning"))
register(Case("checkpoint", "latest/newest_marker_deleted_falls_back", _latest_case(False, "deleted", "snd_checkpoint.json"), valid=True,
              timeout_s=CKPT_TIMEOUT, note="documented: a folder without marker is a half prune, removed at start"))
register(Case("checkpoint", "latest/newest_fifo_falls_back", _latest_case(False, "fifo", "optimizer.bin"), valid=True,
              timeout_s=CKPT_TIMEOUT, note="a FIFO in the newest: skipped, the previous one is used"))
register(Case("checkpoint", "latest/both_corrupt", _latest_case(True, "random", "optimizer.bin"), names=("optimizer.bin",),
              timeout_s=CKPT_TIMEOUT, note="no checkpoint verifies"))
register(Case("checkpoint", "latest/both_fifo_marker", _latest_case(True, "fifo", "snd_checkpoint.json"), names=("snd_checkpoint.json",),
              timeout_s=CKPT_TIMEOUT, note="both markers are FIFOs"))


def _resume_missing(ctx):
    run = _copy_run(ctx)
    return _resume(run, str(run / "checkpoints" / "checkpoint-00000009"))


register(Case("checkpoint", "resume_path_missing", _resume_missing, names=("checkpoint-00000009",), timeout_s=CKPT_TIMEOUT))


def _resume_a_file(ctx):
    run = _copy_run(ctx)
    return _resume(run, str(run / LAST / "model.safetensors"))


register(Case("checkpoint", "resume_path_is_a_file", _resume_a_file, names=("model.safetensors",), timeout_s=CKPT_TIMEOUT))


# the run's loss log, truncated on resume from step 2


def _log_case(how):
    def setup(ctx):
        run = _copy_run(ctx)
        log = run / "loss_log.jsonl"
        if how == "torn_middle":
            lines = log.read_text().splitlines()
            lines[1] = lines[1][:10]
            log.write_text("\n".join(lines) + "\n")
        elif how == "non_object_line":
            log.write_text(log.read_text() + "[1, 2]\n" + log.read_text().splitlines()[-1] + "\n")
        elif how == "step_string":
            log.write_text('{"step": "two", "loss": 1.0}\n' + log.read_text())
        else:
            _damage(log, how, ctx)
        shutil.rmtree(run / LAST)
        return _resume(run, str(run / FIRST))

    return setup


for _how, _valid, _note in (("random", False, ""), ("non_utf8", False, ""), ("directory", False, ""), ("fifo", False, "would block read_text"),
                            ("symlink_out", False, ""), ("torn_middle", False, ""), ("non_object_line", False, ""),
                            ("step_string", False, ""), ("deleted", True, "no loss log yet: resuming starts a new one"),
                            ("empty", True, "an empty loss log")):
    register(Case("checkpoint", f"loss_log/{_how}", _log_case(_how), names=("loss_log.jsonl",), valid=_valid, timeout_s=CKPT_TIMEOUT,
                  note=_note or f"loss_log.jsonl {_how}"))


# through the script


def _script_case(file, how):
    def setup(ctx):
        from tests.distill.helpers import TINY
        from tests.script_main import script_main

        run = _copy_run(ctx)
        _damage(run / LAST / file, how, ctx)
        argv = [*TINY, "--output_dir", str(run), "--max_steps", "4", "--training.checkpoint_every", "2",
                "--resume_from_checkpoint", str(run / LAST)]
        return lambda: sys.exit(script_main("distill", argv))

    return setup


for _file, _how in (("optimizer.bin", "random"), ("snd_checkpoint.json", "deep_json"), ("snd_state.json", "fifo")):
    register(Case("checkpoint", f"script/{_how}/{_file}", _script_case(_file, _how), names=(_file,), timeout_s=CKPT_TIMEOUT,
                  note="scripts/distill.py --resume_from_checkpoint"))


# ----------------------------------------------------------------------------------------------------------------------
# model_folder


def _student(ctx) -> Path:
    folder = ctx.work / "student"
    shutil.copytree(FIXTURES["student"], folder)
    return folder


def _load_backbone(folder):
    def thunk():
        from snd.distill.build import load_backbone
        from snd.distill.config import ModelConfig

        load_backbone(ModelConfig(pretrained=str(folder)))

    return thunk


def _auto_model(folder):
    def thunk():
        import snd  # noqa: F401 - registers the Auto classes
        from transformers import AutoModel

        AutoModel.from_pretrained(str(folder))

    return thunk


def _config_raw_case(content: bytes, loader=_load_backbone):
    def setup(ctx):
        folder = _student(ctx)
        (folder / "config.json").write_bytes(content)
        return loader(folder)

    return setup


CFG = "student/config.json"
for _name, _content in (("empty", b""), ("non_utf8", b'{"model_type": "snd\xe9"}'), ("deep", b"[" * 200_000), ("list", b"[1, 2]"),
                        ("string", b'"snd_dinov2"'), ("torn", b'{"model_type": "snd_dinov2", ')):
    register(Case("model_folder", f"config.json/{_name}", _config_raw_case(_content), names=(CFG,), note=f"config.json {_name}"))
for _name in ("fifo", "directory", "symlink_out"):
    def _setup(ctx, _name=_name):
        folder = _student(ctx)
        _damage(folder / "config.json", _name, ctx)
        return _load_backbone(folder)

    register(Case("model_folder", f"config.json/{_name}", _setup, names=(CFG,), note=f"config.json is a {_name}"))


def _config_field_case(field, value, loader=_load_backbone):
    def setup(ctx):
        folder = _student(ctx)
        config = json.loads((folder / "config.json").read_text())
        if value is _DELETE:
            config.pop(field, None)
        else:
            config[field] = value
        (folder / "config.json").write_text(json.dumps(config))
        return loader(folder)

    return setup


_DELETE = object()
ARCH_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size", "image_size", "num_channels", "mlp_ratio",
               "layer_norm_eps", "num_register_tokens")
BAD_VALUES = (("nan", float("nan")), ("negative", -1), ("zero", 0), ("string", "big"), ("list", [32]))
VALID_FIELD_VALUES = {
    ("num_register_tokens", "zero"): "0 registers is the default",
}
for _field in ARCH_FIELDS:
    for _label, _value in BAD_VALUES:
        _note = VALID_FIELD_VALUES.get((_field, _label))
        register(Case("model_folder", f"config.json/{_field}/{_label}", _config_field_case(_field, _value), names=(_field, CFG),
                      valid=_note is not None, note=_note or f"config.json {_field}={_value!r}"))
for _field, _value in (("model_type", "no_such_model"), ("model_type", 7), ("position_interpolation", "cubic"), ("hidden_act", "swishy"),
                       ("use_swiglu_ffn", "yes"), ("qkv_bias", "no"), ("hidden_size", 64)):
    register(Case("model_folder", f"config.json/{_field}/{_value!r}", _config_field_case(_field, _value), names=(_field, CFG),
                  note=f"config.json {_field}={_value!r}"))
for _field, _value in (("hidden_size", float("nan")), ("num_hidden_layers", -1), ("patch_size", 0), ("image_size", "big")):
    register(Case("model_folder", f"automodel/config.json/{_field}/{_value!r}", _config_field_case(_field, _value, _auto_model),
                  names=(_field, CFG), note=f"AutoModel.from_pretrained, {_field}={_value!r}"))


WEIGHTS = "student/model.safetensors"


def _weights_case(edit, loader=_load_backbone):
    def setup(ctx):
        folder = _student(ctx)
        edit(ctx, folder / "model.safetensors")
        return loader(folder)

    return setup


def _header_lie(ctx, path):
    """Keep the file, rewrite one tensor's data_offsets in the header to reach far beyond the file."""
    import struct

    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    key = next(k for k in sorted(header) if k != "__metadata__")
    start = header[key]["data_offsets"][0]
    header[key]["data_offsets"] = [start, start + 2**40]
    header[key]["shape"] = [2**38]
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data[8 + length :])


def _header_length_bomb(ctx, path):
    import struct

    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 2**60) + data[8:])


def _weights_edit(edit):
    def apply(ctx, path):
        from safetensors.torch import load_file, save_file

        tensors = load_file(str(path))
        edit(tensors)
        save_file(tensors, str(path), metadata={"format": "pt"})

    return apply


WEIGHT_CASES = [
    ("empty", lambda c, p: p.write_bytes(b""), False, ""),
    ("truncated", lambda c, p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), False, ""),
    ("random", lambda c, p: p.write_bytes(os.urandom(4096)), False, ""),
    ("fifo", lambda c, p: _damage(p, "fifo", c), False, "would block a reader"),
    ("directory", lambda c, p: _damage(p, "directory", c), False, ""),
    ("deleted", lambda c, p: p.unlink(), False, "config.json but no weights"),
    ("header_offsets_lie", _header_lie, False, "a tensor's data_offsets claim a TiB"),
    ("header_length_bomb", _header_length_bomb, False, "a header length of 2**60"),
    ("nan_values", _weights_edit(_st_nan), False, "NaN weights"),
    ("wrong_shape", _weights_edit(_st_shape), False, ""),
    ("missing_tensor", _weights_edit(_st_missing), False, "a weight missing: transformers would initialise it randomly"),
    ("all_missing", _weights_edit(lambda t: [t.pop(k) for k in list(t)[1:]]), False, "only one tensor left"),
    ("int64_dtype", _weights_edit(lambda t: t.update({k: v.to(__import__("torch").int64) for k, v in t.items()})), False, ""),
    ("float16_dtype", _weights_edit(lambda t: t.update({k: v.half() for k, v in t.items()})), True,
     "half-precision weights of the right shapes are a legitimate save (cast on load)"),
    ("extra_tensor", _weights_edit(_st_extra), True, "an unused extra tensor is ignored with a warning, as transformers does"),
]
for _name, _edit, _valid, _note in WEIGHT_CASES:
    register(Case("model_folder", f"model.safetensors/{_name}", _weights_case(_edit), names=(WEIGHTS,), valid=_valid,
                  note=_note or f"model.safetensors {_name}"))
for _name, _edit in (("truncated", WEIGHT_CASES[1][1]), ("nan_values", _weights_edit(_st_nan)), ("missing_tensor", _weights_edit(_st_missing))):
    register(Case("model_folder", f"automodel/model.safetensors/{_name}", _weights_case(_edit, _auto_model), names=(WEIGHTS,),
                  note=f"AutoModel.from_pretrained, model.safetensors {_name}"))


PRE = "preprocessor_config.json"


def _preprocessor_case(field, value):
    def setup(ctx):
        folder = _student(ctx)
        path = folder / PRE
        values = json.loads(path.read_text())
        if value is _DELETE:
            values.pop(field, None)
        else:
            values[field] = value
        path.write_text(json.dumps(values))

        def thunk():
            from snd.backbones import read_preprocessor_config

            read_preprocessor_config(path)

        return thunk

    return setup


def _label(value) -> str:
    return "nan" if isinstance(value, float) and math.isnan(value) else "inf" if value == float("inf") else \
        json.dumps(value, separators=(",", ":"), allow_nan=True).replace(" ", "_")


PREPROCESSOR_CASES = [
    ("image_mean", float("nan"), False, ""), ("image_mean", "imagenet", False, ""), ("image_mean", [], False, ""),
    ("image_mean", [0.5, 0.5], False, "2 values for 3 channels"), ("image_mean", [0.485, float("inf"), 0.406], False, ""),
    ("image_mean", -1, True, "a negative mean is a legitimate (if odd) normalisation"), ("image_mean", 0, True, "a scalar mean 0"),
    ("image_std", 0, False, ""), ("image_std", -1, False, ""), ("image_std", float("nan"), False, ""), ("image_std", "x", False, ""),
    ("image_std", [0.2, 0.2], False, "2 values for 3 channels"), ("image_std", [0.229, 0.0, 0.225], False, ""),
    ("size", 0, False, ""), ("size", -1, False, ""), ("size", "224", False, ""), ("size", {"height": 0, "width": 224}, False, ""),
    ("size", {"height": "a", "width": 224}, False, ""), ("size", 1.5, False, ""), ("size", [224, 224], False, ""),
    ("size", {"shortest_edge": 224}, True, "transformers' shortest_edge form"),
    ("crop_size", 0, False, ""), ("crop_size", {"height": -5, "width": 5}, False, ""), ("crop_size", "big", False, ""),
    ("rescale_factor", float("nan"), False, ""), ("rescale_factor", "1/255", False, ""), ("rescale_factor", 0, False, ""),
    ("resample", 99, False, "no such PIL resampling filter"), ("resample", "bicubic", False, ""),
    ("do_normalize", "yes", False, ""), ("do_resize", [1], False, ""),
    ("image_processor_type", 5, False, ""),
]
for _field, _value, _valid, _note in PREPROCESSOR_CASES:
    register(Case("model_folder", f"{PRE}/{_field}/{_label(_value)}", _preprocessor_case(_field, _value), names=(_field,), valid=_valid,
                  note=_note or f"{PRE} {_field}={_value!r}"))
for _name in ("empty", "non_utf8", "deep_json", "fifo", "directory"):
    def _setup(ctx, _name=_name):
        folder = _student(ctx)
        path = folder / PRE
        _damage(path, _name, ctx)

        def thunk():
            from snd.backbones import read_preprocessor_config

            read_preprocessor_config(path)

        return thunk

    register(Case("model_folder", f"{PRE}/{_name}", _setup, names=(PRE,), note=f"{PRE} {_name}"))


# ----------------------------------------------------------------------------------------------------------------------
# feature_tensor


def _feature_case(make, expected_shape=None):
    def setup(ctx):
        path = ctx.work / "pca_before_features.pt"
        make(ctx, path)

        def thunk():
            from snd.distill.checkpoints import load_feature_tensor

            load_feature_tensor(path, expected_shape)

        return thunk

    return setup


def _save(value_fn):
    def make(ctx, path):
        import torch

        torch.save(value_fn(torch, ctx), path)

    return make


FEAT = "pca_before_features.pt"
FEATURE_CASES = [
    ("valid", _save(lambda t, c: t.randn(2, 8, 3, 4)), None, True, "a normal [B, C, h, w] feature map"),
    ("valid_permuted_view", _save(lambda t, c: t.randn(2, 3, 4, 8).permute(0, 3, 1, 2)), None, True, "what the trainer saves (permuted)"),
    ("valid_float16", _save(lambda t, c: t.randn(8, 3, 4).half()), None, True, "half-precision features"),
    ("stride0_huge", _save(lambda t, c: t.zeros(1).expand(2**40)), None, False, "stride-0 view of 2**40 elements"),
    ("stride0_small", _save(lambda t, c: t.zeros(1, 4).expand(64, 4)), None, False, "stride-0 view (repeats elements)"),
    ("build_bomb", _save(lambda t, c: _BuildBomb()), None, False, ""),
    ("storage_bomb", _save(lambda t, c: _StorageBomb()), None, False, ""),
    ("storage_size_lie", lambda c, p: _lying_storage_size(p, __import__("torch").arange(6.0)), None, False, ""),
    ("int64", _save(lambda t, c: t.arange(12).reshape(3, 4)), None, False, ""),
    ("bool", _save(lambda t, c: t.ones(3, 4, dtype=t.bool)), None, False, ""),
    ("complex", _save(lambda t, c: t.ones(3, 4, dtype=t.complex64)), None, False, ""),
    ("nan", _save(lambda t, c: t.full((3, 4), float("nan"))), None, False, ""),
    ("inf", _save(lambda t, c: t.full((3, 4), float("inf"))), None, False, ""),
    ("dict", _save(lambda t, c: {"features": t.randn(3, 4)}), None, False, ""),
    ("payload", _save(lambda t, c: _Payload(c.marker)), None, False, "code-execution pickle"),
    ("sparse", _save(lambda t, c: t.randn(4, 4).to_sparse()), None, False, ""),
    ("wrong_shape", _save(lambda t, c: t.randn(2, 3)), (2, 8, None, None), False, ""),
    ("deep_nesting", lambda c, p: _torch_save_raw_pickle(p, _deep_list_pickle(200_000)), None, False, ""),
    ("empty", lambda c, p: p.write_bytes(b""), None, False, ""),
    ("truncated", lambda c, p: (_save(lambda t, c: t.randn(64, 64))(c, p), p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])), None, False, ""),
    ("random", lambda c, p: p.write_bytes(os.urandom(2048)), None, False, ""),
    ("fifo", lambda c, p: os.mkfifo(p), None, False, ""),
    ("directory", lambda c, p: p.mkdir(), None, False, ""),
    ("legacy_format", lambda c, p: __import__("torch").save(__import__("torch").randn(3, 4), p, _use_new_zipfile_serialization=False), None, True,
     "torch's pre-1.6 (non-zip) format: a legitimate tensor file"),
    ("plain_pickle", lambda c, p: p.write_bytes(pickle.dumps([1.0, 2.0])), None, False, "a plain pickle, not torch.save"),
]
for _name, _make, _shape, _valid, _note in FEATURE_CASES:
    register(Case("feature_tensor", _name, _feature_case(_make, _shape), names=(FEAT,), valid=_valid, note=_note or f"{FEAT}: {_name}"))


# ----------------------------------------------------------------------------------------------------------------------
# converter


def _convert_backbone_script(ctx, source: Path, output: Path | None = None, extra=()):
    from tests.script_main import script_main

    output = output or ctx.work / "converted"
    argv = ["--input", str(source), "--format", "torchhub", "--preset", "tiny", "--output", str(output), *extra]
    return lambda: sys.exit(script_main("convert_checkpoint", argv))


def _convert_mvsplat_script(ctx, source: Path, output: Path | None = None, extra=()):
    from tests.script_main import script_main

    output = output or ctx.work / "converted"
    argv = ["--input", str(source), "--output", str(output), *extra]
    return lambda: sys.exit(script_main("convert_mvsplat", argv))


def _hub_state():
    import torch

    return torch.load(FIXTURES["torchhub"], weights_only=True)


def _backbone_input(edit):
    def setup(ctx):

        path = ctx.work / "dinov2_tiny.pth"
        _write_edited(ctx, path, _hub_state(), edit)
        return _convert_backbone_script(ctx, path)

    return setup


def _write_edited(ctx, path, value, edit):
    """``edit(ctx, value)`` edits in place (returns None), returns a replacement object, or returns raw bytes."""
    result = edit(ctx, value)
    if isinstance(result, bytes):
        path.write_bytes(result)
    else:
        torch.save(value if result is None else result, path)


def _nan_first(ctx, state):
    key = next(k for k in sorted(state) if state[k].dim() >= 2)
    state[key] = state[key].clone().fill_(float("nan"))


BACKBONE_CASES = [
    ("storage_bomb", lambda c, s: {**s, "args": _StorageBomb()}, ""),
    ("payload", lambda c, s: {**s, "args": _Payload(c.marker)}, "code-execution pickle"),
    ("build_bomb", lambda c, s: {**s, "pos_embed": _BuildBomb()}, ""),
    ("stride0", lambda c, s: {**s, "pos_embed": __import__("torch").zeros(1).expand(2**40)}, ""),
    ("missing_key", lambda c, s: {k: v for k, v in s.items() if k != "norm.weight"}, "norm.weight missing"),
    ("wrong_shape", lambda c, s: {**s, "norm.weight": __import__("torch").zeros(7)}, ""),
    ("nan_weights", _nan_first, ""),
    ("not_a_dict", lambda c, s: [1, 2, 3], ""),
    ("non_tensor_values", lambda c, s: {**s, "norm.weight": "w"}, ""),
    ("empty", lambda c, s: b"", ""),
    ("truncated", lambda c, s: FIXTURES["torchhub"].read_bytes()[: FIXTURES["torchhub"].stat().st_size // 2], ""),
    ("random", lambda c, s: os.urandom(4096), ""),
    ("deep_nesting", None, ""),
]
for _name, _edit, _note in BACKBONE_CASES:
    if _edit is None:
        def _setup(ctx):
            path = ctx.work / "dinov2_tiny.pth"
            _torch_save_raw_pickle(path, _deep_list_pickle(200_000))
            return _convert_backbone_script(ctx, path)
    else:
        _setup = _backbone_input(_edit)
    register(Case("converter", f"convert_checkpoint/{_name}", _setup, names=("dinov2_tiny.pth",) + (("norm.weight",) if "key" in _name or "shape" in _name else ()),
                  note=_note or f"torch.hub checkpoint: {_name}"))


def _fifo_input(ctx):
    path = ctx.work / "dinov2_tiny.pth"
    os.mkfifo(path)
    return _convert_backbone_script(ctx, path)


register(Case("converter", "convert_checkpoint/fifo", _fifo_input, names=("dinov2_tiny.pth",), note="the input is a FIFO"))


def _existing_output(kind):
    def setup(ctx):
        source = ctx.work / "dinov2_tiny.pth"
        shutil.copy(FIXTURES["torchhub"], source)
        if kind == "folder":
            output = ctx.work / "mine"
            output.mkdir()
            (output / "notes.txt").write_text("keep me")
        elif kind == "file":
            output = ctx.work / "mine.bin"
            output.write_bytes(b"user data")
        elif kind == "symlink_to_folder":
            target = ctx.work / "elsewhere"
            target.mkdir()
            (target / "notes.txt").write_text("keep me")
            output = ctx.work / "mine"
            output.symlink_to(target)
            ctx.protect(target)
        elif kind == "input_itself":
            output = source
        ctx.protect(output)
        return _convert_backbone_script(ctx, source, output)

    return setup


for _kind in ("folder", "file", "symlink_to_folder", "input_itself"):
    register(Case("converter", f"convert_checkpoint/output_exists/{_kind}", _existing_output(_kind), names=("mine", "dinov2_tiny.pth"),
                  note="the output holds the user's data; no --overwrite"))


def _overwrite_input_folder(ctx):
    """--overwrite where the output is the folder holding the input: converting must not delete its own input."""
    folder = ctx.work / "models"
    folder.mkdir()
    source = folder / "dinov2_tiny.pth"
    shutil.copy(FIXTURES["torchhub"], source)
    ctx.protect(source)
    return _convert_backbone_script(ctx, source, folder, extra=("--overwrite",))


register(Case("converter", "convert_checkpoint/overwrite_folder_holding_input", _overwrite_input_folder, names=("models", "dinov2_tiny.pth"),
              note="--output is the folder that holds --input, with --overwrite"))


def _mvsplat_input(edit):
    def setup(ctx):
        import torch

        path = ctx.work / "re10k.ckpt"
        _write_edited(ctx, path, torch.load(FIXTURES["mvsplat"], weights_only=True), edit)
        return _convert_mvsplat_script(ctx, path)

    return setup


def _mv_nan(ctx, checkpoint):
    state = checkpoint["state_dict"]
    key = next(k for k in sorted(state) if k.startswith("encoder.") and state[k].dim() >= 2)
    state[key] = state[key].clone().fill_(float("nan"))


def _mv_missing(ctx, checkpoint):
    state = checkpoint["state_dict"]
    del state[next(k for k in sorted(state) if k.startswith("encoder.backbone"))]


def _mv_shape(ctx, checkpoint):
    import torch

    state = checkpoint["state_dict"]
    key = next(k for k in sorted(state) if k.startswith("encoder.backbone") and state[k].dim() >= 2)
    state[key] = torch.zeros(3, 3)


MVSPLAT_CASES = [
    ("payload", lambda c, k: {**k, "hyper_parameters": _Payload(c.marker)}, "code-execution pickle in the Lightning dict"),
    ("storage_bomb", lambda c, k: {**k, "optimizer_states": [_StorageBomb()]}, ""),
    ("no_state_dict", lambda c, k: {x: v for x, v in k.items() if x != "state_dict"}, ""),
    ("state_dict_list", lambda c, k: {**k, "state_dict": [1]}, ""),
    ("missing_key", _mv_missing, ""),
    ("wrong_shape", _mv_shape, ""),
    ("nan_weights", _mv_nan, ""),
    ("truncated", lambda c, k: FIXTURES["mvsplat"].read_bytes()[: FIXTURES["mvsplat"].stat().st_size // 3], ""),
]
for _name, _edit, _note in MVSPLAT_CASES:
    _valid = _name == "payload"
    register(Case("converter", f"convert_mvsplat/{_name}", _mvsplat_input(_edit), names=() if _valid else ("re10k.ckpt",), timeout_s=120,
                  valid=_valid, note="Lightning checkpoints carry pickled hyper-parameters; snd reads them as inert placeholders "
                  "(never called) and converts the tensors: valid, and a payload that ran would still show as code_exec"
                  if _valid else _note or f"MVSplat checkpoint: {_name}"))


def _mvsplat_output_exists(ctx):
    source = ctx.work / "re10k.ckpt"
    shutil.copy(FIXTURES["mvsplat"], source)
    output = ctx.work / "mine"
    output.mkdir()
    (output / "notes.txt").write_text("keep me")
    ctx.protect(output)
    return _convert_mvsplat_script(ctx, source, output)


register(Case("converter", "convert_mvsplat/output_exists", _mvsplat_output_exists, names=("mine",), timeout_s=120,
              note="the output folder holds the user's files"))


def _valid_conversion(ctx):
    source = ctx.work / "dinov2_tiny.pth"
    shutil.copy(FIXTURES["torchhub"], source)
    empty = ctx.work / "empty"
    empty.mkdir()
    return _convert_backbone_script(ctx, source, empty)


register(Case("converter", "convert_checkpoint/valid_into_empty_folder", _valid_conversion, valid=True, note="an empty output folder is fine"))
