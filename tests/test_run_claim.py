"""A run store's claim must not disturb SQLite's own locks (#8: results committed after a "held?" check
were lost by a kill -9, because another process's reader deleted the WAL they were committed to)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flowlab.batch.runs import GuestResult, RunMeta, RunStore
from flowlab.errors import RunStoreError

_READ_AND_CLOSE = """
import sys
from flowlab.batch.runs import RunStore
with RunStore.open(sys.argv[1]) as store:
    print(store.progress().done)
"""


def _done_in_another_process(path: Path) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _READ_AND_CLOSE, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(done.stdout)


def test_checking_a_claim_in_the_writing_process_keeps_later_commits_durable(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    writer = RunStore.create(path, RunMeta("checkout_ab_test", "http://127.0.0.1:1", "fp", 10))
    with writer, writer.claim():
        writer.write([GuestResult(1, "b-1", "browserId", 200, True)])
        with (
            RunStore.open(path) as look,
            pytest.raises(RunStoreError, match="being written by another batch"),
        ):
            with look.claim():  # what runlog does to tell "running" from "interrupted"
                pass
        assert _done_in_another_process(path) == 1  # a reader elsewhere opens and closes the store
        writer.write([GuestResult(2, "b-2", "browserId", 200, True)])
        assert Path(f"{path}-wal").exists()  # the WAL the writer commits to is still the file's WAL
        assert _done_in_another_process(path) == 2  # so the commit is there for everyone (and a kill -9)
