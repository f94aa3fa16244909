"""The probe's classifier: one case per outcome, each built to produce exactly that outcome, run by the real forked
runner. If a rule of ``_classify`` broke (a crash read as silence, a changed user file missed, a message naming the
field called unclear), the matching assertion fails."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.hostile.harness import Case, register, report_markdown, run_cases, summarise


def _raise(error):
    def thunk():
        raise error

    return thunk


def _protected_then(action):
    def setup(ctx):
        user = ctx.work / "mine.txt"
        user.write_text("the user's")
        ctx.protect(user)
        return lambda: action(user)

    return setup


def _payload(ctx):
    return lambda: ctx.marker.touch()


def _allocate():
    # a bytearray beyond the child's address-space limit raises MemoryError
    return bytearray(64 << 30)


CASES = {
    "clear": Case("self", "clear", lambda ctx: _raise(ValueError("config.yaml: field lr must be > 0")), names=("lr",)),
    "unclear": Case("self", "unclear", lambda ctx: _raise(KeyError("x")), names=("config.yaml",)),
    "silent": Case("self", "silent", lambda ctx: (lambda: None), names=("anything",)),
    "ok": Case("self", "ok", lambda ctx: (lambda: None), valid=True),
    "refused_valid": Case("self", "refused", lambda ctx: _raise(ValueError("no")), valid=True),
    "crash": Case("self", "crash", lambda ctx: (lambda: os.kill(os.getpid(), signal.SIGSEGV)), names=("x",)),
    "hang": Case("self", "hang", lambda ctx: (lambda: time.sleep(30)), names=("x",), timeout_s=1.0),
    "memory": Case("self", "memory", lambda ctx: _allocate, names=("x",)),
    "data_loss": Case("self", "data_loss", _protected_then(lambda user: user.write_text("gone")), names=("x",)),
    "code_exec": Case("self", "code_exec", _payload, names=("x",)),
    "probe_error": Case("self", "probe_error", lambda ctx: 1 / 0, names=("x",)),
    "deliberate_memory_refusal": Case("self", "refusal", lambda ctx: _raise(type("RenderMemoryError", (MemoryError,), {})("width x height needs 1 TiB")), names=("width",)),
    "exit_clear": Case("self", "exit", lambda ctx: (lambda: (os.write(2, b"error: --data.root /x does not exist\n"), exit(2))), names=("--data.root",)),
}
EXPECTED = {"exit_clear": "clear", "deliberate_memory_refusal": "clear"}


def test_each_outcome_is_classified_as_built(tmp_path):
    keys = list(CASES)
    results = run_cases([CASES[key] for key in keys], tmp_path, jobs=2)
    got = {key: result.outcome for key, result in zip(keys, results)}
    assert got == {key: EXPECTED.get(key, key) for key in keys}
    summary = summarise(results)
    assert summary["cases"] == len(keys) and sum(summary["total"].values()) == len(keys)
    assert summary["total"]["clear"] == 3 and summary["total"]["crash"] == 1
    report = report_markdown(results)
    assert "| **all** | 13 |" in report and "`self/unclear`" in report and "`self/clear`" not in report


def test_a_data_loss_is_seen_even_when_the_child_crashes_after_it(tmp_path):
    def action(user):
        user.unlink()
        os.kill(os.getpid(), signal.SIGABRT)

    (result,) = run_cases([Case("self", "x", _protected_then(action), names=("x",))], tmp_path)
    assert result.outcome == "data_loss"


def test_register_refuses_duplicates_and_invalid_cases_without_names():
    with pytest.raises(ValueError, match="needs the names"):
        register(Case("self-test", "no-names", lambda ctx: (lambda: None)))
    register(Case("self-test", "dup", lambda ctx: (lambda: None), valid=True))
    with pytest.raises(ValueError, match="duplicate"):
        register(Case("self-test", "dup", lambda ctx: (lambda: None), valid=True))
