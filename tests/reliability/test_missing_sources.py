"""A new user's first mistakes (issue 21): a path that does not exist, a data root that does not exist, a Hub model
while offline. Each ends with one `error: ...` line on stderr and exit status 2, not a traceback; under
`accelerate launch --quiet` with two processes the line is printed once."""

from __future__ import annotations

import subprocess

import pytest

from tests.distill.helpers import TINY, distill_main, launch_command, run_distill, script_env, REPO_ROOT
from tests.script_main import script_main


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--model.pretrained", "/no/such"], "error: model.pretrained='/no/such': no such file or directory"),
        (["--model.pretrained", "no-such-model"], "error: model.pretrained='no-such-model': not a local file or folder, and offline"),
        (["--data.dataset", "scannetpp", "--data.root", "/no/such/root"], "error: data.root='/no/such/root': no such directory"),
        (["--data.dataset", "nerfstudio", "--data.root", "/no/such/root"], "error: data.root='/no/such/root': no such directory"),
    ],
    ids=["pretrained-path", "pretrained-hub-offline", "scannetpp-root", "nerfstudio-root"],
)
def test_missing_sources_are_one_line_and_status_2(tmp_path, capsys, flags, message):
    status = distill_main([*TINY, *flags, "--output_dir", str(tmp_path / "run"), "--max_steps", "1"])
    err = capsys.readouterr().err
    assert status == 2
    assert _error_lines(err) == [line for line in err.splitlines() if line.strip()], err  # nothing but the line
    assert len(_error_lines(err)) == 1 and _error_lines(err)[0].startswith(message), err


def test_a_base_config_that_needs_the_hub_offline_is_one_line(tmp_path):
    """`base: scannetpp_dinov2s` loads facebook/dinov2-small: offline with an empty cache, one line, status 2."""
    (tmp_path / "scenes").mkdir()
    config = tmp_path / "mine.yaml"
    config.write_text(f"base: scannetpp_dinov2s\ndata:\n  root: {tmp_path}\n")
    result = run_distill(["--config", str(config), "--output_dir", str(tmp_path / "run")], check=False,
                         env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [
        "error: model.pretrained='facebook/dinov2-small': not a local file or folder, and offline (HF_HUB_OFFLINE=1) "
        "and not in the Hugging Face cache; run once online, or give a local folder"
    ], result.stderr[-3000:]


def test_two_process_launch_prints_a_config_error_once(tmp_path):
    """`accelerate launch --quiet --num_processes 2`: the error line once (rank 0 only), no Python traceback."""
    command = launch_command([*TINY, "--model.pretrained", "/no/such", "--output_dir", str(tmp_path / "run")], num_processes=2)
    assert command[1] == "launch"
    command.insert(2, "--quiet")
    result = subprocess.run(command, cwd=REPO_ROOT, env=script_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert _error_lines(result.stderr) == ["error: model.pretrained='/no/such': no such file or directory (and not a Hub id 'owner/name')"], result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "CalledProcessError" not in result.stderr, result.stderr[-3000:]


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--model", "/no/such"], "error: --model='/no/such': no such file or directory"),
        (["--model", "no-such-owner/no-such-model"], "error: --model='no-such-owner/no-such-model': not a local file or folder, and offline"),
        (["--model", "nano-2d", "--dataset", "nyuv2", "--data-dir", "/no/such/data"], "error: --data-dir='/no/such/data': no such directory"),
    ],
    ids=["model-path", "model-hub-offline", "data-dir"],
)
def test_evaluate_missing_sources_are_one_line_and_status_2(tmp_path, capsys, flags, message):
    status = script_main("evaluate", [*flags, "--output-dir", str(tmp_path / "eval"), "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2
    assert [line for line in err.splitlines() if line.strip()] == _error_lines(err) and len(_error_lines(err)) == 1, err
    assert _error_lines(err)[0].startswith(message), err
