"""Why a guest got what they got: a sandbox execution trace in plain language, and a diff for comparisons.

The real API says nothing about why (reference §3.1); the sandbox records every step of an execution
(``GET /sandbox/executions/{ref}``): which flows were tried, the guest's bucket, each condition's result,
the decision-table rows that fired and the offers they named. ``explain_trace`` turns that into sentences a
marketer can read, such as::

    Bucket 37 of 120 → variant 'B – 10% off' (buckets 61–120)
    Condition utm_campaign_present passed (returned {campaign: spring_trail})
    Decision table 'Hero Offer' row 2 of 7 fired: Tier = none, Campaign = spring_trail
        (rule: Tier is any, Campaign is spring_trail) → offer 'The Spring Trail Collection'

Pass the sandbox's decision models and offers to name rules and offers; without them the explanation
still works, with refs instead of names. ``differing`` and ``diff_bodies`` power the compare view.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from flowlab.workbench.catalog import FlowSummary, entry_text

__all__ = ["Explanation", "Reason", "Verdict", "diff_bodies", "differing", "explain_trace", "flatten_json"]

Verdict = Literal["pass", "fail", "info", "warn"]


@dataclass(frozen=True)
class Reason:
    """One step of the decision: ``step`` says which (flow, guest, bucket, condition, decision…)."""

    step: str
    text: str
    verdict: Verdict = "info"


@dataclass(frozen=True)
class Explanation:
    """What the sandbox decided for one execution, and the steps that led there."""

    outcome: str
    status: int
    flow: str | None
    flow_name: str | None
    variant: str | None
    variant_ref: str | None
    is_control: bool | None
    bucket: int | None
    offers: tuple[str, ...]
    reasons: tuple[Reason, ...]

    @property
    def headline(self) -> str:
        """One sentence: the variant and flow that ran, or why none did."""
        if self.outcome == "executed" and self.variant:
            control = " (control)" if self.is_control else ""
            return f"Variant '{self.variant}'{control} of {self.flow}, bucket {self.bucket} of 120"
        if self.outcome == "no matching variant":
            return f"No matching variant in {self.flow}: the API answered the 'No matching variant' message"
        failed = next((r.text for r in self.reasons if r.step == "error"), "the flow failed")
        return f"Error {self.status}: {failed}"

    @property
    def lines(self) -> list[str]:
        return [r.text for r in self.reasons]


def _show(value: Any) -> str:
    """A value the way a person writes it: ``{campaign: spring_trail}``, ``[a, b]``, ``true``."""
    if isinstance(value, str):
        return value if value else '""'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return json.dumps(value) if isinstance(value, float) else str(value)


def _buckets(low: int, high: int) -> str:
    return f"bucket {low}" if low == high else f"buckets {low}–{high}"


def _index(items: Iterable[Mapping[str, Any]] | Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return {str(k): v for k, v in items.items()}
    return {str(i.get("ref")): i for i in items if isinstance(i, Mapping)}


def _offer_name(ref: str, offers: Mapping[str, Mapping[str, Any]]) -> str:
    offer = offers.get(ref)
    if offer is None:
        return f"offer {ref[:8]}…"
    attributes = offer.get("attributes") or {}
    title = attributes.get("title") if isinstance(attributes, Mapping) else None
    return f"'{title or offer.get('name') or ref}'"


def _rule_text(node_def: Mapping[str, Any] | None, index: int) -> tuple[str, int]:
    if not node_def:
        return "", 0
    rules = node_def.get("rules") or []
    labels = [str(i.get("label") or i.get("expression") or "?") for i in node_def.get("inputs") or []]
    if not 0 <= index < len(rules):
        return "", len(rules)
    entries = list(rules[index].get("inputEntries") or [])
    parts = [f"{label} is {entry_text(entry)}" for label, entry in zip(labels, entries, strict=False)]
    return ", ".join(parts), len(rules)


def _node_offers(node: Mapping[str, Any], offers: Mapping[str, Mapping[str, Any]]) -> list[str]:
    names = []
    for output in node.get("outputs") or []:
        for value in output.values():
            if isinstance(value, Mapping) and "offer" in str(value.get("type", "")) and value.get("value"):
                names.append(_offer_name(str(value["value"]), offers))
    return names


def _decision_reasons(
    model: Mapping[str, Any],
    definitions: Mapping[str, Mapping[str, Any]],
    offers: Mapping[str, Mapping[str, Any]],
) -> list[Reason]:
    reasons: list[Reason] = []
    definition = definitions.get(str(model.get("ref"))) or {}
    node_defs = {str(n.get("name")): n for n in definition.get("nodes") or [] if isinstance(n, Mapping)}
    hits = {str(h.get("node")): h for h in model.get("rowsHit") or []}
    result = model.get("result") or {}
    reasons.append(Reason("decision", f"Decision model '{model.get('name')}' ran", "info"))
    for node in result.get("decisionModelResultNodes") or []:
        name = str(node.get("name"))
        if node.get("error"):
            cause = node.get("errorCause") or "an error"
            reasons.append(Reason("decision", f"'{name}' failed: {cause}", "fail"))
            continue
        if node.get("type") == "programmable":
            outputs = node.get("outputs") or [{}]
            shown = ", ".join(f"{k} = {_show(v)}" for out in outputs for k, v in out.items()) or "nothing"
            reasons.append(Reason("decision", f"Programmable '{name}' returned {shown}", "info"))
        elif node.get("type") == "decisionTable":
            hit = hits.get(name)
            if hit is None:
                reasons.append(
                    Reason("decision", f"Decision table '{name}': no row matched → no offer", "fail")
                )
                continue
            index = int(hit.get("ruleIndex", -1))
            rule, count = _rule_text(node_defs.get(name), index)
            inputs = ", ".join(f"{k} = {_show(v)}" for k, v in (hit.get("inputs") or {}).items())
            of = f" of {count}" if count else ""
            text = f"Decision table '{name}' row {index + 1}{of} fired: {inputs or 'no inputs'}"
            if rule:
                text += f" (rule: {rule})"
            picked = _node_offers(node, offers)
            if picked:
                text += f" → offer{'s' if len(picked) > 1 else ''} {', '.join(picked)}"
            reasons.append(Reason("decision", text, "pass"))
        else:
            outputs = node.get("outputs") or []
            reasons.append(
                Reason("decision", f"'{name}' ({node.get('type')}) returned {_show(outputs)}", "info")
            )
    return reasons


def _candidate_reasons(
    candidate: Mapping[str, Any], bucket: int, fuzzy: bool, flows: Mapping[str, FlowSummary]
) -> list[Reason]:
    reasons: list[Reason] = []
    prefix = f"{candidate.get('friendlyId')}: " if fuzzy else ""
    variant = candidate.get("variant")
    if not variant:
        reasons.append(Reason("bucket", f"{prefix}bucket {bucket} is outside the traffic allocation", "fail"))
        return reasons
    low, high = (list(variant.get("buckets") or []) + [0, 0])[:2]
    text = f"{prefix}Bucket {bucket} of 120 → variant '{variant.get('name')}' ({_buckets(low, high)})"
    summary = flows.get(str(candidate.get("friendlyId")))
    others = [v for v in summary.variants if v.name != variant.get("name")] if summary else []
    if others:
        text += "; " + ", ".join(f"'{v.name}' gets {_buckets(v.low, v.high)}" for v in others)
    elif summary is not None:
        text += ", the only variant"
    reasons.append(Reason("bucket", text, "info"))
    for condition in candidate.get("conditions") or []:
        cid = condition.get("friendlyId")
        if "error" in condition:
            reasons.append(
                Reason("condition", f"{prefix}Condition {cid} failed to run: {condition['error']}", "fail")
            )
        elif condition.get("passed"):
            value = _show(condition.get("value"))
            reasons.append(Reason("condition", f"{prefix}Condition {cid} passed (returned {value})", "pass"))
        else:
            value = _show(condition.get("value"))
            skipped = "flow skipped" if fuzzy else "no variant for this guest"
            reasons.append(
                Reason(
                    "condition",
                    f"{prefix}Condition {cid} did not pass (returned {value}) → {skipped}",
                    "fail",
                )
            )
    return reasons


def explain_trace(
    trace: Mapping[str, Any],
    *,
    models: Iterable[Mapping[str, Any]] | Mapping[str, Any] | None = None,
    offers: Iterable[Mapping[str, Any]] | Mapping[str, Any] | None = None,
    flows: Iterable[FlowSummary] | None = None,
) -> Explanation:
    """Plain-language reasons for one sandbox execution trace (``SandboxAdmin.execution(ref)``).

    ``models`` and ``offers`` are the sandbox's decision models and offers (lists from the admin API or
    dicts by ref), used to print rules and offer titles; ``flows`` adds the other variants' buckets.
    """
    model_defs = _index(models)
    offer_defs = _index(offers)
    flow_index = {f.friendly_id: f for f in flows or []}
    request = trace.get("request") or {}
    asked = str(request.get("friendlyId") or "")
    fuzzy = asked.endswith("*")
    bucket = int(trace.get("bucket") or 0)
    candidates = list(trace.get("candidates") or [])
    reasons: list[Reason] = []

    if fuzzy:
        tried = ", ".join(str(c.get("friendlyId")) for c in candidates) or "none"
        reasons.append(
            Reason(
                "flow",
                f"'{asked}' matches live flows by prefix; they are tried in name order and the first whose "
                f"conditions pass runs (tried: {tried})",
            )
        )
    guest = trace.get("guest") or {}
    how = guest.get("identity") or "identity"
    kind = guest.get("guestType") or "guest"
    if guest.get("created"):
        reasons.append(Reason("guest", f"New {kind}: no guest had this {how}, so the tenant created one"))
    elif guest:
        reasons.append(Reason("guest", f"Known {kind} found by {how} (guest {str(guest.get('ref'))[:8]}…)"))

    for candidate in candidates:
        reasons.extend(_candidate_reasons(candidate, bucket, fuzzy, flow_index))

    for model in trace.get("decisionModels") or []:
        reasons.extend(_decision_reasons(model, model_defs, offer_defs))

    offer_refs = [str(r) for r in trace.get("offers") or []]
    offer_names = tuple(_offer_name(r, offer_defs).strip("'") for r in offer_refs)
    outcome = str(trace.get("outcome") or "")
    status = int(trace.get("status") or 0)
    template = trace.get("template") or {}
    if outcome == "executed":
        if offer_names:
            listed = ", ".join(f"'{n}'" for n in offer_names)
            reasons.append(
                Reason("offers", f"The response template printed {len(offer_names)} offer(s): {listed}")
            )
        else:
            reasons.append(Reason("offers", "The response carries no offers (the template printed none)"))
    elif outcome == "no matching variant":
        reasons.append(
            Reason(
                "outcome",
                "No variant ran: the guest was outside the traffic allocation or a condition did not pass, "
                'so the API answered {"message": "No matching variant"}',
                "warn",
            )
        )
    else:
        message = _error_message(trace)
        reasons.append(Reason("error", message, "fail"))
    if template.get("error"):
        reasons.append(Reason("template", f"The response template failed: {template['error']}", "fail"))
    for warning in trace.get("warnings") or []:
        reasons.append(Reason("warning", str(warning), "warn"))
    timings = trace.get("timings") or {}
    if timings.get("totalMs") is not None:
        parts = [
            f"{label} {float(timings[key]):.1f} ms"
            for key, label in (
                ("conditionsMs", "conditions"),
                ("decisionMs", "decision"),
                ("templateMs", "template"),
            )
            if timings.get(key) is not None
        ]
        reasons.append(
            Reason("timing", f"Decided in {float(timings['totalMs']):.1f} ms ({', '.join(parts)})")
        )

    flow = trace.get("flow") or {}
    variant = trace.get("variant") or {}
    return Explanation(
        outcome=outcome,
        status=status,
        flow=flow.get("friendlyId"),
        flow_name=flow.get("name"),
        variant=variant.get("name"),
        variant_ref=variant.get("ref"),
        is_control=variant.get("isControl") if variant else None,
        bucket=bucket or None,
        offers=offer_names,
        reasons=tuple(reasons),
    )


def _error_message(trace: Mapping[str, Any]) -> str:
    try:
        body = json.loads(str(trace.get("body") or ""))
    except ValueError:
        body = None
    if isinstance(body, Mapping) and body.get("message"):
        return str(body["message"])
    return f"the execution failed with status {trace.get('status')}"


# ---- comparisons ----------------------------------------------------------------------------------------


def differing(columns: Sequence[Mapping[str, Any]], *, ignore: Iterable[str] = ()) -> list[str]:
    """Keys whose values are not the same in every column (missing counts as different), in first-seen order."""
    skip = set(ignore)
    keys: list[str] = []
    for column in columns:
        keys.extend(k for k in column if k not in keys and k not in skip)
    return [k for k in keys if len({json.dumps(c.get(k), sort_keys=True, default=str) for c in columns}) > 1]


def flatten_json(value: Any, prefix: str = "") -> dict[str, Any]:
    """A JSON document as ``{path: leaf}`` (``decisionOffers[0].attributes.title``), for diffs."""
    flat: dict[str, Any] = {}
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            flat.update(flatten_json(item, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(value, list) and value:
        for i, item in enumerate(value):
            flat.update(flatten_json(item, f"{prefix}[{i}]"))
    else:
        flat[prefix or "$"] = value
    return flat


def diff_bodies(bodies: Sequence[Any]) -> list[str]:
    """JSON paths whose values differ between the bodies (a path missing from one counts)."""
    return differing([flatten_json(b) for b in bodies])
