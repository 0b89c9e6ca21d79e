"""The sandbox's HTTP surface under attack: cross-origin pages, DNS rebinding, exposed binds, big and deep bodies.

Every test here is an attack (or a careless use) that worked against the sandbox before issue #8.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from flowlab import SandboxAdmin
from flowlab.errors import AuthenticationError
from flowlab.sandbox import SandboxServer
from flowlab.sandbox.faults import MAX_LATENCY_MS, parse_latency
from flowlab.sandbox.limits import (
    MAX_BODY_BYTES,
    MAX_GUESTS,
    MAX_IDENTITY_CHARS,
    MAX_JSON_DEPTH,
    TRACE_PARAMS_BYTES,
)

EVIL = "https://evil.example"
ERROR_KEYS = {"status", "code", "message", "developerMessage", "moreInfoUrl"}


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    """The one error body, with ``status``; returns it for further checks."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == ERROR_KEYS and body["status"] == body["code"] == str(status)
    return dict(body)


def call_body(sandbox: SandboxServer, browser_id: str, **params: Any) -> dict[str, Any]:
    return {"clientKey": sandbox.client_key, "channel": "WEB", "pointOfSale": "lumen/de",
            "browserId": browser_id, "friendlyId": "checkout_ab_test", "params": params}  # fmt: skip


def guest_count(sandbox: SandboxServer, browser_id: str) -> int:
    with SandboxAdmin(base_url=sandbox.url) as admin:
        return int(admin.guests(browserId=browser_id)["total"])


# ---- a web page the user visits ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/sandbox/reset", "/sandbox/flows", "/sandbox/knobs", "/sandbox/guests"])
def test_admin_preflight_from_another_origin_is_not_granted(fresh_sandbox: SandboxServer, path: str) -> None:
    response = httpx.options(
        fresh_sandbox.url + path,
        headers={
            "Origin": EVIL,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },  # fmt: skip
    )
    error(response, 403)
    assert not any(h.startswith("access-control-") for h in response.headers)


def test_simple_cross_origin_post_cannot_reset_or_load(fresh_sandbox: SandboxServer) -> None:
    url = fresh_sandbox.url
    assert httpx.post(f"{url}/v2/callFlows", json=call_body(fresh_sandbox, "victim")).status_code == 200
    page = {"Origin": EVIL, "Content-Type": "text/plain"}  # what a form or no-cors fetch can send
    reset = httpx.post(f"{url}/sandbox/reset", headers=page, content=b"{}")
    assert "origin" in error(reset, 403)["message"]
    assert "access-control-allow-origin" not in reset.headers
    flow = {"friendlyId": "evil_flow", "status": "LIVE", "variants": [{"name": "x", "tasks": []}]}
    error(httpx.post(f"{url}/sandbox/flows", headers=page, content=orjson.dumps(flow)), 403)
    assert guest_count(fresh_sandbox, "victim") == 1  # not reset
    assert httpx.get(f"{url}/sandbox/flows/evil_flow").status_code == 404  # not loaded


def test_cross_origin_reads_of_guests_are_refused(sandbox: SandboxServer) -> None:
    response = httpx.get(f"{sandbox.url}/sandbox/guests?limit=5", headers={"Origin": EVIL})
    error(response, 403)
    assert "access-control-allow-origin" not in response.headers
    assert "@" not in response.text  # no emails


def test_writes_need_a_json_content_type(fresh_sandbox: SandboxServer) -> None:
    url = fresh_sandbox.url
    body = error(httpx.post(f"{url}/sandbox/reset", headers={"Content-Type": "text/plain"}), 415)
    assert "application/json" in body["message"]
    error(httpx.post(f"{url}/sandbox/reset"), 415)  # no content type at all (a no-cors fetch)
    error(httpx.put(f"{url}/sandbox/knobs", data={"faults": "503=1"}), 415)  # a form
    assert httpx.get(f"{url}/sandbox/knobs").json()["faults"] == {}
    assert httpx.post(f"{url}/sandbox/reset", json={}).status_code == 200


def test_real_api_routes_stay_cors_open(sandbox: SandboxServer) -> None:
    preflight = httpx.options(
        f"{sandbox.url}/v2/callFlows",
        headers={
            "Origin": EVIL,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },  # fmt: skip
    )
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "*"
    posted = httpx.post(
        f"{sandbox.url}/v2/callFlows", json=call_body(sandbox, "cors-page"), headers={"Origin": EVIL}
    )
    assert posted.status_code == 200 and posted.headers["access-control-allow-origin"] == "*"


def test_dns_rebinding_host_is_refused_on_admin(sandbox: SandboxServer) -> None:
    rebound = {"Host": f"evil.example:{sandbox.port}"}
    body = error(httpx.get(f"{sandbox.url}/sandbox/guests", headers=rebound), 421)
    assert "evil.example" in body["message"]
    error(httpx.get(f"{sandbox.url}/sandbox/guests", headers={"Host": "127.0.0.1:1"}), 421)  # wrong port
    for host in (f"localhost:{sandbox.port}", f"127.0.0.1:{sandbox.port}"):
        assert httpx.get(f"{sandbox.url}/sandbox/info", headers={"Host": host}).status_code == 200
    # the real API answers any host, as the real service behind its proxies does
    called = httpx.post(f"{sandbox.url}/v2/callFlows", json=call_body(sandbox, "rebound"), headers=rebound)
    assert called.status_code == 200


def test_the_docs_page_works_from_its_own_origin(fresh_sandbox: SandboxServer) -> None:
    url = fresh_sandbox.url
    assert "swagger" in httpx.get(f"{url}/sandbox/docs").text.lower()
    own = {"Origin": url}
    assert httpx.get(f"{url}/sandbox/openapi.json", headers=own).json()["paths"]
    changed = httpx.put(f"{url}/sandbox/knobs", json={"latencyMs": "5"}, headers=own)
    assert changed.status_code == 200 and changed.json()["latencyMs"] == "5"


# ---- the admin token -----------------------------------------------------------------------------------


@pytest.fixture
def token_sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(admin_token="tok-8f2b6c", seed=2) as server:
        yield server


def test_with_a_token_every_admin_request_needs_it(
    token_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = token_sandbox.url
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "tok-8f2b6c"}):
        refused = httpx.get(f"{url}/sandbox/guests", headers=headers)
        body = error(refused, 401)
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert "tok-8f2b6c" not in refused.text and "tok-8f2b6c" not in str(body)
    error(httpx.post(f"{url}/sandbox/reset", json={}), 401)
    good = {"Authorization": "Bearer tok-8f2b6c"}
    assert httpx.get(f"{url}/sandbox/guests", headers=good).status_code == 200
    assert httpx.get(f"{url}/sandbox/docs").status_code == 200  # the page itself holds no data
    assert httpx.post(f"{url}/v2/callFlows", json=call_body(token_sandbox, "t")).status_code == 200
    with SandboxAdmin(base_url=url, admin_token="tok-8f2b6c") as admin:
        assert admin.reset()["status"] == "OK"
    with SandboxAdmin(base_url=url) as admin, pytest.raises(AuthenticationError):
        admin.info()
    assert SandboxAdmin(base_url=url).is_sandbox()  # recognised without sending any token
    monkeypatch.setenv("FLOWLAB_SANDBOX_ADMIN_TOKEN", "tok-8f2b6c")
    with SandboxAdmin(base_url=url) as admin:  # the setting is the default
        assert admin.info()["clientKey"] == token_sandbox.client_key
        assert "tok-8f2b6c" not in repr(admin)


def _start_cli_sandbox(
    tmp_path: Path, *extra: str, host: str = "0.0.0.0", env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str, str]:
    """``python -m flowlab sandbox --host HOST --port 0 …``: the process, its loopback URL and its stderr."""
    log = tmp_path / f"sandbox-{time.monotonic_ns()}.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "flowlab", "sandbox", "--host", host, "--port", "0", *extra],
            stderr=stderr, stdout=subprocess.DEVNULL, env={**os.environ, **(env or {})},
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        text = log.read_text()
        match = re.search(r"Flow Lab sandbox on http://[^:]+:(\d+)", text)
        if match:
            url = f"http://127.0.0.1:{match.group(1)}"  # test traffic goes to loopback only
            try:
                httpx.get(f"{url}/v2/unknown", timeout=1)
                return process, url, log.read_text()
            except httpx.TransportError:
                pass
        time.sleep(0.05)
    _stop(process)
    raise AssertionError("the sandbox did not start: " + log.read_text())


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.mark.slow
def test_a_start_on_all_interfaces_warns_and_refuses_admin_writes(tmp_path: Path) -> None:
    process, url, warning = _start_cli_sandbox(tmp_path)
    try:
        assert "0.0.0.0" in warning and "not loopback" in warning and "--admin-token" in warning
        body = error(httpx.post(f"{url}/sandbox/reset", json={}), 403)
        assert "admin token" in body["message"]
        error(httpx.put(f"{url}/sandbox/knobs", json={"faults": "hang=1.0"}), 403)
        assert httpx.get(f"{url}/sandbox/knobs").json()["faults"] == {}
        assert httpx.get(f"{url}/sandbox/info").status_code == 200
    finally:
        _stop(process)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["flag", "setting"])
def test_a_start_on_all_interfaces_with_a_token_accepts_admin_writes_with_it(
    tmp_path: Path, how: str
) -> None:
    token = "t0k-" + how
    args, env = (
        (("--admin-token", token), None) if how == "flag" else ((), {"FLOWLAB_SANDBOX_ADMIN_TOKEN": token})
    )
    process, url, stderr = _start_cli_sandbox(tmp_path, *args, env=env)
    try:
        assert token not in stderr
        assert "needs the admin token" in stderr
        error(httpx.post(f"{url}/sandbox/reset", json={}), 401)
        with SandboxAdmin(base_url=url, admin_token=token) as admin:
            assert admin.reset()["status"] == "OK"
            assert admin.info()["clientKey"]
    finally:
        _stop(process)


# ---- request bodies --------------------------------------------------------------------------------------


def _big_body(sandbox: SandboxServer, size: int, browser_id: str = "big") -> bytes:
    body = call_body(sandbox, browser_id, blob="")
    overhead = len(orjson.dumps(body))
    body["params"]["blob"] = "x" * (size - overhead)
    raw = orjson.dumps(body)
    assert len(raw) == size
    return raw


def test_a_body_over_the_cap_is_413(fresh_sandbox: SandboxServer) -> None:
    url = fresh_sandbox.url
    raw = _big_body(fresh_sandbox, MAX_BODY_BYTES + 1)
    headers = {"Content-Type": "application/json"}
    body = error(httpx.post(f"{url}/v2/callFlows", content=raw, headers=headers), 413)
    assert f"{MAX_BODY_BYTES:,}" in body["message"]
    chunks = (raw[i : i + 65536] for i in range(0, len(raw), 65536))  # chunked, no Content-Length
    error(httpx.post(f"{url}/v2/callFlows", content=chunks, headers=headers), 413)
    flow = b'{"friendlyId": "big", "description": "' + b"x" * (2 * MAX_BODY_BYTES) + b'"}'
    error(httpx.post(f"{url}/sandbox/flows", content=flow, headers=headers), 413)
    assert guest_count(fresh_sandbox, "big") == 0
    just_under = _big_body(fresh_sandbox, MAX_BODY_BYTES)
    assert httpx.post(f"{url}/v2/callFlows", content=just_under, headers=headers).status_code == 200


def _deep_call(sandbox: SandboxServer, browser_id: str, depth: int) -> bytes:
    """A callFlows body nested ``depth`` levels in all: the body, params, then objects down to a string."""
    levels = depth - 2
    nested = b'{"a":' * levels + b'"deep"' + b"}" * levels
    return orjson.dumps(call_body(sandbox, browser_id, x=0)).replace(b'"x":0', b'"x":' + nested)


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 300, 1000, 1500])
def test_deep_json_is_a_400_before_anything_runs(fresh_sandbox: SandboxServer, depth: int) -> None:
    url = fresh_sandbox.url
    browser_id = f"deep-{depth}"
    raw = _deep_call(fresh_sandbox, browser_id, depth)
    body = error(httpx.post(f"{url}/v2/callFlows", content=raw), 400)
    assert f"{MAX_JSON_DEPTH} levels" in body["message"]
    assert guest_count(fresh_sandbox, browser_id) == 0  # no guest, no orphaned tracking record
    error(httpx.get(f"{url}/v2/callFlows", params={"message": raw.decode()}), 400)
    nested_offer = b'{"attributes":{"a":' + b"[" * depth + b"]" * depth + b"}}"
    error(
        httpx.post(
            f"{url}/sandbox/offers", content=nested_offer, headers={"Content-Type": "application/json"}
        ),
        400,
    )
    assert guest_count(fresh_sandbox, browser_id) == 0


def test_json_at_the_depth_limit_still_runs(fresh_sandbox: SandboxServer) -> None:
    raw = _deep_call(fresh_sandbox, "at-limit", MAX_JSON_DEPTH)
    response = httpx.post(f"{fresh_sandbox.url}/v2/callFlows", content=raw)
    assert response.status_code == 200
    with SandboxAdmin(base_url=fresh_sandbox.url) as admin:
        assert admin.execution(response.headers["X-Flowlab-Execution"])["status"] == 200


def test_a_trace_keeps_a_bounded_summary_of_the_request(fresh_sandbox: SandboxServer) -> None:
    raw = _big_body(fresh_sandbox, 500_000, browser_id="summary")
    response = httpx.post(f"{fresh_sandbox.url}/v2/callFlows", content=raw)
    assert response.status_code == 200
    with SandboxAdmin(base_url=fresh_sandbox.url) as admin:
        trace = admin.execution(response.headers["X-Flowlab-Execution"])
    assert len(orjson.dumps(trace)) < 4 * TRACE_PARAMS_BYTES
    request = trace["request"]
    assert request["friendlyId"] == "checkout_ab_test"
    assert any("params were" in note for note in request["truncated"])
    assert request["params"]["_preview"].startswith('{"blob":"xxx')
    small = httpx.post(f"{fresh_sandbox.url}/v2/callFlows", json=call_body(fresh_sandbox, "s", utm={"a": 1}))
    with SandboxAdmin(base_url=fresh_sandbox.url) as admin:
        kept = admin.execution(small.headers["X-Flowlab-Execution"])["request"]
    assert kept["params"] == {"utm": {"a": 1}} and "truncated" not in kept


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc")
def test_memory_stays_flat_under_a_stream_of_large_requests(tmp_path: Path) -> None:
    process, url, _ = _start_cli_sandbox(tmp_path, host="127.0.0.1")
    try:
        client_key = httpx.get(f"{url}/sandbox/info").json()["clientKey"]
        body = {"clientKey": client_key, "channel": "WEB", "pointOfSale": "lumen/de", "browserId": "mem",
                "friendlyId": "checkout_ab_test", "params": {"blob": ""}}  # fmt: skip
        body["params"]["blob"] = "y" * (MAX_BODY_BYTES - len(orjson.dumps(body)) - 1000)
        raw = orjson.dumps(body)
        with httpx.Client(timeout=30) as client:
            for _ in range(30):  # warm up: allocator arenas, caches
                assert client.post(f"{url}/v2/callFlows", content=raw).status_code == 200
            before = _rss_kib(process.pid)
            for _ in range(300):
                assert client.post(f"{url}/v2/callFlows", content=raw).status_code == 200
            after = _rss_kib(process.pid)
        growth_mib = (after - before) / 1024
        print(f"RSS {before / 1024:.0f} MiB -> {after / 1024:.0f} MiB after 300 requests of 1 MiB")
        # before issue #8: +300 MiB (whole requests in traces); now ~6 MiB, what 300 small requests cost too
        assert growth_mib < 30, f"the sandbox grew by {growth_mib:.0f} MiB over 300 requests of 1 MiB"
    finally:
        _stop(process)


# ---- what a request can make the sandbox keep -------------------------------------------------------------


def test_unknown_fields_are_noted_in_the_trace_within_a_bound(fresh_sandbox: SandboxServer) -> None:
    body: dict[str, Any] = call_body(fresh_sandbox, "unknown-keys")
    for i in range(27_000):  # ~1 MiB of unknown field names: before the fix all of them went into a warning
        body[f"unknown_field_{i:06d}_" + "k" * 12] = 0
    raw = orjson.dumps(body)
    assert len(raw) < MAX_BODY_BYTES
    response = httpx.post(f"{fresh_sandbox.url}/v2/callFlows", content=raw, timeout=30)
    assert response.status_code == 200, response.text
    with SandboxAdmin(base_url=fresh_sandbox.url) as admin:
        trace = admin.execution(response.headers["X-Flowlab-Execution"])
    assert len(orjson.dumps(trace)) < 4 * TRACE_PARAMS_BYTES  # was 1.1 MB
    (note,) = [w for w in trace["warnings"] if w.startswith("ignored unknown fields")]
    assert "unknown_field_000000_" in note and "and 26,9" in note and note.endswith("more")


def test_a_long_point_of_sale_is_shortened_in_the_warning(fresh_sandbox: SandboxServer) -> None:
    body = call_body(fresh_sandbox, "long-pos") | {"pointOfSale": "p" * 100_000}
    response = httpx.post(f"{fresh_sandbox.url}/v2/callFlows", json=body)
    assert response.status_code == 200
    with SandboxAdmin(base_url=fresh_sandbox.url) as admin:
        trace = admin.execution(response.headers["X-Flowlab-Execution"])
    assert len(orjson.dumps(trace)) < 4 * TRACE_PARAMS_BYTES


@pytest.mark.parametrize(
    ("field", "identity"),
    [
        ("browserId", {"browserId": "b" * (MAX_IDENTITY_CHARS + 1)}),
        ("email", {"email": "e" * MAX_IDENTITY_CHARS + "@example.com"}),
        ("identifiers.provider", {"identifiers": {"provider": "p" * 1000, "id": "1"}}),
        ("identifiers.id", {"identifiers": {"provider": "crm", "id": "9" * 100_000}}),
    ],
)
def test_an_identity_over_the_cap_is_400_naming_the_field(
    fresh_sandbox: SandboxServer, field: str, identity: dict[str, Any]
) -> None:
    body = call_body(fresh_sandbox, "x")
    del body["browserId"]
    with SandboxAdmin(base_url=fresh_sandbox.url) as admin:
        before = admin.guests()["total"]
        answer = error(httpx.post(f"{fresh_sandbox.url}/v2/callFlows", json=body | identity), 400)
        assert field in answer["message"] and f"{MAX_IDENTITY_CHARS}" in answer["message"]
        assert admin.guests()["total"] == before  # no guest keeps it


def test_an_identity_at_the_cap_is_a_guest(fresh_sandbox: SandboxServer) -> None:
    browser_id = "b" * MAX_IDENTITY_CHARS
    response = httpx.post(f"{fresh_sandbox.url}/v2/callFlows", json=call_body(fresh_sandbox, browser_id))
    assert response.status_code == 200
    assert guest_count(fresh_sandbox, browser_id) == 1


def test_past_the_guest_cap_new_identities_get_507_and_known_guests_still_run(
    fresh_sandbox: SandboxServer,
) -> None:
    url = f"{fresh_sandbox.url}/v2/callFlows"
    engine = fresh_sandbox.app.engine
    assert engine.max_guests == MAX_GUESTS
    engine.max_guests = len(fresh_sandbox.app.tenant.guests) + 3  # the real cap is 250,000: too slow here
    for i in range(3):
        assert httpx.post(url, json=call_body(fresh_sandbox, f"cap-{i}")).status_code == 200
    answer = error(httpx.post(url, json=call_body(fresh_sandbox, "cap-3")), 507)
    assert "guests" in answer["message"] and "reset" in answer["developerMessage"]
    assert guest_count(fresh_sandbox, "cap-3") == 0
    assert httpx.post(url, json=call_body(fresh_sandbox, "cap-0")).status_code == 200  # known: still served
    with SandboxAdmin(base_url=fresh_sandbox.url) as admin:
        admin.reset()
    assert httpx.post(url, json=call_body(fresh_sandbox, "cap-3")).status_code == 200


# ---- knobs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("latency", [1e16, "1e243", "inf", "nan", "-1", f"0-{MAX_LATENCY_MS + 1}", 60_001])
def test_a_latency_knob_past_the_cap_is_refused_so_the_sandbox_cannot_hang(
    fresh_sandbox: SandboxServer, latency: Any
) -> None:
    """A schema fuzzer set ``latencyMs`` to 6.9e16 ms: every later real-API request slept for good."""
    url = fresh_sandbox.url
    headers = {"Content-Type": "application/json"}
    answer = error(httpx.put(f"{url}/sandbox/knobs", json={"latencyMs": latency}, headers=headers), 400)
    assert "latency" in answer["message"]
    assert httpx.get(f"{url}/sandbox/knobs").json()["latencyMs"] == "0"
    response = httpx.post(f"{url}/v2/callFlows", json=call_body(fresh_sandbox, "knobs"), timeout=10)
    assert response.status_code == 200


def test_the_latency_knob_takes_values_up_to_the_cap() -> None:
    assert parse_latency(MAX_LATENCY_MS) == ("fixed", MAX_LATENCY_MS, MAX_LATENCY_MS)
    assert parse_latency(f"0-{MAX_LATENCY_MS}") == ("uniform", 0.0, MAX_LATENCY_MS)


def test_retry_after_stays_a_valid_header_whatever_the_knob(fresh_sandbox: SandboxServer) -> None:
    url = fresh_sandbox.url
    knobs = {"retryAfterS": "inf", "faults": "503=1"}
    assert httpx.put(f"{url}/sandbox/knobs", json=knobs).status_code == 200
    response = httpx.post(f"{url}/v2/callFlows", json=call_body(fresh_sandbox, "retry"))
    error(response, 503)
    assert response.headers["retry-after"].isdigit()  # was "inf"; RFC 9110 §10.2.3: delay-seconds
