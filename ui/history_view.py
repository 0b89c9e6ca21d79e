"""The History page's pieces: exports, and one row per call with re-run, load-into-form and details."""

from __future__ import annotations

import streamlit as st

from flowlab.workbench.personas import Persona, PersonaError
from flowlab.workbench.preview import Preview
from ui import history
from ui.form import load_persona
from ui.response import show_preview
from ui.text import code, plain

__all__ = ["show_entries", "show_exports"]


def _allowed(preview: Preview) -> bool:
    return preview.is_sandbox or bool(st.session_state.get(f"live_ack::{preview.target_name}"))


def _rerun(preview: Preview) -> None:
    fresh = history.rerun(preview)
    st.session_state["preview"] = fresh
    variant = f", variant {fresh.variant.label}" if fresh.variant else ""
    st.session_state["history_message"] = (
        f"Re-ran {preview.request.friendly_id}: {fresh.status_text}{variant}."
    )


def _load(preview: Preview) -> None:
    try:
        persona = Persona.from_request(preview.label or "(from history)", preview.request)
    except PersonaError:
        return
    load_persona(persona)
    state = st.session_state
    state["friendly_id"] = preview.request.friendly_id
    state["variant_path"] = preview.variant_path or ""
    state["persona"] = ""
    state["target_name"] = preview.target_name
    state["preview"] = preview
    state["history_goto_preview"] = True


def show_exports(previews: list[Preview]) -> None:
    message = st.session_state.pop("history_message", None)
    if message:
        st.success(plain(message), icon=":material/replay:")
    if st.session_state.pop("history_goto_preview", False):
        st.switch_page("app_pages/preview.py")
    left, right, _ = st.columns([1, 1, 2])
    left.download_button(
        "Export as JSON",
        history.export_json(previews),
        file_name="flowlab-history.json",
        mime="application/json",
        key="history_export_json",
        icon=":material/download:",
        width="stretch",
        help="Every call: the exact request, status, latency, variant, offers and (sandbox) why.",
    )
    right.download_button(
        "Export as Postman collection",
        history.export_postman(previews),
        file_name="flowlab-history.postman_collection.json",
        mime="application/json",
        key="history_export_postman",
        icon=":material/download:",
        width="stretch",
        help="The requests sent to the newest call's target.",
    )


def show_entries(previews: list[Preview]) -> None:
    for preview in previews:
        stamp = preview.at.strftime("%H%M%S%f")
        variant = preview.variant.label if preview.variant is not None else "—"
        with st.container(border=True, key=f"history_entry_{stamp}"):
            text, rerun, load = st.columns([6, 1.3, 1.7], vertical_alignment="center")
            text.markdown(
                f"**{preview.at.strftime('%H:%M:%S')} UTC** · {plain(preview.who)} → {code(preview.request.friendly_id)}"
                f" · **{plain(preview.status_text)}** · variant **{plain(variant)}**  \n"
                f":gray[{plain(preview.target_name)} · {len(preview.offers)} offer(s)]"
            )
            rerun.button(
                "Re-run",
                key=f"history_rerun_{stamp}",
                on_click=_rerun,
                args=(preview,),
                icon=":material/replay:",
                disabled=not _allowed(preview),
                width="stretch",
            )
            load.button(
                "Open in Preview",
                key=f"history_load_{stamp}",
                on_click=_load,
                args=(preview,),
                icon=":material/edit:",
                width="stretch",
            )
            with st.expander("Details"):
                show_preview(preview, key=f"history_{stamp}")
