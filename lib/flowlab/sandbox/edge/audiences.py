"""Audience definitions and their realization on the edge (reference §5): same-page, next-page, next-session.

Three evaluation types, against the simulated clock (``clock.py``):

* **edge**: evaluated on the request's event, on a datastream with Edge Segmentation on; the answer changes
  in the same response (same-page, §5.2 "Edge segmentation on the request", §5.4).
* **streaming**: the hub evaluates the event when it arrives; the membership reaches the edge after
  segmentation (≤ 5 min) plus hub→edge replication (≤ 5 min): next-page or next-session (§5.2, §5.4, B2).
* **batch**: evaluated at the daily run, reaching the edge after the batch delay plus replication:
  next-session (§5.2 "Batch segmentation: once a day, up to 7 h").

The daily run re-evaluates every audience, so time-windowed rules lapse and segment-of-segments memberships
are re-checked every 24 h (§5.5). Edge audiences on a datastream without Edge Segmentation go the
streaming way [INF, §11 question 12].

:func:`advance_job` is the whole per-profile step as a pure function over plain data, so the worker pool
(``workers.py``) can run it: tenant rules are guest code and must never stall the server's event loop.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from flowlab.sandbox.edge.pql import Context, PqlError, Rule, evaluate, parse, rule_key

__all__ = [
    "EVALUATIONS",
    "MAX_AUDIENCES",
    "Audience",
    "Timing",
    "advance",
    "advance_job",
    "audience_from_definition",
    "edge_ineligibility",
    "ordered",
]

Json = dict[str, Any]
Evaluation = Literal["edge", "streaming", "batch"]
EVALUATIONS: Final = ("edge", "streaming", "batch")
#: Guardrails per sandbox (reference §1.4, E15): 150 edge and 500 streaming audiences; batch kept to 500.
MAX_AUDIENCES: Final = {"edge": 150, "streaming": 500, "batch": 500}
_DAY_MS: Final = 86_400_000
_ID_NAMESPACE: Final = uuid.UUID("0f5a3c9e-7d21-4b8e-9c4a-6e2b1d8f3a70")
_MAX_NAME: Final = 200
_MAX_ID: Final = 64


@dataclass(frozen=True)
class Timing:
    """The delays of reference §5.2 / §10 "Time model", at their documented upper bounds by default."""

    segmentation_s: int = 300  # streaming segmentation in the hub: up to 5 min (B2)
    replication_s: int = 300  # hub → edge projection: up to 5 min for regional routing (B2)
    batch_hour_utc: int = 0  # the daily batch run starts at this hour (UTC)
    batch_delay_s: int = 3600  # a batch run's results are ready this long after it starts (B2: up to 7 h)

    def as_job(self) -> list[int]:
        return [
            self.segmentation_s * 1000,
            self.replication_s * 1000,
            self.batch_hour_utc,
            self.batch_delay_s * 1000,
        ]


@dataclass(frozen=True)
class Audience:
    """One audience: ``{id, name, rule, evaluation, destinations}`` plus its parsed rule."""

    id: str
    name: str
    rule: Rule
    evaluation: Evaluation
    destinations: tuple[str, ...]
    description: str = ""

    @property
    def key(self) -> str:
        return rule_key(self.rule.text)

    def to_json(self) -> Json:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "rule": self.rule.text,
            "evaluation": self.evaluation,
            "destinations": list(self.destinations),
        }


def edge_ineligibility(rule: Rule, known: Mapping[str, Audience]) -> str | None:
    """Why a rule cannot be evaluated on the edge (reference §5.5), or None when it can."""
    if rule.max_window_ms > _DAY_MS:
        return (
            "edge audiences only look at events within 24 hours: use WHEN(today) or a window under 24 hours"
        )
    if rule.has_events:
        for seg in rule.segments:
            inner = known.get(seg)
            if inner is not None and inner.rule.has_events:
                return (
                    "an event combined with inSegment of an event audience is not edge-eligible (§5.5): "
                    "make it a streaming audience"
                )
    return None


def _text(definition: Mapping[str, Any], name: str, *, required: bool, limit: int) -> str | None:
    value = definition.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string")
    if len(value) > limit:
        raise ValueError(f"{name} is {len(value)} characters; the limit is {limit}")
    return value


def audience_from_definition(
    definition: Any, *, known: Mapping[str, Audience], destinations: Sequence[str]
) -> Audience:
    """Validate ``{id?, name, rule, evaluation?, destinations?, description?}`` (ValueError says what to fix).

    ``evaluation`` defaults to what Adobe would pick: edge when the rule is edge-eligible, streaming when it
    has events, batch otherwise (§5.5). ``destinations`` defaults to every destination.
    """
    if not isinstance(definition, Mapping):
        raise ValueError("an audience is a JSON object {id?, name, rule, evaluation?, destinations?}")
    unknown = set(definition) - {"id", "name", "rule", "evaluation", "destinations", "description"}
    if unknown:
        raise ValueError(f"unknown audience fields: {', '.join(sorted(map(str, unknown)))}")
    name = _text(definition, "name", required=True, limit=_MAX_NAME)
    text = _text(definition, "rule", required=True, limit=10_000)
    assert name is not None and text is not None
    description = _text(definition, "description", required=False, limit=1000) or ""
    audience_id = _text(definition, "id", required=False, limit=_MAX_ID)
    if audience_id is not None and not all(c.isalnum() or c in "-_." for c in audience_id):
        raise ValueError("id may contain only letters, digits, '-', '_' and '.'")
    if audience_id is None:
        audience_id = str(uuid.uuid5(_ID_NAMESPACE, f"{name}\n{text}"))
    try:
        rule = parse(text)
    except PqlError as exc:
        raise ValueError(f"rule: {exc}") from None
    for seg in rule.segments:
        if seg == audience_id:
            raise ValueError("rule: an audience cannot contain itself (inSegment of its own id)")
        if seg not in known:
            raise ValueError(f"rule: inSegment({seg!r}) names no audience; load that audience first")
    if _reaches(rule.segments, audience_id, known):
        raise ValueError("rule: inSegment would make a cycle of audiences")
    given = definition.get("evaluation")
    why_not_edge = edge_ineligibility(rule, known)
    evaluation: Evaluation
    if given is None:
        evaluation = "edge" if why_not_edge is None and rule.has_events else (
            "streaming" if rule.has_events or rule.segments else "batch"
        )  # fmt: skip
    elif given == "edge" or given == "streaming" or given == "batch":
        evaluation = given
    else:
        raise ValueError("evaluation must be one of edge, streaming, batch")
    if evaluation == "edge" and why_not_edge is not None:
        raise ValueError(f"evaluation edge: {why_not_edge}")
    dests = definition.get("destinations")
    if dests is None:
        dests = list(destinations)
    if not isinstance(dests, list) or not all(isinstance(d, str) for d in dests):
        raise ValueError("destinations must be a list of destination ids")
    missing = [d for d in dests if d not in destinations]
    if missing:
        raise ValueError(
            f"destinations: unknown destination id(s) {', '.join(missing)}; see GET /sandbox/info"
        )
    replacing = known.get(audience_id)
    count = sum(1 for a in known.values() if a.evaluation == evaluation and a.id != audience_id)
    if count >= MAX_AUDIENCES[evaluation]:
        raise ValueError(f"the sandbox holds at most {MAX_AUDIENCES[evaluation]} {evaluation} audiences")
    del replacing
    return Audience(
        id=audience_id,
        name=name,
        rule=rule,
        evaluation=evaluation,
        destinations=tuple(dict.fromkeys(dests)),
        description=description,
    )


def _reaches(start: Iterable[str], target: str, known: Mapping[str, Audience]) -> bool:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        seg = todo.pop()
        if seg == target:
            return True
        if seg in seen or seg not in known:
            continue
        seen.add(seg)
        todo.extend(known[seg].rule.segments)
    return False


def ordered(audiences: Iterable[Audience]) -> list[Audience]:
    """Audiences with every inSegment dependency before its dependents (segment-of-segments)."""
    by_id = {a.id: a for a in audiences}
    out: list[Audience] = []
    done: set[str] = set()

    def visit(a: Audience, depth: int) -> None:
        if a.id in done or depth > len(by_id):
            return
        for seg in a.rule.segments:
            if seg in by_id:
                visit(by_id[seg], depth + 1)
        done.add(a.id)
        out.append(a)

    for a in by_id.values():
        visit(a, 0)
    return out


# ---- the per-profile step (pure; runs in a worker) -----------------------------------------------------

AudienceSpec = tuple[str, str, str]  # (id, evaluation, rule key)


def _daily_runs(after_ms: int, now_ms: int, hour: int) -> list[int]:
    """Daily run instants in (after, now], at most the last two (older ones are superseded)."""
    day = datetime.fromtimestamp(now_ms / 1000, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    last = int(day.timestamp() * 1000) + hour * 3_600_000
    if last > now_ms:
        last -= _DAY_MS
    runs = [r for r in (last - _DAY_MS, last) if r > after_ms]
    return runs


def advance(
    state: Json,
    audiences: Sequence[AudienceSpec],
    now_ms: int,
    timing: Sequence[int],
    *,
    ingest: bool,
    edge: bool,
    rule_of: Callable[[str], Any],
) -> Json:
    """Bring one profile's memberships to ``now`` (reference §5.4's table, row by row).

    ``state`` is ``{attributes, events: [[ts, xdm]], memberships: {id: [status, since]}, pending:
    [[due, id, status]], runsDone}``; returns the new ``{memberships, pending, runsDone, qualified}``
    (``qualified``: the edge audiences this request's evaluation found, for the "why" of a preview).
    """
    seg_ms, repl_ms, batch_hour, batch_ms = timing
    attributes = state.get("attributes") or {}
    events = [(int(ts), xdm) for ts, xdm in state.get("events") or ()]
    memberships: dict[str, list[Any]] = {k: list(v) for k, v in (state.get("memberships") or {}).items()}
    pending: list[list[Any]] = [list(p) for p in state.get("pending") or ()]
    runs_done = int(state.get("runsDone") or 0)

    def realized() -> set[str]:
        return {k for k, (status, _) in memberships.items() if status == "realized"}

    def expected(aud_id: str) -> str:
        for _due, pid, status in reversed(pending):
            if pid == aud_id:
                return str(status)
        current = memberships.get(aud_id)
        return str(current[0]) if current else "exited"

    def schedule(aud_id: str, due: int, qualified: bool) -> None:
        status = "realized" if qualified else "exited"
        if status != expected(aud_id):
            pending.append([due, aud_id, status])

    def check(at_ms: int, specs: Iterable[AudienceSpec], segments: set[str]) -> list[tuple[str, bool]]:
        seen = [(ts, xdm) for ts, xdm in events if ts <= at_ms]
        ctx = Context(attributes=attributes, events=seen, segments=segments, now_ms=at_ms)
        out = []
        for aud_id, _, key in specs:
            out.append((aud_id, evaluate(rule_of(key), ctx)))
        return out

    # 1. daily runs (every audience; results reach the edge after the batch delay and replication)
    for run in _daily_runs(runs_done, now_ms, batch_hour):
        for aud_id, q in check(run, audiences, realized()):
            schedule(aud_id, run + batch_ms + repl_ms, q)
        runs_done = run
    # 2. streaming segmentation of this request's event in the hub
    if ingest:
        hub = [a for a in audiences if a[1] == "streaming" or (a[1] == "edge" and not edge)]
        for aud_id, q in check(now_ms, hub, realized()):
            schedule(aud_id, now_ms + seg_ms + repl_ms, q)
    # 3. what has reached the edge by now
    pending.sort(key=lambda p: p[0])
    keep = []
    for due, aud_id, status in pending:
        if due <= now_ms:
            current = memberships.get(aud_id)
            if current is None or current[0] != status:
                memberships[aud_id] = [status, due]
        else:
            keep.append([due, aud_id, status])
    pending = keep
    # 4. edge segmentation on the request (same-page), dependencies first
    qualified: list[str] = []
    if edge:
        segments = realized()
        edge_specs = [a for a in audiences if a[1] == "edge"]
        edge_ids = {a[0] for a in edge_specs}
        seen = [(ts, xdm) for ts, xdm in events if ts <= now_ms]
        ctx = Context(attributes=attributes, events=seen, segments=segments, now_ms=now_ms)
        for aud_id, _, key in edge_specs:
            q = evaluate(rule_of(key), ctx)
            current = memberships.get(aud_id)
            if q:
                qualified.append(aud_id)
                segments.add(aud_id)
                if current is None or current[0] != "realized":
                    memberships[aud_id] = ["realized", now_ms]
            else:
                segments.discard(aud_id)
                if current is not None and current[0] == "realized":
                    memberships[aud_id] = ["exited", now_ms]
        pending = [p for p in pending if p[1] not in edge_ids]
    return {"memberships": memberships, "pending": pending, "runsDone": runs_done, "qualified": qualified}


def advance_job(args: Json, resolve: Callable[[str], Any]) -> Json:
    """The worker-pool entry point: ``pool.run("flowlab.sandbox.edge.audiences:advance_job", args, keys=…)``.

    ``args``: ``{state, audiences: [[id, evaluation, key]], now, timing, ingest, edge}``; rule keys resolve
    to ASTs compiled by :func:`flowlab.sandbox.edge.pql.compile_payload`.
    """
    return advance(
        args["state"],
        [(str(a[0]), str(a[1]), str(a[2])) for a in args["audiences"]],
        int(args["now"]),
        args["timing"],
        ingest=bool(args["ingest"]),
        edge=bool(args["edge"]),
        rule_of=resolve,
    )
