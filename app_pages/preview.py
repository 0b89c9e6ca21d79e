"""Preview: what will this guest see, and why? One call, shown as offer cards, JSON, variant and reasons."""

from __future__ import annotations

import streamlit as st

from ui.form import (
    call_form,
    general_problems,
    missing_fields,
    persona_picker,
    prepare_form,
    save_persona_popover,
    submit,
)
from ui.response import show_preview
from ui.target import current_target, live_call_allowed, page_header, sitecore_only
from ui.text import plain

target = current_target()
page_header(
    "Preview",
    "What will this guest see, and why? Pick a persona, press Call flow."
    if target.is_sandbox
    else "What will this guest see? Fill in the flow, point of sale and guest, press Call flow.",
    target,
)
sitecore_only(target, "Preview")

prepare_form(target)
form, result = st.columns([9, 11], gap="large")
with form:
    persona = persona_picker(target)
    call_form(target)

with result:  # the actions head the result column: on screen beside the persona, however long the form
    call, save = st.columns(2)
    if call.button(
        "Call flow",
        key="call",
        type="primary",
        icon=":material/play_arrow:",
        width="stretch",
        disabled=not live_call_allowed(target),
        help=None
        if live_call_allowed(target)
        else "Acknowledge the live-tenant warning in the sidebar first.",
    ):
        submit(target, persona)
        st.rerun()
    with save:
        save_persona_popover(target)
    preview = st.session_state.get("preview")
    missing = missing_fields(target)
    if preview is not None:
        show_preview(preview, key="preview")
    elif st.session_state.get("form_problems"):
        st.error("Nothing was sent: fix the fields marked in the form.", icon=":material/error:")
        for message in general_problems():
            st.error(plain(message), icon=":material/error:")
    elif missing:
        need = ", ".join(missing[:-1]) + (" and " if len(missing) > 1 else "") + missing[-1]
        st.info(
            f"To call {'the sandbox' if target.is_sandbox else 'this tenant'}, fill in {need}, then press "
            "**Call flow**. You will see the offers the guest gets, the exact JSON and the variant"
            + (" and, on the sandbox, why." if target.is_sandbox else ".")
            + ("" if target.is_sandbox else " Recent friendlyIds of this tenant are listed under Flow."),
            icon=":material/arrow_back:",
        )
    else:
        who = f"**{plain(persona.name)}**" if persona is not None else "This guest"
        st.info(
            f"{who} is filled in: press **Call flow** to see the offers the guest gets, the exact JSON, the "
            "variant" + (" and why. Pick another persona, or change any field, to try someone else."
                         if target.is_sandbox else "."),
            icon=":material/arrow_upward:",
        )  # fmt: skip
