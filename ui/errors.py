"""The error banner: what went wrong, in the API's words, and what to fix. Never a traceback."""

from __future__ import annotations

import streamlit as st

from flowlab.workbench.advice import Advice
from ui.text import plain

__all__ = ["show_advice"]


def show_advice(advice: Advice) -> None:
    """One red box: the title in bold, the API's detail, then the next step."""
    lines = [f"**{plain(advice.title)}**"]
    if advice.detail:
        lines.append(plain(advice.detail))
    if advice.fix:
        lines.append(f"**What to do:** {plain(advice.fix)}")
    st.error("  \n".join(lines), icon=":material/error:")
