"""Triggered experiences (TRIGGERED_V3): fire them on events and closed sessions, deliver to destinations (#11).

Reference "sitecore-exports.md", "Triggered experiences": a flow ``triggers[].identifiers[]`` lists what fires
it (``{"operator": "Equals", "value": "SESSION_CLOSED" | "<CUSTOM_EVENT_TYPE>"}``); an execution runs its
conditions, decision models and template with the triggering object as ``entity`` (the closed session, or
the event with its ``arbitraryData``), and its ``connectionTask`` sends **the rendered template as the
request body** to the embedded DESTINATION connection (its own ``requestBody`` is only a test sample).

* **Background, bounded.** :meth:`Triggers.fire` only queues: the request that posted the event or closed
  the session never waits on a flow or a destination. At most ``CONCURRENCY`` executions run at once and
  ``MAX_PENDING`` wait; past that a firing is recorded as ``DROPPED`` (saying so) rather than queued.
* **Delivery.** Through the engine's ``ConnectionCaller`` (routing, auth, timeouts, secret masking, the
  built-in mocks: Sitecore Send's host goes to the ``send`` mock, any other DESTINATION to ``capture``,
  both listed at ``GET /sandbox/mocks/deliveries``). A 5xx, 429, timeout or dropped connection is retried
  with exponential backoff, ``MAX_ATTEMPTS`` attempts in all; a 4xx is not.
* **Record.** Every firing is a delivery (``GET /sandbox/deliveries``): ``{ref, friendlyId, guestRef,
  trigger, connection: {ref, name}, method, url, requestBody, status, attempts, latencyMs, error, at}``
  plus ``executionRef`` (the trace), ``responseStatus`` and ``response``. ``status``: QUEUED, RUNNING,
  DELIVERED, FAILED (the flow or the destination failed), SKIPPED (conditions did not pass, or the flow has
  no destination) or DROPPED. Secrets are masked. The execution's TRACKING record sits in an EMAIL session
  of the guest, with ``causalEventRef`` (reference §6.4).
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, Final

from flowlab.sandbox.personalize.connections import build_request, mask_url
from flowlab.sandbox.personalize.engine import Engine
from flowlab.sandbox.personalize.events import MAX_SESSIONS, guest_sessions, iso_time
from flowlab.sandbox.personalize.store import LIVE_STATUSES, CompiledFlow, new_ref

__all__ = [
    "BACKOFF_S",
    "CONCURRENCY",
    "MAX_ATTEMPTS",
    "MAX_DELIVERIES",
    "MAX_PENDING",
    "TRIGGERED_TYPE",
    "Triggers",
    "destination_of",
    "trigger_values",
]

TRIGGERED_TYPE: Final = "TRIGGERED_V3"
#: executions running at once, and firings waiting beyond those (then DROPPED)
CONCURRENCY: Final = 8
MAX_PENDING: Final = 1_000
#: attempts per delivery (the first and the retries), and the first retry's wait (doubling)
MAX_ATTEMPTS: Final = 3
BACKOFF_S: Final = 0.2
#: deliveries kept (oldest dropped first)
MAX_DELIVERIES: Final = 2_000
_PLACEHOLDER = re.compile(r"\$\{([^{}]*)\}")
_RETRY_ERRORS: Final = ("timed out", "Connection reset", "Connection refused", "connect failed")


def trigger_values(flow: CompiledFlow) -> set[str]:
    """What fires this flow: the ``Equals`` values of its triggers (upper-cased)."""
    values: set[str] = set()
    for trigger in flow.definition.get("triggers") or []:
        if not isinstance(trigger, Mapping):
            continue
        for ident in trigger.get("identifiers") or []:
            if isinstance(ident, Mapping) and str(ident.get("operator") or "Equals").lower() == "equals":
                if isinstance(ident.get("value"), str):
                    values.add(ident["value"].strip().upper())
    return values


def destination_of(flow: CompiledFlow, variant_ref: str | None) -> dict[str, Any] | None:
    """The connection of the variant's ``connectionTask`` (the first variant's when none is given)."""
    variants = flow.definition.get("variants") or []
    for variant in variants:
        if variant_ref is not None and variant.get("ref") != variant_ref:
            continue
        for task in variant.get("tasks") or []:
            if isinstance(task, Mapping) and task.get("implementation") == "connectionTask":
                connection = (task.get("input") or {}).get("connection")
                if isinstance(connection, Mapping):
                    return dict(connection)
        if variant_ref is None:
            break
    return None


class Triggers:
    """The triggered flows of one sandbox: what fires them, their background queue, their deliveries."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.deliveries: deque[dict[str, Any]] = deque(maxlen=MAX_DELIVERIES)
        self._pending = 0
        self._semaphore: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: the first retry's wait, and firings that may wait (tests change them)
        self.backoff_s = BACKOFF_S
        self.max_pending = MAX_PENDING

    def reset(self) -> None:
        self.deliveries.clear()

    def flows_for(self, value: str) -> list[CompiledFlow]:
        """Live triggered flows that this trigger value fires, in friendlyId order."""
        wanted = value.strip().upper()
        return [
            flow
            for _, flow in sorted(self.engine.tenant.flows.items())
            if flow.definition.get("type") == TRIGGERED_TYPE
            and flow.status in LIVE_STATUSES
            and wanted in trigger_values(flow)
        ]

    def fire(self, value: str, guest_ref: str, entity: Mapping[str, Any], *, causal_ref: str) -> list[str]:
        """Queue every live flow ``value`` fires for this guest (on the running loop); their friendlyIds."""
        fired = []
        for flow in self.flows_for(value):
            delivery: dict[str, Any] = {
                "ref": new_ref(),
                "friendlyId": flow.friendly_id,
                "flowRef": flow.ref,
                "guestRef": guest_ref,
                "trigger": value,
                "causalEventRef": causal_ref,
                "connection": None,
                "method": None,
                "url": None,
                "requestBody": None,
                "status": "QUEUED",
                "attempts": 0,
                "latencyMs": None,
                "responseStatus": None,
                "response": None,
                "executionRef": None,
                "error": None,
                "at": int(time.time() * 1000),
            }
            self.deliveries.append(delivery)
            fired.append(flow.friendly_id)
            if self._pending >= self.max_pending:
                delivery.update(
                    status="DROPPED",
                    error=f"the sandbox's trigger queue is full ({self.max_pending:,} waiting): try again later",
                )
                continue
            self._pending += 1
            task = asyncio.get_running_loop().create_task(
                self._run(flow, guest_ref, copy.deepcopy(dict(entity)), delivery)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return fired

    def list(
        self, *, guest_ref: str = "", friendly_id: str = "", limit: int = 100, offset: int = 0
    ) -> dict[str, Any]:
        """``{total, items}``, newest first, filtered by guest and flow."""
        items = [
            d
            for d in reversed(self.deliveries)
            if (not guest_ref or d["guestRef"] == guest_ref)
            and (not friendly_id or d["friendlyId"] == friendly_id)
        ]
        return {"total": len(items), "items": [dict(d) for d in items[offset : offset + limit]]}

    async def _run(
        self, flow: CompiledFlow, guest_ref: str, entity: dict[str, Any], delivery: dict[str, Any]
    ) -> None:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(CONCURRENCY)
        try:
            async with self._semaphore:
                delivery["status"] = "RUNNING"
                await self._execute(flow, guest_ref, entity, delivery)
        except Exception as exc:  # a bug must not kill the queue silently: the delivery says what happened
            delivery.update(
                status="FAILED", error=f"the sandbox failed running the flow: {type(exc).__name__}: {exc}"
            )
        finally:
            self._pending -= 1

    async def _execute(
        self, flow: CompiledFlow, guest_ref: str, entity: dict[str, Any], delivery: dict[str, Any]
    ) -> None:
        tenant = self.engine.tenant
        guest = tenant.guests.get(guest_ref)
        if guest is None:
            delivery.update(status="FAILED", error="the guest is gone (the sandbox was reset)")
            return
        execution = await self.engine.execute_triggered(
            flow, guest, entity, trigger=delivery["trigger"], causal_ref=delivery["causalEventRef"]
        )
        trace = execution.trace
        delivery["executionRef"] = execution.ref
        self._email_session(guest, trace)
        if trace.get("outcome") == "no matching variant":
            failed = [
                c.get("friendlyId")
                for attempt in trace.get("candidates") or []
                for c in attempt.get("conditions") or []
                if not c.get("passed")
            ]
            delivery.update(
                status="SKIPPED",
                error=f"conditions did not pass ({', '.join(map(str, failed)) or 'traffic allocation'}): nothing sent",
            )
            return
        if trace.get("outcome") == "error":
            delivery.update(status="FAILED", error=_error_message(execution.body))
            return
        connection = destination_of(flow, (trace.get("variant") or {}).get("ref"))
        if connection is None:
            delivery.update(status="SKIPPED", error="the variant has no connectionTask: nothing to send")
            return
        library = tenant.library["connection"].get(str(connection.get("ref") or ""))
        connection = dict(library or connection)  # the tenant's copy (with its secrets) wins, as in models
        await self._deliver(connection, execution.body, delivery)

    async def _deliver(self, connection: dict[str, Any], body: str, delivery: dict[str, Any]) -> None:
        """Send the rendered body to the destination, retrying 5xx, 429 and timeouts with backoff."""
        request = dict(connection.get("request") or {})
        url_keys = {
            str(p["key"]): p.get("exampleValue")
            for p in connection.get("urlParameters") or []
            if isinstance(p, Mapping) and p.get("key")
        }
        # the rendered text is the body as it is: a ${...} it prints stays literal
        literal = {m.group(1).strip(): m.group(0) for m in _PLACEHOLDER.finditer(body)}
        method = str(request.get("requestType") or "POST").upper()
        connection["request"] = {**request, "requestBody": body, "requestType": method}
        inputs = {**literal, **url_keys}
        sent_method, url, _, _ = build_request(connection, inputs)
        delivery.update(
            connection={"ref": connection.get("ref"), "name": connection.get("name")},
            method=sent_method,
            url=mask_url(url),
        )
        caller = self.engine.connections
        total_ms = 0.0
        for attempt in range(1, MAX_ATTEMPTS + 1):
            outcome = await caller.call(connection, inputs)
            total_ms += outcome.latency_ms
            delivery.update(
                attempts=attempt,
                requestBody=_shown_body(body, outcome.request.get("body")),
                via=outcome.via,
                sentTo=outcome.request.get("url"),
                responseStatus=outcome.status,
                response=outcome.body,
                latencyMs=round(total_ms, 3),
                error=outcome.error,
            )
            if outcome.error is None:
                delivery["status"] = "DELIVERED"
                return
            retry = (outcome.status is not None and (outcome.status >= 500 or outcome.status == 429)) or (
                outcome.status is None and any(e in outcome.error for e in _RETRY_ERRORS)
            )
            if not retry or attempt == MAX_ATTEMPTS:
                break
            await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
        delivery["status"] = "FAILED"

    def _email_session(self, guest: dict[str, Any], trace: Mapping[str, Any]) -> None:
        """The execution's TRACKING record in an EMAIL session of the guest, as Personalize keeps it (§6.4)."""
        ref = trace.get("tracking")
        if not ref:
            return
        records = [r for r in self.engine.tenant.tracking_records(str(guest["ref"])) if r.get("ref") == ref]
        if not records:
            return
        record = records[-1]
        at = trace.get("occurredAt")
        sessions = guest_sessions(guest)
        sessions.append(
            {
                "ref": record.get("sessionRef") or new_ref(),
                "clientKey": self.engine.tenant.client_key,
                "guestRef": guest["ref"],
                "status": "CLOSED",
                "sessionType": "EMAIL",
                "channel": "EMAIL",
                "pointOfSale": record.get("pointOfSale") or "",
                "startedAt": iso_time(at),
                "endedAt": iso_time(at),
                "flowExecutionRef": trace.get("ref"),
                "events": [record],
            }
        )
        del sessions[:-MAX_SESSIONS]


def _error_message(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body[:500]
    if isinstance(data, dict) and data.get("message"):
        return str(data["message"])
    return body[:500]


def _shown_body(rendered: str, masked: Any) -> Any:
    """The rendered body as sent, unless masking a secret changed it (then the masked copy)."""
    if masked == rendered:
        return rendered
    try:
        return rendered if json.loads(rendered) == json.loads(str(masked)) else masked
    except ValueError:
        return masked
