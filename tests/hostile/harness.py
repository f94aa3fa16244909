"""The hostile-input probe's harness: cases, the forked runner and the classifier.

A case is a *setup* function ``setup(ctx) -> thunk``: the setup writes the hostile files into ``ctx.work`` (a fresh
folder) and returns a zero-argument callable that calls the real entry point with them, as a user would. The setup
may register files the user owns with ``ctx.protect(path)``; a pickle payload may touch ``ctx.marker``. Each case
runs in a forked child (torch, snd and the shared fixtures are imported or built once, in the parent), under a
memory limit and a timeout, and the parent classifies what happened:

=============  ==============================================================================================
outcome        when
=============  ==============================================================================================
code_exec      ``ctx.marker`` exists afterwards (a payload ran)
data_loss      a protected file or folder changed or vanished
crash          the child died of a signal (SIGSEGV, SIGABRT, ...) or exited without reporting
hang           the child ran past its timeout and was killed
memory         a plain MemoryError (a failed allocation), or the child was killed by the memory limit; a
               subclass raised on purpose before allocating (e.g. ``RenderMemoryError``) is a refusal like any other
probe_error    the *setup* raised: a bug of the probe, not of snd
ok             a valid input was accepted
refused_valid  a valid input was refused (an error for a valid input)
silent         an invalid input was accepted without an error
clear          an invalid input was refused with a message naming one of the case's ``names`` (file or field)
unclear        an invalid input was refused, but the message names none of them
=============  ==============================================================================================

"Names" are matched case-insensitively in ``"<ExceptionType>: <message>"`` (for a script's ``SystemExit``, in what it
wrote to stderr). A case lists the file's base name and/or the field it breaks; any one of them makes the message
clear. Cases whose input is valid (``valid=True``) are the controls: silence is right for them.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import hashlib
import io
import json
import os
import resource
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

OUTCOMES = (
    "code_exec", "data_loss", "crash", "hang", "memory", "probe_error",
    "ok", "refused_valid", "silent", "clear", "unclear",
)
# What the targets count: none of these may happen.
FATAL = ("code_exec", "data_loss", "crash", "hang", "memory", "probe_error")

DEFAULT_TIMEOUT_S = 60.0
MEMORY_LIMIT_BYTES = 4 << 30  # address space of a child: a tiny training run peaks under 1 GiB; a bomb hits this first


@dataclasses.dataclass(frozen=True)
class Case:
    family: str                                   # e.g. "config", "checkpoint", "image"
    name: str                                     # unique within the family, e.g. "nan/training.learning_rate"
    setup: Callable[["Context"], Callable[[], object]]
    names: tuple[str, ...] = ()                   # a clear refusal names one of these (file base name, field)
    valid: bool = False                           # a control: the input is valid and must be accepted
    timeout_s: float = DEFAULT_TIMEOUT_S
    note: str = ""                                # why the input is hostile (shown in the report)

    @property
    def id(self) -> str:
        return f"{self.family}/{self.name}"


CASES: dict[str, Case] = {}


def register(case: Case) -> Case:
    if case.id in CASES:
        raise ValueError(f"duplicate probe case {case.id}")
    if not case.valid and not case.names:
        raise ValueError(f"probe case {case.id}: an invalid input needs the names a clear error must mention")
    CASES[case.id] = case
    return case


def case(family: str, name: str, *, names=(), valid: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S, note: str = ""):
    """Decorator form of :func:`register` for a hand-written setup function."""

    def decorate(setup):
        register(Case(family, name, setup, tuple(names), valid, timeout_s, note))
        return setup

    return decorate


class Context:
    """What a setup gets: a fresh folder, the code-execution marker and the data-loss register."""

    def __init__(self, work: Path):
        self.work = work
        self.marker = work.parent / (work.name + ".PAYLOAD_RAN")
        self._protected: dict[str, str] = {}

    def protect(self, *paths) -> None:
        """Register files or folders the user owns: the case is data loss if any differs afterwards."""
        for path in paths:
            path = Path(path)
            self._protected[str(path)] = tree_digest(path)
        (self.work.parent / (self.work.name + ".protected.json")).write_text(json.dumps(self._protected))


def tree_digest(path: Path) -> str:
    """SHA-256 over a file's bytes, or over a folder's relative names and file bytes; "missing" when absent."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return "missing"
    digest = hashlib.sha256()
    if path.is_dir() and not path.is_symlink():
        for child in sorted(path.rglob("*")):
            digest.update(str(child.relative_to(path)).encode())
            if child.is_file() and not child.is_symlink():
                digest.update(child.read_bytes())
    elif path.is_file():
        digest.update(path.read_bytes())
    else:
        digest.update(b"special:" + str(path.lstat().st_mode).encode())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------------------------
# The child


def _child(case: Case, work: Path, report_fd: int) -> None:
    """Runs in the forked child: set-up, then the entry point; writes one JSON line to ``report_fd``."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    log = open(work.parent / (work.name + ".log"), "w")
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    faulthandler.enable(file=log)  # a crash's trace goes to the case's log, not the parent's stderr
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), write_through=True)
    sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), write_through=True)
    os.chdir(work)
    ctx = Context(work)
    try:
        thunk = case.setup(ctx)
    except BaseException as error:  # noqa: BLE001 - the probe's own bug
        report = {"stage": "setup", "type": type(error).__name__, "message": str(error), "trace": traceback.format_exc()}
    else:
        stderr_start = log.tell()
        try:
            thunk()
            report = {"stage": "run", "type": None, "message": ""}
        except SystemExit as error:
            code = error.code
            if code in (0, None):
                report = {"stage": "run", "type": None, "message": ""}
            else:
                sys.stderr.flush()
                log.flush()
                text = (work.parent / (work.name + ".log")).read_text(errors="replace")[stderr_start:]
                message = text.strip() if isinstance(code, int) else str(code)
                report = {"stage": "run", "type": "SystemExit", "message": message[-4000:], "exit": code if isinstance(code, int) else 1}
        except MemoryError as error:
            if type(error) is MemoryError:  # a failed allocation; a subclass is a deliberate up-front refusal
                report = {"stage": "run", "type": "MemoryError", "message": str(error)}
            else:
                report = {"stage": "run", "type": type(error).__name__, "message": str(error)[-4000:], "trace": traceback.format_exc()[-4000:]}
        except BaseException as error:  # noqa: BLE001 - the outcome under test
            report = {"stage": "run", "type": type(error).__name__, "message": str(error)[-4000:], "trace": traceback.format_exc()[-4000:]}
    os.write(report_fd, (json.dumps(report) + "\n").encode())


def _classify(case: Case, work: Path, report: dict | None, status: int | None, timed_out: bool) -> tuple[str, str]:
    message = ""
    if report is not None:
        message = f"{report['type']}: {report['message']}" if report.get("type") else ""
    if case.setup is not None and Path(str(work) + ".PAYLOAD_RAN").exists():
        return "code_exec", message
    protected_file = work.parent / (work.name + ".protected.json")
    if protected_file.exists():
        for path, before in json.loads(protected_file.read_text()).items():
            if tree_digest(Path(path)) != before:
                return "data_loss", f"{path} changed. {message}"
    if timed_out:
        return "hang", f"killed after {case.timeout_s:.0f} s"
    if report is None:
        if status is not None and os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig == signal.SIGKILL:
                return "memory", "killed (SIGKILL; memory limit?)"
            return "crash", f"died of {signal.Signals(sig).name}"
        return "crash", f"exited without a report (status {status})"
    if report["stage"] == "setup":
        return "probe_error", f"{report['type']}: {report['message']}\n{report.get('trace', '')}"
    if report["type"] == "MemoryError":
        return "memory", message
    if report["type"] is None:
        return ("ok" if case.valid else "silent"), ""
    if case.valid:
        return "refused_valid", message
    lowered = message.lower()
    return ("clear" if any(str(name).lower() in lowered for name in case.names) else "unclear"), message


@dataclasses.dataclass
class Result:
    id: str
    family: str
    outcome: str
    message: str
    seconds: float
    note: str = ""


def run_cases(cases: list[Case], out: Path, jobs: int = 1, on_result: Callable[[Result], None] | None = None) -> list[Result]:
    """Fork each case under ``out/work``; at most ``jobs`` at a time. Returns the results in the cases' order."""
    work_root = Path(out) / "work"
    work_root.mkdir(parents=True, exist_ok=True)
    pending = list(enumerate(cases))
    running: dict[int, tuple[int, Case, Path, int, float]] = {}  # pid -> (index, case, work, read fd, start)
    results: dict[int, Result] = {}
    while pending or running:
        while pending and len(running) < jobs:
            index, item = pending.pop(0)
            work = work_root / f"{index:04d}"
            work.mkdir()
            read_fd, write_fd = os.pipe()
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:  # child
                os.close(read_fd)
                code = 0
                try:
                    _child(item, work, write_fd)
                except BaseException:  # noqa: BLE001
                    code = 3
                finally:
                    os._exit(code)
            os.close(write_fd)
            os.set_blocking(read_fd, False)
            running[pid] = (index, item, work, read_fd, time.monotonic())
        time.sleep(0.02)
        for pid, (index, item, work, read_fd, start) in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            timed_out = False
            if not done:
                if time.monotonic() - start < item.timeout_s:
                    continue
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
                timed_out = True
            raw = b""
            try:
                while chunk := os.read(read_fd, 65536):
                    raw += chunk
            except BlockingIOError:
                pass
            os.close(read_fd)
            report = json.loads(raw.decode().splitlines()[0]) if raw.strip() else None
            outcome, message = _classify(item, work, None if timed_out else report, status, timed_out)
            result = Result(item.id, item.family, outcome, message.strip(), round(time.monotonic() - start, 2), item.note)
            results[index] = result
            del running[pid]
            if on_result is not None:
                on_result(result)
    return [results[index] for index in range(len(cases))]


def summarise(results: list[Result]) -> dict:
    """Counts overall and per family, in the issue's terms."""
    def count(rows):
        counts = {outcome: 0 for outcome in OUTCOMES}
        for row in rows:
            counts[row.outcome] += 1
        return counts

    families = sorted({row.family for row in results})
    return {
        "cases": len(results),
        "total": count(results),
        "families": {family: count([row for row in results if row.family == family]) for family in families},
    }


def report_markdown(results: list[Result]) -> str:
    summary = summarise(results)
    columns = [outcome for outcome in OUTCOMES]
    lines = [
        f"# Hostile-input probe: {summary['cases']} cases",
        "",
        "| family | cases | " + " | ".join(columns) + " |",
        "|---|---:|" + "---:|" * len(columns),
    ]
    for family, counts in summary["families"].items():
        lines.append(f"| {family} | {sum(counts.values())} | " + " | ".join(str(counts[c]) for c in columns) + " |")
    total = summary["total"]
    lines.append(f"| **all** | {summary['cases']} | " + " | ".join(f"**{total[c]}**" for c in columns) + " |")
    lines.append("")
    for outcome in (*FATAL, "refused_valid", "silent", "unclear"):
        rows = [row for row in results if row.outcome == outcome]
        if rows:
            lines += ["", f"## {outcome} ({len(rows)})", ""]
            for row in rows:
                text = row.message.replace("\n", " ")[:300]
                lines.append(f"- `{row.id}`" + (f" ({row.note})" if row.note else "") + (f": {text}" if text else ""))
    return "\n".join(lines) + "\n"
