"""The Edge preview form: identity (namespace, id), a demo-profile picker, event type, page URL, data rows.

Values live in ``st.session_state`` under ``edge_*`` keys; ``edge_fields`` turns them into
``InteractRequest.build`` keywords (``xdm.…`` rows go into the XDM event, where audience rules read them;
other rows into ``event.data``, nested at dots like the CLI's ``--data``).
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import streamlit as st

from flowlab.workbench.edge_preview import DEMO_IDENTITY, EVENT_TYPES, NAMESPACES
from flowlab.workbench.targets import Target
from ui.target import sandbox_admin

__all__ = ["edge_fields", "edge_form", "prepare_edge_form"]

_CUSTOM = "custom"
_DATA_COLUMNS = ["key", "value"]


@st.cache_data(ttl=300, show_spinner=False)
def _demo_profiles(base_url: str) -> list[tuple[str, str, str]]:
    """A few demo profiles to pick: (label, namespace, id), Lena Vogel first."""
    items = sandbox_admin(base_url).edge_profiles(limit=40).get("items") or []
    found: list[tuple[str, str, str]] = []
    for item in items:
        ident = item.get("identity") or {}
        attrs = item.get("attributes") or {}
        first = ((attrs.get("person") or {}).get("name") or {}).get("firstName")
        last = ((attrs.get("person") or {}).get("name") or {}).get("lastName")
        tier = (attrs.get("loyalty") or {}).get("tier", "")
        who = f"{first} {last}" if first else "Anonymous visitor"
        label = f"{who} · {tier} · {ident.get('namespace')}:{ident.get('id')}"
        entry = (label, str(ident.get("namespace")), str(ident.get("id")))
        if (entry[1], entry[2]) == DEMO_IDENTITY:
            found.insert(0, entry)
        elif len(found) < 6 and (first or not any(e[0].startswith("Anonymous") for e in found)):
            found.append(entry)
    return found[:7]


def prepare_edge_form(target: Target) -> None:
    """Defaults before the widgets exist: Lena Vogel on the sandbox, an empty identity on a live org."""
    state = st.session_state
    if "edge_namespace" not in state:
        state["edge_namespace"] = DEMO_IDENTITY[0]
        state["edge_identity_id"] = DEMO_IDENTITY[1] if target.is_sandbox else ""
        state["edge_event_type"] = "commerce.checkouts" if target.is_sandbox else EVENT_TYPES[0]
        state["edge_page_url"] = "https://www.example.de/checkout" if target.is_sandbox else ""
        state["edge_no_token"] = False


def _pick_profile() -> None:
    picked = st.session_state.get("edge_demo_profile")
    if picked:
        namespace, _, value = str(picked).partition(":")
        st.session_state["edge_namespace"] = namespace if namespace in NAMESPACES else _CUSTOM
        st.session_state["edge_namespace_custom"] = namespace
        st.session_state["edge_identity_id"] = value
        st.session_state.pop("edge_preview", None)


def edge_form(target: Target) -> None:
    """The form's widgets (values in session state)."""
    if target.is_sandbox:
        profiles = _demo_profiles(target.base_url)
        options = [f"{ns}:{value}" for _, ns, value in profiles]
        labels = {f"{ns}:{value}": label for label, ns, value in profiles}
        st.selectbox(
            "Demo profile",
            options,
            index=None,
            key="edge_demo_profile",
            placeholder="Pick a demo profile…",
            format_func=lambda o: labels.get(o, o),
            on_change=_pick_profile,
            help="Edge profiles of the sandbox (GET /sandbox/edge/profiles); Lena Vogel is a gold member.",
        )
    ns_col, id_col = st.columns([1, 2])
    ns_col.selectbox(
        "Namespace",
        [*NAMESPACES, _CUSTOM],
        key="edge_namespace",
        format_func=lambda n: "Custom…" if n == _CUSTOM else n,
        help="The primary identity's namespace (reference §8.2). Email, CRMID and ECID find sandbox profiles.",
    )
    if st.session_state.get("edge_namespace") == _CUSTOM:
        ns_col.text_input("Namespace code", key="edge_namespace_custom", placeholder="loyaltyId")
    id_col.text_input("Identity", key="edge_identity_id", placeholder="lena.vogel@example.de")
    ev_col, url_col = st.columns([1, 1])
    ev_col.selectbox(
        "Event type",
        [*EVENT_TYPES, _CUSTOM],
        key="edge_event_type",
        format_func=lambda n: "Custom…" if n == _CUSTOM else n,
        help="commerce.checkouts qualifies the edge audience 'Checking out today' on the same page.",
    )
    if st.session_state.get("edge_event_type") == _CUSTOM:
        ev_col.text_input(
            "Custom event type", key="edge_event_custom", placeholder="directMarketing.emailClicked"
        )
    url_col.text_input("Page URL", key="edge_page_url", placeholder="https://www.example.de/hiking")
    st.caption(
        "Data fields: a key starting with `xdm.` goes into the XDM event (where audience rules read it, e.g. "
        "`xdm.commerce.order.priceTotal`); any other key into `event.data`. Values that read as JSON numbers "
        "or booleans are sent as such."
    )
    st.data_editor(
        pd.DataFrame(columns=_DATA_COLUMNS, dtype="string"),
        key="edge_data",
        num_rows="dynamic",
        width="stretch",
        hide_index=True,
        column_config={
            "key": st.column_config.TextColumn("Key"),
            "value": st.column_config.TextColumn("Value"),
        },
    )
    st.toggle(
        "Send without token (unauthenticated edge domain)",
        key="edge_no_token",
        help="Without Authorization the Edge answers with audiences only: attributes are returned only to "
        "the authenticated Server API (reference §1.1, §5.4).",
    )


def _rows() -> list[tuple[str, str]]:
    """The data editor's rows, as (key, value): the widget's state holds the edits, not a frame."""
    edits: Any = st.session_state.get("edge_data") or {}
    rows: list[dict[str, Any]] = list(edits.get("added_rows") or [])
    for index, change in sorted((edits.get("edited_rows") or {}).items()):
        while len(rows) <= int(index):
            rows.append({})
        rows[int(index)].update(change)
    out = []
    for row in rows:
        key = str(row.get("key") or "").strip()
        if key:
            out.append((key, str(row.get("value") or "")))
    return out


def _value(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, int | float | bool | list | dict) else text


def _nest(target: dict[str, Any], path: str, value: Any) -> None:
    parts = [p for p in path.split(".") if p]
    for part in parts[:-1]:
        child = target.get(part)
        if not isinstance(child, dict):
            child = target[part] = {}
        target = child
    if parts:
        target[parts[-1]] = value


def edge_fields() -> dict[str, Any]:
    """The form as ``InteractRequest.build`` keywords."""
    state = st.session_state
    namespace = str(state.get("edge_namespace") or "")
    if namespace == _CUSTOM:
        namespace = str(state.get("edge_namespace_custom") or "").strip()
    event_type = str(state.get("edge_event_type") or "")
    if event_type == _CUSTOM:
        event_type = str(state.get("edge_event_custom") or "").strip()
    xdm: dict[str, Any] = {}
    data: dict[str, Any] = {}
    for key, text in _rows():
        if key.startswith("xdm."):
            _nest(xdm, key.removeprefix("xdm."), _value(text))
        else:
            _nest(data, key, _value(text))
    return {
        "identity": (namespace, str(state.get("edge_identity_id") or "").strip()),
        "event_type": event_type or None,
        "page_url": str(state.get("edge_page_url") or "") or None,
        "xdm": xdm,
        "data": data,
    }
