"""Replay recorded runs: the sandbox answers callFlows with what a tenant answered, byte for byte.

Every run store (``flowlab.batch.runs``) is a recording: per guest the request's friendlyId and identity, and the
response's status, headers (schema 2; secrets dropped when recorded) and body. Replaying loads the stores
once, at start, into one dict keyed by (friendlyId, identity kind, identity value), so the hot path is a
dict lookup. A request that was never recorded gets a 404 that says so: never a guess, never the engine,
and so never a tracking record on the replaying tenant.

What is served: the recorded status and body bytes; the recorded headers minus hop-by-hop ones and those
the replaying server owns (``Content-Length``, ``Content-Encoding``: the body was recorded decoded;
``Date``, ``Server``; CORS headers, which its CORS layer sets again). A schema-1 store has no headers:
its answers say ``content-type: application/json``.
A body that was cut when recorded (over ``MAX_BODY_CHARS``) or held bytes that were not UTF-8 cannot be
served byte for byte: its guest gets a 404 saying why. A guest whose call got no answer (timeout,
connection) was not recorded. With several rows for one key (several files, or a guest twice in a sample),
the first file given and the first row win.

The clientKey: a recording never keeps the key it was made with, and the replaying sandbox's own key is not
the live tenant's, so replay checks only that a clientKey is given (a non-empty string), as every
callFlows request must; any value is accepted.

This module reads the SQLite files itself (``sqlite3``): the sandbox never imports the client or runner.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from flowlab.batch.runs import MAX_BODY_CHARS, READABLE_SCHEMAS
from flowlab.errors import RunStoreError
from flowlab.sandbox.errors import BadRequest, NotFound, Unauthorized

__all__ = ["HOP_BY_HOP", "Answer", "Recording", "Replay", "load_recording"]

#: Headers a replay never repeats: hop-by-hop (RFC 9110 §7.6.1) and the replaying server's own.
HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
        "content-length", "content-encoding", "date", "server",
    }
)  # fmt: skip
_SQLITE_MAGIC = b"SQLite format 3\x00"
_NEEDED_COLUMNS = frozenset({"row", "guest", "identity", "status_code", "latency_ms", "body"})
_JSON_TYPE = ((b"content-type", b"application/json"),)
_IDENTITY_KINDS = ("browserId", "email", "identifiers")
_MAX_SHOWN = 120


@dataclass(frozen=True, slots=True)
class Answer:
    """One recorded answer, ready to send; ``refusal`` says why it cannot be (``""``: it can)."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    latency_s: float
    refusal: str = ""


@dataclass(frozen=True)
class Recording:
    """One run store as replay sees it: what ``/sandbox/info`` shows about it."""

    path: str
    friendly_id: str
    recorded_at: str
    finished: str
    status: str
    schema: int
    headers_recorded: bool
    guests: int
    replayable: int
    refused: Mapping[str, int] = field(default_factory=dict)
    shadowed: int = 0

    def describe(self) -> dict[str, Any]:
        return {
            "file": Path(self.path).name,
            "path": self.path,
            "friendlyId": self.friendly_id,
            "recordedAt": self.recorded_at,
            "finished": self.finished,
            "status": self.status,
            "schema": self.schema,
            "headersRecorded": self.headers_recorded,
            "guests": self.guests,
            "replayable": self.replayable,
            "notReplayable": dict(self.refused),
            "shadowed": self.shadowed,
        }


def _shown(value: str) -> str:
    return value if len(value) <= _MAX_SHOWN else value[:_MAX_SHOWN] + "…"


def _check_store(path: Path) -> None:
    """Refuse anything but a SQLite file, reading 16 bytes: no other file's content is ever read back."""
    try:
        if not path.is_file():
            raise RunStoreError(f"{path} is not a file: give the path of a run store (.sqlite)")
        with path.open("rb") as handle:
            magic = handle.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise RunStoreError(f"cannot read {path}: {exc.strerror or exc}") from None
    if magic != _SQLITE_MAGIC:
        raise RunStoreError(f"{path} is not a Flow Lab run store (not an SQLite file)")


def _headers(raw: str | None) -> tuple[tuple[bytes, bytes], ...]:
    """Recorded headers as sent: CORS (``Access-Control-*``, ``Vary: Origin``) is the replaying server's own
    CORS layer's, which adds them again for a request with an ``Origin``, as the tenant's did."""
    if raw is None:
        return _JSON_TYPE
    pairs = []
    for name, value in orjson.loads(raw):
        low, value = str(name).lower(), str(value)
        if low in HOP_BY_HOP or low.startswith("access-control-"):
            continue
        if low == "vary":
            value = ", ".join(v for v in (t.strip() for t in value.split(",")) if v and v.lower() != "origin")
            if not value:
                continue
        pairs.append((low.encode("latin-1", "replace"), value.encode("latin-1", "replace")))
    if not any(name == b"content-type" for name, _ in pairs):
        pairs.insert(0, _JSON_TYPE[0])
    return tuple(pairs)


def _refusal(status: int | None, error_type: str, body: str, exact: int | None) -> str:
    if status is None:
        return f"the recorded call got no answer ({error_type or 'no response'})"
    if exact is None:  # schema 1: cut bodies end with the mark, non-UTF-8 bytes were decoded as U+FFFD
        exact = int(
            not (len(body) > MAX_BODY_CHARS and body.endswith("[truncated]")) and "\ufffd" not in body
        )
    if not exact:
        return (
            f"its recorded body was cut at {MAX_BODY_CHARS:,} characters or held bytes that were not UTF-8, "
            "so it cannot be served byte for byte"
        )
    return ""


def load_recording(path: str | Path, answers: dict[tuple[str, str, str], Answer]) -> Recording:
    """Read one run store into ``answers`` (keys already there win); raise ``RunStoreError`` if not one."""
    path = Path(path).expanduser().resolve()
    _check_store(path)
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise RunStoreError(f"cannot open {path} as a run store: {exc}") from None
    try:
        meta = {k: orjson.loads(v) for k, v in conn.execute("SELECT key, value FROM meta")}
        columns = {r[1] for r in conn.execute("PRAGMA table_info(results)")}
        schema = meta.get("schema")
        if schema not in READABLE_SCHEMAS or not _NEEDED_COLUMNS <= columns or not meta.get("friendlyId"):
            raise RunStoreError(f"{path} is not a Flow Lab run store this version can replay")
        if meta.get("provider", "personalize") != "personalize":
            raise RunStoreError(
                f"{path} is an AEP Edge run (datastream {meta['friendlyId']}); replay serves callFlows runs only"
            )
        with_headers = {"headers", "body_exact"} <= columns
        extra = "headers, body_exact" if with_headers else "NULL, NULL"
        rows = conn.execute(
            f"SELECT identity, guest, status_code, latency_ms, body, error_type, {extra} FROM results ORDER BY row"
        )
        friendly_id = str(meta["friendlyId"])
        guests = replayable = shadowed = 0
        refused: dict[str, int] = {}
        bodies: dict[str, bytes] = {}  # a run repeats a few bodies: keep each once
        for kind, value, status, latency_ms, body, error_type, headers, exact in rows:
            guests += 1
            key = (friendly_id, str(kind), str(value))
            if key in answers:
                shadowed += 1
                continue
            body = body or ""
            refusal = _refusal(status, error_type or "", body, exact)
            if refusal:
                reason = "no answer" if status is None else "body not exact"
                refused[reason] = refused.get(reason, 0) + 1
            else:
                replayable += 1
            data = bodies.get(body)
            if data is None:
                data = bodies[body] = body.encode()
            answers[key] = Answer(
                int(status or 0), _headers(headers), data, max(0.0, float(latency_ms or 0.0)) / 1000, refusal
            )
    except sqlite3.Error as exc:
        raise RunStoreError(f"{path} is not a Flow Lab run store this version can replay ({exc})") from None
    finally:
        conn.close()
    return Recording(
        path=str(path), friendly_id=friendly_id, recorded_at=str(meta.get("created", "")),
        finished=str(meta.get("finished", "")), status=str(meta.get("status", "")), schema=int(schema),
        headers_recorded=with_headers, guests=guests, replayable=replayable, refused=refused,
        shadowed=shadowed,
    )  # fmt: skip


class Replay:
    """What a sandbox replays: off (no recordings) until ``load``; swapped whole, so reads need no lock."""

    def __init__(self) -> None:
        self._answers: dict[tuple[str, str, str], Answer] = {}
        self._recordings: tuple[Recording, ...] = ()
        self.latency = False

    @property
    def active(self) -> bool:
        return bool(self._recordings)

    def load(self, paths: Iterable[str | Path], *, latency: bool | None = None) -> None:
        """Replay these stores (none: stop replaying); ``RunStoreError`` names a file that is not one."""
        answers: dict[tuple[str, str, str], Answer] = {}
        recordings = tuple(load_recording(p, answers) for p in paths)
        self._answers, self._recordings = answers, recordings
        if latency is not None:
            self.latency = latency

    def describe(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "latency": self.latency,
            "clientKey": "any non-empty clientKey is accepted (a recording never keeps the tenant's key)",
            "runs": [r.describe() for r in self._recordings],
            "flowIds": sorted({r.friendly_id for r in self._recordings}),
            "guests": len(self._answers),
        }

    async def answer(self, body: Any) -> tuple[int, bytes, Sequence[tuple[bytes, bytes]]]:
        """The recorded answer to a callFlows body; ``NotFound`` when there is none to serve as it was."""
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object", f"got {type(body).__name__}")
        if isinstance(body.get("context"), dict) and "clientKey" not in body:
            body = {**body["context"], **{k: v for k, v in body.items() if k != "context"}}  # legacy wrapper
        client_key = body.get("clientKey")
        if not isinstance(client_key, str) or not client_key:
            raise Unauthorized("clientKey is required", "replay accepts any non-empty clientKey")
        friendly_id = body.get("friendlyId")
        if not isinstance(friendly_id, str) or not friendly_id.strip():
            raise BadRequest("friendlyId is required", "the request body has no friendlyId")
        identities = [
            (kind, _identity(body.get(kind))) for kind in _IDENTITY_KINDS if body.get(kind) is not None
        ]
        if not identities:
            raise BadRequest(
                "one of browserId, email or identifiers is required", "the request names no guest"
            )
        for kind, value in identities:
            found = self._answers.get((friendly_id, kind, value))
            if found is not None:
                break
        else:
            kind, value = identities[0]
            files = ", ".join(Path(r.path).name for r in self._recordings)
            raise NotFound(
                f"no recorded answer for friendlyId {_shown(friendly_id)} and {kind} {_shown(value)} in the "
                f"replayed runs: {files}; replay serves only what was recorded",
                'GET /sandbox/info lists the replayed runs; PUT /sandbox/replay {"paths": []} stops replaying',
            )
        if found.refusal:
            raise NotFound(
                f"the recorded answer for friendlyId {_shown(friendly_id)} and {kind} {_shown(value)} cannot be "
                f"replayed: {found.refusal}; replay serves only what was recorded whole",
                "record the run again with this version of Flow Lab",
            )
        if self.latency and found.latency_s:
            await asyncio.sleep(found.latency_s)
        return found.status, found.body, found.headers


def _identity(value: Any) -> str:
    """An identity as the run store keeps it: identifiers as ``PROVIDER:ID`` (``CallFlowRequest.identity``)."""
    if isinstance(value, dict):
        return f"{value.get('provider', '')}:{value.get('id', '')}"
    return value if isinstance(value, str) else orjson.dumps(value).decode()
