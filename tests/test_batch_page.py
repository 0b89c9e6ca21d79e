"""The Batch run page through the app's entry point (AppTest), against real sandboxes over loopback.

The app's own sandbox is the built-in target; a second ``SandboxServer`` configured through
``FLOWLAB_BASE_URL`` + ``FLOWLAB_CLIENT_KEY`` plays a live tenant (the app counts any configured tenant as
live). Batches run in background threads, so tests poll with ``at.run()`` as the page's fragment would.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from flowlab.admin import SandboxAdmin
from flowlab.batch.runlog import RunLog, load_results
from flowlab.sandbox import SandboxServer
from flowlab.workbench.targets import CONFIGURED_NAME

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def batch_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("app_pages/batch.py")
    at.run()
    assert not at.exception, at.exception
    return at


def texts(elements: object) -> list[str]:
    """Element values as a person reads them (the page escapes Markdown in untrusted text)."""
    return [str(e.value).replace("\\", "") for e in elements]  # type: ignore[attr-defined]


def running(at: AppTest) -> bool:
    return any(b.key == "batch_cancel" for b in at.button)


def wait_until_stopped(at: AppTest, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while running(at):
        assert time.monotonic() < deadline, "the batch did not finish in time"
        time.sleep(0.3)
        at.run()
        assert not at.exception, at.exception


def start(at: AppTest, n: int, **widgets: object) -> None:
    at.number_input(key="batch_n").set_value(n)
    for key, value in widgets.items():
        at.number_input(key=f"batch_{key}").set_value(value)
    at.run()
    at.button(key="batch_start").click()
    at.run()
    assert not at.exception, at.exception


def executions(server: SandboxServer) -> int:
    with SandboxAdmin(base_url=server.url) as admin:
        return int(admin.info()["counts"]["executions"])


# ---- running ---------------------------------------------------------------------------------------------


def test_generate_300_guests_and_run_the_demo_ab_test_until_done() -> None:
    at = batch_page()
    assert at.selectbox(key="batch_flow").value == "checkout_ab_test"
    assert at.number_input(key="batch_concurrency").value == 20
    assert any("Default concurrency is a modest **20** requests at a time" in c for c in texts(at.caption))
    start(at, 300, rps=150)  # paced, so there is progress to watch
    assert running(at)
    (bar,) = at.get("progress")
    assert " / 300 guests** · " in bar.proto.text  # done/total, as it updates
    assert {"Requests/s", "Time left", "Running for", "Errors"} <= {m.label for m in at.metric}
    at.number_input(key="batch_seed").set_value(7).run()  # a widget click reruns the page...
    assert running(at) and not at.exception  # ...and the batch carries on in the background
    wait_until_stopped(at)
    assert "Done: 300 guests, 300 ok." in texts(at.success)
    assert {b.label for b in at.get("download_button")} == {"Export CSV", "Export Parquet"}  # type: ignore[attr-defined]
    (record,) = RunLog().runs()
    assert (record.status, record.done, record.ok) == ("done", 300, 300)
    frame = load_results(record.path)
    assert set(frame["variant"]) == {"A", "B"} and frame["tier"].notna().all()


def test_the_parquet_export_holds_the_whole_run() -> None:
    from ui.runs import export_bytes

    at = batch_page()
    start(at, 120)
    wait_until_stopped(at)
    (record,) = RunLog().runs()
    frame = pd.read_parquet(io.BytesIO(export_bytes(record.path, ".parquet")))
    assert len(frame) == 120 and {"guest", "variant", "offers", "latency_ms", "body"} <= set(frame.columns)
    csv = pd.read_csv(io.BytesIO(export_bytes(record.path, ".csv")))
    assert len(csv) == 120
    assert not list(record.folder.glob("export*")), "exports are written to temporary files"


def test_cancel_and_resume() -> None:
    at = batch_page()
    start(at, 300, concurrency=2, rps=25)
    assert running(at)
    time.sleep(1.0)
    at.button(key="batch_cancel").click()
    at.run()
    wait_until_stopped(at)
    (warning,) = [w for w in texts(at.warning) if "to go" in w]
    assert warning.startswith("Cancelled with ") and "Resume to call them" in warning
    (cancelled,) = RunLog().runs()
    assert cancelled.status == "cancelled" and 0 < cancelled.done < 300
    at.number_input(key="batch_rps").set_value(0.0)  # resume at full speed
    at.number_input(key="batch_concurrency").set_value(20)
    at.run()
    resume = at.button(key="batch_resume")
    assert resume.label == f"Resume ({300 - cancelled.done:,} to go)" and not resume.disabled
    resume.click()
    at.run()
    wait_until_stopped(at)
    assert "Done: 300 guests, 300 ok." in texts(at.success)
    frame = load_results(cancelled.path)
    assert sorted(frame["row"]) == list(range(1, 301))  # every guest exactly once


def test_a_page_reload_reattaches_to_the_running_batch() -> None:
    first = batch_page()
    start(first, 300, concurrency=1, rps=20)
    assert running(first)
    second = batch_page()  # a new session, e.g. after the browser reloaded the page
    assert running(second), "the new session shows the running batch"
    second.button(key="batch_cancel").click()
    second.run()
    wait_until_stopped(second)
    wait_until_stopped(first)  # the widget click in one session did not break the other
    assert RunLog().runs()[0].status == "cancelled"


def test_sandbox_demo_guests() -> None:
    at = batch_page()
    at.segmented_control(key="batch_source").set_value("demo").run()
    at.number_input(key="batch_demo_n").set_value(60).run()
    assert at.button(key="batch_start").label == "Run 60 guests"
    at.button(key="batch_start").click()
    at.run()
    wait_until_stopped(at)
    assert "Done: 60 guests, 60 ok." in texts(at.success)


# ---- a CSV with problems ---------------------------------------------------------------------------------

BAD_CSV = (
    "browserId,email,channel,pointOfSale,segment\n"
    "b-001,,WEB,lumen/de,new\n"
    "b-002,,WEB,lumen/uk,new\n"
    "b-003,guest3@example.com,WEB,lumen/de,loyal\n"
    "b-004,,TV,lumen/de,new\n"
    ",guest5@example.com,MOBILE_APP,lumen/fr,loyal\n"
    ",,WEB,lumen/de,new\n"
)


def test_an_uploaded_csv_shows_its_row_problems_and_runs_the_valid_rows() -> None:
    at = batch_page()
    at.segmented_control(key="batch_source").set_value("upload").run()
    at.file_uploader(key="batch_upload").set_value(("guests.csv", BAD_CSV.encode(), "text/csv"))
    at.run()
    assert not at.exception, at.exception
    assert "3 row(s) have problems and will be skipped; 3 valid row(s) can run." in texts(at.warning)
    (problems,) = [d.value for d in at.dataframe if "problem" in d.value.columns]
    assert problems["row"].tolist() == [3, 4, 6] and problems["line"].tolist() == [4, 5, 7]
    assert (
        problems["problem"].iloc[0]
        == "use only one of browserId, email or identifiers (got browserId and email)"
    )
    assert problems["column"].iloc[1] == "channel"
    start_button = at.button(key="batch_start")
    assert start_button.label == "Run the 3 valid rows" and not start_button.disabled
    start_button.click()
    at.run()
    wait_until_stopped(at)
    (record,) = RunLog().runs()
    frame = load_results(record.path)
    assert frame["row"].tolist() == [1, 2, 5] and frame["segment"].tolist() == ["new", "new", "loyal"]


def test_an_unusable_csv_is_one_clear_error() -> None:
    at = batch_page()
    at.segmented_control(key="batch_source").set_value("upload").run()
    at.file_uploader(key="batch_upload").set_value(("guests.csv", b"name,segment\nLena,new\n", "text/csv"))
    at.run()
    assert any("no identity column" in e for e in texts(at.error))
    assert at.button(key="batch_start").disabled


# ---- a live tenant ---------------------------------------------------------------------------------------


def test_a_live_tenant_over_the_threshold_needs_confirmation(live_tenant: SandboxServer) -> None:
    at = batch_page()
    assert at.selectbox(key="target_name").value == CONFIGURED_NAME
    assert list(at.segmented_control(key="batch_source").options) == ["Generate", "Upload a CSV"]
    assert any("add a point of sale" in e for e in texts(at.error))  # a tenant has its own shops
    at.multiselect(key="batch_pos").set_value(["lumen/de"])
    at.text_input(key="batch_flow_text").set_value("checkout_ab_test")
    at.number_input(key="batch_n").set_value(300)
    at.run()
    assert any("acknowledge in the sidebar" in w for w in texts(at.warning))
    assert at.button(key="batch_start").disabled
    at.checkbox(key=f"live_ack::{CONFIGURED_NAME}").check().run()
    (warning,) = [w for w in texts(at.warning) if "calls on a live tenant" in w]
    assert warning.startswith("**300 calls on a live tenant.**") and "Batches over 200 guests" in warning
    assert at.button(key="batch_start").disabled
    at.checkbox(key="batch_confirm").check().run()
    assert not at.button(key="batch_start").disabled
    at.button(key="batch_start").click()
    at.run()
    wait_until_stopped(at)
    assert "Done: 300 guests, 300 ok." in texts(at.success)
    assert executions(live_tenant) == 300  # the calls went to the tenant


def test_a_small_live_batch_needs_no_confirmation_and_failed_guests_can_be_rerun(
    live_tenant: SandboxServer,
) -> None:
    httpx.put(f"{live_tenant.url}/sandbox/knobs", json={"faults": "503=0.4"}, timeout=10).raise_for_status()
    at = batch_page()
    at.checkbox(key=f"live_ack::{CONFIGURED_NAME}").check()
    at.multiselect(key="batch_pos").set_value(["lumen/uk"])
    at.text_input(key="batch_flow_text").set_value("checkout_ab_test")
    start(at, 100, retries=0)
    assert not any(c.key == "batch_confirm" for c in at.checkbox)
    wait_until_stopped(at)
    (record,) = RunLog().runs()
    assert record.failed > 0
    httpx.put(f"{live_tenant.url}/sandbox/knobs", json={"faults": ""}, timeout=10).raise_for_status()
    rerun = at.button(key="batch_rerun_failed")
    assert rerun.label == f"Re-run {record.failed:,} failed guests"
    rerun.click()
    at.run()
    wait_until_stopped(at)
    assert "Done: 100 guests, 100 ok." in texts(at.success)
    assert any(f"; {record.failed:,} called in " in c for c in texts(at.caption))  # only the failed ones
    assert executions(live_tenant) == 100  # (a faulted call never executes the flow)
