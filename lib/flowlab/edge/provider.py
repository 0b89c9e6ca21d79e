"""AEP Edge interact as a batch provider (``flowlab.batch.provider.Provider``): one event per identity.

- **Request** (adobe-edge-personalization.md §2.3): a row of an Edge sample (``flowlab.batch.samples``,
  already checked with ``InteractRequest``'s rules when read) becomes ``{event: {xdm: {eventType?,
  timestamp, identityMap: {NS: [{id, primary: true}]}, …xdm}, data?}}``, built as a dict and serialised with
  orjson (no pydantic per guest), posted to ``/ee/v2/interact?datastreamId=…`` (§2.1, §2.2).
- **Auth** (§2.2): with ``EdgeCredentials`` the IMS token comes from ``AsyncEdgeClient.token()`` (its
  ``TokenCache``: fetched once at the start of a session, so bad credentials fail before any guest is
  called; refreshed once after a 401). Without credentials: the unauthenticated edge call, audiences only.
- **Retries** (§4.3): only 429, 502, 503 and 504 (``EDGE_RETRY_STATUSES``), honouring ``Retry-After``; a
  request that may have reached the Edge is not sent again after a read error or timeout (it records an
  event), only connect failures are.
- **Answers** (§3, §4.1): read by ``parse_edge_response``. A row keeps ``segments`` (audience ids over every
  destination, deduplicated, sorted), ``destinations`` (alias → ``{segments, attributes}``) and
  ``attributes`` (merged). A 207 is an ok row whose upstream ``errors[]`` (and any ``warnings[]``) are
  kept in ``error``; a 4xx/5xx is a failed row (``error_type`` ``http_<status>``) whose ``error`` has the
  ``EXEG-…`` code, title and detail. Answers that no guest can get past (unknown, missing or disabled
  datastream, §4.2 0002-0012; a refused token, 401/403) stop the run with that message (``fatal``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from flowlab.batch.runs import GuestResult
from flowlab.batch.samples import GuestRow, GuestSample
from flowlab.config import Settings
from flowlab.edge.auth import AccessToken, EdgeCredentials, TokenCache
from flowlab.edge.client import EDGE_RETRY_STATUSES, AsyncEdgeClient, _sandbox_kwargs, interact_url
from flowlab.edge.response import EdgeResponse, edge_status_error, parse_edge_response
from flowlab.errors import APIError, ConfigError, SampleError

__all__ = ["FATAL_CODES", "EdgeProvider"]

#: EXEG codes that no guest of the run can get past: the datastream is missing, unknown, disabled or
#: misconfigured (§4.2). With any 401 or 403 they stop a run at its first answer.
FATAL_CODES = frozenset(
    {"EXEG-0002-400", "EXEG-0003-400", "EXEG-0004-422", "EXEG-0010-422", "EXEG-0011-422", "EXEG-0012-422"}
)
_PLACEHOLDER_BASE = "http://edge.invalid"  # interact_url needs a base; only its path and query are used


class EdgeProvider:
    """AEP Edge ``POST /ee/v2/interact`` for every identity of an Edge sample.

    >>> provider = EdgeProvider.for_sandbox(url)                                     # doctest: +SKIP
    >>> run_batch_to_file(sample, BatchOptions(base_url=url, provider=provider), "out.csv")  # doctest: +SKIP
    """

    name = "edge"
    retry_statuses: frozenset[int] | None = EDGE_RETRY_STATUSES
    retry_sent = False

    def __init__(
        self,
        datastream_id: str,
        *,
        credentials: EdgeCredentials | None = None,
        region: str | None = None,
        datastream_param: str | None = None,
    ) -> None:
        if not datastream_id or not datastream_id.strip():
            raise ConfigError(
                "no datastream id: pass datastream_id= (--datastream-id; Data Collection → Datastreams shows it)"
            )
        self.datastream_id = datastream_id.strip()
        self.credentials = credentials
        self.region = region
        self.datastream_param = datastream_param
        url = interact_url(
            _PLACEHOLDER_BASE, self.datastream_id, region=region, datastream_param=datastream_param
        )
        parts = urlsplit(url)
        self.path = f"{parts.path}?{parts.query}"
        self.tokens = TokenCache()  # shared by every session of this provider: a resume reuses the token
        self._client: AsyncEdgeClient | None = None
        self._url = url

    def __repr__(self) -> str:
        auth = f"client_id={self.credentials.client_id!r}" if self.credentials else "unauthenticated"
        return f"EdgeProvider(datastream_id={self.datastream_id!r}, {auth})"

    @classmethod
    def for_sandbox(
        cls, base_url: str, *, authenticated: bool = True, datastream: int | str = 0
    ) -> EdgeProvider:
        """The sandbox's first (or given) datastream and, when ``authenticated``, its demo credentials
        (``GET /sandbox/info`` → ``edge``, as ``EdgeClient.for_sandbox``)."""
        found = _sandbox_kwargs(base_url, authenticated, datastream, {})
        return cls(str(found["datastream_id"]), credentials=found["credentials"])

    @classmethod
    def from_settings(
        cls, settings: Settings, *, datastream_id: str | None = None, authenticated: bool = True
    ) -> EdgeProvider:
        """From ``FLOWLAB_EDGE_*`` (datastream, region, credentials), as ``EdgeClient.from_settings``."""
        datastream = datastream_id or settings.edge_datastream_id
        if not datastream:
            raise ConfigError(
                "--datastream-id is required on a live Edge (or set FLOWLAB_EDGE_DATASTREAM_ID)"
            )
        credentials = EdgeCredentials.from_settings(settings) if authenticated else None
        return cls(datastream, credentials=credentials, region=settings.edge_region)

    @property
    def authenticated(self) -> bool:
        return self.credentials is not None

    @property
    def target(self) -> str:
        return self.datastream_id

    @property
    def defaults(self) -> Mapping[str, Any]:
        return {}

    @property
    def settings(self) -> Mapping[str, Any]:
        return {"authenticated": self.authenticated, "region": self.region}

    def check(self, sample: GuestSample | None = None) -> None:
        """Refuse a callFlows sample before anything is called."""
        if sample is not None and sample.provider != self.name:
            raise SampleError(
                f"{sample.source or 'the sample'} is a callFlows guest sample: an Edge batch needs "
                "identity.namespace and identity.id columns (optional eventType, data.*, xdm.*)"
            )

    # -- a session --

    async def open(self, base_url: str, timeout: float) -> None:
        """The session's token client (on this loop); with credentials, the token now (fails fast)."""
        self._url = interact_url(
            base_url, self.datastream_id, region=self.region, datastream_param=self.datastream_param
        )
        if self.credentials is None:
            return
        client = AsyncEdgeClient(
            base_url=base_url,
            datastream_id=self.datastream_id,
            credentials=self.credentials,
            timeout=timeout,
            max_connections=2,
        )
        client.tokens = self.tokens
        self._client = client
        try:
            await client.token()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def headers(self) -> Mapping[str, str] | None:
        if self.credentials is None:
            return None
        token = self.tokens.get()
        if token is None:  # about to expire mid-run: the next 401 (or this) refreshes it
            return None
        return self.credentials.headers(token)

    async def unauthorized(self, sent: Mapping[str, str] | None) -> bool:
        """Refresh the token once per guest after a 401 (only if it is still the one that was sent)."""
        if self.credentials is None or self._client is None:
            return False
        current = self.tokens.get()
        if current is not None and sent is not None and self._sent_token(sent, current):
            self.tokens.drop(current)
        await self._client.token()
        return True

    def _sent_token(self, sent: Mapping[str, str], token: AccessToken) -> bool:
        return sent.get("Authorization") == f"Bearer {token.value.get_secret_value()}"

    # -- the hot path --

    def prepare(self, guest: GuestRow) -> tuple[bytes, str]:
        """The v2 body for ``guest`` (§2.3) and its event type."""
        event_type = guest.fields.get("eventType", "")
        xdm: dict[str, Any] = {}
        if event_type:
            xdm["eventType"] = event_type
        xdm["timestamp"] = _now()
        xdm["identityMap"] = {guest.kind: [{"id": guest.value, "primary": True}]}
        event: dict[str, Any] = {"xdm": xdm}
        params = guest.params
        if params:
            extra = params.get("xdm")
            if extra:
                xdm.update(extra)
            data = params.get("data")
            if data:
                event["data"] = data
        return orjson.dumps({"event": event}), event_type

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
        event_type = str(context or "")
        body = text.encode()
        try:
            parsed = parse_edge_response(
                status, headers, body, latency_ms=latency_ms, url=self._url, raise_for_status=False
            )
        except APIError as exc:  # a 2xx that is not an interact envelope
            return self._row(
                guest, event_type, status, latency_ms, attempts, ok=False, error=exc.message,
                error_type="bad_response", body=text, headers=headers.items(),
            )  # fmt: skip
        if not parsed.ok:
            return self._row(
                guest, event_type, status, latency_ms, attempts, ok=False,
                error=edge_status_error(parsed).message, error_type=f"http_{status}", body=text,
                execution_ref=parsed.request_id or "", headers=headers.items(),
            )  # fmt: skip
        return self._read(guest, event_type, parsed, text, attempts)

    def _read(
        self, guest: GuestRow, event_type: str, parsed: EdgeResponse, text: str, attempts: int
    ) -> GuestResult:
        destinations: dict[str, Any] = {}
        attributes: dict[str, Any] = {}
        segments: set[str] = set()
        for destination in parsed.destinations:
            ids = sorted(dict.fromkeys(destination.segment_ids))
            segments.update(ids)
            destinations[destination.alias or destination.destination_id] = {
                "segments": ids,
                "attributes": destination.attributes,
            }
            attributes.update(destination.attributes)
        notes = [f"error: {p}" for p in parsed.errors] + [f"warning: {p}" for p in parsed.warnings]
        return self._row(
            guest, event_type, parsed.status_code, parsed.latency_ms, attempts, ok=True,
            error="; ".join(notes), body=text, execution_ref=parsed.request_id or "",
            headers=parsed.headers.items(), segments=sorted(segments), destinations=destinations,
            attributes=attributes,
        )  # fmt: skip

    def failure(
        self,
        guest: GuestRow,
        context: Any,
        error: str,
        error_type: str,
        latency_ms: float | None = None,
        attempts: int = 0,
    ) -> GuestResult:
        event_type = str(context or guest.fields.get("eventType", ""))
        return self._row(
            guest, event_type, None, latency_ms, attempts, ok=False, error=error, error_type=error_type
        )

    def fatal(self, result: GuestResult) -> str | None:
        """The message of an answer that every guest would get: bad datastream or refused credentials."""
        status = result.status_code
        if status is None or 200 <= status < 300:
            return None
        if status in (401, 403) or any(code in result.error for code in FATAL_CODES):
            return result.error
        return None

    @staticmethod
    def _row(
        guest: GuestRow,
        event_type: str,
        status: int | None,
        latency_ms: float | None,
        attempts: int,
        *,
        ok: bool,
        **fields: Any,
    ) -> GuestResult:
        return GuestResult(
            row=guest.row,
            guest=guest.value,
            identity=guest.kind,
            status_code=status,
            ok=ok,
            latency_ms=latency_ms,
            attempts=attempts,
            finished_at=time.time(),
            extra=guest.extra,
            event_type=event_type,
            **fields,
        )


def _now() -> str:
    """ISO 8601 UTC with milliseconds and ``Z``, as Adobe's examples write ``timestamp`` (§2.3)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"
