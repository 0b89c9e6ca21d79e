"""Guests, events, sessions and triggered experiences (#11), on the real sandbox over loopback.

The demo export's two triggered flows (``tests/fixtures/sitecore-demo-triggered``, Sitecore's own files)
deliver to Sitecore Send, which the sandbox answers from its built-in ``send`` mock; a slow or failing
destination is a real HTTP server on 127.0.0.1 the connection is routed to.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowlab.admin import SandboxAdmin
from flowlab.sandbox import SandboxServer

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "tests" / "fixtures" / "sitecore-demo"
TRIGGERED = ROOT / "tests" / "fixtures" / "sitecore-demo-triggered"
ENGAGE = ROOT / "tests" / "engage"
ABANDONMENT_CONNECTION = "e7605e1f-d503-40e6-b1b0-5cae0ebe8e3d"
SUBSCRIBE_CONNECTION = "f2463c31-9e4c-47da-8725-4e3181acbbb5"


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(load=[DEMO, TRIGGERED]) as running:
        yield running


@pytest.fixture
def admin(server: SandboxServer) -> Iterator[SandboxAdmin]:
    with SandboxAdmin(base_url=server.url) as client:
        yield client


def _email() -> str:
    return f"t{uuid.uuid4().hex[:12]}@example.com"


def _browser(server: SandboxServer) -> str:
    reply = httpx.get(f"{server.url}/v1.2/browser/create.json", params={"client_key": server.client_key})
    assert reply.status_code == 201
    return str(reply.json()["ref"])


def _event(server: SandboxServer, **fields: Any) -> httpx.Response:
    body = {"client_key": server.client_key, "channel": "WEB", "pos": "lumen/de", "language": "EN",
            "currency": "EUR", "page": "home", **fields}  # fmt: skip
    return httpx.post(f"{server.url}/v1.2/events", json=body)


def _settled(
    admin: SandboxAdmin, guest_ref: str, count: int = 1, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """The guest's deliveries once ``count`` of them have finished (they run in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        items = admin.deliveries(guest_ref=guest_ref)["items"]
        done = [d for d in items if d["status"] not in ("QUEUED", "RUNNING")]
        if len(done) >= count:
            return items
        assert time.monotonic() < deadline, items
        time.sleep(0.02)


def _call(server: SandboxServer, friendly_id: str, **identity: Any) -> httpx.Response:
    body = {"clientKey": server.client_key, "channel": "WEB", "pointOfSale": "lumen/de", "language": "EN",
            "friendlyId": friendly_id, **identity}  # fmt: skip
    return httpx.post(f"{server.url}/v2/callFlows", json=body)


# ---- guests ---------------------------------------------------------------------------------------------


def test_a_posted_guest_context_is_what_flows_and_identities_see(
    server: SandboxServer, admin: SandboxAdmin
) -> None:
    email, browser = _email(), f"b-{uuid.uuid4()}"
    ref = admin.add_guest(
        {
            "email": email.upper(),
            "firstName": "Ada",
            "lastName": "Lovelace",
            "identifiers": [{"provider": "CRM", "id": email}],
            "dataExtensions": [{"name": "Ticket", "key": "default", "values": {"type": "VIP"}}],
            "sessions": [{"browserRef": browser, "status": "CLOSED", "sessionType": "WEB",
                          "pointOfSale": "lumen/de", "startedAt": "2026-05-01T10:00:00.000Z",
                          "events": [{"type": "VIEW", "arbitraryData": {"page": "home"}}]}],
            "orders": [{"ref": "o1", "status": "PURCHASED", "price": 10}],
        }
    )["ref"]  # fmt: skip
    guest = httpx.get(f"{server.url}/sandbox/guests/{ref}").json()
    assert guest["email"] == email and guest["guestType"] == "customer" and guest["browserIds"] == [browser]
    (session,) = guest["sessions"]
    assert (
        session["sessionType"] == "WEB" and session["endedAt"] == session["startedAt"] and session["events"]
    )
    assert guest["dataExtensions"][0]["values"] == {"type": "VIP"}
    by_browser = _call(server, "guest_greeting", browserId=browser)
    assert by_browser.status_code == 200 and "Ada" in by_browser.text
    assert "Ada" in _call(server, "guest_greeting", identifiers={"provider": "CRM", "id": email}).text


@pytest.mark.parametrize(
    ("guest", "status", "text"),
    [
        ([], 400, "must be a JSON object"),
        ({"email": "not an email"}, 400, "email must be an email address"),
        ({"dataExtensions": {"name": "x"}}, 400, "'dataExtensions' must be a list of objects"),
        ({"dataExtensions": [{"values": {}}]}, 400, r"dataExtensions\[0\].name"),
        ({"sessions": [{"status": "PAUSED"}]}, 400, r"sessions\[0\].status must be OPEN or CLOSED"),
        ({"sessions": [{"startedAt": "yesterday"}]}, 400, r"sessions\[0\].startedAt must be an ISO 8601"),
        ({"sessions": [{"status": "OPEN"}, {"status": "OPEN"}]}, 400, "at most one OPEN session"),
        ({"identifiers": {"provider": "a", "id": "b"}}, 400, "identifiers must be a list"),
        ({"firstName": 3}, 400, "'firstName' must be a string"),
        ({"orders": [{}] * 21}, 400, "more than Personalize keeps"),
        ({"email": "lena.vogel@example.de"}, 409, "another guest already has email"),
    ],
)
def test_a_bad_guest_is_refused_saying_what_to_fix(
    server: SandboxServer, guest: Any, status: int, text: str
) -> None:
    reply = httpx.post(f"{server.url}/sandbox/guests", json=guest)
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body["status"] == str(status) and re.search(text, body["message"]), body


def test_demo_guests_have_sessions_scripts_can_read(server: SandboxServer) -> None:
    guest = httpx.get(f"{server.url}/sandbox/guests", params={"limit": 1}).json()["items"][0]
    session = guest["sessions"][0]
    assert session["sessionType"] == "WEB" and session["pointOfSale"].startswith("lumen/")
    assert session["events"][0]["type"] == "VIEW" and session["browserRef"] in guest["browserIds"]
    assert session["dataExtensions"][0]["name"] == "SessionStatistics"
    assert guest["dataExtensions"][0]["name"] == "ext" and guest["dataExtensions"][0]["values"]


# ---- events ---------------------------------------------------------------------------------------------


def test_events_land_in_the_open_session_and_identity_links_the_browser(
    server: SandboxServer, admin: SandboxAdmin
) -> None:
    browser = _browser(server)
    anonymous = httpx.get(f"{server.url}/v1.2/browser/{browser}/show.json",
                          params={"client_key": server.client_key}).json()["customer"]["ref"]  # fmt: skip
    view = _event(server, type="VIEW", browser_id=browser, ext={"campaign": {"id": "c1"}}, websiteBaseUrl="x")
    assert view.status_code == 201, view.text
    assert set(view.json()) == {"ref", "status", "version", "client_key"} and view.json()["status"] == "OK"
    (session,) = [s for s in admin.guests(browserId=browser)["items"][0]["sessions"] if s["status"] == "OPEN"]
    (event,) = session["events"]
    assert event["ref"] == view.json()["ref"] and event["sessionRef"] == session["ref"]
    assert event["arbitraryData"] == {"page": "home", "language": "EN", "currency": "EUR", "_bx_version": "1.2",
                                      "websiteBaseUrl": "x", "ext": {"campaign_id": "c1"}}  # fmt: skip
    # IDENTITY names a known guest: the browser now means her, with the anonymous session moved along
    email = _email()
    known = admin.add_guest({"email": email, "firstName": "Grete"})["ref"]
    identity = _event(server, type="IDENTITY", browser_id=browser, email=email,
                      identifiers=[{"provider": "email", "id": email}])  # fmt: skip
    assert identity.status_code == 201, identity.text
    assert "Grete" in _call(server, "guest_greeting", browserId=browser).text
    guest = admin.guests(browserId=browser)["items"][0]
    assert guest["ref"] == known != anonymous and browser in guest["browserIds"]
    (open_session,) = [s for s in guest["sessions"] if s["status"] == "OPEN"]
    assert [e["type"] for e in open_session["events"]] == ["VIEW", "IDENTITY"]
    assert open_session["events"][1]["arbitraryData"]["_bx_identity"] == f"Updating Existing CREF: {known}"
    # nobody holds these identities: the anonymous guest of another browser is identified
    other, other_email = _browser(server), _email()
    legacy = httpx.get(f"{server.url}/v1.2/event/create.json", params={
        "client_key": server.client_key, "message": json.dumps({"type": "IDENTITY", "browser_id": other,
        "email": other_email, "firstname": "Nia", "identifiers": [{"provider": "email", "id": other_email}]})})  # fmt: skip
    assert legacy.status_code == 201 and legacy.json()["status"] == "OK"
    identified = admin.guests(email=other_email)["items"][0]
    assert identified["guestType"] == "customer" and identified["firstName"] == "Nia"
    assert "Nia" in _call(server, "guest_greeting", browserId=other).text


@pytest.mark.parametrize(
    ("fields", "status", "text"),
    [
        ({"type": "VIEW", "client_key": "wrong"}, 401, "unknown client_key"),
        ({"browser_id": "b"}, 400, "type is required"),
        ({"type": "VIEW"}, 400, "browser_id is required"),
        ({"type": "VIEW", "browser_id": "never-created"}, 404, "unknown browser_id"),
        ({"type": "SESSION_CLOSED", "browser_id": "b"}, 400, "is not one an event may have"),
        ({"type": "IDENTITY", "browser_id": "b"}, 400, "needs identifiers"),
        ({"type": "VIEW", "browser_id": "b", "ext": "x"}, 400, "ext must be an object"),
        ({"type": "VIEW", "browser_id": "b", "page": 3}, 400, "'page' must be a string"),
    ],
)
def test_a_bad_event_gets_the_stream_api_status(
    server: SandboxServer, fields: dict[str, Any], status: int, text: str
) -> None:
    browser = _browser(server)
    fields = {k: (browser if v == "b" else v) for k, v in fields.items()}
    reply = _event(server, **fields)
    assert reply.status_code == status and text in reply.json()["message"], reply.text


# ---- triggered flows ------------------------------------------------------------------------------------


def test_closing_a_session_delivers_the_abandonment_body(server: SandboxServer, admin: SandboxAdmin) -> None:
    """The demo's acceptance: a guest with an email, the Send destination (its mock) gets the rendered body."""
    email, browser = _email(), f"b-{uuid.uuid4()}"
    ref = admin.add_guest({"email": email, "sessions": [{"browserRef": browser, "status": "CLOSED", "events": [
        {"type": "VIEW", "arbitraryData": {"websiteBaseUrl": "https://play.example"}}]}]})["ref"]  # fmt: skip
    closed = admin.close_session(email=email)
    assert closed["fired"] == ["session_browse_abandonment"] and closed["openedNow"]
    assert closed["session"]["status"] == "CLOSED" and closed["guestRef"] == ref
    (delivery,) = _settled(admin, ref)
    assert delivery["status"] == "DELIVERED" and delivery["attempts"] == 1 and delivery["error"] is None
    assert delivery["trigger"] == "SESSION_CLOSED" and delivery["causalEventRef"] == closed["session"]["ref"]
    assert delivery["connection"] == {
        "ref": ABANDONMENT_CONNECTION,
        "name": "Sitecore Send Session Browse Abandonment",
    }
    assert delivery["method"] == "POST" and delivery["url"].endswith("subscribe.json?apikey=********")
    body = json.loads(delivery["requestBody"])
    assert body["Email"] == email and "WebsiteBaseUrl=https://play.example" in body["CustomFields"]
    assert delivery["responseStatus"] == 200 and delivery["response"]["Context"]["Email"] == email
    assert admin.deliveries(friendly_id="subscribe_to_update_emails_1", guest_ref=ref)["total"] == 0
    sent = httpx.get(f"{server.url}/sandbox/mocks/deliveries").json()["items"]
    assert any(d["system"] == "send" and d["body"] == body for d in sent)
    assert "redacted_api_key" not in json.dumps(admin.deliveries(guest_ref=ref))
    # the TRACKING record, in an EMAIL session, names what caused it
    (record,) = admin.tracking(ref)
    execution = record["arbitraryData"]["flowExecution"]
    assert execution["causalEventRef"] == closed["session"]["ref"] and execution["status"] == "SUCCESS"
    guest = httpx.get(f"{server.url}/sandbox/guests/{ref}").json()
    email_session = [s for s in guest["sessions"] if s["sessionType"] == "EMAIL"][0]
    assert email_session["flowExecutionRef"] == delivery["executionRef"] == execution["ref"]
    assert admin.execution(delivery["executionRef"])["trigger"] == "SESSION_CLOSED"


def test_a_guest_without_email_is_skipped_by_the_abandonment_condition(
    server: SandboxServer, admin: SandboxAdmin
) -> None:
    browser = _browser(server)
    assert _event(server, type="VIEW", browser_id=browser).status_code == 201
    closed = admin.close_session(browser_id=browser)
    assert not closed["openedNow"] and closed["session"]["events"] == 1
    (delivery,) = _settled(admin, closed["guestRef"])
    assert (
        delivery["status"] == "SKIPPED" and "identified_guests_without_purchased_ticket" in delivery["error"]
    )
    assert delivery["requestBody"] is None and delivery["attempts"] == 0


def test_a_custom_event_fires_the_subscribe_flow_with_the_event_as_entity(
    server: SandboxServer, admin: SandboxAdmin
) -> None:
    browser, email = _browser(server), _email()
    _event(server, type="IDENTITY", browser_id=browser, email=email, firstname="Sam", lastname="Rivera",
           identifiers=[{"provider": "email", "id": email}])  # fmt: skip
    fired = _event(server, type="SUBSCRIBE_TO_UPDATES_IDENTITY", browser_id=browser)
    assert fired.status_code == 201
    guest_ref = admin.guests(browserId=browser)["items"][0]["ref"]
    (delivery,) = _settled(admin, guest_ref)
    assert delivery["friendlyId"] == "subscribe_to_update_emails_1" and delivery["status"] == "DELIVERED"
    assert (
        delivery["causalEventRef"] == fired.json()["ref"]
        and delivery["connection"]["ref"] == SUBSCRIBE_CONNECTION
    )
    body = json.loads(delivery["requestBody"])
    assert body["Name"] == "Sam Rivera" and body["Email"] == email
    # a flow of one's own sees the event as entity, and a DESTINATION elsewhere lands in the capture mock
    template = '{"plan": "${entity.arbitraryData.ext.plan_tier}", "type": "${entity.type}"}'
    admin.load_flow(_triggered_flow("plan_chosen", "PLAN_CHOSEN", template, "https://hooks.example.com/in"))
    assert (
        _event(server, type="PLAN_CHOSEN", browser_id=browser, ext={"plan": {"tier": "gold"}}).status_code
        == 201
    )
    (mine,) = [d for d in _settled(admin, guest_ref, 2) if d["friendlyId"] == "plan_chosen"]
    assert (
        json.loads(mine["requestBody"]) == {"plan": "gold", "type": "PLAN_CHOSEN"} and mine["via"] == "mock"
    )
    captured = httpx.get(f"{server.url}/sandbox/mocks/deliveries").json()["items"]
    assert any(
        d["system"] == "capture" and d["body"] == {"plan": "gold", "type": "PLAN_CHOSEN"} for d in captured
    )


def _triggered_flow(friendly_id: str, trigger: str, template: str, url: str) -> dict[str, Any]:
    connection = {"ref": f"dest-{friendly_id}", "name": f"Destination {friendly_id}", "systemType": "DESTINATION",
                  "request": {"requestType": "POST", "connectionUrl": url}, "connectionTimeout": 1000,
                  "socketTimeout": 2000}  # fmt: skip
    tasks = [
        {"implementation": "templateRenderTask", "input": {"template": template}},
        {"implementation": "connectionTask", "input": {"connection": connection}},
    ]
    return {"friendlyId": friendly_id, "type": "TRIGGERED_V3", "status": "LIVE",
            "triggers": [{"name": trigger, "identifiers": [{"operator": "Equals", "value": trigger}]}],
            "variants": [{"name": "only", "tasks": tasks}]}  # fmt: skip


# ---- the destination: slow, failing, full ---------------------------------------------------------------


class Destination:
    """A real HTTP destination on loopback: answers after ``delay`` s, with ``statuses`` in turn (then 200)."""

    def __init__(self, delay: float = 0.0, statuses: tuple[int, ...] = ()) -> None:
        self.received: list[str] = []
        self.statuses = list(statuses)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                owner.received.append(body)
                time.sleep(delay)
                status = owner.statuses.pop(0) if owner.statuses else 200
                data = json.dumps({"ok": status == 200}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_slow_destination_never_blocks_the_event_request(
    server: SandboxServer, admin: SandboxAdmin
) -> None:
    slow = Destination(delay=1.0)
    try:
        admin.load_flow(
            _triggered_flow("slow_hook", "SLOW_HOOK", '{"n": 1}', "https://slow.example.com/hook")
        )
        admin.route_connection("dest-slow_hook", slow.url)
        browser = _browser(server)
        started = time.perf_counter()
        reply = _event(server, type="SLOW_HOOK", browser_id=browser)
        event_s = time.perf_counter() - started
        assert reply.status_code == 201 and event_s < 0.5, event_s  # the destination takes 1 s
        guest_ref = admin.guests(browserId=browser)["items"][0]["ref"]
        assert admin.deliveries(guest_ref=guest_ref)["items"][0]["status"] in ("QUEUED", "RUNNING")
        (delivery,) = _settled(admin, guest_ref)
        assert (
            delivery["status"] == "DELIVERED"
            and delivery["latencyMs"] >= 1000
            and delivery["via"] == "override"
        )
        assert slow.received == ['{"n": 1}']
    finally:
        slow.close()


def test_5xx_is_retried_with_backoff_and_4xx_is_not(server: SandboxServer, admin: SandboxAdmin) -> None:
    server.app.triggers.backoff_s = 0.01
    flaky = Destination(statuses=(503, 502))
    refused = Destination(statuses=(400,))
    try:
        admin.load_flow(
            _triggered_flow("flaky_hook", "FLAKY_HOOK", '{"n": 2}', "https://flaky.example.com/x")
        )
        admin.load_flow(
            _triggered_flow("refused_hook", "REFUSED_HOOK", '{"n": 3}', "https://no.example.com/x")
        )
        admin.route_connection("dest-flaky_hook", flaky.url)
        admin.route_connection("dest-refused_hook", refused.url)
        browser = _browser(server)
        _event(server, type="FLAKY_HOOK", browser_id=browser)
        _event(server, type="REFUSED_HOOK", browser_id=browser)
        guest_ref = admin.guests(browserId=browser)["items"][0]["ref"]
        by_flow = {d["friendlyId"]: d for d in _settled(admin, guest_ref, 2)}
        assert by_flow["flaky_hook"]["status"] == "DELIVERED" and by_flow["flaky_hook"]["attempts"] == 3
        assert len(flaky.received) == 3
        assert by_flow["refused_hook"]["status"] == "FAILED" and by_flow["refused_hook"]["attempts"] == 1
        assert by_flow["refused_hook"]["error"] == "HTTP 400 from the connection"
    finally:
        server.app.triggers.backoff_s = 0.2
        flaky.close()
        refused.close()


def test_a_full_queue_drops_with_a_reason(admin: SandboxAdmin, server: SandboxServer) -> None:
    server.app.triggers.max_pending = 0
    try:
        email = _email()
        ref = admin.add_guest({"email": email})["ref"]
        admin.close_session(guest_ref=ref)
        (delivery,) = admin.deliveries(guest_ref=ref)["items"]
        assert delivery["status"] == "DROPPED" and "queue is full" in delivery["error"]
    finally:
        server.app.triggers.max_pending = 1_000


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        ({}, 400, "exactly one of browserId, email or guestRef"),
        ({"email": "a@b.c", "guestRef": "x"}, 400, "exactly one"),
        ({"email": "nobody@nowhere.example"}, 404, "no guest with email"),
        ({"guestRef": "x", "pointOfSale": 1}, 400, "pointOfSale must be a string"),
    ],
)
def test_closing_a_session_of_nobody_says_so(
    server: SandboxServer, body: Any, status: int, text: str
) -> None:
    reply = httpx.post(f"{server.url}/sandbox/sessions/close", json=body)
    assert reply.status_code == status and text in reply.json()["message"], reply.text


# ---- Sitecore's own Engage SDK, end to end ------------------------------------------------------------


def _engage_sdk() -> Path:
    """``@sitecore/engage`` installed from ``tests/engage/package-lock.json`` into a cache (skips saying why)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip(
            "node and npm are not installed (Debian: apt-get install nodejs npm): the Engage SDK runs on node"
        )
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    if int(version.lstrip("v").split(".")[0] or 0) < 18:
        pytest.skip(f"node {version} has no fetch; the Engage SDK needs node 18 or newer")
    lock = (ENGAGE / "package-lock.json").read_bytes()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "flowlab"
    modules = cache / f"engage-{hashlib.sha256(lock).hexdigest()[:12]}"
    if not (modules / "node_modules" / "@sitecore" / "engage" / "package.json").exists():
        modules.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(ENGAGE / name, modules / name)
        try:
            run = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=modules,
                                 capture_output=True, text=True, timeout=180, check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            pytest.skip("npm ci of @sitecore/engage took over 3 minutes (is the npm registry reachable?)")
        if run.returncode != 0:
            pytest.skip(
                f"npm could not install @sitecore/engage (needs the npm registry): {run.stderr[-300:]}"
            )
    return modules / "node_modules"


def test_the_engage_sdk_in_server_mode_works_end_to_end(server: SandboxServer, admin: SandboxAdmin) -> None:
    """Cookie (browser create), VIEW, IDENTITY, a custom event that fires a flow, and personalize (callFlows)."""
    modules = _engage_sdk()
    email = _email()
    run = subprocess.run(
        ["node", str(ENGAGE / "engage_e2e.cjs"), server.url, server.client_key, email],
        capture_output=True, text=True, timeout=60, env={**os.environ, "NODE_PATH": str(modules)}, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout)
    name, _, browser = out["cookie"].partition("=")
    assert name == f"bid_{server.client_key}" and browser
    for call in ("view", "identity", "custom"):
        assert out[call]["status"] == "OK" and out[call]["version"] == "1.2", out
    assert out["personalize"]["message"] == "Welcome back, Eng!"
    guest = admin.guests(browserId=browser)["items"][0]
    assert guest["email"] == email and guest["firstName"] == "Eng" and guest["guestType"] == "customer"
    events = [e for s in guest["sessions"] if s["status"] == "OPEN" for e in s["events"]]
    assert [e["type"] for e in events] == ["VIEW", "IDENTITY", "SUBSCRIBE_TO_UPDATES_IDENTITY"]
    assert events[0]["arbitraryData"]["ext"] == {"campaign_id": "spring"}  # the SDK's ext, flattened
    (delivery,) = _settled(admin, guest["ref"])
    assert delivery["friendlyId"] == "subscribe_to_update_emails_1" and delivery["status"] == "DELIVERED"
    assert json.loads(delivery["requestBody"])["Name"] == "Eng Age"
