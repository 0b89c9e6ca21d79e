"""The Connections page (AppTest, the app's own sandbox) and its exports (workbench.connections), #11."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pagetext import demo_zip, text
from streamlit.testing.v1 import AppTest

from flowlab.admin import SandboxAdmin
from flowlab.sandbox import SandboxServer
from flowlab.workbench.connections import (
    auth_type,
    connection_inputs,
    export_request,
    input_values,
    to_curl,
    to_postman,
)
from ui.target import sandbox_server

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
MAXMIND = "Get City from MaxMind"
SECRETS = ("s3cr3t-pass", "s3cr3t-client", "s3cr3t-key", "s3cr3t-header")


def _table(at: Any, column: str) -> Any:
    """The first table (st.dataframe or st.table) with this column."""
    tables = [*at.dataframe, *at.table]
    return next((d.value for d in tables if column in d.value.columns), None)


@pytest.fixture
def app_sandbox() -> Iterator[SandboxAdmin]:
    """The app's sandbox (shared by every AppTest of the process) with the demo export imported; reset after."""
    with SandboxAdmin(base_url=sandbox_server().url, timeout=30) as admin:
        admin.import_export(demo_zip())
        yield admin
        admin.reset()


def connections_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("app_pages/connections.py").run()
    assert not at.exception, at.exception
    return at


def test_maxmind_sends_shows_a_city_and_copies_as_curl_without_a_secret(app_sandbox: SandboxAdmin) -> None:
    app_sandbox.add_connection(  # a password the curl export must not carry
        {
            **app_sandbox.connection(MAXMIND),
            "auth": {"authType": "BASIC", "username": "u", "password": SECRETS[0]},
        }
    )
    at = connections_page()
    listed = _table(at, "used by")
    assert MAXMIND in set(listed["name"]) and "Dynamic Welcome Message" in " ".join(listed["used by"])
    refs = {c["name"]: c["ref"] for c in app_sandbox.connections()}
    at.selectbox(key="connections_pick").set_value(refs[MAXMIND]).run()
    field = at.text_input(key=f"connections_input::{refs[MAXMIND]}::ipAddress")
    assert field.value == "174.0.167.183"  # the input's exampleValue
    at.button(key="connections_send").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Status"] == "200" and metrics["Went to"] == "mock" and metrics["Latency"].endswith(" ms")
    outputs = _table(at, "reference")
    city = outputs[outputs["reference"] == "city"]["value"].iloc[0]
    assert json.loads(city)["names"]["en"] == "Berlin"
    headers = _table(at, "header")
    assert "Basic ********" in set(headers["value"])  # the request as sent, masked
    curl = next(c.value for c in at.code if c.language == "bash")
    assert "curl -sS -X GET https://geolite.info/geoip/v2.1/city/174.0.167.183" in curl
    assert '-u "${USERNAME}:${PASSWORD}"' in curl and SECRETS[0] not in curl
    shown = text(at, "markdown", "caption", "code")
    assert SECRETS[0] not in shown


def test_another_input_reaches_the_request(app_sandbox: SandboxAdmin) -> None:
    at = connections_page()
    ref = next(c["ref"] for c in app_sandbox.connections() if c["name"] == "Azure Translation")
    at.selectbox(key="connections_pick").set_value(ref).run()
    at.text_input(key=f"connections_input::{ref}::outputLanguage").set_value("de").run()
    at.button(key="connections_send").click().run()
    assert not at.exception and not at.error
    assert any("to=de" in c.value for c in at.code if c.language == "http")
    assert "Willkommen" in _table(at, "reference")["value"].iloc[0]


def test_an_empty_sandbox_says_how_to_import() -> None:
    with SandboxAdmin(base_url=sandbox_server().url, timeout=30) as admin:
        admin.reset()  # the demo data has no connections
    at = connections_page()
    info = text(at, "info")
    assert "no connections yet" in info and "Import export" in info and "--load DIR" in info


def test_on_a_live_target_the_page_says_connections_are_a_sandbox_tool(live_tenant: SandboxServer) -> None:
    at = connections_page()
    assert "LIVE" in text(at.main, "markdown") or "LIVE" in text(at.sidebar, "markdown")
    assert "Connections are a sandbox tool" in text(at, "info")


def test_exports_put_every_secret_in_a_variable() -> None:
    """BASIC, OAuth 2.0, a key header and an apikey= query value: curl and Postman carry variables only."""
    connection = {
        "name": "CRM lookup",
        "ref": "crm",
        "systemType": "DATA_SYSTEM",
        "auth": {"authType": "oauth", "clientId": "flowlab", "clientSecret": SECRETS[1],
                 "accessTokenUrl": "https://auth.example.com/token", "scope": "crm.read"},
        "request": {"requestType": "POST", "connectionUrl": f"https://crm.example.com/find?apikey={SECRETS[2]}&q=${{email}}",
                    "requestBody": '{"email": "${email}", "limit": ${limit}}'},
        "urlParameters": [{"key": "email", "label": "Email", "type": "String", "exampleValue": "lena@example.com"}],
        "inputMappings": [{"key": "limit", "label": "Limit", "type": "Number", "exampleValue": "3"}],
        "customHeaders": [{"name": "X-Api-Key", "value": SECRETS[3]}, {"name": "Accept", "value": "application/json"}],
    }  # fmt: skip
    inputs = connection_inputs(connection)
    assert [(i.key, i.example, i.where) for i in inputs] == [
        ("email", "lena@example.com", "URL"),
        ("limit", "3", "body"),
    ]
    values = input_values(inputs, {})
    assert values == {"email": "lena@example.com", "limit": 3}  # a Number input is sent as a number
    request = export_request(connection, values)
    curl = to_curl(request)
    postman = json.dumps(to_postman(request))
    for secret in SECRETS[1:]:
        assert secret not in curl and secret not in postman
    assert '"https://crm.example.com/find?apikey=${APIKEY}&q=lena%40example.com"' in curl
    assert '-H "X-Api-Key: ${X_API_KEY}"' in curl and '"Authorization: Bearer ${ACCESS_TOKEN}"' in curl
    assert '--data-raw \'{"email": "lena@example.com", "limit": 3}\'' in curl
    collection = to_postman(request)
    item = collection["item"][0]["request"]
    assert {h["key"]: h["value"] for h in item["header"]}["X-Api-Key"] == "{{x_api_key}}"
    assert {p["key"]: p["value"] for p in item["auth"]["oauth2"]}["clientSecret"] == "{{client_secret}}"
    assert {q["key"]: q["value"] for q in item["url"]["query"]}["apikey"] == "{{apikey}}"
    variables = {v["key"]: v["value"] for v in collection["variable"]}
    assert variables == {"apikey": "", "x_api_key": "", "client_id": "flowlab", "client_secret": ""}


@pytest.mark.parametrize(
    ("auth", "shown"),
    [({"authType": "oauth"}, "OAUTH2"), ({"authType": "client_credentials"}, "OAUTH2"),
     ({"authType": "Basic"}, "BASIC"), ({}, "NONE"), (None, "NONE"), ({"authType": "kerberos"}, "KERBEROS")],
)  # fmt: skip
def test_the_page_names_the_auth_the_way_the_sandbox_calls_it(auth: object, shown: str) -> None:
    assert auth_type({"auth": auth}) == shown
