"""Every page through the real entrypoint (AppTest), against the app's own in-process sandbox."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from flowlab.sandbox import SandboxServer
from flowlab.workbench.personas import PersonaStore
from flowlab.workbench.targets import Target, TargetStore

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
PAGES = sorted((ROOT / "app_pages").glob("*.py"))


def unescape(markdown: str) -> str:
    """Markdown source as the reader sees it (the app backslash-escapes untrusted text)."""
    return re.sub(r"\\(.)", r"\1", markdown)


def texts(at: Any, kind: str = "markdown") -> str:
    return "\n".join(unescape(str(e.value)) for e in getattr(at, kind))


def start(**state: Any) -> AppTest:
    """The app on its default page (Preview), with session state set before the first run."""
    at = AppTest.from_file(APP, default_timeout=30)
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def field(at: AppTest, key: str) -> str:
    """The messages shown under one form field (its keyed container)."""
    return texts(at.get_by_key(key), "caption")


def call(at: AppTest) -> AppTest:
    at.button(key="call").click().run()
    assert not at.exception
    return at


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_page_renders(page: Path) -> None:  # includes pages added later
    at = start()
    at.switch_page(f"app_pages/{page.name}").run()
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    assert "SANDBOX" in texts(at.sidebar) and "SANDBOX" in texts(at.main)  # the label, on every page


def test_pick_a_demo_persona_and_call() -> None:
    """The README's promise: pick a persona, press one button, see cards, JSON, variant and why."""
    at = start()
    at.selectbox(key="persona").set_value("Lena Vogel").run()
    assert at.text_input(key="browser_id").value == "723972bd-4406-5d84-9ea1-3dc4d895dd08"
    assert at.selectbox(key="channel").value == "MOBILE_WEB" and at.selectbox(key="language").value == "DE"
    call(at)
    cards = "".join(h.value for h in at.html)
    assert 'class="fl-card"' in cards and "Your VIP lounge" in cards
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Status"] == "200 OK" and metrics["Variant"] == "default" and metrics["Offers"] == "1"
    why = texts(at.get_by_key("preview_why"))  # type: ignore[arg-type]
    assert "Variant 'Default hero' (control) of hero_banner_default, bucket 39 of 120" in why
    assert "Decision table 'Hero Offer' row 1 of 7 fired: Tier = gold, Country = DE" in why
    assert "Condition utm_campaign_present did not pass" in why
    assert at.json and at.json[0].value  # the exact JSON, as a collapsible tree
    assert any('"decisionOffers"' in c.value for c in at.code if c.language == "json")


def test_first_visit_call_flow_shows_offers() -> None:
    """Issue #8: the page says "pick a persona, press Call flow", so one press must be enough."""
    at = start()
    assert at.selectbox(key="persona").value == "Lena Vogel"  # a demo persona, and its fields, are filled in
    assert at.text_input(key="browser_id").value == "723972bd-4406-5d84-9ea1-3dc4d895dd08"
    assert at.selectbox(key="friendly_id").value == "hero_banner*"
    call(at)
    assert not at.error, texts(at, "error")
    cards = "".join(h.value for h in at.html)
    assert 'class="fl-card"' in cards and "Your VIP lounge" in cards
    assert {m.label: m.value for m in at.metric}["Status"] == "200 OK"


def test_first_visit_on_a_live_tenant_preselects_nothing_and_says_what_to_fill_in(
    live_tenant: SandboxServer,
) -> None:
    at = start()
    assert at.selectbox(key="persona").value == ""  # the sandbox's demo guests do not exist there
    assert at.text_input(key="browser_id").value == ""
    guidance = texts(at, "info")
    assert "Flow (friendlyId)" in guidance and "Point of sale" in guidance and "Browser ID" in guidance
    assert "acknowledgement in the sidebar" in guidance
    at = start(friendly_id="checkout_ab_test", pos="lumen/de")  # typed in: a tenant's flows are not listed
    at.checkbox(key="live_ack::Configured tenant (env)").check().run()
    guidance = texts(at, "info")
    assert "fill in Browser ID (or press New ID), then press" in guidance  # only what is still missing
    at.text_input(key="browser_id").set_value("live-first-visit").run()
    call(at)
    assert {m.label: m.value for m in at.metric}["Status"] == "200 OK"


def test_the_form_sends_exactly_one_identity() -> None:
    at = start()
    at.selectbox(key="persona").set_value("Lena Vogel").run()
    at.segmented_control(key="identity_kind").set_value("email").run()
    with pytest.raises(KeyError):
        at.text_input(key="browser_id")  # only the chosen identity's field is on screen
    at.text_input(key="email").set_value("lena.vogel@example.de").run()
    call(at)
    body = next(c.value for c in at.code if c.language == "json" and '"clientKey"' in c.value)
    sent = json.loads(body)
    assert sent["email"] == "lena.vogel@example.de" and "browserId" not in sent and "identifiers" not in sent


def test_validation_errors_sit_next_to_their_field() -> None:
    at = start(language="xx", browser_id="", identity_kind="browserId")
    call(at)
    assert "'xx' is not an ISO 639 language code" in field(at, "field_language")
    assert "enter a browser ID, or press New ID" in field(at, "field_identity")
    assert "Nothing was sent" in texts(at, "error")
    assert not at.metric  # nothing was sent


def test_bad_params_are_reported_under_params() -> None:
    at = start(
        params_base=[{"key": "utm", "value": "x"}, {"key": "utm.campaign", "value": "y"}], browser_id="b"
    )
    call(at)
    assert "clashes" in field(at, "field_params")


def test_unknown_friendly_id_gets_a_friendly_404() -> None:
    at = start(friendly_id="no_such_flow", browser_id="page-test")
    call(at)
    errors = texts(at, "error")
    assert "404: no flow with friendlyId 'no_such_flow'" in errors
    assert "What to do:" in errors and "trailing *" in errors
    assert not at.exception
    assert "404" in field(at, "field_friendly_id")


def test_utm_helper_adds_campaign_params() -> None:
    at = start(browser_id="utm-test", friendly_id="hero_banner*")
    at.text_input(key="utm_url").set_value(
        "https://shop.example/?utm_source=google&utm_campaign=run_club"
    ).run()
    at.button(key="utm_add").click().run()
    editor = at.data_editor[0].value
    assert dict(zip(editor["key"], editor["value"], strict=True)) == {
        "utm.source": "google",
        "utm.campaign": "run_club",
    }
    call(at)
    assert "Run Club Week" in "".join(h.value for h in at.html)


def test_curl_export_works_in_a_terminal() -> None:
    at = start()
    at.selectbox(key="persona").set_value("First-time UK visitor (paid search)").run()
    call(at)
    curl = next(c.value for c in at.code if c.language == "bash")
    assert curl.startswith("curl -sS -X POST http://127.0.0.1:")
    done = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=20, check=True)
    body = json.loads(done.stdout)
    assert body["variant"] == "campaign" and body["decisionOffers"][0]["attributes"]["title"] == (
        "The Spring Trail Collection"
    )
    assert any(c.language == "python" and "httpx.post(" in c.value for c in at.code)
    assert any(b.key == "preview_request_postman" for b in at.get("download_button"))


def test_new_browser_id_comes_from_browser_create() -> None:
    at = start()
    at.button(key="new_browser_id").click().run()
    browser_id = at.text_input(key="browser_id").value
    assert re.fullmatch(r"[0-9a-f-]{36}", browser_id or "")
    call(at)
    why = texts(at.get_by_key("preview_why"))  # type: ignore[arg-type]
    assert "Known visitor found by browserId" in why  # browser/create made the guest, as on a real site


def test_connection_refused_is_explained_not_a_traceback() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    TargetStore().save(
        Target.sitecore(
            "Stopped sandbox", client_key="k", base_url=f"http://127.0.0.1:{port}", is_sandbox=True
        )
    )
    at = start(target_name="Stopped sandbox", friendly_id="checkout_ab_test", browser_id="b-1")
    call(at)
    errors = texts(at, "error")
    assert f"Cannot connect to http://127.0.0.1:{port}" in errors and "What to do:" in errors
    assert {m.label: m.value for m in at.metric}["Status"] == "no answer"


def test_a_stopped_sandbox_target_is_explained_not_a_traceback() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    TargetStore().save(
        Target.sitecore("Gone", client_key="k", base_url=f"http://127.0.0.1:{port}", is_sandbox=True)
    )
    at = start(target_name="Gone")
    for page in ("preview.py", "compare.py", "history.py", "sandbox.py"):
        at.switch_page(f"app_pages/{page}").run()
        assert not at.exception, page
    at.switch_page("app_pages/sandbox.py").run()
    assert "Cannot connect" in texts(at, "error")


def test_save_the_form_as_a_persona() -> None:
    at = start()
    at.selectbox(key="persona").set_value("Camille Laurent").run()
    at.text_input(key="save_persona_name").set_value("Camille on the web").run()
    at.button(key="save_persona").click().run()
    saved = PersonaStore().get("Camille on the web", include_demo=False)
    assert saved is not None and saved.identifier is not None and saved.identifier.id == "LY-FR-204518"
    assert at.selectbox(key="persona").value == "Camille on the web"


def test_compare_two_personas() -> None:
    at = start()
    at.switch_page("app_pages/compare.py").run()
    assert at.multiselect(key="compare_personas").value == [
        "Lena Vogel",
        "First-time UK visitor (paid search)",
    ]
    at.button(key="compare_run").click().run()
    assert not at.exception
    summary = texts(at)
    assert "Differences:" in summary and "Offers" in summary and "Variant (sandbox truth)" in summary
    table = at.dataframe[0].value
    assert list(table.columns) == ["Lena Vogel", "First-time UK visitor (paid search)"]
    assert table.loc["Offers"].tolist() == ["Your VIP lounge", "The Spring Trail Collection"]
    cards = "".join(h.value for h in at.html)
    assert "Your VIP lounge" in cards and "The Spring Trail Collection" in cards


def test_compare_starts_from_the_previewed_persona() -> None:
    at = start()
    at.selectbox(key="persona").set_value("Grace Miller").run()
    at.switch_page("app_pages/compare.py").run()
    assert at.multiselect(key="compare_personas").value == ["Grace Miller", "Lena Vogel"]


def test_compare_one_persona_across_flows() -> None:
    at = start()
    at.switch_page("app_pages/compare.py").run()
    at.segmented_control(key="compare_mode").set_value("flows").run()
    at.selectbox(key="compare_persona").set_value("Grace Miller").run()
    at.multiselect(key="compare_flows").set_value(
        ["checkout_ab_test", "recommendations_3way", "guest_greeting"]
    ).run()
    at.button(key="compare_run").click().run()
    assert not at.exception
    assert list(at.dataframe[0].value.columns) == [
        "checkout_ab_test",
        "recommendations_3way",
        "guest_greeting",
    ]
    assert "Welcome back, Grace!" in texts(at)


def test_history_rerun_and_export() -> None:
    at = start()
    at.selectbox(key="persona").set_value("Grace Miller").run()
    call(at)
    at.switch_page("app_pages/history.py").run()
    reruns = [b for b in at.button if str(b.key).startswith("history_rerun_")]
    assert len(reruns) == 1
    reruns[0].click().run()
    assert not at.exception
    assert "Re-ran hero_banner*: 200 OK, variant campaign." in texts(at, "success")
    assert len([b for b in at.button if str(b.key).startswith("history_rerun_")]) == 2
    keys = {b.key for b in at.get("download_button")}
    assert {"history_export_json", "history_export_postman"} <= keys


def test_history_opens_a_call_in_the_preview() -> None:
    at = start()
    at.selectbox(key="persona").set_value("Grace Miller").run()
    call(at)
    at.switch_page("app_pages/history.py").run()
    next(b for b in at.button if str(b.key).startswith("history_load_")).click().run()
    assert not at.exception
    assert at.text_input(key="email").value == "grace.miller@example.com"  # back on the Preview page


FLOW = {
    "friendlyId": "page_test_loaded_flow",
    "name": "Loaded by the page test",
    "status": "LIVE",
    "variants": [{"ref": "v1", "name": "Only", "tasks": [
        {"implementation": "templateRenderTask", "input": {"template": '{"variant": "loaded"}'}}]}],
}  # fmt: skip


def test_sandbox_page_lists_flows_and_loads_a_flow_from_json() -> None:
    at = start()
    at.switch_page("app_pages/sandbox.py").run()
    flows = at.dataframe[0].value
    assert {"checkout_ab_test", "hero_banner_default", "summer_sale"} <= set(flows["friendlyId"])
    at.text_area(key="sandbox_load_json").set_value(json.dumps(FLOW)).run()
    at.button(key="sandbox_load").click().run()
    assert not at.exception
    assert "Loaded flow 'page_test_loaded_flow' (LIVE)" in texts(at, "success")
    assert "page_test_loaded_flow" in set(at.dataframe[0].value["friendlyId"])


@pytest.mark.parametrize("kind", ["offer", "decision model", "flow"])
def test_sandbox_page_examples_load(kind: str) -> None:
    at = start()
    at.switch_page("app_pages/sandbox.py").run()
    at.segmented_control(key="sandbox_load_kind").set_value(kind).run()
    at.button(key="sandbox_load_example").click().run()
    assert json.loads(at.text_area(key="sandbox_load_json").value or "")
    at.button(key="sandbox_load").click().run()
    assert not at.exception and not at.error, texts(at, "error")
    assert f"Loaded {kind}" in texts(at, "success")


def test_sandbox_page_resets_to_the_demo_data() -> None:
    at = start()
    at.switch_page("app_pages/sandbox.py").run()
    at.text_area(key="sandbox_load_json").set_value(
        json.dumps({**FLOW, "friendlyId": "page_test_reset_me"})
    ).run()
    at.button(key="sandbox_load").click().run()
    assert "page_test_reset_me" in set(at.dataframe[0].value["friendlyId"])
    at.button(key="sandbox_reset").click().run()
    assert not at.exception
    assert "back to the demo data" in texts(at, "success")
    assert "page_test_reset_me" not in set(at.dataframe[0].value["friendlyId"])


def test_sandbox_page_refuses_bad_json_kindly() -> None:
    at = start()
    at.switch_page("app_pages/sandbox.py").run()
    at.text_area(key="sandbox_load_json").set_value('{"friendlyId": "Bad Id", "variants": []}').run()
    at.button(key="sandbox_load").click().run()
    assert not at.exception
    assert "400" in texts(at, "error") and "friendlyId" in texts(at, "error")


def test_live_target_needs_an_acknowledgement(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWLAB_REGION", "eu")
    monkeypatch.setenv("FLOWLAB_CLIENT_KEY", "pk-live")
    at = start()
    assert at.selectbox(key="target_name").value == "Configured tenant (env)"
    assert ":red-badge[" in "".join(m.value for m in at.markdown) and "LIVE" in texts(at.main)
    assert "tracking event" in texts(at, "warning")
    assert at.button(key="call").disabled
    at.checkbox(key="live_ack::Configured tenant (env)").check().run()
    assert not at.button(key="call").disabled


def test_switching_target_clears_target_specific_fields() -> None:
    TargetStore().save(Target.sitecore("Acme EU", client_key="pk", region="eu", point_of_sale="acme/ie"))
    at = start()
    at.selectbox(key="persona").set_value("Lena Vogel").run()
    call(at)
    assert at.selectbox(key="pos").value == "lumen/de" and at.metric
    at.selectbox(key="target_name").set_value("Acme EU").run()
    assert at.selectbox(key="pos").value == "acme/ie"  # the tenant's default point of sale
    assert at.selectbox(key="friendly_id").value is None  # no sandbox flow on a tenant
    assert at.selectbox(key="persona").value == ""
    assert at.text_input(key="browser_id").value == ""  # a demo guest's identity means nothing there
    assert at.selectbox(key="channel").value == "WEB" and at.selectbox(key="language").value == ""
    assert not any("Lena Vogel" in option for option in at.selectbox(key="persona").options)  # demo guests
    assert not at.metric  # the sandbox result is gone
    at.switch_page("app_pages/compare.py").run()
    assert at.selectbox(key="compare_flow").value is None


def test_add_a_tenant_in_the_sidebar() -> None:
    at = start()
    at.text_input(key="new_target_name").set_value("Acme US").run()
    at.selectbox(key="new_target_region").set_value("us").run()
    at.text_input(key="new_target_key").set_value("pk-acme").run()
    at.button(key="new_target_save").click().run()
    assert not at.exception
    assert at.selectbox(key="target_name").value == "Acme US"
    saved = json.loads((Path.cwd() / "flowlab-data" / "targets.json").read_text())
    assert saved["targets"][0]["baseUrl"] == "https://api-engage-us.sitecorecloud.io"
    at.button(key="new_target_save").click().run()  # no name now: the problem shows under the field
    assert "give the target a name" in texts(at.sidebar, "caption")
