"""Sandbox: what the offline tenant holds (flows, decision tables, offers, guests), loading JSON, importing an
export folder (zip), reset, replay."""

from __future__ import annotations

import streamlit as st

from ui.sandbox_view import (
    show_flows,
    show_guests,
    show_import,
    show_load,
    show_models,
    show_offers,
    show_overview,
    show_replay,
)
from ui.target import current_target, page_header, sandbox_admin, sandbox_server, sandbox_target

target = current_target()
sandbox = target if target.is_sandbox else sandbox_target()
page_header(
    "Sandbox",
    "The offline tenant the app starts with: browse its flows, decision tables, offers and guests, load "
    "your own flow or offer from JSON, import a Sitecore export folder (zip), or reset it to the demo data.",
    target,
)
if not target.is_sandbox:
    st.info("Your target is a live tenant; this page shows the built-in sandbox.", icon=":material/info:")
admin = sandbox_admin(sandbox.base_url)
show_overview(admin)
flows, models, offers, guests, load, imports, replay = st.tabs(
    ["Flows", "Decision models", "Offers", "Guests", "Load JSON", "Import export", "Replay"]
)
with flows:
    show_flows(admin)
with models:
    show_models(admin)
with offers:
    show_offers(admin)
with guests:
    show_guests(admin)
with load:
    show_load(admin)
with imports:
    show_import(admin)
with replay:
    show_replay(admin, sandbox_server().replay_problem if sandbox.builtin else "")
