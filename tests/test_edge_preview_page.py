"""Edge preview and Journey through the real entrypoint (AppTest), against the app's in-process sandbox."""

from __future__ import annotations

from pathlib import Path

from pagetext import text
from streamlit.testing.v1 import AppTest

from flowlab.admin import SandboxAdmin
from ui.edge_response import ATTRIBUTES_NOTE
from ui.target import sandbox_server

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")


def _edge(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["target_provider"] = "edge"
    at.run()
    at.switch_page(page).run()
    assert not at.exception
    return at


def test_lena_shows_audience_names_and_attributes() -> None:
    at = _edge("app_pages/edge_preview.py")
    # The app's sandbox is shared by every AppTest of this process: an earlier Edge batch may have made
    # Lena a member already ("Already a member", not "same-page"). Start her from the demo data.
    with SandboxAdmin(base_url=sandbox_server().url, timeout=30) as admin:
        admin.reset()
    assert "SANDBOX" in text(at.sidebar, "markdown") or at.sidebar.selectbox(key="edge_target_name")
    at.button(key="edge_call").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    shown = text(at, "markdown")
    assert "Checking out today" in shown and "VIP checking out" in shown  # names, not ids
    assert "lumen-cms-attributes" in shown
    tables = [d.value for d in at.dataframe]
    assert any("loyaltyTier" in set(t["attribute"]) for t in tables if "attribute" in t)
    assert "Why these audiences?" in shown and "same-page" in shown


def test_without_token_the_attributes_are_gone_with_a_note() -> None:
    at = _edge("app_pages/edge_preview.py")
    at.toggle(key="edge_no_token").set_value(True).run()
    at.button(key="edge_call").click().run()
    assert not at.exception and not at.error
    assert "Checking out today" in text(at, "markdown")
    assert not any("attribute" in d.value for d in at.dataframe)
    assert ATTRIBUTES_NOTE in text(at, "info")


def test_a_bad_identity_says_what_to_fix() -> None:
    at = _edge("app_pages/edge_preview.py")
    at.text_input(key="edge_identity_id").set_value("not-an-email").run()
    at.button(key="edge_call").click().run()
    assert not at.exception
    errors = text(at, "error")
    assert "not an email address" in errors and "What to do" in errors


def test_preview_under_edge_points_to_edge_preview() -> None:
    at = _edge("app_pages/preview.py")
    assert "Preview calls Sitecore flows; for AEP Edge use **Edge preview**" in text(at, "info")


def test_journey_plays_the_preset_and_summarises() -> None:
    at = _edge("app_pages/journey.py")
    at.button(key="journey_play").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    summary = text(at, "markdown")
    assert "Checking out today appeared on the same page as the checkout" in summary
    assert "Purchased in the last 7 days appeared 10 simulated minutes after the purchase" in summary
    assert len(at.get("vega_lite_chart")) == 1
