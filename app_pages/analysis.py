"""Analysis: is the split healthy, which variant converts better and by how much, and what each one served."""

from __future__ import annotations

import streamlit as st

from ui import runs
from ui.analysis_view import (
    load_analysis,
    run_picker,
    show_breakdown,
    show_compare,
    show_detection,
    show_edge_analysis,
    show_errors,
    show_latency,
    show_offers,
    show_outcomes,
    show_overview,
    show_planning,
    show_split,
    show_table,
)
from ui.target import current_target, page_header

page_header(
    "Analysis",
    "One batch run. Sitecore flows: split health, conversion and lift per variant, the sample it needs, "
    "breakdowns, offers, latency and the timeout budget. AEP Edge: audience membership by any dimension, "
    "attributes and latency. Errors for both.",
    current_target(),
)
record = run_picker()
if record is None:
    st.info("No runs yet: start one on the Batch run page.", icon=":material/info:")
    st.page_link("app_pages/batch.py", label="Go to Batch run", icon=":material/play_arrow:")
    st.stop()
if runs.is_edge(record):
    show_edge_analysis(record)  # AEP Edge: audience membership, not variants
    st.stop()
analysis = load_analysis(record)
show_overview(analysis)

st.subheader("Split health")
show_split(analysis)
st.subheader("Conversion and lift")
show_outcomes(analysis)
st.subheader("Is the experiment big enough?")
show_planning(analysis)
st.subheader("Breakdown")
show_breakdown(analysis)

offers, latency, errors, detection, table, compare = st.tabs(
    ["Offers", "Latency", "Errors", "Detection", "Run table", "Compare runs"]
)
with offers:
    show_offers(analysis)
with latency:
    show_latency(analysis)
with errors:
    show_errors(analysis)
with detection:
    show_detection(analysis)
with table:
    show_table(analysis)
with compare:
    show_compare(analysis)
