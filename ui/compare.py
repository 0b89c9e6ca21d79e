"""Side by side: two to four personas on one flow, or one persona on two to four flows.

Each column is an ordinary preview (and lands in the history); a table lines up the facts that matter
(variant, offers, the rule that fired…) with the rows that differ highlighted.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import streamlit as st

from flowlab.errors import FlowLabError, RequestValidationError
from flowlab.workbench.explain import diff_bodies, differing
from flowlab.workbench.personas import Persona, PersonaStore
from flowlab.workbench.preview import Preview
from flowlab.workbench.targets import Target
from ui.form import send
from ui.options import flow_catalog, friendly_id_options, with_current
from ui.response import show_preview_compact
from ui.target import live_call_allowed
from ui.text import plain

__all__ = ["compare_controls", "show_comparison"]

_HIGHLIGHT = "background-color: rgba(255, 189, 69, 0.35); font-weight: 600"
_NOT_COMPARED = ("Latency",)
_MODES = {"personas": "Personas on one flow", "flows": "One persona on several flows"}


def _personas(target: Target) -> list[Persona]:
    try:
        return PersonaStore().all(include_demo=target.is_sandbox)
    except FlowLabError as exc:
        st.warning(plain(str(exc)), icon="⚠️")
        return []


def _run(target: Target, jobs: Sequence[tuple[str, Persona, str]]) -> None:
    results: list[tuple[str, Preview | str]] = []
    for label, persona, friendly_id in jobs:
        try:
            request = persona.to_request(client_key=target.client_key, friendly_id=friendly_id)
        except RequestValidationError as exc:
            results.append((label, f"{persona.name} cannot call {friendly_id}: {exc}"))
            continue
        results.append((label, send(target, request, label=persona.name)))
    st.session_state["comparison"] = results


def compare_controls(target: Target) -> None:
    """Pick what to compare and run it (results land in session state for ``show_comparison``)."""
    personas = _personas(target)
    by_name = {p.name: p for p in personas}
    flows = friendly_id_options(target, flow_catalog(target))
    state = st.session_state
    if state.get("compare_target") not in (None, target.name):  # another target: start over
        for key in ("compare_personas", "compare_flow", "compare_persona", "compare_flows", "comparison"):
            state.pop(key, None)
    state["compare_target"] = target.name
    state.setdefault("compare_mode", "personas")
    previewed = [n for n in [state.get("persona")] if n in by_name]  # start from the Preview's persona
    state.setdefault("compare_personas", (previewed + [n for n in by_name if n not in previewed])[:2])
    state.setdefault("compare_flow", "hero_banner*" if target.is_sandbox else (flows[0] if flows else None))
    state.setdefault(
        "compare_persona", previewed[0] if previewed else (personas[0].name if personas else None)
    )
    state.setdefault("compare_flows", [f for f in ("checkout_ab_test", "recommendations_3way") if f in flows])
    state["compare_personas"] = [n for n in state["compare_personas"] if n in by_name]

    st.segmented_control(
        "Compare",
        ["personas", "flows"],
        key="compare_mode",
        required=True,
        format_func=_MODES.__getitem__,
        persist_state="session",
    )
    jobs: list[tuple[str, Persona, str]] = []
    if state["compare_mode"] == "personas":
        left, right = st.columns([3, 2])
        names = left.multiselect(
            "Personas (2–4)", list(by_name), key="compare_personas", max_selections=4, persist_state="session"
        )
        flow = right.selectbox(
            "Flow",
            with_current(flows, state.get("compare_flow")),
            index=None,
            key="compare_flow",
            accept_new_options=True,
            persist_state="session",
        )
        jobs = [(n, by_name[n], flow) for n in names if flow]
        enough = len(names) >= 2 and bool(flow)
    else:
        left, right = st.columns([2, 3])
        name = left.selectbox(
            "Persona", list(by_name), index=None, key="compare_persona", persist_state="session"
        )
        chosen = right.multiselect(
            "Flows (2–4)",
            flows,
            key="compare_flows",
            max_selections=4,
            accept_new_options=True,
            persist_state="session",
        )
        jobs = [(f, by_name[name], f) for f in chosen] if name in by_name else []
        enough = len(chosen) >= 2 and name in by_name
    if st.button(
        "Compare",
        key="compare_run",
        type="primary",
        icon=":material/compare_arrows:",
        disabled=not (enough and live_call_allowed(target)),
        help="Pick two to four." if not enough else None,
    ):
        _run(target, jobs)


def _facts_table(results: Sequence[tuple[str, Preview]]) -> tuple[pd.DataFrame, list[str]]:
    columns = {label: preview.summary() for label, preview in results}
    fields: list[str] = []
    for facts in columns.values():
        fields.extend(k for k in facts if k not in fields)
    table = pd.DataFrame(
        {label: [facts.get(f, "—") for f in fields] for label, facts in columns.items()}, index=fields
    )
    return table, differing(list(columns.values()), ignore=_NOT_COMPARED)


def show_comparison() -> None:
    """The facts table (differences highlighted) and the previews side by side."""
    results = st.session_state.get("comparison") or []
    if not results:
        st.info("Pick what to compare and press **Compare**.", icon=":material/arrow_upward:")
        return
    problems = [(label, r) for label, r in results if isinstance(r, str)]
    for _, message in problems:
        st.error(plain(message), icon=":material/error:")
    previews = [(label, r) for label, r in results if isinstance(r, Preview)]
    if not previews:
        return
    table, differ = _facts_table(previews)
    if differ:
        st.markdown("**Differences:** " + ", ".join(plain(d) for d in differ))
    else:
        st.markdown("**No differences:** every column got the same answer.")
    styled = table.style.apply(lambda row: [_HIGHLIGHT if row.name in differ else ""] * len(row), axis=1)
    st.dataframe(styled, key="compare_table", width="stretch")
    bodies = [p.response.json_body for _, p in previews if p.response is not None]
    paths = diff_bodies(bodies) if len(bodies) == len(previews) else []
    if paths:
        with st.expander(f"{len(paths)} field(s) of the response body differ"):
            st.code("\n".join(paths), language="text")
    for column, (label, preview) in zip(st.columns(len(previews), border=True), previews, strict=True):
        with column:
            st.markdown(f"#### {plain(label)}")
            kind, value = preview.request.identity
            who = (
                preview.who
                if preview.who != label
                else f"{kind} {value[:13]}{'…' if len(value) > 13 else ''}"
            )
            st.caption(plain(f"{who} → {preview.request.friendly_id}"))
            show_preview_compact(preview, key=f"compare_{label}")
