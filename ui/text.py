"""Untrusted text in Streamlit markdown: names, messages and values from flows, offers and API errors.

``st.markdown``, ``st.error`` and friends read Markdown (and Streamlit's ``:red[…]`` directives), so text
that came from a tenant is escaped before it is shown: it reads the same, and it cannot become a link,
an image or a coloured directive.
"""

from __future__ import annotations

import re

__all__ = ["code", "plain"]

_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|>~:$<&])")


def plain(text: object) -> str:
    """``text`` with every Markdown special character escaped, so it shows literally."""
    return _SPECIAL.sub(r"\\\1", str(text))


def code(text: object) -> str:
    """``text`` as an inline code span (backslash escapes do not work inside one, so backticks go)."""
    return "`" + str(text).replace("`", "'").replace("\n", " ") + "`"
