"""callFlows as a batch provider (``flowlab.batch.provider.Provider``): what the runner did before it knew
providers, unchanged on the wire and as fast.

A row becomes a ``POST /v2/callFlows`` body through a **template** per combination of overrides: each
combination is validated by ``CallFlowRequest`` once, with a placeholder identity, and a guest's identity
takes the placeholder's place and its params go last, exactly as ``to_body()`` lays them out (no pydantic
per guest: on 2 cores that is measurable throughput). An answer's variant and offers are read once per
distinct body (bodies repeat: one per variant, often). Retries: 408, 429 and 5xx, also after a read error
(the project's ``RetryPolicy`` default).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from flowlab.batch.runs import GuestResult
from flowlab.batch.samples import GuestRow, GuestSample
from flowlab.errors import RequestValidationError, SampleError
from flowlab.http import FlowResponse, status_error
from flowlab.personalize.models import CallFlowRequest
from flowlab.personalize.offers import find_offers
from flowlab.personalize.variants import detect_variant

__all__ = ["SIMULATE_HEADER", "PersonalizeProvider"]

#: Flow Lab sandbox only: ``1`` runs the flow in any status (DRAFT, PAUSED...): simulate before publishing.
SIMULATE_HEADER = "X-Flowlab-Simulate"

_BODY_CACHE_SIZE = 2048  # distinct response bodies remembered (oldest dropped first)
_REQUEST_FIELDS = ("channel", "pointOfSale", "language", "currencyCode")
#: A validated request for one combination of overrides, and its ``to_body()`` items.
_Template = tuple[CallFlowRequest, tuple[tuple[str, Any], ...]]


class PersonalizeProvider:
    """Sitecore Personalize ``POST /v2/callFlows`` for every guest of a callFlows sample.

    ``defaults`` are request fields (wire names: channel, pointOfSale, language, currencyCode) that rows may
    override; ``variant_path`` names the variant's JSON path in the body (else it is detected).
    ``simulate`` sends ``X-Flowlab-Simulate: 1`` with every request, so a sandbox runs the flow in any status
    (a live tenant would ignore it and run the live flow: ``BatchOptions.check_target`` refuses one).
    """

    name = "personalize"
    path = "/v2/callFlows"
    retry_statuses: frozenset[int] | None = None
    retry_sent = True

    def __init__(
        self,
        client_key: str,
        friendly_id: str,
        *,
        defaults: Mapping[str, str | None] | None = None,
        variant_path: str | None = None,
        simulate: bool = False,
    ) -> None:
        self.client_key = client_key
        self.simulate = simulate
        self._headers = {SIMULATE_HEADER: "1"} if simulate else None
        self.friendly_id = friendly_id
        self._defaults = dict(defaults or {})
        self.set_defaults = {k: v for k, v in self._defaults.items() if v is not None}
        self.variant_path = variant_path
        self._templates: dict[tuple[tuple[str, str], ...], _Template | RequestValidationError] = {}
        self._bodies: dict[str, tuple[str, str, list[str]]] = {}
        self._url = self.path

    def __repr__(self) -> str:
        return f"PersonalizeProvider(friendly_id={self.friendly_id!r})"

    @property
    def target(self) -> str:
        return self.friendly_id

    @property
    def defaults(self) -> Mapping[str, Any]:
        return self._defaults

    @property
    def settings(self) -> Mapping[str, Any]:
        return {"variantPath": self.variant_path, **({"simulate": True} if self.simulate else {})}

    def check(self, sample: GuestSample | None = None) -> None:
        """Refuse an Edge sample, and a client key, friendlyId or defaults that can make no valid request."""
        if sample is not None and sample.provider != self.name:
            raise SampleError(
                f"{sample.source or 'the sample'} is an AEP Edge sample (identity.namespace, identity.id): "
                "run it with the Edge provider (--provider edge), or give a callFlows guest CSV "
                "(browserId, email or identifiers.provider + identifiers.id)"
            )
        CallFlowRequest.build(
            clientKey=self.client_key, friendlyId=self.friendly_id, browserId="check", **self.set_defaults
        )

    async def open(self, base_url: str, timeout: float) -> None:
        self._url = f"{base_url.rstrip('/')}{self.path}"

    async def close(self) -> None:
        return None

    def headers(self) -> Mapping[str, str] | None:
        return self._headers  # None on the plain callFlows hot path

    async def unauthorized(self, sent: Mapping[str, str] | None) -> bool:
        return False  # a client key is not refreshed: a 401 is the answer

    def fatal(self, result: GuestResult) -> str | None:
        return None  # callFlows answers are per guest; an unknown flow fails each row (as it always did)

    # -- the hot path --

    def prepare(self, guest: GuestRow) -> tuple[bytes, CallFlowRequest]:
        """The body for ``guest`` and the validated request of its combination of overrides."""
        key = tuple(guest.fields.items())
        template = self._templates.get(key)
        if template is None:
            template = self._templates[key] = self._template(guest.fields)
        if isinstance(template, RequestValidationError):
            raise template
        request, items = template
        identity = guest.identity_fields
        body: dict[str, Any] = {}
        for name, value in items:
            if name == "browserId":
                body.update(identity)
            else:
                body[name] = value
        if guest.params:
            body["params"] = guest.params if isinstance(guest.params, dict) else dict(guest.params)
        return orjson.dumps(body), request

    def _template(self, fields: Mapping[str, str]) -> _Template | RequestValidationError:
        placeholder = GuestRow(0, "browserId", "placeholder", fields)
        try:
            request = placeholder.to_request(self.client_key, self.friendly_id, self.set_defaults)
        except RequestValidationError as exc:
            return exc
        return request, tuple(request.to_body().items())

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
        execution_ref = headers.get("X-Flowlab-Execution", "")
        if not 200 <= status < 300:
            response = FlowResponse(status, headers, text, latency_ms, url=self._url)
            return self._result(
                guest, context, status, latency_ms, attempts,
                error=status_error(response).message, error_type=f"http_{status}", body=text,
                execution_ref=execution_ref, headers=headers.items(),
            )  # fmt: skip
        variant, source, offers = self._read_body(text)
        return self._result(
            guest, context, status, latency_ms, attempts, body=text, execution_ref=execution_ref,
            variant=variant, variant_source=source, offers=offers, headers=headers.items(),
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
        return self._result(guest, context, None, latency_ms, attempts, error=error, error_type=error_type)

    def _read_body(self, text: str) -> tuple[str, str, list[str]]:
        """Variant, how it was found, and offer titles; cached, as bodies repeat."""
        found = self._bodies.get(text)
        if found is None:
            try:
                parsed = orjson.loads(text) if text.strip() else None
            except orjson.JSONDecodeError:
                parsed = None
            guess = detect_variant(parsed, text=text, path=self.variant_path)
            found = (guess.label, guess.source, [offer.title for offer in find_offers(parsed)])
            if len(self._bodies) >= _BODY_CACHE_SIZE:
                self._bodies.pop(next(iter(self._bodies)))
            self._bodies[text] = found
        return found

    def _result(
        self,
        guest: GuestRow,
        request: CallFlowRequest | None,
        status: int | None,
        latency_ms: float | None = None,
        attempts: int = 0,
        **fields: Any,
    ) -> GuestResult:
        sent: tuple[str, ...]
        if request is not None:  # the values sent, as the model normalised them
            sent = (
                request.channel,
                request.point_of_sale,
                request.language or "",
                request.currency_code or "",
            )
        else:
            given = {**self.set_defaults, **guest.fields}
            sent = tuple(str(given.get(f) or "") for f in _REQUEST_FIELDS)
        return GuestResult(
            row=guest.row,
            guest=guest.value,
            identity=guest.kind,
            status_code=status,
            ok=status is not None and 200 <= status < 300,
            latency_ms=latency_ms,
            attempts=attempts,
            finished_at=time.time(),
            channel=sent[0],
            point_of_sale=sent[1],
            language=sent[2],
            currency_code=sent[3],
            extra=guest.extra,
            **fields,
        )
