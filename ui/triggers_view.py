"""The Triggers page's sections: triggered flows, firing an event or closing a session for a persona, and the
deliveries arriving with their bodies (#11)."""

from __future__ import annotations

import json
import time
from typing import Any

import streamlit as st

from flowlab import SandboxAdmin
from flowlab.errors import FlowLabError
from flowlab.sandbox.personalize.events import RESERVED_TRIGGERS
from flowlab.workbench.advice import advise
from flowlab.workbench.connections import (
    PENDING,
    STANDARD_EVENTS,
    delivery_rows,
    event_body,
    flow_triggers,
    triggered_rows,
)
from flowlab.workbench.personas import demo_personas
from ui.errors import show_advice
from ui.text import code, plain

__all__ = ["show_triggers"]

_WAIT_S = 6.0  # how long the page keeps looking for deliveries after firing (they run in the background)
_POLL_S = 0.75
_OTHER = "Other…"


def show_triggers(admin: SandboxAdmin) -> None:
    """The whole page below the header."""
    try:
        info = admin.info()
        flows = admin.flows()
        triggered = [admin.flow(str(f["friendlyId"])) for f in flows if "TRIGGERED" in str(f.get("type"))]
    except FlowLabError as exc:
        show_advice(advise(exc))
        return
    custom = _flows_table(triggered)
    guest = _pick_guest(admin)
    if guest is None:
        return
    _act(admin, guest, info, custom)
    names = {str(d.get("friendlyId")): str(d.get("name") or d.get("friendlyId")) for d in triggered}
    st.subheader("Deliveries")
    waiting = time.monotonic() < float(st.session_state.get("triggers_wait_until", 0.0))
    if waiting:
        _live_deliveries(admin, str(guest["ref"]), names, True)
    else:
        _deliveries(admin, str(guest["ref"]), names, False)


def _flows_table(triggered: list[dict[str, Any]]) -> list[str]:
    """The triggered flows; the custom event types that fire them."""
    if not triggered:
        st.info(
            "The sandbox has no triggered experiences yet. Import a Sitecore export folder (zip) with some on "
            "the Sandbox page's **Import export** tab (Sitecore's demo has *Session Browse Abandonment* and "
            "*Subscribe to update emails*), or post one to `POST /sandbox/flows`. Events and closed sessions "
            "are still recorded meanwhile.",
            icon=":material/bolt:",
        )
        st.page_link("app_pages/sandbox.py", label="Open the Sandbox page", icon=":material/science:")
        return []
    st.dataframe(triggered_rows(triggered), hide_index=True, width="stretch", key="triggers_flows")
    fired_by = [t for d in triggered for t in flow_triggers(d)]
    return [
        t for t in dict.fromkeys(fired_by) if t.upper() not in RESERVED_TRIGGERS and t not in STANDARD_EVENTS
    ]


def _pick_guest(admin: SandboxAdmin) -> dict[str, Any] | None:
    """A demo persona, found among the sandbox's guests by browser id or email."""
    guests: dict[str, dict[str, Any]] = {}
    for persona in demo_personas():
        filters = {"browserId": persona.browser_id} if persona.browser_id else {}
        if not filters and persona.email:
            filters = {"email": persona.email}
        if not filters:
            continue  # found by a CRM identifier only: nothing to look the guest up by
        try:
            found = admin.guests(limit=1, **filters).get("items") or []
        except FlowLabError as exc:
            show_advice(advise(exc))
            return None
        if found:
            guests[persona.name] = found[0]
    if not guests:
        st.warning("None of the demo personas is a guest of this sandbox: reset it on the Sandbox page.")
        return None
    name = st.selectbox("Persona", list(guests), key="triggers_persona")
    guest = guests[str(name)]
    browsers = guest.get("browserIds") or []
    st.caption(
        f"Guest {code(guest['ref'])} · email {code(guest.get('email') or 'none')} · browser "
        f"{code(browsers[0] if browsers else 'none')}"
        + ("" if guest.get("email") else " · without an email, the abandonment flow's condition skips them")
    )
    return guest


def _act(admin: SandboxAdmin, guest: dict[str, Any], info: dict[str, Any], custom: list[str]) -> None:
    action = st.segmented_control(
        "What happens",
        ["Send an event", "Close the session"],
        default="Send an event",
        required=True,
        key="triggers_action",
    )
    if action == "Close the session":
        st.caption(
            "Closes the guest's open session (opening and closing one if none is open), as the CDP does after "
            "inactivity: flows triggered by SESSION_CLOSED run with the closed session as `entity`."
        )
        if st.button("Close the session", key="triggers_close", type="primary", icon=":material/logout:"):
            _fire(guest, lambda: admin.close_session(guest_ref=str(guest["ref"])), _closed)
    else:
        left, right = st.columns(2)
        options = [*STANDARD_EVENTS, *custom, _OTHER]
        kind = left.selectbox(
            "Event type",
            options,
            index=options.index(custom[0]) if custom else 0,
            key="triggers_event_type",
            help="VIEW and IDENTITY as the Engage SDK sends them; custom types fire the triggered flows that "
            "list them. IDENTITY carries the guest's email and identifiers.",
        )
        if kind == _OTHER:
            kind = left.text_input(
                "Custom event type", key="triggers_event_custom", placeholder="PLAN_CHOSEN"
            )
        page = right.text_input("Page", value="home", key="triggers_event_page")
        points = [p.get("name") for p in info.get("pointsOfSale") or []]
        body = event_body(
            guest,
            str(kind or "").strip(),
            client_key=str(info.get("clientKey")),
            pos=str(points[0] if points else ""),
            page=page,
        )
        with st.expander("The event (POST /v1.2/events)"):
            st.json(body, expanded=True)
        if st.button(
            "Send event", key="triggers_send", type="primary", icon=":material/bolt:", disabled=not kind
        ):
            _fire(
                guest,
                lambda: admin.send_event(body),
                lambda r: f"Event {body['type']} recorded, ref {r.get('ref')}.",
            )
    said = st.session_state.get("triggers_message")  # kept while the deliveries refresh, for this guest only
    if said and said[0] == guest["ref"]:
        st.success(plain(said[1]), icon=":material/check_circle:")


def _closed(result: dict[str, Any]) -> str:
    session = result.get("session") or {}
    fired = result.get("fired") or []
    opened = " (none was open, so one was opened and closed)" if result.get("openedNow") else ""
    flows = ", ".join(fired) if fired else "no SESSION_CLOSED flow"
    return f"Closed session {session.get('ref')}{opened}; fired: {flows}."


def _fire(guest: dict[str, Any], call: Any, say: Any) -> None:
    try:
        result = call()
    except FlowLabError as exc:
        show_advice(advise(exc))
        return
    st.session_state["triggers_message"] = (guest["ref"], say(result))
    st.session_state["triggers_wait_until"] = time.monotonic() + _WAIT_S
    st.rerun()


def _deliveries(admin: SandboxAdmin, guest_ref: str, names: dict[str, str], live: bool) -> None:
    """This guest's deliveries, newest first, each with its body; while ``live``, redrawn until they settle."""
    try:
        data = admin.deliveries(guest_ref=guest_ref, limit=20)
    except FlowLabError as exc:
        show_advice(advise(exc))
        return
    items = data.get("items") or []
    pending = any(i.get("status") in PENDING for i in items)
    waiting = time.monotonic() < float(st.session_state.get("triggers_wait_until", 0.0))
    if live and not pending and not waiting:
        st.rerun(scope="app")  # settled: draw the page once more without the timer
    if not items:
        st.caption(
            "Waiting for deliveries…"
            if live
            else "No deliveries for this guest yet: send an event or close the session."
        )
        return
    total = int(data.get("total", len(items)))
    st.caption(
        f"{total} {'delivery' if total == 1 else 'deliveries'} for this guest, newest first"
        + (" · refreshing" if live else "")
    )
    rows = delivery_rows(items, names)
    quiet = [k for k, first in (("error", ""), ("attempts", 1)) if all(r[k] in (first, None) for r in rows)]
    rows = [
        {k: v for k, v in r.items() if k not in quiet} for r in rows
    ]  # room for the rest: no retry, no error
    small = st.column_config.Column(width="small")
    st.dataframe(
        rows,
        hide_index=True,
        width="stretch",
        key="triggers_deliveries",
        column_config={k: small for k in ("at (UTC)", "status", "HTTP", "attempts", "latency (ms)")},
    )
    for i, item in enumerate(items[:5]):
        flow = names.get(str(item.get("friendlyId")), str(item.get("friendlyId")))
        title = f"{flow} · {item.get('trigger')} · {item.get('status')}"
        with st.expander(plain(title), expanded=i == 0, icon=":material/outbox:"):
            _delivery(item)


def _delivery(item: dict[str, Any]) -> None:
    connection = item.get("connection") or {}
    st.markdown(
        f"To **{plain(connection.get('name'))}** · {plain(item.get('attempts'))} attempt(s) · "
        f"{float(item.get('latencyMs') or 0):,.0f} ms · went to {plain(item.get('via') or '—')}"
    )
    st.code(f"{item.get('method')} {item.get('url')}", language="http", wrap_lines=True)
    if item.get("error"):
        st.error(plain(item["error"]), icon=":material/error:")
    body = item.get("requestBody")
    st.markdown("**Body sent**")
    try:
        st.json(json.loads(body) if isinstance(body, str) else body, expanded=True)
    except ValueError:
        st.code(str(body), wrap_lines=True)
    if item.get("responseStatus") is not None:
        st.markdown(f"**Response** {plain(item['responseStatus'])}")
        st.json(item.get("response"), expanded=False)


_live_deliveries = st.fragment(run_every=_POLL_S)(_deliveries)
