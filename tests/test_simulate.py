"""Simulate before you publish (#11): a sandbox flow in any status runs only when asked explicitly."""

from __future__ import annotations

from typing import Any

import httpx

from flowlab.sandbox import SandboxServer
from flowlab.sandbox.app import SIMULATE_HEADER


def _body(server: SandboxServer, friendly_id: str, browser_id: str = "sim-1") -> dict[str, Any]:
    return {"clientKey": server.client_key, "channel": "WEB", "language": "EN", "pointOfSale": "lumen/de",
            "browserId": browser_id, "friendlyId": friendly_id}  # fmt: skip


def test_a_draft_flow_runs_only_with_the_simulate_header(sandbox: SandboxServer) -> None:
    url = f"{sandbox.url}/v2/callFlows"
    plain = httpx.post(url, json=_body(sandbox, "summer_sale"))
    assert plain.status_code == 404
    assert "summer_sale is DRAFT" in plain.text
    wrong = httpx.post(url, json=_body(sandbox, "summer_sale"), headers={SIMULATE_HEADER: "yes"})
    assert wrong.status_code == 400  # a clear message, not a silent live-only run
    assert "must be 1" in wrong.json()["message"]
    off = httpx.post(url, json=_body(sandbox, "summer_sale"), headers={SIMULATE_HEADER: "0"})
    assert off.status_code == 404
    simulated = httpx.post(url, json=_body(sandbox, "summer_sale"), headers={"X-Flowlab-Simulate": "1"})
    assert simulated.status_code == 200, simulated.text
    assert simulated.json()  # the draft's offers
    trace = httpx.get(f"{sandbox.url}/sandbox/executions/{simulated.headers['x-flowlab-execution']}").json()
    assert trace["simulated"] is True
    assert any("summer_sale is DRAFT" in w for w in trace["warnings"])
    paused = httpx.post(url, json=_body(sandbox, "winter_clearance"), headers={"X-Flowlab-Simulate": "1"})
    assert paused.status_code == 200, paused.text
    legacy = httpx.get(url, params={"message": httpx.Request("POST", url, json=_body(sandbox, "summer_sale"))
                                    .content.decode()}, headers={"X-Flowlab-Simulate": "1"})  # fmt: skip
    assert legacy.status_code == 200, legacy.text
    live = httpx.post(url, json=_body(sandbox, "guest_greeting"), headers={"X-Flowlab-Simulate": "1"})
    assert live.status_code == 200  # a live flow simulates as itself


def test_the_simulate_header_is_in_the_openapi_document(sandbox: SandboxServer) -> None:
    spec = httpx.get(f"{sandbox.url}/sandbox/openapi.json").json()
    for method in ("post", "get"):
        params = spec["paths"]["/v2/callFlows"][method]["parameters"]
        assert any(p["name"].lower() == SIMULATE_HEADER and p["in"] == "header" for p in params), method
