"""Preview: call one flow for one guest and see the request, the response and the offers."""

from __future__ import annotations

import json

import streamlit as st

from flowlab import CHANNELS, FlowClient, FlowLabError, RequestValidationError
from flowlab.models import CallFlowRequest
from ui.target import current_target

target = current_target()
st.title("Preview an experience")

with st.form("call"):
    friendly_id = st.text_input("friendlyId", value="checkout_ab_test", key="friendly_id")
    channel = st.selectbox("Channel", CHANNELS, key="channel")
    pos = st.text_input("Point of sale", value=target.point_of_sale, key="pos")
    browser_id = st.text_input("Browser ID", value="demo-browser-1", key="browser_id")
    submitted = st.form_submit_button("Call flow", type="primary")

if submitted:
    try:
        request = CallFlowRequest.build(
            clientKey=target.client_key,
            friendlyId=friendly_id,
            channel=channel,
            pointOfSale=pos,
            browserId=browser_id,
        )
        with FlowClient(base_url=target.base_url) as client:
            response = client.call(request, raise_for_status=False)
    except RequestValidationError as exc:
        for problem in exc.problems:
            st.error(str(problem))
    except FlowLabError as exc:
        st.error(str(exc))
    else:
        st.metric("Status", response.status_code, help=f"{response.latency_ms:.0f} ms")
        st.json(response.json_body if response.is_json else response.text)
        with st.expander("Request"):
            st.code(json.dumps(request.to_body(), indent=2), language="json")
