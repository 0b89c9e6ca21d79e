"""The Batch run page with the AEP Edge provider (AppTest), against the app's in-process sandbox."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pagetext import wait_for_batch
from streamlit.testing.v1 import AppTest

from flowlab.batch.runlog import RunLog, load_results

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def texts(elements: object) -> list[str]:
    return [str(e.value).replace("\\", "") for e in elements]  # type: ignore[attr-defined]


def edge_batch_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.session_state["target_provider"] = "edge"
    at.run()
    at.switch_page("app_pages/batch.py")
    at.run()
    assert not at.exception, at.exception
    return at


def test_an_edge_batch_of_300_identities_runs_and_opens_in_analysis() -> None:
    at = edge_batch_page()
    assert at.number_input(key="batch_edge_n").value == 5000  # the default size
    streams = at.selectbox(key="batch_datastream")
    assert streams.options[0].startswith("Lumen web (edge segmentation") and streams.index == 0
    assert len(streams.options) == 2  # the disabled datastream is not offered
    assert not [w for w in at.text_input if w.key == "batch_variant_path"]  # no variants on the Edge
    at.number_input(key="batch_edge_n").set_value(300)
    at.selectbox(key="batch_edge_event").set_value("commerce.checkouts")
    at.run()
    start = at.button(key="batch_start")
    assert start.label == "Run 300 identities" and not start.disabled
    start.click()
    at.run()
    wait_for_batch(at)
    assert any(s.startswith("Done: 300 guests, 300 ok") for s in texts(at.success))
    (record,) = RunLog().runs()
    run = load_results(record.path)
    assert len(run) == 300 and run["ok"].all()
    assert set(run["event_type"]) == {"commerce.checkouts"} and set(run["identity"]) >= {"Email"}
    assert run["attributes"].str.contains("loyaltyTier").any()  # sent with a token: attributes came back

    at.switch_page("app_pages/analysis.py")
    at.run()
    assert not at.exception, at.exception
    (rates,) = [d.value for d in at.dataframe if "rate_low" in d.value.columns]
    checkout = rates.set_index("name").loc["Checking out today"]  # an edge audience on the checkout itself
    assert checkout["guests"] == 300 and checkout["members"] == 300  # same-page, for every identity


def test_without_a_token_and_with_a_wrong_csv() -> None:
    at = edge_batch_page()
    at.toggle(key="batch_edge_auth").set_value(False)
    at.segmented_control(key="batch_edge_source").set_value("upload")
    at.run()
    at.file_uploader(key="batch_edge_upload").set_value(("guests.csv", b"browserId\nb-1\n", "text/csv"))
    at.run()
    assert any("identity.namespace and identity.id" in e for e in texts(at.error))
    assert at.button(key="batch_start").disabled
    csv = b"identity.namespace,identity.id,eventType,countryCode\nEmail,lena.vogel@example.de,,DE\n"
    at.file_uploader(key="batch_edge_upload").set_value(("edge.csv", csv, "text/csv"))
    at.run()
    assert any(s.startswith("All 1 rows are valid.") for s in texts(at.success))
    at.button(key="batch_start").click()
    at.run()
    wait_for_batch(at)
    (record,) = RunLog().runs()
    run = load_results(record.path)
    assert run["ok"].all() and run["segments"].map(len).iloc[0] > 0
    assert run["attributes"].fillna("").isin(["", "{}"]).all()  # no token: audiences only


def test_an_edge_batch_cancels_and_resumes() -> None:
    at = edge_batch_page()
    at.number_input(key="batch_edge_n").set_value(400)
    at.number_input(key="batch_rps").set_value(50.0)  # about 8 s: time to cancel
    at.run()
    at.button(key="batch_start").click()
    at.run()
    deadline = time.monotonic() + 20
    while RunLog().runs()[0].done < 20:  # cancel once some identities are done
        assert time.monotonic() < deadline
        time.sleep(0.1)
    at.run()
    at.button(key="batch_cancel").click()
    at.run()
    wait_for_batch(at)
    (record,) = RunLog().runs()
    assert record.status == "cancelled" and 0 < record.done < 400
    at.number_input(key="batch_rps").set_value(0.0)
    at.run()
    at.button(key="batch_resume").click()
    at.run()
    wait_for_batch(at)
    assert any(s.startswith("Done: 400 guests, 400 ok") for s in texts(at.success))
    run = load_results(record.path)
    assert len(run) == 400 and run["guest"].is_unique and run["ok"].all()
