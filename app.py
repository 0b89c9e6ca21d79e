"""Flow Lab: the router. Page config, navigation over app_pages/, and the sidebar's target picker."""

from __future__ import annotations

import importlib
import sys
import threading

import streamlit as st

from ui.target import target_sidebar

# The Analysis page's modules (altair, scipy.special, pyarrow.parquet: ~1 s to import, more on a busy
# machine) are imported in the background on the app's first run, so a first visit to the page pays for
# the run it shows, not for imports (#8, bench/analysis_page.py). Python's import lock makes a page that
# needs them meanwhile wait for the same import, never import twice.
_WARM = ("ui.analysis_view", "pyarrow.parquet")
if not all(name in sys.modules for name in _WARM) and not any(
    t.name == "flowlab-warm-imports" for t in threading.enumerate()
):
    threading.Thread(
        target=lambda: [importlib.import_module(name) for name in _WARM],
        name="flowlab-warm-imports",
        daemon=True,
    ).start()

st.set_page_config(page_title="Flow Lab", page_icon="🧪", layout="wide")

# One line per page; add new pages here (title and icon show in the navigation).
PAGES = [
    st.Page("app_pages/preview.py", title="Preview", icon=":material/visibility:", default=True),
    st.Page("app_pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("app_pages/history.py", title="History", icon=":material/history:"),
    st.Page("app_pages/edge_preview.py", title="Edge preview", icon=":material/person_search:"),
    st.Page("app_pages/journey.py", title="Journey", icon=":material/timeline:"),
    st.Page("app_pages/sandbox.py", title="Sandbox", icon=":material/science:"),
    st.Page("app_pages/connections.py", title="Connections", icon=":material/cable:"),
    st.Page("app_pages/triggers.py", title="Triggers", icon=":material/bolt:"),
    st.Page("app_pages/batch.py", title="Batch run", icon=":material/playlist_play:"),
    st.Page("app_pages/analysis.py", title="Analysis", icon=":material/analytics:"),
]

navigation = st.navigation(PAGES)
target_sidebar()
navigation.run()
