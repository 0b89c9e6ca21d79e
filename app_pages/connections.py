"""Connections: test a sandbox connection with its example inputs, read the exchange, copy it as curl or Postman."""

from __future__ import annotations

import streamlit as st

from ui.connections_view import show_connections
from ui.target import current_target, page_header, sandbox_admin, sandbox_target

target = current_target()
page_header(
    "Connections",
    "The data systems and destinations the sandbox's decision models and flows call: pick one, fill its inputs "
    "(example values prefilled), send, and see the request, the response, the mapped outputs and the time it "
    "took; copy the request as curl or a Postman collection, secrets as variables.",
    target,
)
if not target.is_sandbox:
    st.info(
        "Connections are a sandbox tool: Sitecore's API has no route that calls a tenant's connection, so this "
        "page tests them on the built-in sandbox (import your export there).",
        icon=":material/info:",
    )
show_connections(sandbox_admin(sandbox_target().base_url))
