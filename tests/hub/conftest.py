"""Fixtures for Hub tests: a Hub-compatible server on 127.0.0.1 and a runner for client processes.

`huggingface_hub` reads HF_ENDPOINT and the token when it is imported, and the test process has already
imported it in offline mode, so everything that talks to the server runs in a fresh Python process whose
environment points at the server (`HubServer.client_env`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hub.hub_server import HubServer

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def hub_server(tmp_path):
    with HubServer(tmp_path / "hub-storage") as server:
        yield server


class HubClient:
    """Runs `python -m tests.hub.hub_clients ...` (or a script) against a `HubServer`."""

    def __init__(self, server: HubServer, workdir: Path):
        self.server = server
        self.workdir = workdir
        self.calls = 0

    def env(self) -> dict:
        env = self.server.client_env()
        self.calls += 1
        # a fresh cache per process: every load really goes over HTTP
        env["HF_HOME"] = str(self.workdir / f"hf-home-{self.calls}")
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def run(self, args: list[str], check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, *args], cwd=REPO_ROOT, env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"client {args} failed ({result.returncode})\n--- stdout\n{result.stdout[-4000:]}\n"
                f"--- stderr\n{result.stderr[-8000:]}\n--- unhandled requests\n{self.server.unhandled}"
            )
        return result

    def call(self, command: str, *args: str, timeout: float = 600) -> dict:
        """Run a `tests.hub.hub_clients` command; returns the JSON it prints on its last stdout line."""
        result = self.run(["-m", "tests.hub.hub_clients", command, *args], timeout=timeout)
        return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def hub_client(hub_server, tmp_path):
    return HubClient(hub_server, tmp_path)
