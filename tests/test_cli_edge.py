"""``python -m flowlab edge``: real subprocesses against the sandbox's Edge Network, one-line errors, no
tracebacks, no secrets in the output (issue #9)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import httpx
import pytest
from test_cli import assert_clean_failure, flowlab

from flowlab.sandbox import SandboxServer

LENA = "Email:lena.vogel@example.de"


def _audience_id(sandbox: SandboxServer, name: str) -> str:
    audiences = httpx.get(f"{sandbox.url}/sandbox/edge/audiences", timeout=10).json()
    return next(a["id"] for a in audiences if a["name"] == name)


def _demo_secret(sandbox: SandboxServer) -> str:
    info = httpx.get(f"{sandbox.url}/sandbox/info", timeout=10).json()
    return str(info["edge"]["credentials"]["clientSecret"])


def _envelope(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    body = json.loads(result.stdout)
    assert isinstance(body, dict) and result.stdout.startswith("{\n")  # pretty, not one long line
    return body


def _lookups(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        item
        for handle in body["handle"]
        if handle["type"] == "activation:pull"
        for item in handle["payload"]
        if item.get("type") == "profileLookup"
    ]


def _segment_ids(body: dict[str, Any]) -> set[str]:
    return {s["id"] for item in _lookups(body) for s in item.get("segments", [])}


def test_a_checkout_shows_its_audience_in_the_same_response_with_attributes(sandbox: SandboxServer) -> None:
    """No --base-url: an embedded sandbox, its demo datastream and credentials (authenticated)."""
    checking_out = _audience_id(sandbox, "Checking out today")
    browsing = _envelope(flowlab("edge", "--identity", LENA))
    assert checking_out not in _segment_ids(browsing)
    body = _envelope(flowlab("edge", "--identity", LENA, "--event-type", "commerce.checkouts"))
    assert checking_out in _segment_ids(body)
    attributes = [item["attributes"] for item in _lookups(body) if "attributes" in item]
    assert attributes and attributes[0]["firstName"] == {"value": "Lena"}


def test_no_auth_loses_the_attributes_but_keeps_the_audiences(fresh_sandbox: SandboxServer) -> None:
    """--base-url of a running sandbox: its demo credentials, or none with --no-auth."""
    base = ["edge", "--base-url", fresh_sandbox.url, "--identity", LENA, "--event-type", "commerce.checkouts"]
    signed = _envelope(flowlab(*base))
    unsigned = _envelope(flowlab(*base, "--no-auth"))
    assert any("attributes" in item for item in _lookups(signed))
    assert _lookups(unsigned) and not any("attributes" in item for item in _lookups(unsigned))
    assert _audience_id(fresh_sandbox, "Checking out today") in _segment_ids(unsigned)


def test_verbose_prints_status_and_headers_but_never_the_secret_or_token(
    fresh_sandbox: SandboxServer,
) -> None:
    result = flowlab(
        "edge", "--base-url", fresh_sandbox.url, "--identity", LENA, "--page-url", "https://lumen.example/cart",
        "--data", "cart.value=129.9", "--data", "cart.items=3", "--verbose",
    )  # fmt: skip
    _envelope(result)
    assert "200 in" in result.stderr and "x-request-id:" in result.stderr.lower()
    everything = result.stdout + result.stderr
    assert _demo_secret(fresh_sandbox) not in everything
    assert "bearer" not in everything.lower()


def test_data_nests_like_call_params_and_page_url_reaches_the_rules(fresh_sandbox: SandboxServer) -> None:
    base = ["edge", "--base-url", fresh_sandbox.url, "--identity", LENA, "--verbose"]
    result = flowlab(*base, "--data", "cart.value=129.9", "--data", "cart.items=3", "--data", "note=gift")
    _envelope(result)
    assert '"data":{"cart":{"value":129.9,"items":3},"note":"gift"}' in result.stderr
    hiking = _audience_id(fresh_sandbox, "Browsing hiking today (DE)")
    viewed = ["--event-type", "web.webpagedetails.pageViews", "--page-url"]
    assert hiking not in _segment_ids(_envelope(flowlab(*base, *viewed, "https://lumen.example/de/sale")))
    assert hiking in _segment_ids(_envelope(flowlab(*base, *viewed, "https://lumen.example/de/hiking/boots")))


def test_edge_base_url_from_the_environment(
    fresh_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWLAB_EDGE_BASE_URL", fresh_sandbox.url)
    result = flowlab("edge", "--identity", LENA, "--verbose")
    _envelope(result)
    assert fresh_sandbox.url in result.stderr


def test_configured_credentials_with_a_wrong_secret_fail_without_showing_it(
    fresh_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = httpx.get(f"{fresh_sandbox.url}/sandbox/info", timeout=10).json()["edge"]
    datastream = info["datastreams"][0]["id"]
    monkeypatch.setenv("FLOWLAB_EDGE_CLIENT_ID", info["credentials"]["clientId"])
    monkeypatch.setenv("FLOWLAB_EDGE_CLIENT_SECRET", "wrong-secret-4711")
    monkeypatch.setenv("FLOWLAB_EDGE_ORG_ID", info["orgId"])
    monkeypatch.setenv("FLOWLAB_EDGE_IMS_URL", fresh_sandbox.url)
    result = flowlab(
        "edge", "--base-url", fresh_sandbox.url, "--datastream-id", datastream, "--identity", LENA
    )
    assert_clean_failure(result, 1, "FLOWLAB_EDGE_CLIENT_SECRET")
    assert "wrong-secret-4711" not in result.stdout + result.stderr


def test_no_identity_is_a_usage_error() -> None:
    assert_clean_failure(flowlab("edge"), 2, "--identity NAMESPACE:ID")


def test_identity_without_a_colon_says_how_to_write_it() -> None:
    result = flowlab("edge", "--identity", "lena.vogel@example.de")
    assert_clean_failure(result, 2, "must look like NAMESPACE:ID")


def test_bad_data_and_bad_fields_name_what_to_fix() -> None:
    assert_clean_failure(flowlab("edge", "--identity", LENA, "--data", "cart"), 2, "--data 'cart' must look")
    result = flowlab("edge", "--identity", LENA, "--page-url", "lumen.example")
    assert_clean_failure(result, 2, "start it with https://")
    assert_clean_failure(flowlab("edge", "--identity", "Email:lena"), 2, "is not an email address")


def test_unknown_datastream_prints_the_edges_problem_and_exits_1() -> None:
    result = flowlab("edge", "--identity", LENA, "--datastream-id", "no-such-stream")
    assert_clean_failure(result, 1, "EXEG-0003-400")
    assert json.loads(result.stdout)["type"].endswith("EXEG-0003-400")


def test_live_edge_without_a_datastream_says_where_to_set_it() -> None:
    result = flowlab("edge", "--base-url", "http://127.0.0.1:9", "--identity", LENA, "--no-auth")
    assert_clean_failure(result, 2, "FLOWLAB_EDGE_DATASTREAM_ID")
