"""EdgeClient / AsyncEdgeClient over loopback against a stand-in for Adobe's IMS and Edge servers.

The stand-in (a stdlib HTTP server in a thread) plays Adobe's side of the wire as the reference describes
it: ``/ims/token/v3`` issues bearer tokens for one client id/secret, ``/ee[/hint]/v{1,2}/interact`` checks
the bearer token and answers scripted statuses. Nothing of ours is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr

from flowlab.config import load_settings
from flowlab.edge import AsyncEdgeClient, EdgeClient, EdgeCredentials, InteractRequest
from flowlab.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    RateLimitError,
    ServerError,
)
from flowlab.http import BatchTransport

FIXTURES = Path(__file__).parent / "fixtures" / "edge"
SECRET = "p8e-S3cr3t-value-Do-Not-Show"
CLIENT_ID = "flowlab-test-client"
ORG = "53A16ACB5CC1D3760A495C99@AdobeOrg"


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class StandIn:
    """Adobe's side: what it received, what it will answer next, which tokens it honours."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    script: deque[tuple[int, dict[str, str], bytes]] = field(default_factory=deque)
    valid_tokens: set[str] = field(default_factory=set)
    issued: int = 0
    expires_in: int = 86399
    ims_script: deque[tuple[int, bytes]] = field(default_factory=deque)
    slow: float = 0.0  # seconds interact waits before answering
    lock: threading.Lock = field(default_factory=threading.Lock)

    def interacts(self) -> list[Seen]:
        return [s for s in self.seen if s.path.endswith("/interact")]

    def token_calls(self) -> list[Seen]:
        return [s for s in self.seen if s.path == "/ims/token/v3"]


def _handler(state: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            parts = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with state.lock:
                state.seen.append(
                    Seen(
                        "POST",
                        parts.path,
                        parse_qs(parts.query),
                        dict(self.headers.items()),
                        body,
                        time.monotonic(),
                    )
                )
            if parts.path == "/ims/token/v3":
                return self._token(body)
            auth = self.headers.get("Authorization")
            if auth is not None and auth.removeprefix("Bearer ") not in state.valid_tokens:
                return self._answer(
                    401,
                    {"Content-Type": "application/problem+json"},
                    (FIXTURES / "error_0500_401_inferred.json").read_bytes(),
                )
            time.sleep(state.slow)
            with state.lock:
                scripted = state.script.popleft() if state.script else None
            if scripted is not None:
                return self._answer(*scripted)
            self._answer(200, {"Content-Type": "application/json;charset=utf-8", "x-request-id": "rid-1"},
                         (FIXTURES / "profile_lookup_with_attributes.json").read_bytes())  # fmt: skip

        def _token(self, body: bytes) -> None:
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            with state.lock:
                scripted = state.ims_script.popleft() if state.ims_script else None
            if scripted is not None:
                return self._answer(scripted[0], {"Content-Type": "application/json"}, scripted[1])
            if form.get("client_id") != CLIENT_ID or form.get("client_secret") != SECRET:
                # a careless server that echoes what it was sent: the client must still not show the secret
                error = {
                    "error": "invalid_client",
                    "error_description": f"invalid client_secret {form.get('client_secret')}",
                }
                return self._answer(400, {"Content-Type": "application/json"}, json.dumps(error).encode())
            with state.lock:
                state.issued += 1
                token = f"eyJ-token-{state.issued}"
                state.valid_tokens.add(token)
            answer = {"access_token": token, "token_type": "bearer", "expires_in": state.expires_in}
            self._answer(200, {"Content-Type": "application/json"}, json.dumps(answer).encode())

    return Handler


@contextlib.contextmanager
def stand_in() -> Iterator[StandIn]:
    """Adobe's IMS and Edge on a free loopback port, for the length of the ``with``."""
    state = StandIn()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def adobe() -> Iterator[StandIn]:
    with stand_in() as state:
        yield state


def creds(adobe: StandIn, secret: str = SECRET) -> EdgeCredentials:
    return EdgeCredentials(
        client_id=CLIENT_ID, client_secret=SecretStr(secret), org_id=ORG, ims_url=adobe.url
    )


def edge(adobe: StandIn, **kwargs: Any) -> EdgeClient:
    kwargs.setdefault("credentials", creds(adobe))
    kwargs.setdefault("datastream_id", "ds-1")
    return EdgeClient(base_url=adobe.url, **kwargs)


LOOKUP = {"identity": ("Email", "test123@adobetest.com")}


def test_authenticated_interact_sends_the_three_headers_and_the_exact_body(adobe: StandIn) -> None:
    with edge(adobe) as client:
        request = InteractRequest.build(**LOOKUP, event_type="web.webpagedetails.pageViews")
        answer = client.interact(request)
    assert answer.status_code == 200 and answer.request is request
    assert answer.destinations[0].attributes["city"] == "Philadelphia"
    assert answer.latency_ms > 0 and answer.url.endswith("/ee/v2/interact?datastreamId=ds-1")
    [token_call] = adobe.token_calls()
    form = parse_qs(token_call.body.decode())
    scope = "openid,AdobeID,read_organizations,additional_info.projectedProductContext,session"
    assert form == {
        "grant_type": ["client_credentials"],
        "client_id": [CLIENT_ID],
        "client_secret": [SECRET],
        "scope": [scope],
    }
    assert token_call.headers["Content-Type"] == "application/x-www-form-urlencoded"
    [call] = adobe.interacts()
    assert call.headers["Authorization"] == "Bearer eyJ-token-1"
    assert call.headers["x-api-key"] == CLIENT_ID and call.headers["x-gw-ims-org-id"] == ORG
    assert call.headers["Content-Type"] == "application/json"
    assert call.body == request.body_bytes()
    assert answer.request_headers["authorization"] == "[redacted]"


def test_the_token_is_cached_across_calls(adobe: StandIn) -> None:
    with edge(adobe) as client:
        for _ in range(3):
            client.interact(**LOOKUP)
    assert len(adobe.token_calls()) == 1 and len(adobe.interacts()) == 3


def test_the_token_is_renewed_shortly_before_it_expires(adobe: StandIn) -> None:
    adobe.expires_in = 1  # refreshed after 0.9 s (a tenth of the lifetime early)
    with edge(adobe) as client:
        client.interact(**LOOKUP)
        client.interact(**LOOKUP)
        time.sleep(1.0)
        client.interact(**LOOKUP)
    assert len(adobe.token_calls()) == 2
    assert [c.headers["Authorization"] for c in adobe.interacts()] == ["Bearer eyJ-token-1"] * 2 + [
        "Bearer eyJ-token-2"
    ]


def test_a_401_refreshes_the_token_once_and_succeeds(adobe: StandIn) -> None:
    with edge(adobe) as client:
        client.interact(**LOOKUP)
        adobe.valid_tokens.clear()  # IMS revoked it: the cached token is no longer good
        answer = client.interact(**LOOKUP)
    assert answer.status_code == 200 and answer.attempts == 1
    assert len(adobe.token_calls()) == 2
    assert [c.headers["Authorization"] for c in adobe.interacts()] == [
        "Bearer eyJ-token-1", "Bearer eyJ-token-1", "Bearer eyJ-token-2",
    ]  # fmt: skip


def test_a_401_that_survives_the_refresh_is_an_authentication_error(adobe: StandIn) -> None:
    adobe.script.extend([(401, {"Content-Type": "application/problem+json"},
                          (FIXTURES / "error_0500_401_inferred.json").read_bytes())] * 5)  # fmt: skip
    with edge(adobe) as client, pytest.raises(AuthenticationError) as info:
        client.interact(**LOOKUP)
    assert info.value.error_code == "EXEG-0500-401" and "Invalid authorization token" in str(info.value)
    assert len(adobe.interacts()) == 2 and len(adobe.token_calls()) == 2  # refreshed exactly once


def test_unauthenticated_calls_send_no_auth_and_fetch_no_token(adobe: StandIn) -> None:
    with edge(adobe, credentials=None) as client:
        client.interact(**LOOKUP)
    [call] = adobe.interacts()
    assert "Authorization" not in call.headers and "x-api-key" not in call.headers
    assert adobe.token_calls() == []


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retryable_statuses_are_retried(adobe: StandIn, status: int) -> None:
    adobe.script.append((status, {"Retry-After": "0"}, b""))
    with edge(adobe) as client:
        answer = client.interact(**LOOKUP)
    assert answer.status_code == 200 and answer.attempts == 2 and len(adobe.interacts()) == 2


@pytest.mark.parametrize(
    ("status", "cls"), [(500, ServerError), (400, BadRequestError), (408, None), (413, None)]
)
def test_other_statuses_are_not_retried(adobe: StandIn, status: int, cls: type[Exception] | None) -> None:
    adobe.script.append((status, {"Content-Type": "application/problem+json", "Retry-After": "0"}, b"{}"))
    with edge(adobe) as client:
        answer = client.interact(**LOOKUP, raise_for_status=False)
        assert answer.status_code == status and answer.attempts == 1
        if cls is not None:
            adobe.script.append((status, {"Retry-After": "0"}, b"{}"))
            with pytest.raises(cls):
                client.interact(**LOOKUP)
    assert len(adobe.interacts()) == (2 if cls else 1)


def test_retries_stop_after_three_and_raise_the_mapped_error(adobe: StandIn) -> None:
    adobe.script.extend([(429, {"Retry-After": "0"}, b"")] * 10)
    with edge(adobe) as client, pytest.raises(RateLimitError):
        client.interact(**LOOKUP)
    assert len(adobe.interacts()) == 4  # 1 + Adobe's 3 retries (reference §4.3)


def test_retry_after_in_seconds_is_honoured(adobe: StandIn) -> None:
    adobe.script.append((503, {"Retry-After": "1"}, b""))
    with edge(adobe) as client:
        client.interact(**LOOKUP)
    first, second = adobe.interacts()
    assert second.at - first.at >= 0.9


def test_retry_after_as_an_http_date_is_honoured(adobe: StandIn) -> None:
    adobe.script.append((429, {"Retry-After": email.utils.formatdate(time.time() + 2, usegmt=True)}, b""))
    with edge(adobe) as client:
        client.interact(**LOOKUP)
    first, second = adobe.interacts()
    assert second.at - first.at >= 0.9  # the date has whole seconds: between 1 and 2 s from now


def test_207_and_warnings_come_back_as_answers(adobe: StandIn) -> None:
    adobe.script.append(
        (
            207,
            {"Content-Type": "application/json"},
            (FIXTURES / "multi_status_207_errors_warnings.json").read_bytes(),
        )
    )
    with edge(adobe) as client:
        answer = client.interact(**LOOKUP)
    assert answer.status_code == 207 and [e.code for e in answer.errors] == ["EXEG-0201-503"]
    assert [w.code for w in answer.warnings] == ["EXEG-0204-200"]


@pytest.mark.parametrize(
    ("kwargs", "path", "query"),
    [
        ({}, "/ee/v2/interact", {"datastreamId": ["ds-1"]}),
        ({"datastream_param": "dataStreamId"}, "/ee/v2/interact", {"dataStreamId": ["ds-1"]}),
        ({"version": 1}, "/ee/v1/interact", {"configId": ["ds-1"]}),
        ({"region": "irl1"}, "/ee/irl1/v2/interact", {"datastreamId": ["ds-1"]}),
    ],
)
def test_url_forms(adobe: StandIn, kwargs: dict[str, Any], path: str, query: dict[str, list[str]]) -> None:
    with edge(adobe, **kwargs) as client:
        request = InteractRequest.build(**LOOKUP)
        client.interact(request)
    [call] = adobe.interacts()
    assert call.path == path and call.query == query
    expected = request.to_v1_body() if kwargs.get("version") == 1 else request.to_body()
    assert json.loads(call.body) == expected


@pytest.mark.parametrize(
    ("pasted", "path", "query"),
    [
        ("/ee/v2/interact?dataStreamId=ds-9", "/ee/v2/interact", {"dataStreamId": ["ds-9"]}),
        ("/ee/va6/v2/interact?datastreamId=ds-8", "/ee/va6/v2/interact", {"datastreamId": ["ds-8"]}),
        ("/ee/v1/interact?configId=ds-7", "/ee/v1/interact", {"configId": ["ds-7"]}),
    ],
)
def test_a_pasted_interact_url_is_understood(
    adobe: StandIn, pasted: str, path: str, query: dict[str, list[str]]
) -> None:
    with EdgeClient(base_url=adobe.url + pasted, credentials=None) as client:
        client.interact(**LOOKUP, request_id="trace-1")
    [call] = adobe.interacts()
    assert call.path == path and call.query == query | {"requestId": ["trace-1"]}


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"base_url": None}, "FLOWLAB_EDGE_BASE_URL"),
        ({"datastream_id": None}, "FLOWLAB_EDGE_DATASTREAM_ID"),
        ({"version": 3}, "version must be 1 or 2"),
        ({"version": 1, "datastream_param": "datastreamId"}, "configId"),
        ({"region": "or2/../x"}, "location hint"),
        ({"base_url": "https://user:pw@server.adobedc.net"}, "password .* FLOWLAB_EDGE_CLIENT_SECRET"),
        ({"base_url": "https://server.adobedc.net/ee/v2/interact?client_secret=x"}, "client_secret"),
    ],
)
def test_configuration_mistakes_say_what_to_fix(kwargs: dict[str, Any], words: str) -> None:
    args: dict[str, Any] = {"base_url": "https://server.adobedc.net", "datastream_id": "ds"} | kwargs
    with pytest.raises(ConfigError, match=words):
        EdgeClient(**args)


def test_credentials_need_every_part() -> None:
    with pytest.raises(ConfigError, match="client_secret .FLOWLAB_EDGE_CLIENT_SECRET."):
        EdgeCredentials(client_id="c", client_secret=SecretStr(""), org_id=ORG)
    with pytest.raises(ConfigError, match="SecretStr"):
        EdgeCredentials(client_id="c", client_secret=SECRET, org_id=ORG)  # type: ignore[arg-type]


def test_a_wrong_secret_is_an_authentication_error_that_never_shows_the_secret(
    adobe: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-" + SECRET
    with edge(adobe, credentials=creds(adobe, wrong)) as client, pytest.raises(AuthenticationError) as info:
        client.interact(**LOOKUP)
    error = info.value
    assert "IMS refused the token request (400, invalid_client" in str(error)
    assert "FLOWLAB_EDGE_CLIENT_SECRET" in str(error)
    shown = [str(error), repr(error), error.message, *map(str, error.args), error.response.text, caplog.text]
    assert all(SECRET not in s for s in shown), shown
    assert adobe.interacts() == []  # no token, no call


def test_neither_the_secret_nor_the_token_appears_in_reprs_logs_or_answers(
    adobe: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with edge(adobe) as client:
        answer = client.interact(**LOOKUP)
        token = client.token()
        shown = [repr(client), repr(client.credentials), str(client.credentials), repr(token), str(token),
                 repr(answer), str(answer.request_headers), caplog.text]  # fmt: skip
    assert all(SECRET not in s and "eyJ-token-1" not in s for s in shown), shown


def test_the_secret_comes_from_settings_as_a_secret(monkeypatch: pytest.MonkeyPatch, adobe: StandIn) -> None:
    monkeypatch.setenv("FLOWLAB_EDGE_BASE_URL", adobe.url)
    monkeypatch.setenv("FLOWLAB_EDGE_IMS_URL", adobe.url)
    monkeypatch.setenv("FLOWLAB_EDGE_DATASTREAM_ID", "ds-env")
    monkeypatch.setenv("FLOWLAB_EDGE_ORG_ID", ORG)
    monkeypatch.setenv("FLOWLAB_EDGE_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("FLOWLAB_EDGE_CLIENT_SECRET", SECRET)
    settings = load_settings()
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())
    with EdgeClient.from_settings(settings, retries=0) as client:
        answer = client.interact(**LOOKUP)
    assert answer.ok and adobe.interacts()[0].query == {"datastreamId": ["ds-env"]}


def test_a_refused_connection_is_a_connection_error() -> None:
    with EdgeClient(base_url="http://127.0.0.1:9", datastream_id="d", retries=0) as client:
        with pytest.raises(APIConnectionError, match="cannot connect"):
            client.interact(**LOOKUP)


def test_async_client_shares_one_token_across_concurrent_calls_and_retries(adobe: StandIn) -> None:
    adobe.script.append((503, {"Retry-After": "0"}, b""))

    async def run() -> list[int]:
        async with AsyncEdgeClient(
            base_url=adobe.url, datastream_id="ds-1", credentials=creds(adobe)
        ) as client:
            answers = await asyncio.gather(*(client.interact(**LOOKUP) for _ in range(20)))
            adobe.valid_tokens.clear()
            again = await client.interact(**LOOKUP)
        return [a.status_code for a in answers] + [again.status_code]

    assert asyncio.run(run()) == [200] * 21
    assert len(adobe.token_calls()) == 2  # one for the 20 concurrent calls, one after the 401
    assert len(adobe.interacts()) == 20 + 1 + 2  # + one 503 retried, + one 401 refreshed


def test_a_read_timeout_is_not_retried_because_the_event_may_have_been_recorded(adobe: StandIn) -> None:
    adobe.slow = 1.5
    with edge(adobe, timeout=0.3) as client, pytest.raises(APITimeoutError, match="within the timeout"):
        client.interact(**LOOKUP)
    time.sleep(1.5)  # let the stand-in log any late retry
    assert len(adobe.interacts()) == 1


def test_threads_sharing_a_client_fetch_one_token(adobe: StandIn) -> None:
    with edge(adobe) as client, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: client.interact(**LOOKUP), range(16)))
    assert all(a.ok for a in answers) and len(adobe.token_calls()) == 1


def test_the_batch_transport_posts_interact_bodies_with_a_per_request_token(adobe: StandIn) -> None:
    """The batch hot path (``BatchTransport``) serves Edge URLs too, with the bearer token per request."""
    with edge(adobe) as client:
        token = client.token()
        path = client.url().removeprefix(client.base_url)
        body = InteractRequest.build(**LOOKUP).body_bytes()
        auth = client.auth_headers(token)

    async def run() -> list[int]:
        async with BatchTransport(base_url=adobe.url, path=path, max_connections=4) as transport:
            results = [await transport.post_call_flows(body, 10, auth) for _ in range(3)]
        return [status for status, *_ in results]

    assert asyncio.run(run()) == [200, 200, 200]
    calls = adobe.interacts()
    assert len(calls) == 3 and all(c.query == {"datastreamId": ["ds-1"]} and c.body == body for c in calls)
    assert all(c.headers["Authorization"] == "Bearer eyJ-token-1" for c in calls)
