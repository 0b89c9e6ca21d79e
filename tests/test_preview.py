"""One preview end to end: response, variant, offers, explanation, and advice for every kind of failure."""

from __future__ import annotations

import socket

from flowlab import CallFlowRequest, FlowClient
from flowlab.errors import APIConnectionError, BadRequestError, RequestValidationError
from flowlab.sandbox import SandboxServer
from flowlab.workbench.advice import Advice, advise
from flowlab.workbench.personas import demo_personas
from flowlab.workbench.preview import run_preview


def lena(client_key: str, friendly_id: str = "hero_banner*") -> CallFlowRequest:
    return demo_personas()[0].to_request(client_key=client_key, friendly_id=friendly_id)


def test_a_sandbox_preview_has_everything(sandbox: SandboxServer) -> None:
    preview = run_preview(lena(sandbox.client_key), base_url=sandbox.url, is_sandbox=True, label="Lena Vogel")
    assert preview.ok and preview.error is None and preview.advice is None
    assert preview.status_text == "200 OK" and preview.url == sandbox.url + "/v2/callFlows"
    assert [o.title for o in preview.offers] == ["Your VIP lounge"]
    assert preview.variant is not None and preview.variant.label == "default"
    assert preview.explanation is not None and preview.explanation.variant == "Default hero"
    summary = preview.summary()
    assert summary["Variant (sandbox truth)"] == "Default hero" and summary["Offers"] == "Your VIP lounge"
    record = preview.to_record()
    assert record["request"]["friendlyId"] == "hero_banner*" and record["sandbox"]["bucket"] == 39
    assert record["who"] == "Lena Vogel"


def test_a_tenant_preview_has_no_explanation(sandbox: SandboxServer) -> None:
    with FlowClient(base_url=sandbox.url, retries=0) as client:
        preview = run_preview(lena(sandbox.client_key), base_url=sandbox.url, client=client)
    assert preview.ok and preview.explanation is None and "Variant (sandbox truth)" not in preview.summary()


def test_unknown_flow_is_a_friendly_404(sandbox: SandboxServer) -> None:
    preview = run_preview(lena(sandbox.client_key, "no_such_flow"), base_url=sandbox.url, is_sandbox=True)
    assert not preview.ok and preview.status_text == "404 Not Found"
    advice = preview.advice
    assert advice is not None and advice.field == "friendlyId"
    assert advice.title == "404: no flow with friendlyId 'no_such_flow'"
    assert "trailing *" in advice.detail and advice.fix == "Pick a live flow, or correct the friendlyId."


def test_a_draft_flow_says_why_it_did_not_run(sandbox: SandboxServer) -> None:
    advice = run_preview(lena(sandbox.client_key, "summer_sale"), base_url=sandbox.url).advice
    assert advice is not None and "DRAFT" in advice.detail


def test_wrong_client_key_is_401_with_a_fix(sandbox: SandboxServer) -> None:
    advice = run_preview(lena("not-the-key"), base_url=sandbox.url).advice
    assert advice is not None and advice.title.startswith("401") and advice.field == "clientKey"
    assert "Developer center" in advice.fix


def test_connection_refused_is_advice_not_a_traceback() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: nothing listens there
    preview = run_preview(lena("k"), base_url=f"http://127.0.0.1:{port}", timeout=2)
    assert isinstance(preview.error, APIConnectionError) and preview.response is None
    assert preview.status_text == "no answer"
    assert preview.advice is not None and preview.advice.title == f"Cannot connect to http://127.0.0.1:{port}"


def test_timeouts_say_what_to_do(fresh_sandbox: SandboxServer) -> None:
    import httpx

    httpx.put(f"{fresh_sandbox.url}/sandbox/knobs", json={"latencyMs": "1500"})
    preview = run_preview(lena(fresh_sandbox.client_key), base_url=fresh_sandbox.url, timeout=0.3)
    assert preview.advice is not None and preview.advice.title.startswith("Timed out")
    assert "timeout" in preview.advice.fix


def test_a_400_names_the_field(sandbox: SandboxServer) -> None:
    """The API's own 400 (sent without our validation) gets its message and a fix for that field."""
    import httpx

    body = {"clientKey": sandbox.client_key, "friendlyId": "checkout_ab_test", "email": "a@b.c",
            "identifiers": {"provider": "P", "id": "1"}}  # fmt: skip
    raw = httpx.post(f"{sandbox.url}/v2/callFlows", json=body)
    from flowlab.http import FlowResponse, status_error

    error = status_error(FlowResponse(raw.status_code, dict(raw.headers), raw.text, 1.0, url=str(raw.url)))
    assert isinstance(error, BadRequestError)
    advice = advise(error)
    assert advice.title == "400: use only one of browserId, email or identifiers"
    assert advice.field == "identity" and "exactly one identity" in advice.fix


def test_validation_advice() -> None:
    error = RequestValidationError([])
    assert isinstance(advise(error), Advice)
