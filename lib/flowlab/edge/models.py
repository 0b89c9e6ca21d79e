"""The request model for AEP Edge Network ``POST /ee/v2/interact``: one event, validated before sending.

The Edge answers most mistakes with a terse problem+json (``EXEG-0306-400`` "No primary identity…",
``EXEG-0112-413`` for a body over 64 KB; adobe-edge-personalization.md §2.3, §4.2), after a network round
trip and with no hint about which field was wrong. ``InteractRequest`` checks the same things first, and each
message names the wire field (``event.xdm.identityMap``) and says what to change. ``to_body()`` gives the
exact v2 ``SingleEventRequest`` body of reference §2.3; ``to_v1_body()`` the batch-shaped v1 one.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from flowlab.errors import FieldProblem, RequestValidationError

__all__ = [
    "AUTHENTICATED_STATES",
    "MAX_BODY_BYTES",
    "STANDARD_NAMESPACES",
    "IdentityItem",
    "InteractRequest",
]

#: The request body limit: 64 KB, i.e. 8 fragments of 8 KB (reference §2.3, §7; DOC D5).
MAX_BODY_BYTES = 64 * 1024
#: Namespaces the issue names; any other code is a custom namespace and is sent as typed (reference §2.3,
#: §8.2: codes are matched exactly, case-sensitively).
STANDARD_NAMESPACES = ("ECID", "Email", "CRMID", "Phone")
AuthenticatedState = Literal["ambiguous", "authenticated", "loggedOut"]
#: ``authenticatedState`` values (reference §8.2; default ``ambiguous``).
AUTHENTICATED_STATES: tuple[str, ...] = AuthenticatedState.__args__  # type: ignore[attr-defined]

_NAMESPACE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
#: XDM keys the model sets itself; ``xdm=`` extras may not override them.
_OWN_XDM = ("identityMap", "eventType", "timestamp", "_id")


class IdentityItem(BaseModel):
    """One identity in ``identityMap``: ``{id, authenticatedState?, primary?}`` (reference §2.3)."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True)

    id: str
    authenticated_state: AuthenticatedState | None = Field(default=None, alias="authenticatedState")
    primary: bool = False

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("id is empty: give the identity's value, e.g. an email address or a CRM id")
        return value

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id}
        if self.authenticated_state is not None:
            body["authenticatedState"] = self.authenticated_state
        if self.primary:
            body["primary"] = True
        return body


class InteractRequest(BaseModel):
    """One interact event. Build it with ``InteractRequest.build(identity=("Email", "jane@example.com"))``.

    ``identity`` (namespace, id) is shorthand for an ``identityMap`` with that one primary identity; pass
    ``identity_map`` for several. ``timestamp`` defaults to now (UTC); pass ``timestamp=None`` to leave it
    out, as Adobe's minimal profile-lookup call does (reference §2.3, DOC E2).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True)

    identity_map: dict[str, list[IdentityItem]] = Field(alias="identityMap")
    event_type: str | None = Field(default=None, alias="eventType")
    timestamp: datetime | None = Field(default_factory=lambda: datetime.now(UTC))
    event_id: str | None = Field(default=None, alias="_id")
    page_url: str | None = None
    page_name: str | None = None
    xdm: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)
    query: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None

    @field_validator("identity_map")
    @classmethod
    def _identity_map(cls, value: dict[str, list[IdentityItem]]) -> dict[str, list[IdentityItem]]:
        if not value:
            raise ValueError(
                "no identity: add one, e.g. identity=('Email', 'jane@example.com'), and mark it primary"
            )
        for namespace, items in value.items():
            if not _NAMESPACE.match(namespace):
                raise ValueError(
                    f"'{namespace}' is not a namespace code: use letters, digits and _ (e.g. "
                    f"{', '.join(STANDARD_NAMESPACES)} or your custom code as Identity Service spells it)"
                )
            if not items:
                raise ValueError(
                    f"{namespace} has no identities: give at least one {{id}} or drop {namespace}"
                )
            if namespace == "Email":
                for item in items:
                    if not _EMAIL.match(item.id):
                        raise ValueError(f"Email '{item.id}' is not an email address")
        return value

    @field_validator("event_type", "page_name", "event_id")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return (value.strip() or None) if value is not None else None

    @field_validator("timestamp")
    @classmethod
    def _timestamp(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError(
                f"'{value.isoformat()}' has no time zone: add one, e.g. {value.isoformat()}Z for UTC"
            )
        return value

    @field_validator("page_url")
    @classmethod
    def _page_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"'{value}' is not a page URL: start it with https://, e.g. https://{value}")
        return value

    @field_validator("xdm")
    @classmethod
    def _xdm(cls, value: dict[str, Any]) -> dict[str, Any]:
        own = [k for k in _OWN_XDM if k in value]
        if own:
            raise ValueError(
                f"{', '.join(own)} cannot be set through xdm: use the identity/identity_map, event_type, "
                "timestamp and event_id arguments"
            )
        return value

    @model_validator(mode="after")
    def _one_primary(self) -> InteractRequest:
        primaries = [
            f"{ns}:{item.id}" for ns, items in self.identity_map.items() for item in items if item.primary
        ]
        if not primaries:
            if sum(len(items) for items in self.identity_map.values()) == 1:
                raise ValueError(
                    "no primary identity (the Edge answers EXEG-0306-400): set primary=True on it"
                )
            raise ValueError(
                "no primary identity (the Edge answers EXEG-0306-400): mark exactly one with primary=True"
            )
        if len(primaries) > 1:
            raise ValueError(
                f"{len(primaries)} primary identities ({', '.join(primaries)}): mark exactly one as primary "
                "(edge segmentation honours only one, reference §2.3)"
            )
        return self

    @model_validator(mode="after")
    def _json_and_size(self) -> InteractRequest:
        for name, value in (
            ("xdm", self.xdm),
            ("data", self.data),
            ("query", self.query),
            ("meta", self.meta),
        ):
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{name} must be JSON (text, numbers, lists, objects): {exc}") from None
        size = len(self.body_bytes())
        if size > MAX_BODY_BYTES:
            parts = {
                "event.xdm": len(_dumps(self._xdm_body())),
                "event.data": len(_dumps(self.data)),
                "query": len(_dumps(self.query)) if self.query else 0,
                "meta": len(_dumps(self.meta)) if self.meta else 0,
            }
            largest = max(parts, key=lambda k: parts[k])
            raise ValueError(
                f"the body is {size:,} bytes, over the Edge's 64 KB limit ({MAX_BODY_BYTES:,} bytes; it "
                f"would answer EXEG-0112-413): {largest} alone is {parts[largest]:,} bytes, trim it"
            )
        return self

    @classmethod
    def build(
        cls,
        *,
        identity: tuple[str, str] | str | None = None,
        authenticated_state: str | None = None,
        **fields: Any,
    ) -> InteractRequest:
        """Validate ``fields``; raise ``RequestValidationError`` listing every problem with its wire field.

        ``identity`` is ``(namespace, id)`` or ``"NAMESPACE:id"``, sent as the one primary identity.
        """
        if identity is not None:
            if "identity_map" in fields or "identityMap" in fields:
                raise RequestValidationError(
                    [FieldProblem("event.xdm.identityMap", "give identity or identity_map, not both")]
                )
            if isinstance(identity, str):
                namespace, sep, value = identity.partition(":")
                if not sep:
                    problem = (
                        f"'{identity}' has no namespace: write NAMESPACE:ID, e.g. Email:jane@example.com"
                    )
                    raise RequestValidationError([FieldProblem("event.xdm.identityMap", problem)])
            else:
                namespace, value = identity
            item: dict[str, Any] = {"id": value, "primary": True}
            if authenticated_state is not None:
                item["authenticatedState"] = authenticated_state
            fields["identity_map"] = {namespace.strip(): [item]}
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            raise RequestValidationError(_problems(exc)) from None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> InteractRequest:
        """Read a v2 body (``{event: {xdm, data?}, query?, meta?}``), e.g. one pasted from another tool."""
        event = body.get("event") if isinstance(body, Mapping) else None
        if not isinstance(event, Mapping) or not isinstance(event.get("xdm"), Mapping):
            raise RequestValidationError(
                [FieldProblem("event.xdm", "the body has no event.xdm object: {event: {xdm: {identityMap}}}")]
            )
        unknown = sorted(set(body) - {"event", "query", "meta"})
        if unknown:
            problem = f"unknown field(s) {', '.join(unknown)}; a v2 body has event, query and meta"
            raise RequestValidationError([FieldProblem("", problem)])
        xdm = dict(event["xdm"])
        fields: dict[str, Any] = {
            "identity_map": xdm.pop("identityMap", {}),
            "event_type": xdm.pop("eventType", None),
            "timestamp": xdm.pop("timestamp", None),
            "event_id": xdm.pop("_id", None),
            "xdm": xdm,
            "data": event.get("data") or {},
            "query": body.get("query"),
            "meta": body.get("meta"),
        }
        web = xdm.get("web")
        details = web.get("webPageDetails") if isinstance(web, Mapping) else None
        if (
            isinstance(web, Mapping)
            and isinstance(details, Mapping)
            and set(details) <= {"URL", "name"}
            and set(web) == {"webPageDetails"}
        ):
            xdm.pop("web")
            fields["page_url"], fields["page_name"] = details.get("URL"), details.get("name")
        return cls.build(**fields)

    @property
    def primary_identity(self) -> tuple[str, str]:
        """``(namespace, id)`` of the one primary identity."""
        for namespace, items in self.identity_map.items():
            for item in items:
                if item.primary:
                    return namespace, item.id
        raise AssertionError("validated requests have one primary identity")  # pragma: no cover

    def with_new_id(self) -> InteractRequest:
        """A copy with a fresh ``_id`` (events are deduplicated by it)."""
        return self.model_copy(update={"event_id": str(uuid.uuid4())})

    def _xdm_body(self) -> dict[str, Any]:
        xdm: dict[str, Any] = {}
        if self.event_id is not None:
            xdm["_id"] = self.event_id
        if self.event_type is not None:
            xdm["eventType"] = self.event_type
        if self.timestamp is not None:
            xdm["timestamp"] = _iso(self.timestamp)
        xdm["identityMap"] = {ns: [i.to_body() for i in items] for ns, items in self.identity_map.items()}
        extra = dict(self.xdm)
        if self.page_url is not None or self.page_name is not None:
            web = dict(extra.pop("web", None) or {})
            details = dict(web.get("webPageDetails") or {})
            if self.page_url is not None:
                details["URL"] = self.page_url
            if self.page_name is not None:
                details["name"] = self.page_name
            web["webPageDetails"] = details
            xdm["web"] = web
        xdm.update(extra)
        return xdm

    def _event(self) -> dict[str, Any]:
        event: dict[str, Any] = {"xdm": self._xdm_body()}
        if self.data:
            event["data"] = self.data
        return event

    def _envelope(self, events: dict[str, Any]) -> dict[str, Any]:
        body = events
        if self.query is not None:
            body["query"] = self.query
        if self.meta is not None:
            body["meta"] = self.meta
        return body

    def to_body(self) -> dict[str, Any]:
        """The exact v2 ``SingleEventRequest``: ``{event: {xdm, data?}, query?, meta?}`` (reference §2.3)."""
        return self._envelope({"event": self._event()})

    def to_v1_body(self) -> dict[str, Any]:
        """The v1 (Web SDK) body: ``{events: [event], query?, meta?}`` (reference §2.1)."""
        return self._envelope({"events": [self._event()]})

    def body_bytes(self, version: int = 2) -> bytes:
        """The serialised body as sent (compact UTF-8 JSON): what the 64 KB limit counts."""
        return _dumps(self.to_body() if version == 2 else self.to_v1_body())


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _iso(when: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and ``Z``, as Adobe's examples write it (reference §2.3)."""
    text = when.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.removesuffix("+00:00") + "Z"


#: Python field name -> wire path, for messages.
_WIRE_PATHS = {
    "identity_map": "event.xdm.identityMap",
    "identityMap": "event.xdm.identityMap",
    "event_type": "event.xdm.eventType",
    "eventType": "event.xdm.eventType",
    "timestamp": "event.xdm.timestamp",
    "event_id": "event.xdm._id",
    "_id": "event.xdm._id",
    "page_url": "event.xdm.web.webPageDetails.URL",
    "page_name": "event.xdm.web.webPageDetails.name",
    "xdm": "event.xdm",
    "data": "event.data",
    "query": "query",
    "meta": "meta",
}


def _problems(exc: ValidationError) -> list[FieldProblem]:
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        head = _WIRE_PATHS.get(loc[0], loc[0]) if loc else ""
        if loc[:1] in (["identity_map"], ["identityMap"]) and len(loc) >= 3:
            # identity_map.<ns>.<index>.<field>: name the wire field, e.g. event.xdm.identityMap.Email[0].id
            tail = ".".join(loc[3:])
            alias = {"authenticated_state": "authenticatedState"}.get(tail, tail)
            head = f"event.xdm.identityMap.{loc[1]}[{loc[2]}]" + (f".{alias}" if alias else "")
        message = str(err["msg"]).removeprefix("Value error, ")
        kind = err["type"]
        if kind == "missing":
            message = f"{head} is required" + (
                ": give identity=('Email', 'jane@example.com') or an identity_map"
                if "identityMap" in head
                else ""
            )
        elif kind == "extra_forbidden":
            message = (
                f"unknown field '{loc[-1]}'; use identity, identity_map, event_type, timestamp, event_id, "
                "page_url, page_name, xdm, data, query or meta"
            )
            head = ""
        elif kind == "literal_error" and head.endswith("authenticatedState"):
            message = f"authenticatedState must be one of {', '.join(AUTHENTICATED_STATES)}"
        elif kind == "string_type":
            message = f"{head} must be text"
        elif kind in ("dict_type", "list_type"):
            message = f"{head} must be {'an object' if kind == 'dict_type' else 'a list'}" + (
                " such as {'Email': [{'id': 'jane@example.com', 'primary': True}]}"
                if "identityMap" in head
                else ""
            )
        elif kind.startswith("datetime") and head.endswith("timestamp"):
            message = "timestamp must be an ISO 8601 date-time such as 2026-07-30T14:09:20.859Z"
        elif not loc:
            head = "event.xdm.identityMap" if "primary" in message else ("body" if "64 KB" in message else "")
        problems.append(FieldProblem(head, message))
    return problems
