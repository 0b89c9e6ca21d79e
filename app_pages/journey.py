"""Journey: a sequence of hits and clock steps on the sandbox, and on which hit each audience shows up."""

from __future__ import annotations

import streamlit as st

from flowlab.errors import ConfigError, FlowLabError
from flowlab.workbench.edge_preview import DEMO_IDENTITY, edge_advice
from flowlab.workbench.journey import Journey, play_journey, preset_journey
from ui.edge_journey import STEP_KINDS, preset_table, show_journey, steps_from_table
from ui.errors import show_advice
from ui.target import current_target, page_header

target = current_target()
page_header(
    "Journey",
    "Same-page, next-page, next-session: play hits and clock steps, see on which hit each audience appears.",
    target,
)
if not target.is_edge:
    st.info(
        "The journey plays AEP Edge interact calls; pick **AEP Edge** in the sidebar to use it.",
        icon=":material/swap_horiz:",
    )
    st.page_link("app_pages/edge_preview.py", label="Open Edge preview", icon=":material/person_search:")
    st.stop()
if not target.is_sandbox:
    st.info(
        "A journey needs the sandbox's simulated clock (POST /sandbox/edge/clock) to make minutes and days "
        "pass in seconds; a live org has none. Pick the built-in sandbox under AEP Edge.",
        icon=":material/schedule:",
    )
    st.stop()

left, right = st.columns([9, 11], gap="large")
with left:
    ns, ident = st.columns([1, 2])
    ns.text_input("Namespace", value=DEMO_IDENTITY[0], key="journey_namespace")
    ident.text_input("Identity", value=DEMO_IDENTITY[1], key="journey_identity")
    st.caption(
        "Preset: *Lena checks out, then buys*. Edit the steps; a wait is +2 min, +10 min, +1 h or next day."
    )
    table = st.data_editor(
        preset_table(preset_journey()),
        key="journey_steps",
        num_rows="dynamic",
        hide_index=True,
        width="stretch",
        column_config={
            "step": st.column_config.SelectboxColumn("Step", options=STEP_KINDS, required=True),
            "wait": st.column_config.TextColumn("Wait"),
            "page_url": st.column_config.TextColumn("Page URL"),
            "order_total": st.column_config.NumberColumn("Order total", min_value=0.0, format="%.2f"),
        },
    )
    st.toggle("Send without token (audiences only)", key="journey_no_token")
    st.checkbox(
        "Reset the sandbox first (demo data and clock back to the start, so a replay gives the same answer)",
        value=True,
        key="journey_reset",
    )
    play = st.button("Play", key="journey_play", type="primary", icon=":material/play_arrow:")

with right:
    if play:
        try:
            steps = steps_from_table(table)
        except ValueError as exc:
            st.error(f"Nothing was played: {exc}", icon=":material/error:")
            steps = []
        if steps:
            bar = st.progress(0.0, text="Playing…")
            try:
                st.session_state["journey"] = play_journey(
                    steps,
                    base_url=target.base_url,
                    identity=(
                        str(st.session_state.get("journey_namespace") or "").strip(),
                        str(st.session_state.get("journey_identity") or "").strip(),
                    ),
                    authenticated=not st.session_state.get("journey_no_token"),
                    reset=bool(st.session_state.get("journey_reset")),
                    on_step=lambda i, s: bar.progress(i / len(steps), text=f"Step {i + 1}: {s.label}"),
                )
                st.session_state.pop("journey_error", None)
            except (ConfigError, FlowLabError) as exc:
                st.session_state.pop("journey", None)
                st.session_state["journey_error"] = edge_advice(exc)
            bar.empty()
    if "journey_error" in st.session_state:
        show_advice(st.session_state["journey_error"])
    journey = st.session_state.get("journey")
    if isinstance(journey, Journey):
        show_journey(journey)
    elif "journey_error" not in st.session_state:
        st.info(
            "Press **Play**: each hit is one interact call, each wait moves the sandbox's clock. The chart shows "
            "which audience appears on which hit.",
            icon=":material/arrow_back:",
        )
