"""The sandbox tenant as an ASGI app: the real-API routes, unchanged, and an admin API under ``/sandbox``.

``create_app()`` builds a fresh tenant (demo data) per app, so every server, test and notebook has its own.
The hot route (``POST /v2/callFlows``) reads the raw body and answers the template's text as-is; every
error, on any route, uses the one body in ``errors.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from flowlab import __version__
from flowlab.errors import RunStoreError
from flowlab.sandbox.access import AdminAccess, AdminGuard, RealApiCors, require_json
from flowlab.sandbox.edge.routes import EdgeGateway, EdgeService, register as register_edge
from flowlab.sandbox.edge.tenant import EdgeTenant
from flowlab.sandbox.errors import (
    BadRequest,
    NotFound,
    SandboxError,
    Unauthorized,
    UnsupportedMediaType,
    error_body,
)
from flowlab.sandbox.faults import FaultInjector, Knobs, parse_faults, parse_latency
from flowlab.sandbox.limits import BodyLimit, parse_json
from flowlab.sandbox.mocks import MockSystems
from flowlab.sandbox.openapi import (
    ADMIN_ERRORS,
    ADMIN_WRITE_ERRORS,
    CALL_FLOWS_BODY,
    CONNECTION_BODY,
    CONNECTION_ROUTE_BODY,
    CONNECTION_TEST_BODY,
    DECISION_MODEL_BODY,
    EVENT_BODY,
    FLOW_BODY,
    GUEST_BODY,
    IMPORT_BODY,
    KNOBS_BODY,
    OFFER_BODY,
    REAL_API_FAULTS,
    REPLAY_BODY,
    RESET_BODY,
    SESSION_CLOSE_BODY,
    errors,
    json_body,
    truthful_openapi,
)
from flowlab.sandbox.personalize.connections import ConnectionCaller, Routes
from flowlab.sandbox.personalize.dmn import mask_connection
from flowlab.sandbox.personalize.engine import Engine, Execution, unit_hash
from flowlab.sandbox.personalize.events import EventOutcome, add_guest, close_session, record_event
from flowlab.sandbox.personalize.importer import ImportReport, import_folder, import_zip
from flowlab.sandbox.personalize.replay import Replay
from flowlab.sandbox.personalize.store import Tenant
from flowlab.sandbox.personalize.triggers import Triggers

__all__ = ["SIMULATE_HEADER", "SandboxApp", "create_app"]

_JSON = "application/json"
#: Sandbox-only request header: ``1`` runs a callFlows flow in any status (simulate before you publish).
SIMULATE_HEADER = "x-flowlab-simulate"
_SIMULATE_KEY = SIMULATE_HEADER.encode()


class SandboxApp(FastAPI):
    """FastAPI with the tenant, engine and knobs attached, so tests and servers can reach them."""

    tenant: Tenant
    engine: Engine
    knobs: Knobs
    access: AdminAccess
    edge: EdgeService
    replay: Replay
    #: triggered flows: what fires them, their background queue, their deliveries (#11)
    triggers: Triggers
    #: what each ``load`` folder of ``create_app`` became (sandbox --load), in order
    load_reports: list[ImportReport]


def _error(exc: SandboxError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


def create_app(
    *,
    tenant: Tenant | None = None,
    latency_ms: str | float | None = None,
    faults: str | None = None,
    strict_pos: bool = False,
    seed: int | None = None,
    host: str = "127.0.0.1",
    admin_token: str | SecretStr | None = None,
    replay: Sequence[str | Path] = (),
    replay_latency: bool = False,
    load: Sequence[str | Path] = (),
    connections_to: str | None = None,
    connection_routes: Mapping[str, str] | None = None,
) -> SandboxApp:
    """A sandbox app on a fresh demo tenant (or ``tenant``), with optional latency and faults.

    ``host`` is the address it will be bound to and ``admin_token`` the admin API's bearer token
    (``access.py``: who may use ``/sandbox/…``). ``replay``: run stores whose recorded answers callFlows
    serves instead of the engine (``replay.py``), with their latency if ``replay_latency``. ``load``:
    Sitecore export folders to import (``importer.py``), kept across resets; reports in ``load_reports``.
    ``connections_to`` / ``connection_routes`` (``{name or ref: base URL}``): where connections go instead
    of the built-in mocks (``connections.Routes``); a bad URL is a ValueError saying so.
    """
    app = SandboxApp(title="Flow Lab sandbox tenant", version=__version__, docs_url="/sandbox/docs",
                     openapi_url="/sandbox/openapi.json", redoc_url=None)  # fmt: skip
    app.tenant = tenant or Tenant()
    app.load_reports = [import_folder(app.tenant, folder, keep=True) for folder in load]
    app.engine = Engine(app.tenant, strict_pos=strict_pos)
    app.knobs = Knobs.from_specs(latency_ms, faults, seed)
    token = SecretStr(admin_token) if isinstance(admin_token, str) else admin_token
    app.access = AdminAccess(host=host, token=token if token and token.get_secret_value() else None)
    app.replay = Replay()
    app.replay.load(replay, latency=replay_latency)
    engine, knobs = app.engine, app.knobs
    app.edge = EdgeService(EdgeTenant(), knobs, pool=lambda: engine.pool)  # the AEP Edge Network (#9)
    mocks = MockSystems(knobs)  # the systems imported connections call, offline (#11)
    engine.connections = ConnectionCaller(
        mocks=mocks, routes=Routes(connections_to=connections_to, overrides=connection_routes)
    )
    app.triggers = triggers = Triggers(engine)

    @app.exception_handler(SandboxError)
    async def sandbox_error(request: Request, exc: SandboxError) -> JSONResponse:
        return _error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = "no such route" if exc.status_code == 404 else str(exc.detail)
        body = error_body(exc.status_code, message, f"{request.method} {request.url.path}: {exc.detail}")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # every method of the path, not only the first route's (RFC 9110)
            headers["Allow"] = ", ".join(_allowed_methods(app, request.scope))
        return JSONResponse(body, status_code=exc.status_code, headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return _error(BadRequest("invalid request", details))

    def answer(execution: Execution) -> Response:
        return Response(execution.body, status_code=execution.status_code, media_type=_JSON,
                        headers={"X-Flowlab-Execution": execution.ref})  # fmt: skip

    # ---- the real API -------------------------------------------------------------------------------

    example = {"clientKey": app.tenant.client_key, "channel": "WEB", "pointOfSale": "lumen/de",
               "language": "EN", "browserId": "docs-example", "friendlyId": "checkout_ab_test"}  # fmt: skip
    ref_header = {
        "required": True,
        "schema": {"type": "string"},
        "description": "GET /sandbox/executions/{ref}",
    }
    executed: dict[int | str, dict[str, Any]] = {
        200: {
            "description": "The flow's template output, unchanged (or No matching variant)",
            "content": {_JSON: {"schema": {}}},
            "headers": {"X-Flowlab-Execution": ref_header},
        }
    }

    simulate_param = {"name": "X-Flowlab-Simulate", "in": "header", "required": False,
                      "schema": {"type": "string", "enum": ["0", "1"]},
                      "description": "Sandbox only: 1 runs the flow in any status (DRAFT, PAUSED...), to "
                                     "simulate it before publishing; the trace says simulated. Other "
                                     "values are a 400"}  # fmt: skip

    @app.post("/v2/callFlows", tags=["Personalize API"], summary="Execute an experience or experiment",
              responses={**executed, **errors(400, 401, 404, *REAL_API_FAULTS)},
              openapi_extra={**json_body(CALL_FLOWS_BODY, example=example),
                             "parameters": [simulate_param]})  # fmt: skip
    async def call_flows(request: Request) -> Response:
        """Documented here; served by ``_CallFlowsFastPath`` (the same ``_call_flows`` function)."""
        simulate = request.headers.get(SIMULATE_HEADER)
        return _raw_response(*await _call_flows(engine, await request.body(), app.replay, simulate=simulate))

    message_param = {"name": "message", "in": "query", "required": True, "description": "The body as JSON",
                     "content": {_JSON: {"schema": CALL_FLOWS_BODY, "example": example}}}  # fmt: skip

    @app.get("/v2/callFlows", tags=["Personalize API"], summary="Legacy form: the body as ?message=<json>",
             responses={**executed, **errors(400, 401, 404, *REAL_API_FAULTS)},
             openapi_extra={"parameters": [message_param, simulate_param]})  # fmt: skip
    async def call_flows_get(request: Request) -> Response:
        body = parse_json(request.query_params.get("message", ""), "message (the request body as JSON)")
        if app.replay.active:
            return _raw_response(*await app.replay.answer(body))
        simulate = _simulate(request.headers.get(SIMULATE_HEADER))
        return answer(await engine.execute_async(body, simulate=simulate))

    @app.get("/v1.2/browser/create.json", tags=["Stream API"], status_code=201,
             responses=errors(401, *REAL_API_FAULTS))  # fmt: skip
    async def browser_create(client_key: str = "", message: str = "{}") -> JSONResponse:
        if client_key != app.tenant.client_key:
            raise Unauthorized("unknown client_key", "pass the tenant's client key as ?client_key=")
        browser_id, guest_ref = app.tenant.create_browser()
        body = {"status": "OK", "version": "1.2", "client_key": client_key, "ref": browser_id,
                "customer_ref": guest_ref}  # fmt: skip
        return JSONResponse(body, status_code=201)

    @app.get("/v1.2/browser/{browser_id}/show.json", tags=["Stream API"],
             responses=errors(401, 404, *REAL_API_FAULTS))  # fmt: skip
    async def browser_show(browser_id: str, client_key: str = "") -> dict[str, Any]:
        if client_key != app.tenant.client_key:
            raise Unauthorized("unknown client_key", "pass the tenant's client key as ?client_key=")
        ref = app.tenant.by_browser.get(browser_id)
        if ref is None:
            raise NotFound(f"unknown browser id '{browser_id}'")
        return {"status": "OK", "version": "1.2", "ref": browser_id, "customer": {"ref": ref}}

    # ---- events and triggered flows (#11) -----------------------------------------------------------

    def fire(outcome: EventOutcome) -> JSONResponse:
        """Fire what the event set off (in the background) and answer the way the Stream API does."""
        guest_ref = str(outcome.guest["ref"])
        for session in outcome.closed:
            triggers.fire("SESSION_CLOSED", guest_ref, session, causal_ref=str(session["ref"]))
        triggers.fire(
            str(outcome.event["type"]), guest_ref, outcome.event, causal_ref=str(outcome.event["ref"])
        )
        body = {
            "ref": outcome.event["ref"],
            "status": "OK",
            "version": "1.2",
            "client_key": app.tenant.client_key,
        }
        return JSONResponse(body, status_code=201)

    event_example = {"type": "VIEW", "browser_id": "<from browser/create.json>", "client_key": app.tenant.client_key,
                     "channel": "WEB", "pos": "lumen/de", "language": "EN", "currency": "EUR", "page": "home"}  # fmt: skip
    created_why = "{ref, status: OK, version: 1.2, client_key}; triggered flows run in the background"
    event_created: dict[int | str, dict[str, Any]] = {201: {"description": created_why}}

    @app.post("/v1.2/events", tags=["Stream API"], status_code=201, summary="Send an event (Engage SDK)",
              responses={**event_created, **errors(400, 401, 404, *REAL_API_FAULTS)},
              openapi_extra=json_body(EVENT_BODY, example=event_example))  # fmt: skip
    async def stream_event(request: Request) -> JSONResponse:
        body = parse_json(await request.body(), "the event")
        return fire(record_event(app.tenant, body, client_key=request.query_params.get("client_key")))

    event_param = {"name": "message", "in": "query", "required": True, "description": "The event as JSON",
                   "content": {_JSON: {"schema": EVENT_BODY, "example": event_example}}}  # fmt: skip

    @app.get("/v1.2/event/create.json", tags=["Stream API"], status_code=201,
             summary="Legacy form: the event as ?message=<json>",
             responses={**event_created, **errors(400, 401, 404, *REAL_API_FAULTS)},
             openapi_extra={"parameters": [event_param]})  # fmt: skip
    async def stream_event_get(request: Request, client_key: str = "") -> JSONResponse:
        body = parse_json(request.query_params.get("message", ""), "message (the event as JSON)")
        return fire(record_event(app.tenant, body, client_key=client_key or None))

    # ---- the admin API ------------------------------------------------------------------------------

    @app.get("/sandbox/info", tags=["Sandbox"], responses=errors(*ADMIN_ERRORS))
    async def info(request: Request) -> dict[str, Any]:
        return {
            "edge": app.edge.info(str(request.base_url)),
            "clientKey": app.tenant.client_key,
            "pointsOfSale": list(app.tenant.points_of_sale.values()),
            "version": __version__,
            "knobs": knobs.describe(),
            "replay": app.replay.describe(),
            "counts": {
                "flows": len(app.tenant.flows),
                "offers": len(app.tenant.offers),
                "decisionModels": len(app.tenant.models),
                "guests": len(app.tenant.guests),
                "executions": len(app.tenant.traces),
            },  # fmt: skip
        }

    @app.get("/sandbox/flows", tags=["Sandbox"], responses=errors(*ADMIN_ERRORS))
    async def flows() -> list[dict[str, Any]]:
        return [
            {
                "friendlyId": f.friendly_id, "ref": f.ref, "name": f.definition.get("name"),
                "type": f.definition.get("type"), "subtype": f.definition.get("subtype"), "status": f.status,
                "live": f.live, "description": f.definition.get("description", ""),
                "variants": [{"ref": v.ref, "name": v.name, "split": v.split,
                              "isControl": v.is_control, "buckets": [v.low, v.high]} for v in f.variants],
            }
            for _, f in sorted(app.tenant.flows.items())
        ]  # fmt: skip

    @app.get("/sandbox/flows/{friendly_id}", tags=["Sandbox"], responses=errors(*ADMIN_ERRORS, 404))
    async def flow(friendly_id: str) -> dict[str, Any]:
        found = app.tenant.flows.get(friendly_id)
        if found is None:
            raise NotFound(f"no flow with friendlyId '{friendly_id}'")
        return found.definition

    @app.post(
        "/sandbox/flows",
        tags=["Sandbox"],
        status_code=201,
        responses=errors(*ADMIN_WRITE_ERRORS),
        dependencies=_WRITE,
        openapi_extra=json_body(FLOW_BODY),
    )
    async def load_flow(request: Request) -> JSONResponse:
        data = await _json_object(request)
        return JSONResponse(_loaded("flow", app.tenant.add_flow, data), status_code=201)

    @app.get("/sandbox/flows/{friendly_id}/outcomes", tags=["Sandbox"], responses=errors(*ADMIN_ERRORS, 404))
    async def outcomes(friendly_id: str) -> list[dict[str, Any]]:
        """Simulated conversions for every guest who executed the flow (first variant seen)."""
        found = app.tenant.flows.get(friendly_id)
        if found is None:
            raise NotFound(f"no flow with friendlyId '{friendly_id}'")
        variants = {v.ref: v for v in found.variants}
        rows = []
        for guest, variant_ref in app.tenant.flow_assignments(found.ref):
            variant = variants.get(variant_ref)
            if variant is None:
                continue
            propensity = app.tenant.propensity.get(guest["ref"], 0.05)
            p = min(1.0, propensity * variant.conversion_lift)
            converted = unit_hash("convert", guest["ref"], found.ref) < p
            revenue = (
                variant.average_order_value * (0.5 + unit_hash("revenue", guest["ref"])) if converted else 0.0
            )
            rows.append({"guestRef": guest["ref"], "browserId": (guest.get("browserIds") or [None])[0],
                         "email": guest.get("email"), "variantRef": variant.ref, "variant": variant.name,
                         "converted": converted, "revenue": round(revenue, 2)})  # fmt: skip
        return rows

    @app.get("/sandbox/offers", tags=["Sandbox"], responses=errors(*ADMIN_ERRORS))
    async def offers() -> list[dict[str, Any]]:
        return [{"ref": o["ref"], "name": o.get("name"), "attributes": o.get("attributes", {}),
                 "status": o.get("status")} for o in app.tenant.offers.values()]  # fmt: skip

    @app.post(
        "/sandbox/offers",
        tags=["Sandbox"],
        status_code=201,
        responses=errors(*ADMIN_WRITE_ERRORS),
        dependencies=_WRITE,
        openapi_extra=json_body(OFFER_BODY),
    )
    async def load_offer(request: Request) -> JSONResponse:
        data = await _json_object(request)
        return JSONResponse(_loaded("offer", app.tenant.add_offer, data), status_code=201)

    @app.get("/sandbox/decision-models", tags=["Sandbox"], responses=errors(*ADMIN_ERRORS))
    async def decision_models() -> list[dict[str, Any]]:
        return [_masked_model(m) for m in app.tenant.model_defs.values()]

    @app.post(
        "/sandbox/decision-models",
        tags=["Sandbox"],
        status_code=201,
        responses=errors(*ADMIN_WRITE_ERRORS),
        dependencies=_WRITE,
        openapi_extra=json_body(DECISION_MODEL_BODY),
    )
    async def load_decision_model(request: Request) -> JSONResponse:
        data = await _json_object(request)
        return JSONResponse(_loaded("decision model", app.tenant.add_decision_model, data), status_code=201)

    @app.get("/sandbox/guests", tags=["Sandbox"], responses=errors(*ADMIN_ERRORS, 400))
    async def guests(
        limit: Annotated[int, Query(ge=1, le=10_000)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
        browserId: str = "",
        email: str = "",
    ) -> dict[str, Any]:
        if not 0 < limit <= 10_000 or offset < 0:
            raise BadRequest("limit must be 1–10000 and offset 0 or more")
        total, items = app.tenant.list_guests(limit=limit, offset=offset, browser_id=browserId or None,
                                              email=email or None)  # fmt: skip
        return {"total": total, "items": items}

    @app.post(
        "/sandbox/guests",
        tags=["Sandbox"],
        status_code=201,
        responses=errors(*ADMIN_WRITE_ERRORS, 409, 507),
        dependencies=_WRITE,
        openapi_extra=json_body(GUEST_BODY),
    )
    async def new_guest(request: Request) -> JSONResponse:
        """Add a guest in Sitecore's guest-context shape (sessions, dataExtensions, orders…): ``{ref}`` (#11)."""
        data = await _json_object(request)
        return JSONResponse({"ref": add_guest(app.tenant, data)["ref"]}, status_code=201)

    @app.post(
        "/sandbox/sessions/close",
        tags=["Sandbox"],
        responses=errors(*ADMIN_WRITE_ERRORS, 404),
        dependencies=_WRITE,
        openapi_extra=json_body(SESSION_CLOSE_BODY),
    )
    async def close_guest_session(request: Request) -> dict[str, Any]:
        """Close the guest's open session (none: one is opened and closed); SESSION_CLOSED flows fire (#11)."""
        data = await _json_object(request)
        guest, session, opened = close_session(app.tenant, data)
        fired = triggers.fire("SESSION_CLOSED", str(guest["ref"]), session, causal_ref=str(session["ref"]))
        summary = {k: session.get(k) for k in ("ref", "browserRef", "status", "sessionType", "channel",
                                               "pointOfSale", "startedAt", "endedAt")}  # fmt: skip
        return {"guestRef": guest["ref"], "session": {**summary, "events": len(session.get("events") or [])},
                "openedNow": opened, "fired": fired}  # fmt: skip

    @app.get("/sandbox/deliveries", tags=["Sandbox"], responses=errors(*ADMIN_ERRORS, 400))
    async def deliveries(
        guestRef: str = "",
        friendlyId: str = "",
        limit: Annotated[int, Query(ge=1, le=2_000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        """What triggered flows sent to their destinations, newest first, secrets masked (#11)."""
        return triggers.list(guest_ref=guestRef, friendly_id=friendlyId, limit=limit, offset=offset)

    @app.get("/sandbox/guests/{guest_ref}", tags=["Sandbox"], responses=errors(*ADMIN_ERRORS, 404))
    async def guest(guest_ref: str) -> dict[str, Any]:
        found = app.tenant.guests.get(guest_ref)
        if found is None:
            raise NotFound(f"no guest '{guest_ref}'")
        return found

    @app.get("/sandbox/guests/{guest_ref}/tracking", tags=["Sandbox"], responses=errors(*ADMIN_ERRORS, 404))
    async def tracking(guest_ref: str) -> list[dict[str, Any]]:
        if guest_ref not in app.tenant.guests:
            raise NotFound(f"no guest '{guest_ref}'")
        return app.tenant.tracking_records(guest_ref)

    @app.get("/sandbox/executions/{ref}", tags=["Sandbox"], responses=errors(*ADMIN_ERRORS, 404))
    async def execution(ref: str) -> dict[str, Any]:
        return app.tenant.trace(ref)

    @app.get("/sandbox/knobs", tags=["Sandbox"], responses=errors(*ADMIN_ERRORS))
    async def get_knobs() -> dict[str, Any]:
        return knobs.describe()

    @app.put(
        "/sandbox/knobs",
        tags=["Sandbox"],
        responses=errors(*ADMIN_WRITE_ERRORS),
        dependencies=_WRITE,
        openapi_extra=json_body(KNOBS_BODY),
    )
    async def set_knobs(request: Request) -> dict[str, Any]:
        """Change latency and faults while running: ``{"latencyMs": "50", "faults": "503=0.1"}``."""
        data = await _json_object(request)
        kinds = {"latencyMs": (str, int, float), "faults": (str, dict), "retryAfterS": (str, int, float)}
        for name, types in kinds.items():
            value = data.get(name)
            if name in data and (isinstance(value, bool) or not isinstance(value, types)):
                raise BadRequest(
                    f"{name} must be a {' or '.join(t.__name__ for t in types)}", f"got {value!r}"
                )
        try:
            if "latencyMs" in data:
                knobs.latency = parse_latency(data["latencyMs"])
            if "faults" in data:
                knobs.faults = parse_faults(data["faults"])
            if "retryAfterS" in data:
                knobs.retry_after_s = max(0.0, float(data["retryAfterS"]))
        except (TypeError, ValueError) as exc:
            raise BadRequest(str(exc)) from None
        return knobs.describe()

    @app.post(
        "/sandbox/reset",
        tags=["Sandbox"],
        responses=errors(*ADMIN_WRITE_ERRORS),
        dependencies=_WRITE,
        openapi_extra=json_body(RESET_BODY),
    )
    async def reset(request: Request) -> dict[str, Any]:
        await _json_object(request)  # {}: a JSON object, like every admin write
        app.tenant.reset()
        app.edge.reset()
        mocks.reset()
        triggers.reset()
        return {"status": "OK", "message": "back to the demo data"}

    @app.post(
        "/sandbox/import",
        tags=["Sandbox"],
        responses=errors(*ADMIN_WRITE_ERRORS),
        openapi_extra=IMPORT_BODY,
    )
    async def import_export(request: Request) -> dict[str, Any]:
        """Load a zip of a Sitecore export folder; the report lists every file, loaded or skipped (#11)."""
        media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if media not in ("application/zip", "application/x-zip-compressed", "application/octet-stream"):
            raise UnsupportedMediaType(
                "POST /sandbox/import takes a zip: send Content-Type: application/zip",
                f"got {media or 'no content type'!r}; python -m flowlab import DIR zips and sends a folder",
            )
        data = await request.body()
        report = await asyncio.to_thread(import_zip, app.tenant, data)
        return report.to_json()

    # ---- connections and the mock systems (#11) ------------------------------------------------------

    def connection_item(entry: Mapping[str, Any]) -> dict[str, Any]:
        connection = entry["connection"]
        return {**mask_connection(connection), "usedBy": list(entry["usedBy"]),
                "routing": engine.connections.routes.describe(connection)}  # fmt: skip

    @app.get("/sandbox/connections", tags=["Sandbox"], responses=errors(*ADMIN_ERRORS))
    async def connections() -> list[dict[str, Any]]:
        """Imported, posted and embedded connections (decision models, flows), one per ref; secrets masked."""
        return [connection_item(e) for e in app.tenant.connection_catalog().values()]

    @app.post(
        "/sandbox/connections",
        tags=["Sandbox"],
        status_code=201,
        responses=errors(*ADMIN_WRITE_ERRORS),
        dependencies=_WRITE,
        openapi_extra=json_body(CONNECTION_BODY),
    )
    async def add_connection(request: Request) -> JSONResponse:
        data = await _json_object(request)
        stored = app.tenant.add_library_item("connection", data)
        item = connection_item(app.tenant.find_connection(str(stored["ref"])))
        return JSONResponse(item, status_code=201)

    @app.get("/sandbox/connections/{ref}", tags=["Sandbox"], responses=errors(*ADMIN_ERRORS, 404))
    async def get_connection(ref: str) -> dict[str, Any]:
        return connection_item(app.tenant.find_connection(ref))

    @app.put(
        "/sandbox/connections/{ref}",
        tags=["Sandbox"],
        responses=errors(*ADMIN_WRITE_ERRORS, 404),
        dependencies=_WRITE,
        openapi_extra=json_body(CONNECTION_ROUTE_BODY),
    )
    async def route_connection(ref: str, request: Request) -> dict[str, Any]:
        """Route one connection at run time: ``{"baseUrl": URL}`` (``null``: back to the default route)."""
        data = await _json_object(request)
        entry = app.tenant.find_connection(ref)
        base = data.get("baseUrl")
        if "baseUrl" not in data or not (base is None or isinstance(base, str)):
            raise BadRequest("baseUrl must be a URL or null", 'send {"baseUrl": "http://127.0.0.1:9000"}')
        try:
            engine.connections.routes.set(str(entry["connection"].get("ref") or ref), base or None)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return connection_item(entry)

    @app.post(
        "/sandbox/connections/{ref}/test",
        tags=["Sandbox"],
        responses=errors(*ADMIN_WRITE_ERRORS, 404),
        dependencies=_WRITE,
        openapi_extra=json_body(CONNECTION_TEST_BODY),
    )
    async def test_connection(ref: str, request: Request) -> dict[str, Any]:
        """Call a connection once with these inputs (missing ones: their exampleValue); nothing is recorded."""
        data = await _json_object(request)
        connection = app.tenant.find_connection(ref)["connection"]
        given = data.get("inputs", {})
        if not isinstance(given, dict):
            raise BadRequest("inputs must be an object of input values by key", f"got {given!r:.200}")
        keys = {
            str(i["key"]): i.get("exampleValue")
            for group in ("urlParameters", "inputMappings")
            for i in connection.get(group) or []
            if isinstance(i, Mapping) and i.get("key")
        }
        unknown = sorted(set(given) - set(keys))
        if unknown:
            raise BadRequest(
                f"unknown input(s) {', '.join(unknown)[:200]}",
                f"this connection takes: {', '.join(keys) or 'no inputs'}",
            )
        outcome = await engine.connections.call(connection, {**keys, **given})
        return {
            "request": outcome.request,
            "response": {"status": outcome.status, "headers": outcome.headers, "body": outcome.body},
            "outputs": outcome.outputs(connection) if outcome.error is None else {},
            "latencyMs": outcome.latency_ms,
            "via": outcome.via,
            "error": outcome.error,
        }

    @app.api_route("/sandbox/mocks/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                   include_in_schema=False)  # fmt: skip
    async def mock_systems(path: str, request: Request) -> Response:
        """The built-in mock systems over HTTP (what the engine calls in-process); not in the OpenAPI."""
        try:
            answer = await mocks.handle(request.method, request.url.path, request.url.query,
                                        dict(request.headers), await request.body())  # fmt: skip
        except ConnectionResetError as exc:  # the reset fault (in-process callers see a dropped connection)
            body = error_body(502, str(exc), "injected by the sandbox's --faults knob")
            return JSONResponse(body, status_code=502)
        return Response(answer.content(), status_code=answer.status, headers=answer.headers)

    @app.get("/sandbox/replay", tags=["Sandbox"], responses=errors(*ADMIN_ERRORS))
    async def get_replay() -> dict[str, Any]:
        return app.replay.describe()

    @app.put(
        "/sandbox/replay",
        tags=["Sandbox"],
        responses=errors(*ADMIN_WRITE_ERRORS),
        dependencies=_WRITE,
        openapi_extra=json_body(REPLAY_BODY),
    )
    async def set_replay(request: Request) -> dict[str, Any]:
        """Replay run stores (``{"paths": [...], "latency": false}``); ``{"paths": []}`` stops replaying."""
        data = await _json_object(request)
        paths, latency = data.get("paths"), data.get("latency", False)
        if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths) or len(paths) > 20:
            raise BadRequest("paths must be a list of up to 20 run store paths", f"got {paths!r:.200}")
        if not isinstance(latency, bool):
            raise BadRequest("latency must be true or false", f"got {latency!r:.200}")
        try:
            await asyncio.to_thread(app.replay.load, paths, latency=latency)
        except RunStoreError as exc:
            raise BadRequest(str(exc), "paths must name Flow Lab run stores (SQLite files)") from None
        return app.replay.describe()

    register_edge(app, app.edge, write=_WRITE, json_object=_json_object)
    app.openapi = lambda: app.openapi_schema or _set_schema(app)  # type: ignore[method-assign]
    # outermost last: CORS (real-API routes only) > admin access > body limit > faults > fast path > FastAPI
    app.add_middleware(_CallFlowsFastPath, engine=engine, replay=app.replay)
    app.add_middleware(FaultInjector, knobs=knobs)
    app.add_middleware(BodyLimit)
    app.add_middleware(EdgeGateway, edge=app.edge)  # outside BodyLimit: the Edge's own 64 KB 413
    app.add_middleware(AdminGuard, access=app.access)
    app.add_middleware(
        RealApiCors,
        allow_origins=["*"],
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=[
            "Content-Type",
            "X-Library-Version",
            "x-sc-correlation-id",
            "Authorization",
            "x-api-key",
            "x-gw-ims-org-id",
            "x-request-id",
        ],  # fmt: skip
        expose_headers=["X-Flowlab-Execution", "x-request-id", "x-adobe-edge", "x-rate-limit-remaining"],
    )
    return app


def _masked_model(model: Mapping[str, Any]) -> dict[str, Any]:
    """A decision model as answered: connection nodes with their secrets masked."""
    nodes = model.get("nodes")
    if not isinstance(nodes, list) or not any(isinstance(n, Mapping) and n.get("connection") for n in nodes):
        return dict(model)
    masked = [
        {**n, "connection": mask_connection(n["connection"])}
        if isinstance(n, Mapping) and isinstance(n.get("connection"), Mapping)
        else n
        for n in nodes
    ]
    return {**model, "nodes": masked}


def _allowed_methods(app: FastAPI, scope: MutableMapping[str, Any]) -> list[str]:
    methods: set[str] = set()
    for route in app.router.routes:
        if isinstance(route, APIRoute | Route) and route.path_regex.match(scope["path"]):
            methods |= route.methods or set()
    return sorted(methods)


_JSON_HEADER = (b"content-type", _JSON.encode())
_Headers = Sequence[tuple[bytes, bytes]]


def _raw_response(status: int, body: bytes, headers: _Headers) -> Response:
    """A response with exactly these headers (a replayed answer's repeats and order kept)."""
    response = Response(body, status_code=status)
    response.raw_headers = [*headers, (b"content-length", str(len(body)).encode())]
    return response


def _simulate(value: str | None) -> bool:
    """The ``X-Flowlab-Simulate`` header: absent or 0 runs live flows only, 1 any status; else a 400."""
    if value is None or value.strip() in ("", "0"):
        return False
    if value.strip() == "1":
        return True
    raise BadRequest(
        f"X-Flowlab-Simulate must be 1 (run the flow in any status) or 0, not '{value[:40]}'",
        "send X-Flowlab-Simulate: 1 to simulate a DRAFT or PAUSED flow, or leave the header out",
    )


async def _call_flows(
    engine: Engine, raw: bytes, replay: Replay, *, simulate: str | None = None
) -> tuple[int, bytes, _Headers]:
    """One callFlows request from raw body bytes to (status, body, headers); errors use the one shape.

    The request's guest code runs in a worker process (engine.py, workers.py): the loop only awaits it.
    While replaying, the recorded answer is served instead and the engine never runs (replay.py).
    ``simulate`` (``X-Flowlab-Simulate: 1``, a sandbox-only header) runs a flow in any status.
    """
    try:
        body = parse_json(raw)  # size and depth limits before the engine runs
        if replay.active:
            return await replay.answer(body)
        execution = await engine.execute_async(body, simulate=_simulate(simulate))
    except SandboxError as exc:
        return exc.status, orjson.dumps(exc.body()), (_JSON_HEADER,)
    ref = (b"x-flowlab-execution", execution.ref.encode())
    return execution.status_code, execution.body.encode(), (_JSON_HEADER, ref)


class _CallFlowsFastPath:
    """Serve ``POST /v2/callFlows`` as raw ASGI, skipping FastAPI's routing and Request/Response objects.

    The hot route is what batches hammer; this path measured more throughput than the same handler as a
    FastAPI route (bench/sandbox.py). Everything else goes through FastAPI.
    """

    def __init__(self, app: Any, engine: Engine, replay: Replay) -> None:
        self.app = app
        self.engine = engine
        self.replay = replay

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/v2/callFlows":
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        simulate = next((v.decode("latin-1") for k, v in scope["headers"] if k == _SIMULATE_KEY), None)
        status, body, extra = await _call_flows(self.engine, b"".join(chunks), self.replay, simulate=simulate)
        headers = [*extra, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _set_schema(app: SandboxApp) -> dict[str, Any]:
    app.openapi_schema = truthful_openapi(app, token_required=app.access.token is not None)
    return app.openapi_schema


async def _json_content(request: Request) -> None:
    """Admin writes take JSON only: a web page can send text/plain or a form without a preflight."""
    require_json(request.headers.get("content-type"))


_WRITE = [Depends(_json_content)]


def _loaded(
    kind: str, load: Callable[[dict[str, Any]], dict[str, Any]], data: dict[str, Any]
) -> dict[str, Any]:
    """Load a definition; a shape the loader cannot read is a 400 naming the error, never a 500."""
    try:
        return load(data)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise BadRequest(f"the {kind} definition has a field of the wrong type or shape", repr(exc)) from None


async def _json_object(request: Request) -> dict[str, Any]:
    data = parse_json(await request.body(), "the body")
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data
