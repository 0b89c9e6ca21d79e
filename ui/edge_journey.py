"""The journey page's parts: the editable step table, and the played journey (chart, summary, per-hit cards)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from flowlab.workbench.journey import HIT_EVENTS, Journey, JourneyStep, hit, journey_chart, new_session, wait
from ui.text import plain

__all__ = ["STEP_KINDS", "preset_table", "show_journey", "steps_from_table"]

STEP_KINDS = [*HIT_EVENTS, "Wait", "New session"]


def preset_table(steps: list[JourneyStep]) -> pd.DataFrame:
    """Steps as the editable table: step, wait, page URL, order total."""
    rows = []
    for s in steps:
        if s.kind == "hit":
            total = ((s.xdm.get("commerce") or {}).get("order") or {}).get("priceTotal")
            rows.append({"step": s.label, "wait": "", "page_url": s.page_url or "", "order_total": total})
        else:
            kind = "Wait" if s.kind == "wait" else "New session"
            text = "next day" if s.seconds == 86_400 else f"+{s.seconds / 60:g} min"
            rows.append({"step": kind, "wait": text, "page_url": "", "order_total": None})
    return pd.DataFrame(rows, columns=["step", "wait", "page_url", "order_total"])


def steps_from_table(table: pd.DataFrame) -> list[JourneyStep]:
    """The table back into steps; ValueError names the row and what to fix."""
    steps: list[JourneyStep] = []
    for n, row in enumerate(table.to_dict("records"), start=1):
        kind = str(row.get("step") or "").strip()
        when = str(row.get("wait") or "").strip()
        try:
            if kind == "Wait":
                steps.append(wait(when or "+10 min"))
            elif kind == "New session":
                steps.append(new_session(when or "next day"))
            elif kind in HIT_EVENTS:
                total = row.get("order_total")
                xdm = {}
                if total is not None and not pd.isna(total):
                    xdm = {"commerce": {"order": {"priceTotal": float(total), "currencyCode": "EUR"}}}
                url = str(row.get("page_url") or "").strip() or None
                steps.append(hit(kind, page_url=url, xdm=xdm))
            elif kind:
                raise ValueError(f"'{kind}' is not a step: use one of {', '.join(STEP_KINDS)}")
        except ValueError as exc:
            raise ValueError(f"row {n}: {exc}") from None
    return steps


def show_journey(journey: Journey) -> None:
    """The timeline chart, the plain-language summary, and one small card per hit."""
    st.subheader("What appeared where")
    st.markdown("\n".join(f"- {plain(line)}" for line in journey.summary()))
    if not journey.timeline.empty:
        st.altair_chart(journey_chart(journey.timeline), width="stretch")
    st.subheader("Hit by hit")
    columns = st.columns(min(3, max(1, len(journey.hits))))
    for h in journey.hits:
        with columns[h.index % len(columns)], st.container(border=True):
            at = pd.Timestamp(h.simulated_ms, unit="ms", tz="UTC").strftime("%a %H:%M")
            st.markdown(f"**{h.index + 1}. {plain(h.label)}** · session {h.session} · {at}")
            rows = journey.timeline[journey.timeline.hit == h.index]
            new = rows[rows.first_seen_hit == h.index]
            if len(new):
                st.markdown("  \n".join(f":green[:material/add_circle:] {plain(a)}" for a in new.audience))
            st.caption(f"{len(rows)} audience(s) in the answer")
