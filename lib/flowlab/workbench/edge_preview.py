"""One previewed Edge interact call, everything the app shows about it: destinations, audiences, why, advice.

``run_edge_preview`` never raises for API trouble: a refused connection, a timeout, an ``EXEG-…`` problem
or a request the Edge would refuse becomes ``EdgePreview.error`` with ``EdgePreview.advice`` saying what to
fix. On the sandbox it also reads the audience definitions (``GET /sandbox/edge/audiences``: names instead
of ids), the profile's memberships before the call and the simulated clock, and explains each audience:
its rule in words, whether this event qualified it, and for hub audiences when they would reach the edge
(adobe-edge-personalization.md §5.2 timing, §5.4 hit 1 versus later hits, §10 time model).
"""

from __future__ import annotations

import http
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from flowlab.admin import SandboxAdmin
from flowlab.edge.client import EdgeClient
from flowlab.edge.models import InteractRequest
from flowlab.edge.response import EdgeResponse, edge_status_error
from flowlab.errors import (
    APIStatusError,
    AuthenticationError,
    FlowLabError,
    RateLimitError,
    RequestValidationError,
)
from flowlab.sandbox.edge.audiences import Timing
from flowlab.sandbox.edge.pql import Context, PqlError, evaluate, parse
from flowlab.workbench.advice import Advice, advise

__all__ = [
    "DEMO_IDENTITY",
    "EVENT_TYPES",
    "NAMESPACES",
    "AudienceDef",
    "AudienceWhy",
    "EdgePreview",
    "edge_advice",
    "event_qualifies",
    "hub_arrival_ms",
    "rule_in_words",
    "run_edge_preview",
]

#: The identity namespaces the form offers (reference §8.2), plus "custom" for any other code.
NAMESPACES = ("Email", "ECID", "CRMID", "Phone")
#: Event types the form offers (XDM ExperienceEvent ``eventType`` values the demo audiences read).
EVENT_TYPES = (
    "web.webpagedetails.pageViews",
    "commerce.checkouts",
    "commerce.purchases",
    "commerce.productViews",
)
#: The demo profile the sandbox opens with: a gold member whose checkout shows same-page audiences.
DEMO_IDENTITY = ("Email", "lena.vogel@example.de")

Verdict = Literal["qualified", "member", "arriving", "not"]
_OPS = {"=": "is", "!=": "is not", "<": "<", "<=": "≤", ">": ">", ">=": "≥"}
_STRING_WORDS = {
    "equals": "is",
    "notEqualTo": "is not",
    "contains": "contains",
    "doesNotContain": "does not contain",
    "startsWith": "starts with",
    "doesNotStartWith": "does not start with",
    "endsWith": "ends with",
    "doesNotEndWith": "does not end with",
}
_PATH_WORDS = {
    "eventType": "the event type",
    "web.webPageDetails.URL": "the page URL",
    "commerce.order.priceTotal": "the order total",
    "loyalty.tier": "the loyalty tier",
    "loyalty.points": "loyalty points",
    "homeAddress.countryCode": "the home country",
    "_lumen.preferredCategory": "the preferred category",
    "_lumen.newsletter": "newsletter opt-in",
}


@dataclass(frozen=True)
class AudienceDef:
    """An audience as ``GET /sandbox/edge/audiences`` describes it."""

    id: str
    name: str
    rule: str
    evaluation: str
    description: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AudienceDef:
        return cls(
            id=str(data.get("id", "")),
            name=str(data.get("name") or data.get("id", "")),
            rule=str(data.get("rule", "")),
            evaluation=str(data.get("evaluation", "")),
            description=str(data.get("description") or ""),
        )


@dataclass(frozen=True)
class AudienceWhy:
    """One audience's account on the sandbox: in this response or not, and why."""

    audience: AudienceDef
    in_response: bool
    verdict: Verdict
    text: str
    words: str
    arrives_ms: int | None = None


@dataclass(frozen=True)
class EdgePreview:
    """The outcome of one interact call: ``response`` when the Edge answered, ``error`` when it failed."""

    request: InteractRequest | None
    base_url: str
    datastream_id: str
    authenticated: bool
    target_name: str = ""
    is_sandbox: bool = False
    response: EdgeResponse | None = None
    error: FlowLabError | None = None
    audiences: Mapping[str, AudienceDef] = field(default_factory=dict)
    why: list[AudienceWhy] = field(default_factory=list)
    sim_now_ms: int | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def ok(self) -> bool:
        return self.response is not None and self.response.ok and self.error is None

    @property
    def advice(self) -> Advice | None:
        return edge_advice(self.error, authenticated=self.authenticated) if self.error is not None else None

    @property
    def status_text(self) -> str:
        if self.response is None:
            return "not sent" if self.request is None else "no answer"
        code = self.response.status_code
        try:
            return f"{code} {http.HTTPStatus(code).phrase}"
        except ValueError:
            return str(code)

    @property
    def profile_known(self) -> bool:
        """False when the Edge answered ``activation:pull`` with ``payload: []`` (identity unknown, §5.4)."""
        return self.response is not None and bool(self.response.destinations)

    def audience_name(self, audience_id: str) -> str:
        """The audience's name on the sandbox; on a live org only its id is known (§3.3)."""
        known = self.audiences.get(audience_id)
        return known.name if known is not None else audience_id


def rule_in_words(rule: str, names: Mapping[str, str] | None = None) -> str:
    """A PQL rule (reference §5.5 subset) as a sentence a marketer reads; the rule itself if it won't parse."""
    try:
        ast = parse(rule).ast
    except PqlError:
        return rule
    return _words(ast, names or {}, top=True)


def _path(parts: Sequence[str]) -> str:
    dotted = ".".join(parts)
    return _PATH_WORDS.get(dotted, dotted)


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _when(when: tuple[str, int]) -> str:
    kind, window = when
    if kind == "today":
        return "today"
    days, hours = divmod(window // 3_600_000, 24)
    span = f"{days} day{'s' * (days != 1)}" if days and not hours else f"{window // 3_600_000} hours"
    return f"in the last {span}"


def _words(node: Sequence[Any], names: Mapping[str, str], *, top: bool = False) -> str:
    kind = node[0]
    if kind in ("and", "or"):
        text = f" {kind} ".join(_words(child, names) for child in node[1])
        return text if top else f"({text})"
    if kind == "not":
        return f"not {_words(node[1], names)}"
    if kind == "const":
        return "everyone" if node[1] else "no one"
    if kind == "cmp":
        return f"{_path(node[1])} {_OPS.get(node[2], node[2])} {_literal(node[3])}"
    if kind == "str":
        return f"{_path(node[1])} {_STRING_WORDS.get(node[2], node[2])} {_literal(node[3])}"
    if kind == "null":
        return f"{_path(node[1])} is {'empty' if node[2] else 'set'}"
    if kind == "in":
        return f'in "{names.get(node[1], node[1])}"'
    if kind == "chain":
        steps = [f"{_words(what, names, top=True)} {_when(when)}" for what, when in node[1]]
        return "an event where " + ", then one where ".join(steps)
    return str(kind)


def event_qualifies(
    rule: str,
    *,
    event: Mapping[str, Any],
    attributes: Mapping[str, Any],
    segments: set[str] | frozenset[str],
    now_ms: int,
) -> bool:
    """Would the profile qualify with ``event`` (received at ``now_ms``) as its only event? The "why" of a
    hit: for event rules, whether this event meets them; for profile rules, whether the profile does."""
    try:
        ast = parse(rule).ast
    except PqlError:
        return False
    ctx = Context(attributes=attributes, events=[(now_ms, event)], segments=set(segments), now_ms=now_ms)
    return evaluate(ast, ctx)


def hub_arrival_ms(evaluation: str, event_ms: int, timing: Timing | None = None) -> int | None:
    """When a hub audience qualified at ``event_ms`` reaches the edge (§5.2, §10 time model): streaming after
    segmentation + replication (≤ 5 + 5 min); batch after the next daily run + its delay + replication.
    None for edge audiences (same response)."""
    t = timing or Timing()
    if evaluation == "streaming":
        return event_ms + (t.segmentation_s + t.replication_s) * 1000
    if evaluation == "batch":
        day = datetime.fromtimestamp(event_ms / 1000, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        run = int(day.timestamp() * 1000) + t.batch_hour_utc * 3_600_000
        if run <= event_ms:
            run += 86_400_000
        return run + (t.batch_delay_s + t.replication_s) * 1000
    return None


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%a %H:%M UTC")


def _explain(
    audiences: Sequence[AudienceDef],
    response: EdgeResponse,
    request: InteractRequest,
    before: set[str],
    attributes: Mapping[str, Any],
    now_ms: int,
) -> list[AudienceWhy]:
    names = {a.id: a.name for a in audiences}
    present = {sid for d in response.destinations for sid in d.segment_ids}
    event = request.to_body()["event"]["xdm"]
    why: list[AudienceWhy] = []
    for audience in audiences:
        words = rule_in_words(audience.rule, names)
        inside = audience.id in present
        meets = event_qualifies(
            audience.rule, event=event, attributes=attributes, segments=present | before, now_ms=now_ms
        )
        arrives: int | None = None
        if audience.evaluation == "edge":
            if inside and audience.id not in before:
                verdict: Verdict = "qualified"
                text = "This event qualified it: it is in this same response (same-page, §5.4)."
            elif inside:
                verdict, text = "member", "Already a member before this call; the rule still holds."
            else:
                verdict, text = "not", "Not qualified: this request does not meet the rule."
        elif inside:
            verdict = "member"
            text = f"A member: the hub's {audience.evaluation} evaluation put it on the edge earlier."
        elif meets:
            verdict = "arriving"
            arrives = hub_arrival_ms(audience.evaluation, now_ms)
            when = _clock(arrives) if arrives is not None else "later"
            if audience.evaluation == "streaming":
                text = (
                    f"This event qualifies it in the hub, but not on this page: it reaches the edge at {when} "
                    "(≤ 5 min streaming segmentation + ≤ 5 min replication, §5.2): next page or next session."
                )
            else:
                text = (
                    f"Qualifies at the next daily batch run: on the edge at {when} (batch segmentation plus "
                    "replication, §5.2): next session."
                )
        else:
            verdict = "not"
            text = f"Not a member: neither the profile nor this event meets the rule ({audience.evaluation})."
        why.append(AudienceWhy(audience, inside, verdict, text, words, arrives))
    order = {"qualified": 0, "arriving": 1, "member": 2, "not": 3}
    return sorted(why, key=lambda w: order[w.verdict])


def edge_advice(error: FlowLabError, *, authenticated: bool = True) -> Advice:
    """Advice for an Edge call: the ``EXEG-…`` code and what to fix (reference §4.1, §4.2)."""
    if isinstance(error, RequestValidationError):
        listed = "; ".join(str(p) for p in error.problems)
        return Advice(
            "Nothing was sent: the Edge would refuse this request",
            listed,
            "Fix the identity or the field named above (an Email must look like name@example.com).",
            "identity",
        )
    if isinstance(error, APIStatusError):
        code = error.error_code
        title = error.body.get("title") if error.body else None
        head = f"{error.status_code} {code}".strip() + (f": {title}" if isinstance(title, str) else "")
        detail = error.api_message or (error.response.text[:300] if error.response.text else "")
        if isinstance(error, AuthenticationError):
            fix = (
                "Check FLOWLAB_EDGE_CLIENT_ID, FLOWLAB_EDGE_CLIENT_SECRET and the org id (the Developer "
                "Console's OAuth server-to-server credential), or send without a token to see audiences only."
            )
        elif isinstance(error, RateLimitError):
            wait = error.response.headers.get("retry-after")
            fix = f"Wait {wait} s and try again." if wait else "Wait a moment and try again."
        elif code.startswith(("EXEG-0002", "EXEG-0003", "EXEG-0004")):
            fix = "Check the datastream id in the sidebar (Data Collection → Datastreams) and that it is enabled."
        elif code.startswith(("EXEG-0306", "EXEG-0307")) or "identit" in detail.lower():
            fix = "Send exactly one primary identity, e.g. Email lena.vogel@example.de."
        elif error.status_code >= 500:
            fix = "The Edge or its upstream failed: try again; on the sandbox, check its fault knobs."
        else:
            fix = "Check the request shown under Request and try again."
        return Advice(head, detail, fix)
    return advise(error)


def _sandbox_context(
    admin: SandboxAdmin, identity: str
) -> tuple[list[AudienceDef], set[str], Mapping[str, Any], int]:
    audiences = [AudienceDef.from_json(a) for a in admin.edge_audiences()]
    found = admin.edge_profiles(identity=identity, limit=1).get("items") or []
    before: set[str] = set()
    attributes: Mapping[str, Any] = {}
    if found:
        before = {a["id"] for a in found[0].get("audiences", []) if a.get("status") == "realized"}
        attributes = found[0].get("attributes") or {}
    now_ms = int(admin.edge_clock()["epochMs"])
    return audiences, before, attributes, now_ms


def run_edge_preview(
    client: EdgeClient,
    fields: Mapping[str, Any],
    *,
    target_name: str = "",
    is_sandbox: bool = False,
    admin: SandboxAdmin | None = None,
) -> EdgePreview:
    """Build the request from ``fields`` (``InteractRequest.build`` keywords), send it, explain it.

    With ``admin`` (the sandbox), audience names and the "why" come from the sandbox's admin API.
    """
    common: dict[str, Any] = {
        "base_url": client.base_url,
        "datastream_id": client.datastream_id,
        "authenticated": client.authenticated,
        "target_name": target_name,
        "is_sandbox": is_sandbox,
    }
    try:
        request = InteractRequest.build(**dict(fields))
    except RequestValidationError as exc:
        return EdgePreview(request=None, error=exc, **common)
    audiences: list[AudienceDef] = []
    before: set[str] = set()
    attributes: Mapping[str, Any] = {}
    now_ms: int | None = None
    try:
        if admin is not None:
            namespace, value = request.primary_identity
            audiences, before, attributes, now_ms = _sandbox_context(admin, f"{namespace}:{value}")
        response = client.interact(request, raise_for_status=False)
    except FlowLabError as exc:
        return EdgePreview(request=request, error=exc, **common)
    if not response.ok:  # keep the problem body and headers on screen, with the mapped error beside them
        return EdgePreview(request=request, response=response, error=edge_status_error(response), **common)
    why = (
        _explain(audiences, response, request, before, attributes, now_ms)
        if admin is not None and now_ms is not None and response.destinations
        else []
    )
    return EdgePreview(
        request=request,
        response=response,
        audiences={a.id: a for a in audiences},
        why=why,
        sim_now_ms=now_ms,
        **common,
    )
