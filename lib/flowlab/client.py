"""The one module that speaks HTTP: callFlows, browser/create, and the sandbox's admin API.

``FlowClient`` (sync, httpx) serves the app, the CLI and notebooks; ``AsyncFlowClient`` (httpx API on the
aiohttp transport, which measured ~6x faster than httpx's own async transport on 2 cores; design.md) serves
concurrent work. Both share one retry policy (``RetryPolicy``) and one way of turning answers into
``FlowResponse`` objects or errors from ``flowlab.errors``; raw httpx/aiohttp exceptions never escape.

Retries: connection errors, 408, 429 and 5xx, honouring ``Retry-After``, with exponential backoff and
jitter; other 4xx are never retried. Note that a callFlows execution writes a tracking event, so a retry
after a *read* error may count a guest twice on a live tenant (the request may have run); connect errors
are always safe to retry.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import httpx
from pydantic import SecretStr

from flowlab.config import load_settings, resolve_base_url
from flowlab.errors import (
    APIConnectionError,
    APIError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    ConfigError,
    status_error_class,
)
from flowlab.models import CallFlowRequest, FlowResponse

__all__ = [
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT",
    "USER_AGENT",
    "AsyncFlowClient",
    "BatchTransport",
    "FlowClient",
    "OwnsAsyncHttp",
    "OwnsHttp",
    "RetryPolicy",
    "SandboxAdmin",
    "async_http",
    "parse_retry_after",
    "status_error",
]

DEFAULT_TIMEOUT = 10.0
DEFAULT_RETRIES = 2
USER_AGENT = "flowlab/0.1 (+https://github.com/flowlab)"
_RETRY_STATUS = frozenset({408, 429})


@dataclass(frozen=True)
class RetryPolicy:
    """When to retry and how long to wait: one place for the sync client, the async client and batches."""

    max_retries: int = DEFAULT_RETRIES
    initial_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 60.0
    #: Only these statuses are retried; None means 408, 429 and every 5xx (callFlows). The Edge Network
    #: retries only 429, 502, 503 and 504 (flowlab.edge).
    statuses: frozenset[int] | None = None

    def retryable_status(self, status_code: int) -> bool:
        if self.statuses is not None:
            return status_code in self.statuses
        return status_code in _RETRY_STATUS or status_code >= 500

    def delay(self, retry_number: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry ``retry_number`` (1-based); ``Retry-After`` wins when sane."""
        parsed = parse_retry_after(retry_after)
        if parsed is not None and 0 <= parsed <= self.max_retry_after:
            return parsed
        base: float = min(self.initial_delay * 2.0 ** (retry_number - 1), self.max_delay)
        return base * (1 - 0.25 * random.random())


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, float(when.timestamp()) - time.time())


def _base_url(base_url: str | None, region: str | None = None) -> str:
    url = resolve_base_url(base_url=base_url, region=region)
    if url is None:
        raise ConfigError(
            "no base URL: pass region= (eu, us, ap, jpe), base_url= (a tenant such as "
            "https://api-engage-eu.sitecorecloud.io), or a sandbox URL from flowlab.sandbox.serve()"
        )
    return url


def _headers(extra: Mapping[str, str] | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": USER_AGENT}
    headers.update(extra or {})
    return headers


def _timeout(seconds: float) -> httpx.Timeout:
    return httpx.Timeout(seconds, connect=min(seconds, 5.0))


def _response(
    raw: httpx.Response, *, started: float, request: CallFlowRequest | None, attempts: int
) -> FlowResponse:
    return FlowResponse(
        status_code=raw.status_code,
        headers=dict(raw.headers.items()),
        text=raw.text,
        latency_ms=(time.perf_counter() - started) * 1000,
        url=str(raw.request.url),
        request=request,
        attempts=attempts,
        request_headers={
            k: "[redacted]" if k.lower() == "authorization" else v for k, v in raw.request.headers.items()
        },
    )


def status_error(response: FlowResponse) -> APIStatusError:
    """An error for a non-2xx answer, with the API's own message when the body carries one."""
    cls = status_error_class(response.status_code)
    phrase = httpx.codes.get_reason_phrase(response.status_code)
    error = cls("", response=response, request=response.request, url=response.url)
    detail = error.api_message
    kind = "Client error" if response.status_code < 500 else "Server error"
    error.message = f"{kind} '{response.status_code} {phrase}' for url '{response.url}'" + (
        f": {detail}" if detail else ""
    )
    error.args = (error.message,)
    return error


def async_http(
    timeout: float, max_connections: int, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The async clients' pool: httpx's API on the aiohttp transport (design.md: plain ``httpx.AsyncClient``
    measured ~15% of the ideal rate at 50 concurrent requests, on aiohttp ~88%), one keep-alive pool."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    if transport is None:
        from httpx_aiohttp import AiohttpTransport

        transport = AiohttpTransport(limits=limits)
    return httpx.AsyncClient(timeout=_timeout(timeout), transport=transport, limits=limits)


def _connection_error(exc: httpx.TransportError, url: str, request: CallFlowRequest | None) -> APIError:
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"no answer from {url} within the timeout ({exc})", request=request, url=url)
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        message = f"cannot connect to {url}: {reason}. Is the URL right and the server running?"
    else:
        message = f"connection to {url} failed: {reason}"
    return APIConnectionError(message, request=request, url=url)


class _Base:
    def __init__(
        self,
        *,
        base_url: str | None,
        region: str | None,
        timeout: float,
        retries: int,
        headers: Mapping[str, str] | None,
    ) -> None:
        if timeout <= 0:
            raise ConfigError(f"timeout must be positive seconds, got {timeout}")
        if retries < 0:
            raise ConfigError(f"retries must be 0 or more, got {retries}")
        self.base_url = _base_url(base_url, region)
        self.timeout = timeout
        self.retry = RetryPolicy(max_retries=retries)
        self.headers = _headers(headers)

    def _url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def _finish(self, response: FlowResponse, raise_for_status: bool) -> FlowResponse:
        if raise_for_status and not response.ok:
            raise status_error(response)
        return response

    def _should_retry(self, response: FlowResponse, attempt: int) -> bool:
        return attempt <= self.retry.max_retries and self.retry.retryable_status(response.status_code)


class OwnsHttp:
    """A sync client's pool: its own (closed with the client) or one the caller passed in (left open)."""

    _http: httpx.Client
    _owns_http: bool

    def _use_http(self, http_client: httpx.Client | None, timeout: float, transport: Any) -> None:
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(timeout=_timeout(timeout), transport=transport)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_http:
            self._http.close()


class OwnsAsyncHttp:
    """The async twin of :class:`OwnsHttp`; its own pool is :func:`async_http`."""

    _http: httpx.AsyncClient
    _owns_http: bool

    def _use_http(
        self, http_client: httpx.AsyncClient | None, timeout: float, max_connections: int, transport: Any
    ) -> None:
        self._owns_http = http_client is None
        self._http = http_client or async_http(timeout, max_connections, transport)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()


class FlowClient(OwnsHttp, _Base):
    """Call flows on a tenant or the sandbox, synchronously.

    >>> with FlowClient(base_url=url) as client:                                # doctest: +SKIP
    ...     response = client.call(friendly_id="checkout_ab_test", client_key=key, browser_id="b-1")
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        region: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        headers: Mapping[str, str] | None = None,
        http_client: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url=base_url, region=region, timeout=timeout, retries=retries, headers=headers)
        self._use_http(http_client, timeout, transport)

    def call(
        self, request: CallFlowRequest | None = None, *, raise_for_status: bool = True, **fields: Any
    ) -> FlowResponse:
        """Execute a flow. Pass a ``CallFlowRequest`` or its fields; non-2xx raises unless told not to."""
        req = request if request is not None else CallFlowRequest.build(**fields)
        return self._finish(
            self._send("POST", "/v2/callFlows", req, json_body=req.to_body()), raise_for_status
        )

    def create_browser_id(self, client_key: str) -> str:
        """A new browserId from ``browser/create.json``, as real web clients get one (reference §6.1)."""
        response = self._finish(
            self._send(
                "GET", "/v1.2/browser/create.json", None, params={"client_key": client_key, "message": "{}"}
            ),
            True,
        )
        return _browser_ref(response)

    def _send(
        self,
        method: str,
        path: str,
        request: CallFlowRequest | None,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> FlowResponse:
        url = self._url(path)
        content = json.dumps(json_body).encode() if json_body is not None else None
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                raw = self._http.request(method, url, content=content, params=params, headers=self.headers)
            except httpx.TransportError as exc:
                if attempt <= self.retry.max_retries:
                    time.sleep(self.retry.delay(attempt))
                    continue
                raise _connection_error(exc, url, request) from exc
            response = _response(raw, started=started, request=request, attempts=attempt)
            if not self._should_retry(response, attempt):
                return response
            time.sleep(self.retry.delay(attempt, raw.headers.get("retry-after")))


class AsyncFlowClient(OwnsAsyncHttp, _Base):
    """The async twin of ``FlowClient``, on the aiohttp transport, with a pool sized to ``max_connections``."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        region: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 100,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url=base_url, region=region, timeout=timeout, retries=retries, headers=headers)
        self._use_http(http_client, timeout, max_connections, transport)

    async def call(
        self, request: CallFlowRequest | None = None, *, raise_for_status: bool = True, **fields: Any
    ) -> FlowResponse:
        req = request if request is not None else CallFlowRequest.build(**fields)
        response = await self._send("POST", "/v2/callFlows", req, json_body=req.to_body())
        return self._finish(response, raise_for_status)

    async def create_browser_id(self, client_key: str) -> str:
        params = {"client_key": client_key, "message": "{}"}
        response = await self._send("GET", "/v1.2/browser/create.json", None, params=params)
        return _browser_ref(self._finish(response, True))

    async def _send(
        self,
        method: str,
        path: str,
        request: CallFlowRequest | None,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> FlowResponse:
        url = self._url(path)
        content = json.dumps(json_body).encode() if json_body is not None else None
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                raw = await self._http.request(
                    method, url, content=content, params=params, headers=self.headers
                )
            except httpx.TransportError as exc:
                if attempt <= self.retry.max_retries:
                    await asyncio.sleep(self.retry.delay(attempt))
                    continue
                raise _connection_error(exc, url, request) from exc
            response = _response(raw, started=started, request=request, attempts=attempt)
            if not self._should_retry(response, attempt):
                return response
            await asyncio.sleep(self.retry.delay(attempt, raw.headers.get("retry-after")))


def _browser_ref(response: FlowResponse) -> str:
    body = response.json_body
    if not isinstance(body, dict) or not isinstance(body.get("ref"), str):
        raise APIResponseError(
            f"browser/create answered without a 'ref': {response.text[:200]}", url=response.url
        )
    return str(body["ref"])


class SandboxAdmin:
    """The sandbox's admin API (``/sandbox/...``): what it holds, traces, tracking, loading and reset.

    ``admin_token`` (default: the ``FLOWLAB_SANDBOX_ADMIN_TOKEN`` setting; ``""`` for none) is sent as
    ``Authorization: Bearer`` on every admin call to ``base_url``, and on nothing else: ``is_sandbox()``
    asks without it, so probing a live tenant never hands it the token.
    """

    def __init__(
        self, *, base_url: str, timeout: float = DEFAULT_TIMEOUT, admin_token: str | SecretStr | None = None
    ) -> None:
        self.base_url = _base_url(base_url)
        if admin_token is None:
            admin_token = load_settings().sandbox_admin_token
        token = admin_token.get_secret_value() if isinstance(admin_token, SecretStr) else admin_token
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=_timeout(timeout))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> FlowResponse:
        started = time.perf_counter()
        try:
            raw = self._http.request(method, path, headers=self._auth if auth else None, **kwargs)
        except httpx.TransportError as exc:
            raise _connection_error(exc, self.base_url + path, None) from exc
        return _response(raw, started=started, request=None, attempts=1)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        if not response.ok:
            raise status_error(response)
        return response.json_body

    def is_sandbox(self) -> bool:
        """True when the base URL answers like a Flow Lab sandbox (asked without the admin token)."""
        try:
            response = self._send("GET", "/sandbox/info", auth=False)
        except APIError:
            return False
        if response.status_code == 401:  # a sandbox with an admin token names its realm
            return 'realm="flowlab-sandbox"' in response.headers.get("www-authenticate", "")
        info = response.json_body
        return response.ok and isinstance(info, dict) and "clientKey" in info

    def info(self) -> dict[str, Any]:
        return dict(self._json("GET", "/sandbox/info"))

    def flows(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/sandbox/flows"))

    def flow(self, friendly_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/sandbox/flows/{friendly_id}"))

    def offers(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/sandbox/offers"))

    def decision_models(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/sandbox/decision-models"))

    def guests(self, *, limit: int = 50, offset: int = 0, **filters: str) -> dict[str, Any]:
        return dict(
            self._json("GET", "/sandbox/guests", params={"limit": limit, "offset": offset, **filters})
        )

    def tracking(self, guest_ref: str) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/sandbox/guests/{guest_ref}/tracking"))

    def execution(self, ref: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/sandbox/executions/{ref}"))

    def outcomes(self, friendly_id: str) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/sandbox/flows/{friendly_id}/outcomes"))

    def load_flow(self, definition: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._json("POST", "/sandbox/flows", json=dict(definition)))

    def load_offer(self, offer: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._json("POST", "/sandbox/offers", json=dict(offer)))

    def load_decision_model(self, model: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._json("POST", "/sandbox/decision-models", json=dict(model)))

    def reset(self) -> dict[str, Any]:
        return dict(self._json("POST", "/sandbox/reset", json={}))


class BatchTransport:
    """The batch runner's hot path: raw aiohttp on one keep-alive pool of ``max_connections`` connections.

    At 200 concurrent requests httpx's own per-request work (even on the aiohttp transport) caps a 2-core
    machine at ~70% of ideal, raw aiohttp at ~90% (design.md; ``bench/batch.py`` measures it again). So
    batches post pre-serialised bodies here and get back ``(status, headers, text, latency_ms)``; retries
    and everything else stay with the caller. Errors are ``flowlab.errors`` types, never aiohttp's.

    >>> async with BatchTransport(base_url=url, max_connections=50) as transport:   # doctest: +SKIP
    ...     status, headers, text, latency_ms = await transport.post_call_flows(body, timeout=10)
    """

    def __init__(
        self,
        *,
        base_url: str,
        max_connections: int = 100,
        headers: Mapping[str, str] | None = None,
        path: str = "/v2/callFlows",
    ) -> None:
        if max_connections < 1:
            raise ConfigError(f"max_connections must be 1 or more, got {max_connections}")
        self.base_url = _base_url(base_url)
        self.url = f"{self.base_url}/{path.lstrip('/')}"  # path may carry a query (Edge: ?datastreamId=)
        self.max_connections = max_connections
        self.headers = _headers(headers)
        self._session: Any = None
        self._url: Any = self.url
        self._timeouts: dict[float, Any] = {}

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Create the pool (inside the running event loop, as aiohttp requires)."""
        import aiohttp
        import yarl

        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self.headers, cookie_jar=aiohttp.DummyCookieJar()
            )  # callFlows sets no cookies worth keeping; skipping the jar saves work on every request
            self._url = yarl.URL(self.url)  # parsed once, not per request

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post_call_flows(
        self, body: bytes, timeout: float, headers: Mapping[str, str] | None = None
    ) -> tuple[int, Mapping[str, str], str, float]:
        """POST one JSON body to the URL (``/v2/callFlows`` unless ``path`` said otherwise):
        ``(status, headers, text, latency_ms)``. No retries. ``headers`` are added to this request only
        (the Edge's bearer token, which changes when it is refreshed)."""
        import aiohttp

        if self._session is None:
            await self.open()
        client_timeout = self._timeouts.get(timeout)
        if client_timeout is None:
            client_timeout = self._timeouts[timeout] = aiohttp.ClientTimeout(total=timeout)
        started = time.perf_counter()
        try:
            async with self._session.post(
                self._url, data=body, timeout=client_timeout, headers=headers
            ) as raw:
                content = await raw.read()
                status, headers = raw.status, raw.headers
        except TimeoutError:
            message = f"no answer from {self.url} within the timeout ({timeout:g} s)"
            raise APITimeoutError(message, url=self.url) from None
        except aiohttp.ClientConnectorError as exc:
            reason = exc.os_error.strerror or exc.os_error
            message = f"cannot connect to {self.url}: {reason}. Is the URL right and the server running?"
            raise APIConnectionError(message, url=self.url) from exc
        except (aiohttp.ClientError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise APIConnectionError(f"connection to {self.url} failed: {reason}", url=self.url) from exc
        latency_ms = (time.perf_counter() - started) * 1000
        return status, headers, content.decode("utf-8", "replace"), latency_ms
