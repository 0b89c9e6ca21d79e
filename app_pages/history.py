"""History: every call of this session, newest first, with one-click re-run and export."""

from __future__ import annotations

import streamlit as st

from ui import history
from ui.history_view import show_entries, show_exports
from ui.target import current_target, page_header, sitecore_only

target = current_target()
page_header("History", "Every call of this session, newest first: re-run one, or export them.", target)
sitecore_only(target, "History")
previews = history.entries()
if previews:
    show_exports(previews)
    show_entries(previews)
else:
    st.info("No calls yet: the Preview and Compare pages add every call here.", icon=":material/history:")
