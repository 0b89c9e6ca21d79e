"""Files are private: the data dir and its folders 0700 (tightened when older ones are looser), targets,
personas, run files, run stores with their SQLite side files, and exports 0600."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowlab.batch.runlog import RunLog
from flowlab.batch.runner import BatchOptions
from flowlab.batch.runs import GuestResult, RunMeta, RunStore
from flowlab.batch.samples import generate_guests
from flowlab.config import load_settings
from flowlab.sandbox import SandboxServer
from flowlab.workbench.personas import Persona, PersonaStore
from flowlab.workbench.targets import Target, TargetStore

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The common umask (022): files come out 0644 and folders 0755 unless Flow Lab says otherwise."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_targets_and_personas_are_private_and_so_is_the_data_dir() -> None:
    data_dir = load_settings().data_dir
    assert not data_dir.exists()
    TargetStore().save(Target("Acme", "https://api-engage-eu.sitecorecloud.io", "pqsDATA"))
    PersonaStore().save(Persona(name="Lena", browser_id="b-1"))
    assert mode(data_dir) == 0o700
    assert mode(data_dir / "targets.json") == 0o600
    assert mode(data_dir / "personas.json") == 0o600


def test_a_data_dir_left_open_by_an_older_version_is_tightened() -> None:
    data_dir = load_settings().data_dir
    (data_dir / "runs").mkdir(parents=True)
    os.chmod(data_dir, 0o755)
    os.chmod(data_dir / "runs", 0o755)
    TargetStore().save(Target("Acme", "https://api-engage-eu.sitecorecloud.io", "pqsDATA"))
    assert mode(data_dir) == 0o700
    options = BatchOptions(base_url="http://127.0.0.1:9", client_key="k", friendly_id="f")
    run_id = RunLog().prepare(generate_guests(3, seed=1), options)
    assert mode(data_dir / "runs") == 0o700
    folder = data_dir / "runs" / run_id
    assert mode(folder) == 0o700
    assert {p.name: mode(p) for p in folder.iterdir()} == {"guests.jsonl": 0o600, "run.json": 0o600}


def test_a_run_of_the_app_keeps_every_file_private(sandbox: SandboxServer) -> None:
    options = BatchOptions(
        base_url=sandbox.url, client_key=sandbox.client_key, friendly_id="checkout_ab_test"
    )
    record, handle = RunLog().start(generate_guests(20, seed=2), options)
    handle.wait(timeout=60)
    files = {p.name: mode(p) for p in record.folder.iterdir()}
    assert files["run.sqlite"] == 0o600 and set(files.values()) == {0o600}, files


def test_run_store_side_files_and_exports_are_private(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    reports.mkdir(mode=0o755)
    path = reports / "new" / "run.sqlite"
    with RunStore.create(path, RunMeta("f", "http://127.0.0.1:9", "fp", 1)) as store:
        store.write([GuestResult(row=0, guest="g", identity="browserId", status_code=200, ok=True)])
        side = {p.name: mode(p) for p in path.parent.iterdir()}
        assert side == {"run.sqlite": 0o600, "run.sqlite-wal": 0o600, "run.sqlite-shm": 0o600}
        for name in ("run.csv", "run.parquet"):
            assert mode(store.export(reports / name)) == 0o600
    assert mode(path.parent) == 0o700  # a folder Flow Lab made
    assert mode(reports) == 0o755  # a folder the user made is theirs to set


def test_the_cli_writes_private_outputs(tmp_path: Path, sandbox: SandboxServer) -> None:
    guests = generate_guests(5, seed=3).to_csv(tmp_path / "guests.csv")
    os.chmod(guests, 0o644)
    result = subprocess.run(
        [sys.executable, "-m", "flowlab", "batch", "--base-url", sandbox.url, "--client-key", sandbox.client_key,
         "--friendly-id", "checkout_ab_test", "--guests", str(guests), "--out", str(tmp_path / "run.csv"), "-q"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ},
    )  # fmt: skip
    assert result.returncode in (0, 1) and "Traceback" not in result.stderr, result.stderr
    assert mode(tmp_path / "run.csv") == 0o600
    assert mode(tmp_path / "run.csv.sqlite") == 0o600
