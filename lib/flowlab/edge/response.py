"""Reading an Edge Network interact answer: the envelope, its handles, destinations, errors and warnings.

``parse_edge_response`` reads real Adobe bodies (every example of adobe-edge-personalization.md §3-§4 is a
test fixture), tolerantly where Adobe says the API grows ("additive changes", §3.1: unknown handle types and
fields are kept, not rejected) and strictly where a body cannot be what it claims (not JSON, no ``handle``
list, a segment without an id): then a clear ``APIResponseError`` naming the path, never a KeyError.

- 2xx: ``{requestId, handle[], errors[]?, warnings[]?}`` (§3.1); 207 carries upstream ``errors[]`` and 200
  may carry ``warnings[]`` (§4.1), both surfaced on every status.
- ``activation:pull`` payload items of ``type: profileLookup`` become ``Destination`` entries (§3.3); a
  handle with ``payload: []`` means "profile not on the edge".
- non-2xx: RFC 7807 problem+json ``{type: …/EXEG-NNNN-SSS, status, title, detail, report}`` (§4.1),
  mapped onto ``flowlab.errors`` by status (401 → ``AuthenticationError``, 429 → ``RateLimitError``…).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import orjson

from flowlab.errors import APIResponseError, APIStatusError, status_error_class
from flowlab.http import FlowResponse

if TYPE_CHECKING:
    from flowlab.edge.models import InteractRequest

__all__ = [
    "MAX_RESPONSE_BYTES",
    "Destination",
    "EdgeProblem",
    "EdgeResponse",
    "edge_status_error",
    "parse_edge_response",
]

#: Larger bodies are refused unread: ten destinations of 250 audiences and 20 attributes (the guardrails,
#: §1.4) are well under 1 MB, so 8 MB is a broken or hostile server, not an answer.
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
_CODE = re.compile(r"EXEG-[A-Z0-9]+-\d{3}$")


@dataclass(frozen=True)
class EdgeProblem:
    """One problem+json object: a fatal error body, or an entry of ``errors[]`` / ``warnings[]`` (§4.1)."""

    type: str
    code: str
    status: int | None
    title: str
    detail: str = ""
    report: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        text = " ".join(p for p in (self.code, self.title) if p) or "problem"
        if self.detail:
            text += f": {self.detail}"
        return text

    @classmethod
    def from_json(cls, value: Any) -> EdgeProblem:
        """Read one problem object; anything else becomes a problem whose title is its text."""
        if not isinstance(value, Mapping):
            return cls(type="", code="", status=None, title=_short(value))
        kind = value.get("type")
        kind = kind if isinstance(kind, str) else ""
        match = _CODE.search(kind)
        status = value.get("status")
        if isinstance(status, str) and status.isdigit():
            status = int(status)
        report = value.get("report")
        return cls(
            type=kind,
            code=match.group(0) if match else "",
            status=status if isinstance(status, int) and not isinstance(status, bool) else None,
            title=_text(value.get("title")),
            detail=_text(value.get("detail")),
            report=report if isinstance(report, Mapping) else {},
        )


@dataclass(frozen=True)
class Destination:
    """One ``profileLookup`` payload item: a Custom Personalization destination's answer (§3.3).

    ``segments`` are ``{"id", "namespace"}`` dicts (``namespace`` is None when Adobe leaves it out, as the
    E1 examples do); ``attributes`` are unwrapped from ``{"value": …}`` to name → value.
    """

    alias: str
    destination_id: str
    segments: list[dict[str, str | None]]
    attributes: dict[str, Any]

    @property
    def segment_ids(self) -> list[str]:
        return [str(s["id"]) for s in self.segments]


@dataclass(frozen=True)
class EdgeResponse:
    """What came back from one interact call: exact status, headers, body and latency, plus what it says."""

    status_code: int
    headers: Mapping[str, str]
    text: str
    latency_ms: float = 0.0
    url: str = ""
    request: InteractRequest | None = None
    attempts: int = 1
    request_headers: Mapping[str, str] = field(default_factory=dict)
    request_id: str | None = None
    handles: list[dict[str, Any]] = field(default_factory=list)
    destinations: list[Destination] = field(default_factory=list)
    errors: list[EdgeProblem] = field(default_factory=list)
    warnings: list[EdgeProblem] = field(default_factory=list)
    problem: EdgeProblem | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300

    @cached_property
    def json_body(self) -> Any:
        try:
            return orjson.loads(self.text) if self.text.strip() else None
        except orjson.JSONDecodeError:
            return None

    def payloads(self, handle_type: str) -> list[Any]:
        """Every payload item of every handle of ``handle_type``, flattened (the Web SDK's
        ``getPayloadsByType``, §3.5)."""
        return [
            item for h in self.handles if h.get("type") == handle_type for item in _list(h.get("payload"))
        ]

    @property
    def on_edge(self) -> bool | None:
        """False when ``activation:pull`` came back empty (profile not on the edge, §3.3); None without one."""
        pulls = [h for h in self.handles if h.get("type") == "activation:pull"]
        if not pulls:
            return None
        return any(_list(h.get("payload")) for h in pulls)

    @property
    def segment_ids(self) -> list[str]:
        """Audience ids across every destination, each once, in order of appearance."""
        return list(dict.fromkeys(s for d in self.destinations for s in d.segment_ids))

    def destination(self, alias: str) -> Destination | None:
        return next((d for d in self.destinations if d.alias == alias), None)

    @property
    def location_hint(self) -> str | None:
        """The ``EdgeNetwork`` location hint to reuse for 1800 s (§2.1, §10)."""
        for item in self.payloads("locationHint:result"):
            if (
                isinstance(item, Mapping)
                and item.get("scope") == "EdgeNetwork"
                and isinstance(item.get("hint"), str)
            ):
                return str(item["hint"])
        return None

    def to_flow_response(self) -> FlowResponse:
        """The raw answer as a ``FlowResponse``: what ``flowlab.errors`` status errors carry."""
        return FlowResponse(
            status_code=self.status_code,
            headers=self.headers,
            text=self.text,
            latency_ms=self.latency_ms,
            url=self.url,
            attempts=self.attempts,
            request_headers=self.request_headers,
        )

    def raise_for_status(self) -> EdgeResponse:
        if not self.ok:
            raise edge_status_error(self)
        return self


def edge_status_error(response: EdgeResponse) -> APIStatusError:
    """The ``flowlab.errors`` class for the status, with the problem's EXEG code, title and detail."""
    cls = status_error_class(response.status_code)
    error = cls("", response=response.to_flow_response(), url=response.url)
    problem = response.problem
    if problem is not None and (problem.code or problem.title):
        said = str(problem)
    else:
        said = _short(response.text, 200) if response.text.strip() else "no body"
    error.message = f"the Edge answered {response.status_code} for {response.url or 'interact'}: {said}"
    error.args = (error.message,)
    return error


def parse_edge_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    latency_ms: float = 0.0,
    url: str = "",
    request: InteractRequest | None = None,
    attempts: int = 1,
    request_headers: Mapping[str, str] | None = None,
    raise_for_status: bool = True,
) -> EdgeResponse:
    """Read one interact answer. Non-2xx raises the mapped status error (or, with
    ``raise_for_status=False``, comes back with ``problem`` set); a 2xx body that is not an interact
    envelope raises ``APIResponseError`` saying what is wrong with it."""
    common: dict[str, Any] = {
        "status_code": status,
        "headers": dict(headers),
        "latency_ms": latency_ms,
        "url": url,
        "request": request,
        "attempts": attempts,
        "request_headers": dict(request_headers or {}),
    }
    where = f"the Edge's {status} answer" + (f" from {url}" if url else "")
    if len(body) > MAX_RESPONSE_BYTES:
        raise APIResponseError(
            f"{where} is {len(body):,} bytes, more than the {MAX_RESPONSE_BYTES:,} an interact answer can be; "
            "is the base URL an Edge Network host?",
            url=url,
        )
    text = body.decode("utf-8", "replace")
    common["text"] = text
    request_id_header = _header(headers, "x-request-id")
    if not 200 <= status < 300:
        parsed = _loads(body)
        problem = EdgeProblem.from_json(parsed) if isinstance(parsed, dict) else None
        report_id = problem.report.get("requestId") if problem is not None else None
        response = EdgeResponse(
            **common,
            problem=problem,
            request_id=report_id if isinstance(report_id, str) else request_id_header,
        )
        if raise_for_status:
            raise edge_status_error(response)
        return response
    parsed = _loads(body)
    if parsed is _INVALID or parsed is None:
        shown = "an empty body" if not text.strip() else f"not JSON: {_short(text, 200)}"
        raise APIResponseError(f"{where} is {shown}; an interact answer is a JSON envelope", url=url)
    if not isinstance(parsed, dict):
        raise APIResponseError(
            f"{where} is a JSON {_kind(parsed)}, not the {{requestId, handle}} object of an interact answer",
            url=url,
        )
    handles = parsed.get("handle")
    if not isinstance(handles, list):
        got = "has no 'handle'" if handles is None else f"has a 'handle' that is {_a(handles)}"
        raise APIResponseError(
            f"{where} {got}: an interact answer has a handle list (reference §3.1)", url=url
        )
    request_id = parsed.get("requestId")
    if request_id is not None and not isinstance(request_id, str):
        raise APIResponseError(f"{where} has a requestId that is {_a(request_id)}, not text", url=url)
    kept: list[dict[str, Any]] = []
    destinations: list[Destination] = []
    for i, handle in enumerate(handles):
        if not isinstance(handle, dict):
            raise APIResponseError(f"{where}: handle[{i}] is {_a(handle)}, not an object", url=url)
        kept.append(dict(handle))
        if handle.get("type") == "activation:pull":
            payload = handle.get("payload", [])
            if not isinstance(payload, list):
                raise APIResponseError(f"{where}: handle[{i}].payload is {_a(payload)}, not a list", url=url)
            for j, item in enumerate(payload):
                destination = _destination(item, f"handle[{i}].payload[{j}]", where, url)
                if destination is not None:
                    destinations.append(destination)
    return EdgeResponse(
        **common,
        request_id=request_id or request_id_header,
        handles=kept,
        destinations=destinations,
        errors=_problems(parsed.get("errors"), "errors", where, url),
        warnings=_problems(parsed.get("warnings"), "warnings", where, url),
    )


def _destination(item: Any, path: str, where: str, url: str) -> Destination | None:
    """A ``profileLookup`` item as a Destination; other payload objects (§3.3: "may contain … payload
    objects unrelated to edge lookup") are left in ``handles`` only."""
    if not isinstance(item, dict):
        raise APIResponseError(f"{where}: {path} is {_a(item)}, not an object", url=url)
    kind = item.get("type")
    # Adobe's Web SDK test mock (§3.3, S5) has no type and calls the destination "id": read it too.
    if kind != "profileLookup" and not (kind is None and "segments" in item):
        return None
    destination_id = item.get("destinationId", item.get("id", ""))
    alias = item.get("alias", "")
    for name, value in (("destinationId", destination_id), ("alias", alias)):
        if not isinstance(value, str):
            raise APIResponseError(f"{where}: {path}.{name} is {_a(value)}, not text", url=url)
    segments_raw = item.get("segments", [])
    if not isinstance(segments_raw, list):
        raise APIResponseError(f"{where}: {path}.segments is {_a(segments_raw)}, not a list", url=url)
    segments: list[dict[str, str | None]] = []
    for k, segment in enumerate(segments_raw):
        if not isinstance(segment, dict):
            raise APIResponseError(
                f"{where}: {path}.segments[{k}] is {_a(segment)}, not an {{id}} object", url=url
            )
        seg_id, namespace = segment.get("id"), segment.get("namespace")
        if not isinstance(seg_id, str) or not seg_id:
            raise APIResponseError(
                f"{where}: {path}.segments[{k}].id is {_described(seg_id)}; an audience id is text", url=url
            )
        if namespace is not None and not isinstance(namespace, str):
            raise APIResponseError(
                f"{where}: {path}.segments[{k}].namespace is {_a(namespace)}, not text", url=url
            )
        segments.append({"id": seg_id, "namespace": namespace})
    attributes_raw = item.get("attributes", {})
    if not isinstance(attributes_raw, dict):
        raise APIResponseError(
            f"{where}: {path}.attributes is {_a(attributes_raw)}, not a name → {{value}} object", url=url
        )
    attributes = {
        str(name): value["value"] if isinstance(value, dict) and "value" in value else value
        for name, value in attributes_raw.items()
    }
    return Destination(
        alias=str(alias), destination_id=str(destination_id), segments=segments, attributes=attributes
    )


def _problems(value: Any, name: str, where: str, url: str) -> list[EdgeProblem]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise APIResponseError(f"{where}: '{name}' is {_a(value)}, not a list of problems", url=url)
    return [EdgeProblem.from_json(v) for v in value]


_INVALID = object()


def _loads(body: bytes) -> Any:
    if not body.strip():
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:  # also: nesting deeper than orjson's limit, invalid UTF-8
        return _INVALID


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _kind(value: Any) -> str:
    return {
        dict: "object", list: "list", str: "string", int: "number", float: "number", bool: "boolean",
        type(None): "null",
    }.get(type(value), type(value).__name__)  # fmt: skip


def _a(value: Any) -> str:
    kind = _kind(value)
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _described(value: Any) -> str:
    return "missing" if value is None else ("empty" if value == "" else _a(value))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else _short(value))


def _short(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
