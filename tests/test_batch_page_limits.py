"""The Batch run page at the limits of issue #8: a CSV too wide to use, and a run killed with kill -9 whose
resume says how many guests were in flight. AppTest through the app's entry point, real sandboxes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from pagetext import wait_for_batch
from streamlit.testing.v1 import AppTest

from flowlab.admin import SandboxAdmin
from flowlab.batch.runlog import RunLog
from flowlab.batch.runs import RunStore
from flowlab.sandbox import SandboxServer
from flowlab.workbench.targets import CONFIGURED_NAME

ROOT = Path(__file__).resolve().parents[1]
GUESTS = 2_000

pytestmark = pytest.mark.slow

# Starts a run the way the app does (RunLog), then blocks until it is killed.
_CRASHING_RUN = """
import sys
from flowlab.batch.runner import BatchOptions
from flowlab.batch.runlog import RunLog
from flowlab.batch.samples import generate_guests

url, key, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
options = BatchOptions(base_url=url, client_key=key, friendly_id="checkout_ab_test", concurrency=10)
record, handle = RunLog().start(generate_guests(n, seed=5), options, name="crashing", target=sys.argv[4])
print(record.path, flush=True)
handle.wait()
"""


def batch_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("app_pages/batch.py")
    at.run()
    assert not at.exception, at.exception
    return at


def texts(elements: object) -> list[str]:
    return [str(e.value).replace("\\", "") for e in elements]  # type: ignore[attr-defined]


def test_a_csv_with_100k_columns_is_one_clear_error_on_the_page() -> None:
    at = batch_page()
    at.segmented_control(key="batch_source").set_value("upload").run()
    wide = ("browserId," + ",".join(f"c{i}" for i in range(99_999)) + "\nb-1\n").encode()
    started = time.perf_counter()
    at.file_uploader(key="batch_upload").set_value(("wide.csv", wide, "text/csv"))
    at.run()
    assert time.perf_counter() - started < 30  # the read itself is milliseconds; was minutes
    assert not at.exception, at.exception
    assert "wide.csv: line 1: 100,000 columns; a guest sample may have at most 1,000" in texts(at.error)
    assert at.button(key="batch_start").disabled


def test_an_interrupted_run_says_how_many_were_in_flight_and_resume_calls_them_again(
    live_tenant: SandboxServer,
) -> None:
    httpx.put(f"{live_tenant.url}/sandbox/knobs", json={"latencyMs": "20"}, timeout=10).raise_for_status()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib")}
    command = [sys.executable, "-c", _CRASHING_RUN, live_tenant.url, live_tenant.client_key, str(GUESTS),
               CONFIGURED_NAME]  # fmt: skip
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            store_path = Path(proc.stdout.readline().strip())
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None and _stored(store_path) < 300:
                time.sleep(0.01)
            time.sleep(0.07)
            assert proc.poll() is None, "the run ended before the kill"
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(10)
    with RunStore.open(store_path) as store:
        in_flight = len(store.in_flight_rows() - store.done_rows())
    assert in_flight > 0  # ten workers at 20 ms: someone is always waiting for an answer

    at = batch_page()
    at.checkbox(key=f"live_ack::{CONFIGURED_NAME}").check()
    (record,) = RunLog().runs()
    at.selectbox(key="batch_open_run").set_value(record.id)
    at.run()
    assert any(w.startswith("Interrupted (the app stopped while it ran)") for w in texts(at.warning))
    note = f"Up to {in_flight:,} guests were in flight when it stopped: the tenant may already have recorded"
    assert any(c.startswith(note) for c in texts(at.caption)), texts(at.caption)

    at.button(key="batch_resume").click()
    at.run()
    wait_for_batch(at, "the resume")
    assert f"Done: {GUESTS:,} guests, {GUESTS:,} ok." in texts(at.success)
    assert any(
        f"; {in_flight:,} in flight at the last stop were called again" in c for c in texts(at.caption)
    )
    with SandboxAdmin(base_url=live_tenant.url) as admin:
        twice = int(admin.info()["counts"]["executions"]) - GUESTS
    assert 0 <= twice <= in_flight


def _stored(path: Path) -> int:
    try:
        with RunStore.open(path) as store:
            return store.progress().done
    except Exception:  # not created yet, or mid-creation
        return 0
