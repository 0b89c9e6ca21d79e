"""Request limits with clear answers: body size, JSON nesting depth, and what a trace keeps of a request.

* Bodies over ``MAX_BODY_BYTES`` (1 MiB) get **413** with the error body, on every route: ``BodyLimit``
  refuses a too-large ``Content-Length`` before reading anything, and counts the bytes of a chunked body as
  they arrive, so nothing is ever buffered past the cap. Real callFlows bodies are a few hundred bytes.
* JSON nested deeper than ``MAX_JSON_DEPTH`` (64) gets **400** at the parse site, before the engine runs:
  orjson parses up to 1,024 levels but serialises only ~255, so a 300-deep body used to pass validation,
  write a tracking record and then fail as a plain-text 500 when its trace was stored.
* A trace keeps a bounded summary of the request (``request_summary``): params up to
  ``TRACE_PARAMS_BYTES`` and strings up to ``TRACE_TEXT_CHARS``, with a note saying what was cut. Traces
  used to keep whole requests, so a stream of large requests grew the server by their full size.
  Warnings quote what they name ``shortened``; unknown field names are listed up to 20, then "and N more".
* Identities (browserId, email, identifiers.provider and .id) longer than ``MAX_IDENTITY_CHARS`` (256)
  get **400** naming the field: every new identity becomes a guest that keeps it. The reference gives no
  length; a browserId is a 36-character UUID, an email at most 254 characters (RFC 5321).
* A tenant holds at most ``MAX_GUESTS`` (250,000) guests, ~9 KB each with their tracking records
  (~2 GB in all): past it a request for a *new* identity gets **507** (``GuestLimit``), known guests are
  still served, and a reset starts afresh. Refused rather than evicted: an evicted guest would silently
  lose its tracking records and first-served variants mid-run.
"""

from __future__ import annotations

from typing import Any

import orjson

from flowlab.sandbox.errors import BadRequest, PayloadTooLarge, SandboxError, send_error

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_GUESTS",
    "MAX_IDENTITY_CHARS",
    "MAX_JSON_DEPTH",
    "TRACE_LIST_ITEMS",
    "TRACE_PARAMS_BYTES",
    "TRACE_TEXT_CHARS",
    "BodyLimit",
    "GuestLimit",
    "check_depth",
    "parse_json",
    "request_summary",
    "shortened",
]

MAX_BODY_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 64
TRACE_PARAMS_BYTES = 4096
TRACE_TEXT_CHARS = 256
TRACE_LIST_ITEMS = 20
MAX_IDENTITY_CHARS = 256
MAX_GUESTS = 250_000


class GuestLimit(SandboxError):
    """507: the tenant holds ``MAX_GUESTS`` guests; a request for a new one is refused, known ones served.

    507 (RFC 4918 §11.5: the server cannot store what the request needs) rather than 429: waiting does
    not help, a reset does.
    """

    status = 507


def shortened(text: str, limit: int = TRACE_TEXT_CHARS) -> str:
    """``text`` cut to ``limit`` characters with a note of the full length, for messages and warnings."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def check_depth(value: Any, what: str = "the request body", limit: int = MAX_JSON_DEPTH) -> None:
    """Raise ``BadRequest`` when objects and arrays nest deeper than ``limit`` (iterative: no recursion)."""
    if not isinstance(value, dict | list):
        return
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise _too_deep(what, limit)
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))


def parse_json(raw: bytes | str, what: str = "the request body") -> Any:
    """Parse JSON within the size and depth limits, or raise ``BadRequest`` / ``PayloadTooLarge``."""
    if len(raw) > MAX_BODY_BYTES:
        raise _too_large(len(raw))
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):  # orjson's own cap (1,024 levels): the same answer as ours
            raise _too_deep(what, MAX_JSON_DEPTH) from None
        raise BadRequest(f"{what} is not valid JSON", str(exc)) from None
    if len(raw) > 2 * MAX_JSON_DEPTH:  # shorter text cannot nest deeper than the limit
        check_depth(value, what)
    return value


def request_summary(request: dict[str, Any]) -> dict[str, Any]:
    """What a trace keeps of a validated request: params up to a size, strings up to a length."""
    summary: dict[str, Any] = {}
    notes: list[str] = []
    for key, value in request.items():
        if key == "params" and value:
            text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
            if len(text) > TRACE_PARAMS_BYTES:
                value = {"_preview": text[:TRACE_PARAMS_BYTES].decode("utf-8", "ignore")}
                notes.append(f"params were {len(text):,} bytes of JSON; the trace keeps the first "
                             f"{TRACE_PARAMS_BYTES:,} as text")  # fmt: skip
        elif isinstance(value, str) and len(value) > TRACE_TEXT_CHARS:
            notes.append(f"{key} was {len(value):,} characters; the trace keeps the first {TRACE_TEXT_CHARS}")
            value = value[:TRACE_TEXT_CHARS]
        elif isinstance(value, dict):
            value = request_summary(value)
            notes.extend(f"{key}: {note}" for note in value.pop("truncated", []))
        elif isinstance(value, list) and len(orjson.dumps(value)) > TRACE_TEXT_CHARS * 4:
            notes.append(f"{key} had {len(value):,} items; the trace keeps the first {TRACE_LIST_ITEMS}")
            value = [str(item)[:TRACE_TEXT_CHARS] for item in value[:TRACE_LIST_ITEMS]]
        summary[key] = value
    if notes:
        summary["truncated"] = notes
    return summary


def _too_deep(what: str, limit: int) -> BadRequest:
    return BadRequest(
        f"{what} nests objects and arrays more than {limit} levels deep",
        f"the sandbox accepts JSON nested up to {limit} levels; flatten the data",
    )


def _too_large(size: int | None) -> PayloadTooLarge:
    got = f"{size:,} bytes" if size is not None else "more"
    return PayloadTooLarge(
        f"the request body is over the sandbox's limit of {MAX_BODY_BYTES:,} bytes",
        f"got {got}; callFlows bodies are a few hundred bytes: send less data in params",
    )


class BodyLimit:
    """ASGI middleware: 413 for bodies over ``max_bytes``, declared or streamed, on every route.

    A declared ``Content-Length`` within the cap passes through untouched (the server already holds the
    body to that length), so the hot path pays one header lookup. Chunked bodies are counted as they
    arrive; the request stops at the first byte over the cap, before anything downstream buffers it.
    """

    def __init__(self, app: Any, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
                break
        if declared is not None:
            size = int(declared) if declared.isdigit() else None  # the server rejects malformed lengths
            if size is not None and size > self.max_bytes:
                await send_error(send, _too_large(size))
                return
            await self.app(scope, receive, send)
            return

        received = 0
        started = False
        limit = self.max_bytes

        async def counted() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large(None)
            return message

        async def watched(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except PayloadTooLarge as exc:
            if started:
                raise
            await send_error(send, exc)
