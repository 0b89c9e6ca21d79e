"""Execute one callFlows request the way Personalize does, and record why it answered what it did.

Pipeline (design.md, "How data flows" §3): validate → resolve the flow (exact, or ``*`` fuzzy: first live
flow in lexicographic order whose conditions pass) → guest → bucket (1–120, stable per guest) → variant →
conditions (JavaScript) → decision models → template → the rendered text is the body → a TRACKING record.

Choices where the reference leaves questions open (reference §10), also listed in the README:

* unknown friendlyId, and flows that are not live (DRAFT, PAUSED, COMPLETED…): **404** with the error body;
* guest outside the traffic allocation or filtered out by a condition: **200** ``{"message": "No matching
  variant"}`` (the wording SitecoreAI documents);
* no identity, or more than one: **400**; unknown browserId/email/identifier: a new visitor guest;
* unknown ``clientKey``: **401**; unknown ``pointOfSale``: accepted (as the Stream API does) unless the
  tenant is strict, and noted in the trace;
* a condition that throws or runs out of time or memory, or a template that fails: **500** with the error
  body naming the flow, the variant and the script, and the same error in the TRACKING record;
* the body is the template output unchanged, even when it is not valid JSON (the trace says so).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from flowlab.sandbox.errors import BadRequest, FlowFailed, NotFound, SandboxError, Unauthorized
from flowlab.sandbox.freemarker import TemplateError
from flowlab.sandbox.javascript import ScriptError
from flowlab.sandbox.limits import request_summary
from flowlab.sandbox.store import CompiledFlow, CompiledVariant, Tenant, new_ref

__all__ = ["NO_MATCH_BODY", "Engine", "Execution", "bucket_for", "unit_hash", "validate"]

NO_MATCH_BODY = '{"message":"No matching variant"}'
_IDENTITY = ("browserId", "email", "identifiers")
_KNOWN_FIELDS = frozenset(
    {
        "clientKey", "channel", "language", "currencyCode", "currency", "pointOfSale", "browserId", "email",
        "identifiers", "friendlyId", "params", "guestRef", "variants", "uri", "region", "page", "pos",
    }
)  # fmt: skip


def unit_hash(*parts: str) -> float:
    """A stable number in [0, 1) for a tuple of strings (bucketing and simulated outcomes)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def bucket_for(guest_ref: str) -> int:
    """Universal assignment: a bucket 1–120 derived from the guest ref, the same in every flow (§4.3)."""
    return 1 + int(unit_hash("bucket", guest_ref) * 120)


@dataclass
class Execution:
    """The outcome of one request: what to send back and the trace of how it was decided."""

    ref: str
    status_code: int
    body: str
    trace: dict[str, Any] = field(default_factory=dict)


def _text(body: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise BadRequest(f"{name} is required", f"the request body has no '{name}' field")
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string", f"'{name}' is {type(value).__name__}: {value!r}")
    return value


def validate(body: Any, tenant: Tenant) -> dict[str, Any]:
    """Check a callFlows body in the order of reference §9.2; return the normalised request."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", f"got {type(body).__name__}")
    if isinstance(body.get("context"), dict) and "clientKey" not in body:
        body = {**body["context"], **{k: v for k, v in body.items() if k != "context"}}  # legacy wrapper
    client_key = _text(body, "clientKey", required=True)
    if client_key != tenant.client_key:
        raise Unauthorized(
            "unknown clientKey",
            "this sandbox tenant's client key is shown by GET /sandbox/info (and in Flow Lab's sidebar)",
        )
    friendly_id = _text(body, "friendlyId", required=True) or ""
    if not friendly_id.strip():
        raise BadRequest("friendlyId is required", "friendlyId is empty")
    given = [name for name in _IDENTITY if body.get(name) is not None]
    if len(given) > 1:
        raise BadRequest(
            "use only one of browserId, email or identifiers",
            f"the request has {' and '.join(given)}; send exactly one identity",
        )
    if not given:
        raise BadRequest("one of browserId, email or identifiers is required", "the request names no guest")
    identity_kind = given[0]
    identity: Any = body[identity_kind]
    if identity_kind == "identifiers":
        if not isinstance(identity, dict):
            raise BadRequest(
                "identifiers must be one object {provider, id}",
                "callFlows takes a single identifiers object; arrays are for IDENTITY events (reference §2.1)",
            )
        if not all(isinstance(identity.get(k), str) and identity.get(k) for k in ("provider", "id")):
            raise BadRequest("identifiers needs a non-empty provider and id", f"got {identity!r}")
    elif not isinstance(identity, str) or not identity.strip():
        raise BadRequest(f"{identity_kind} must be a non-empty string", f"got {identity!r}")
    language = _text(body, "language")
    if language is not None and not language.strip():
        raise BadRequest("language must not be empty", "send a language code such as EN, or leave it out")
    currency = _text(body, "currencyCode") or _text(body, "currency")
    channel = _text(body, "channel") or "WEB"
    pos = _text(body, "pointOfSale") or _text(body, "pos") or ""
    params = body.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise BadRequest("params must be a JSON object", f"params is {type(params).__name__}")
    return {
        "clientKey": client_key,
        "friendlyId": friendly_id.strip(),
        "channel": channel,
        "language": language,
        "currencyCode": currency,
        "pointOfSale": pos,
        "identity": (identity_kind, identity),
        "params": params,
        "unknownFields": sorted(set(body) - _KNOWN_FIELDS),
    }


class Engine:
    """Runs requests against one tenant. Not thread-safe by design: the sandbox serves it from one loop."""

    def __init__(self, tenant: Tenant, *, strict_pos: bool = False) -> None:
        self.tenant = tenant
        self.strict_pos = strict_pos

    def execute(self, body: Any) -> Execution:
        """Run one request; ``SandboxError`` for bad input, otherwise an ``Execution`` (even when 500)."""
        started = time.perf_counter()
        req = validate(body, self.tenant)
        ref = new_ref()
        warnings: list[str] = []
        pos = req["pointOfSale"]
        if pos and pos not in self.tenant.points_of_sale:
            message = f"pointOfSale '{pos}' is not configured in this tenant"
            if self.strict_pos:
                raise BadRequest(message, f"configured: {', '.join(sorted(self.tenant.points_of_sale))}")
            warnings.append(message + " (accepted, as the Stream API does)")
        if req["unknownFields"]:
            warnings.append(f"ignored unknown fields: {', '.join(req['unknownFields'])}")

        candidates = self.tenant.candidates(req["friendlyId"])
        live = [f for f in candidates if f.live]
        if not live:
            raise _no_flow(req["friendlyId"], candidates)

        kind, value = req["identity"]
        guest, created = self.tenant.find_or_create_guest(kind, value)
        guest_ref = str(guest["ref"])
        bucket = bucket_for(guest_ref)
        request_ctx = {k: req[k] for k in ("params", "channel", "pointOfSale", "language", "currencyCode")}
        request_ctx["friendlyId"] = req["friendlyId"]
        pos_ctx = self.tenant.points_of_sale.get(pos, {})
        trace: dict[str, Any] = {
            "ref": ref,
            "occurredAt": int(time.time() * 1000),
            "request": request_summary(
                {k: v for k, v in req.items() if k != "identity"} | {"identity": {kind: value}}
            ),
            "guest": {
                "ref": guest_ref,
                "created": created,
                "identity": kind,
                "guestType": guest.get("guestType"),
            },
            "bucket": bucket,
            "candidates": [],
            "warnings": warnings,
        }

        chosen: tuple[CompiledFlow, CompiledVariant, Any] | None = None
        failure: FlowFailed | None = None
        cond_started = time.perf_counter()
        for flow in live:
            variant = flow.variant_for(bucket)
            attempt: dict[str, Any] = {"friendlyId": flow.friendly_id, "flowRef": flow.ref, "conditions": []}
            trace["candidates"].append(attempt)
            if variant is None:
                attempt["result"] = f"bucket {bucket} is outside the traffic allocation"
                continue
            attempt["variant"] = {
                "ref": variant.ref,
                "name": variant.name,
                "buckets": [variant.low, variant.high],
            }
            passed, filter_value, failure = _conditions(flow, variant, guest, request_ctx, pos_ctx, attempt)
            if failure is not None:
                break
            if passed:
                attempt["result"] = "executed"
                chosen = (flow, variant, filter_value)
                break
            attempt["result"] = "conditions did not pass"
        conditions_ms = (time.perf_counter() - cond_started) * 1000

        if chosen is None:
            flow = live[0]
            trace["flow"] = _flow_summary(flow)
            status, text = (failure.status, json.dumps(failure.body())) if failure else (200, NO_MATCH_BODY)
            trace.update(status=status, outcome="error" if failure else "no matching variant", body=text)
            trace["timings"] = {
                "conditionsMs": conditions_ms,
                "totalMs": (time.perf_counter() - started) * 1000,
            }
            self._record(trace, guest, flow, None, [], req, error=failure.message if failure else None)
            return Execution(ref, status, text, trace)

        flow, variant, filter_value = chosen
        trace["flow"] = _flow_summary(flow)
        trace["variant"] = {"ref": variant.ref, "name": variant.name, "isControl": variant.is_control}
        text, failure = self._run_variant(
            flow, variant, guest, request_ctx, pos_ctx, filter_value, bucket, trace
        )
        status, text = (failure.status, json.dumps(failure.body())) if failure else (200, text)
        trace["timings"]["conditionsMs"] = conditions_ms
        trace["timings"]["totalMs"] = (time.perf_counter() - started) * 1000
        trace.update(status=status, outcome="error" if failure else "executed", body=text)
        error = failure.message if failure else None
        self._record(trace, guest, flow, variant, trace["offers"], req, error=error)
        return Execution(ref, status, text, trace)

    def _run_variant(
        self,
        flow: CompiledFlow,
        variant: CompiledVariant,
        guest: dict[str, Any],
        request_ctx: dict[str, Any],
        pos_ctx: dict[str, Any],
        filter_value: Any,
        bucket: int,
        trace: dict[str, Any],
    ) -> tuple[str, FlowFailed | None]:
        """Decision models, then the template: the body text, or the failure that stopped it."""
        decision_started = time.perf_counter()
        results: list[dict[str, Any]] = []
        offer_refs: list[str] = []
        trace["decisionModels"] = []
        for model_ref in variant.model_refs:
            model = self.tenant.models[model_ref]
            outcome = model.evaluate(guest=guest, request=request_ctx, pos=pos_ctx, bucket=bucket)
            results.append(outcome.result)
            offer_refs.extend(outcome.offer_refs)
            trace["decisionModels"].append(
                {"ref": model_ref, "name": model.name, "result": outcome.result, "rowsHit": outcome.rows_hit}
            )
        offers = [self.tenant.offers[r] for r in offer_refs if r in self.tenant.offers]
        missing = [r for r in offer_refs if r not in self.tenant.offers]
        if missing:
            trace["warnings"].append(f"decision output names unknown offers: {', '.join(missing)}")
        trace["offers"] = [o["ref"] for o in offers]
        template_started = time.perf_counter()
        trace["timings"] = {"decisionMs": (template_started - decision_started) * 1000}
        if variant.template is None:
            trace["warnings"].append(
                f"variant '{variant.name}' has no API response template: the body is empty"
            )
            text = ""
        else:
            data = {
                "guest": guest,
                "request": request_ctx,
                "offers": offers,
                "decisionModelResults": results[0] if results else {"decisionModelResultNodes": []},
                "filter": filter_value,
                "pos": pos_ctx,
            }
            try:
                text = variant.template.render(data, {"getDecisionModelResultNode": _node_finder(results)})
            except TemplateError as exc:
                failed = FlowFailed(
                    f"the API response template of flow '{flow.friendly_id}', variant '{variant.name}' failed: {exc}",
                    "fix the template in the flow definition (GET /sandbox/flows/{friendlyId} shows it)",
                )
                trace["template"] = {"error": str(exc)}
                return "", failed
        trace["timings"]["templateMs"] = (time.perf_counter() - template_started) * 1000
        try:
            orjson.loads(text)
            trace["template"] = {"validJson": True}
        except orjson.JSONDecodeError as exc:
            trace["template"] = {"validJson": False, "jsonError": str(exc)}
            trace["warnings"].append(
                f"the template printed text that is not valid JSON ({exc}); sent unchanged"
            )
        return text, None

    def _record(
        self,
        trace: dict[str, Any],
        guest: dict[str, Any],
        flow: CompiledFlow,
        variant: CompiledVariant | None,
        offer_refs: list[str],
        req: dict[str, Any],
        *,
        error: str | None,
    ) -> None:
        """Append the TRACKING record (reference §6.4) and keep the trace."""
        guest_ref = str(guest["ref"])
        kind, value = req["identity"]
        browser_ref = value if kind == "browserId" else None
        session_ref = self.tenant.session_ref(guest_ref, req["channel"], browser_ref, req["pointOfSale"])
        execution: dict[str, Any] = {
            "ref": trace["ref"],
            "occurredAt": trace["occurredAt"],
            "flowRef": flow.ref,
            "flowFriendlyId": flow.friendly_id,
            "flowVariantRef": variant.ref if variant else None,
            "guestRef": guest_ref,
            "bucket": trace["bucket"],
            "status": "ERROR" if error else "SUCCESS",
        }
        if error:
            execution.update(error=error, errorCategory="ERROR")
        else:
            execution["flowExecutionTimeMs"] = round(trace["timings"]["totalMs"], 3)
        models = trace.get("decisionModels") or []
        if models:
            first = models[0]["result"]
            execution["decision"] = {
                "decisionModelRef": first.get("decisionModelRef"),
                "decisionModelVariantRef": first.get("decisionModelVariantRef"),
                "decisionModelExecutionTimeMs": round(trace["timings"].get("decisionMs", 0.0), 3),
                "output": {"offers": [{"ref": r} for r in offer_refs]},
                "results": [
                    orjson.dumps(out).decode()
                    for m in models
                    for node in m["result"].get("decisionModelResultNodes", [])
                    for out in node.get("outputs", [])
                ],
            }
        record = {
            "ref": new_ref(),
            "type": "TRACKING",
            "status": "PROCESSED",
            "channel": req["channel"],
            "pointOfSale": req["pointOfSale"],
            "browserRef": browser_ref,
            "sessionRef": session_ref,
            "flowExecutionRef": trace["ref"],
            "createdAt": trace["occurredAt"],
            "arbitraryData": {
                "category": "FAILED" if error else ("EXECUTED" if variant else "NOT_EXECUTED"),
                "flowExecution": execution,
            },
        }
        self.tenant.add_tracking(guest_ref, record)
        trace["tracking"] = record["ref"]
        self.tenant.add_trace(trace["ref"], trace)


def _conditions(
    flow: CompiledFlow,
    variant: CompiledVariant,
    guest: dict[str, Any],
    request_ctx: dict[str, Any],
    pos_ctx: dict[str, Any],
    attempt: dict[str, Any],
) -> tuple[bool, Any, FlowFailed | None]:
    """Run a variant's conditions; all must be truthy. The last value becomes ``filter`` (reference §4.2)."""
    filter_value: Any = None
    values = {"guest": guest, "request": request_ctx, "entity": None, "pos": pos_ctx}
    for condition in variant.conditions:
        started = time.perf_counter()
        try:
            result = condition.script.run(values)
        except ScriptError as exc:
            attempt["conditions"].append(
                {"friendlyId": condition.friendly_id, "error": str(exc), "kind": exc.kind}
            )
            return (
                False,
                None,
                FlowFailed(
                    f"condition '{condition.friendly_id}' of flow '{flow.friendly_id}' failed: {exc}",
                    f"variant '{variant.name}'; fix the condition's JavaScript (limits: the script runtime's "
                    "time and memory caps stop runaway scripts)",
                ),
            )
        passed = bool(result.value) and result.value != {} and result.value != []
        attempt["conditions"].append(
            {
                "friendlyId": condition.friendly_id,
                "passed": passed,
                "value": result.value,
                "logs": result.logs,
                "ms": round((time.perf_counter() - started) * 1000, 3),
            }
        )
        if not passed:
            return False, None, None
        filter_value = result.value
    return True, filter_value, None


def _node_finder(results: list[dict[str, Any]]) -> Any:
    def get_decision_model_result_node(name: str) -> dict[str, Any]:
        for result in results:
            for node in result.get("decisionModelResultNodes", []):
                if node.get("name", "").strip() == str(name).strip():
                    return dict(node)
        return {"name": name, "error": True, "outputs": [], "errorCause": f"no decision node named '{name}'"}

    return get_decision_model_result_node


def _flow_summary(flow: CompiledFlow) -> dict[str, Any]:
    d = flow.definition
    return {k: d.get(k) for k in ("ref", "friendlyId", "name", "type", "subtype", "status")}


def _no_flow(friendly_id: str, candidates: list[CompiledFlow]) -> SandboxError:
    if not candidates:
        return NotFound(
            f"no flow with friendlyId '{friendly_id}'",
            "check the friendlyId (Setup details in Personalize; GET /sandbox/flows in the sandbox); "
            "a trailing * matches by prefix",
        )
    states = ", ".join(f"{f.friendly_id} is {f.status}" for f in candidates)
    return NotFound(
        f"no live flow with friendlyId '{friendly_id}'",
        f"{states}; only flows with status LIVE or PRODUCTION and type INTERACTIVE_API_FLOW execute",
    )
