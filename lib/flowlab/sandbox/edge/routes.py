"""The Edge Network's HTTP side in the one sandbox server: IMS, ``/ee/…/interact`` and ``/sandbox/edge/…``.

``POST /ee[/{hint}]/v2/interact`` and ``/v1/interact`` are served as raw ASGI by :class:`EdgeGateway` (like
the callFlows fast path: batches hammer them, reference §7 guardrail 1,500 lookups/s), following the
validation order of reference §10, each failure an RFC 7807 ``application/problem+json`` body whose
``type`` ends in its ``EXEG-…`` code (§4.1, §4.2):

1. Content type (0106-400 missing, 0111-415 unsupported), 2. empty body (0109-408), 3. over 64 KB
(0112-413; read no further), 4. invalid JSON (0101-400), 5. datastream missing (0002-400), unknown (0003-400)
or disabled (0004-422), 6. ``Authorization`` given but not a good bearer token (0500/0502/0503-401),
7. no ``event`` (v2) or ``events`` (v1) (0103-400), 8. no primary identity (0306-400), 9. more than one
(0104-422 with a report).

A request **without** ``Authorization`` is the unauthenticated edge domain (``edge.adobedc.net``): audience
membership only, never attributes (§1.1, seed 002). The envelope is ``{requestId, handle}``; ``requestId``
is the caller's (``?requestId=`` or ``x-request-id``) or a UUID, plus ``-`` and 16 hex (§0.6); handles in
§10's order: ``identity:result``, ``activation:pull`` (``eventIndex``), ``locationHint:result``,
``state:store``; headers of §3.1/§10. The fault knobs (``faults.py``) apply as for callFlows, in Edge
shape; ``207`` answers with an upstream ``errors[]`` (§4.1, §10 "Fault injection"), and more than
``Guardrail.limit`` lookups a second on a datastream get 429 (§7; the code ``EXEG-EMUL-429`` is marked
synthetic, as §4.2 advises, since Adobe documents none).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, Final
from urllib.parse import parse_qs

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse

from flowlab.errors import FlowLabError
from flowlab.sandbox.edge.ims import TOKEN_PATH, Ims, ImsError, TokenProblem
from flowlab.sandbox.errors import BadRequest, NotFound
from flowlab.sandbox.faults import Knobs, ResetConnection
from flowlab.sandbox.openapi import ADMIN_ERRORS, ADMIN_WRITE_ERRORS, errors, json_body
from flowlab.sandbox.workers import WorkerPool, WorkerTimeout

if TYPE_CHECKING:
    from flowlab.sandbox.edge.tenant import Datastream, EdgeTenant

__all__ = [
    "LOCATION_HINTS",
    "MAX_EDGE_BODY_BYTES",
    "EdgeGateway",
    "EdgeService",
    "Guardrail",
    "Problem",
    "interact_path",
]

#: reference §2.2 / §7: the interact body limit (8 fragments of 8 KB)
MAX_EDGE_BODY_BYTES: Final = 64 * 1024
#: reference §2.1: valid ``EdgeNetwork`` location hints
LOCATION_HINTS: Final = ("or2", "va6", "irl1", "ind1", "jpn3", "sgp3", "aus3")
_DEFAULT_HINT: Final = "or2"
_INTERACT = re.compile(r"^/ee(?:/(?P<hint>[A-Za-z0-9]{1,16}))?/(?P<version>v1|v2)/interact$")
_NOT_HEADER_SAFE: Final = re.compile(r"[^\x21-\x7e]")
_READABLE_TYPES: Final = frozenset({"application/json", "text/plain", "text/javascript"})
_ERRORS_BASE: Final = "https://ns.adobe.com/aep/errors/"
#: the profile-lookup upstream's name is not documented (reference §11.8): an emulator's own name [INF]
UPSTREAM_SERVICE: Final = "com.adobe.experience.platform.edgeprofile"
_STATE_MAX_AGE: Final = {"identity": 34128000, "cluster": 1800}  # reference §3.2
_JSON_TYPE: Final = b"application/json;charset=utf-8"
_PROBLEM_TYPE: Final = b"application/problem+json"
_HANG_LIMIT_S: Final = 600.0


def interact_path(path: str) -> tuple[str, str | None] | None:
    """``(version, hint)`` for an interact path (``/ee[/{hint}]/v1|v2/interact``), else None."""
    match = _INTERACT.match(path)
    return (match["version"], match["hint"]) if match else None


class Problem(Exception):
    """A fatal Edge error (reference §4.1): status from its ``EXEG-NNNN-SSS`` code, a title and a detail."""

    def __init__(self, code: str, title: str, detail: str, *, errors: list[str] | None = None,
                 headers: Iterable[tuple[bytes, bytes]] = ()) -> None:  # fmt: skip
        super().__init__(detail)
        self.code = code
        self.status = int(code.rsplit("-", 1)[1])
        self.title = title
        self.detail = detail
        self.errors = errors
        self.headers = list(headers)

    def body(self, request_id: str, org_id: str, config_id: str | None) -> bytes:
        report: dict[str, Any] = {"requestId": request_id, "orgId": org_id}
        if config_id:
            report["configId"] = config_id
        if self.errors:
            report["errors"] = self.errors
        return orjson.dumps({"type": _ERRORS_BASE + self.code, "status": self.status, "title": self.title,
                             "detail": self.detail, "report": report})  # fmt: skip


def _invalid(code: str, detail: str, **kwargs: Any) -> Problem:
    titles = {"0101-400": "Invalid JSON request", "0102-400": "Invalid request field",
              "0103-400": "Missing required value", "0104-422": "Unprocessable entity",
              "0106-400": "Invalid Content-Type header", "0109-408": "Empty request",
              "0111-415": "Invalid request", "0112-413": "Invalid request",
              "0002-400": "Missing datastream parameter", "0003-400": "Invalid datastream ID",
              "0004-422": "Datastream disabled", "0306-400": "No primary identity set in request (event)"}  # fmt: skip
    return Problem(f"EXEG-{code}", titles[code], detail, **kwargs)


@dataclass
class Guardrail:
    """Profile lookups per datastream per window: reference §7, 1,500 requests/s (§10 "Rate limiting").

    Fixed windows on the real (monotonic) clock; ``limit`` and ``window_s`` are settable so a test can
    reach the limit without 1,500 requests.
    """

    limit: int = 1500
    window_s: float = 1.0
    _windows: dict[str, tuple[float, int]] = field(default_factory=dict)

    def take(self, datastream_id: str) -> int:
        """Count one lookup; the lookups left in this window, or raise the 429 ``Problem``."""
        now = time.monotonic()
        start, used = self._windows.get(datastream_id, (now, 0))
        if now - start >= self.window_s:
            start, used = now, 0
        if used >= self.limit:
            retry = max(1, math.ceil(start + self.window_s - now))
            raise Problem("EXEG-EMUL-429", "Too many requests",
                          f"More than {self.limit:,} profile lookups in {self.window_s:g} s on datastream "
                          f"{datastream_id} (the Custom Personalization guardrail, reference §7). Slow down "
                          "and retry after Retry-After seconds. (EMUL: Adobe documents no code for 429.)",
                          headers=[(b"retry-after", str(retry).encode())])  # fmt: skip
        self._windows[datastream_id] = (start, used + 1)
        return self.limit - used - 1

    def reset(self) -> None:
        self._windows.clear()


@dataclass
class _Call:
    """One interact request as read off the wire."""

    version: str
    hint: str | None
    query: dict[str, str]
    headers: dict[bytes, bytes]
    body: bytes
    request_id: str = ""
    config_id: str | None = None
    fault: str | None = None  # "207": the lookup upstream fails (decided with the other fault knobs)


class EdgeService:
    """The Edge tenant behind HTTP: IMS tokens, the guardrail, the knobs and the interact pipeline."""

    def __init__(self, tenant: EdgeTenant, knobs: Knobs, pool: Callable[[], WorkerPool]) -> None:
        self.tenant = tenant
        self.knobs = knobs
        self.pool = pool
        self.ims = Ims(now=lambda: tenant.clock.now_ms() / 1000)
        self.guardrail = Guardrail()

    # ---- admin ------------------------------------------------------------------------------------

    def info(self, base_url: str) -> dict[str, Any]:
        """``GET /sandbox/info``'s ``edge`` entry: org, datastreams, destinations and the demo credential."""
        tenant = self.tenant
        return {
            "orgId": tenant.org_id,
            "datastreams": [{"id": d.id, "name": d.name, "enabled": d.enabled,
                             "edgeSegmentation": d.edge_segmentation,
                             "personalizationDestinations": d.personalization_destinations}
                            for d in _datastreams(tenant)],
            "destinations": [{"destinationId": d.destination_id, "alias": d.alias,
                              "withAttributes": d.with_attributes, "attributes": list(d.attributes)}
                             for d in tenant.destinations()],
            "credentials": {"clientId": self.ims.client_id, "clientSecret": self.ims.client_secret,
                            "tokenUrl": base_url.rstrip("/") + TOKEN_PATH, "scope": self.ims.scope},
            "now": tenant.clock.iso(),
        }  # fmt: skip

    def reset(self) -> None:
        self.tenant.reset()
        self.guardrail.reset()

    # ---- interact ---------------------------------------------------------------------------------

    async def interact(self, call: _Call) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """One interact call to ``(status, headers, body)``; never raises for bad input."""
        given = call.query.get("requestId") or call.headers.get(b"x-request-id", b"").decode("latin-1")
        # Echoed in the x-request-id header: only visible ASCII survives (a control character or a non-Latin
        # letter there is an invalid header, and the connection would drop instead of answering).
        given = _NOT_HEADER_SAFE.sub("", given)[:128]
        call.request_id = f"{given or uuid.uuid4()}-{secrets.token_hex(8)}"
        call.config_id = (call.query.get("datastreamId") or call.query.get("dataStreamId")
                          or call.query.get("configId"))  # fmt: skip
        try:
            return await self._interact(call)
        except Problem as problem:
            body = problem.body(call.request_id, self.tenant.org_id, call.config_id)
            headers = [(b"content-type", _PROBLEM_TYPE), (b"x-request-id", call.request_id.encode()),
                       *problem.headers]  # fmt: skip
            return problem.status, headers, body

    async def _interact(self, call: _Call) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        document = _read_body(call)
        datastream = self._datastream(call)
        authenticated = self._authenticate(call.headers.get(b"authorization"))
        events = _events(call.version, document)
        identities = [_primary_identity(event, index, len(events) > 1) for index, event in enumerate(events)]
        remaining = self.guardrail.limit
        handles: list[dict[str, Any]] = []
        if _wants_ecid(document, events[0]):
            handles.append({"type": "identity:result", "payload": [
                {"id": _ecid(events[0], identities[0]), "namespace": {"code": "ECID"}}]})  # fmt: skip
        errors: list[dict[str, Any]] = []
        for index, (event, identity) in enumerate(zip(events, identities, strict=True)):
            if datastream.personalization_destinations:
                remaining = self.guardrail.take(datastream.id)
            xdm: dict[str, Any] = event["xdm"] if isinstance(event.get("xdm"), dict) else {}
            try:
                payload = await self._lookup(datastream, identity, xdm, authenticated)
            except FlowLabError as exc:  # the audience rules ran past their limit or crashed their worker
                errors.append(_upstream("EXEG-0200-504" if isinstance(exc, WorkerTimeout) else "EXEG-0202-502",
                                        index, f"audience evaluation failed: {exc}"))  # fmt: skip
                continue
            if not datastream.personalization_destinations:
                continue
            if call.fault == "207":
                errors.append(_upstream("EXEG-0201-503", index, "injected by the sandbox's faults knob"))
                continue
            handles.append({"type": "activation:pull", "payload": payload or [], "eventIndex": index})
        hint = (call.hint or "").lower() if (call.hint or "").lower() in LOCATION_HINTS else _DEFAULT_HINT
        handles.append({"type": "locationHint:result",
                        "payload": [{"scope": "EdgeNetwork", "hint": hint, "ttlSeconds": 1800}]})  # fmt: skip
        handles.append({"type": "state:store", "payload": self._state(identities[0], events[0], hint)})
        envelope: dict[str, Any] = {"requestId": call.request_id, "handle": handles}
        if errors:
            envelope["errors"] = errors
        headers = [
            (b"content-type", _JSON_TYPE),
            (b"x-request-id", call.request_id.encode()),
            (b"x-adobe-edge", f"{hint.upper()};9".encode()),
            (b"x-rate-limit-remaining", str(remaining).encode()),
            (b"cache-control", b"no-cache, no-store, max-age=0, no-transform, private"),
        ]
        return (207 if errors else 200), headers, orjson.dumps(envelope)

    async def _lookup(
        self, datastream: Datastream, identity: tuple[str, str], xdm: dict[str, Any], authenticated: bool
    ) -> list[dict[str, Any]] | None:
        """``EdgeTenant.lookup`` with its audience rules run in the worker pool (guest code, issue #8)."""
        job = self.tenant.begin_lookup(datastream, identity, xdm, authenticated=authenticated)
        if job is None:
            return None
        result = await self.pool().run(job.task, job.args, keys=job.keys, provide=job.provide)
        return self.tenant.finish_lookup(job, result)

    def _datastream(self, call: _Call) -> Datastream:
        name = "configId" if call.version == "v1" else "datastreamId"
        if not call.config_id:
            raise _invalid("0002-400", f"The required '{name}' parameter is missing. Add "
                           f"?{name}=<datastream id> (GET /sandbox/info lists them) and try again.")  # fmt: skip
        datastream = self.tenant.datastream(call.config_id)
        if datastream is None:
            raise _invalid("0003-400", f"The datastream '{call.config_id[:80]}' does not exist. Use one of "
                           "the ids that GET /sandbox/info lists under edge.datastreams.")  # fmt: skip
        if not datastream.enabled:
            raise _invalid("0004-422", f"The datastream '{datastream.id}' is disabled.")
        return datastream

    def _authenticate(self, authorization: bytes | None) -> bool:
        if authorization is None:
            return False  # the unauthenticated edge domain: audiences only (reference §1.1)
        try:
            self.ims.check(authorization.decode("latin-1"))
        except TokenProblem as problem:
            raise Problem(problem.code, problem.title, problem.detail) from None
        return True

    def _state(self, identity: tuple[str, str], event: dict[str, Any], hint: str) -> list[dict[str, Any]]:
        prefix = "kndctr_" + self.tenant.org_id.replace("@", "_")
        value = orjson.dumps({"ecid": _ecid(event, identity)})
        return [
            {"key": f"{prefix}_identity", "value": _b64(value), "maxAge": _STATE_MAX_AGE["identity"]},
            {"key": f"{prefix}_cluster", "value": hint, "maxAge": _STATE_MAX_AGE["cluster"]},
        ]


def _datastreams(tenant: EdgeTenant) -> list[Datastream]:
    """Every datastream of the tenant (``EdgeTenant.datastreams()`` when the core offers it)."""
    listing = getattr(tenant, "datastreams", None)
    return list(listing()) if callable(listing) else []


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _upstream(code: str, index: int, cause: str) -> dict[str, Any]:
    """A non-fatal upstream error for ``errors[]`` (reference §4.1: it makes the answer a 207)."""
    title = {
        "EXEG-0200-504": f"The '{UPSTREAM_SERVICE}' service call has timed out.",
        "EXEG-0201-503": f"The '{UPSTREAM_SERVICE}' service is temporarily unable to serve this request. "
        "Please try again later.",
        "EXEG-0202-502": f"The '{UPSTREAM_SERVICE}' service failed to process this request.",
    }[code]
    return {"type": _ERRORS_BASE + code, "status": int(code[-3:]), "title": title,
            "report": {"eventIndex": index, "cause": {"message": cause}}}  # fmt: skip


def _read_body(call: _Call) -> Any:
    """Steps 1–4 of reference §10 (the size was capped while reading)."""
    content_type = call.headers.get(b"content-type", b"").decode("latin-1")
    media = content_type.split(";")[0].strip().lower()
    if not media:
        raise _invalid("0106-400", "The Content-Type header is missing. Send Content-Type: application/json.")
    if media not in _READABLE_TYPES:
        why = " (the sandbox reads JSON only, not Smile)" if media == "application/x-jackson-smile" else ""
        raise _invalid("0111-415", f"The Content-Type '{media[:80]}' is not supported{why}. Send "
                       "application/json (text/plain and text/javascript carrying JSON work too).")  # fmt: skip
    if not call.body.strip():
        raise _invalid("0109-408", 'The request body is empty. Send {"event": {"xdm": {...}}}.')
    if len(call.body) > MAX_EDGE_BODY_BYTES:
        raise _too_large()
    try:
        document = orjson.loads(call.body)
    except orjson.JSONDecodeError as exc:
        raise _invalid("0101-400", f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(document, dict):
        raise _invalid("0101-400", 'The request body must be a JSON object, e.g. {"event": {"xdm": {...}}}.')
    return document


def _too_large() -> Problem:
    return _invalid("0112-413", f"The request body is over the maximum of {MAX_EDGE_BODY_BYTES:,} bytes "
                    "(64 KB). Send less data in the event.")  # fmt: skip


def _events(version: str, document: dict[str, Any]) -> list[dict[str, Any]]:
    """Step 7: v2 takes one ``event``, v1 a non-empty ``events`` list (reference §2.1)."""
    events: Any
    if version == "v2":
        event = document.get("event")
        if event is None:
            raise _invalid("0103-400", "The required field 'event' is missing. Send {\"event\": {\"xdm\": {"
                           "\"identityMap\": {...}}}}.")  # fmt: skip
        events = [event]
        path = "event"
    else:
        events = document.get("events")
        if not events:
            raise _invalid("0103-400", "The required field 'events' is missing or empty (v1 interact takes "
                           "{\"events\": [{\"xdm\": {...}}]}).")  # fmt: skip
        if not isinstance(events, list):
            raise _invalid("0102-400", "The field 'events' must be a list of events.")
        path = "events[]"
    for event in events:
        if not isinstance(event, dict):
            raise _invalid("0102-400", f"The field '{path}' must be an object with 'xdm'.")
        if "xdm" in event and not isinstance(event["xdm"], dict):
            raise _invalid("0102-400", f"The field '{path}.xdm' must be an object.")
    checked: list[dict[str, Any]] = events
    return checked


def _primary_identity(event: dict[str, Any], index: int, many: bool) -> tuple[str, str]:
    """Steps 8–9: exactly one identity across all namespaces has ``primary: true`` (reference §2.3)."""
    where = f"events[{index}]" if many else "event"
    identity_map = (event.get("xdm") or {}).get("identityMap")
    if identity_map is not None and not isinstance(identity_map, dict):
        raise _invalid("0102-400", f"The field '{where}.xdm.identityMap' must be an object of namespace: "
                       "[{id, primary}] lists.")  # fmt: skip
    primaries: list[tuple[str, str]] = []
    for namespace, entries in (identity_map or {}).items():
        if not isinstance(entries, list):
            raise _invalid("0102-400", f"The field '{where}.xdm.identityMap.{namespace[:40]}' must be a list "
                           "of {id, primary} objects.")  # fmt: skip
        for position, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"]:
                raise _invalid("0102-400", f"The field '{where}.xdm.identityMap.{namespace[:40]}[{position}]"
                               ".id' must be a non-empty string.")  # fmt: skip
            if entry.get("primary") is True:
                primaries.append((namespace, entry["id"]))
    if not primaries:
        raise _invalid("0306-400", "No primary identity found in the input event. Mark exactly one identity "
                       f"in {where}.xdm.identityMap with \"primary\": true and try again.")  # fmt: skip
    if len(primaries) > 1:
        named = ", ".join(namespace for namespace, _ in primaries)
        raise _invalid("0104-422", "Invalid request (report attached). Please check your input and try again.",
                       errors=[f"More than one primary identity in {where}.xdm.identityMap ({named}): mark "
                               "exactly one with \"primary\": true"])  # fmt: skip
    return primaries[0]


def _wants_ecid(document: dict[str, Any], event: dict[str, Any]) -> bool:
    """Reference §10: ``identity:result`` when ``query.identity.fetch`` has ECID or no ECID was sent."""
    query = document.get("query")
    fetch = query.get("identity", {}).get("fetch") if isinstance(query, dict) and isinstance(
        query.get("identity"), dict) else None  # fmt: skip
    if isinstance(fetch, list) and "ECID" in fetch:
        return True
    identity_map = (event.get("xdm") or {}).get("identityMap") or {}
    return "ECID" not in identity_map


def _ecid(event: dict[str, Any], identity: tuple[str, str]) -> str:
    """The request's ECID, or a stable 38-digit one derived from the primary identity (reference §8.2)."""
    sent = ((event.get("xdm") or {}).get("identityMap") or {}).get("ECID")
    if isinstance(sent, list) and sent and isinstance(sent[0], dict) and isinstance(sent[0].get("id"), str):
        return str(sent[0]["id"])
    digest = hashlib.sha256(f"{identity[0]}\0{identity[1]}".encode()).digest()
    return str(int.from_bytes(digest[:16]) % 10**38).zfill(38)


class EdgeGateway:
    """Raw ASGI for ``POST /ims/token/v3`` and ``POST /ee/…/interact``; everything else passes through.

    It sits outside ``limits.BodyLimit`` so an oversized body gets the Edge's own 413 (EXEG-0112-413) and
    is never read past 64 KB, and applies the latency and fault knobs itself, in Edge shape.
    """

    def __init__(self, app: Any, edge: EdgeService) -> None:
        self.app = app
        self.edge = edge

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == TOKEN_PATH:
            await self._token(scope, receive, send)
            return
        found = interact_path(path)
        if found is None:
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        call = _Call(found[0], found[1], query, headers, b"")
        if await self._faulted(call, receive, send):
            return
        body, too_large = await _read(receive, headers, MAX_EDGE_BODY_BYTES)
        call.body = body
        if too_large and _readable(headers):
            call.request_id = f"{uuid.uuid4()}-{secrets.token_hex(8)}"
            problem = _too_large()
            payload = problem.body(call.request_id, self.edge.tenant.org_id, query.get("datastreamId"))
            await _answer(send, 413, [(b"content-type", _PROBLEM_TYPE), (b"connection", b"close")], payload)
            return
        status, extra, payload = await self.edge.interact(call)
        await _answer(send, status, extra, payload)

    async def _token(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = _headers(scope)
        body, too_large = await _read(receive, headers, MAX_EDGE_BODY_BYTES)
        try:
            if too_large:
                raise ImsError(400, "invalid_request", "the form is too large")
            payload = self.edge.ims.token_response(body, headers.get(b"content-type", b"").decode("latin-1"))
            status = 200
        except ImsError as exc:
            status, payload = exc.status, exc.body()
        extra = [(b"content-type", b"application/json;charset=utf-8"), (b"cache-control", b"no-store")]
        await _answer(send, status, extra, payload)

    async def _faulted(self, call: _Call, receive: Any, send: Any) -> bool:
        """Apply the latency and fault knobs (``faults.py``) in Edge shape; True when the fault answered."""
        knobs = self.edge.knobs
        delay = knobs.delay_s()
        if delay:
            await asyncio.sleep(delay)
        if not knobs.faults:
            return False
        fault = knobs.pick_fault()
        if fault is None or fault == "207":
            call.fault = fault  # a 207 answers after validation, in place of the lookup's handle
            return False
        if fault == "hang":
            await _hang(receive)
            return True
        if fault == "reset":
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]}
            )
            await send({"type": "http.response.body", "body": b'{"requestId":', "more_body": True})
            raise ResetConnection("sandbox fault: connection reset")
        retry = [(b"retry-after", f"{knobs.retry_after_s:g}".encode())]
        problem = {
            "503": Problem("EXEG-0000-503", "Service unavailable", "The service is temporarily unavailable "
                           "(sandbox fault). Retry after Retry-After seconds.", headers=retry),
            "429": Problem("EXEG-EMUL-429", "Too many requests", "Rate limited (sandbox fault; Adobe documents "
                           "no code for 429). Retry after Retry-After seconds.", headers=retry),
        }.get(fault) or Problem("EXEG-0001-500", "Unexpected error", "Unexpected error (sandbox fault).")  # fmt: skip
        call.request_id = f"{uuid.uuid4()}-{secrets.token_hex(8)}"
        body = problem.body(call.request_id, self.edge.tenant.org_id, call.query.get("datastreamId"))
        await _answer(send, problem.status, [(b"content-type", _PROBLEM_TYPE), *problem.headers], body)
        return True


def _headers(scope: dict[str, Any]) -> dict[bytes, bytes]:
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        found.setdefault(name, value)
    return found


def _readable(headers: dict[bytes, bytes]) -> bool:
    media = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
    return media in _READABLE_TYPES


async def _read(receive: Any, headers: dict[bytes, bytes], limit: int) -> tuple[bytes, bool]:
    """The body, or ``(b"", True)`` as soon as it is known to be over ``limit`` (declared or streamed)."""
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return b"", True
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"", False
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False


async def _answer(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    start = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


async def _hang(receive: Any) -> None:
    try:
        async with asyncio.timeout(_HANG_LIMIT_S):
            while (await receive())["type"] != "http.disconnect":
                pass
    except TimeoutError:
        return


# ---- registration: the documented routes (served by EdgeGateway) and the admin API ------------------------

_PROBLEM_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["type", "status", "title", "detail", "report"],
    "properties": {
        "type": {"type": "string", "pattern": r"^https://ns\.adobe\.com/aep/errors/EXEG-"},
        "status": {"type": "integer"},
        "title": {"type": "string"},
        "detail": {"type": "string"},
        "report": {"type": "object", "required": ["requestId", "orgId"]},
    },
}
_WHY: Final = {
    400: "EXEG-0106 Content-Type missing, 0101 invalid JSON, 0002 no datastream, 0003 unknown datastream, "
    "0102 a field of the wrong shape, 0103 no event, 0306 no primary identity",
    401: "EXEG-0500 a malformed Authorization, 0502 a token this IMS did not issue, 0503 an expired token",
    408: "EXEG-0109 an empty body",
    413: "EXEG-0112 a body over 64 KB",
    415: "EXEG-0111 an unsupported Content-Type",
    422: "EXEG-0004 a disabled datastream, 0104 more than one primary identity",
    429: "EXEG-EMUL-429: over the guardrail's lookups per second, or the faults knob (Retry-After)",
    500: "EXEG-0001 injected by the faults knob",
    503: "EXEG-0000 injected by the faults knob (Retry-After)",
}
_ENVELOPE: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["requestId", "handle"],
    "properties": {
        "requestId": {"type": "string"},
        "handle": {"type": "array", "items": {"type": "object", "required": ["type", "payload"]}},
        "errors": {"type": "array", "items": {"type": "object"}},
        "warnings": {"type": "array", "items": {"type": "object"}},
    },
}


def _interact_responses() -> dict[int | str, dict[str, Any]]:
    ok_headers = {name: {"schema": {"type": "string"}, "required": True}
                  for name in ("x-request-id", "x-adobe-edge", "x-rate-limit-remaining")}  # fmt: skip
    envelope = {"application/json": {"schema": _ENVELOPE}}
    responses: dict[int | str, dict[str, Any]] = {
        200: {"description": "The envelope: requestId and handles (reference §3)", "content": envelope,
              "headers": ok_headers},
        207: {"description": "An upstream error in errors[] (faults knob 207, or audience evaluation failed)",
              "content": envelope, "headers": ok_headers},
    }  # fmt: skip
    for status, why in _WHY.items():
        responses[status] = {
            "description": why,
            "content": {"application/problem+json": {"schema": _PROBLEM_SCHEMA}},
        }
    return responses


def register(
    app: FastAPI,
    edge: EdgeService,
    *,
    write: list[Any],
    json_object: Callable[[Any], Awaitable[dict[str, Any]]],
) -> None:
    """Declare the Edge routes (``EdgeGateway`` answers their POSTs) and add ``/sandbox/edge/…``.

    ``write`` and ``json_object`` are app.py's admin-write dependency and body reader, so these routes
    follow the same rules (access.py, limits.py) as the rest of the admin API.
    """
    tag: list[str | Enum] = ["AEP Edge Network"]
    identity = {"CRMID": [{"id": "LUMEN-000001", "authenticatedState": "authenticated", "primary": True}]}
    example = {"event": {"xdm": {"eventType": "commerce.checkouts", "identityMap": identity}}}
    body = json_body({"type": "object", "description": "{event: {xdm: {identityMap, eventType, ...}, data?}, "
                      "query?, meta?} (reference §2.3); v1 takes {events: [...]}"}, example=example)  # fmt: skip

    def stub() -> None:  # EdgeGateway answers every POST whose location hint it can read, before routing
        raise NotFound(
            "no such location hint",
            f"a location hint is 1-16 letters or digits, e.g. {', '.join(LOCATION_HINTS)}; or leave it out",
        )

    for version, param in (("v2", "datastreamId"), ("v1", "configId")):
        ids = [d.id for d in _datastreams(edge.tenant) if d.enabled]
        params = [{"name": param, "in": "query", "required": True, "schema": {"type": "string", "enum": ids},
                   "description": "The datastream (v2 also accepts dataStreamId)"},
                  {"name": "requestId", "in": "query", "required": False, "schema": {"type": "string"}}]  # fmt: skip
        for path in (f"/ee/{version}/interact", f"/ee/{{locationHint}}/{version}/interact"):
            extra = {**body, "parameters": list(params)}
            responses = _interact_responses()
            if "{" in path:
                extra["parameters"].append({"name": "locationHint", "in": "path", "required": True,
                                            "schema": {"type": "string", "enum": list(LOCATION_HINTS)}})  # fmt: skip
                responses.update(errors(404))
            app.add_api_route(path, stub, methods=["POST"], tags=tag, responses=responses,
                              summary=f"Interact ({version}): an event in, the profile's audiences out",
                              openapi_extra=extra)  # fmt: skip

    form = {"type": "object", "required": ["grant_type", "client_id", "client_secret"],
            "properties": {"grant_type": {"const": "client_credentials"}, "client_id": {"type": "string"},
                           "client_secret": {"type": "string"}, "scope": {"type": "string"}}}  # fmt: skip
    token = {"type": "object", "required": ["access_token", "token_type", "expires_in"]}
    oauth_error = {"type": "object", "required": ["error", "error_description"]}
    json = "application/json"
    token_responses: dict[int | str, dict[str, Any]] = {
        200: {"description": "A bearer token", "content": {json: {"schema": token}}},
        400: {"description": "OAuth error (RFC 6749 §5.2)", "content": {json: {"schema": oauth_error}}},
    }
    form_body = {"application/x-www-form-urlencoded": {"schema": form}}
    app.add_api_route(
        TOKEN_PATH,
        stub,
        methods=["POST"],
        tags=["Adobe IMS"],
        summary="OAuth server-to-server token (client_credentials)",
        responses=token_responses,
        openapi_extra={"requestBody": {"required": True, "content": form_body}},
    )

    @app.get("/sandbox/edge/profiles", tags=["Sandbox: Edge"], responses=errors(*ADMIN_ERRORS, 400))
    async def edge_profiles(
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
        identity: Annotated[
            str, Query(description="NAMESPACE:ID, e.g. CRMID:LUMEN-000001", pattern=r"^(?:[^:]+:.+)?$")
        ] = "",
    ) -> dict[str, Any]:
        wanted: tuple[str, str] | None = None
        if identity:
            namespace, sep, value = identity.partition(":")
            if not sep or not namespace or not value:
                raise BadRequest(
                    "identity must be NAMESPACE:ID", f"got {identity[:80]!r}, e.g. CRMID:LUMEN-000001"
                )
            wanted = (namespace, value)
        try:
            return edge.tenant.profiles(limit=limit, offset=offset, identity=wanted)
        except ValueError as exc:  # the tenant's own bounds (a page of at most 500)
            raise BadRequest(str(exc)) from None

    @app.get("/sandbox/edge/audiences", tags=["Sandbox: Edge"], responses=errors(*ADMIN_ERRORS))
    async def edge_audiences() -> list[dict[str, Any]]:
        return edge.tenant.audiences()

    @app.post("/sandbox/edge/audiences", tags=["Sandbox: Edge"], status_code=201,
              responses=errors(*ADMIN_WRITE_ERRORS), dependencies=write,
              openapi_extra=json_body(_AUDIENCE_BODY))  # fmt: skip
    async def load_edge_audience(request: Request) -> JSONResponse:
        data = await json_object(request)
        try:
            loaded = edge.tenant.load_audience(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise BadRequest(f"the audience definition cannot be loaded: {exc}", repr(exc)[:500]) from None
        return JSONResponse(loaded, status_code=201)

    @app.get("/sandbox/edge/clock", tags=["Sandbox: Edge"], responses=errors(*ADMIN_ERRORS))
    async def edge_clock() -> dict[str, Any]:
        return _clock(edge)

    @app.post("/sandbox/edge/clock", tags=["Sandbox: Edge"], responses=errors(*ADMIN_WRITE_ERRORS),
              dependencies=write, openapi_extra=json_body(_CLOCK_BODY))  # fmt: skip
    async def advance_edge_clock(request: Request) -> dict[str, Any]:
        """Move the simulated clock: streaming audiences arrive minutes later, batch ones after the daily run."""
        data = await json_object(request)
        try:
            edge.tenant.clock.advance(data.get("advanceSeconds"))  # type: ignore[arg-type]  # it checks
        except ValueError as exc:
            raise BadRequest(str(exc), 'send {"advanceSeconds": 600} to move ten minutes on') from None
        return _clock(edge)


def _clock(edge: EdgeService) -> dict[str, Any]:
    return {"now": edge.tenant.clock.iso(), "epochMs": edge.tenant.clock.now_ms()}


_AUDIENCE_BODY: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["name", "rule", "evaluation"],
    "description": "An audience: {id?, name, rule (PQL, reference §5.5), evaluation: edge|streaming|batch, "
    "destinations: [destinationId]}",
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "rule": {"type": "string"},
        "evaluation": {"enum": ["edge", "streaming", "batch"]},
        "destinations": {"type": "array", "items": {"type": "string"}},
    },
}
_CLOCK_BODY: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["advanceSeconds"],
    "properties": {"advanceSeconds": {"type": "number", "minimum": 0, "maximum": 366 * 86400}},
}
