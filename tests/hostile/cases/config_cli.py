"""Probe cases for the training configuration, the scripts' command lines and the output folders (issue 21).

Families:

* ``config``: YAML files given to ``snd.distill.config.load_config`` and the dotted command-line overrides: files
  that are not YAML mappings (FIFO, directory, binary, deep nesting, alias bombs, code-running tags...), and every
  numeric field of every config dataclass x {nan, inf, -inf, -1, 0, a string, a list}, every bool field x
  {"maybe", 2}, every enum-like string field x an unknown value, unknown keys and architecture fields, ``#`` in a
  command-line string value. Values that are legitimately valid (0 for a weight decay) are controls.
* ``cli``: ``scripts/distill.py`` and ``scripts/evaluate.py`` ``main(argv)`` with missing sources, unknown flags, bad
  values, a bad ``--resume_from_checkpoint``. A script's non-zero status is raised as ``SystemExit`` so the harness
  reads what it wrote to stderr.
* ``output_dir``: a user's files in ``--output_dir`` (with and without ``--overwrite_output_dir``), a locked folder,
  resuming one run into another folder, evaluate.py and the converters writing over earlier outputs.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import time
import typing
from pathlib import Path

from tests.hostile.harness import Case, register

C, CLI, OUT = "config", "cli", "output_dir"
FIXTURES: dict[str, Path] = {}


def prepare(fixture_dir: Path) -> None:
    """One finished tiny run (2 steps; student/, teacher/, checkpoint-00000002 ...), built once."""
    fixture_dir.mkdir(parents=True, exist_ok=True)
    run = fixture_dir / "run"
    # launched, not in-process: Accelerate's process-wide state must not be initialised in the parent that forks the
    # cases (a case asking for another mixed precision would then fail on the inherited state)
    from tests.distill.helpers import run_distill

    run_distill([*_tiny(), "--output_dir", str(run)], timeout=300)
    FIXTURES["run"] = run


def _tiny() -> list[str]:
    from tests.distill.helpers import TINY

    return [*TINY, "--training.max_steps", "2"]


def _script(name: str, argv: list) -> object:
    """``scripts/<name>.py`` main(argv) as a user runs it: a non-zero status ends the process (SystemExit)."""
    from tests.script_main import script_main

    code = script_main(name, [str(arg) for arg in argv])
    if code not in (0, None):
        raise SystemExit(code)
    return code


def _distill(argv: list) -> object:
    return _script("distill", [*_tiny(), *argv])


def _copy_run(ctx, name: str = "runA") -> Path:
    target = ctx.work / name
    shutil.copytree(FIXTURES["run"], target)
    return target


# ------------------------------------------------------------------------------------------------------ config
def _load(path=None, overrides=None):
    from snd.distill.config import load_config

    return lambda: load_config(path, overrides)


def _yaml_file(ctx, text: str, name: str = "bad.yaml") -> Path:
    path = ctx.work / name
    path.write_text(text)
    return path


def _config_file_case(name, text_or_bytes, names, valid=False, note="", filename="bad.yaml", timeout_s=30):
    def setup(ctx):
        path = ctx.work / filename
        if isinstance(text_or_bytes, bytes):
            path.write_bytes(text_or_bytes)
        else:
            path.write_text(text_or_bytes)
        return _load(path)

    register(Case(C, name, setup, tuple(names), valid, timeout_s, note))


_LAUGHS = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9)
)
_config_file_case("file/billion_laughs", _LAUGHS, ["bad.yaml"], note="aliases of aliases: 10^9 nodes")
_config_file_case("file/empty", "", (), valid=True, note="an empty file is the embedded default")
_config_file_case("file/comment_only", "# nothing set yet\n", (), valid=True, note="only a comment: the embedded default")
_config_file_case("file/latin1", "training:\n  output_dir: caf\xe9\n".encode("latin-1"), ["bad.yaml"], note="non-UTF-8 bytes")
_config_file_case("file/random_bytes", bytes(range(256)) * 64, ["bad.yaml"], note="binary garbage")
_config_file_case("file/utf16", "training:\n  lr: 0.001\n".encode("utf-16"), ["bad.yaml"], note="UTF-16 with BOM")
_config_file_case("file/deep_lists", "[" * 200_000 + "]" * 200_000, ["bad.yaml"], note="nesting deeper than the parser")
_config_file_case("file/deep_maps", "".join(" " * i + "a:\n" for i in range(3000)) + " " * 3000 + "b: 1\n", ["bad.yaml"],
                  note="3000 nested mappings")
_config_file_case("file/top_level_list", "- training\n- model\n", ["bad.yaml"], note="a list, not a mapping")
_config_file_case("file/top_level_scalar", "42\n", ["bad.yaml"], note="a number, not a mapping")
_config_file_case("file/top_level_string", "training.lr=1e-3\n", ["bad.yaml"], note="an override line written as the file")
_config_file_case("file/syntax_error", "training:\n  lr: [1e-3\n  batch_size: 2\n", ["bad.yaml"], note="unclosed bracket")
_config_file_case("file/tabs", "training:\n\tlr: 0.001\n", ["bad.yaml"], note="tab indentation")
_config_file_case("file/unknown_section", "trainig:\n  lr: 0.001\n", ["trainig"], note="misspelt section")
_config_file_case("file/unknown_key", "training:\n  lrr: 0.001\n", ["lrr"], note="misspelt key")
_config_file_case("file/unknown_key_head", "head:\n  num_protoypes: 64\n", ["num_protoypes"], note="misspelt key")
_config_file_case("file/duplicate_key", "training:\n  lr: 0.001\n  batch_size: 2\n  lr: 0.1\n", ["lr"],
                  note="the same key twice: which one holds?")
_config_file_case("file/duplicate_section", "training:\n  lr: 0.001\ndata:\n  num_scenes: 2\ntraining:\n  batch_size: 2\n",
                  ["training"], note="a section given twice: the first one's fields would vanish")
_config_file_case("file/section_scalar", "training: 5\n", ["training"], note="a section as a number")
_config_file_case("file/section_list", "training:\n  - lr: 0.001\n", ["training"], note="a section as a list")
_config_file_case("file/section_null", "training:\n", (), valid=True, note="an empty section keeps the defaults")
_config_file_case("file/python_object_apply", "training: !!python/object/apply:pathlib.Path.touch [MARKER]\n",
                  ["bad.yaml"], note="code-running tag")
_config_file_case("file/python_name", "training:\n  lr: !!python/name:os.system\n", ["bad.yaml"], note="python/name tag")
_config_file_case("file/python_new", "model: !!python/object/new:collections.OrderedDict [[[a, 1]]]\n", ["bad.yaml"],
                  note="python/object/new tag")
_config_file_case("file/base_unknown", "base: scannetpp_dinov2_s\n", ["scannetpp_dinov2_s"], note="misspelt preset in base:")
_config_file_case("file/base_number", "base: 3\n", ["base"], note="base: a number")
_config_file_case("file/base_self", "base: bad.yaml\n", ["bad.yaml"], note="base: itself")
_config_file_case("file/base_missing_file", "base: other.yaml\n", ["other.yaml"], note="base: a file that is not there")
_config_file_case("file/config_overrides_unknown", "base: tiny_synthetic\nmodel:\n  config_overrides:\n    num_hiden_layers: 2\n",
                  ["num_hiden_layers"], note="misspelt architecture field")
_config_file_case("file/config_overrides_list", "base: tiny_synthetic\nmodel:\n  config_overrides: [1, 2]\n",
                  ["config_overrides"], note="architecture overrides as a list")
_config_file_case("file/config_overrides_negative", "base: tiny_synthetic\nmodel:\n  config_overrides:\n    hidden_size: -8\n",
                  ["hidden_size"], note="negative width")
_config_file_case("file/config_overrides_nan", "base: tiny_synthetic\nmodel:\n  config_overrides:\n    layer_norm_eps: .nan\n",
                  ["layer_norm_eps"], note="NaN epsilon")
_config_file_case("file/config_overrides_string", "base: tiny_synthetic\nmodel:\n  config_overrides:\n    num_hidden_layers: two\n",
                  ["num_hidden_layers"], note="a word for a layer count")
_config_file_case("file/config_overrides_heads_zero", "base: tiny_synthetic\nmodel:\n  config_overrides:\n    num_attention_heads: 0\n",
                  ["num_attention_heads"], note="zero heads")
_config_file_case("file/config_overrides_ok", "base: tiny_synthetic\nmodel:\n  config_overrides:\n    num_hidden_layers: 2\n", (),
                  valid=True, note="a known architecture field")
_config_file_case("file/config_overrides_with_pretrained",
                  "base: tiny_synthetic\nmodel:\n  pretrained: facebook/dinov2-small\n  config_overrides:\n    num_hiden_layers: 2\n",
                  ["config_overrides"], note="architecture overrides with a pretrained model: ignored?")


def _special_file_case(name, make, names, note):
    def setup(ctx):
        path = ctx.work / "cfg.yaml"
        make(ctx, path)
        return _load(path)

    register(Case(C, name, setup, tuple(names), False, 30, note))


_special_file_case("file/fifo", lambda ctx, p: os.mkfifo(p), ["cfg.yaml"], "a named pipe: open() would block")
_special_file_case("file/directory", lambda ctx, p: p.mkdir(), ["cfg.yaml"], "a directory named like a config")
_special_file_case("file/dev_zero", lambda ctx, p: p.symlink_to("/dev/zero"), ["cfg.yaml"], "symlink to /dev/zero")
_special_file_case("file/dangling_symlink", lambda ctx, p: p.symlink_to(ctx.work / "gone.yaml"), ["cfg.yaml"], "dangling symlink")
_special_file_case("file/missing", lambda ctx, p: None, ["cfg.yaml"], "no such file")
_special_file_case("file/huge", lambda ctx, p: p.write_bytes(b"# " + b"x" * (17 * 2**20) + b"\n"), ["cfg.yaml"],
                   "17 MiB config")
_special_file_case("file/unreadable_base_fifo", lambda ctx, p: (os.mkfifo(ctx.work / "b.yaml"), p.write_text("base: b.yaml\n")),
                   ["b.yaml"], "base: a FIFO")


def _loop(ctx, path):
    (ctx.work / "other.yaml").write_text("base: cfg.yaml\n")
    path.write_text("base: other.yaml\n")


_special_file_case("file/base_loop", _loop, ["cfg.yaml", "other.yaml"], "a base: chain that loops")


def _marker_tag(ctx, path):
    path.write_text(f"training: !!python/object/apply:os.system ['touch {ctx.marker}']\n")


_special_file_case("file/python_os_system", _marker_tag, ["cfg.yaml"], "code execution attempt (os.system touch)")

# ---- every numeric / bool / enum field of every config dataclass
_VALUES = {
    # value key: (how it is given, text)
    "nan": ("yaml", ".nan"),
    "inf": ("override", "inf"),
    "-inf": ("yaml", "-.inf"),
    "neg": ("override", "-1"),
    "zero": ("yaml", "0"),
    "str": ("override", "abc"),
    "list": ("yaml", "[1, 2]"),
}
# (field, value key) pairs that are legitimately valid: the field means something sensible there.
_VALID = {
    ("model.lora_dropout", "zero"): "no dropout",
    ("teacher.momentum", "zero"): "teacher follows the student exactly (range [0, 1])",
    ("teacher.blend_alpha", "zero"): "blend weight in [0, 1]",
    ("data.num_workers", "zero"): "load in the main process (the default)",
    ("training.weight_decay", "zero"): "no weight decay (the default)",
    ("training.warmup_fraction", "zero"): "no warm-up",
    ("training.one_cycle_extra_steps", "zero"): "schedule spans exactly max_steps",
    ("training.max_grad_norm", "zero"): "0 disables clipping (documented)",
    ("training.seed", "zero"): "seed 0 (the default)",
    ("training.checkpoint_every", "zero"): "0: only at the end (documented)",
    ("training.log_images_every", "zero"): "0 disables (documented)",
    ("training.max_empty_steps", "zero"): "0 disables (documented)",
    ("training.max_skipped_steps", "zero"): "stop at the first skipped step",
}


def _numeric_fields():
    from snd.distill.config import DistillConfig

    fields = []
    for section in dataclasses.fields(DistillConfig):
        cls = section.default_factory
        hints = typing.get_type_hints(cls)
        for item in dataclasses.fields(cls):
            kinds = {hints[item.name]} | set(typing.get_args(hints[item.name]))
            if kinds & {int, float} and bool not in kinds:
                fields.append(f"{section.name}.{item.name}")
            if item.name == "adam_betas":
                fields.append(f"{section.name}.{item.name}")
    return fields


def _fields_of(kind):
    from snd.distill.config import DistillConfig

    out = []
    for section in dataclasses.fields(DistillConfig):
        cls = section.default_factory
        hints = typing.get_type_hints(cls)
        out += [f"{section.name}.{f.name}" for f in dataclasses.fields(cls) if hints[f.name] is kind]
    return out


def _field_case(field, key, how, text, valid=False, note=""):
    section, name = field.split(".")

    def setup(ctx):
        if how == "override":
            return _load("tiny_synthetic", [f"{field}={text}"])
        path = _yaml_file(ctx, f"base: tiny_synthetic\n{section}:\n  {name}: {text}\n")
        return _load(path)

    register(Case(C, f"field/{field}={key}", setup, () if valid else (field,), valid, 30,
                  note or f"{field} = {text} ({'command line' if how == 'override' else 'YAML file'})"))


for _field in _numeric_fields():
    for _key, (_how, _text) in _VALUES.items():
        if _field == "training.adam_betas" and _key == "list":
            _text = "[0.9]"
        _field_case(_field, _key, _how, _text, valid=(_field, _key) in _VALID, note=_VALID.get((_field, _key), ""))

for _index, _field in enumerate(_fields_of(bool)):
    _field_case(_field, "maybe", "override", "maybe")
    _field_case(_field, "two", "yaml", "2")

_ENUMS = [
    "model.finetune", "loss.kind", "loss.average", "teacher.upsample", "teacher.upsample_fallback", "teacher.render_backend",
    "teacher.splat_covariance", "teacher.principal_point", "teacher.holes", "teacher.target", "teacher.update_timing",
    "training.float32_matmul_precision", "data.context_gap", "data.scene_selection", "lifter.kind", "data.dataset",
    "training.schedule", "training.mixed_precision", "training.nonfinite_loss", "training.distributed", "training.report_to",
    "model.preset", "model.lora_target_modules",
]
for _index, _field in enumerate(_ENUMS):
    _field_case(_field, "unknown", "override" if _index % 2 == 0 else "yaml", "bogus_value")


# ---- overrides and their command-line spelling
def _override_case(name, overrides, names, valid=False, note="", check=None):
    def setup(ctx):
        from snd.distill.config import load_config

        def thunk():
            config = load_config("tiny_synthetic", overrides)
            if check is not None:
                check(config)
            return config

        return thunk

    register(Case(C, name, setup, tuple(names), valid, 30, note))


def _expect(field, value):
    def check(config):
        section, name = field.split(".")
        got = getattr(getattr(config, section), name)
        if got != value:
            raise AssertionError(f"{field} is {got!r}, the command line gave {value!r}")

    return check


_override_case("override/hash_output_dir", ["training.output_dir=runs/a #2"], (), valid=True,
               note="# inside a string value is not a comment", check=_expect("training.output_dir", "runs/a #2"))
_override_case("override/hash_hub_model_id", ["training.hub_model_id=me/run#3"], (), valid=True,
               check=_expect("training.hub_model_id", "me/run#3"))
_override_case("override/hash_pretrained", ["model.pretrained=models/v #1"], (), valid=True,
               check=_expect("model.pretrained", "models/v #1"))
_override_case("override/hash_report_to", ["training.report_to=none # trackers off"], ["training.report_to"],
               note="a shell comment pasted into a string value")
_override_case("override/number_with_comment", ["training.lr=1e-3 # faster"], (), valid=True,
               note="a number with a trailing YAML comment", check=_expect("training.lr", 1e-3))
_override_case("override/lr_1e-4", ["training.lr=1e-4"], (), valid=True, note="YAML 1.1 reads 1e-4 as a string",
               check=_expect("training.lr", 1e-4))
_override_case("override/bool_yes", ["data.preload=yes"], (), valid=True, note="YAML 1.1 yes", check=_expect("data.preload", True))
_override_case("override/mixed_precision_no", ["training.mixed_precision=no"], (), valid=True,
               check=_expect("training.mixed_precision", "no"))
_override_case("override/output_dir_yes", ["training.output_dir=yes"], (), valid=True, note="a folder named yes",
               check=_expect("training.output_dir", "yes"))
_override_case("override/no_equals", ["training.lr"], ["training.lr"], note="--set without =")
_override_case("override/no_section", ["lr=1e-3"], ["lr=1e-3"], note="key without its section")
_override_case("override/empty_part", ["training..lr=1"], ["training..lr"], note="empty key part")
_override_case("override/unknown_section", ["trainig.lr=1e-3"], ["trainig"], note="misspelt section")
_override_case("override/unknown_key", ["training.learning_rate=1e-3"], ["learning_rate"], note="transformers' name")
_override_case("override/into_a_value", ["training.lr.x=1"], ["training.lr.x", "lr"], note="a value used as a section")
_override_case("override/section_as_value", ["training=5"], ["training"], note="a whole section set to a number")
_override_case("override/python_tag", ["training.lr=!!python/object/apply:os.system ['true']"], ["training.lr"],
               note="code-running tag in a value")
_override_case("override/flow_mapping_for_int", ["training.batch_size={a: 1}"], ["training.batch_size"], note="a mapping")
_override_case("override/yaml_syntax", ["training.adam_betas=[0.9, 0.99"], ["training.adam_betas"], note="unclosed bracket")
_override_case("override/betas_three", ["training.adam_betas=[0.9, 0.99, 0.999]"], ["training.adam_betas"], note="three betas")
_override_case("override/betas_one", ["training.adam_betas=[1.0, 0.999]"], ["training.adam_betas"], note="beta1 = 1")
_override_case("override/betas_nan", ["training.adam_betas=[.nan, 0.999]"], ["training.adam_betas"], note="NaN beta")
_override_case("override/near_above_far", ["data.near=10", "data.far=5"], ["data.near", "data.far"], note="near > far")
_override_case("override/far_plane_below_near", ["teacher.near_plane=1.0", "teacher.far_plane=0.5"], ["teacher.far_plane"],
               note="the renderer's far plane in front of its near plane")
_override_case("override/max_gap_below_min", ["data.min_gap=5", "data.max_gap=2"], ["data.max_gap"], note="max_gap < min_gap")
_override_case("override/config_overrides_unknown", ["model.config_overrides={num_hiden_layers: 2}"], ["num_hiden_layers"],
               note="misspelt architecture field on the command line")
_override_case("override/config_overrides_string", ["model.config_overrides=hidden_size=64"], ["model.config_overrides"],
               note="a string where a mapping belongs")
_override_case("override/billion_laughs",
               ["model.config_overrides={a: &a [1,1,1,1,1,1,1,1,1,1], b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], "
                "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c], e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d], "
                "f: [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]}"], ["model.config_overrides"], note="alias bomb in a command-line value")
_override_case("override/lora_targets_empty", ["model.finetune=lora", "model.lora_target_modules=[]"], ["model.lora_target_modules"],
               note="LoRA on nothing")


def _flags_case(name, arguments, names, valid=False, note=""):
    def setup(ctx):
        from snd.distill.config import dotted_flags_to_overrides, load_config

        return lambda: load_config("tiny_synthetic", dotted_flags_to_overrides(arguments))

    register(Case(C, name, setup, tuple(names), valid, 30, note))


_flags_case("flags/dangling", ["--training.lr"], ["--training.lr"], note="flag without its value")
_flags_case("flags/single_dash", ["-training.lr", "1e-3"], ["-training.lr"], note="one dash")
_flags_case("flags/positional", ["1e-3"], ["1e-3"], note="a stray value")
_flags_case("flags/equals_and_value", ["--training.lr=1e-3", "1e-2"], ["1e-2"], note="--k=v followed by a stray value")
_flags_case("flags/flag_as_value", ["--training.output_dir", "--training.lr", "1e-3"], ["training.output_dir", "--training.lr"],
            note="the next flag taken as the value of a string field")
_flags_case("flags/hash_value", ["--training.output_dir", "runs/#1"], (), valid=True, note="# in a folder name")


# ------------------------------------------------------------------------------------------------------ cli
def _cli_case(name, make_argv, names, valid=False, note="", timeout_s=90, script="distill"):
    def setup(ctx):
        argv = make_argv(ctx)
        if script == "distill":
            return lambda: _distill(argv)
        return lambda: _script(script, argv)

    register(Case(CLI, name, setup, tuple(names), valid, timeout_s, note))


def _run_dir(ctx):
    return ["--output_dir", ctx.work / "run"]


_cli_case("distill/control_tiny", lambda ctx: _run_dir(ctx), (), valid=True, note="the tiny setting, 2 steps")
_cli_case("distill/pretrained_missing", lambda ctx: ["--model.pretrained", ctx.work / "no_such_model", *_run_dir(ctx)],
          ["no_such_model"], note="a model folder that is not there")
_cli_case("distill/pretrained_empty_dir", lambda ctx: ((ctx.work / "empty_model").mkdir(), ["--model.pretrained", ctx.work / "empty_model", *_run_dir(ctx)])[1],
          ["empty_model"], note="an empty folder as the model")
_cli_case("distill/pretrained_file", lambda ctx: ((ctx.work / "weights.bin").write_bytes(b"\0" * 64), ["--model.pretrained", ctx.work / "weights.bin", *_run_dir(ctx)])[1],
          ["weights.bin"], note="a junk file as the model")
_cli_case("distill/pretrained_hub_offline", lambda ctx: ["--model.pretrained", "nosuchuser/nosuchmodel", *_run_dir(ctx)],
          ["nosuchuser/nosuchmodel"], note="a Hub id while HF_HUB_OFFLINE=1")
_cli_case("distill/data_root_missing_nerfstudio", lambda ctx: ["--data.dataset", "nerfstudio", "--data.root", ctx.work / "no_data", *_run_dir(ctx)],
          ["no_data"], note="dataset root not there")
_cli_case("distill/data_root_missing_scannetpp", lambda ctx: ["--data.dataset", "scannetpp", "--data.root", ctx.work / "no_data", *_run_dir(ctx)],
          ["no_data"], note="dataset root not there")
_cli_case("distill/data_root_is_file", lambda ctx: ((ctx.work / "data.zip").write_bytes(b"PK"), ["--data.dataset", "nerfstudio", "--data.root", ctx.work / "data.zip", *_run_dir(ctx)])[1],
          ["data.zip"], note="an archive as the data root")
_cli_case("distill/data_root_empty_dir", lambda ctx: ((ctx.work / "scans").mkdir(), ["--data.dataset", "nerfstudio", "--data.root", ctx.work / "scans", *_run_dir(ctx)])[1],
          ["scans"], note="an empty data root")
_cli_case("distill/lifter_checkpoint_missing", lambda ctx: ["--lifter.kind", "mvsplat", "--lifter.checkpoint", ctx.work / "re10k.ckpt", *_run_dir(ctx)],
          ["re10k.ckpt"], note="the MVSplat checkpoint is not there")
_cli_case("distill/lifter_checkpoint_hub_offline", lambda ctx: ["--lifter.kind", "mvsplat", "--lifter.checkpoint", "nosuchuser/mvsplat", *_run_dir(ctx)],
          ["nosuchuser/mvsplat"], note="a Hub id while offline")
_cli_case("distill/lifter_checkpoint_junk", lambda ctx: ((ctx.work / "re10k.ckpt").write_bytes(b"junk" * 10), ["--lifter.kind", "mvsplat", "--lifter.checkpoint", ctx.work / "re10k.ckpt", *_run_dir(ctx)])[1],
          ["re10k.ckpt"], note="a junk checkpoint")
_cli_case("distill/unknown_flag", lambda ctx: ["--fast", *_run_dir(ctx)], ["--fast"], note="no such flag")
_cli_case("distill/unknown_dotted_key", lambda ctx: ["--training.lrr", "1e-3", *_run_dir(ctx)], ["lrr"], note="misspelt field")
_cli_case("distill/unknown_dotted_section", lambda ctx: ["--trainig.lr", "1e-3", *_run_dir(ctx)], ["trainig"], note="misspelt section")
_cli_case("distill/dangling_flag", lambda ctx: [*_run_dir(ctx), "--training.lr"], ["--training.lr"], note="flag without value")
_cli_case("distill/set_without_equals", lambda ctx: ["--set", "training.lr", *_run_dir(ctx)], ["training.lr"], note="--set k")
_cli_case("distill/max_steps_text", lambda ctx: ["--max_steps", "ten", *_run_dir(ctx)], ["--max_steps"], note="a word")
_cli_case("distill/max_steps_negative", lambda ctx: ["--max_steps", "-3", *_run_dir(ctx)], ["max_steps"], note="negative")
_cli_case("distill/max_steps_zero", lambda ctx: ["--max_steps", "0", *_run_dir(ctx)], ["max_steps"], note="zero steps")
_cli_case("distill/seed_negative", lambda ctx: ["--seed", "-1", *_run_dir(ctx)], ["seed"], note="numpy refuses negative seeds")
_cli_case("distill/seed_huge", lambda ctx: ["--seed", str(2**40), *_run_dir(ctx)], ["seed"], note="past numpy's 2**32 - 1")
_cli_case("distill/lr_nan", lambda ctx: ["--training.lr", "nan", *_run_dir(ctx)], ["training.lr"], note="NaN learning rate")
_cli_case("distill/batch_size_text", lambda ctx: ["--training.batch_size", "two", *_run_dir(ctx)], ["training.batch_size"], note="a word")
_cli_case("distill/config_missing", lambda ctx: ["--config", ctx.work / "my.yaml", *_run_dir(ctx)], ["my.yaml"], note="config file not there")
_cli_case("distill/config_preset_typo", lambda ctx: ["--config", "tiny_synthetik", *_run_dir(ctx)], ["tiny_synthetik"], note="misspelt preset")
_cli_case("distill/config_directory", lambda ctx: ((ctx.work / "configs").mkdir(), ["--config", ctx.work / "configs", *_run_dir(ctx)])[1],
          ["configs"], note="a folder as the config")
_cli_case("distill/mixed_precision_fp16_cpu", lambda ctx: ["--training.mixed_precision", "fp16", *_run_dir(ctx)], ["fp16"],
          note="fp16 on a CPU")
_cli_case("distill/report_to_missing_tracker", lambda ctx: ["--training.report_to", "wandb,trackio", *_run_dir(ctx)],
          ["training.report_to", "wandb", "trackio"], note="trackers that may not be installed")
_cli_case("distill/push_to_hub_offline", lambda ctx: ["--push_to_hub", "me/snd-run", *_run_dir(ctx)], ["push_to_hub", "me/snd-run"],
          note="no token, no network")
_cli_case("distill/resume_nothing", lambda ctx: ["--resume_from_checkpoint", ctx.work / "ckpt-gone", *_run_dir(ctx)], ["ckpt-gone"],
          note="resume from a folder that is not there")
_cli_case("distill/resume_file", lambda ctx: ((ctx.work / "ckpt.pt").write_bytes(b"x"), ["--resume_from_checkpoint", ctx.work / "ckpt.pt", *_run_dir(ctx)])[1],
          ["ckpt.pt"], note="resume from a file")
_cli_case("distill/resume_empty_dir", lambda ctx: ((ctx.work / "ckpt-empty").mkdir(), ["--resume_from_checkpoint", ctx.work / "ckpt-empty", *_run_dir(ctx)])[1],
          ["ckpt-empty"], note="resume from an empty folder")
_cli_case("distill/resume_latest_nothing", lambda ctx: ["--resume_from_checkpoint", "latest", "--output_dir", ctx.work / "fresh_out"], (),
          valid=True, note="documented: latest with no checkpoint yet starts fresh (auto-resume idiom)")
_cli_case("distill/resume_run_root", lambda ctx: ["--resume_from_checkpoint", _copy_run(ctx), "--output_dir", ctx.work / "runB"],
          ["runA"], note="the run folder instead of one of its checkpoints")
_cli_case("distill/resume_fifo", lambda ctx: (os.mkfifo(ctx.work / "ckpt-pipe"), ["--resume_from_checkpoint", ctx.work / "ckpt-pipe", *_run_dir(ctx)])[1],
          ["ckpt-pipe"], note="a FIFO as the checkpoint", timeout_s=60)
_cli_case("distill/output_dir_is_file", lambda ctx: ((ctx.work / "out.txt").write_text("mine"), ctx.protect(ctx.work / "out.txt"), ["--output_dir", ctx.work / "out.txt"])[2],
          ["out.txt"], note="a file as the output folder")
_cli_case("distill/allow_config_change_alone", lambda ctx: ["--allow_config_change", *_run_dir(ctx)], (), valid=True,
          note="a flag that only matters when resuming")


def _eval_model(ctx):
    return FIXTURES["run"] / "student"


_EVAL_TINY = ["--synthetic-train-scenes", "1", "--synthetic-test-scenes", "1", "--synthetic-image-size", "28",
              "--probe-max-steps", "2", "--num-correspondences", "10", "--num-figures", "1", "--no-progress"]


def _eval(ctx, *extra, model=None, task="depth"):
    return ["--model", model or _eval_model(ctx), "--output-dir", ctx.work / "eval", *_EVAL_TINY, "--task", task, *extra]


def _eval_case(name, make_argv, names, valid=False, note="", timeout_s=90):
    _cli_case(name, make_argv, names, valid, note, timeout_s, script="evaluate")


_eval_case("evaluate/control_tiny", lambda ctx: _eval(ctx), (), valid=True, note="tiny synthetic depth probe")
_eval_case("evaluate/model_missing", lambda ctx: _eval(ctx, model=ctx.work / "no_model"), ["no_model"], note="model folder not there")
_eval_case("evaluate/model_hub_offline", lambda ctx: _eval(ctx, model="nosuchuser/nosuchmodel"), ["nosuchuser/nosuchmodel"],
           note="a Hub id while offline")
_eval_case("evaluate/model_empty_dir", lambda ctx: ((ctx.work / "empty_model").mkdir(), _eval(ctx, model=ctx.work / "empty_model"))[1], ["empty_model"],
           note="an empty model folder")
_eval_case("evaluate/data_dir_missing", lambda ctx: ["--model", _eval_model(ctx), "--dataset", "nyuv2", "--data-dir", ctx.work / "nyu",
                                                      "--output-dir", ctx.work / "eval"], ["nyu"], note="data folder not there")
_eval_case("evaluate/data_dir_absent", lambda ctx: ["--model", _eval_model(ctx), "--dataset", "nyuv2", "--output-dir", ctx.work / "eval"],
           ["--data-dir"], note="a real dataset without --data-dir")
_eval_case("evaluate/data_dir_file", lambda ctx: ((ctx.work / "nyu.tar").write_bytes(b"x"), ["--model", _eval_model(ctx), "--dataset", "nyuv2",
                                                   "--data-dir", ctx.work / "nyu.tar", "--output-dir", ctx.work / "eval"])[1],
           ["nyu.tar"], note="an archive as the data folder")
_eval_case("evaluate/unknown_flag", lambda ctx: _eval(ctx, "--epochs", "3"), ["--epochs"], note="no such flag")
_eval_case("evaluate/task_unknown", lambda ctx: _eval(ctx, task="depht"), ["--task", "depht"], note="misspelt task")
_eval_case("evaluate/dataset_unknown", lambda ctx: _eval(ctx, "--dataset", "nyu"), ["--dataset"], note="misspelt dataset")
_eval_case("evaluate/task_not_served", lambda ctx: ["--model", _eval_model(ctx), "--dataset", "scannet_pairs", "--data-dir", ctx.work,
                                                     "--protocol", "quick", "--task", "depth", "--output-dir", ctx.work / "eval"],
           ["depth", "scannet_pairs"], note="a task the dataset has no ground truth for")
for _flag, _value in [("--batch-size", "0"), ("--batch-size", "-2"), ("--num-correspondences", "-1"), ("--num-figures", "-1"),
                      ("--synthetic-image-size", "0"), ("--synthetic-train-scenes", "0"), ("--synthetic-test-scenes", "0"),
                      ("--synthetic-frame-stride", "0"), ("--probe-epochs", "-1"), ("--probe-max-steps", "0"),
                      ("--correspondence-scale", "nan"), ("--correspondence-scale", "0"), ("--correspondence-scale", "-1"),
                      ("--num-threads", "-1"), ("--device", "tpu"), ("--seed", "-1"), ("--batch-size", "ten")]:
    _eval_case(f"evaluate/{_flag.strip('-')}={_value}", lambda ctx, f=_flag, v=_value: _eval(ctx, f, v), [_flag],
               note=f"{_flag} {_value}")
_eval_case("evaluate/output_dir_is_file", lambda ctx: ((ctx.work / "eval_out.txt").write_text("mine"), ctx.protect(ctx.work / "eval_out.txt"),
                                                     [*_eval(ctx), "--output-dir", ctx.work / "eval_out.txt"])[2],
           ["eval_out.txt"], note="a file as --output-dir")


# ------------------------------------------------------------------------------------------------------ output_dir
_USER_OUTPUT_NAMES = {
    "teacher": "dir", "student": "dir", "snd-distill": "dir", "heads.safetensors": "file", "pca_before_after.png": "file",
    "pca_before_features.pt": "file", "train_summary.json": "file", "loss_log.jsonl": "file",
}


def _user_thing(path: Path, kind: str) -> None:
    if kind == "dir":
        path.mkdir(parents=True)
        (path / "model.safetensors").write_bytes(b"my own weights")
        (path / "notes.txt").write_text("mine")
    else:
        path.write_bytes(b"my own " + path.name.encode())


def _out_case(name, setup_fn, names, valid=False, note="", timeout_s=90):
    register(Case(OUT, name, setup_fn, tuple(names), valid, timeout_s, note))


for _name, _kind in _USER_OUTPUT_NAMES.items():
    for _overwrite in (False, True):
        def _setup(ctx, name=_name, kind=_kind, overwrite=_overwrite):
            out = ctx.work / "mine"
            out.mkdir()
            _user_thing(out / name, kind)
            ctx.protect(out / name)
            return lambda: _distill(["--output_dir", out, *(["--overwrite_output_dir"] if overwrite else [])])

        _out_case(f"user_{_name}{'+overwrite' if _overwrite else ''}", _setup, [_name],
                  note=f"a user's own {_name} in --output_dir")


def _user_config(ctx, snd_shaped: bool, overwrite: bool):
    out = ctx.work / "mine"
    out.mkdir()
    text = "training:\n  lr: 0.001\n  max_steps: 2\n" if snd_shaped else "experiment: my notes\nlr: 0.001\n"
    (out / "config.yaml").write_text(text)
    if not snd_shaped or not overwrite:
        ctx.protect(out / "config.yaml")

    def thunk():
        _distill(["--output_dir", out, *(["--overwrite_output_dir"] if overwrite else [])])
        if overwrite and snd_shaped and (out / "config.overwritten.yaml").read_text() != text:
            raise AssertionError("the user's config.yaml was not kept as config.overwritten.yaml")

    return thunk


_out_case("user_config_yaml_other", lambda ctx: _user_config(ctx, False, False), ["config.yaml"], note="a non-snd config.yaml")
_out_case("user_config_yaml_other+overwrite", lambda ctx: _user_config(ctx, False, True), ["config.yaml"],
          note="a non-snd config.yaml with --overwrite_output_dir")
_out_case("user_config_yaml_snd", lambda ctx: _user_config(ctx, True, False), ["config.yaml", "mine"],
          note="an snd-shaped config.yaml the user keeps there")
_out_case("user_config_yaml_snd+overwrite", lambda ctx: _user_config(ctx, True, True), (), valid=True,
          note="documented: renamed config.overwritten.yaml, content kept (checked)")


def _other_files(ctx, overwrite: bool, under_checkpoints: bool):
    out = ctx.work / "mine"
    (out / "checkpoints" / "mine").mkdir(parents=True) if under_checkpoints else out.mkdir()
    files = [out / "notes.txt", out / "data.csv"]
    if under_checkpoints:
        files += [out / "checkpoints" / "re10k.ckpt", out / "checkpoints" / "mine"]
        (out / "checkpoints" / "mine" / "a.txt").write_text("a")
    for path in files:
        if not path.exists():
            path.write_text("user data")
    ctx.protect(*files)
    return lambda: _distill(["--output_dir", out, *(["--overwrite_output_dir"] if overwrite else [])])


_out_case("other_files", lambda ctx: _other_files(ctx, False, False), (), valid=True, note="unrelated files stay; run proceeds")
_out_case("other_files+overwrite", lambda ctx: _other_files(ctx, True, False), (), valid=True, note="nothing of a run to remove")
_out_case("checkpoints_user_files", lambda ctx: _other_files(ctx, False, True), (), valid=True, note="lifter weights under checkpoints/")
_out_case("checkpoints_user_files+overwrite", lambda ctx: _other_files(ctx, True, True), (), valid=True,
          note="lifter weights under checkpoints/ with --overwrite_output_dir")


def _finished(ctx, extra: list, protect_notes=True, user_checkpoint_like=False):
    run = _copy_run(ctx)
    (run / "notes.txt").write_text("my notes on this run")
    (run / "checkpoints" / "re10k.ckpt").write_bytes(b"lifter weights")
    protected = [run / "notes.txt", run / "checkpoints" / "re10k.ckpt"]
    if user_checkpoint_like:
        folder = run / "checkpoints" / "checkpoint-00000100"
        folder.mkdir()
        (folder / "my_model.pt").write_bytes(b"from another tool")
        protected.append(folder)
    ctx.protect(*protected)
    return run, lambda: _distill(["--output_dir", run, *extra])


_out_case("finished_run", lambda ctx: _finished(ctx, [])[1], ["runA"], note="a finished run, no flag")
_out_case("finished_run+overwrite", lambda ctx: _finished(ctx, ["--overwrite_output_dir"])[1], (), valid=True,
          note="replaced; the user's notes.txt and lifter weights stay")
_out_case("finished_run+resume_latest", lambda ctx: _finished(ctx, ["--resume_from_checkpoint", "latest"])[1], (), valid=True,
          note="nothing left to train")
_out_case("finished_run+resume_latest_more_steps",
          lambda ctx: _finished(ctx, ["--resume_from_checkpoint", "latest", "--training.max_steps", "3", "--allow_config_change"])[1],
          (), valid=True, note="continue one more step")
_out_case("finished_run+overwrite+user_checkpoint_named_folder",
          lambda ctx: _finished(ctx, ["--overwrite_output_dir"], user_checkpoint_like=True)[1], ["checkpoint-00000100"],
          note="a user's folder named like a checkpoint (no snd marker) under checkpoints/")


def _hash_dir(ctx, via_flag: bool):
    out = ctx.work / "run #1"

    def thunk():
        _distill(["--output_dir", out] if via_flag else ["--training.output_dir", out])
        if not (out / "student").is_dir():
            raise AssertionError(f"the run did not write into {out}: {sorted(p.name for p in ctx.work.iterdir())}")

    return thunk


_out_case("hash_in_name_output_dir_flag", lambda ctx: _hash_dir(ctx, True), (), valid=True, note="# in --output_dir")
_out_case("hash_in_name_dotted_flag", lambda ctx: _hash_dir(ctx, False), (), valid=True, note="# in --training.output_dir")


def _resume_into(ctx, b_state: str, overwrite=False):
    run_a = _copy_run(ctx, "runA")
    ctx.protect(run_a)
    run_b = ctx.work / "runB"
    if b_state == "run":
        shutil.copytree(run_a, run_b)
        (run_b / "notes.txt").write_text("mine")
        ctx.protect(run_b / "notes.txt")
        if not overwrite:
            ctx.protect(run_b)
    elif b_state == "user_files":
        run_b.mkdir()
        (run_b / "notes.txt").write_text("mine")
        ctx.protect(run_b / "notes.txt")
    checkpoint = run_a / "checkpoints" / "checkpoint-00000002"
    extra = ["--training.max_steps", "3", "--allow_config_change"]
    return lambda: _distill(["--output_dir", run_b, "--resume_from_checkpoint", checkpoint, *extra,
                             *(["--overwrite_output_dir"] if overwrite else [])])


_out_case("resume_A_into_B_holding_run", lambda ctx: _resume_into(ctx, "run"), ["runB", "runA"], note="B has a run of its own")
_out_case("resume_A_into_B_holding_run+overwrite", lambda ctx: _resume_into(ctx, "run", True), (), valid=True,
          note="documented: B's run replaced; A untouched")
_out_case("resume_A_into_empty_B", lambda ctx: _resume_into(ctx, "none"), (), valid=True, note="branch A into a new folder; A untouched")
_out_case("resume_A_into_B_user_files", lambda ctx: _resume_into(ctx, "user_files"), (), valid=True, note="B has only user files")


def _locked(ctx, how: str):
    import json

    out = ctx.work / "locked"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    ctx.protect(out / "notes.txt")
    lock = out / ".snd_run.lock"
    holder = None
    if how == "live":
        holder = subprocess.Popen(["sleep", "120"])
        from snd.distill.launch import _process_start

        lock.write_text(json.dumps({"pid": holder.pid, "pid_start": _process_start(holder.pid), "host": socket.gethostname(),
                                    "started": "now", "command": "sleep 120", "token": "t"}))
    elif how == "dead":
        lock.write_text(json.dumps({"pid": 2**22 - 3, "pid_start": "1", "host": socket.gethostname(), "started": "then",
                                    "command": "gone", "token": "t"}))
    elif how == "other_host":
        lock.write_text(json.dumps({"pid": 1, "host": "another-node-7", "started": "now", "command": "x", "token": "t"}))
    elif how == "garbage_fresh":
        lock.write_bytes(b"\x00\xff garbage")
    elif how == "garbage_old":
        lock.write_bytes(b"\x00\xff garbage")
        os.utime(lock, (time.time() - 3600, time.time() - 3600))
    elif how == "directory_fresh":
        lock.mkdir()
    elif how == "directory_old":
        lock.mkdir()
        (lock / "x").write_text("x")
        os.utime(lock, (time.time() - 3600, time.time() - 3600))
    elif how == "fifo":
        os.mkfifo(lock)
    elif how == "list_json":
        lock.write_text("[1, 2]")
        os.utime(lock, (time.time() - 3600, time.time() - 3600))
    elif how == "pid_string":
        lock.write_text(json.dumps({"pid": "123", "host": socket.gethostname()}))

    def thunk():
        try:
            return _distill(["--output_dir", out])
        finally:
            if holder is not None:
                holder.kill()
                holder.wait()

    return thunk


for _how, _valid, _note in [
    ("live", False, "held by a live process on this host"),
    ("other_host", False, "held by another machine"),
    ("garbage_fresh", False, "a lock being written (unreadable, fresh)"),
    ("directory_fresh", False, "a folder in the lock's place (fresh)"),
    ("fifo", False, "a FIFO in the lock's place"),
    ("dead", True, "a dead process's lock: taken over with a warning"),
    ("garbage_old", True, "an old unreadable lock: stale, taken over"),
    ("list_json", True, "an old lock that is JSON but not a record: stale"),
    ("pid_string", True, "a lock whose pid is not a number: stale"),
    ("directory_old", False, "an old folder in the lock's place: must not be removed blindly"),
]:
    _out_case(f"lock_{_how}", lambda ctx, how=_how: _locked(ctx, how), () if _valid else ["locked", ".snd_run.lock"],
              valid=_valid, note=_note, timeout_s=60)


def _eval_existing(ctx, names: list[str], overwrite: bool):
    out = ctx.work / "eval"
    out.mkdir()
    for name in names:
        (out / name).write_text(f"earlier {name}")
    (out / "notes.txt").write_text("mine")
    ctx.protect(out / "notes.txt")
    if not overwrite:
        ctx.protect(*(out / name for name in names))
    return lambda: _script("evaluate", [*_eval(ctx), *(["--overwrite"] if overwrite else [])])


_out_case("evaluate_results_json", lambda ctx: _eval_existing(ctx, ["results.json"], False), ["results.json"], note="earlier results")
_out_case("evaluate_comparison_md", lambda ctx: _eval_existing(ctx, ["comparison.md"], False), ["comparison.md"], note="earlier table")
_out_case("evaluate_both+overwrite", lambda ctx: _eval_existing(ctx, ["results.json", "comparison.md"], True), (), valid=True,
          note="documented: --overwrite replaces them; notes.txt stays")
_out_case("evaluate_results_json_dir", lambda ctx: ((ctx.work / "eval" / "results.json").mkdir(parents=True),
                                                    ctx.protect(ctx.work / "eval" / "results.json"),
                                                    lambda: _script("evaluate", _eval(ctx)))[2],
          ["results.json"], note="a folder named results.json")


def _convert(ctx, script: str, state: str, overwrite: bool):
    out = ctx.work / "converted"
    if state == "folder":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    elif state == "file":
        out.write_text("mine")
    if state != "none":
        ctx.protect(out)  # refused, or (with --overwrite) an input that does not convert: the old output stays
    (ctx.work / "sibling.txt").write_text("mine")
    ctx.protect(ctx.work / "sibling.txt")
    if script == "convert_checkpoint":
        argv = ["--input", FIXTURES["run"] / "student", "--format", "transformers", "--output", out]
    else:
        (ctx.work / "re10k.ckpt").write_bytes(b"not a checkpoint")
        argv = ["--input", ctx.work / "re10k.ckpt", "--output", out]
    return lambda: _script(script, [*argv, *(["--overwrite"] if overwrite else [])])


for _script_name in ("convert_checkpoint", "convert_mvsplat"):
    for _state in ("folder", "file"):
        _out_case(f"{_script_name}_existing_{_state}", lambda ctx, s=_script_name, st=_state: _convert(ctx, s, st, False),
                  ["converted"], note=f"--output is an existing {_state}")
_out_case("convert_mvsplat_existing_folder+overwrite_bad_input", lambda ctx: _convert(ctx, "convert_mvsplat", "folder", True),
          ["re10k.ckpt"], note="--overwrite with an unreadable input: the old output must stay")
_out_case("convert_checkpoint_existing_folder+overwrite", lambda ctx: _convert(ctx, "convert_checkpoint", "folder", True),
          ["student", "--format"], note="--overwrite with an input of another layout: refused naming it; the old output and the sibling file stay")
