"""Flow Lab: the router. Page config, navigation over app_pages/, and the sidebar's target picker."""

from __future__ import annotations

import streamlit as st

from ui.target import target_sidebar

st.set_page_config(page_title="Flow Lab", page_icon="🧪", layout="wide")

# One line per page; add new pages here (title and icon show in the navigation).
PAGES = [
    st.Page("app_pages/preview.py", title="Preview", icon=":material/visibility:", default=True),
    st.Page("app_pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("app_pages/history.py", title="History", icon=":material/history:"),
    st.Page("app_pages/sandbox.py", title="Sandbox", icon=":material/science:"),
    st.Page("app_pages/batch.py", title="Batch run", icon=":material/playlist_play:"),
    st.Page("app_pages/analysis.py", title="Analysis", icon=":material/analytics:"),
]

navigation = st.navigation(PAGES)
target_sidebar()
navigation.run()
