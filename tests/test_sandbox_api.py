"""The sandbox's real-API routes over loopback: validation order, error bodies, flow resolution, guests."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest

from flowlab.sandbox import SandboxServer
from flowlab.sandbox.personalize.engine import bucket_for


def post(sandbox: SandboxServer, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{sandbox.url}/v2/callFlows", json=body, **kwargs)


def good(sandbox: SandboxServer, **fields: Any) -> dict[str, Any]:
    body = {"clientKey": sandbox.client_key, "channel": "WEB", "language": "EN", "currencyCode": "EUR",
            "pointOfSale": "lumen/de", "browserId": "test-browser-1", "friendlyId": "checkout_ab_test"}  # fmt: skip
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


def assert_error(response: httpx.Response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    data = response.json()
    assert set(data) == {"status", "code", "message", "developerMessage", "moreInfoUrl"}
    assert data["status"] == data["code"] == str(status)
    assert fragment.lower() in (data["message"] + " " + data["developerMessage"]).lower()


def test_demo_experiment_returns_the_rendered_template(sandbox: SandboxServer) -> None:
    response = post(sandbox, good(sandbox))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    data = response.json()
    assert data["variant"] in {"A", "B"}
    assert response.headers["X-Flowlab-Execution"]


def test_malformed_json(sandbox: SandboxServer) -> None:
    response = httpx.post(
        f"{sandbox.url}/v2/callFlows", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "not valid JSON")


def test_body_must_be_an_object(sandbox: SandboxServer) -> None:
    assert_error(post(sandbox, [1, 2]), 400, "JSON object")


def test_unknown_client_key(sandbox: SandboxServer) -> None:
    assert_error(post(sandbox, good(sandbox, clientKey="nope")), 401, "clientKey")


def test_missing_client_key(sandbox: SandboxServer) -> None:
    body = good(sandbox)
    del body["clientKey"]
    assert_error(post(sandbox, body), 400, "clientKey is required")


def test_missing_friendly_id(sandbox: SandboxServer) -> None:
    body = good(sandbox)
    del body["friendlyId"]
    assert_error(post(sandbox, body), 400, "friendlyId is required")


def test_email_and_identifiers_together(sandbox: SandboxServer) -> None:
    body = good(
        sandbox, browserId=None, email="jane@example.com", identifiers={"provider": "BXLP", "id": "1"}
    )
    assert_error(post(sandbox, body), 400, "only one of browserId, email or identifiers")


def test_no_identity(sandbox: SandboxServer) -> None:
    assert_error(post(sandbox, good(sandbox, browserId=None)), 400, "one of browserId, email or identifiers")


def test_empty_language(sandbox: SandboxServer) -> None:
    assert_error(post(sandbox, good(sandbox, language="")), 400, "language must not be empty")


def test_identifiers_array_is_explained(sandbox: SandboxServer) -> None:
    body = good(sandbox, browserId=None, identifiers=[{"provider": "BXLP", "id": "1"}])
    assert_error(post(sandbox, body), 400, "one object")


def test_unknown_flow(sandbox: SandboxServer) -> None:
    assert_error(post(sandbox, good(sandbox, friendlyId="no_such_flow")), 404, "no flow with friendlyId")


@pytest.mark.parametrize("friendly_id, status", [("winter_clearance", "PAUSED"), ("summer_sale", "DRAFT")])
def test_flows_that_are_not_live(sandbox: SandboxServer, friendly_id: str, status: str) -> None:
    assert_error(post(sandbox, good(sandbox, friendlyId=friendly_id)), 404, status)


def test_wrong_types_are_400_not_500(sandbox: SandboxServer) -> None:
    assert_error(post(sandbox, good(sandbox, channel=5)), 400, "channel must be a string")
    assert_error(post(sandbox, good(sandbox, params="x")), 400, "params must be a JSON object")


def test_fuzzy_friendly_id_takes_first_live_match_that_passes(sandbox: SandboxServer) -> None:
    campaign = post(
        sandbox, good(sandbox, friendlyId="hero_banner*", params={"utm": {"campaign": "spring_trail"}})
    )
    plain = post(sandbox, good(sandbox, friendlyId="hero_banner*", browserId="other-browser"))
    assert campaign.status_code == plain.status_code == 200
    trace_a = httpx.get(f"{sandbox.url}/sandbox/executions/{campaign.headers['X-Flowlab-Execution']}").json()
    trace_b = httpx.get(f"{sandbox.url}/sandbox/executions/{plain.headers['X-Flowlab-Execution']}").json()
    assert trace_a["flow"]["friendlyId"] == "hero_banner_campaign"
    assert trace_b["flow"]["friendlyId"] == "hero_banner_default"
    assert [c["friendlyId"] for c in trace_b["candidates"]] == ["hero_banner_campaign", "hero_banner_default"]


def test_flattened_utm_params_also_count(sandbox: SandboxServer) -> None:
    response = post(
        sandbox, good(sandbox, friendlyId="hero_banner*", params={"utm_campaign": "spring_trail"})
    )
    trace = httpx.get(f"{sandbox.url}/sandbox/executions/{response.headers['X-Flowlab-Execution']}").json()
    assert trace["flow"]["friendlyId"] == "hero_banner_campaign"


def test_bucketing_is_stable_per_guest(sandbox: SandboxServer) -> None:
    variants = {post(sandbox, good(sandbox, browserId="sticky-guest")).json()["variant"] for _ in range(5)}
    assert len(variants) == 1


def test_buckets_cover_1_to_120_evenly() -> None:
    counts = Counter(bucket_for(f"guest-{i}") for i in range(24_000))
    assert set(counts) == set(range(1, 121))
    assert min(counts.values()) > 140 and max(counts.values()) < 260  # expected 200 each


def test_split_proportions_are_close_to_50_50(sandbox: SandboxServer) -> None:
    seen = Counter()
    with httpx.Client() as http:
        for i in range(600):
            body = good(sandbox, browserId=f"split-{i}")
            seen[http.post(f"{sandbox.url}/v2/callFlows", json=body).json()["variant"]] += 1
    assert set(seen) == {"A", "B"}
    assert 0.42 < seen["A"] / 600 < 0.58


def test_email_guests_are_found_or_created(sandbox: SandboxServer) -> None:
    first = post(sandbox, good(sandbox, browserId=None, email="Brand.New@Example.com"))
    second = post(sandbox, good(sandbox, browserId=None, email="brand.new@example.com"))
    assert first.status_code == second.status_code == 200
    t1 = httpx.get(f"{sandbox.url}/sandbox/executions/{first.headers['X-Flowlab-Execution']}").json()
    t2 = httpx.get(f"{sandbox.url}/sandbox/executions/{second.headers['X-Flowlab-Execution']}").json()
    assert t1["guest"]["created"] is True and t2["guest"]["created"] is False
    assert t1["guest"]["ref"] == t2["guest"]["ref"]


def test_browser_create_returns_201_and_a_guest(sandbox: SandboxServer) -> None:
    response = httpx.get(
        f"{sandbox.url}/v1.2/browser/create.json", params={"client_key": sandbox.client_key, "message": "{}"}
    )
    assert response.status_code == 201
    data = response.json()
    assert data["status"] == "OK" and data["ref"] and data["customer_ref"]
    shown = httpx.get(
        f"{sandbox.url}/v1.2/browser/{data['ref']}/show.json", params={"client_key": sandbox.client_key}
    )
    assert shown.json()["customer"]["ref"] == data["customer_ref"]


def test_browser_create_with_wrong_key_is_401(sandbox: SandboxServer) -> None:
    response = httpx.get(f"{sandbox.url}/v1.2/browser/create.json", params={"client_key": "wrong"})
    assert_error(response, 401, "client_key")


def test_legacy_get_form_and_context_wrapper(sandbox: SandboxServer) -> None:
    import json

    response = httpx.get(f"{sandbox.url}/v2/callFlows", params={"message": json.dumps(good(sandbox))})
    assert response.status_code == 200 and response.json()["variant"] in {"A", "B"}
    wrapped = post(sandbox, {"context": good(sandbox)})
    assert wrapped.status_code == 200


def test_cors_preflight_is_allowed(sandbox: SandboxServer) -> None:
    response = httpx.options(
        f"{sandbox.url}/v2/callFlows",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },  # fmt: skip
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"


def test_a_stopped_sandbox_leaves_no_tenant_behind() -> None:
    """A stopped sandbox's tenant (guests, tracking, compiled flows) is freed once nothing holds the server.

    FastAPI keeps endpoint callables in module-level LRU caches (4,096 entries), and the sandbox's endpoints
    are closures over its engine: without care, each stopped sandbox stayed alive, which grew the test
    process to ~4 GB and made each full collection take seconds.
    """
    import gc
    import weakref

    with SandboxServer() as server:
        assert httpx.get(f"{server.url}/sandbox/info").status_code == 200
        tenant = weakref.ref(server.app.tenant)
    del server
    gc.collect()
    assert tenant() is None, [type(r).__qualname__ for r in gc.get_referrers(tenant())]
