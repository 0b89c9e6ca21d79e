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
* the body is the template output unchanged, even when it is not valid JSON (the trace says so);
* a connection that times out or fails (``connections.py``) fails the flow like a script does: **500**, and
  the TRACKING record says ``status: "ERROR"``, ``error: "Read timed out"``, category FAILED, as Sitecore's.

Connections: the guest code runs in a worker, which never waits on a network. A model that reaches a
connection node returns "needs node N with these inputs"; the engine calls the connection on the event loop
(``ConnectionCaller``), then runs the stage again with every answer so far supplied (one round trip per
connection). The trace lists each call under ``connections``: request (secrets masked), status, latency
and outputs.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson

from flowlab.errors import FlowLabError
from flowlab.sandbox.errors import BadRequest, FlowFailed, NotFound, SandboxError, Unauthorized
from flowlab.sandbox.limits import (
    MAX_GUESTS,
    MAX_IDENTITY_CHARS,
    TRACE_TEXT_CHARS,
    GuestLimit,
    request_summary,
    shortened,
)
from flowlab.sandbox.personalize.connections import CallOutcome, ConnectionCaller
from flowlab.sandbox.personalize.decisions import DecisionModel
from flowlab.sandbox.personalize.freemarker import (
    MAX_OUTPUT,
    TIME_LIMIT_S,
    Template,
    TemplateError,
    TemplateLimitError,
)
from flowlab.sandbox.personalize.javascript import Script, ScriptError, ScriptRuntime
from flowlab.sandbox.personalize.store import CompiledFlow, CompiledVariant, Tenant, code_key, new_ref
from flowlab.sandbox.workers import WorkerError, WorkerPool, WorkerTimeout, shared_pool, step

__all__ = [
    "MAX_CONNECTION_CALLS",
    "NO_MATCH_BODY",
    "SCRIPT_HARD_LIMIT_S",
    "TEMPLATE_HARD_LIMIT_S",
    "Engine",
    "Execution",
    "bucket_for",
    "compile_condition",
    "compile_model",
    "compile_template",
    "keep",
    "run_stage",
    "unit_hash",
    "validate",
]

#: A script run QuickJS did not stop (its own limit is 50 ms of CPU) is killed with its worker at this age.
SCRIPT_HARD_LIMIT_S: Final = 0.5
#: A render the template's own time limit (freemarker.TIME_LIMIT_S) did not stop is killed at this age.
TEMPLATE_HARD_LIMIT_S: Final = 1.0

NO_MATCH_BODY = '{"message":"No matching variant"}'
#: Connection calls one request may make (each is one more round trip to a worker).
MAX_CONNECTION_CALLS: Final = 32
_IDENTITY = ("browserId", "email", "identifiers")
_NOTE_NAMES: Final = 20  # unknown field names a trace's warning lists before "and N more"
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
        raise BadRequest(
            f"{name} must be a string", f"'{name}' is {type(value).__name__}: {shortened(repr(value))}"
        )
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
            raise BadRequest(
                "identifiers needs a non-empty provider and id", f"got {shortened(repr(identity))}"
            )
        _check_identity_length("identifiers.provider", identity["provider"])
        _check_identity_length("identifiers.id", identity["id"])
    elif not isinstance(identity, str) or not identity.strip():
        raise BadRequest(f"{identity_kind} must be a non-empty string", f"got {shortened(repr(identity))}")
    else:
        _check_identity_length(identity_kind, identity)
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


def _check_identity_length(field: str, value: str) -> None:
    """Every new identity becomes a guest that keeps it: a stream of huge ones would grow the server."""
    if len(value) > MAX_IDENTITY_CHARS:
        raise BadRequest(
            f"{field} is longer than the sandbox's limit of {MAX_IDENTITY_CHARS} characters",
            f"got {len(value):,} characters; a browserId is a 36-character UUID and an email at most 254",
        )


def _unknown_fields_note(names: Sequence[str]) -> str:
    """The trace's warning about ignored fields, bounded: a body of unknown keys used to store ~1 MiB."""
    shown: list[str] = []
    size = 0
    for name in names[:_NOTE_NAMES]:
        name = shortened(name, 64)
        size += len(name) + 2
        if size > TRACE_TEXT_CHARS * 2:
            break
        shown.append(name)
    more = len(names) - len(shown)
    return "ignored unknown fields: " + ", ".join(shown) + (f" and {more:,} more" if more else "")


def _known_guest(tenant: Tenant, kind: str, value: Any) -> bool:
    if kind == "browserId":
        return value in tenant.by_browser
    if kind == "email":
        return str(value).lower() in tenant.by_email
    return (str(value["provider"]), str(value["id"])) in tenant.by_identifier


class Engine:
    """Runs requests against one tenant, from one event loop (or one thread at a time).

    Everything a request's own code does (conditions, programmables, decision tables, the template) runs
    in a guest-code worker (:mod:`flowlab.sandbox.workers`) as one job per request; the engine only
    validates, picks the guest, bucket and candidate variants, and records the outcome. ``guest_code=
    "inline"`` runs that stage in-process instead: unprotected, for benchmarks that measure the difference.
    """

    def __init__(
        self,
        tenant: Tenant,
        *,
        strict_pos: bool = False,
        pool: WorkerPool | None = None,
        guest_code: Literal["workers", "inline"] = "workers",
    ) -> None:
        self.tenant = tenant
        self.strict_pos = strict_pos
        self.guest_code = guest_code
        self._pool = pool
        #: New guests the tenant may hold before a request for one more gets 507 (tests lower it).
        self.max_guests = MAX_GUESTS
        #: calls connections (the app gives it the sandbox's mocks and routes)
        self.connections = ConnectionCaller()
        if guest_code == "workers":
            self.pool.start()  # the workers import while the server starts, not on its first request

    @property
    def pool(self) -> WorkerPool:
        """The worker pool guest code runs in (the process's shared one unless given)."""
        return self._pool or shared_pool()

    def execute(self, body: Any, *, simulate: bool = False) -> Execution:
        """Run one request; ``SandboxError`` for bad input, otherwise an ``Execution`` (even when 500).

        Blocks the calling thread while the guest code runs in a worker: use :meth:`execute_async` on an
        event loop. ``simulate`` (the ``X-Flowlab-Simulate: 1`` header) runs interactive flows in any status.
        """
        plan = self._plan(body, simulate=simulate)
        first = self._first_stop(plan)
        if first is not None:
            self._supply(plan, first, first["call"], self.connections.call_sync(*first["call"]))
        while True:
            if self.guest_code == "inline":
                stage = run_stage(plan.job, plan.objects.__getitem__)
            else:
                try:
                    stage = self.pool.run_sync(_STAGE, plan.job, keys=list(plan.blobs), provide=plan.provide)
                except FlowLabError as exc:
                    stage = self._stage_failed(plan, exc)
            call = self._connection_call(plan, stage)
            if call is None:
                return self._finish(plan, stage)
            self._supply(plan, stage, call, self.connections.call_sync(call[0], call[1]))

    async def execute_async(self, body: Any, *, simulate: bool = False) -> Execution:
        """:meth:`execute` for an event loop: the loop only waits on the worker's socket."""
        plan = self._plan(body, simulate=simulate)
        return await self._run_plan(plan)

    async def _run_plan(self, plan: _Plan) -> Execution:
        """The stage in a worker, then each connection it waits for on this loop, until it finishes."""
        first = self._first_stop(plan)
        if first is not None:
            self._supply(plan, first, first["call"], await self.connections.call(*first["call"]))
        while True:
            if self.guest_code == "inline":
                stage = run_stage(plan.job, plan.objects.__getitem__)
            else:
                try:
                    stage = await self.pool.run(_STAGE, plan.job, keys=list(plan.blobs), provide=plan.provide)
                except FlowLabError as exc:
                    stage = self._stage_failed(plan, exc)
            call = self._connection_call(plan, stage)
            if call is None:
                return self._finish(plan, stage)
            self._supply(plan, stage, call, await self.connections.call(call[0], call[1]))

    def _first_stop(self, plan: _Plan) -> dict[str, Any] | None:
        """The connection the stage would stop at first, when that is known before any guest code runs.

        One candidate variant with no conditions, whose first decision model starts with a connection that
        needs nothing computed (:meth:`DecisionModel.leading_call`): the stage's first trip to a worker
        would only report that stop. Calling it before that trip saves a worker round trip per request,
        a large share of what a connection-bound flow costs this loop (``bench/connections.py``). It calls
        nothing the stage would not have called, and the trace is the same. A stage-like dict
        ``{"pending": …, "call": (connection, inputs)}``, or None.
        """
        if plan.job.get("quarantined") or len(plan.attempts) != 1 or plan.attempts[0][1] is None:
            return None
        for index, piece in enumerate(plan.pieces):
            if piece.kind == "condition":
                return None
            if piece.kind == "model":
                lead = self.tenant.models[str(piece.model_ref)].leading_call()
                if lead is None:
                    return None
                stage: dict[str, Any] = {"pending": {"piece": index, "node": lead[0], "name": lead[1],
                                                     "inputs": lead[2]}}  # fmt: skip
                call = self._connection_call(plan, stage)
                if call is None:
                    return None
                stage["call"] = call
                return stage
        return None

    def _connection_call(
        self, plan: _Plan, stage: dict[str, Any]
    ) -> tuple[Mapping[str, Any], dict[str, Any]] | None:
        """The connection the stage waits for, with its input values (None: the stage is finished).

        The tenant's connection of the same ref (posted, imported, with its secrets) wins over the copy
        embedded in the model; a stage that asks too often fails instead.
        """
        pending = stage.get("pending")
        if pending is None:
            return None
        piece = plan.pieces[int(pending["piece"])]
        found = self.tenant.models[str(piece.model_ref)].connection_node(str(pending["node"]))
        embedded: Mapping[str, Any] = found[2] if found else {}
        library = self.tenant.library["connection"].get(str(embedded.get("ref") or ""))
        connection = library or embedded
        if len(plan.calls) >= MAX_CONNECTION_CALLS:
            stage.pop("pending")
            stage["failure"] = {"piece": pending["piece"], "sub": 0, "kind": "connection",
                                "error": f"more than {MAX_CONNECTION_CALLS} connection calls in one request"}  # fmt: skip
            return None
        return connection, dict(pending.get("inputs") or {})

    def _supply(
        self,
        plan: _Plan,
        stage: dict[str, Any],
        call: tuple[Mapping[str, Any], dict[str, Any]],
        outcome: CallOutcome,
    ) -> None:
        """Keep the call for the trace and give its answer to the next run of the stage."""
        pending = stage["pending"]
        connection, inputs = call
        piece = plan.pieces[int(pending["piece"])]
        answer = outcome.for_worker()
        answer["ms"] = outcome.latency_ms
        supplied = plan.job.setdefault("connections", {}).setdefault(str(pending["piece"]), {})
        supplied[str(pending["node"])] = answer
        plan.calls.append(
            {
                "model": piece.name,
                "node": pending.get("name"),
                "connection": {"ref": connection.get("ref"), "name": connection.get("name")},
                "inputs": inputs,
                "via": outcome.via,
                "request": outcome.request,
                "status": outcome.status,
                "latencyMs": outcome.latency_ms,
                "outputs": outcome.outputs(connection) if outcome.error is None else {},
                "error": outcome.error,
            }
        )

    def _plan(self, body: Any, *, simulate: bool = False) -> _Plan:
        """Validate, resolve the flows, find the guest and bucket, start the trace, and plan the stage."""
        started = time.perf_counter()
        req = validate(body, self.tenant)
        ref = new_ref()
        warnings: list[str] = []
        pos = req["pointOfSale"]
        if pos and pos not in self.tenant.points_of_sale:
            message = f"pointOfSale '{shortened(pos, 64)}' is not configured in this tenant"
            if self.strict_pos:
                raise BadRequest(message, f"configured: {', '.join(sorted(self.tenant.points_of_sale))}")
            warnings.append(message + " (accepted, as the Stream API does)")
        if req["unknownFields"]:
            warnings.append(_unknown_fields_note(req["unknownFields"]))

        candidates = self.tenant.candidates(req["friendlyId"])
        live = [f for f in candidates if f.live or (simulate and f.definition.get("type") == _INTERACTIVE)]
        if not live:
            raise _no_flow(req["friendlyId"], candidates)
        if simulate:  # a dry run before publishing: DRAFT, PAUSED... flows run too, and the trace says so
            states = ", ".join(f"{f.friendly_id} is {f.status}" for f in live)
            warnings.append(f"simulated (X-Flowlab-Simulate: 1): {states}")

        kind, value = req["identity"]
        if len(self.tenant.guests) >= self.max_guests and not _known_guest(self.tenant, kind, value):
            raise GuestLimit(
                f"the sandbox holds {len(self.tenant.guests):,} guests, its limit: no new guests",
                "known guests are still served; POST /sandbox/reset (or restart the sandbox) to start afresh",
            )
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
        if simulate:
            trace["simulated"] = True

        plan = _Plan(started, req, trace, guest, live, request_ctx, pos_ctx, bucket)
        self._plan_stage(plan)
        return plan

    def _plan_stage(self, plan: _Plan) -> None:
        """The guest-code job of this request: every candidate variant's code, named by content keys."""
        tenant = self.tenant
        offers_key, offers = tenant.offers_code()
        blobs: dict[str, tuple[str, Any]] = {offers_key: (_KEEP, offers)}
        objects: dict[str, Any] = {offers_key: offers}
        pieces: list[tuple[str, str, list[str]]] = []
        jobs: list[tuple[int, list[int], list[int], int | None]] = []

        def add(piece: _Piece, payload: tuple[str, Any], compiled: Any) -> int:
            blobs[piece.key] = payload
            objects[piece.key] = compiled
            pieces.append((piece.kind, piece.key, [k for _, k in piece.scripts]))
            plan.pieces.append(piece)
            return len(pieces) - 1

        for flow in plan.live:
            variant = flow.variant_for(plan.bucket)
            attempt: dict[str, Any] = {"friendlyId": flow.friendly_id, "flowRef": flow.ref, "conditions": []}
            position = len(plan.attempts)
            plan.attempts.append((flow, variant, attempt))
            if variant is None:
                attempt["result"] = f"bucket {plan.bucket} is outside the traffic allocation"
                continue
            attempt["variant"] = {
                "ref": variant.ref,
                "name": variant.name,
                "buckets": [variant.low, variant.high],
            }
            conditions = [
                add(
                    _Piece("condition", c.key, position, flow, variant, c.friendly_id),
                    (_COMPILE_CONDITION, (c.script.source, c.friendly_id)),
                    c.script,
                )
                for c in variant.conditions
            ]
            models = []
            for model_ref in variant.model_refs:
                model = tenant.models[model_ref]
                scripts = tuple((name, code_key("script", s.source)) for name, s in model.scripts)
                piece = _Piece("model", tenant.model_keys[model_ref], position, flow, variant, model.name,
                               model_ref, scripts)  # fmt: skip
                models.append(add(piece, (_COMPILE_MODEL, tenant.model_defs[model_ref]), model))
            template: int | None = None
            if variant.template is not None and variant.template_key is not None:
                piece = _Piece("template", variant.template_key, position, flow, variant, "template")
                template = add(piece, (_COMPILE_TEMPLATE, variant.template.source), variant.template)
            jobs.append((position, conditions, models, template))
        quarantined: dict[str, str] = {}
        if tenant.quarantine:
            for piece in plan.pieces:
                for key in (piece.key, *(k for _, k in piece.scripts)):
                    if key in tenant.quarantine:
                        quarantined[key] = tenant.quarantine[key]
        plan.blobs, plan.objects = blobs, objects
        plan.job = {
            "pieces": pieces,
            "candidates": jobs,
            "quarantined": quarantined,
            "guest": plan.guest,
            "request": plan.request_ctx,
            "pos": plan.pos_ctx,
            "bucket": plan.bucket,
            "offers": offers_key,
        }

    def _stage_failed(self, plan: _Plan, exc: FlowLabError) -> dict[str, Any]:
        """The worker was killed or died (or the job broke): name the piece it was in, and quarantine it."""
        index, sub = (
            divmod(int(exc.marker), _SUB) if isinstance(exc, WorkerError) and exc.marker >= 0 else (-1, 0)
        )
        if not isinstance(exc, WorkerError) or not 0 <= index < len(plan.pieces):
            return {"broken": f"the guest-code worker failed outside any script or template: {exc}"}
        piece = plan.pieces[index]
        in_script = piece.kind == "model" and 0 < sub <= len(piece.scripts)
        key = piece.scripts[sub - 1][1] if in_script else piece.key
        what = "template" if piece.kind == "template" else "script"
        if isinstance(exc, WorkerTimeout):
            detail = (
                f"timeout: the {what} ran past the {exc.limit_s * 1000:g} ms hard limit and was stopped with its "
                "worker process"
            )
            if what == "script":
                detail += (
                    " (QuickJS cannot interrupt some native work, e.g. a catastrophic regular expression)"
                )
        else:
            detail = (
                f"memory: the worker process running the {what} died ({exc}); a worker may use "
                f"{self._memory_mb()} MB over its start-up size"
            )
        self.tenant.quarantine_code(key, detail)
        detail += "; the code is quarantined until its source changes"
        return {"failure": {"piece": index, "sub": sub, "error": detail, "kind": detail.split(":", 1)[0]},
                "killed": True}  # fmt: skip

    def _memory_mb(self) -> int:
        return (self._pool or shared_pool()).memory_limit_mb

    async def execute_triggered(
        self,
        flow: CompiledFlow,
        guest: dict[str, Any],
        entity: Mapping[str, Any],
        *,
        trigger: str,
        causal_ref: str | None = None,
    ) -> Execution:
        """Run a triggered flow (TRIGGERED_V3) for a guest; ``entity`` is what fired it (#11, ``triggers.py``).

        The callFlows stage as it is (conditions, decision models with their connections, the template, in
        a worker), with ``entity`` given to scripts and the template; the trace and a TRACKING record in an
        EMAIL session with ``causalEventRef`` are kept. The body is the rendered template; the caller sends it.
        """
        started = time.perf_counter()
        guest_ref = str(guest["ref"])
        pos = str(entity.get("pointOfSale") or "")
        req: dict[str, Any] = {"clientKey": self.tenant.client_key, "friendlyId": flow.friendly_id,
                               "channel": "EMAIL", "language": guest.get("language"), "currencyCode": None,
                               "pointOfSale": pos, "identity": ("guestRef", guest_ref), "params": {},
                               "unknownFields": [], "causalEventRef": causal_ref}  # fmt: skip
        bucket = bucket_for(guest_ref)
        trace: dict[str, Any] = {
            "ref": new_ref(),
            "occurredAt": int(time.time() * 1000),
            "request": {"trigger": trigger, "causalEventRef": causal_ref, "friendlyId": flow.friendly_id},
            "guest": {
                "ref": guest_ref,
                "created": False,
                "identity": "guestRef",
                "guestType": guest.get("guestType"),
            },
            "bucket": bucket,
            "candidates": [],
            "warnings": [],
            "trigger": trigger,
        }
        request_ctx: dict[str, Any] = {"params": {}, "channel": "EMAIL", "pointOfSale": pos,
                                       "language": guest.get("language"), "currencyCode": None,
                                       "friendlyId": flow.friendly_id}  # fmt: skip
        plan = _Plan(
            started, req, trace, guest, [flow], request_ctx, self.tenant.points_of_sale.get(pos, {}), bucket
        )
        self._plan_stage(plan)
        plan.job["entity"] = orjson.loads(orjson.dumps(entity, default=str))
        return await self._run_plan(plan)

    def _finish(self, plan: _Plan, stage: dict[str, Any]) -> Execution:
        """Turn the stage's outcome into the trace, the TRACKING record and the answer."""
        trace = plan.trace
        if plan.calls:
            trace["connections"] = plan.calls
        records: dict[int, list[dict[str, Any]]] = stage.get("attempts", {})
        fail: dict[str, Any] | None = stage.get("failure")
        chosen: int | None = stage.get("chosen")
        failure: FlowFailed | None = None
        upto = len(plan.attempts) - 1
        piece: _Piece | None = None
        fail_error, fail_kind = (str(fail["error"]), str(fail.get("kind"))) if fail is not None else ("", "")
        if "broken" in stage:
            failure = FlowFailed(
                f"flow '{plan.live[0].friendly_id}' failed: {stage['broken']}",
                "a problem of the sandbox, not of the flow: please report it",
            )
        elif fail is not None:
            piece = plan.pieces[fail["piece"]]
            failure = _piece_failure(piece, int(fail.get("sub", 0)), fail_error, fail_kind)
            upto = piece.position
            chosen = None if piece.kind == "condition" else piece.position
            if (
                piece.kind == "template"
                and fail.get("kind") in ("timeout", "memory")
                and not stage.get("killed")
            ):
                self.tenant.quarantine_code(piece.key, str(fail["error"]))
        elif chosen is not None:
            upto = chosen
        for position, (_, variant, attempt) in enumerate(plan.attempts[: upto + 1]):
            trace["candidates"].append(attempt)
            if variant is None:
                continue
            attempt["conditions"] = records.get(position, [])
            if position == upto and piece is not None and piece.kind == "condition":
                if not any("error" in c for c in attempt["conditions"]):
                    attempt["conditions"].append(
                        {"friendlyId": piece.name, "error": fail_error, "kind": fail_kind}
                    )
            elif position == chosen:
                attempt["result"] = "executed"
            elif position in records:
                attempt["result"] = "conditions did not pass"
            else:
                attempt["result"] = "not recorded: the worker running this request was stopped"
        conditions_ms = float(stage.get("conditionsMs", 0.0))
        if chosen is None:
            flow = plan.live[0]
            trace["flow"] = _flow_summary(flow)
            status, text = (failure.status, json.dumps(failure.body())) if failure else (200, NO_MATCH_BODY)
            trace.update(status=status, outcome="error" if failure else "no matching variant", body=text)
            trace["timings"] = {
                "conditionsMs": conditions_ms,
                "totalMs": (time.perf_counter() - plan.started) * 1000,
            }
            self._record(
                trace, plan.guest, flow, None, [], plan.req, error=failure.message if failure else None
            )
            return Execution(trace["ref"], status, text, trace)

        flow, variant, _ = plan.attempts[chosen]
        assert variant is not None
        trace["flow"] = _flow_summary(flow)
        trace["variant"] = {"ref": variant.ref, "name": variant.name, "isControl": variant.is_control}
        models = stage.get("models", [])
        trace["decisionModels"] = [
            {"ref": p.model_ref, "name": p.name, "result": m["result"], "rowsHit": m["rowsHit"]}
            for p, m in zip(
                (p for p in plan.pieces if p.kind == "model" and p.variant is variant), models, strict=False
            )
        ]
        if piece is not None and piece.kind == "model":
            models_seen = trace["decisionModels"]
            if fail_kind == "connection" and models_seen and models_seen[-1]["ref"] == piece.model_ref:
                models_seen[-1]["error"] = fail_error  # its nodes up to the connection are in "result"
            else:
                models_seen.append({"ref": piece.model_ref, "name": piece.name, "error": fail_error})
        trace["offers"] = stage.get("offers", [])
        if stage.get("missingOffers"):
            trace["warnings"].append(
                f"decision output names unknown offers: {', '.join(stage['missingOffers'])}"
            )
        trace["timings"] = {"decisionMs": float(stage.get("decisionMs", 0.0))}
        if variant.template is None:
            trace["warnings"].append(
                f"variant '{variant.name}' has no API response template: the body is empty"
            )
        if piece is not None and piece.kind == "template":
            trace["template"] = {"error": fail_error}
        elif failure is None:
            trace["timings"]["templateMs"] = float(stage.get("templateMs", 0.0))
            valid, problem = stage.get("json", (True, None))
            trace["template"] = {"validJson": True} if valid else {"validJson": False, "jsonError": problem}
            if not valid:
                trace["warnings"].append(
                    f"the template printed text that is not valid JSON ({problem}); sent unchanged"
                )
        status, text = (
            (failure.status, json.dumps(failure.body())) if failure else (200, stage.get("text", ""))
        )
        trace["timings"]["conditionsMs"] = conditions_ms
        trace["timings"]["totalMs"] = (time.perf_counter() - plan.started) * 1000
        trace.update(status=status, outcome="error" if failure else "executed", body=text)
        error = failure.message if failure else None
        if failure is not None and fail is not None and fail.get("recordError"):
            error = str(fail["recordError"])  # Sitecore's own words: "Read timed out"
        self._record(trace, plan.guest, flow, variant, trace["offers"], plan.req, error=error)
        return Execution(trace["ref"], status, text, trace)

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
        if req.get("causalEventRef"):  # a triggered execution: what fired it (reference §6.4, #11)
            execution["causalEventRef"] = req["causalEventRef"]
        if error:
            execution.update(error=error, errorCategory="ERROR")
        else:
            execution["flowExecutionTimeMs"] = round(trace["timings"]["totalMs"], 3)
        models = [m for m in trace.get("decisionModels") or [] if "result" in m]
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


# ---- the guest-code stage: runs in a worker process ------------------------------------------------------

_STAGE: Final = "flowlab.sandbox.personalize.engine:run_stage"
_COMPILE_CONDITION: Final = "flowlab.sandbox.personalize.engine:compile_condition"
_COMPILE_MODEL: Final = "flowlab.sandbox.personalize.engine:compile_model"
_COMPILE_TEMPLATE: Final = "flowlab.sandbox.personalize.engine:compile_template"
_KEEP: Final = "flowlab.sandbox.personalize.engine:keep"
_SUB: Final = 1024  # step marker = piece index * _SUB + programmable number (0: the piece itself)
_CONDITION_GLOBALS: Final = ("guest", "request", "entity", "pos")

_worker_runtime: ScriptRuntime | None = None


def _runtime() -> ScriptRuntime:
    global _worker_runtime
    if _worker_runtime is None:
        _worker_runtime = ScriptRuntime()
    return _worker_runtime


def compile_condition(payload: tuple[str, str]) -> Script:
    """Worker side: a condition's source, compiled in the worker's own QuickJS runtime."""
    source, name = payload
    return _runtime().compile(source, name=name, globals=_CONDITION_GLOBALS)


def compile_model(payload: Mapping[str, Any]) -> DecisionModel:
    """Worker side: a decision model definition, compiled."""
    return DecisionModel.from_json(payload, runtime=_runtime())


def compile_template(payload: str) -> Template:
    """Worker side: a template source, compiled."""
    return Template.compile(payload)


def keep(payload: Any) -> Any:
    """Worker side: data kept as sent (the offers)."""
    return payload


class _Refused(Exception):
    """A quarantined piece was reached: the stage stops with its failure."""

    def __init__(self, failure: dict[str, Any]) -> None:
        super().__init__(failure["error"])
        self.failure = failure


def run_stage(job: Mapping[str, Any], resolve: Callable[[str], Any]) -> dict[str, Any]:
    """Conditions, then the chosen variant's decision models and template: one request's guest code.

    Runs in a worker (or in-process for ``guest_code="inline"``); every step announces its hard limit, so
    the pool can tell which script or template it killed. Returns plain data for :meth:`Engine._finish`.
    """
    pieces, quarantined = job["pieces"], job["quarantined"]
    out: dict[str, Any] = {"attempts": {}, "chosen": None}

    def enter(index: int, sub: int, key: str, limit_s: float) -> None:
        if key in quarantined:
            error = f"quarantined: an earlier run was stopped ({quarantined[key]}); change the code to run it again"
            raise _Refused({"piece": index, "sub": sub, "error": error, "kind": "quarantined"})
        step(index * _SUB + sub, limit_s)

    values = {
        "guest": job["guest"],
        "request": job["request"],
        "entity": job.get("entity"),
        "pos": job["pos"],
    }
    started = time.perf_counter()
    try:
        for position, conditions, models, template in job["candidates"]:
            records: list[dict[str, Any]] = []
            out["attempts"][position] = records
            passed, filter_value = True, None
            for index in conditions:
                _, key, _ = pieces[index]
                enter(index, 0, key, SCRIPT_HARD_LIMIT_S)
                script: Script = resolve(key)
                run_started = time.perf_counter()
                try:
                    result = script.run(values)
                except ScriptError as exc:
                    records.append({"friendlyId": script.name, "error": str(exc), "kind": exc.kind})
                    out["failure"] = {"piece": index, "sub": 0, "error": str(exc), "kind": exc.kind}
                    return out
                passed = bool(result.value) and result.value != {} and result.value != []
                ms = round((time.perf_counter() - run_started) * 1000, 3)
                records.append({"friendlyId": script.name, "passed": passed, "value": result.value,
                                "logs": result.logs, "ms": ms})  # fmt: skip
                if not passed:
                    break
                filter_value = result.value
            if passed:
                out["chosen"] = position
                out["conditionsMs"] = (time.perf_counter() - started) * 1000
                _run_variant(job, resolve, enter, models, template, filter_value, out)
                return out
    except _Refused as refused:
        out["failure"] = refused.failure
    out.setdefault("conditionsMs", (time.perf_counter() - started) * 1000)
    return out


def _run_variant(
    job: Mapping[str, Any],
    resolve: Callable[[str], Any],
    enter: Callable[[int, int, str, float], None],
    models: list[int],
    template_index: int | None,
    filter_value: Any,
    out: dict[str, Any],
) -> None:
    """Decision models, then the template, of the chosen variant (failures go into ``out``)."""
    pieces = job["pieces"]
    decision_started = time.perf_counter()
    results: list[dict[str, Any]] = []
    offer_refs: list[str] = []
    out["models"] = []
    for index in models:
        _, key, script_keys = pieces[index]
        enter(index, 0, key, SCRIPT_HARD_LIMIT_S)

        def before(position: int, script: Script, index: int = index, keys: list[str] = script_keys) -> None:
            enter(index, position + 1, keys[position], SCRIPT_HARD_LIMIT_S)

        model: DecisionModel = resolve(key)
        supplied = job.get("connections", {}).get(str(index), {})
        outcome = model.evaluate(guest=job["guest"], request=job["request"], pos=job["pos"],
                                 bucket=job["bucket"], before_script=before, connections=supplied,
                                 entity=job.get("entity"))  # fmt: skip
        if outcome.pending is not None:  # the engine calls it on its event loop, then runs this again
            out["pending"] = {"piece": index, **outcome.pending}
            return
        results.append(outcome.result)
        offer_refs.extend(outcome.offer_refs)
        out["models"].append({"result": outcome.result, "rowsHit": outcome.rows_hit})
        if outcome.failure is not None:  # a connection failed: the flow fails, as a real one does (#11)
            node = outcome.result["decisionModelResultNodes"][-1]["name"]
            out["failure"] = {"piece": index, "sub": 0, "kind": "connection", "recordError": outcome.failure,
                              "error": f"connection node '{node}' failed: {outcome.failure}"}  # fmt: skip
            return
    offers_by_ref: Mapping[str, Any] = resolve(job["offers"])
    offers = [offers_by_ref[r] for r in offer_refs if r in offers_by_ref]
    out["missingOffers"] = [r for r in offer_refs if r not in offers_by_ref]
    out["offers"] = [o["ref"] for o in offers]
    template_started = time.perf_counter()
    out["decisionMs"] = (template_started - decision_started) * 1000
    text = ""
    if template_index is not None:
        _, key, _ = pieces[template_index]
        enter(template_index, 0, key, TEMPLATE_HARD_LIMIT_S)
        template: Template = resolve(key)
        data = {
            "guest": job["guest"],
            "request": job["request"],
            "offers": offers,
            "decisionModelResults": results[0] if results else {"decisionModelResultNodes": []},
            "filter": filter_value,
            "pos": job["pos"],
            "entity": job.get("entity"),  # what fired a triggered flow (#11); None for callFlows
        }
        try:
            text = template.render(data, {"getDecisionModelResultNode": _node_finder(results)})
        except TemplateError as exc:
            kind = exc.kind if isinstance(exc, TemplateLimitError) else "error"
            out["failure"] = {"piece": template_index, "sub": 0, "error": str(exc), "kind": kind}
            out["recycle"] = kind == "memory"
            return
    out["templateMs"] = (time.perf_counter() - template_started) * 1000
    out["text"] = text
    try:
        orjson.loads(text)
        out["json"] = (True, None)
    except orjson.JSONDecodeError as exc:
        out["json"] = (False, str(exc))


@dataclass
class _Piece:
    """A condition, decision model or template of a candidate variant, as the stage job numbers them."""

    kind: Literal["condition", "model", "template"]
    key: str
    position: int  # the candidate (index into _Plan.attempts) it belongs to
    flow: CompiledFlow
    variant: CompiledVariant
    name: str
    model_ref: str | None = None
    scripts: tuple[tuple[str, str], ...] = ()  # a model's programmables: (name, content key)


@dataclass
class _Plan:
    """One request between validation and recording: its trace so far and its guest-code job."""

    started: float
    req: dict[str, Any]
    trace: dict[str, Any]
    guest: dict[str, Any]
    live: list[CompiledFlow]
    request_ctx: dict[str, Any]
    pos_ctx: dict[str, Any]
    bucket: int
    attempts: list[tuple[CompiledFlow, CompiledVariant | None, dict[str, Any]]] = field(default_factory=list)
    pieces: list[_Piece] = field(default_factory=list)
    job: dict[str, Any] = field(default_factory=dict)
    blobs: dict[str, tuple[str, Any]] = field(default_factory=dict)
    objects: dict[str, Any] = field(default_factory=dict)
    #: connection calls made for this request, as the trace shows them
    calls: list[dict[str, Any]] = field(default_factory=list)

    def provide(self, keys: Sequence[str]) -> dict[str, tuple[str, Any]]:
        return {k: self.blobs[k] for k in keys if k in self.blobs}


def _piece_failure(piece: _Piece, sub: int, detail: str, kind: str = "") -> FlowFailed:
    """The 500 body for a failed piece: it names the flow, the variant and the script (and the limit)."""
    flow, variant = piece.flow.friendly_id, piece.variant.name
    if kind == "connection":
        return FlowFailed(
            f"decision model '{piece.name}' of flow '{flow}', variant '{variant}' failed: {detail}",
            "the execution trace (GET /sandbox/executions/{ref}) shows the nodes that ran before it",
        )
    if piece.kind == "condition":
        return FlowFailed(
            f"condition '{piece.name}' of flow '{flow}' failed: {detail}",
            f"variant '{variant}'; fix the condition's JavaScript (limits: {_LIMITS})",
        )
    if piece.kind == "model":
        script = f"programmable '{piece.scripts[sub - 1][0]}' of " if 0 < sub <= len(piece.scripts) else ""
        return FlowFailed(
            f"{script}decision model '{piece.name}' of flow '{flow}', variant '{variant}' failed: {detail}",
            f"fix the programmable's JavaScript (limits: {_LIMITS})",
        )
    return FlowFailed(
        f"the API response template of flow '{flow}', variant '{variant}' failed: {detail}",
        "fix the template in the flow definition (GET /sandbox/flows/{friendlyId} shows it); limits: "
        f"{TIME_LIMIT_S * 1000:g} ms per render (its worker is killed at {TEMPLATE_HARD_LIMIT_S * 1000:g} ms), "
        f"{MAX_OUTPUT:,} characters of output",
    )


_LIMITS: Final = (
    "50 ms of CPU and 32 MB per script run, stopped by QuickJS; a run QuickJS cannot stop is killed with its "
    f"worker process at {SCRIPT_HARD_LIMIT_S * 1000:g} ms and the script is quarantined"
)


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


_INTERACTIVE = "INTERACTIVE_API_FLOW"  # the only type callFlows runs, live or simulated


def _no_flow(friendly_id: str, candidates: list[CompiledFlow]) -> SandboxError:
    if not candidates:
        return NotFound(
            f"no flow with friendlyId '{shortened(friendly_id, 64)}'",
            "check the friendlyId (Setup details in Personalize; GET /sandbox/flows in the sandbox); "
            "a trailing * matches by prefix",
        )
    states = ", ".join(f"{f.friendly_id} is {f.status}" for f in candidates)
    return NotFound(
        f"no live flow with friendlyId '{shortened(friendly_id, 64)}'",
        f"{states}; only flows with status LIVE or PRODUCTION and type INTERACTIVE_API_FLOW execute",
    )
