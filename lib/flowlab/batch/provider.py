"""What the batch runner asks of a provider: the part of a batch that differs between decision APIs.

The runner (``flowlab.batch.runner``) owns everything shared: the run store, group commits and dispatch
marks, progress, cancel/resume/only-failed, the retry budget, the rate limit and exports. A provider owns
the three things that differ (design.md, "Providers"):

1. **How a sample row becomes a request**: ``check`` refuses a sample of the wrong kind (or settings that
   would fail every row) before anything is called; ``prepare`` turns one ``GuestRow`` into the exact body
   to post (pre-serialised: this is the hot path) and a context the answer is read with.
2. **How a request is sent**: ``path`` (URL path and query under the base URL, e.g. ``/v2/callFlows`` or
   ``/ee/v2/interact?datastreamId=…``), ``retry_statuses`` (None: 408, 429 and 5xx), ``retry_sent`` (may a
   request that may have reached the server be sent again?), ``headers()`` per request (None when there are
   none: the callFlows hot path adds nothing), ``open``/``close`` around a session (an IMS token is fetched
   there) and ``unauthorized`` (one refresh after a 401).
3. **What a response means**: ``answer`` turns a status, headers and body into a ``GuestResult`` (variant
   and offers, or audiences, destinations and attributes); ``failure`` makes the row of a request that got
   no answer; ``fatal`` says when an answer means *no* row can succeed (an unknown datastream, a refused
   token), so the run stops at once with that message instead of failing every guest.

Implementations: ``flowlab.personalize.provider.PersonalizeProvider`` (callFlows) and
``flowlab.edge.provider.EdgeProvider`` (AEP Edge interact). A provider object may serve several sessions
(a run and its resumes), one at a time, each on its own event loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from flowlab.batch.runs import GuestResult
from flowlab.batch.samples import GuestRow, GuestSample

__all__ = ["Provider"]


@runtime_checkable
class Provider(Protocol):
    """A decision API the batch runner can call for every row of a sample (see the module docstring)."""

    #: ``personalize`` or ``edge``: recorded in ``RunMeta.provider``; samples must be of this kind.
    name: str
    #: URL path (and query) under the base URL that every request is posted to.
    path: str
    #: Statuses worth another attempt; None means 408, 429 and every 5xx.
    retry_statuses: frozenset[int] | None
    #: False when a request that may have reached the server must not be sent again (it records an event):
    #: then only connect failures are retried, besides ``retry_statuses``.
    retry_sent: bool

    @property
    def target(self) -> str:
        """What the run calls on the base URL: the friendlyId, or the datastream id (``RunMeta.friendly_id``)."""
        ...

    @property
    def defaults(self) -> Mapping[str, Any]:
        """Request defaults that make a run this run (compared on resume)."""
        ...

    @property
    def settings(self) -> Mapping[str, Any]:
        """Provider options recorded with the run (shown, not compared), e.g. ``variantPath``."""
        ...

    def check(self, sample: GuestSample | None = None) -> None:
        """Raise ``SampleError`` for a sample of the wrong kind, ``RequestValidationError`` or
        ``ConfigError`` for settings that can make no valid request; called before anything is sent."""
        ...

    async def open(self, base_url: str, timeout: float) -> None:
        """Start a session (inside the run's event loop): e.g. fetch the IMS token, failing fast."""
        ...

    async def close(self) -> None:
        """End the session opened by ``open``."""
        ...

    def headers(self) -> Mapping[str, str] | None:
        """Headers for the next request (the bearer token), or None for none."""
        ...

    async def unauthorized(self, sent: Mapping[str, str] | None) -> bool:
        """A 401 came back for a request sent with ``sent``: True if new credentials are worth one more try."""
        ...

    def prepare(self, guest: GuestRow) -> tuple[bytes, Any]:
        """The body to post for ``guest`` and a context for ``answer``; ``RequestValidationError`` if none."""
        ...

    def answer(
        self,
        guest: GuestRow,
        context: Any,
        status: int,
        headers: Mapping[str, str],
        text: str,
        latency_ms: float,
        attempts: int,
    ) -> GuestResult:
        """The row for an answer (any status)."""
        ...

    def failure(
        self,
        guest: GuestRow,
        context: Any,
        error: str,
        error_type: str,
        latency_ms: float | None = None,
        attempts: int = 0,
    ) -> GuestResult:
        """The row for a guest that got no answer (``timeout``, ``connection``, ``invalid_request``)."""
        ...

    def fatal(self, result: GuestResult) -> str | None:
        """A message when ``result`` means no guest of this run can succeed (the run stops), else None."""
        ...
