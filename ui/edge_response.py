"""How a previewed Edge call is shown: a card per destination alias, the why, the envelope, headers, request.

Audience names and attribute values come from the tenant, so they are escaped (``ui.text.plain``) or shown
in a table. The request inspector redacts the token (the client records ``authorization: [redacted]``) and
the exports (``flowlab.edge.export``) carry it as a variable, never inline.
"""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from flowlab.edge import EdgeCredentials
from flowlab.edge.export import to_curl, to_postman, to_python
from flowlab.edge.response import Destination
from flowlab.workbench.edge_preview import EdgePreview
from ui.errors import show_advice
from ui.text import code, plain

__all__ = ["ATTRIBUTES_NOTE", "show_edge_preview"]

ATTRIBUTES_NOTE = "Attributes are only returned to the authenticated Server API"
_VERDICT_ICONS = {
    "qualified": ":green[:material/check_circle:]",
    "arriving": ":orange[:material/schedule:]",
    "member": ":blue[:material/person_check:]",
    "not": ":gray[:material/remove:]",
}
_EVALUATION = {"edge": "edge", "streaming": "streaming (hub)", "batch": "batch (hub)"}


def _card(preview: EdgePreview, destination: Destination, *, with_attributes: bool) -> None:
    with st.container(border=True):
        st.markdown(f"##### {plain(destination.alias)}")
        st.caption(f"destination {code(destination.destination_id)}")
        names = [preview.audience_name(s) for s in destination.segment_ids]
        if names:
            label = "Audiences" if preview.audiences else "Audience ids (names live in AEP's UI)"
            st.markdown(f"**{label}** ({len(names)})")
            st.markdown("  \n".join(f":material/group: {plain(n)}" for n in names))
        else:
            st.markdown("_In no audience mapped to this destination._")
        if destination.attributes:
            st.markdown("**Attributes**")
            table = pd.DataFrame(
                [{"attribute": k, "value": json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v}
                 for k, v in destination.attributes.items()]
            )  # fmt: skip
            st.dataframe(table, hide_index=True, width="stretch")
        elif with_attributes and not preview.authenticated:
            st.info(
                f"{ATTRIBUTES_NOTE}: this call went without a token (the edge domain), so this "
                "With Attributes destination carries audiences only. Turn the toggle off to see them.",
                icon=":material/lock:",
            )


def _why(preview: EdgePreview) -> None:
    with st.container(border=True, key="edge_why"):
        st.markdown("#### Why these audiences?")
        st.caption(
            "Edge audiences are evaluated on this request (same page); streaming and batch ones are "
            "evaluated in the hub and reach the edge later (reference §5.2, §5.4). Times are the sandbox's "
            "simulated clock."
        )
        for why in preview.why:
            kind = _EVALUATION.get(why.audience.evaluation, why.audience.evaluation)
            st.markdown(
                f"{_VERDICT_ICONS[why.verdict]} **{plain(why.audience.name)}** · {plain(kind)}  \n"
                f"{plain(why.text)}  \n:gray[Rule: {plain(why.words)}]"
            )


def _request(preview: EdgePreview, credentials: EdgeCredentials | None, *, key: str) -> None:
    request = preview.request
    if request is None:
        st.caption("Nothing was sent.")
        return
    response = preview.response
    url = response.url if response is not None and response.url else preview.base_url
    st.markdown(f"**POST** {code(url)}")
    creds = credentials if preview.authenticated else None
    curl_tab, python_tab, headers_tab, postman_tab = st.tabs(
        ["curl", "Python", "Headers and body", "Postman"]
    )
    args = (request, preview.base_url, preview.datastream_id)
    with curl_tab:
        st.caption("The token is $ACCESS_TOKEN: get one with the commented IMS call first." if creds else "")
        st.code(to_curl(*args, credentials=creds), language="bash")
    with python_tab:
        st.code(to_python(*args, credentials=creds), language="python")
    with headers_tab:
        headers = dict(response.request_headers) if response is not None else {}
        st.code("\n".join(f"{k}: {v}" for k, v in headers.items()) or "(not sent)", language="http")
        st.code(json.dumps(request.to_body(), indent=2, ensure_ascii=False), language="json")
    with postman_tab:
        st.caption(
            "A Postman v2.1 collection: {{baseUrl}}, {{datastreamId}}, and {{accessToken}} set by an IMS item."
        )
        st.download_button(
            "Download Postman collection",
            json.dumps(to_postman(*args, credentials=creds), indent=2, ensure_ascii=False),
            file_name="flowlab-edge.postman_collection.json",
            mime="application/json",
            key=f"{key}_postman",
            icon=":material/download:",
        )


def show_edge_preview(preview: EdgePreview, *, key: str, credentials: EdgeCredentials | None = None) -> None:
    """Everything about one interact call; ``credentials`` only feed the exports (ids, never the secret)."""
    response = preview.response
    if preview.advice is not None:
        show_advice(preview.advice)
    status, latency, audiences, auth = st.columns([1.4, 1, 1, 1.4])
    status.metric("Status", preview.status_text)
    latency.metric("Latency", f"{response.latency_ms:.0f} ms" if response is not None else "—")
    ids = {s for d in response.destinations for s in d.segment_ids} if response is not None else set()
    audiences.metric("Audiences", len(ids))
    auth.metric(
        "Token",
        "yes" if preview.authenticated else "none",
        help="With a token: the authenticated Server API (attributes too); without: the edge domain, audiences only.",
    )
    if response is not None and response.ok:
        for problem in [*response.errors, *response.warnings]:
            st.warning(plain(str(problem)), icon=":material/warning:")
        st.subheader("What the site gets")
        if not response.destinations:
            st.info(
                "The Edge does not know this identity: activation:pull came back with an empty payload "
                "(reference §5.4). Try a demo profile.",
                icon=":material/person_off:",
            )
        info_with = {d.alias for d in response.destinations if d.attributes}
        columns = st.columns(max(1, len(response.destinations)))
        for column, destination in zip(columns, response.destinations, strict=False):
            with column:
                with_attributes = destination.alias in info_with or "attribute" in destination.alias
                _card(preview, destination, with_attributes=with_attributes)
    if preview.why:
        _why(preview)
    body_tab, headers_tab, request_tab = st.tabs(["Response envelope", "Response headers", "Request"])
    with body_tab:
        if response is None:
            st.caption("No response: the request never got an answer.")
        elif response.json_body is not None:
            st.json(response.json_body, expanded=2)
        else:
            st.code(response.text or "(empty body)", language="text")
    with headers_tab:
        if response is not None:
            st.code("\n".join(f"{k}: {v}" for k, v in response.headers.items()), language="http")
            st.caption(f"requestId {response.request_id or '—'} · {response.attempts} attempt(s)")
    with request_tab:
        _request(preview, credentials, key=f"{key}_request")
