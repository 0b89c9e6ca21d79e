"""Batch run: call one flow for every guest of a sample, in the background, with live progress."""

from __future__ import annotations

import streamlit as st

from ui import runs
from ui.batch_view import (
    datastream_picker,
    edge_start_button,
    flow_picker,
    run_settings,
    simulate_switch,
    start_button,
)
from ui.run_view import past_runs, run_panel
from ui.sample_view import edge_sample_picker, sample_picker
from ui.target import current_target, page_header

target = current_target()
page_header(
    "Batch run",
    "Run one flow for thousands of guests and keep one row per guest: what each variant served, how fast, "
    "and what failed. Runs continue in the background; cancel and resume at any time.",
    target,
)

guests, flow = st.columns(2, gap="large")
if target.is_edge:  # AEP Edge: identities, a datastream, the same runner, progress and run store
    with guests:
        st.subheader("1 · Identities")
        sample = edge_sample_picker(target)
    with flow:
        st.subheader("2 · Datastream and options")
        datastream, authenticated = datastream_picker(target)
        options = run_settings(edge=True)
        edge_start_button(target, sample, datastream, authenticated, options)
else:
    with guests:
        st.subheader("1 · Guests")
        sample = sample_picker(target)
    with flow:
        st.subheader("2 · Flow and options")
        simulate = simulate_switch(target)  # simulate before you publish: DRAFT and PAUSED flows too
        friendly_id = flow_picker(target, any_status=simulate)
        options = run_settings()
        start_button(target, sample, friendly_id, options, simulate=simulate)

st.subheader("3 · Run")
current = runs.current_run()
run_panel(current, target, options.pacing())

st.subheader("Past runs")
past_runs(current)
