"""Hostile training configs (issue 21 part 2): a "billion laughs" YAML, a named pipe, non-UTF-8 text, a `#` in a
string given on the command line, NaN/inf/negative numbers and unknown architecture fields. Each is refused (or
kept as given) with an error naming the file or field, without hanging or expanding without bound."""

from __future__ import annotations

import os
import threading

import pytest

from snd.distill.config import ConfigError, apply_overrides, dotted_flags_to_overrides, load_config
from tests.distill.helpers import TINY_CONFIG


def _billion_laughs(levels: int = 12) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        aliases = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{aliases}]")
    lines.append(f"model:\n  config_overrides:\n    boom: *a{levels - 1}")
    return "\n".join(lines) + "\n"


def test_billion_laughs_config_is_refused_without_expanding(tmp_path):
    path = tmp_path / "laughs.yaml"
    path.write_text(_billion_laughs())  # 10**12 strings once expanded
    with pytest.raises(ConfigError, match=r"laughs\.yaml: YAML expands to more than 100000 nodes.*aliases"):
        load_config(path)


def test_a_few_aliases_still_load(tmp_path):
    path = tmp_path / "anchors.yaml"
    path.write_text(f"base: {TINY_CONFIG}\ntraining:\n  lr: &lr 0.001\n  max_steps: 2\nhead:\n  hidden_dim: 16\n")
    assert load_config(path).training.lr == 0.001


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_named_pipe_as_config_is_refused_without_blocking(tmp_path):
    path = tmp_path / "config.yaml"
    os.mkfifo(path)
    result = {}

    def load():
        try:
            load_config(path)
        except Exception as error:  # noqa: BLE001 - the test inspects it
            result["error"] = error

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(timeout=20)
    if thread.is_alive():  # unblock the reader so the test process can exit
        with open(path, "w"):
            pass
        pytest.fail("load_config blocked on a named pipe")
    assert isinstance(result.get("error"), ConfigError)
    assert "config.yaml: is a named pipe (FIFO), not a regular file" in str(result["error"])


def test_non_utf8_config_names_the_file_and_offset(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("training:\n  output_dir: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not UTF-8 text \(byte 0xe9 at offset 27\)"):
        load_config(path)


def test_deeply_nested_config_is_refused(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("model:\n  config_overrides:\n    x: " + "[" * 20000 + "]" * 20000 + "\n")
    with pytest.raises(ConfigError, match=r"deep\.yaml: (YAML nested too deeply|YAML expands)"):
        load_config(path)


@pytest.mark.parametrize("value, expected", [(v, v) for v in ["runs/exp #2", "runs/a: b", "yes", "2024", "1e-4", "[x]", "'a' b", "'a' 'b'"]]
                         + [("'quoted'", "quoted"), ('"run #3"', "run #3")])
def test_string_field_given_on_the_command_line_stays_that_string(value, expected):
    """The text as given; a value quoted as a whole (as json.dumps writes one) loses its quotes."""
    overrides = dotted_flags_to_overrides(["--training.output_dir", value])
    assert load_config(TINY_CONFIG, overrides).training.output_dir == expected
    assert apply_overrides({}, [f"training.hub_model_id={value}"])["training"]["hub_model_id"] == expected


def test_cli_output_dir_keeps_a_hash(tmp_path):
    from snd.distill.cli import resolve_config

    target = str(tmp_path / "run #1")
    assert resolve_config(TINY_CONFIG, [], output_dir=target).training.output_dir == target


def test_null_still_clears_an_optional_string_and_numbers_still_parse():
    values = apply_overrides({}, ["model.pretrained=null", "training.lr=1e-4", "training.mixed_precision=no", "data.num_scenes=3"])
    assert values["model"]["pretrained"] is None and values["training"]["mixed_precision"] == "no"
    assert values["data"]["num_scenes"] == 3
    assert load_config(TINY_CONFIG, ["training.lr=1e-4"]).training.lr == 1e-4


@pytest.mark.parametrize(
    "override, message",
    [
        ("training.lr=.nan", r"training\.lr must be a finite number, got nan"),
        ("training.lr=.inf", r"training\.lr must be a finite number, got inf"),
        ("training.max_grad_norm=.nan", r"training\.max_grad_norm must be a finite number"),
        ("training.weight_decay=-0.1", r"training\.weight_decay must be >= 0, got -0\.1"),
        ("loss.teacher_temperature=-1", r"loss\.teacher_temperature must be > 0"),
        ("teacher.feature_budget_gib=.inf", r"teacher\.feature_budget_gib must be a finite number"),
        ("training.adam_betas=[0.9, .nan]", r"training\.adam_betas\[1\] must be a finite number"),
        ("model.config_overrides={layer_norm_eps: .nan}", r"model\.config_overrides\.layer_norm_eps must be a finite number"),
    ],
)
def test_nan_inf_and_negative_numbers_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TINY_CONFIG, [override])


def test_unknown_and_non_positive_architecture_fields_are_refused():
    with pytest.raises(ConfigError, match=r"model\.config_overrides: unknown field\(s\) \['num_hiden_layers'\] for preset 'tiny'"):
        load_config(TINY_CONFIG, ["model.config_overrides={num_hiden_layers: 1}"])
    with pytest.raises(ConfigError, match=r"model\.config_overrides\.mlp_ratio must be a positive number"):
        load_config(TINY_CONFIG, ["model.config_overrides={mlp_ratio: -4}"])
    assert load_config(TINY_CONFIG, ["model.config_overrides={num_hidden_layers: 1}"]).model.config_overrides == {"num_hidden_layers": 1}
