"""One previewed call, everything the app shows about it: response, offers, variant, explanation, advice.

``run_preview`` never raises for API trouble: a refused connection, a timeout or a 404 becomes
``Preview.error`` (with ``Preview.advice`` saying what to fix), so the Preview, Compare and History pages
render every outcome the same way. On the sandbox it also fetches the execution trace and explains it.
"""

from __future__ import annotations

import http
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flowlab.admin import SandboxAdmin
from flowlab.errors import FlowLabError
from flowlab.http import FlowResponse, status_error
from flowlab.personalize.client import FlowClient
from flowlab.personalize.models import CallFlowRequest
from flowlab.personalize.offers import Offer
from flowlab.personalize.variants import VariantGuess, detect_variant
from flowlab.redaction import redact_url
from flowlab.workbench.advice import Advice, advise
from flowlab.workbench.catalog import FlowSummary
from flowlab.workbench.explain import Explanation, explain_trace

__all__ = ["Preview", "run_preview"]

_PATH = "/v2/callFlows"


@dataclass(frozen=True)
class Preview:
    """The outcome of one call: ``response`` when the API answered, ``error`` when it failed (or both)."""

    request: CallFlowRequest
    base_url: str
    target_name: str = ""
    is_sandbox: bool = False
    label: str = ""
    response: FlowResponse | None = None
    error: FlowLabError | None = None
    variant: VariantGuess | None = None
    variant_path: str | None = None
    trace: Mapping[str, Any] | None = None
    explanation: Explanation | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def ok(self) -> bool:
        return self.response is not None and self.response.ok and self.error is None

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + _PATH

    @property
    def offers(self) -> list[Offer]:
        return list(self.response.offers) if self.response is not None and self.response.ok else []

    @property
    def advice(self) -> Advice | None:
        return advise(self.error) if self.error is not None else None

    @property
    def status_text(self) -> str:
        """``200 OK``, ``404 Not Found`` or ``no answer``."""
        if self.response is None:
            return "no answer"
        code = self.response.status_code
        try:
            return f"{code} {http.HTTPStatus(code).phrase}"
        except ValueError:
            return str(code)

    @property
    def who(self) -> str:
        """The persona's name, else the identity (``email lena@…``)."""
        kind, value = self.request.identity
        return self.label or f"{kind} {value}"

    def summary(self) -> dict[str, str]:
        """The facts the compare view lines up side by side (field → short text)."""
        facts = {
            "Flow": self.request.friendly_id,
            "Status": self.status_text,
            "Variant (from the body)": self.variant.label if self.variant else "—",
        }
        if self.is_sandbox:
            truth = self.explanation
            facts["Variant (sandbox truth)"] = (truth.variant or truth.outcome) if truth else "—"
            facts["Flow that ran"] = (truth.flow or "—") if truth else "—"
            facts["Bucket"] = str(truth.bucket) if truth and truth.bucket else "—"
            fired = [
                r.text.split(" fired")[0] + " fired"
                for r in (truth.reasons if truth else ())
                if r.step == "decision" and " fired" in r.text
            ]
            facts["Rule that fired"] = "; ".join(fired) or "—"
        facts["Offers"] = ", ".join(o.title for o in self.offers) or "none"
        if self.advice is not None:
            facts["Problem"] = self.advice.title
        facts["Latency"] = f"{self.response.latency_ms:.0f} ms" if self.response is not None else "—"
        return facts

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready record for history exports: the exact request and what came back (no secrets)."""
        record: dict[str, Any] = {
            "at": self.at.isoformat(timespec="seconds"),
            "target": self.target_name,
            "url": redact_url(self.url),
            "who": self.who,
            "request": self.request.to_body(),
            "status": self.response.status_code if self.response is not None else None,
            "latencyMs": round(self.response.latency_ms, 1) if self.response is not None else None,
            "variant": self.variant.label if self.variant else None,
            "offers": [o.title for o in self.offers],
        }
        if self.explanation is not None:
            record["sandbox"] = {
                "flow": self.explanation.flow,
                "variant": self.explanation.variant,
                "bucket": self.explanation.bucket,
                "why": self.explanation.lines,
            }
        if self.advice is not None:
            record["error"] = {
                "title": self.advice.title,
                "detail": self.advice.detail,
                "fix": self.advice.fix,
            }
        return record


def _explain(admin: SandboxAdmin, ref: str) -> tuple[Mapping[str, Any] | None, Explanation | None]:
    try:
        trace = admin.execution(ref)
        flows = [FlowSummary.from_admin(f) for f in admin.flows()]
        explanation = explain_trace(trace, models=admin.decision_models(), offers=admin.offers(), flows=flows)
    except FlowLabError:
        return None, None  # the trace is a bonus: the preview stands without it
    return trace, explanation


def run_preview(
    request: CallFlowRequest,
    *,
    base_url: str,
    target_name: str = "",
    is_sandbox: bool = False,
    label: str = "",
    variant_path: str | None = None,
    timeout: float = 10.0,
    client: FlowClient | None = None,
    admin: SandboxAdmin | None = None,
) -> Preview:
    """Send ``request`` once (no retries: each execution is a tracking event) and gather what to show."""
    common: dict[str, Any] = {
        "request": request,
        "base_url": base_url,
        "target_name": target_name,
        "is_sandbox": is_sandbox,
        "label": label,
        "variant_path": variant_path,
    }
    try:
        if client is None:
            with FlowClient(base_url=base_url, timeout=timeout, retries=0) as own:
                response = own.call(request, raise_for_status=False)
        else:
            response = client.call(request, raise_for_status=False)
    except FlowLabError as exc:
        return Preview(**common, error=exc)
    error = None if response.ok else status_error(response)
    variant = detect_variant(response.json_body, text=response.text, path=variant_path or None)
    trace = explanation = None
    if is_sandbox and response.execution_ref:
        if admin is None:
            with SandboxAdmin(base_url=base_url, timeout=timeout) as own_admin:
                trace, explanation = _explain(own_admin, response.execution_ref)
        else:
            trace, explanation = _explain(admin, response.execution_ref)
    return Preview(
        **common,
        response=response,
        error=error,
        variant=variant if response.ok else None,
        trace=trace,
        explanation=explanation,
    )
