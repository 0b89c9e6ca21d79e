"""Sitecore Personalize callFlows clients: ``FlowClient`` (sync, httpx) for the app, the CLI and notebooks;
``AsyncFlowClient`` for concurrent work.

Both build on ``flowlab.http``: one retry policy, answers as ``FlowResponse``, errors from ``flowlab.errors``.
Retries: connection errors, 408, 429 and 5xx, honouring ``Retry-After``, with exponential backoff and
jitter; other 4xx are never retried. A callFlows execution writes a tracking event, so a retry after a
*read* error may count a guest twice on a live tenant (the request may have run); connect errors are
always safe to retry.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

import httpx

from flowlab.errors import APIResponseError
from flowlab.http import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    FlowResponse,
    OwnsAsyncHttp,
    OwnsHttp,
    RetryPolicy,
    check_client_options,
    connection_error,
    http_response,
    json_headers,
    require_base_url,
    status_error,
)
from flowlab.personalize.models import CallFlowRequest

__all__ = ["AsyncFlowClient", "FlowClient"]


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
        check_client_options(timeout, retries)
        self.base_url = require_base_url(base_url, region)
        self.timeout = timeout
        self.retry = RetryPolicy(max_retries=retries)
        self.headers = json_headers(headers)

    def _url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def _finish(self, response: FlowResponse, raise_for_status: bool) -> FlowResponse:
        if raise_for_status and not response.ok:
            raise status_error(response)
        return response

    def _should_retry(self, response: FlowResponse, attempt: int) -> bool:
        return attempt <= self.retry.max_retries and self.retry.retryable_status(response.status_code)


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
                raise connection_error(exc, url, request) from exc
            response = http_response(raw, started=started, request=request, attempts=attempt)
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
                raise connection_error(exc, url, request) from exc
            response = http_response(raw, started=started, request=request, attempts=attempt)
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
