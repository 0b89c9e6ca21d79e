"""The app in a real browser: ``streamlit run app.py`` driven by Debian's Chromium through Playwright.

One server and one browser for the module. The app's in-process sandbox listens on a port chosen here
(``FLOWLAB_SANDBOX_PORT``), so the XSS test can load a hostile offer through the sandbox's admin API.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from appdriver import CHROMIUM, CHROMIUM_ARGS, choose, free_port, settle, start_app

pytestmark = pytest.mark.browser


class App:
    def __init__(self, url: str, sandbox_url: str) -> None:
        self.url = url
        self.sandbox_url = sandbox_url


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    sandbox_port = free_port()
    process, url = start_app(tmp_path_factory.mktemp("data"), sandbox_port=sandbox_port)
    try:
        yield App(url, f"http://127.0.0.1:{sandbox_port}")
    finally:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        yield page
    finally:
        context.close()


def test_a_deep_link_first_still_gets_the_frame(app: App, page: Page) -> None:
    """The first request after start is /compare: the page still runs inside app.py (sidebar, label)."""
    page.goto(app.url + "/compare")
    expect(page.locator(".st-key-target_name")).to_be_visible(timeout=30_000)  # the first run starts it
    expect(page.get_by_role("heading", name="Compare")).to_be_visible()
    expect(page.get_by_text("SANDBOX · Sandbox (built-in)").first).to_be_visible()


def test_edge_preview_one_click_shows_an_audience_name(app: App, page: Page) -> None:
    """Pick AEP Edge, open Edge preview, press Call Edge: Lena's audiences by name, in a real browser."""
    page.goto(app.url)
    expect(page.locator(".st-key-target_provider")).to_be_visible(timeout=30_000)
    page.locator(".st-key-target_provider button", has_text="AEP Edge").click()
    settle(page)
    page.locator("[data-testid='stSidebarNav'] a", has_text="Edge preview").first.click()
    settle(page)
    page.locator(".st-key-edge_call button").click()
    expect(page.get_by_text("Checking out today").first).to_be_visible(timeout=20_000)
    expect(page.get_by_text("Nothing was sent")).to_have_count(0)


def test_first_visit_one_click_shows_an_offer(app: App, page: Page) -> None:
    """Issue #8: a new visitor presses Call flow once, as the page says, and sees offers, not errors."""
    page.goto(app.url)
    expect(page.locator(".st-key-persona")).to_be_visible(timeout=30_000)  # the first run starts the sandbox
    expect(page.locator(".st-key-browser_id input")).to_have_value("723972bd-4406-5d84-9ea1-3dc4d895dd08")
    settle(page)
    page.locator(".st-key-call button").click()
    card = page.locator(".fl-card").first
    expect(card).to_be_visible()
    expect(card.locator(".fl-title")).to_have_text("Your VIP lounge")
    expect(page.get_by_text("Nothing was sent")).to_have_count(0)


def test_fill_the_form_call_a_demo_flow_and_see_offer_cards(app: App, page: Page) -> None:
    page.goto(app.url)
    expect(page.locator(".st-key-persona")).to_be_visible()
    choose(page, "persona", "Lena Vogel")
    expect(page.locator(".st-key-browser_id input")).to_have_value("723972bd-4406-5d84-9ea1-3dc4d895dd08")
    choose(page, "friendly_id", "checkout_ab_test")
    page.locator(".st-key-call button").click()
    card = page.locator(".fl-card").first
    expect(card).to_be_visible()
    expect(card.locator(".fl-title")).to_have_text("Free shipping")  # Lena's bucket 39 lands on variant A
    expect(card.locator("img")).to_have_attribute("src", re.compile(r"^data:image/svg\+xml;base64,"))
    expect(page.get_by_text("Why this variant?")).to_be_visible()
    expect(page.get_by_text("Bucket 39 of 120 → variant 'A – Free shipping'", exact=False)).to_be_visible()


HOSTILE = "<img src=x onerror=alert(1)>"


def load_hostile_flow(sandbox_url: str) -> None:
    offer = {
        "ref": "xss-offer",
        "name": "XSS probe",
        "attributes": {
            "title": HOSTILE,
            "text": "<script>alert(2)</script>",
            "imageUrl": "javascript:alert(3)",
            "ctaText": "Go",
            "ctaUrl": "javascript:alert(4)",
            "badge": "<svg onload=alert(5)>",
        },
    }
    model = {
        "ref": "xss-model",
        "name": "XSS probe model",
        "nodes": [
            {
                "id": "xss-node",
                "name": "Offers",
                "type": "decisionTable",
                "hitPolicy": "FIRST",
                "inputs": [{"label": "Guest Type", "expression": "guest.guestType"}],
                "outputs": [{"name": "offer", "typeRef": "com.boxever.offer"}],
                "rules": [{"inputEntries": ["-"], "outputEntries": ['"xss-offer"']}],
            }
        ],
    }
    flow = {"friendlyId": "xss_probe", "name": "XSS probe", "status": "LIVE", "variants": [{
        "ref": "xss-v1", "name": "Only", "tasks": [
            {"implementation": "decisionModelTask", "input": {"decisionModelRefs": ["xss-model"]}},
            {"implementation": "templateRenderTask",
             "input": {"template": '{"variant": "xss", "decisionOffers": ${toJSON(offers)}}'}}]}]}  # fmt: skip
    for path, body in (("offers", offer), ("decision-models", model), ("flows", flow)):
        httpx.post(f"{sandbox_url}/sandbox/{path}", json=body, timeout=10).raise_for_status()


def test_html_in_offer_attributes_is_shown_as_text_and_never_runs(app: App, page: Page) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(app.url)
    expect(page.locator(".st-key-persona")).to_be_visible()  # the app has run, so its sandbox is up
    load_hostile_flow(app.sandbox_url)
    choose(page, "persona", "New US visitor")
    choose(page, "friendly_id", "xss_probe")
    page.locator(".st-key-call button").click()
    card = page.locator(".fl-card").first
    expect(card).to_be_visible()
    expect(card.locator(".fl-title")).to_have_text(HOSTILE)  # the markup, literally, as text
    expect(card.locator(".fl-badge")).to_have_text("<svg onload=alert(5)>")
    expect(card.locator(".fl-text")).to_have_text("<script>alert(2)</script>")
    assert card.locator("img").count() == 0  # neither the title's <img src=x> nor the javascript: image
    assert page.locator("img[src='x']").count() == 0
    assert card.locator("script, svg, a[href^='javascript']").count() == 0
    expect(card).to_contain_text("image not shown")
    page.wait_for_timeout(1000)  # give any onerror/onload a chance to fire
    assert dialogs == []


def test_connections_page_sends_the_demo_maxmind_connection(app: App, page: Page) -> None:
    """Import the demo export's connections, open Connections, pick MaxMind, press Send: a city (#11)."""
    import io
    import zipfile
    from pathlib import Path

    demo = Path(__file__).resolve().parent / "fixtures" / "sitecore-demo"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(demo.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(demo.parent).as_posix())
    page.goto(app.url)
    expect(page.locator(".st-key-persona")).to_be_visible(timeout=30_000)  # the app's sandbox is up
    headers = {"Content-Type": "application/zip"}
    answer = httpx.post(
        f"{app.sandbox_url}/sandbox/import", content=buffer.getvalue(), headers=headers, timeout=10
    )
    answer.raise_for_status()
    page.locator("[data-testid='stSidebarNav'] a", has_text="Connections").first.click()
    settle(page)
    choose(page, "connections_pick", "Get City from MaxMind")
    expect(page.get_by_role("textbox", name="IP Address (ipAddress)")).to_have_value(
        "174.0.167.183"
    )  # example value
    page.locator(".st-key-connections_send button").click()
    expect(page.get_by_text("Went to")).to_be_visible()  # the answer is drawn
    settle(page)
    page.get_by_role("tab", name="Mapped outputs").click()
    outputs = page.get_by_role("tabpanel", name="Mapped outputs")
    expect(outputs.get_by_text("Berlin").first).to_be_visible()
    expect(page.get_by_text("geolite.info/geoip/v2.1/city/174.0.167.183").first).to_be_visible()  # the curl
