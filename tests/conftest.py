"""Shared fixtures: a real sandbox tenant on a free loopback port (no mocks of our own code)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowlab.admin import SandboxAdmin
from flowlab.personalize.client import FlowClient
from flowlab.sandbox import SandboxServer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test starts with no FLOWLAB_ settings from the developer's shell, and its own data dir."""
    for key in list(os.environ):
        if key.startswith("FLOWLAB_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("FLOWLAB_DATA_DIR", str(tmp_path / "flowlab-data"))
    monkeypatch.chdir(tmp_path)  # no stray .env from the repo


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxServer]:
    """One sandbox for the session; tests that change its state use ``fresh_sandbox`` instead."""
    with SandboxServer() as server:
        yield server


@pytest.fixture
def fresh_sandbox() -> Iterator[SandboxServer]:
    """A sandbox of one's own: for tests that load flows, change knobs or count tracking records."""
    with SandboxServer(seed=1) as server:
        yield server


@pytest.fixture
def live_tenant(monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxServer]:
    """A second sandbox that the app and CLI see as a live tenant (FLOWLAB_BASE_URL + FLOWLAB_CLIENT_KEY)."""
    with SandboxServer(seed=8) as server:
        monkeypatch.setenv("FLOWLAB_BASE_URL", server.url)
        monkeypatch.setenv("FLOWLAB_CLIENT_KEY", server.client_key)
        yield server


@pytest.fixture
def client(sandbox: SandboxServer) -> Iterator[FlowClient]:
    with FlowClient(base_url=sandbox.url, retries=0) as c:
        yield c


@pytest.fixture
def admin(sandbox: SandboxServer) -> Iterator[SandboxAdmin]:
    with SandboxAdmin(base_url=sandbox.url) as a:
        yield a
