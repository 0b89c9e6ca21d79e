"""Flow Lab: the router. Page config, navigation over pages/, and the sidebar's target label."""

from __future__ import annotations

import streamlit as st

from ui.target import current_target, target_badge

st.set_page_config(page_title="Flow Lab", page_icon="🧪", layout="wide")

pages = [
    st.Page("pages/preview.py", title="Preview", icon="🎯", default=True),
]
navigation = st.navigation(pages)
target_badge(current_target())
navigation.run()
