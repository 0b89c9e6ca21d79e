"""The Triggers page through the real entrypoint (AppTest), against the app's in-process sandbox (#11)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pagetext import demo_zip, text
from streamlit.testing.v1 import AppTest

from flowlab.admin import SandboxAdmin
from ui.target import sandbox_server

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")


def _deliveries(at: AppTest, count: int = 1, timeout: float = 10.0) -> Any:
    """Rerun the page (AppTest has no fragment timer) until ``count`` deliveries have settled."""
    deadline = time.monotonic() + timeout
    while True:
        table = next((d.value for d in at.dataframe if "destination" in d.value.columns), None)
        if table is not None and (~table["status"].isin(["QUEUED", "RUNNING"])).sum() >= count:
            return table
        assert time.monotonic() < deadline, table
        time.sleep(0.1)
        at.run()


@pytest.fixture
def triggers_page() -> Iterator[AppTest]:
    """The Triggers page on the app's sandbox with the demo export imported; the sandbox is reset after.

    The app's sandbox shares this process with AppTest's script threads, so an admin call waits its turn
    for the GIL: 30 s, not the client's 10 s default (a teardown's reset once took longer on a loaded CI
    machine)."""
    with SandboxAdmin(base_url=sandbox_server().url, timeout=30) as admin:
        admin.reset()  # a delivery from another test's session close would show up here
        admin.import_export(demo_zip("sitecore-demo", "sitecore-demo-triggered", top="export"))
        at = AppTest.from_file(APP, default_timeout=60).run()
        at.switch_page("app_pages/triggers.py").run()
        assert not at.exception
        yield at
        admin.reset()


def test_closing_lenas_session_delivers_the_abandonment_body(triggers_page: AppTest) -> None:
    at = triggers_page
    flows = next(d.value for d in at.dataframe if "fired by" in d.value.columns)
    assert dict(zip(flows["friendlyId"], flows["fired by"], strict=True)) == {
        "session_browse_abandonment": "SESSION_CLOSED",
        "subscribe_to_update_emails_1": "SUBSCRIBE_TO_UPDATES_IDENTITY",
    }
    at.selectbox(key="triggers_persona").set_value("Lena Vogel").run()
    at.segmented_control(key="triggers_action").set_value("Close the session").run()
    at.button(key="triggers_close").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "fired: session_browse_abandonment" in text(at, "success")
    table = _deliveries(at)
    row = table.iloc[0]
    assert (row["flow"], row["trigger"], row["status"], row["HTTP"]) == (
        "Session Browse Abandonment",
        "SESSION_CLOSED",
        "DELIVERED",
        200,
    )
    assert row["destination"] == "Sitecore Send Session Browse Abandonment"
    bodies = [j.value for j in at.json if "Email" in str(j.value)]
    assert bodies and json.loads(bodies[0])["Email"] == "lena.vogel@example.de"  # the body, as delivered
    assert any("apikey=********" in c.value for c in at.code)  # the URL, secret masked


def test_a_custom_event_fires_the_subscribe_flow(triggers_page: AppTest) -> None:
    at = triggers_page
    at.selectbox(key="triggers_persona").set_value("Grace Miller").run()
    assert at.selectbox(key="triggers_event_type").value == "SUBSCRIBE_TO_UPDATES_IDENTITY"  # from the flows
    at.button(key="triggers_send").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "Event SUBSCRIBE_TO_UPDATES_IDENTITY recorded" in text(at, "success")
    row = _deliveries(at).iloc[0]
    assert (row["flow"], row["status"]) == ("Subscribe to update emails", "DELIVERED")
    bodies = [json.loads(j.value) for j in at.json if "grace.miller@example.com" in str(j.value)]
    assert any(b.get("Email") == "grace.miller@example.com" for b in bodies)


def test_an_identity_event_without_triggered_flows_says_how_to_import() -> None:
    with SandboxAdmin(base_url=sandbox_server().url, timeout=30) as admin:
        admin.reset()
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("app_pages/triggers.py").run()
    assert "no triggered experiences yet" in text(at, "info")
    at.selectbox(key="triggers_event_type").set_value("IDENTITY").run()
    at.button(key="triggers_send").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "Event IDENTITY recorded" in text(at, "success")
    assert "No deliveries for this guest yet" in text(at, "caption") or "Waiting" in text(at, "caption")
