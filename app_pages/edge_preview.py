"""Edge preview: which audiences is this person in, which attributes come back, and why? One interact call."""

from __future__ import annotations

import streamlit as st

from flowlab.errors import ConfigError, FlowLabError
from flowlab.workbench.edge_preview import EdgePreview, run_edge_preview
from ui.edge_form import edge_fields, edge_form, prepare_edge_form
from ui.edge_response import show_edge_preview
from ui.target import current_target, edge_client, live_call_allowed, page_header, sandbox_admin

target = current_target()
page_header(
    "Edge preview",
    "Which audiences is this person in, on this very page, and why? Pick a profile and an event, press Call Edge."
    if target.is_sandbox
    else "Which audiences and attributes does AEP Edge return for this identity? Fill in the form, press Call Edge.",
    target,
)
if not target.is_edge:
    st.info(
        "Edge preview calls AEP Edge's interact API; for Sitecore flows use Preview. Pick **AEP Edge** in the "
        "sidebar to use this page.",
        icon=":material/swap_horiz:",
    )
    st.page_link("app_pages/preview.py", label="Open Preview", icon=":material/visibility:")
    st.stop()

prepare_edge_form(target)
form, result = st.columns([9, 11], gap="large")
with form:
    edge_form(target)

with result:
    allowed = live_call_allowed(target)
    pressed = st.button(
        "Call Edge",
        key="edge_call",
        type="primary",
        icon=":material/play_arrow:",
        width="stretch",
        disabled=not allowed,
        help=None if allowed else "Acknowledge the live-target warning in the sidebar first.",
    )
    authenticated = not st.session_state.get("edge_no_token")
    credentials = None
    if pressed:
        try:
            client = edge_client(target, authenticated=authenticated)
            credentials = client.credentials
            st.session_state["edge_preview"] = run_edge_preview(
                client,
                edge_fields(),
                target_name=target.name,
                is_sandbox=target.is_sandbox,
                admin=sandbox_admin(target.base_url) if target.is_sandbox else None,
            )
        except (ConfigError, FlowLabError) as exc:  # no secret, a bad target: say what to fix
            st.session_state["edge_preview"] = EdgePreview(
                request=None,
                base_url=target.base_url,
                datastream_id=target.datastream_id,
                authenticated=authenticated,
                target_name=target.name,
                error=exc,
            )
    preview = st.session_state.get("edge_preview")
    if isinstance(preview, EdgePreview):
        if credentials is None and preview.authenticated:
            try:
                credentials = edge_client(target, authenticated=True).credentials
            except (ConfigError, FlowLabError):
                credentials = None
        show_edge_preview(preview, key="edge_preview", credentials=credentials)
    else:
        st.info(
            "**Lena Vogel** with a checkout is filled in: press **Call Edge** to see her audiences per "
            "destination, her attributes and, on the sandbox, why. Toggle *Send without token* to see what the "
            "unauthenticated edge call loses."
            if target.is_sandbox
            else "Enter an identity and press **Call Edge**.",
            icon=":material/arrow_upward:",
        )
