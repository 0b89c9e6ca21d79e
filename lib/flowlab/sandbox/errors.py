"""The sandbox's errors and its one JSON error body.

Every error the sandbox returns, on the real-API routes and the admin API alike, has the body Sitecore's own
SDK declares for failed callFlows (``FailedCalledFlowsResponse``, reference §3.5)::

    {"status": "400", "code": "400", "message": "...", "developerMessage": "...", "moreInfoUrl": "..."}

``status`` and ``code`` are strings, as in that SDK interface. Each exception class carries its HTTP status
(datasette's pattern), so the one handler in ``app.py`` needs no lookup table.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

__all__ = [
    "MORE_INFO_URL",
    "BadRequest",
    "Conflict",
    "FlowFailed",
    "Forbidden",
    "MisdirectedRequest",
    "NotFound",
    "PayloadTooLarge",
    "SandboxError",
    "Unauthorized",
    "UnsupportedMediaType",
    "error_body",
    "send_error",
]

MORE_INFO_URL = "https://doc.sitecore.com/personalize/en/developers/api/call-the-personalize-api.html"


def error_body(
    status: int, message: str, developer_message: str = "", more_info: str = MORE_INFO_URL
) -> dict[str, Any]:
    """The canonical error body."""
    return {
        "status": str(status),
        "code": str(status),
        "message": message,
        "developerMessage": developer_message or message,
        "moreInfoUrl": more_info,
    }


class SandboxError(Exception):
    """Base: an error with an HTTP status and a message that says what to fix."""

    status = 400

    def __init__(self, message: str, developer_message: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.developer_message = developer_message

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.developer_message)


class BadRequest(SandboxError):
    status = 400


class Unauthorized(SandboxError):
    status = 401


class Forbidden(SandboxError):
    """The admin API refuses this caller: a page of another origin, or writes on an exposed sandbox."""

    status = 403


class NotFound(SandboxError):
    status = 404


class Conflict(SandboxError):
    status = 409


class PayloadTooLarge(SandboxError):
    status = 413


class UnsupportedMediaType(SandboxError):
    status = 415


class MisdirectedRequest(SandboxError):
    """A ``Host`` the admin API does not answer for (DNS rebinding): 421, as RFC 9110 §15.5.20 defines."""

    status = 421


class FlowFailed(SandboxError):
    """The flow itself is broken (a condition timed out, the template failed): the tenant's fault, so 5xx."""

    status = 500


async def send_error(send: Any, exc: SandboxError, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Answer with the error body from raw ASGI middleware (limits, admin access), closing the connection."""
    body = orjson.dumps(exc.body())
    start = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
             (b"connection", b"close"), *headers]  # fmt: skip
    await send({"type": "http.response.start", "status": exc.status, "headers": start})
    await send({"type": "http.response.body", "body": body})
