"""The call form: flow, channel, point of sale, language, currency, one identity, params; and sending it.

Field values live in session state (``persist_state="session"``) so they survive a trip to another page.
Personas and the "New browser ID" button fill them through callbacks, which run before the widgets are
drawn. Pressing "Call flow" validates first (``CallFlowRequest``); problems are shown under the field they
concern, and nothing is sent until there are none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import streamlit as st

from flowlab.errors import FieldProblem, FlowLabError, RequestValidationError
from flowlab.personalize.models import CHANNELS, CallFlowRequest
from flowlab.personalize.params import (
    UTM_FIELDS,
    merge_params,
    params_to_rows,
    rows_to_params,
    utm_from_url,
    utm_params,
)
from flowlab.workbench.catalog import FlowSummary
from flowlab.workbench.personas import Persona, PersonaStore, demo_personas, starter_persona
from flowlab.workbench.preview import Preview, run_preview
from flowlab.workbench.targets import Target, TargetStore
from ui import history
from ui.options import (
    CHANNEL_HELP,
    channel_label,
    currency_label,
    currency_options,
    flow_catalog,
    friendly_id_options,
    language_label,
    language_options,
    point_of_sale_options,
    with_current,
)
from ui.target import flow_client, live_call_allowed, sandbox_admin, timeout_s
from ui.text import code, plain

__all__ = [
    "call_form",
    "prepare_form",
    "form_request",
    "general_problems",
    "load_persona",
    "missing_fields",
    "persona_picker",
    "save_persona_popover",
    "send",
    "submit",
]

_IDENTITY_LABELS = {"browserId": "Browser ID", "email": "Email", "identifiers": "Identifier"}
# what picking a persona fills in (besides the point of sale)
_PERSONA_FIELDS = (
    "identity_kind", "browser_id", "email", "identifier_provider", "identifier_id", "channel", "language",
    "currency",
)  # fmt: skip
# wire field (from validation problems) → the form slot that shows it
_SLOTS = {
    "friendlyId": "friendly_id",
    "channel": "channel",
    "pointOfSale": "pos",
    "language": "language",
    "currencyCode": "currency",
    "browserId": "identity",
    "email": "identity",
    "identifiers": "identity",
    "identity": "identity",
    "params": "params",
}
_WILDCARD_HELP = (
    "The friendlyId of an experience or experiment (a-z, 0-9 and _). End it with * to run the first live flow, "
    "in name order, whose conditions pass: hero_banner* tries hero_banner_campaign, then hero_banner_default."
)
_PARAMS_HELP = (
    "Custom data the flow reads as request.params. Dotted keys nest (utm.campaign → {utm: {campaign}}); "
    "values that are JSON (3, true, [1,2]) are sent as JSON, anything else as text."
)


# ---- state --------------------------------------------------------------------------------------------


def _starter(target: Target) -> None:
    """A first visit to the sandbox starts with a demo persona filled in (values already set win).

    The page says "pick a persona, press Call flow"; with nothing picked, that first press only answered
    "Nothing was sent: fix the fields". A tenant gets no demo persona: those guests do not exist there.
    """
    state = st.session_state
    if not target.is_sandbox or "persona" in state:
        return
    try:
        persona = PersonaStore().get(starter_persona().name) or starter_persona()
    except FlowLabError:  # an unreadable personas file: the demo persona itself
        persona = starter_persona()
    state["persona"] = persona.name
    filled = {
        "identity_kind": persona.identity_kind,
        "browser_id": persona.browser_id or "",
        "email": persona.email or "",
        "identifier_provider": persona.identifier.provider if persona.identifier else "",
        "identifier_id": persona.identifier.id if persona.identifier else "",
        "channel": persona.channel,
        "pos": persona.point_of_sale or None,
        "language": persona.language or "",
        "currency": persona.currency or "",
    }
    for key, value in filled.items():
        state.setdefault(key, value)
    if "params_base" not in state:
        _set_params(persona.params)


def _defaults(target: Target) -> None:
    state = st.session_state
    _starter(target)
    recent = [] if target.is_sandbox else friendly_id_options(target, [])
    state.setdefault("friendly_id", "hero_banner*" if target.is_sandbox else (recent[0] if recent else None))
    state.setdefault("channel", "WEB")
    state.setdefault("pos", target.point_of_sale or None)
    state.setdefault("language", "")
    state.setdefault("currency", "")
    state.setdefault("identity_kind", "browserId")
    for key in ("browser_id", "email", "identifier_provider", "identifier_id", "variant_path"):
        state.setdefault(key, "")
    state.setdefault("params_base", [])
    state.setdefault("params_version", 0)
    state.setdefault("form_problems", {})
    state.setdefault("persona", "")


def prepare_form(target: Target) -> None:
    """Defaults, and a clean slate for target-specific fields when the target changes.

    A point of sale, flow or persona of the sandbox means nothing on a tenant (and the reverse), and the
    last result belongs to the old target; keeping them would invite a call with the wrong values.
    """
    state = st.session_state
    previous = state.get("form_target")
    state["form_target"] = target.name
    if previous is not None and previous != target.name:
        if state.get("persona") in {p.name for p in demo_personas()}:  # a sandbox guest: not on a tenant
            for key in _PERSONA_FIELDS:
                state.pop(key, None)
            _set_params({})
        for key in ("friendly_id", "pos", "persona", "preview", "form_problems"):
            state.pop(key, None)
    _defaults(target)


def _set_params(params: Mapping[str, Any]) -> None:
    state = st.session_state
    state["params_base"] = params_to_rows(params)
    state["params_current"] = list(state["params_base"])
    state["params_version"] = int(state.get("params_version", 0)) + 1


def load_persona(persona: Persona) -> None:
    """Fill the form with a persona (call from a callback: widgets must not be drawn yet)."""
    state = st.session_state
    state["identity_kind"] = persona.identity_kind
    state["browser_id"] = persona.browser_id or ""
    state["email"] = persona.email or ""
    state["identifier_provider"] = persona.identifier.provider if persona.identifier else ""
    state["identifier_id"] = persona.identifier.id if persona.identifier else ""
    state["channel"] = persona.channel
    state["pos"] = persona.point_of_sale or None
    state["language"] = persona.language or ""
    state["currency"] = persona.currency or ""
    state["form_problems"] = {}
    _set_params(persona.params)


def _on_persona() -> None:
    name = st.session_state.get("persona")
    if not name:
        return
    try:
        persona = PersonaStore().get(name)
    except FlowLabError as exc:
        st.session_state["form_problems"] = {"": [str(exc)]}
        return
    if persona is not None:
        load_persona(persona)


def _new_browser_id(base_url: str, client_key: str) -> None:
    try:
        browser_id = flow_client(base_url, timeout_s()).create_browser_id(client_key)
    except FlowLabError as exc:
        st.session_state["form_problems"] = {"identity": [f"browser/create failed: {exc}"]}
        return
    st.session_state["identity_kind"] = "browserId"
    st.session_state["browser_id"] = browser_id
    st.session_state["form_problems"] = {}


def _add_utm() -> None:
    state = st.session_state
    values = utm_from_url(str(state.get("utm_url") or ""))
    values.update({f: str(state.get(f"utm_{f}") or "") for f in UTM_FIELDS if state.get(f"utm_{f}")})
    if not values:
        state["form_problems"] = {"params": ["enter a landing-page URL with utm_ parameters, or a campaign"]}
        return
    try:
        current = rows_to_params(state.get("params_current") or state.get("params_base") or [])
    except RequestValidationError as exc:
        state["form_problems"] = _group(exc.problems)
        return
    _set_params(merge_params(current, utm_params(values, state.get("utm_style") or "nested")))
    state["form_problems"] = {}


def _group(problems: Sequence[FieldProblem]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for problem in problems:
        slot = _SLOTS.get(problem.field.split(".")[0], "")
        grouped.setdefault(slot, []).append(problem.message)
    return grouped


def missing_fields(target: Target) -> list[str]:
    """What the form still needs before a call makes sense, as the fields are labelled on screen.

    For the hint beside an empty form (a tenant's first visit has no persona to pick): the flow, the point
    of sale (required on direct calls, reference §2.1) and the chosen identity.
    """
    state = st.session_state
    missing: list[str] = []
    if not live_call_allowed(target):
        missing.append("the acknowledgement in the sidebar")
    if not str(state.get("friendly_id") or "").strip():
        missing.append("Flow (friendlyId)")
    if not str(state.get("pos") or "").strip():
        missing.append("Point of sale")
    kind = state.get("identity_kind") or "browserId"
    if kind == "browserId" and not str(state.get("browser_id") or "").strip():
        missing.append("Browser ID (or press New ID)")
    elif kind == "email" and not str(state.get("email") or "").strip():
        missing.append("Email")
    elif kind == "identifiers" and not (
        str(state.get("identifier_provider") or "").strip() and str(state.get("identifier_id") or "").strip()
    ):
        missing.append("Provider and ID of the identifier")
    return missing


def general_problems() -> list[str]:
    """Problems that belong to no field (a missing client key, an unreadable personas file)."""
    problems: dict[str, list[str]] = st.session_state.get("form_problems") or {}
    return problems.get("", [])


def _errors(slot: str) -> None:
    for message in st.session_state.get("form_problems", {}).get(slot, []):
        st.caption(f":red[:material/error: {plain(message)}]")


# ---- widgets ------------------------------------------------------------------------------------------


def persona_picker(target: Target) -> Persona | None:
    """Pick a persona to fill the form: the sandbox's demo guests and your saved personas."""
    try:
        store = PersonaStore()
        personas = store.all(include_demo=target.is_sandbox)
    except FlowLabError as exc:
        st.warning(plain(str(exc)), icon="⚠️")
        return None
    by_name = {p.name: p for p in personas}
    if st.session_state.get("persona") not in ("", None, *by_name):
        st.session_state["persona"] = ""

    def label(name: str) -> str:
        if not name:
            return "Choose a persona…"
        persona = by_name[name]
        return f"{name} (demo)" if persona.demo else name

    st.selectbox(
        "Persona",
        ["", *by_name],
        key="persona",
        format_func=label,
        on_change=_on_persona,
        persist_state="session",
        help="A saved guest: identity, point of sale, channel, language, currency and params. Picking one "
        "fills the form.",
    )
    persona = by_name.get(st.session_state.get("persona") or "")
    if persona is not None:
        st.caption(f"{plain(persona.description)}  \n{code(persona.summary)}")
    for message in store.problems:
        st.caption(f":orange[{plain(message)}]")
    return persona


def _flow_field(target: Target, flows: Sequence[FlowSummary]) -> None:
    by_id = {f.friendly_id: f for f in flows}
    options = with_current(friendly_id_options(target, flows), st.session_state.get("friendly_id"))

    def label(friendly_id: str) -> str:
        flow = by_id.get(friendly_id)
        if flow is not None:
            return f"{friendly_id} · {flow.kind}, {flow.status}, {len(flow.variants)} variant(s)"
        if friendly_id.endswith("*"):
            return f"{friendly_id} · first live match by name"
        return friendly_id

    with st.container(key="field_friendly_id"):
        st.selectbox(
            "Flow (friendlyId)",
            options,
            index=None,
            key="friendly_id",
            format_func=label,
            accept_new_options=True,
            placeholder="Type a friendlyId, e.g. home_page_hero",
            help=_WILDCARD_HELP,
            persist_state="session",
        )
        chosen = by_id.get(st.session_state.get("friendly_id") or "")
        if chosen is not None:
            st.caption(plain(f"{chosen.name}: {chosen.details}"))
        elif not target.is_sandbox:
            st.caption("Type the friendlyId from the experience's Setup details; recent ones are listed.")
        _errors("friendly_id")


def _identity_field(target: Target) -> None:
    with st.container(key="field_identity"):
        st.segmented_control(
            "Who is the guest?",
            list(_IDENTITY_LABELS),
            key="identity_kind",
            format_func=_IDENTITY_LABELS.__getitem__,
            required=True,
            persist_state="session",
            help="callFlows takes exactly one identity: the browser id a website's cookie holds, an email, or "
            "one identifier (provider and id). The form only sends the one picked here.",
        )
        kind = st.session_state.get("identity_kind") or "browserId"
        if kind == "browserId":
            left, right = st.columns([3, 2], vertical_alignment="bottom")
            left.text_input("Browser ID", key="browser_id", persist_state="session")
            right.button(
                "New ID",
                key="new_browser_id",
                on_click=_new_browser_id,
                args=(target.base_url, target.client_key),
                disabled=not live_call_allowed(target),
                help="Get a fresh browser id from the tenant's browser/create endpoint, as a website does on "
                "a first visit (a new, anonymous guest).",
                icon=":material/add_circle:",
            )
        elif kind == "email":
            st.text_input("Email", key="email", persist_state="session", placeholder="jane@example.com")
        else:
            left, right = st.columns(2)
            left.text_input(
                "Provider", key="identifier_provider", persist_state="session", placeholder="LOYALTY"
            )
            right.text_input("ID", key="identifier_id", persist_state="session", placeholder="LY-123456")
        _errors("identity")


def _params_field() -> list[dict[str, Any]]:
    state = st.session_state
    key = f"params_editor_{state['params_version']}"
    if key not in state and state.get("params_current") not in (None, state["params_base"]):
        state["params_base"] = state["params_current"]  # back from another page: keep the edits
    with st.container(key="field_params"):
        label, helper = st.columns([3, 2], vertical_alignment="bottom")
        label.markdown("**Params**", help=_PARAMS_HELP)
        with helper.popover("UTM helper", icon=":material/campaign:", width="stretch"):
            st.text_input(
                "Landing-page URL",
                key="utm_url",
                placeholder="https://shop.example/?utm_source=google&utm_campaign=spring_trail",
                help="Its utm_* query parameters are copied into params.",
            )
            columns = st.columns(2)
            for i, field in enumerate(UTM_FIELDS):
                columns[i % 2].text_input(f"utm_{field}", key=f"utm_{field}")
            st.radio(
                "Send them as",
                ["nested", "flat"],
                key="utm_style",
                format_func=lambda s: (
                    "params.utm.campaign (Cloud SDK)" if s == "nested" else "params.utm_campaign (Engage SDK)"
                ),
                help="Flows read campaign data where the site's SDK puts it: the Cloud SDK nests it, the "
                "older Engage SDK flattened it. A flow written for one does not see the other.",
            )
            st.button("Add to params", key="utm_add", on_click=_add_utm, icon=":material/add:")
        frame = pd.DataFrame(state["params_base"], columns=["key", "value"], dtype="string")
        edited = st.data_editor(
            frame,
            key=key,
            num_rows="dynamic",
            hide_index=True,
            column_config={
                "key": st.column_config.TextColumn("Key", help="Dotted keys nest: utm.campaign"),
                "value": st.column_config.TextColumn("Value", help="Text, or JSON such as 3 or true"),
            },
        )
        rows = [
            {"key": r.get("key") if isinstance(r.get("key"), str) else "",
             "value": r.get("value") if isinstance(r.get("value"), str) else ""}
            for r in edited.to_dict("records")
        ]  # fmt: skip
        state["params_current"] = rows
        _errors("params")
    return rows


def call_form(target: Target) -> None:
    """Draw the form (values land in session state; ``form_request`` reads them)."""
    flows = flow_catalog(target)
    _flow_field(target, flows)
    left, right = st.columns(2)
    with left, st.container(key="field_channel"):
        st.selectbox(
            "Channel",
            with_current(CHANNELS, st.session_state.get("channel")),
            key="channel",
            format_func=channel_label,
            help=CHANNEL_HELP,
            persist_state="session",
        )
        _errors("channel")
    with right, st.container(key="field_pos"):
        st.selectbox(
            "Point of sale",
            with_current(point_of_sale_options(target), st.session_state.get("pos")),
            index=None,
            key="pos",
            accept_new_options=True,
            placeholder="e.g. myretailsite/ireland",
            help="A point of sale configured in the tenant (Settings → Points of sale).",
            persist_state="session",
        )
        _errors("pos")
    left, right = st.columns(2)
    with left, st.container(key="field_language"):
        st.selectbox(
            "Language",
            with_current(language_options(), st.session_state.get("language")),
            key="language",
            format_func=language_label,
            accept_new_options=True,
            help="ISO 639 code. Sitecore's examples use both EN and en; it is sent as picked.",
            persist_state="session",
        )
        _errors("language")
    with right, st.container(key="field_currency"):
        st.selectbox(
            "Currency",
            with_current(currency_options(), st.session_state.get("currency")),
            key="currency",
            format_func=currency_label,
            accept_new_options=True,
            help="ISO 4217 code, sent as currencyCode.",
            persist_state="session",
        )
        _errors("currency")
    _identity_field(target)
    _params_field()
    with st.expander("Advanced"):
        st.text_input(
            "Variant field (JSON path)",
            key="variant_path",
            placeholder="variant, or decisionOffers[0].name",
            help="Where the response names its variant. Empty: a 'variant' field, else a fingerprint of the "
            "offers or the body.",
            persist_state="session",
        )


def form_request(target: Target) -> CallFlowRequest:
    """The request the form describes; ``RequestValidationError`` lists every problem (params included)."""
    state = st.session_state
    problems: list[FieldProblem] = []
    try:
        params = rows_to_params(state.get("params_current") or [])
    except RequestValidationError as exc:
        problems.extend(exc.problems)
        params = {}
    kind = state.get("identity_kind") or "browserId"
    fields: dict[str, Any] = {
        "clientKey": target.client_key,
        "friendlyId": state.get("friendly_id") or "",
        "channel": state.get("channel") or "",
        "pointOfSale": state.get("pos") or "",
        "language": state.get("language") or None,
        "currencyCode": state.get("currency") or None,
        "params": params,
    }
    if kind == "browserId":
        fields["browserId"] = state.get("browser_id") or ""
    elif kind == "email":
        fields["email"] = state.get("email") or ""
    else:
        fields["identifiers"] = {
            "provider": state.get("identifier_provider") or "",
            "id": state.get("identifier_id") or "",
        }
    missing = _missing_identity(kind, fields)
    if missing:
        problems.append(FieldProblem("identity", missing))
    try:
        request = CallFlowRequest.build(**fields)
    except RequestValidationError as exc:
        # the model says "give one of browserId, email or identifiers" only once other fields pass
        problems.extend(
            p for p in exc.problems if not (missing and _SLOTS.get(p.field.split(".")[0]) == "identity")
        )
        raise RequestValidationError(problems) from None
    if problems:
        raise RequestValidationError(problems)
    return request


def _missing_identity(kind: str, fields: Mapping[str, Any]) -> str:
    if kind == "browserId" and not str(fields.get("browserId") or "").strip():
        return "enter a browser ID, or press New ID to get a fresh one (a first-time visitor)"
    if kind == "email" and not str(fields.get("email") or "").strip():
        return "enter the guest's email address"
    ident = fields.get("identifiers") or {}
    if kind == "identifiers" and not (
        str(ident.get("provider", "")).strip() and str(ident.get("id", "")).strip()
    ):
        return "enter both the identifier's provider (e.g. LOYALTY) and its id"
    return ""


def send(target: Target, request: CallFlowRequest, *, label: str = "") -> Preview:
    """Run one preview on the target, remember it in the history, and return it."""
    admin = sandbox_admin(target.base_url) if target.is_sandbox else None
    preview = run_preview(
        request,
        base_url=target.base_url,
        target_name=target.name,
        is_sandbox=target.is_sandbox,
        label=label,
        variant_path=str(st.session_state.get("variant_path") or "") or None,
        timeout=timeout_s(),
        client=flow_client(target.base_url, timeout_s()),
        admin=admin,
    )
    history.remember(preview)
    if not target.is_sandbox and preview.response is not None:
        try:
            TargetStore().remember_friendly_id(target.name, request.friendly_id)
        except FlowLabError:
            pass  # a read-only data dir must not spoil the preview
    return preview


def submit(target: Target, persona: Persona | None) -> None:
    """The Call button: validate, send, and keep the result (and any field problems) for the next run."""
    state = st.session_state
    try:
        request = form_request(target)
    except RequestValidationError as exc:
        state["form_problems"] = _group(exc.problems)
        state["preview"] = None
        return
    preview = send(target, request, label=persona.name if persona else "")
    state["preview"] = preview
    advice = preview.advice
    slot = _SLOTS.get(advice.field or "", "") if advice is not None else ""
    state["form_problems"] = {slot: [advice.title]} if advice is not None and slot else {}


def _save_persona(target: Target) -> None:
    state = st.session_state
    name = str(state.get("save_persona_name") or "").strip()
    if not name:
        state["save_persona_result"] = ("error", "Give the persona a name.")
        return
    try:
        request = form_request(target)
        persona = Persona.from_request(name, request, str(state.get("save_persona_description") or ""))
        PersonaStore().save(persona)
    except RequestValidationError as exc:
        state["form_problems"] = _group(exc.problems)
        state["save_persona_result"] = ("error", "Fix the form first: the persona is saved from it.")
        return
    except FlowLabError as exc:
        state["save_persona_result"] = ("error", str(exc))
        return
    state["save_persona_result"] = ("success", f"Saved persona '{name}'.")
    state["persona"] = name


def save_persona_popover(target: Target) -> None:
    """Save the form's guest as a persona (identity, POS, channel, language, currency, params)."""
    with st.popover("Save as persona", icon=":material/person_add:", width="stretch"):
        st.text_input("Name", key="save_persona_name", placeholder="Gold member, Munich, mobile")
        st.text_area("Description", key="save_persona_description", height=68)
        st.button("Save persona", key="save_persona", on_click=_save_persona, args=(target,))
        kind, message = st.session_state.get("save_persona_result", ("", ""))
        if kind == "success":
            st.success(plain(message))
        elif kind == "error":
            st.error(plain(message))
