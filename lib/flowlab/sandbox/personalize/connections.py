"""Connections: call Sitecore data systems and destinations from the event loop, never from a worker (#11).

A connection is Sitecore's JSON (reference "sitecore-exports.md", "Connections"): ``request {requestType,
connectionUrl, requestBody?}``, ``urlParameters`` / ``inputMappings`` (``${key}`` placeholders in the URL and
the body), ``customHeaders``, ``auth``, ``outputMappings``, ``connectionTimeout`` / ``socketTimeout`` (ms).
Guest code runs in worker processes and must not wait on a network: when a decision model reaches a
connection node, the worker answers "needs connection N with these inputs" and the engine calls
:meth:`ConnectionCaller.call` here (aiohttp; the built-in mocks in process, over ASGI), then runs the model
again with the answer supplied (``engine.py``). Other requests keep flowing meanwhile.

* **Auth.** Sitecore's export never carries secrets and its OAuth keys are not public, so Flow Lab documents
  its own: ``{"authType": "NONE"}``; ``{"authType": "BASIC", "username", "password"}``;
  ``{"authType": "OAUTH2" (or "oauth"), "clientId", "clientSecret", "accessTokenUrl", "scope",
  "credentialsIn": "HEADER" | "BODY"}`` (client_credentials; the token is cached until ``expires_in``).
* **Templating.** ``${key}`` in the URL is percent-encoded; in the body, a placeholder inside a JSON string
  (``"${text}"``) is escaped as JSON string content, elsewhere it is the value's JSON (numbers, objects).
  A missing value is empty (``null`` outside quotes).
* **Answer.** The response JSON is the node's variable; a top-level JSON array is put under the connection's
  Array-typed output reference (``azureTranslation.result[0]…``). A timeout is ``Read timed out`` (or
  ``connect timed out``), as the reference records it; a 4xx/5xx answer or a body that is not JSON fails too.
* **Routing, offline by default.** Per connection (``--connection NAME_OR_REF=URL``, ``PUT
  /sandbox/connections/{ref}``) > every connection (``--connections-to URL``) > the built-in mock of a known
  system (MaxMind, Azure Translator, Sitecore Send, ``<mock>.flowlab.mock``; any DESTINATION: the capture) >
  loopback URLs as written. Anything else is refused with what to do: the sandbox never calls the internet
  unless told to. A route keeps the connection's path and query; OAuth token URLs follow the same route.
* **Secrets** (passwords, client secrets, tokens, ``apikey=``-style query values, key headers,
  Authorization) are masked in every request, answer and trace shown (:func:`mask_request`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import functools
import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, urlencode, urlsplit

from flowlab.sandbox.errors import BadRequest
from flowlab.sandbox.mocks import MockSystems
from flowlab.sandbox.personalize.dmn import MASK

if TYPE_CHECKING:  # imported where used: guest-code workers import this module (store.py) and never call
    import aiohttp
    import httpx

__all__ = [
    "AUTH_TYPES",
    "DEFAULT_TIMEOUT_MS",
    "KNOWN_SYSTEMS",
    "MAX_RESPONSE_BYTES",
    "MAX_TIMEOUT_MS",
    "CallOutcome",
    "ConnectionCaller",
    "Routes",
    "array_reference",
    "auth_kind",
    "build_request",
    "mask_headers",
    "mask_request",
    "mask_url",
    "rewrite_json_strings",
    "validate_connection",
]

#: ``connectionTimeout`` / ``socketTimeout`` when a connection gives none (what Sitecore's demo uses).
DEFAULT_TIMEOUT_MS: Final = 1000
MAX_TIMEOUT_MS: Final = 60_000
#: a system's answer above this fails the call (the sandbox keeps answers in traces; 1 MiB, like its bodies)
MAX_RESPONSE_BYTES: Final = 1024 * 1024
AUTH_TYPES: Final = ("NONE", "BASIC", "OAUTH2")
#: hosts of real systems the demo calls -> the mock that answers for them (``flowlab.sandbox.mocks``)
KNOWN_SYSTEMS: Final = {
    "geolite.info": "maxmind",
    "geoip.maxmind.com": "maxmind",
    "api.cognitive.microsofttranslator.com": "translator",
    "api.moosend.com": "send",
    "api.sitecoresend.io": "send",
}
_MOCK_SUFFIX: Final = ".flowlab.mock"
_MOCK_BASE: Final = "http://flowlab-sandbox/sandbox/mocks"
_METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE")
_PLACEHOLDER = re.compile(r"\$\{([^{}]*)\}")
_SECRET_KEYS = re.compile(r"pass(word)?|secret|token|api[-_]?key|credential|private", re.IGNORECASE)
_SECRET_HEADERS = re.compile(r"key|secret|token|auth|password|signature|cookie", re.IGNORECASE)
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&](?:[^=&#]*(?:key|secret|token|password|signature|sig)[^=&#]*)=)(?P<value>[^&#]*)",
    re.IGNORECASE,
)
_LOOPBACK: Final = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
_TOKEN_MARGIN_S: Final = 30.0


# ---- masking --------------------------------------------------------------------------------------------


def mask_url(url: str) -> str:
    """The URL with ``apikey=``-style query values and a ``user:password@`` part masked."""
    masked = _SECRET_QUERY.sub(lambda m: m.group("key") + (MASK if m.group("value") else ""), url)
    return re.sub(r"(?<=://)([^/@:]*):([^/@]*)@", lambda m: f"{m.group(1)}:{MASK}@", masked)


def mask_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers with Authorization, cookies and key/secret/token headers masked (kept readable otherwise)."""
    out = {}
    for name, value in headers.items():
        if _SECRET_HEADERS.search(name) and value:
            scheme = (
                value.split(" ", 1)[0] if name.lower() in ("authorization", "proxy-authorization") else ""
            )
            out[name] = f"{scheme} {MASK}" if scheme and " " in value else MASK
        else:
            out[name] = value
    return out


def rewrite_json_strings(body: str, replace: Callable[[str, str], str | None]) -> str:
    """A JSON body with each non-empty string value replaced where ``replace(key, value)`` gives a
    replacement (None: kept). A body that is not JSON comes back as it is."""
    try:
        data = json.loads(body)
    except ValueError:
        return body

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                new = replace(str(key), item) if isinstance(item, str) and item else None
                out[key] = walk(item) if new is None else new
            return out
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return json.dumps(walk(data), ensure_ascii=False)


def _mask_body(body: str | None) -> str | None:
    if body is None:
        return None
    return rewrite_json_strings(body, lambda key, _: MASK if _SECRET_KEYS.search(key) else None)


def mask_request(method: str, url: str, headers: Mapping[str, str], body: str | None) -> dict[str, Any]:
    """``{method, url, headers, body}`` as shown in traces and admin answers: secrets masked."""
    return {
        "method": method,
        "url": mask_url(url),
        "headers": mask_headers(headers),
        "body": _mask_body(body),
    }


# ---- definitions ----------------------------------------------------------------------------------------


def _problem(name: str, field_: str, what: str) -> BadRequest:
    return BadRequest(
        f"connection '{name}': field '{field_}' {what}",
        "a connection is Sitecore's connection JSON: {name, request: {requestType, connectionUrl, requestBody?}, "
        "auth: {authType: NONE | BASIC | OAUTH2, ...}, urlParameters, inputMappings, outputMappings, "
        "customHeaders, connectionTimeout, socketTimeout} (README, 'Importing real definitions')",
    )


def validate_connection(data: Any) -> dict[str, Any]:
    """A checked copy of a connection's JSON (with a ref); :class:`BadRequest` naming the field otherwise."""
    if not isinstance(data, Mapping):
        raise BadRequest("a connection must be a JSON object", f"got {type(data).__name__}")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _problem("?", "name", "must be a non-empty string")
    out = dict(data)
    ref = out.get("ref")
    if ref is None:
        out["ref"] = str(uuid.uuid4())
    elif not isinstance(ref, str) or not ref.strip() or len(ref) > 200 or "/" in ref:
        raise _problem(name, "ref", "must be a non-empty string of at most 200 characters without '/'")
    request = data.get("request")
    if not isinstance(request, Mapping):
        raise _problem(name, "request", "must be an object {requestType, connectionUrl, requestBody?}")
    method = request.get("requestType", "GET")
    if not isinstance(method, str) or method.upper() not in _METHODS:
        raise _problem(name, "request.requestType", f"must be one of {', '.join(_METHODS)}")
    url = request.get("connectionUrl")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        raise _problem(
            name, "request.connectionUrl", "must be an http(s) URL, e.g. https://api.example.com/v1/${id}"
        )
    if not isinstance(request.get("requestBody", ""), str | type(None)):
        raise _problem(name, "request.requestBody", "must be a string (the body, with ${key} placeholders)")
    auth = data.get("auth", {"authType": "NONE"})
    if not isinstance(auth, Mapping):
        raise _problem(name, "auth", 'must be an object such as {"authType": "NONE"}')
    kind = auth_kind(auth)
    if kind is None:
        raise _problem(name, "auth.authType", f'must be one of {", ".join(AUTH_TYPES)} (or "oauth")')
    texts = {
        "BASIC": ("username", "password"),
        "OAUTH2": ("clientId", "clientSecret", "accessTokenUrl", "scope"),
    }
    for key in texts.get(kind, ()):
        if not isinstance(auth.get(key, ""), str | type(None)):
            raise _problem(name, f"auth.{key}", "must be a string")
    if kind == "OAUTH2":
        token_url = auth.get("accessTokenUrl")
        if not isinstance(token_url, str) or urlsplit(token_url).scheme not in ("http", "https"):
            raise _problem(name, "auth.accessTokenUrl", "must be the token endpoint's https URL")
        if str(auth.get("credentialsIn") or "HEADER").upper() not in ("HEADER", "BODY"):
            raise _problem(name, "auth.credentialsIn", 'must be "HEADER" or "BODY"')
    for key in ("urlParameters", "inputMappings"):
        items = data.get(key, [])
        if not isinstance(items, list) or not all(
            isinstance(i, Mapping) and isinstance(i.get("key"), str) and i["key"] for i in items
        ):
            raise _problem(name, key, "must be a list of {key, label?, type?, exampleValue?, mapping?}")
    outputs = data.get("outputMappings", [])
    if not isinstance(outputs, list) or not all(
        isinstance(o, Mapping) and isinstance(o.get("outputReference"), str) for o in outputs
    ):
        raise _problem(name, "outputMappings", "must be a list of {outputReference, label?, type?}")
    headers = data.get("customHeaders", [])
    if not isinstance(headers, list) or not all(
        isinstance(h, Mapping) and isinstance(h.get("name"), str) and isinstance(h.get("value", ""), str)
        for h in headers
    ):
        raise _problem(name, "customHeaders", "must be a list of {name, value} strings")
    for key in ("connectionTimeout", "socketTimeout"):
        value = data.get(key, DEFAULT_TIMEOUT_MS)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TIMEOUT_MS:
            raise _problem(name, key, f"must be milliseconds, 1 to {MAX_TIMEOUT_MS:,}")
    return out


def auth_kind(auth: Mapping[str, Any]) -> str | None:
    """``NONE``, ``BASIC`` or ``OAUTH2`` for a connection's ``auth`` (``oauth`` and ``client_credentials``
    spellings included); None for an authType the sandbox does not know."""
    kind = str(auth.get("authType") or "NONE").strip().upper().replace(" ", "").replace("_", "")
    kind = {"OAUTH": "OAUTH2", "OAUTH20": "OAUTH2", "CLIENTCREDENTIALS": "OAUTH2"}.get(kind, kind)
    return kind if kind in AUTH_TYPES else None


def array_reference(connection: Mapping[str, Any]) -> str:
    """Where a top-level JSON array answer goes: the first Array-typed output reference (else ``result``)."""
    for item in connection.get("outputMappings") or []:
        if isinstance(item, Mapping) and str(item.get("type", "")).lower() == "array":
            return str(item.get("outputReference") or "result")
    return "result"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str | int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def build_request(
    connection: Mapping[str, Any], inputs: Mapping[str, Any]
) -> tuple[str, str, dict[str, str], str | None]:
    """(method, URL, headers, body) with ``${key}`` filled from ``inputs`` (no auth yet)."""
    request = connection.get("request") or {}
    method = str(request.get("requestType") or "GET").upper()
    url = _PLACEHOLDER.sub(lambda m: quote(_text(inputs.get(m.group(1).strip())), safe=""),
                           str(request.get("connectionUrl") or ""))  # fmt: skip
    template = request.get("requestBody")
    body: str | None = None
    if isinstance(template, str) and template and method != "GET":

        def fill(m: re.Match[str]) -> str:
            value = inputs.get(m.group(1).strip())
            quoted = (
                m.start() > 0 and template[m.start() - 1] == '"' and template[m.end() : m.end() + 1] == '"'
            )
            if quoted:
                return json.dumps(_text(value), ensure_ascii=False)[1:-1]
            return "null" if value is None else value if isinstance(value, str) else json.dumps(value)

        body = _PLACEHOLDER.sub(fill, template)
    headers = {
        str(h["name"]): str(h.get("value", ""))
        for h in connection.get("customHeaders") or []
        if isinstance(h, Mapping) and h.get("name")
    }
    headers.pop("Accept-Encoding", None)  # the client negotiates its own encodings
    if body is not None and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/json"
    return method, url, headers, body


# ---- routing --------------------------------------------------------------------------------------------


class Routes:
    """Where connections go: per-connection base URLs, one base for all, the mocks, or loopback as written."""

    def __init__(
        self, *, connections_to: str | None = None, overrides: Mapping[str, str] | None = None
    ) -> None:
        self.connections_to = _check_base(connections_to, "--connections-to") if connections_to else None
        #: base URL by connection ref or name (as given; matched case-insensitively on names)
        self.overrides: dict[str, str] = {}
        for key, url in (overrides or {}).items():
            self.set(key, url)

    def set(self, ref_or_name: str, base_url: str | None) -> None:
        """Route one connection to ``base_url`` (None or empty: back to the default)."""
        if base_url:
            self.overrides[ref_or_name] = _check_base(base_url, f"the route of '{ref_or_name}'")
        else:
            self.overrides.pop(ref_or_name, None)

    def override_for(self, connection: Mapping[str, Any]) -> str | None:
        ref, name = str(connection.get("ref") or ""), str(connection.get("name") or "").strip().lower()
        if ref and ref in self.overrides:
            return self.overrides[ref]
        for key, url in self.overrides.items():
            if key.strip().lower() == name:
                return url
        return None

    def route(self, connection: Mapping[str, Any], url: str) -> tuple[str, str]:
        """(URL to call, how: override | connections-to | mock | loopback); ValueError says why it is refused."""
        override = self.override_for(connection)
        if override:
            return _rebase(override, url), "override"
        if self.connections_to:
            return _rebase(self.connections_to, url), "connections-to"
        host = (urlsplit(url).hostname or "").lower()
        mock = KNOWN_SYSTEMS.get(host)
        if mock is None and host.endswith(_MOCK_SUFFIX):
            mock = host[: -len(_MOCK_SUFFIX)]
        if mock is None and str(connection.get("systemType") or "").upper() == "DESTINATION":
            mock = "capture"
        if mock is not None:
            return _rebase(f"{_MOCK_BASE}/{mock}", url), "mock"
        if host in _LOOPBACK or host.startswith("127."):
            return url, "loopback"
        raise ValueError(
            f"the sandbox does not call {host} (offline by default): route the connection with "
            f'--connection "{connection.get("name")}=URL", --connections-to URL or PUT '
            f'/sandbox/connections/{connection.get("ref")} {{"baseUrl": URL}} (the real URL itself allows it)'
        )

    def describe(self, connection: Mapping[str, Any]) -> dict[str, Any]:
        """How this connection is routed now (for the admin API)."""
        url = str((connection.get("request") or {}).get("connectionUrl") or "")
        try:
            target, how = self.route(connection, url)
        except ValueError as exc:
            return {"via": "refused", "url": None, "reason": str(exc)}
        return {"via": how, "url": mask_url(target)}


def _check_base(url: str, what: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{what}: {url!r} is not an http(s) base URL such as http://127.0.0.1:9000")
    return url.strip().rstrip("/")


def _rebase(base: str, url: str) -> str:
    """``base`` + the URL's path and query (a route keeps what the connection asks for)."""
    parts = urlsplit(url)
    return base.rstrip("/") + (parts.path or "") + (f"?{parts.query}" if parts.query else "")


# ---- calling --------------------------------------------------------------------------------------------


@dataclass
class CallOutcome:
    """One connection call: what was sent (masked), what came back, and what the node's variable holds."""

    request: dict[str, Any]
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    value: Any = None
    error: str | None = None
    latency_ms: float = 0.0
    via: str = ""

    def for_worker(self) -> dict[str, Any]:
        return {"error": self.error} if self.error else {"value": self.value}

    def outputs(self, connection: Mapping[str, Any]) -> dict[str, Any]:
        """What the ``outputMappings`` document, read from the answer (top-level keys)."""
        value = self.value if isinstance(self.value, Mapping) else {}
        return {
            str(o["outputReference"]): value.get(str(o["outputReference"]))
            for o in connection.get("outputMappings") or []
            if isinstance(o, Mapping) and o.get("outputReference")
        }


@dataclass(frozen=True)
class _Reply:
    """What came back from a system: status, headers (last value per name) and the body's text."""

    status: int
    headers: dict[str, str]
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class _TooLarge(Exception):
    """The system answered more than ``MAX_RESPONSE_BYTES``; the message says so."""


class _Pool:
    """One event loop's clients: aiohttp for systems on the network, httpx over ASGI for the built-in mocks.

    aiohttp directly, not httpx on an aiohttp transport: a call costs the loop about a third as much
    (``bench/connections.py``), and a connection-bound flow is limited by exactly that loop. The mocks live
    in this process and are reached without a socket.
    """

    def __init__(self, mocks: MockSystems) -> None:
        self.loop = asyncio.get_running_loop()
        self._mocks = mocks
        self._session: aiohttp.ClientSession | None = None
        self._asgi: httpx.AsyncClient | None = None

    async def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        connect_s: float,
        read_s: float,
    ) -> _Reply:
        if url.startswith(_MOCK_BASE):
            return await self._send_mock(method, url, headers, body, read_s)
        import aiohttp

        if self._session is None:
            connector = aiohttp.TCPConnector(limit=200, limit_per_host=0, ttl_dns_cache=300)
            # no cookie jar: one guest's cookies must never ride along on another guest's call
            self._session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                                  trust_env=False)  # fmt: skip
        # sock_read bounds each wait for data; total bounds a system that drips its answer byte by byte
        timeout = aiohttp.ClientTimeout(
            total=connect_s + read_s + 0.5, connect=connect_s, sock_connect=connect_s, sock_read=read_s
        )
        async with self._session.request(
            method, url, headers=headers, data=body, timeout=timeout, allow_redirects=False
        ) as response:
            raw = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                raw += chunk
                if len(raw) > MAX_RESPONSE_BYTES:
                    raise _TooLarge(
                        f"the response is larger than the sandbox's limit of {MAX_RESPONSE_BYTES:,} bytes "
                        f"(HTTP {response.status})"
                    )
            text = raw.decode(response.charset or "utf-8", errors="replace")
            return _Reply(response.status, dict(response.headers), text)

    async def _send_mock(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                         read_s: float) -> _Reply:  # fmt: skip
        import httpx

        if self._asgi is None:
            self._asgi = httpx.AsyncClient(transport=httpx.ASGITransport(app=self._mocks.asgi), trust_env=False,
                                           follow_redirects=False)  # fmt: skip
        # the in-process mocks have no sockets, so their latency knob is bounded here
        async with asyncio.timeout(read_s):
            response = await self._asgi.request(method, url, headers=dict(headers), content=body)
        # multi_items(), not dict(headers): httpx's Headers.__getitem__ scans every header per key
        return _Reply(response.status_code, dict(response.headers.multi_items()), response.text)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._asgi is not None:
            await self._asgi.aclose()
        self._session = self._asgi = None


class ConnectionCaller:
    """Performs connection calls for one sandbox: routing, auth (OAuth tokens cached), timeouts, masking."""

    def __init__(self, *, mocks: MockSystems | None = None, routes: Routes | None = None) -> None:
        self.mocks = mocks or MockSystems()
        self.routes = routes or Routes()
        self._pools: dict[int, _Pool] = {}
        self._tokens: dict[str, tuple[str, float]] = {}
        self._locks: dict[tuple[int, str], asyncio.Lock] = {}
        #: OAuth token requests made (tests check that tokens are cached)
        self.token_requests = 0

    def _pool(self) -> _Pool:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(id(loop))
        if pool is None or pool.loop is not loop or loop.is_closed():
            pool = _Pool(self.mocks)
            self._pools = {k: v for k, v in self._pools.items() if not v.loop.is_closed()}
            self._pools[id(loop)] = pool
        return pool

    def call_sync(self, connection: Mapping[str, Any], inputs: Mapping[str, Any]) -> CallOutcome:
        """:meth:`call` for a thread without an event loop (``Engine.execute``)."""

        async def once() -> CallOutcome:
            try:
                return await self.call(connection, inputs)
            finally:
                pool = self._pools.pop(id(asyncio.get_running_loop()), None)
                if pool is not None:
                    await pool.aclose()

        return asyncio.run(once())

    async def call(self, connection: Mapping[str, Any], inputs: Mapping[str, Any]) -> CallOutcome:
        """Call the connection with these input values; never raises for the connection's own failures."""
        method, url, headers, body = build_request(connection, inputs)
        outcome = CallOutcome(request={})  # masked once the final URL and headers are known
        try:
            target, outcome.via = self.routes.route(connection, url)
        except ValueError as exc:
            outcome.request = mask_request(method, url, headers, body)
            outcome.error = str(exc)
            return outcome
        connect_s = _timeout_s(connection.get("connectionTimeout"))
        read_s = _timeout_s(connection.get("socketTimeout"))
        started = time.perf_counter()
        try:
            auth = connection.get("auth") or {}
            kind = auth_kind(auth) if isinstance(auth, Mapping) else "NONE"
            if kind == "BASIC":
                pair = f"{auth.get('username') or ''}:{auth.get('password') or ''}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
            elif kind == "OAUTH2":
                token = await self._token(connection, auth, outcome.via, connect_s, read_s)
                headers["Authorization"] = f"Bearer {token}"
            outcome.request = mask_request(method, target, headers, body)
            reply = await self._pool().send(
                method, target, headers, body.encode() if body is not None else None, connect_s, read_s
            )
        except (_TokenFailed, _TooLarge) as exc:
            outcome.request = outcome.request or mask_request(method, target, headers, body)
            outcome.error = str(exc)
        except _failures() as exc:
            outcome.request = outcome.request or mask_request(method, target, headers, body)
            outcome.error = _describe(exc)
        else:
            outcome.status = reply.status
            outcome.headers = mask_headers(reply.headers)
            text = reply.text
            try:
                parsed: Any = json.loads(text) if text.strip() else None
            except ValueError:
                parsed = None
                if reply.ok:
                    outcome.error = f"the response is not JSON (HTTP {reply.status}): {text[:120]!r}"
            outcome.body = parsed if parsed is not None else text
            if not reply.ok:
                outcome.error = f"HTTP {reply.status} from the connection"
            elif outcome.error is None:
                outcome.value = {array_reference(connection): parsed} if isinstance(parsed, list) else parsed
        outcome.latency_ms = round((time.perf_counter() - started) * 1000, 3)
        return outcome

    async def _token(
        self,
        connection: Mapping[str, Any],
        auth: Mapping[str, Any],
        via: str,
        connect_s: float,
        read_s: float,
    ) -> str:
        """An OAuth 2.0 client_credentials token, from the cache until it expires."""
        token_url = str(auth.get("accessTokenUrl") or "")
        client_id, secret = str(auth.get("clientId") or ""), str(auth.get("clientSecret") or "")
        scope = str(auth.get("scope") or "")
        in_body = str(auth.get("credentialsIn") or "HEADER").upper() == "BODY"
        key = hashlib.sha256(
            "\x1f".join([token_url, client_id, secret, scope, str(in_body)]).encode()
        ).hexdigest()
        cached = self._tokens.get(key)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        lock = self._locks.setdefault((id(asyncio.get_running_loop()), key), asyncio.Lock())
        async with lock:
            cached = self._tokens.get(key)
            if cached and cached[1] > time.monotonic():
                return cached[0]
            if via in ("override", "connections-to"):
                target = _rebase(
                    self.routes.override_for(connection) or self.routes.connections_to or "", token_url
                )
            else:
                host = (urlsplit(token_url).hostname or "").lower()
                if urlsplit(token_url).scheme != "https" and not (
                    host in _LOOPBACK or host.startswith("127.")
                ):
                    raise _TokenFailed("OAuth 2.0: the accessTokenUrl must be https")
                if not (host in _LOOPBACK or host.startswith("127.")):
                    raise _TokenFailed(
                        f"OAuth 2.0: the sandbox does not call {host} (offline by default); route the connection"
                    )
                target = token_url
            form = {"grant_type": "client_credentials"}
            if scope:
                form["scope"] = scope
            headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
            if in_body:
                form.update(client_id=client_id, client_secret=secret)
            else:
                pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
            self.token_requests += 1
            reply = await self._pool().send(
                "POST", target, headers, urlencode(form).encode(), connect_s, read_s
            )
            try:
                data = json.loads(reply.text)
            except ValueError:
                data = None
            if not reply.ok or not isinstance(data, dict) or not isinstance(data.get("access_token"), str):
                raise _TokenFailed(f"OAuth 2.0 token request failed: HTTP {reply.status} from the token URL")
            expires = data.get("expires_in", 3600)
            seconds = (
                float(expires)
                if isinstance(expires, int | float) and not isinstance(expires, bool)
                else 3600.0
            )
            self._tokens[key] = (
                data["access_token"],
                time.monotonic() + max(0.0, seconds - min(_TOKEN_MARGIN_S, seconds / 10)),
            )
            return str(data["access_token"])

    async def aclose(self) -> None:
        for pool in list(self._pools.values()):
            if pool.loop is asyncio.get_running_loop():
                await pool.aclose()
        self._pools.clear()

    def close_from_outside(self, timeout: float = 5.0) -> None:
        """Close every pool on its own (running) loop, from another thread: the server calls this before it
        stops, since a pool left open on a stopped loop is an unclosed aiohttp session when it is collected."""
        for pool in list(self._pools.values()):
            if pool.loop.is_running() and not pool.loop.is_closed():
                with contextlib.suppress(Exception):  # a pool that cannot close cleanly still gets dropped
                    asyncio.run_coroutine_threadsafe(pool.aclose(), pool.loop).result(timeout)
        self._pools.clear()


class _TokenFailed(Exception):
    """The OAuth token could not be had; the message says why (no secrets in it)."""


def _timeout_s(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return DEFAULT_TIMEOUT_MS / 1000
    return min(float(value), MAX_TIMEOUT_MS) / 1000


@functools.cache
def _failures() -> tuple[type[BaseException], ...]:
    """What a failed call raises (imported on first use: guest-code workers import this module too)."""
    import aiohttp
    import httpx

    return (httpx.HTTPError, aiohttp.ClientError, OSError, TimeoutError)


def _describe(exc: BaseException) -> str:
    """Java's words for a failed call, as Sitecore records them (``Read timed out``)."""
    import aiohttp
    import httpx

    if isinstance(exc, httpx.ConnectTimeout | aiohttp.ConnectionTimeoutError):
        return "connect timed out"
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return "Read timed out"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == errno.ECONNREFUSED:
            return "Connection refused"
        if isinstance(cause, ConnectionResetError | aiohttp.ServerDisconnectedError):
            return "Connection reset"
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.ConnectError | aiohttp.ClientConnectorError):
        return f"connect failed: {exc}" if str(exc) else "connect failed"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
