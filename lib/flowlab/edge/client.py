"""The Edge Network's HTTP: ``POST /ee/v2/interact`` (and v1), and the IMS token it needs.

``EdgeClient`` (sync, httpx) and ``AsyncEdgeClient`` (httpx on the aiohttp transport) stand on the same
foundations as ``flowlab.http.FlowClient``: its ``RetryPolicy``, its error mapping and helpers, and
``flowlab.errors``; raw httpx exceptions never escape. What differs is the Edge's own contract
(adobe-edge-personalization.md):

- URLs (§2.1): ``{base}/ee[/{hint}]/v2/interact?datastreamId=…`` on ``server.adobedc.net`` (authenticated,
  the only way to get attributes) or ``edge.adobedc.net`` (unauthenticated); the v1 Web SDK form
  ``/ee/v1/interact?configId=…`` with a ``{events: […]}`` body. Both spellings ``datastreamId`` and
  ``dataStreamId`` are in Adobe's docs (§2.2): pass ``datastream_param`` or a pasted URL that uses either.
- Retries (§4.3): only 429, 502, 503 and 504, at most 3 times as Adobe's SDK does (S4), honouring
  ``Retry-After`` in seconds or as an HTTP date; connect errors too (nothing was sent). Never other
  statuses or read errors: an interact call records an event, so re-sending one may count it twice.
- Auth (§2.2): with ``EdgeCredentials``, an IMS token is fetched once, cached until shortly before
  ``expires_in`` (``flowlab.edge.auth``) and refreshed once when interact answers 401 with a cached token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
from pydantic import SecretStr

from flowlab.admin import SandboxAdmin
from flowlab.config import Settings, load_settings, resolve_base_url
from flowlab.edge.auth import TOKEN_PATH, AccessToken, EdgeCredentials, TokenCache, read_token_answer
from flowlab.edge.models import InteractRequest
from flowlab.edge.response import EdgeResponse, parse_edge_response
from flowlab.errors import (
    APIError,
    APIResponseError,
    APIStatusError,
    AuthenticationError,
    ConfigError,
    status_error_class,
)
from flowlab.http import (
    DEFAULT_TIMEOUT,
    FlowResponse,
    OwnsAsyncHttp,
    OwnsHttp,
    RetryPolicy,
    check_client_options,
    connection_error,
    http_response,
    json_headers,
)
from flowlab.redaction import redact_url, secret_parts

__all__ = [
    "DATASTREAM_PARAMS",
    "EDGE_HOST",
    "EDGE_RETRIES",
    "EDGE_RETRY_STATUSES",
    "SERVER_HOST",
    "AsyncEdgeClient",
    "EdgeClient",
    "interact_url",
]

#: The authenticated Server API host and the unauthenticated edge host (§2.1).
SERVER_HOST = "https://server.adobedc.net"
EDGE_HOST = "https://edge.adobedc.net"
#: The statuses Adobe says to retry (§4.3, DOC D8) and the SDK's retry count (S4).
EDGE_RETRY_STATUSES = frozenset({429, 502, 503, 504})
EDGE_RETRIES = 3
#: Query parameter names for the datastream: v2 (both spellings in Adobe's docs) and v1 (§2.2).
DATASTREAM_PARAMS = ("datastreamId", "dataStreamId", "configId")
_HINT = re.compile(r"^[a-z0-9]{1,16}$")
_PASTED = re.compile(r"^(?P<base>.*?)/ee(?:/(?P<hint>[A-Za-z0-9]+))?/v(?P<version>[12])/interact/?$")


def interact_url(
    base_url: str,
    datastream_id: str,
    *,
    version: int = 2,
    region: str | None = None,
    datastream_param: str | None = None,
    request_id: str | None = None,
) -> str:
    """``{base}/ee[/{region}]/v{version}/interact?{param}={id}[&requestId=…]`` (§2.1, §2.2)."""
    param = datastream_param or ("datastreamId" if version == 2 else "configId")
    hint = f"/{region}" if region else ""
    query = {param: datastream_id} | ({"requestId": request_id} if request_id else {})
    return f"{base_url}/ee{hint}/v{version}/interact?{urlencode(query)}"


class _EdgeBase:
    def __init__(
        self,
        *,
        base_url: str | None,
        datastream_id: str | None,
        credentials: EdgeCredentials | None,
        region: str | None,
        version: int | None,
        datastream_param: str | None,
        timeout: float,
        retries: int,
        headers: Mapping[str, str] | None,
    ) -> None:
        check_client_options(timeout, retries)
        if not base_url:
            raise ConfigError(
                "no Edge base URL: pass base_url= (https://server.adobedc.net with credentials, "
                "https://edge.adobedc.net without, or the sandbox's URL) or set FLOWLAB_EDGE_BASE_URL"
            )
        base, pasted = _split_pasted(base_url)
        secrets = secret_parts(base_url)
        if secrets:
            raise ConfigError(
                f"Edge base URL '{redact_url(base_url)}' carries {' and '.join(secrets)}: remove it; the client "
                "secret goes in FLOWLAB_EDGE_CLIENT_SECRET (or Streamlit secrets), never in a URL"
            )
        self.base_url = resolve_base_url(base_url=base) or ""
        region = region or pasted.get("region")
        version = version or pasted.get("version") or 2
        datastream_id = datastream_id or pasted.get("datastream_id")
        datastream_param = datastream_param or pasted.get("param")
        if version not in (1, 2):
            raise ConfigError(
                f"version must be 1 or 2 (the /ee/v1 or /ee/v2 interact endpoint), got {version}"
            )
        if not datastream_id or not str(datastream_id).strip():
            raise ConfigError(
                "no datastream id: pass datastream_id= or set FLOWLAB_EDGE_DATASTREAM_ID "
                "(Data Collection → Datastreams shows it)"
            )
        allowed = ("datastreamId", "dataStreamId") if version == 2 else ("configId",)
        if datastream_param is not None and datastream_param not in allowed:
            raise ConfigError(
                f"the v{version} endpoint takes the datastream as {' or '.join(allowed)}, not {datastream_param}"
            )
        if region is not None:
            region = region.strip().lower() or None
            if region is not None and not _HINT.match(region):
                raise ConfigError(
                    f"'{region}' is not an Edge location hint: use or2, va6, irl1, ind1, jpn3, sgp3 or aus3"
                )
        self.datastream_id = str(datastream_id).strip()
        self.datastream_param = datastream_param
        self.region = region
        self.version = int(version)
        self.credentials = credentials
        self.timeout = timeout
        self.retry = RetryPolicy(
            max_retries=retries, initial_delay=1.0, max_delay=4.0, statuses=EDGE_RETRY_STATUSES
        )
        self.headers = json_headers(headers)
        self.tokens = TokenCache()

    def __repr__(self) -> str:
        auth = f"client_id={self.credentials.client_id!r}" if self.credentials else "unauthenticated"
        return f"{type(self).__name__}({self.base_url!r}, datastream_id={self.datastream_id!r}, {auth})"

    @property
    def authenticated(self) -> bool:
        return self.credentials is not None

    def url(self, request_id: str | None = None) -> str:
        return interact_url(
            self.base_url,
            self.datastream_id,
            version=self.version,
            region=self.region,
            datastream_param=self.datastream_param,
            request_id=request_id,
        )

    @staticmethod
    def _request(request: InteractRequest | None, fields: dict[str, Any]) -> InteractRequest:
        return request if request is not None else InteractRequest.build(**fields)

    def _token_request(self) -> tuple[str, bytes, dict[str, str]]:
        assert self.credentials is not None
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
            "User-Agent": self.headers["User-Agent"],
        }
        return self.credentials.token_url, self.credentials.token_form(), headers

    def _token_answer(self, raw: httpx.Response, started: float) -> AccessToken:
        """The token from IMS's answer, or an error that names what to fix, never the secret."""
        assert self.credentials is not None
        flow = http_response(raw, started=started, request=None, attempts=1)
        flow = dataclasses.replace(flow, text=self.credentials.scrub(flow.text))
        url = self.credentials.token_url
        if not flow.ok:
            cls: type[APIStatusError] = (
                AuthenticationError
                if flow.status_code in (400, 401, 403)
                else status_error_class(flow.status_code)
            )
            body = flow.json_body if isinstance(flow.json_body, Mapping) else {}
            said = ": ".join(
                str(body[k]) for k in ("error", "error_description") if isinstance(body.get(k), str)
            ) or (flow.text[:200] if flow.text.strip() else "no body")
            error = cls("", response=flow, url=url)
            error.message = self.credentials.scrub(
                f"IMS refused the token request ({flow.status_code}, {said}) at {url}: check "
                "FLOWLAB_EDGE_CLIENT_ID, FLOWLAB_EDGE_CLIENT_SECRET and FLOWLAB_EDGE_SCOPE (the Developer "
                "Console's OAuth server-to-server credential)"
            )
            error.args = (error.message,)
            raise error
        token = read_token_answer(flow.json_body, now=self.tokens.now())
        if isinstance(token, str):
            raise APIResponseError(f"{token} from {url}: {self.credentials.scrub(flow.text[:200])}", url=url)
        return token

    def auth_headers(self, token: AccessToken | None) -> dict[str, str]:
        """The headers of one interact call: the client's own plus, with a token, the three auth headers."""
        if token is None or self.credentials is None:
            return self.headers
        return {**self.headers, **self.credentials.headers(token)}

    def _finish(
        self,
        raw: httpx.Response,
        started: float,
        request: InteractRequest,
        attempts: int,
        raise_for_status: bool,
    ) -> EdgeResponse:
        flow = http_response(raw, started=started, request=None, attempts=attempts)
        return _edge(flow, raw.content, request, raise_for_status)

    def _connect_failed(self, exc: httpx.TransportError, url: str, attempt: int) -> APIError | None:
        """None when the failure is worth another attempt (nothing was sent), else the error to raise."""
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout) and attempt <= self.retry.max_retries:
            return None
        return connection_error(exc, url, None)


def _edge(
    flow: FlowResponse, content: bytes, request: InteractRequest, raise_for_status: bool
) -> EdgeResponse:
    return parse_edge_response(
        flow.status_code,
        flow.headers,
        content,
        latency_ms=flow.latency_ms,
        url=flow.url,
        request=request,
        attempts=flow.attempts,
        request_headers=flow.request_headers,
        raise_for_status=raise_for_status,
    )


def _split_pasted(url: str) -> tuple[str, dict[str, Any]]:
    """A base URL, or a whole interact URL pasted from Adobe's docs, split into base and parts."""
    parts = urlsplit(url.strip())
    match = _PASTED.match(parts.path)
    if match is None:
        return url, {}
    query = dict(parse_qsl(parts.query))
    found: dict[str, Any] = {"version": int(match["version"])}
    if match["hint"]:
        found["region"] = match["hint"]
    for name in DATASTREAM_PARAMS:
        if query.get(name):
            found["datastream_id"], found["param"] = query[name], name
            break
    return f"{parts.scheme}://{parts.netloc}{match['base']}", found


def _settings_kwargs(settings: Settings | None, overrides: dict[str, Any]) -> dict[str, Any]:
    s = settings if settings is not None else load_settings()
    kwargs: dict[str, Any] = {
        "base_url": s.edge_base_url,
        "datastream_id": s.edge_datastream_id,
        "region": s.edge_region,
        "credentials": EdgeCredentials.from_settings(s),
        "timeout": s.timeout,
        "retries": s.retries,
    }
    kwargs.update(overrides)
    return kwargs


def _sandbox_kwargs(
    base_url: str, authenticated: bool, datastream: int | str, overrides: dict[str, Any]
) -> dict[str, Any]:
    """Datastream and demo credentials from the sandbox's ``GET /sandbox/info`` (its ``edge`` section)."""
    with SandboxAdmin(base_url=base_url) as admin:
        info = admin.info().get("edge")
    if not isinstance(info, Mapping):
        raise ConfigError(
            f"{base_url} is not a Flow Lab sandbox with the Edge Network (no 'edge' in /sandbox/info)"
        )
    try:
        streams = [d["id"] for d in info.get("datastreams", [])]
        if isinstance(datastream, int):
            if not 0 <= datastream < len(streams):
                raise ConfigError(
                    f"the sandbox has {len(streams)} datastreams; datastream={datastream} is not one"
                )
            datastream = streams[datastream]
        credentials = None
        if authenticated:
            demo = info["credentials"]
            credentials = EdgeCredentials(
                client_id=demo["clientId"],
                client_secret=SecretStr(demo["clientSecret"]),
                org_id=info["orgId"],
                ims_url=str(demo["tokenUrl"]).removesuffix(TOKEN_PATH),
                scope=demo["scope"],
            )
    except (KeyError, TypeError) as exc:
        raise ConfigError(
            f"the sandbox at {base_url} describes its Edge without {exc}: is it an older version?"
        ) from None
    return {"base_url": base_url, "datastream_id": datastream, "credentials": credentials} | overrides


class EdgeClient(OwnsHttp, _EdgeBase):
    """Interact calls to the Edge Network or the sandbox, synchronously.

    >>> with EdgeClient(base_url=url, datastream_id=ds, credentials=creds) as edge:     # doctest: +SKIP
    ...     answer = edge.interact(identity=("Email", "jane@example.com"), event_type="web.webpagedetails.pageViews")
    ...     answer.destinations[0].segments
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        datastream_id: str | None = None,
        credentials: EdgeCredentials | None = None,
        region: str | None = None,
        version: int | None = None,
        datastream_param: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = EDGE_RETRIES,
        headers: Mapping[str, str] | None = None,
        http_client: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url=base_url,
            datastream_id=datastream_id,
            credentials=credentials,
            region=region,
            version=version,
            datastream_param=datastream_param,
            timeout=timeout,
            retries=retries,
            headers=headers,
        )
        self._use_http(http_client, timeout, transport)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **overrides: Any) -> EdgeClient:
        """A client from ``FLOWLAB_EDGE_*`` (and ``FLOWLAB_TIMEOUT``/``RETRIES``); keywords override them."""
        return cls(**_settings_kwargs(settings, overrides))

    @classmethod
    def for_sandbox(
        cls, base_url: str, *, authenticated: bool = True, datastream: int | str = 0, **overrides: Any
    ) -> EdgeClient:
        """A client for the sandbox at ``base_url``: its first (or given) datastream and, when
        ``authenticated``, its demo credentials (without them: the unauthenticated edge call)."""
        return cls(**_sandbox_kwargs(base_url, authenticated, datastream, overrides))

    def token(self) -> AccessToken:
        """The cached IMS token, fetched when missing or about to expire (one fetch across threads)."""
        token = self.tokens.get()
        if token is not None:
            return token
        with self.tokens.lock:
            token = self.tokens.get()
            if token is None:
                url, form, headers = self._token_request()
                started = time.perf_counter()
                try:
                    raw = self._http.post(url, content=form, headers=headers)
                except httpx.TransportError as exc:
                    raise connection_error(exc, url, None) from exc
                token = self._token_answer(raw, started)
                self.tokens.put(token)
            return token

    def interact(
        self,
        request: InteractRequest | None = None,
        *,
        raise_for_status: bool = True,
        request_id: str | None = None,
        **fields: Any,
    ) -> EdgeResponse:
        """Send one event. Pass an ``InteractRequest`` or its fields (``identity=("Email", "…")``, …)."""
        req = self._request(request, fields)
        url = self.url(request_id)
        body = req.body_bytes(self.version)
        attempt, refreshed = 0, False
        while True:
            attempt += 1
            token = self.token() if self.credentials is not None else None
            started = time.perf_counter()
            try:
                raw = self._http.post(url, content=body, headers=self.auth_headers(token))
            except httpx.TransportError as exc:
                error = self._connect_failed(exc, url, attempt)
                if error is not None:
                    raise error from exc
                time.sleep(self.retry.delay(attempt))
                continue
            if raw.status_code == 401 and token is not None and not refreshed:
                refreshed = True  # once: if a token IMS has just issued fails too, the 401 is the answer
                self.tokens.drop(token)  # only if still current: concurrent 401s cost one fetch
                attempt -= 1
                continue
            if attempt <= self.retry.max_retries and self.retry.retryable_status(raw.status_code):
                time.sleep(self.retry.delay(attempt, raw.headers.get("retry-after")))
                continue
            return self._finish(raw, started, req, attempt, raise_for_status)


class AsyncEdgeClient(OwnsAsyncHttp, _EdgeBase):
    """The async twin of ``EdgeClient``, on the aiohttp transport, with a pool of ``max_connections``."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        datastream_id: str | None = None,
        credentials: EdgeCredentials | None = None,
        region: str | None = None,
        version: int | None = None,
        datastream_param: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = EDGE_RETRIES,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 100,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url=base_url,
            datastream_id=datastream_id,
            credentials=credentials,
            region=region,
            version=version,
            datastream_param=datastream_param,
            timeout=timeout,
            retries=retries,
            headers=headers,
        )
        self._use_http(http_client, timeout, max_connections, transport)
        self._token_lock: asyncio.Lock | None = None

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **overrides: Any) -> AsyncEdgeClient:
        return cls(**_settings_kwargs(settings, overrides))

    @classmethod
    def for_sandbox(
        cls, base_url: str, *, authenticated: bool = True, datastream: int | str = 0, **overrides: Any
    ) -> AsyncEdgeClient:
        return cls(**_sandbox_kwargs(base_url, authenticated, datastream, overrides))

    async def token(self) -> AccessToken:
        token = self.tokens.get()
        if token is not None:
            return token
        if self._token_lock is None:
            self._token_lock = asyncio.Lock()
        async with self._token_lock:  # concurrent calls share one fetch
            token = self.tokens.get()
            if token is None:
                url, form, headers = self._token_request()
                started = time.perf_counter()
                try:
                    raw = await self._http.post(url, content=form, headers=headers)
                except httpx.TransportError as exc:
                    raise connection_error(exc, url, None) from exc
                token = self._token_answer(raw, started)
                self.tokens.put(token)
            return token

    async def interact(
        self,
        request: InteractRequest | None = None,
        *,
        raise_for_status: bool = True,
        request_id: str | None = None,
        **fields: Any,
    ) -> EdgeResponse:
        req = self._request(request, fields)
        url = self.url(request_id)
        body = req.body_bytes(self.version)
        attempt, refreshed = 0, False
        while True:
            attempt += 1
            token = await self.token() if self.credentials is not None else None
            started = time.perf_counter()
            try:
                raw = await self._http.post(url, content=body, headers=self.auth_headers(token))
            except httpx.TransportError as exc:
                error = self._connect_failed(exc, url, attempt)
                if error is not None:
                    raise error from exc
                await asyncio.sleep(self.retry.delay(attempt))
                continue
            if raw.status_code == 401 and token is not None and not refreshed:
                refreshed = True
                self.tokens.drop(token)
                attempt -= 1
                continue
            if attempt <= self.retry.max_retries and self.retry.retryable_status(raw.status_code):
                await asyncio.sleep(self.retry.delay(attempt, raw.headers.get("retry-after")))
                continue
            return self._finish(raw, started, req, attempt, raise_for_status)
