"""The client core: what every provider's client shares to speak HTTP.

One retry policy (``RetryPolicy``), one answer record (``FlowResponse``: exact status, headers, body and
latency), one way of turning transport failures and non-2xx answers into ``flowlab.errors`` (raw
httpx/aiohttp exceptions never escape), the pools (``OwnsHttp``/``OwnsAsyncHttp``: httpx's API on the
aiohttp transport for async work, which measured ~6x faster than httpx's own on 2 cores; design.md) and the
batch hot path (``BatchTransport``). Providers build on it: ``flowlab.personalize.client`` (callFlows),
``flowlab.edge.client`` (AEP Edge interact) and ``flowlab.admin`` (the sandbox's admin API).

Retries: connection errors, 408, 429 and 5xx, honouring ``Retry-After``, with exponential backoff and
jitter; other 4xx are never retried. Note that a callFlows execution writes a tracking event, so a retry
after a *read* error may count a guest twice on a live tenant (the request may have run); connect errors
are always safe to retry.
"""

from __future__ import annotations

import email.utils
import json
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import httpx

from flowlab.config import resolve_base_url
from flowlab.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    ConfigError,
    status_error_class,
)

if TYPE_CHECKING:
    from flowlab.personalize.models import CallFlowRequest

__all__ = [
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT",
    "USER_AGENT",
    "BatchTransport",
    "FlowResponse",
    "OwnsAsyncHttp",
    "OwnsHttp",
    "RetryPolicy",
    "async_http",
    "check_client_options",
    "connection_error",
    "http_response",
    "json_headers",
    "parse_retry_after",
    "require_base_url",
    "status_error",
    "timeout_config",
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


def check_client_options(timeout: float, retries: int) -> None:
    """The checks every provider's client makes on its options, with one wording (``ConfigError``)."""
    if timeout <= 0:
        raise ConfigError(f"timeout must be positive seconds, got {timeout}")
    if retries < 0:
        raise ConfigError(f"retries must be 0 or more, got {retries}")


def require_base_url(base_url: str | None, region: str | None = None) -> str:
    url = resolve_base_url(base_url=base_url, region=region)
    if url is None:
        raise ConfigError(
            "no base URL: pass region= (eu, us, ap, jpe), base_url= (a tenant such as "
            "https://api-engage-eu.sitecorecloud.io), or a sandbox URL from flowlab.sandbox.serve()"
        )
    return url


def json_headers(extra: Mapping[str, str] | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": USER_AGENT}
    headers.update(extra or {})
    return headers


def timeout_config(seconds: float) -> httpx.Timeout:
    return httpx.Timeout(seconds, connect=min(seconds, 5.0))


def http_response(
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
    return httpx.AsyncClient(timeout=timeout_config(timeout), transport=transport, limits=limits)


def connection_error(exc: httpx.TransportError, url: str, request: CallFlowRequest | None) -> APIError:
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"no answer from {url} within the timeout ({exc})", request=request, url=url)
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        message = f"cannot connect to {url}: {reason}. Is the URL right and the server running?"
    else:
        message = f"connection to {url} failed: {reason}"
    return APIConnectionError(message, request=request, url=url)


class OwnsHttp:
    """A sync client's pool: its own (closed with the client) or one the caller passed in (left open)."""

    _http: httpx.Client
    _owns_http: bool

    def _use_http(self, http_client: httpx.Client | None, timeout: float, transport: Any) -> None:
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(timeout=timeout_config(timeout), transport=transport)

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
        self.base_url = require_base_url(base_url)
        self.url = f"{self.base_url}/{path.lstrip('/')}"  # path may carry a query (Edge: ?datastreamId=)
        self.max_connections = max_connections
        self.headers = json_headers(headers)
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


@dataclass(frozen=True)
class FlowResponse:
    """What came back from one call: exact status, headers and body, plus what we could read from it."""

    status_code: int
    headers: Mapping[str, str]
    text: str
    latency_ms: float
    url: str = ""
    request: CallFlowRequest | None = None
    attempts: int = 1
    request_headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300

    @cached_property
    def json_body(self) -> Any:
        """The parsed body, or None when the body is not JSON (the template may print anything)."""
        try:
            return json.loads(self.text) if self.text.strip() else None
        except ValueError:
            return None

    @property
    def is_json(self) -> bool:
        return self.json_body is not None

    @property
    def execution_ref(self) -> str | None:
        """The sandbox's execution reference (``X-Flowlab-Execution``), for fetching its trace."""
        return _header(self.headers, "x-flowlab-execution")

    @property
    def request_id(self) -> str | None:
        for name in ("x-flowlab-execution", "x-request-id", "x-sc-correlation-id", "x-correlation-id"):
            value = _header(self.headers, name)
            if value:
                return value
        return None

    @cached_property
    def offers(self) -> list[Any]:
        """Offers found anywhere in the JSON body, normalised (see ``flowlab.personalize.offers``)."""
        from flowlab.personalize.offers import find_offers

        return find_offers(self.json_body)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None
