"""A journey: hits and clock steps played against the sandbox, and on which hit each audience shows up.

What people get wrong about edge personalization is *when* an audience is in the answer (reference §5.4):
an edge audience on the request's event is in the same response (same-page); a streaming audience reaches
the edge minutes later (next-page, or next-session); a batch one after the daily run (next-session). A
journey makes that visible in seconds: each hit is one interact call, each clock step moves the sandbox's
simulated clock (``POST /sandbox/edge/clock``), and ``Journey.timeline`` says, per hit and audience, where
it first appeared relative to the hit whose event qualified it. The sandbox's clock is what makes this
possible, so journeys run only against a sandbox; ``journey_chart`` draws the timeline (pure).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import altair as alt
import pandas as pd

from flowlab.admin import SandboxAdmin
from flowlab.edge.client import EdgeClient
from flowlab.edge.response import EdgeResponse
from flowlab.errors import ConfigError
from flowlab.workbench.edge_preview import AudienceDef, event_qualifies

__all__ = [
    "HIT_EVENTS",
    "TIMELINE_COLUMNS",
    "TIMING_CLASSES",
    "HitResult",
    "Journey",
    "JourneyStep",
    "hit",
    "journey_chart",
    "new_session",
    "parse_wait",
    "play_journey",
    "preset_journey",
    "timeline_frame",
    "wait",
]

StepKind = Literal["hit", "wait", "new session"]
Timing = Literal["same-page", "next-page", "next-session", "before the journey"]
#: Where an audience first shows up relative to the hit whose event qualified it (§5.1, §5.4).
TIMING_CLASSES: tuple[Timing, ...] = ("same-page", "next-page", "next-session", "before the journey")
#: Hit labels → XDM event types (the events the demo audiences read).
HIT_EVENTS = {
    "Page view": "web.webpagedetails.pageViews",
    "Product view": "commerce.productViews",
    "Checkout": "commerce.checkouts",
    "Purchase": "commerce.purchases",
}
TIMELINE_COLUMNS = (
    "hit",
    "hit_label",
    "session",
    "simulated_time",
    "audience_id",
    "audience",
    "evaluation",
    "first_seen_hit",
    "qualified_hit",
    "timing",
)
_SESSION_S = 30 * 60
_WAIT = re.compile(r"^\+?\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|seconds?|m|min|mins|minutes?|h|hours?|d|days?)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


@dataclass(frozen=True)
class JourneyStep:
    """A hit (one interact call), a wait (the clock moves), or a new session (the clock moves, and the
    next hits belong to a later visit)."""

    kind: StepKind
    label: str
    event_type: str | None = None
    page_url: str | None = None
    xdm: Mapping[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def parse_wait(text: str) -> float:
    """``"+10 min"``, ``"2 h"``, ``"30 s"``, ``"next day"`` → seconds; ValueError says what to write."""
    cleaned = text.strip().lower()
    if cleaned in ("next day", "+1 day", "tomorrow"):
        return 86_400.0
    match = _WAIT.match(cleaned)
    if match is None:
        raise ValueError(f"'{text}' is not a wait: write +2 min, +10 min, +1 h, +30 s or next day")
    return float(match[1]) * _UNITS[match[2][0]]


def hit(
    label: str,
    event_type: str | None = None,
    *,
    page_url: str | None = None,
    xdm: Mapping[str, Any] | None = None,
) -> JourneyStep:
    """A hit; ``label`` may be a key of ``HIT_EVENTS`` (then the event type follows from it); ``xdm`` adds
    event fields such as ``{"commerce": {"order": {"priceTotal": 249.0}}}``."""
    return JourneyStep("hit", label, event_type or HIT_EVENTS.get(label), page_url, dict(xdm or {}))


def wait(when: str | float) -> JourneyStep:
    seconds = parse_wait(when) if isinstance(when, str) else float(when)
    return JourneyStep("wait", f"+{_span(seconds)}", seconds=seconds)


def new_session(when: str | float = "next day") -> JourneyStep:
    """A later visit: at least 30 minutes later (a session's idle timeout), by default the next day."""
    seconds = max(parse_wait(when) if isinstance(when, str) else float(when), _SESSION_S)
    return JourneyStep("new session", f"new session ({_span(seconds)} later)", seconds=seconds)


def preset_journey(site: str = "https://www.example.de") -> list[JourneyStep]:
    """ "Lena checks out, then buys": page view → checkout → +2 min page view → purchase → +10 min page
    view → next session (a page view the next day)."""
    order = {"commerce": {"order": {"priceTotal": 249.0, "currencyCode": "EUR"}}}
    return [
        hit("Page view", page_url=f"{site}/hiking"),
        hit("Checkout", page_url=f"{site}/checkout"),
        wait("+2 min"),
        hit("Page view", page_url=f"{site}/checkout/payment"),
        hit("Purchase", page_url=f"{site}/checkout/done", xdm=order),
        wait("+10 min"),
        hit("Page view", page_url=f"{site}/hiking"),
        new_session("next day"),
        hit("Page view", page_url=f"{site}/"),
    ]


def _span(seconds: float) -> str:
    if seconds >= 86_400 and seconds % 86_400 == 0:
        days = int(seconds // 86_400)
        return f"{days} day{'s' * (days != 1)}"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


@dataclass(frozen=True)
class HitResult:
    """One hit as played: its place, simulated time, the audiences in the answer and the answer itself."""

    index: int
    label: str
    step: int
    session: int
    simulated_ms: int
    event: Mapping[str, Any]
    audiences: tuple[str, ...]
    attributes: Mapping[str, Any]
    response: EdgeResponse


@dataclass(frozen=True)
class Journey:
    """A played journey: hits, the audience definitions, memberships before it, and the timeline."""

    identity: tuple[str, str]
    authenticated: bool
    steps: list[JourneyStep]
    hits: list[HitResult]
    audiences: Mapping[str, AudienceDef]
    before: frozenset[str]
    timeline: pd.DataFrame

    def summary(self) -> list[str]:
        """Plain sentences: which audience appeared where, relative to the hit that qualified it."""
        lines: list[str] = []
        firsts = self.timeline.drop_duplicates("audience_id").sort_values("first_seen_hit")
        for row in firsts.to_dict("records"):
            if row["timing"] == "before the journey":
                continue
            seen = self.hits[int(row["first_seen_hit"])]
            cause = self.hits[int(row["qualified_hit"])]
            what = f"{row['audience']} appeared"
            cause_label = f"the {cause.label.lower()} (hit {cause.index + 1})"
            if row["timing"] == "same-page":
                lines.append(f"{what} on the same page as {cause_label}.")
                continue
            minutes = (seen.simulated_ms - cause.simulated_ms) / 60_000
            later = (
                f"{minutes:g} simulated minutes" if minutes < 120 else f"{minutes / 60:.0f} simulated hours"
            )
            where = "on the next page" if row["timing"] == "next-page" else "in the next session"
            steps = [s.label for s in self.steps[cause.step + 1 : seen.step] if s.kind != "hit"]
            if steps:
                where += " after the " + " and ".join(steps) + " clock step" + "s" * (len(steps) > 1)
            lines.append(f"{what} {later} after {cause_label}, {where} (hit {seen.index + 1}).")
        already = sorted(set(self.timeline.loc[self.timeline.timing == "before the journey", "audience"]))
        if already:
            lines.append("Already a member before the journey: " + ", ".join(already) + ".")
        if not lines:
            lines.append("No audience was in any answer: is the identity known to the edge?")
        return lines


def timeline_frame(
    hits: Sequence[HitResult], audiences: Mapping[str, AudienceDef], before: frozenset[str]
) -> pd.DataFrame:
    """One row per hit and audience in its answer, with where the audience first appeared and the hit whose
    event qualified it (the earliest hit up to then whose event meets the rule; for profile and
    segment-of-segments rules, the hit it appeared on)."""
    first: dict[str, int] = {}
    for h in hits:
        for aud in h.audiences:
            first.setdefault(aud, h.index)
    qualified: dict[str, int] = {}
    for aud, seen in first.items():
        definition = audiences.get(aud)
        q = seen
        if definition is not None and "CHAIN" in definition.rule:
            for h in hits[: seen + 1]:
                if event_qualifies(
                    definition.rule,
                    event=h.event,
                    attributes=h.attributes,
                    segments=set(h.audiences),
                    now_ms=h.simulated_ms,
                ):
                    q = h.index
                    break
        qualified[aud] = q
    rows = []
    for h in hits:
        for aud in h.audiences:
            definition = audiences.get(aud)
            seen, q = first[aud], qualified[aud]
            if aud in before and seen == 0:
                timing: Timing = "before the journey"
            elif q == seen:
                timing = "same-page"
            elif hits[q].session == hits[seen].session:
                timing = "next-page"
            else:
                timing = "next-session"
            rows.append(
                {
                    "hit": h.index,
                    "hit_label": f"{h.index + 1}. {h.label}",
                    "session": h.session,
                    "simulated_time": datetime.fromtimestamp(h.simulated_ms / 1000, UTC),
                    "audience_id": aud,
                    "audience": definition.name if definition is not None else aud,
                    "evaluation": definition.evaluation if definition is not None else "",
                    "first_seen_hit": seen,
                    "qualified_hit": q,
                    "timing": timing,
                }
            )
    return pd.DataFrame(rows, columns=list(TIMELINE_COLUMNS))


def play_journey(
    steps: Sequence[JourneyStep],
    *,
    base_url: str,
    identity: tuple[str, str],
    authenticated: bool = True,
    reset: bool = True,
    on_step: Callable[[int, JourneyStep], None] | None = None,
) -> Journey:
    """Play ``steps`` against the sandbox at ``base_url`` for ``identity`` (namespace, id).

    ``reset`` first puts the sandbox back to its demo data and the clock to its start (``POST
    /sandbox/reset``), so replaying gives the same answer. ``on_step(i, step)`` is called before each step
    (a progress bar). Raises ``ConfigError`` when ``base_url`` is not a sandbox with the Edge clock, and the
    ``flowlab.errors`` class of any failed call.
    """
    if not any(s.kind == "hit" for s in steps):
        raise ConfigError("a journey needs at least one hit (a page view, checkout or purchase)")
    with SandboxAdmin(base_url=base_url) as admin:
        if not admin.is_sandbox() or not isinstance(admin.info().get("edge"), Mapping):
            raise ConfigError(
                f"{base_url} is not a Flow Lab sandbox with the Edge Network: journeys need its simulated "
                "clock (POST /sandbox/edge/clock). Pick the built-in sandbox."
            )
        if reset:
            admin.reset()
        audiences = {a.id: a for a in (AudienceDef.from_json(x) for x in admin.edge_audiences())}
        found = admin.edge_profiles(identity=f"{identity[0]}:{identity[1]}", limit=1).get("items") or []
        before = frozenset(
            a["id"] for a in (found[0].get("audiences", []) if found else []) if a.get("status") == "realized"
        )
        attributes: Mapping[str, Any] = found[0].get("attributes") or {} if found else {}
        now_ms = int(admin.edge_clock()["epochMs"])
        hits: list[HitResult] = []
        session = 1
        with EdgeClient.for_sandbox(base_url, authenticated=authenticated, retries=0) as client:
            for i, step in enumerate(steps):
                if on_step is not None:
                    on_step(i, step)
                if step.kind != "hit":
                    if step.seconds > 0:
                        now_ms = int(admin.advance_edge_clock(step.seconds)["epochMs"])
                    if step.kind == "new session" and hits and hits[-1].session == session:
                        session += 1
                    continue
                response = client.interact(
                    identity=identity,
                    event_type=step.event_type,
                    page_url=step.page_url,
                    xdm=dict(step.xdm),
                )
                assert response.request is not None
                event = response.request.to_body()["event"]["xdm"]
                present = tuple(dict.fromkeys(s for d in response.destinations for s in d.segment_ids))
                hits.append(
                    HitResult(
                        index=len(hits),
                        label=step.label,
                        step=i,
                        session=session,
                        simulated_ms=now_ms,
                        event=event,
                        audiences=present,
                        attributes=attributes,
                        response=response,
                    )
                )
    return Journey(
        identity=identity,
        authenticated=authenticated,
        steps=list(steps),
        hits=hits,
        audiences=audiences,
        before=before,
        timeline=timeline_frame(hits, audiences, before),
    )


def journey_chart(timeline: pd.DataFrame) -> alt.Chart:
    """Hits on x, audiences on y, a mark where the audience is in the answer, coloured by timing class."""
    order = sorted(set(timeline["hit_label"]), key=lambda label: int(str(label).split(".", 1)[0]))
    audiences = list(timeline.sort_values(["first_seen_hit", "audience"])["audience"].drop_duplicates())
    chart: alt.Chart = (
        alt.Chart(timeline)
        .mark_square(size=260)
        .encode(
            x=alt.X(
                "hit_label:N", sort=order, title="Hit", axis=alt.Axis(labelAngle=-30, labelOverlap=False)
            ),
            y=alt.Y("audience:N", sort=audiences, title=None, axis=alt.Axis(labelLimit=240)),
            color=alt.Color(
                "timing:N",
                title="First appeared",
                scale=alt.Scale(
                    domain=list(TIMING_CLASSES), range=["#2e7d32", "#f9a825", "#1565c0", "#9e9e9e"]
                ),
            ),
            tooltip=[
                alt.Tooltip("hit_label:N", title="Hit"),
                alt.Tooltip("audience:N", title="Audience"),
                alt.Tooltip("evaluation:N", title="Evaluation"),
                alt.Tooltip("timing:N", title="First appeared"),
                alt.Tooltip("simulated_time:T", title="Simulated time", format="%a %H:%M"),
            ],
        )
        .properties(height=alt.Step(28), width="container")
    )
    return chart
