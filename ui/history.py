"""The session's call history: every preview, newest first, with one-click re-run and export.

It lives in session state only (one browser tab, until it closes); exports give the exact requests and what
came back as JSON, or the requests as a Postman collection.
"""

from __future__ import annotations

import json

import streamlit as st

from flowlab.personalize.export import to_postman
from flowlab.workbench.preview import Preview, run_preview
from ui.target import flow_client, sandbox_admin, timeout_s

__all__ = ["LIMIT", "entries", "export_json", "export_postman", "remember", "rerun"]

LIMIT = 50
_KEY = "history"


def entries() -> list[Preview]:
    """Previews of this session, newest first."""
    value = st.session_state.get(_KEY)
    return value if isinstance(value, list) else []


def remember(preview: Preview) -> None:
    history = entries()
    history.insert(0, preview)
    st.session_state[_KEY] = history[:LIMIT]


def rerun(preview: Preview) -> Preview:
    """The same request on the same target again (a new execution, so a new tracking record)."""
    fresh = run_preview(
        preview.request,
        base_url=preview.base_url,
        target_name=preview.target_name,
        is_sandbox=preview.is_sandbox,
        label=preview.label,
        variant_path=preview.variant_path,
        timeout=timeout_s(),
        client=flow_client(preview.base_url, timeout_s()),
        admin=sandbox_admin(preview.base_url) if preview.is_sandbox else None,
    )
    remember(fresh)
    return fresh


def export_json(previews: list[Preview]) -> str:
    """Every call as a record: request body, status, latency, variant, offers (and the sandbox's why)."""
    return json.dumps([p.to_record() for p in previews], indent=2, ensure_ascii=False)


def export_postman(previews: list[Preview]) -> str:
    """The requests of the newest call's target as one Postman collection."""
    if not previews:
        return "{}"
    base_url = previews[0].base_url
    requests = [p.request for p in previews if p.base_url == base_url]
    return json.dumps(to_postman(requests, base_url, name="Flow Lab history"), indent=2, ensure_ascii=False)
