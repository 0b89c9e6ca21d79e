"""FlowClient and AsyncFlowClient against the real sandbox: success, errors, retries, timeouts."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest

from flowlab import (
    APIConnectionError,
    APITimeoutError,
    AsyncFlowClient,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    FlowClient,
    NotFoundError,
    RateLimitError,
    RequestValidationError,
    ServerError,
)
from flowlab.http import RetryPolicy, parse_retry_after
from flowlab.sandbox import SandboxServer


def fields(sandbox: SandboxServer, **extra: object) -> dict[str, object]:
    return {
        "clientKey": sandbox.client_key,
        "friendlyId": "checkout_ab_test",
        "browserId": "client-1",
        **extra,
    }


def set_knobs(sandbox: SandboxServer, **knobs: object) -> None:
    httpx.put(f"{sandbox.url}/sandbox/knobs", json=knobs).raise_for_status()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_call_returns_response_details(client: FlowClient, sandbox: SandboxServer) -> None:
    response = client.call(**fields(sandbox))
    assert response.status_code == 200 and response.ok
    assert response.json_body["variant"] in {"A", "B"}
    assert response.latency_ms > 0 and response.attempts == 1
    assert response.url == f"{sandbox.url}/v2/callFlows"
    assert response.request is not None and response.request.friendly_id == "checkout_ab_test"
    assert response.request_headers["content-type"] == "application/json"
    assert response.execution_ref and response.offers


def test_status_errors_carry_the_api_error_body(client: FlowClient, sandbox: SandboxServer) -> None:
    with pytest.raises(NotFoundError) as info:
        client.call(**fields(sandbox, friendlyId="missing_flow"))
    error = info.value
    assert error.status_code == 404
    assert error.body is not None and error.body["code"] == "404"
    assert "no flow with friendlyId 'missing_flow'" in str(error)
    assert "404 Not Found" in str(error) and sandbox.url in str(error)
    with pytest.raises(AuthenticationError):
        client.call(**fields(sandbox, clientKey="wrong"))


def test_non_2xx_can_be_returned_instead_of_raised(client: FlowClient, sandbox: SandboxServer) -> None:
    response = client.call(**fields(sandbox, clientKey="wrong"), raise_for_status=False)
    assert response.status_code == 401 and not response.ok


def test_validation_happens_before_sending(client: FlowClient) -> None:
    with pytest.raises(RequestValidationError, match="only one"):
        client.call(clientKey="k", friendlyId="x", email="a@b.c", browserId="b")


def test_bad_request_from_the_server(sandbox: SandboxServer) -> None:
    # bypass our own validation to see the server's 400, as a raw client would
    with httpx.Client() as http:
        raw = http.post(f"{sandbox.url}/v2/callFlows", json=fields(sandbox, language=""))
    assert raw.status_code == 400
    from flowlab.http import FlowResponse, status_error

    error = status_error(FlowResponse(raw.status_code, dict(raw.headers), raw.text, 1.0, url=str(raw.url)))
    assert isinstance(error, BadRequestError) and "language" in error.api_message


def test_connection_refused_is_mapped() -> None:
    with FlowClient(base_url=f"http://127.0.0.1:{free_port()}", retries=0) as client:
        with pytest.raises(APIConnectionError, match="cannot connect"):
            client.call(clientKey="k", friendlyId="x", browserId="b")


def test_retries_then_succeeds_on_503(fresh_sandbox: SandboxServer) -> None:
    set_knobs(fresh_sandbox, faults="503=0.3", retryAfterS=0)
    with FlowClient(base_url=fresh_sandbox.url, retries=8) as client:
        responses = [client.call(**fields(fresh_sandbox, browserId=f"r-{i}")) for i in range(20)]
    assert all(r.ok for r in responses)
    assert any(r.attempts > 1 for r in responses)


def test_retry_after_is_honoured(fresh_sandbox: SandboxServer) -> None:
    set_knobs(fresh_sandbox, faults="429=1", retryAfterS=0.3)
    with FlowClient(base_url=fresh_sandbox.url, retries=1) as client:
        started = time.perf_counter()
        with pytest.raises(RateLimitError) as info:
            client.call(**fields(fresh_sandbox))
        elapsed = time.perf_counter() - started
    assert info.value.response.attempts == 2
    assert elapsed >= 0.3


def test_no_retry_on_other_4xx(fresh_sandbox: SandboxServer) -> None:
    with FlowClient(base_url=fresh_sandbox.url, retries=5) as client:
        response = client.call(**fields(fresh_sandbox, friendlyId="missing"), raise_for_status=False)
    assert response.attempts == 1


def test_server_errors_exhaust_retries(fresh_sandbox: SandboxServer) -> None:
    set_knobs(fresh_sandbox, faults="503=1", retryAfterS=0)
    with FlowClient(base_url=fresh_sandbox.url, retries=2) as client, pytest.raises(ServerError) as info:
        client.call(**fields(fresh_sandbox))
    assert info.value.response.attempts == 3


def test_hang_ends_at_the_timeout(fresh_sandbox: SandboxServer) -> None:
    set_knobs(fresh_sandbox, faults="hang=1")
    with FlowClient(base_url=fresh_sandbox.url, retries=0, timeout=0.3) as client:
        started = time.perf_counter()
        with pytest.raises(APITimeoutError):
            client.call(**fields(fresh_sandbox))
    assert time.perf_counter() - started < 2


def test_connection_reset_is_a_connection_error(fresh_sandbox: SandboxServer) -> None:
    set_knobs(fresh_sandbox, faults="reset=1")
    with FlowClient(base_url=fresh_sandbox.url, retries=0) as client, pytest.raises(APIConnectionError):
        client.call(**fields(fresh_sandbox))


def test_create_browser_id(client: FlowClient, sandbox: SandboxServer) -> None:
    browser_id = client.create_browser_id(sandbox.client_key)
    assert len(browser_id) == 36
    assert client.call(**fields(sandbox, browserId=browser_id)).ok


def test_async_client(sandbox: SandboxServer) -> None:
    async def main() -> list[int]:
        async with AsyncFlowClient(base_url=sandbox.url, max_connections=10) as client:
            results = await asyncio.gather(
                *(client.call(**fields(sandbox, browserId=f"async-{i}")) for i in range(30))
            )
            with pytest.raises(NotFoundError):
                await client.call(**fields(sandbox, friendlyId="nope"))
            assert await client.create_browser_id(sandbox.client_key)
            return [r.status_code for r in results]

    assert asyncio.run(main()) == [200] * 30


def test_async_connection_refused() -> None:
    async def main() -> None:
        async with AsyncFlowClient(base_url=f"http://127.0.0.1:{free_port()}", retries=0) as client:
            await client.call(clientKey="k", friendlyId="x", browserId="b")

    with pytest.raises(APIConnectionError):
        asyncio.run(main())


def test_regions_are_named_choices() -> None:
    with FlowClient(region="eu") as eu, FlowClient(region="JPE") as jp:
        assert eu.base_url == "https://api-engage-eu.sitecorecloud.io"
        assert jp.base_url == "https://api-engage-jpe.sitecorecloud.io"
    with pytest.raises(ConfigError, match="unknown region 'mars'"):
        FlowClient(region="mars")


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="http"):
        FlowClient(base_url="api.example.com")
    with pytest.raises(ConfigError, match="no base URL"):
        FlowClient()
    with pytest.raises(ConfigError, match="timeout"):
        FlowClient(base_url="http://x", timeout=0)


def test_retry_policy() -> None:
    policy = RetryPolicy(max_retries=3, initial_delay=0.5, max_delay=8)
    assert [policy.retryable_status(s) for s in (408, 429, 500, 503, 400, 401, 404)] == [True] * 4 + [
        False
    ] * 3
    assert policy.delay(1, "2") == 2.0
    assert 0.375 <= policy.delay(1) <= 0.5 and 6 <= policy.delay(10) <= 8
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None
