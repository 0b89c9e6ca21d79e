"""The Connections page's sections: pick a connection, fill its inputs, send, read the exchange, copy it (#11)."""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from flowlab import SandboxAdmin
from flowlab.errors import FlowLabError
from flowlab.workbench.advice import advise
from flowlab.workbench.connections import (
    auth_type,
    connection_inputs,
    connection_rows,
    export_request,
    input_values,
    output_rows,
    route_help,
    routing_text,
    to_curl,
    to_postman,
)
from ui.errors import show_advice
from ui.text import code, plain

__all__ = ["show_connections"]

_RESULT = "connections_result"


def show_connections(admin: SandboxAdmin) -> None:
    """The whole page below the header: the table, the picker, the inputs, the exchange and the exports."""
    try:
        connections = admin.connections()
    except FlowLabError as exc:
        show_advice(advise(exc))
        return
    if not connections:
        st.info(
            "The sandbox has no connections yet. Import a Sitecore export folder (zip) on the Sandbox page's "
            "**Import export** tab, post one to `POST /sandbox/connections`, or start the sandbox with "
            "`python -m flowlab sandbox --load DIR`.",
            icon=":material/cable:",
        )
        st.page_link("app_pages/sandbox.py", label="Open the Sandbox page", icon=":material/science:")
        return
    st.dataframe(connection_rows(connections), hide_index=True, width="stretch", key="connections_table")
    by_ref = {str(c.get("ref")): c for c in connections}
    ref = st.selectbox(
        "Connection",
        list(by_ref),
        format_func=lambda r: str(by_ref[r].get("name") or r),
        key="connections_pick",
    )
    connection = by_ref.get(str(ref))
    if connection is None:
        return
    _describe(connection)
    values = _inputs(connection)
    send = st.button("Send", key="connections_send", type="primary", icon=":material/send:")
    if send:
        try:
            result = admin.test_connection(str(ref), values)
        except FlowLabError as exc:
            show_advice(advise(exc))
        else:
            st.session_state[_RESULT] = {"ref": ref, "result": result}
    shown = st.session_state.get(_RESULT)
    if shown and shown.get("ref") == ref:
        _exchange(connection, shown["result"])
    _copy(connection, values, admin.base_url)
    _routing(admin, connection)


def _describe(connection: dict[str, Any]) -> None:
    request = connection.get("request") or {}
    if connection.get("description"):
        st.caption(plain(connection["description"]))
    system = str(connection.get("systemType") or "").replace("_", " ").lower()
    timeouts = f"connect {connection.get('connectionTimeout', 1000)} ms, read {connection.get('socketTimeout', 1000)} ms"
    st.markdown(
        f"{code(str(request.get('requestType') or 'GET') + ' ' + str(request.get('connectionUrl') or ''))}  \n"
        f"{plain(system)} · auth {code(auth_type(connection))} · {plain(timeouts)}  \n"
        f"Calls go to {plain(routing_text(connection.get('routing')))}"
    )


def _inputs(connection: dict[str, Any]) -> dict[str, Any]:
    """One text field per input, prefilled with its ``exampleValue``; the values to send."""
    inputs = connection_inputs(connection)
    if not inputs:
        st.caption("This connection takes no inputs.")
        return {}
    st.markdown("**Inputs** (prefilled with each input's example value)")
    columns = st.columns(min(3, len(inputs)))
    texts = {}
    for i, item in enumerate(inputs):
        texts[item.key] = columns[i % len(columns)].text_input(
            f"{item.label} ({item.key})",
            value=item.example,
            key=f"connections_input::{connection.get('ref')}::{item.key}",
            help=f"{item.type}, used in the {item.where}",
        )
    return input_values(inputs, texts)


def _exchange(connection: dict[str, Any], result: dict[str, Any]) -> None:
    response = result.get("response") or {}
    status, latency, via = st.columns(3)
    status.metric("Status", response.get("status") or "no answer")
    latency.metric("Latency", f"{float(result.get('latencyMs') or 0):,.0f} ms")
    via.metric("Went to", str(result.get("via") or "—"))
    if result.get("error"):
        st.error(plain(f"The call failed: {result['error']}"), icon=":material/error:")
    sent, answer, outputs = st.tabs(["Request", "Response", "Mapped outputs"])
    request = result.get("request") or {}
    with sent:
        st.caption("What the sandbox sent, secrets masked.")
        st.code(f"{request.get('method')} {request.get('url')}", language="http", wrap_lines=True)
        _headers(request.get("headers") or {}, "connections_request_headers")
        if request.get("body") is not None:
            _body(request["body"])
    with answer:
        _headers(response.get("headers") or {}, "connections_response_headers")
        if response.get("body") is not None:
            _body(response["body"])
    with outputs:
        rows = output_rows(connection, result.get("outputs") or {})
        if rows:
            st.caption("What a decision model's connection node gets, by output reference.")
            st.table(rows, border="horizontal")
        else:
            st.caption("No mapped outputs (the connection maps none, or the call failed).")
        if result.get("outputs"):
            with st.expander("Outputs (JSON)"):
                st.json(result["outputs"], expanded=3)


def _headers(headers: dict[str, Any], key: str) -> None:
    if headers:
        rows = [{"header": k, "value": v} for k, v in headers.items()]
        st.dataframe(rows, hide_index=True, width="stretch", key=key)


def _body(body: Any) -> None:
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            st.code(body, wrap_lines=True)
            return
    st.json(body, expanded=2)


def _copy(connection: dict[str, Any], values: dict[str, Any], sandbox_url: str) -> None:
    st.subheader("Copy the request")
    target = st.segmented_control(
        "Address",
        ["the real system", "where the sandbox sends it"],
        default="the real system",
        required=True,
        key="connections_copy_target",
        help="The real system: the URL as the connection writes it. Where the sandbox sends it: its mock "
        "(served over HTTP by the sandbox) or the route you set.",
    )
    routed = target == "where the sandbox sends it"
    request = export_request(connection, values, routed=routed, sandbox_url=sandbox_url)
    secrets = [f"{{{{{v}}}}}" for v in request.variables]
    st.caption(
        "Secrets are never written out: "
        + (
            ", ".join(code(s) for s in secrets) + " are variables to fill in (shell variables in curl)."
            if secrets
            else "this request carries none."
        )
    )
    curl, postman = st.tabs(["curl", "Postman"])
    with curl:
        st.code(to_curl(request), language="bash", wrap_lines=True)
    with postman:
        collection = json.dumps(to_postman(request), indent=2, ensure_ascii=False)
        st.download_button(
            "Download Postman collection",
            collection,
            file_name=f"flowlab-{request.name.lower().replace(' ', '-')}.postman_collection.json",
            mime="application/json",
            key="connections_postman",
            icon=":material/download:",
        )
        with st.expander("Collection (JSON)"):
            st.code(collection, language="json")


def _routing(admin: SandboxAdmin, connection: dict[str, Any]) -> None:
    ref = str(connection.get("ref") or "")
    with st.expander("Where the calls go, and how to route them elsewhere", icon=":material/alt_route:"):
        st.markdown(f"Now: {plain(routing_text(connection.get('routing')))}.")
        st.markdown(route_help(connection, admin.base_url))
        left, right, back = st.columns([3, 1, 1], vertical_alignment="bottom")
        base = left.text_input(
            "Route this connection to (base URL; path and query are kept)",
            key="connections_route_url",
            placeholder="http://127.0.0.1:9000",
        )
        if right.button("Route", key="connections_route", disabled=not base.strip()):
            _route(admin, ref, base.strip())
        if back.button("Back to the default", key="connections_route_default"):
            _route(admin, ref, None)
        message = st.session_state.pop("connections_route_message", None)
        if message:
            st.success(plain(message), icon=":material/check_circle:")


def _route(admin: SandboxAdmin, ref: str, base: str | None) -> None:
    try:
        routed = admin.route_connection(ref, base)
    except FlowLabError as exc:
        show_advice(advise(exc))
        return
    st.session_state.pop(_RESULT, None)
    st.session_state["connections_route_message"] = f"Calls now go to {routing_text(routed.get('routing'))}."
    st.rerun()
