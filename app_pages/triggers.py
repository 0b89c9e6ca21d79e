"""Triggers: fire an event or close a session for a persona, and watch triggered flows deliver (#11)."""

from __future__ import annotations

import streamlit as st

from ui.target import current_target, page_header, sandbox_admin, sandbox_target
from ui.triggers_view import show_triggers

target = current_target()
page_header(
    "Triggers",
    "Triggered experiences run when something happens to a guest, not when a page asks: pick a persona, send an "
    "event (VIEW, IDENTITY, a custom type) or close their session, and watch the deliveries reach the "
    "destination with the bodies the flows rendered.",
    target,
)
if not target.is_sandbox:
    st.info(
        "Triggers are a sandbox tool: this page fires events on the built-in sandbox, never on your tenant.",
        icon=":material/info:",
    )
show_triggers(sandbox_admin(sandbox_target().base_url))
