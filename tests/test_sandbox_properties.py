"""Property: no request body makes the sandbox answer 5xx (every bad input is a 4xx with the error shape)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from flowlab.sandbox import DEMO_CLIENT_KEY, SandboxServer

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
FLOWS = ["checkout_ab_test", "hero_banner*", "hero_banner_campaign", "recommendations_3way", "guest_greeting",
         "summer_sale", "winter_clearance", "nope", "*", ""]  # fmt: skip
FIELDS = {
    "clientKey": st.sampled_from([DEMO_CLIENT_KEY, "", "wrong"]) | json_values,
    "friendlyId": st.sampled_from(FLOWS) | json_values,
    "channel": st.sampled_from(["WEB", "MOBILE_APP", "web", ""]) | json_values,
    "language": st.sampled_from(["EN", "de", "", "xx"]) | json_values,
    "currencyCode": st.sampled_from(["EUR", "usd", ""]) | json_values,
    "pointOfSale": st.sampled_from(["lumen/de", "lumen/uk", "unknown", ""]) | json_values,
    "browserId": st.text(max_size=40) | json_values,
    "email": st.sampled_from(["a@b.c", "LENA.VOGEL@example.de", ""]) | json_values,
    "identifiers": st.fixed_dictionaries({"provider": st.text(max_size=8), "id": st.text(max_size=8)})
    | json_values,
    "params": st.dictionaries(st.sampled_from(["utm", "utm_campaign", "x"]), json_values, max_size=3)
    | json_values,
}
bodies = st.fixed_dictionaries({}, optional=FIELDS) | json_values


@pytest.fixture(scope="module")
def http(sandbox: SandboxServer) -> httpx.Client:
    with httpx.Client(base_url=sandbox.url) as client:
        yield client  # type: ignore[misc]


@settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(body=bodies)
def test_no_body_makes_the_sandbox_answer_5xx(http: httpx.Client, body: Any) -> None:
    response = http.post("/v2/callFlows", json=body)
    assert response.status_code < 500, (body, response.text)
    if response.status_code >= 400:
        data = response.json()
        assert data["status"] == str(response.status_code) and data["message"]


@settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(raw=st.binary(max_size=200))
def test_no_raw_bytes_make_the_sandbox_answer_5xx(http: httpx.Client, raw: bytes) -> None:
    response = http.post("/v2/callFlows", content=raw, headers={"content-type": "application/json"})
    assert response.status_code < 500, (raw, response.text)
