"""The request inspector: the exact request (URL, headers, body) and copies for curl, Python and Postman.

Exports are built by ``flowlab.personalize.export`` from the same request object that was sent, so what works here
works in a terminal. The client key is public (reference §1.4); no secret is part of a callFlows request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import streamlit as st

from flowlab.http import USER_AGENT
from flowlab.personalize.export import to_curl, to_postman, to_python
from flowlab.personalize.models import CallFlowRequest

__all__ = ["show_request"]


def show_request(
    request: CallFlowRequest,
    base_url: str,
    *,
    key: str,
    sent_headers: Mapping[str, str] | None = None,
) -> None:
    """Method, URL, headers and body, then curl / Python / Postman tabs (``key`` keeps widgets unique)."""
    url = base_url.rstrip("/") + "/v2/callFlows"
    st.markdown(f"**POST** `{url}`")
    headers = dict(sent_headers or {})
    if not headers:
        headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": USER_AGENT}
    curl_tab, python_tab, headers_tab, postman_tab = st.tabs(
        ["curl", "Python", "Headers and body", "Postman"]
    )
    with curl_tab:
        st.caption("Copy with the button in the corner; it runs as is in a terminal.")
        st.code(to_curl(request, base_url), language="bash")
    with python_tab:
        st.code(to_python(request, base_url), language="python")
    with headers_tab:
        st.code("\n".join(f"{k}: {v}" for k, v in headers.items()), language="http")
        st.code(json.dumps(request.to_body(), indent=2, ensure_ascii=False), language="json")
    with postman_tab:
        st.caption("A Postman v2.1 collection with {{baseUrl}} and {{clientKey}} variables.")
        collection = to_postman(request, base_url, name=f"Flow Lab · {request.friendly_id}")
        st.download_button(
            "Download Postman collection",
            json.dumps(collection, indent=2, ensure_ascii=False),
            file_name=f"flowlab-{request.friendly_id.rstrip('*')}.postman_collection.json",
            mime="application/json",
            key=f"{key}_postman",
            icon=":material/download:",
        )
