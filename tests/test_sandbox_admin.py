"""The sandbox admin API: listing, loading, traces, tracking records, outcomes, knobs and reset."""

from __future__ import annotations

import copy
import time
from typing import Any

import httpx
import pytest

from flowlab import FlowClient, SandboxAdmin, ServerError
from flowlab.sandbox import SandboxServer


def call(sandbox: SandboxServer, friendly_id: str = "checkout_ab_test", **fields: Any) -> httpx.Response:
    body = {"clientKey": sandbox.client_key, "channel": "WEB", "pointOfSale": "lumen/de",
            "browserId": "admin-test", "friendlyId": friendly_id, **fields}  # fmt: skip
    return httpx.post(f"{sandbox.url}/v2/callFlows", json=body)


def test_info_lists_client_key_and_points_of_sale(admin: SandboxAdmin, sandbox: SandboxServer) -> None:
    info = admin.info()
    assert info["clientKey"] == sandbox.client_key
    assert {p["name"] for p in info["pointsOfSale"]} >= {"lumen/de", "lumen/uk"}
    assert info["version"]


def test_flows_list_shape(admin: SandboxAdmin) -> None:
    flows = {f["friendlyId"]: f for f in admin.flows()}
    ab = flows["checkout_ab_test"]
    assert ab["type"] == "INTERACTIVE_API_FLOW" and ab["subtype"] == "EXPERIMENT"
    assert [v["split"] for v in ab["variants"]] == [50, 50]
    assert sum(v["isControl"] for v in ab["variants"]) == 1
    assert sum(f["live"] for f in flows.values()) >= 3
    assert flows["winter_clearance"]["status"] == "PAUSED"
    full = admin.flow("checkout_ab_test")
    assert full["variants"][0]["tasks"]  # reference §4.1 shape


def test_offers_models_and_guests(admin: SandboxAdmin) -> None:
    assert len(admin.offers()) >= 12
    assert admin.decision_models()
    page = admin.guests(limit=5, offset=0)
    assert page["total"] >= 1000 and len(page["items"]) == 5
    assert all("sandbox" not in g for g in page["items"])  # hidden simulation data stays hidden
    browser = page["items"][0]["browserIds"][0]
    assert admin.guests(browserId=browser)["items"][0]["ref"] == page["items"][0]["ref"]


def test_execution_trace_and_tracking_record(fresh_sandbox: SandboxServer) -> None:
    response = call(fresh_sandbox, browserId="trace-me")
    ref = response.headers["X-Flowlab-Execution"]
    with SandboxAdmin(base_url=fresh_sandbox.url) as admin:
        trace = admin.execution(ref)
        assert 1 <= trace["bucket"] <= 120
        assert trace["variant"]["name"] in {v["name"] for v in admin.flow("checkout_ab_test")["variants"]}
        assert trace["status"] == 200 and trace["timings"]["totalMs"] > 0
        records = admin.tracking(trace["guest"]["ref"])
    assert len(records) == 1
    record = records[0]
    assert record["type"] == "TRACKING" and record["flowExecutionRef"] == ref
    execution = record["arbitraryData"]["flowExecution"]
    assert execution["flowFriendlyId"] == "checkout_ab_test"
    assert execution["flowVariantRef"] == trace["variant"]["ref"]
    assert execution["bucket"] == trace["bucket"] and execution["status"] == "SUCCESS"
    assert execution["flowExecutionTimeMs"] >= 0


def test_trace_explains_the_decision_table_row(sandbox: SandboxServer, admin: SandboxAdmin) -> None:
    response = call(sandbox, "hero_banner_default", browserId="why-guest")
    trace = admin.execution(response.headers["X-Flowlab-Execution"])
    models = trace["decisionModels"]
    assert models and models[0]["result"]["decisionModelResultNodes"]
    assert any(model["rowsHit"] for model in models)
    assert trace["offers"]


def test_unknown_execution_is_404(admin: SandboxAdmin) -> None:
    with pytest.raises(Exception, match="404"):
        admin.execution("nope")


def runaway_flow(expression: str) -> dict[str, Any]:
    return {
        "friendlyId": "runaway_condition", "name": "Runaway", "type": "INTERACTIVE_API_FLOW",
        "subtype": "EXPERIENCE", "status": "LIVE",
        "variants": [{"ref": "v1", "name": "Only", "isControl": True, "tasks": [
            {"implementation": "conditionsTask", "input": {"rules": [
                {"id": "scriptCondition", "friendlyId": "spin", "ruleData": {"expression": expression}}]}},
            {"implementation": "templateRenderTask", "input": {"template": '{"ok": true}'}}]}],
        "traffic": {"splits": [{"ref": "v1", "split": 100}]},
    }  # fmt: skip


def test_runaway_javascript_condition_gets_a_clear_error_fast(fresh_sandbox: SandboxServer) -> None:
    with SandboxAdmin(base_url=fresh_sandbox.url) as admin:
        admin.load_flow(runaway_flow("(function(){ while (true) {} })();"))
    started = time.perf_counter()
    response = call(fresh_sandbox, "runaway_condition")
    elapsed = time.perf_counter() - started
    assert elapsed < 2
    assert response.status_code == 500
    assert "timeout" in response.json()["message"] and "spin" in response.json()["message"]
    # the server is still healthy afterwards
    assert call(fresh_sandbox).status_code == 200
    with (
        FlowClient(base_url=fresh_sandbox.url, retries=0) as client,
        pytest.raises(ServerError, match="timeout"),
    ):
        client.call(clientKey=fresh_sandbox.client_key, friendlyId="runaway_condition", browserId="x")


def test_loading_a_flow_with_a_broken_template_is_refused(sandbox: SandboxServer) -> None:
    flow = runaway_flow("true")
    flow["friendlyId"] = "broken_template"
    flow["variants"][0]["tasks"][1]["input"]["template"] = "<#if x>never closed"
    response = httpx.post(f"{sandbox.url}/sandbox/flows", json=flow)
    assert response.status_code == 400
    assert "template" in response.json()["message"]


def test_load_a_flow_then_call_it_with_a_template(fresh_sandbox: SandboxServer) -> None:
    flow = runaway_flow("(function(){ return {tier: 'vip'}; })();")
    flow["friendlyId"] = "loaded_flow"
    flow["variants"][0]["tasks"][1]["input"]["template"] = (
        '{"tier": "${filter.tier}", "campaign": "${(request.params.utm.campaign)!"none"}", '
        '"first": "${guest.firstName!"friend"}"}'
    )
    assert httpx.post(f"{fresh_sandbox.url}/sandbox/flows", json=flow).status_code == 201
    response = call(fresh_sandbox, "loaded_flow", params={"utm": {"campaign": "spring"}})
    assert response.json() == {"tier": "vip", "campaign": "spring", "first": "friend"}


def test_outcomes_follow_the_hidden_lift(fresh_sandbox: SandboxServer) -> None:
    with httpx.Client() as http:
        for i in range(300):
            body = {
                "clientKey": fresh_sandbox.client_key,
                "friendlyId": "checkout_ab_test",
                "browserId": f"o-{i}",
            }
            http.post(f"{fresh_sandbox.url}/v2/callFlows", json=body)
    with SandboxAdmin(base_url=fresh_sandbox.url) as admin:
        rows = admin.outcomes("checkout_ab_test")
    assert len(rows) == 300
    assert {r["variant"] for r in rows} == {v["name"] for v in admin_variants(fresh_sandbox)}
    assert all((r["revenue"] > 0) == r["converted"] for r in rows)


def admin_variants(sandbox: SandboxServer) -> list[dict[str, Any]]:
    with SandboxAdmin(base_url=sandbox.url) as admin:
        return list(admin.flow("checkout_ab_test")["variants"])


def test_reset_restores_demo_data(fresh_sandbox: SandboxServer) -> None:
    with SandboxAdmin(base_url=fresh_sandbox.url) as admin:
        before = copy.deepcopy(admin.flows())
        admin.load_flow(runaway_flow("true"))
        assert len(admin.flows()) == len(before) + 1
        admin.reset()
        assert admin.flows() == before


def test_knobs_can_be_changed_live(fresh_sandbox: SandboxServer) -> None:
    response = httpx.put(f"{fresh_sandbox.url}/sandbox/knobs", json={"faults": "503=1"})
    assert response.json()["faults"] == {"503": 1.0}
    failed = call(fresh_sandbox)
    assert failed.status_code == 503 and failed.headers["retry-after"] == "1"
    bad = httpx.put(f"{fresh_sandbox.url}/sandbox/knobs", json={"faults": "teapot=1"})
    assert bad.status_code == 400 and "unknown fault" in bad.json()["message"]
    httpx.put(f"{fresh_sandbox.url}/sandbox/knobs", json={"faults": ""})
    assert call(fresh_sandbox).status_code == 200


def test_unknown_route_uses_the_error_shape(sandbox: SandboxServer) -> None:
    response = httpx.get(f"{sandbox.url}/nope")
    assert response.status_code == 404 and response.json()["code"] == "404"


def test_a_template_that_fails_at_run_time_is_a_500_with_the_reason(fresh_sandbox: SandboxServer) -> None:
    flow = runaway_flow("true")
    flow["friendlyId"] = "missing_value"
    flow["variants"][0]["tasks"][1]["input"]["template"] = '{"tier": "${guest.tier}"}'
    assert httpx.post(f"{fresh_sandbox.url}/sandbox/flows", json=flow).status_code == 201
    response = call(fresh_sandbox, "missing_value", browserId="template-guest")
    assert response.status_code == 500
    body = response.json()
    assert body["code"] == "500" and "variant 'Only'" in body["message"] and "guest.tier" in body["message"]
    with SandboxAdmin(base_url=fresh_sandbox.url) as admin:
        trace = admin.execution(response.headers["X-Flowlab-Execution"])
        assert trace["outcome"] == "error" and trace["status"] == 500 and "error" in trace["template"]
        (record,) = admin.tracking(trace["guest"]["ref"])
    execution = record["arbitraryData"]["flowExecution"]
    assert record["arbitraryData"]["category"] == "FAILED" and execution["status"] == "ERROR"
    assert execution["error"] == body["message"]
    assert call(fresh_sandbox).status_code == 200
