"""The sandbox's OpenAPI, made to tell the truth: request bodies, every status a route sends, no phantom 422.

FastAPI declares only what it can see: routes that read ``Request`` get no request body, error statuses
raised as exceptions are missing, and every route with parameters gets a 422 that the sandbox never sends
(its validation errors are 400 with the one error body). So routes declare their bodies here
(``CALL_FLOWS_BODY`` follows reference §2.1 and the engine's checks, no stricter: a body the schema rejects
is one the sandbox rejects too) and their statuses with ``errors()``, and ``truthful_openapi`` drops the
422s and, when an admin token is set, declares the bearer scheme on admin routes with their 401.
A schema fuzzer (schemathesis, ``tests/test_sandbox_openapi.py``) checks the result against the server.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from flowlab.sandbox.access import ADMIN_PREFIX
from flowlab.sandbox.limits import MAX_IDENTITY_CHARS

__all__ = [
    "ADMIN_ERRORS",
    "ADMIN_WRITE_ERRORS",
    "CALL_FLOWS_BODY",
    "CONNECTION_BODY",
    "CONNECTION_ROUTE_BODY",
    "CONNECTION_TEST_BODY",
    "DECISION_MODEL_BODY",
    "EVENT_BODY",
    "FLOW_BODY",
    "GUEST_BODY",
    "IMPORT_BODY",
    "KNOBS_BODY",
    "OFFER_BODY",
    "REAL_API_FAULTS",
    "REPLAY_BODY",
    "RESET_BODY",
    "SESSION_CLOSE_BODY",
    "ErrorBody",
    "errors",
    "json_body",
    "truthful_openapi",
]


class ErrorBody(BaseModel):
    """The one error body (reference §3.5): ``status`` and ``code`` are strings."""

    status: str = Field(examples=["400"])
    code: str = Field(examples=["400"])
    message: str
    developerMessage: str  # the wire names
    moreInfoUrl: str


_WHY = {
    400: "The request is malformed: the message says which field to fix",
    401: "Unknown client key, or (admin routes) a missing or wrong admin token",
    403: "A page of another origin, or an admin write on a sandbox bound off loopback without a token",
    404: "No such flow, guest, execution or browser; while replaying, no recorded answer for the guest",
    409: "Another guest already holds an identity (or the ref) of the one posted",
    413: "The request body is over the 1 MiB limit",
    415: "Admin writes take Content-Type: application/json (POST /sandbox/import: application/zip)",
    421: "The Host header does not name this sandbox (DNS rebinding is refused)",
    429: "Injected by the --faults knob (with Retry-After)",
    500: "The flow failed (a condition, programmable or template), or injected by the --faults knob",
    503: "Injected by the --faults knob (with Retry-After)",
    507: "The sandbox holds its limit of guests: a new identity is refused until a reset (known ones run)",
}
#: statuses the engine sends on these routes beyond the ones their route declares
_ENGINE_ERRORS = {"/v2/callFlows": (507,)}

#: every admin route can answer these (access.py, limits.py)
ADMIN_ERRORS = (403, 413, 421)
ADMIN_WRITE_ERRORS = (*ADMIN_ERRORS, 400, 415)
#: the real-API routes, under the --faults knob
REAL_API_FAULTS = (413, 429, 500, 503)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status with the error body and why it is sent."""
    return {status: {"model": ErrorBody, "description": _WHY[status]} for status in sorted(set(statuses))}


_TEXT = {"type": "string", "pattern": r"\S"}
_OPTIONAL_TEXT = {"anyOf": [_TEXT, {"type": "null"}]}
_STRING_OR_NULL = {"type": ["string", "null"]}
_IDENTITY_TEXT = {**_TEXT, "maxLength": MAX_IDENTITY_CHARS}
_IDENTIFIERS = {
    "type": "object",
    "required": ["provider", "id"],
    "properties": {"provider": _IDENTITY_TEXT, "id": _IDENTITY_TEXT},
    "description": "One identifier object (an array is for IDENTITY events, not callFlows)",
}


def _given(name: str) -> dict[str, Any]:
    return {"required": [name], "properties": {name: {"type": "string", "minLength": 1}}}


#: reference §2.1: exactly one of browserId, email, identifiers; unknown fields are ignored (the trace
#: notes them). The legacy ``{"context": {...}}`` wrapper is accepted too but not described here.
CALL_FLOWS_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["clientKey", "friendlyId"],
    "properties": {
        "clientKey": {"type": "string", "description": "The tenant's client key (GET /sandbox/info)"},
        "friendlyId": {**_TEXT, "description": "The flow's friendlyId; a trailing * matches by prefix"},
        "channel": {**_STRING_OR_NULL, "description": "WEB (default), MOBILE_APP, …"},
        "language": {**_OPTIONAL_TEXT, "description": "ISO 639, e.g. EN; not empty when given"},
        "currencyCode": {**_STRING_OR_NULL, "description": "ISO 4217, e.g. EUR"},
        "currency": {"description": "Alias of currencyCode (the Cloud SDK's input name); read without it"},
        "pointOfSale": {**_STRING_OR_NULL, "description": "A configured point of sale, e.g. lumen/de"},
        "pos": {"description": "Legacy alias of pointOfSale; read without it"},
        "browserId": {
            "anyOf": [_IDENTITY_TEXT, {"type": "null"}],
            "description": "From GET /v1.2/browser/create.json",
        },
        "email": {"anyOf": [_IDENTITY_TEXT, {"type": "null"}]},
        "identifiers": {"anyOf": [_IDENTIFIERS, {"type": "null"}]},
        "params": {"type": ["object", "null"], "description": "Custom data: request.params in flows"},
        "guestRef": {"description": "Cloud SDK only; accepted and ignored"},
        "variants": {"description": "Cloud SDK page variant ids; accepted and ignored"},
    },
    "allOf": [  # an alias is read (and must be a string or null) only when its main field is empty
        {"if": _given("pointOfSale"), "else": {"properties": {"pos": _STRING_OR_NULL}}},
        {"if": _given("currencyCode"), "else": {"properties": {"currency": _STRING_OR_NULL}}},
    ],
    "oneOf": [
        {"required": ["browserId"], "properties": {"browserId": {"type": "string"}}},
        {"required": ["email"], "properties": {"email": {"type": "string"}}},
        {"required": ["identifiers"], "properties": {"identifiers": {"type": "object"}}},
    ],
}

FLOW_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["friendlyId", "variants"],
    "description": "A flow definition in the exported shape of reference §4.1 (same friendlyId: replaced)",
    "properties": {
        "friendlyId": {"type": "string", "pattern": "^[a-z0-9_]+$"},
        "type": {"enum": ["INTERACTIVE_API_FLOW", "INTERACTIVE_WEB_FLOW", "TRIGGERED_V3"]},
        "variants": {"type": "array", "minItems": 1, "items": {"type": "object"}},
        "traffic": {"type": "object"},
    },
}

OFFER_BODY: dict[str, Any] = {
    "type": "object",
    "description": "An offer: {ref?, name?, status?, attributes: {...}}",
    "properties": {"attributes": {"type": "object"}},
}

DECISION_MODEL_BODY: dict[str, Any] = {
    "type": "object",
    "description": "A decision model (DMN-style nodes: decision tables and programmables, reference §5)",
}

KNOBS_BODY: dict[str, Any] = {
    "type": "object",
    "description": "Any of latencyMs (N, LOW-HIGH or real), faults (503=0.1,…), retryAfterS (seconds)",
    "properties": {
        "latencyMs": {"type": ["string", "number"]},
        "faults": {"type": ["string", "object"]},
        "retryAfterS": {"type": ["number", "string"]},
    },
}

#: POST /sandbox/import: a zip of a Sitecore export folder (importer.py caps files and inflated size)
IMPORT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A zip of an export folder (folder-per-asset or flat layout), at most 1 MiB; "
        "application/octet-stream is taken too",
        "content": {
            "application/zip": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}

#: POST /sandbox/connections: Sitecore's connection JSON, with Flow Lab's auth keys (connections.py, #11)
CONNECTION_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["name", "request"],
    "description": "Sitecore's connection JSON: {ref?, name, request: {requestType, connectionUrl, requestBody?}, "
    "auth: {authType: NONE | BASIC {username, password} | OAUTH2 {clientId, clientSecret, accessTokenUrl, scope, "
    "credentialsIn: HEADER | BODY}}, urlParameters, inputMappings, outputMappings, customHeaders, "
    "connectionTimeout, socketTimeout (ms), systemType}",
    "properties": {
        "name": {"type": "string", "pattern": r"\S"},
        "request": {
            "type": "object",
            "required": ["connectionUrl"],
            "properties": {
                "requestType": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE"]},
                "connectionUrl": {"type": "string", "pattern": "^https?://[^/?#]+"},
                "requestBody": {"type": ["string", "null"]},
            },
        },
    },
}

CONNECTION_ROUTE_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["baseUrl"],
    "description": "Route the connection to this base URL (its path and query are kept); null: the default route",
    "properties": {"baseUrl": {"type": ["string", "null"]}},
}

CONNECTION_TEST_BODY: dict[str, Any] = {
    "type": "object",
    "description": "Input values by key (urlParameters and inputMappings); a missing one takes its exampleValue",
    "properties": {"inputs": {"type": "object"}},
}

RESET_BODY: dict[str, Any] = {"type": "object", "description": "Nothing to say: send {}"}

#: POST /v1.2/events: a Stream API event as the Engage SDK sends it (reference §6.2; events.py, #11)
EVENT_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["type", "browser_id"],
    "description": "An event: VIEW, IDENTITY (with identifiers or email), FORCE_CLOSE or a custom type (which "
    "fires the live triggered flows that list it); other fields and the flattened ext go to arbitraryData",
    "properties": {
        "type": {**_TEXT, "maxLength": 100},
        "browser_id": {**_IDENTITY_TEXT, "description": "From GET /v1.2/browser/create.json"},
        "client_key": {"type": "string", "description": "The tenant's client key (or ?client_key=)"},
        "channel": _STRING_OR_NULL,
        "pos": _STRING_OR_NULL,
        "language": _STRING_OR_NULL,
        "currency": _STRING_OR_NULL,
        "page": _STRING_OR_NULL,
        "ext": {"type": ["object", "null"], "description": "Custom fields, flattened into arbitraryData.ext"},
        "email": {"anyOf": [_IDENTITY_TEXT, {"type": "null"}]},
        "identifiers": {"anyOf": [{"type": "array", "items": _IDENTIFIERS}, {"type": "null"}]},
    },
}

#: POST /sandbox/guests: a guest context (reference "sitecore-exports.md", Guests; events.py, #11)
GUEST_BODY: dict[str, Any] = {
    "type": "object",
    "description": "Sitecore's guest context: {ref?, email?, firstName?, lastName?, identifiers: [{provider, id}], "
    "dataExtensions: [{name, key, values}], sessions: [{ref?, browserRef?, status, sessionType, channel, "
    "pointOfSale, startedAt, endedAt, events}], orders: []}; an identity another guest holds is a 409",
    "properties": {
        "email": {"anyOf": [_IDENTITY_TEXT, {"type": "null"}]},
        "identifiers": {"type": "array", "items": _IDENTIFIERS},
        "dataExtensions": {"type": "array", "items": {"type": "object"}},
        "sessions": {"type": "array", "items": {"type": "object"}},
        "orders": {"type": "array", "items": {"type": "object"}},
    },
}

#: POST /sandbox/sessions/close (events.py, triggers.py, #11)
SESSION_CLOSE_BODY: dict[str, Any] = {
    "type": "object",
    "description": "The guest, by exactly one of browserId, email or guestRef; its open session closes (none "
    "open: one is opened and closed) and the live SESSION_CLOSED triggered flows fire",
    "properties": {
        "browserId": _IDENTITY_TEXT,
        "email": _IDENTITY_TEXT,
        "guestRef": _IDENTITY_TEXT,
        "pointOfSale": {"type": "string"},
    },
    "oneOf": [
        {"required": ["browserId"], "not": {"anyOf": [{"required": ["email"]}, {"required": ["guestRef"]}]}},
        {"required": ["email"], "not": {"anyOf": [{"required": ["browserId"]}, {"required": ["guestRef"]}]}},
        {"required": ["guestRef"], "not": {"anyOf": [{"required": ["browserId"]}, {"required": ["email"]}]}},
    ],
}

REPLAY_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["paths"],
    "description": "Run stores to replay (SQLite files written by a batch); [] stops replaying",
    "properties": {
        "paths": {"type": "array", "maxItems": 20, "items": {"type": "string", "minLength": 1}},
        "latency": {"type": "boolean", "description": "Wait each answer's recorded latency"},
    },
}


def json_body(schema: dict[str, Any], *, required: bool = True, example: Any = None) -> dict[str, Any]:
    """``openapi_extra=`` declaring a JSON request body."""
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"requestBody": {"required": required, "content": {"application/json": media}}}


def truthful_openapi(app: FastAPI, *, token_required: bool) -> dict[str, Any]:
    """The app's OpenAPI without FastAPI's phantom 422s, with the admin token scheme when one is set."""
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes, description=app.description)
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if not path.startswith("/ee/"):  # the Edge's 422s are real (EXEG-0004-422, EXEG-0104-422)
                responses.pop("422", None)
            for status in _ENGINE_ERRORS.get(path, ()):
                responses[str(status)] = {
                    "description": _WHY[status],
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
                }
            if token_required and (path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")):
                operation["security"] = [{"adminToken": []}]
                responses["401"] = {
                    "description": _WHY[401],
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
                }
    components = schema.setdefault("components", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.get("schemas", {}).pop(name, None)
    if token_required:
        components["securitySchemes"] = {
            "adminToken": {"type": "http", "scheme": "bearer", "description": "--admin-token"}
        }
    return schema
