"""Guests, events and sessions the way a CDP keeps them, so triggered experiences have something to fire on (#11).

Three ways in, all changing the tenant's guests (``store.Tenant``) in place, on the server's event loop:

* :func:`add_guest`: a guest in Sitecore's guest-context shape (reference "sitecore-exports.md", "Guests";
  API reference §6.3): ``ref?, email, firstName, lastName, identifiers, dataExtensions[{name, key, values}],
  sessions[{ref, browserRef, status, sessionType, channel, pointOfSale, startedAt, endedAt, events[]}],
  orders[]``. Its identities (email, identifiers, the sessions' ``browserRef`` and ``browserIds``) find it
  from callFlows and events; one another guest already holds is a 409.
* :func:`record_event`: a Stream API event (API reference §6.2) as the Engage SDK sends it: ``{type,
  browser_id, client_key, channel, pos, language, currency, page, ext?, email?, identifiers?, …}``. It lands
  in the browser's open session (opened on the first event; one idle past its point of sale's timeout is
  closed first). ``ext`` is flattened (``ext.test.a`` → ``test_a``) and kept with every other field the
  event carries beyond the standard ones in the event's ``arbitraryData`` (where the demo's scripts read
  ``websiteBaseUrl``). An IDENTITY event links the browser to the guest its ``identifiers`` (then its
  ``email``) name, moving the anonymous guest's sessions there, or identifies the anonymous guest when
  nobody holds them: later callFlows by that browserId see the identified guest. ``FORCE_CLOSE`` closes the
  session now (as on non-production tenants).
* :func:`close_session`: ``{"browserId" | "email" | "guestRef": …}`` closes the guest's open session; with
  none open, one is opened and closed, so a person can always try a SESSION_CLOSED flow.

Each returns what happened, including the sessions it closed; ``triggers.py`` fires the flows. Bounded as
Personalize bounds a guest (DOC D16): the newest 40 sessions, 100 events per session, 20 orders.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from flowlab.sandbox.edge.clock import iso_ms
from flowlab.sandbox.errors import BadRequest, Conflict, NotFound, Unauthorized
from flowlab.sandbox.limits import MAX_GUESTS, MAX_IDENTITY_CHARS, GuestLimit, shortened
from flowlab.sandbox.personalize.store import Tenant, new_ref

__all__ = [
    "EVENT_FIELDS",
    "MAX_EVENTS_PER_SESSION",
    "MAX_ORDERS",
    "MAX_SESSIONS",
    "RESERVED_TRIGGERS",
    "EventOutcome",
    "add_guest",
    "close_session",
    "flatten",
    "guest_sessions",
    "iso_time",
    "record_event",
]

MAX_SESSIONS: Final = 40
MAX_EVENTS_PER_SESSION: Final = 100
MAX_ORDERS: Final = 20
#: the standard fields of a Stream API event; anything else it carries goes into ``arbitraryData``
EVENT_FIELDS: Final = frozenset(
    {"type", "browser_id", "client_key", "channel", "pos", "language", "currency", "page", "ext", "email",
     "identifiers", "firstname", "lastname", "title", "gender", "dob", "phone", "mobile"}
)  # fmt: skip
#: trigger values that name what the CDP itself does, never an event type someone posts
RESERVED_TRIGGERS: Final = frozenset(
    {"SESSION_CLOSED", "GUEST_CREATED", "GUEST_MODIFIED", "ORDER_CREATED", "ORDER_UPDATED"}
)
_GUEST_HELP: Final = (
    "a guest is Sitecore's guest context: {ref?, email?, firstName?, lastName?, identifiers: [{provider, id}], "
    "dataExtensions: [{name, key, values: {}}], sessions: [{ref?, browserRef?, status: OPEN|CLOSED, "
    "sessionType, channel, pointOfSale, startedAt, endedAt, events: []}], orders: []} (README, 'Triggered "
    "experiences')"
)


@dataclass
class EventOutcome:
    """What one event did: its record, the guest it landed on, and the sessions it closed."""

    event: dict[str, Any]
    guest: dict[str, Any]
    session: dict[str, Any]
    closed: list[dict[str, Any]] = field(default_factory=list)
    identified: bool = False


def iso_time(epoch_ms: Any = None) -> str:
    """Epoch milliseconds (default: now) as ISO 8601 in UTC, the way guest contexts print times."""
    return iso_ms(time.time() * 1000 if epoch_ms is None else float(epoch_ms))


def _epoch_ms(text: Any) -> float | None:
    """An ISO 8601 time (or epoch ms) as epoch milliseconds; None when it is neither."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000
    except ValueError:
        return None


def flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested ``ext`` objects flattened with ``_`` (``{"test": {"a": 1}}`` → ``{"test_a": 1}``), §6.2."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}_{key}" if prefix else str(key)
        if isinstance(item, Mapping):
            out.update(flatten(item, name))
        else:
            out[name] = item
    return out


# ---- guests ---------------------------------------------------------------------------------------------


def _identity(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{what} must be a non-empty string", f"got {shortened(repr(value))}")
    if len(value) > MAX_IDENTITY_CHARS:
        raise BadRequest(
            f"{what} is longer than the sandbox's limit of {MAX_IDENTITY_CHARS} characters",
            f"got {len(value):,} characters",
        )
    return value


def _list_of_objects(data: Mapping[str, Any], key: str, limit: int) -> list[dict[str, Any]]:
    items = data.get(key, [])
    if items is None:
        return []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise BadRequest(f"guest field '{key}' must be a list of objects", _GUEST_HELP)
    if len(items) > limit:
        raise BadRequest(
            f"guest field '{key}' has {len(items)} items, more than Personalize keeps ({limit})",
            "send the newest ones",
        )
    return [dict(i) for i in items]


def _identifiers(value: Any, what: str) -> list[dict[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(i, dict) for i in value):
        raise BadRequest(
            f"{what} must be a list of {{provider, id}} objects", f"got {shortened(repr(value))}"
        )
    return [
        {"provider": _identity(i.get("provider"), f"{what}[{n}].provider"),
         "id": _identity(i.get("id"), f"{what}[{n}].id")}
        for n, i in enumerate(value)
    ]  # fmt: skip


def _session(data: dict[str, Any], n: int, guest_ref: str, client_key: str) -> dict[str, Any]:
    where = f"sessions[{n}]"
    status = str(data.get("status") or "CLOSED").upper()
    if status not in ("OPEN", "CLOSED"):
        raise BadRequest(
            f"{where}.status must be OPEN or CLOSED", f"got {shortened(repr(data.get('status')))}"
        )
    for key in ("ref", "browserRef", "sessionType", "channel", "pointOfSale"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise BadRequest(f"{where}.{key} must be a string", _GUEST_HELP)
    for key in ("startedAt", "endedAt"):
        if data.get(key) is not None and _epoch_ms(data[key]) is None:
            raise BadRequest(
                f"{where}.{key} must be an ISO 8601 time such as 2024-05-01T10:00:00.000Z",
                f"got {shortened(repr(data[key]))}",
            )
    events = data.get("events", [])
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise BadRequest(f"{where}.events must be a list of event objects", _GUEST_HELP)
    if len(events) > MAX_EVENTS_PER_SESSION:
        raise BadRequest(
            f"{where} has {len(events)} events, more than Personalize keeps ({MAX_EVENTS_PER_SESSION})"
        )
    if data.get("browserRef") is not None:
        _identity(data["browserRef"], f"{where}.browserRef")
    channel = str(data.get("channel") or "WEB")
    session = {
        **data,
        "ref": str(data.get("ref") or new_ref()),
        "clientKey": client_key,
        "guestRef": guest_ref,
        "status": status,
        "sessionType": str(data.get("sessionType") or channel),
        "channel": channel,
        "pointOfSale": str(data.get("pointOfSale") or ""),
        "startedAt": data.get("startedAt") or iso_time(),
        "endedAt": data.get("endedAt") if status == "CLOSED" else None,
        "events": [dict(e) for e in events],
    }
    if status == "CLOSED" and not session["endedAt"]:
        session["endedAt"] = session["startedAt"]
    return session


def add_guest(tenant: Tenant, data: Any) -> dict[str, Any]:
    """Validate a guest context and add it to the tenant; its identities then find it. Returns the guest."""
    if not isinstance(data, dict):
        raise BadRequest("the guest must be a JSON object", _GUEST_HELP)
    ref = data.get("ref")
    if ref is not None:
        ref = _identity(ref, "ref")
        if "/" in ref:
            raise BadRequest("ref must not contain '/'", "a guest ref is a UUID")
        if ref in tenant.guests:
            raise Conflict(f"a guest with ref '{shortened(ref, 64)}' exists", "leave ref out for a new one")
    if len(tenant.guests) >= MAX_GUESTS:
        raise GuestLimit(f"the sandbox holds {len(tenant.guests):,} guests, its limit", "POST /sandbox/reset")
    for key in ("firstName", "lastName", "gender", "language", "guestType", "country", "city"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise BadRequest(f"guest field '{key}' must be a string", _GUEST_HELP)
    email = _identity(data["email"], "email").strip().lower() if data.get("email") is not None else None
    if email is not None and "@" not in email:
        raise BadRequest("email must be an email address", f"got {shortened(repr(data['email']))}")
    identifiers = _identifiers(data.get("identifiers"), "identifiers")
    extensions = _list_of_objects(data, "dataExtensions", 100)
    for n, ext in enumerate(extensions):
        if not isinstance(ext.get("name"), str) or not ext["name"].strip():
            raise BadRequest(f"dataExtensions[{n}].name must be a non-empty string", _GUEST_HELP)
        if not isinstance(ext.get("values", {}), dict):
            raise BadRequest(f"dataExtensions[{n}].values must be an object", _GUEST_HELP)
        ext.setdefault("key", "default")
        ext.setdefault("values", {})
    orders = _list_of_objects(data, "orders", MAX_ORDERS)
    browser_ids = data.get("browserIds", [])
    if not isinstance(browser_ids, list):
        raise BadRequest("browserIds must be a list of browser ids", _GUEST_HELP)
    browser_ids = [_identity(b, "browserIds[]") for b in browser_ids]
    guest_ref = str(ref or new_ref())
    sessions = [
        _session(s, n, guest_ref, tenant.client_key)
        for n, s in enumerate(_list_of_objects(data, "sessions", MAX_SESSIONS))
    ]
    if sum(s["status"] == "OPEN" for s in sessions) > 1:
        raise BadRequest("a guest has at most one OPEN session", "close the others (status: CLOSED)")
    for s in sessions:
        if s.get("browserRef") and s["browserRef"] not in browser_ids:
            browser_ids.append(s["browserRef"])
    taken = [f"browserId {b}" for b in browser_ids if b in tenant.by_browser]
    if email and email in tenant.by_email:
        taken.append(f"email {email}")
    taken += [f"identifier {i['provider']}:{i['id']}" for i in identifiers
              if (i["provider"], i["id"]) in tenant.by_identifier]  # fmt: skip
    if taken:
        raise Conflict(
            f"another guest already has {shortened(', '.join(taken), 200)}",
            "GET /sandbox/guests?email=… or ?browserId=… finds it; use other identities",
        )
    now = int(time.time() * 1000)
    guest = {
        **{k: v for k, v in data.items() if k not in ("sandbox",)},
        "ref": guest_ref,
        "guestType": data.get("guestType") or ("customer" if email or identifiers else "visitor"),
        "email": email,
        "identifiers": identifiers,
        "browserIds": browser_ids,
        "dataExtensions": extensions,
        "sessions": sessions,
        "orders": orders,
        "firstSeen": data.get("firstSeen", now),
        "lastSeen": data.get("lastSeen", now),
    }
    tenant.index_guest(guest)
    return guest


# ---- sessions -------------------------------------------------------------------------------------------


def guest_sessions(guest: dict[str, Any]) -> list[dict[str, Any]]:
    """The guest's sessions as a list of its own (generated guests hold a tuple)."""
    sessions = guest.get("sessions")
    if not isinstance(sessions, list):
        sessions = [dict(s) for s in sessions or ()]
        guest["sessions"] = sessions
    return sessions


def _open_session(
    tenant: Tenant, guest: dict[str, Any], browser_ref: str | None, channel: str, pos: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The guest's open session for this browser (a new one if none); sessions idle too long close first."""
    sessions = guest_sessions(guest)
    closed: list[dict[str, Any]] = []
    now = time.time() * 1000
    for session in sessions:
        if session.get("status") != "OPEN":
            continue
        if browser_ref is not None and session.get("browserRef") not in (None, browser_ref):
            continue
        timeout_ms = 60_000 * float(
            tenant.points_of_sale.get(str(session.get("pointOfSale")), {}).get("timeoutInMinutes", 20)
        )
        last = _epoch_ms(session.get("lastActivityAt") or session.get("startedAt")) or now
        if now - last > timeout_ms:
            _close(session)
            closed.append(session)
            continue
        return session, closed
    session = {
        "ref": new_ref(),
        "clientKey": tenant.client_key,
        "guestRef": guest["ref"],
        "browserRef": browser_ref,
        "status": "OPEN",
        "sessionType": "WEB" if channel in ("WEB", "MOBILE_WEB") else channel,
        "channel": channel,
        "pointOfSale": pos,
        "startedAt": iso_time(),
        "endedAt": None,
        "events": [],
        "dataExtensions": [],
    }
    sessions.append(session)
    del sessions[:-MAX_SESSIONS]
    return session, closed


def _close(session: dict[str, Any]) -> None:
    session["status"] = "CLOSED"
    session["endedAt"] = iso_time()
    started, ended = _epoch_ms(session.get("startedAt")), _epoch_ms(session["endedAt"])
    if started is not None and ended is not None:
        session["duration"] = int(max(0.0, ended - started))


def close_session(tenant: Tenant, body: Any) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """Close the guest's open session (or open and close one): (guest, the closed session, opened here)."""
    if not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object such as {"email": "…"}')
    given = [k for k in ("browserId", "email", "guestRef") if body.get(k) is not None]
    if len(given) != 1:
        raise BadRequest(
            "name the guest with exactly one of browserId, email or guestRef",
            f"got {', '.join(given) or 'none'}",
        )
    kind = given[0]
    value = _identity(body[kind], kind)
    if not isinstance(body.get("pointOfSale", ""), str):
        raise BadRequest("pointOfSale must be a string", f"got {shortened(repr(body['pointOfSale']))}")
    if kind == "guestRef":
        ref: str | None = value if value in tenant.guests else None
    elif kind == "email":
        ref = tenant.by_email.get(value.strip().lower())
    else:
        ref = tenant.by_browser.get(value)
    if ref is None:
        raise NotFound(
            f"no guest with {kind} '{shortened(value, 64)}'",
            "GET /sandbox/guests lists them; POST /sandbox/guests adds one",
        )
    guest = tenant.guests[ref]
    browser = value if kind == "browserId" else None
    sessions = guest_sessions(guest)
    current = next(
        (
            s
            for s in reversed(sessions)
            if s.get("status") == "OPEN" and browser in (None, s.get("browserRef"))
        ),
        None,
    )
    opened = current is None
    if current is None:
        pos = body.get("pointOfSale") or next(iter(tenant.points_of_sale), "")
        browser = browser or next(iter(guest.get("browserIds") or ()), None)
        current, _ = _open_session(tenant, guest, browser, "WEB", pos)
    _close(current)
    return guest, current, opened


# ---- events ---------------------------------------------------------------------------------------------


def _text_field(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"event field '{key}' must be a string", f"got {shortened(repr(value))}")
    return value


def record_event(tenant: Tenant, body: Any, *, client_key: str | None = None) -> EventOutcome:
    """Validate a Stream API event and record it in the browser's guest's open session (module docstring)."""
    if not isinstance(body, dict):
        raise BadRequest("the event must be a JSON object", "see GET /sandbox/docs, POST /v1.2/events")
    key = body.get("client_key", client_key)
    if key != tenant.client_key:
        raise Unauthorized(
            "unknown client_key", "send the tenant's client key (GET /sandbox/info) as client_key"
        )
    kind = _text_field(body, "type")
    if not kind or not kind.strip():
        raise BadRequest("type is required", 'an event has a type: "VIEW", "IDENTITY" or a custom one')
    kind = kind.strip()
    if len(kind) > 100 or kind.upper() in RESERVED_TRIGGERS:
        raise BadRequest(
            f"event type '{shortened(kind, 64)}' is not one an event may have",
            "SESSION_CLOSED and the other CDP triggers fire by themselves (POST /sandbox/sessions/close)",
        )
    browser_id = _text_field(body, "browser_id")
    if not browser_id:
        raise BadRequest("browser_id is required", "get one from GET /v1.2/browser/create.json")
    guest_ref = tenant.by_browser.get(browser_id)
    if guest_ref is None:
        raise NotFound(
            f"unknown browser_id '{shortened(browser_id, 64)}'",
            "the Stream API answers 404 for a browser it never created: GET /v1.2/browser/create.json",
        )
    channel = (_text_field(body, "channel") or "WEB").upper()
    pos = _text_field(body, "pos") or ""
    language, currency, page = (_text_field(body, k) for k in ("language", "currency", "page"))
    ext = body.get("ext", {})
    if ext is None:
        ext = {}
    if not isinstance(ext, dict):
        raise BadRequest("ext must be an object of custom fields", f"got {shortened(repr(ext))}")
    email = _text_field(body, "email")
    identifiers = _identifiers(body.get("identifiers"), "identifiers")
    if email is not None:
        email = _identity(email, "email").strip().lower()
    if kind.upper() == "IDENTITY" and not (email or identifiers):
        raise BadRequest(
            "an IDENTITY event needs identifiers (or an email)",
            'e.g. "identifiers": [{"provider": "email", "id": "a@b.c"}]',
        )

    guest = tenant.guests[guest_ref]
    identified = False
    arbitrary: dict[str, Any] = {
        "page": page,
        "language": language,
        "currency": currency,
        "_bx_version": "1.2",
    }
    arbitrary = {k: v for k, v in arbitrary.items() if v is not None}
    arbitrary.update({k: v for k, v in body.items() if k not in EVENT_FIELDS})
    if ext:
        arbitrary["ext"] = flatten(ext)
    if kind.upper() == "IDENTITY":
        guest, identified = _identify(tenant, guest, browser_id, email, identifiers, body)
        arbitrary["_bx_identity"] = f"Updating Existing CREF: {guest['ref']}"
    session, closed = _open_session(tenant, guest, browser_id, channel, pos)
    now = iso_time()
    event = {
        "ref": new_ref(),
        "clientKey": tenant.client_key,
        "createdAt": now,
        "type": kind,
        "status": "PROCESSED",
        "channel": channel,
        "pointOfSale": pos,
        "browserRef": browser_id,
        "sessionRef": session["ref"],
        "arbitraryData": arbitrary,
    }
    events = session.setdefault("events", [])
    events.append(event)
    del events[:-MAX_EVENTS_PER_SESSION]
    session["lastActivityAt"] = now
    guest["lastSeen"] = int(time.time() * 1000)
    if kind.upper() == "FORCE_CLOSE":
        _close(session)
        closed.append(session)
    return EventOutcome(event, guest, session, closed, identified)


def _identify(
    tenant: Tenant,
    guest: dict[str, Any],
    browser_id: str,
    email: str | None,
    identifiers: list[dict[str, str]],
    body: Mapping[str, Any],
) -> tuple[dict[str, Any], bool]:
    """Link the browser to the guest these identities name (identifiers first), or identify this one."""
    target_ref = next(
        (tenant.by_identifier[(i["provider"], i["id"])] for i in identifiers
         if (i["provider"], i["id"]) in tenant.by_identifier),
        None,
    ) or (tenant.by_email.get(email) if email else None)  # fmt: skip
    with tenant.lock:
        if target_ref is not None and target_ref != guest["ref"]:
            target = tenant.guests[target_ref]
            # the browser now means the known guest; its anonymous history moves along (a CDP merge)
            moved = [s for s in guest_sessions(guest) if s.get("browserRef") in (browser_id, None)]
            guest["sessions"] = [s for s in guest_sessions(guest) if s not in moved]
            guest["browserIds"] = tuple(b for b in guest.get("browserIds") or () if b != browser_id)
            guest["mergedInto"] = target_ref
            for s in moved:
                s["guestRef"] = target_ref
            guest_sessions(target).extend(moved)
            guest = target
        if browser_id not in (guest.get("browserIds") or ()):
            guest["browserIds"] = (*(guest.get("browserIds") or ()), browser_id)
        known = {(i.get("provider"), i.get("id")) for i in guest.get("identifiers") or ()}
        added = [i for i in identifiers if (i["provider"], i["id"]) not in known]
        if added:
            guest["identifiers"] = [*(guest.get("identifiers") or ()), *added]
        if email and not guest.get("email"):
            guest["email"] = email
        for wire, name in (("firstname", "firstName"), ("lastname", "lastName")):
            if isinstance(body.get(wire), str) and body[wire] and not guest.get(name):
                guest[name] = body[wire]
        guest["guestType"] = "customer"
        tenant.index_guest(guest)
    return guest, True
