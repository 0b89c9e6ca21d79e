"""How a previewed call is shown: status, latency, variant, offer cards, why, JSON, headers, request.

Shared by the Preview, Compare and History pages so the same call looks the same everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import streamlit as st

from flowlab.personalize.variants import VariantGuess
from flowlab.workbench.explain import Explanation
from flowlab.workbench.preview import Preview
from ui.cards import render_offer_cards
from ui.errors import show_advice
from ui.inspector import show_request
from ui.text import plain

__all__ = ["show_explanation", "show_preview", "show_preview_compact", "variant_source"]

# Material icons ship with Streamlit, so they render everywhere (emoji need a colour-emoji font).
_ICONS = {
    "pass": ":green[:material/check_circle:]",
    "fail": ":red[:material/cancel:]",
    "warn": ":orange[:material/warning:]",
    "info": ":gray[:material/chevron_right:]",
}
_SOURCES = {
    "path": "read from the JSON path you named",
    "field": "read from the body's variant field",
    "offers": "recognised by the offers it returned",
    "body": "a fingerprint of the body (the template names no variant)",
    "none": "the body was empty",
}


def variant_source(guess: VariantGuess) -> str:
    return _SOURCES.get(guess.source, guess.source)


def show_explanation(
    explanation: Explanation, guess: VariantGuess | None = None, *, compact: bool = False
) -> None:
    """The sandbox's account of the decision, one line per step."""
    st.markdown(f"**{plain(explanation.headline)}**")
    if guess is not None and explanation.variant:
        st.caption(
            f"Detected from the body: **{plain(guess.label)}** ({plain(variant_source(guess))}). "
            f"The sandbox's own record: **{plain(explanation.variant)}**. A live tenant only gives you the "
            "first: add a variant field to each variant's template to tell them apart."
        )
    reasons = [r for r in explanation.reasons if not compact or r.step not in ("timing", "guest")]
    st.markdown("  \n".join(f"{_ICONS[r.verdict]} {plain(r.text)}" for r in reasons))


def _scalars(body: object) -> Mapping[str, object]:
    if not isinstance(body, Mapping):
        return {}
    return {k: v for k, v in body.items() if isinstance(v, str | int | float | bool) and k != "variant"}


def _what_the_guest_sees(preview: Preview) -> None:
    response = preview.response
    if response is None or not response.ok:
        return
    if preview.offers:
        render_offer_cards(preview.offers)
        return
    fields = _scalars(response.json_body)
    if fields:
        st.caption("No offers in this response; the template printed these fields:")
        st.markdown("\n".join(f"- **{plain(k)}**: {plain(v)}" for k, v in fields.items()))
    else:
        render_offer_cards([], empty="The response carries no offers.")


def show_preview(preview: Preview, *, key: str) -> None:
    """Everything about one call; ``key`` keeps widget keys unique when several previews are on a page."""
    response = preview.response
    if preview.advice is not None:
        show_advice(preview.advice)
    status, latency, variant, offers = st.columns([1.5, 1, 1.5, 0.8])
    status.metric("Status", preview.status_text)
    latency.metric("Latency", f"{response.latency_ms:.0f} ms" if response is not None else "—")
    if preview.variant is not None:
        variant.metric("Variant", preview.variant.label, help=f"How: {variant_source(preview.variant)}.")
    else:
        variant.metric("Variant", "—")
    offers.metric("Offers", len(preview.offers))
    if response is not None and response.ok:
        st.subheader("What the guest sees")
        _what_the_guest_sees(preview)
    if preview.explanation is not None:
        with st.container(border=True, key=f"{key}_why"):
            st.markdown("#### Why this variant?")
            show_explanation(preview.explanation, preview.variant)
    body_tab, headers_tab, request_tab = st.tabs(["Response body", "Response headers", "Request"])
    with body_tab:
        if response is None:
            st.caption("No response: the request never got an answer.")
        elif response.is_json:
            st.json(response.json_body, expanded=2)
            with st.expander("Exact text as received"):
                st.code(response.text, language="json")
        else:
            st.code(response.text or "(empty body)", language="text")
    with headers_tab:
        if response is not None:
            st.code("\n".join(f"{k}: {v}" for k, v in response.headers.items()), language="http")
            extra = f" · execution {response.execution_ref}" if response.execution_ref else ""
            st.caption(f"{response.attempts} attempt(s){extra}")
    with request_tab:
        show_request(
            preview.request,
            preview.base_url,
            key=f"{key}_request",
            sent_headers=response.request_headers if response is not None else None,
        )


def show_preview_compact(preview: Preview, *, key: str) -> None:
    """A narrow version for side-by-side columns: status, variant, cards, and the why in an expander."""
    if preview.advice is not None:
        show_advice(preview.advice)
    variant = preview.variant.label if preview.variant is not None else "—"
    truth = preview.explanation.variant if preview.explanation is not None else None
    st.markdown(
        f"**{plain(preview.status_text)}** · variant **{plain(variant)}**"
        + (f" · sandbox: **{plain(truth)}**" if truth else "")
    )
    _what_the_guest_sees(preview)
    if preview.explanation is not None:
        with st.expander("Why?", expanded=False):
            show_explanation(preview.explanation, compact=True)
    with st.expander("Response body"):
        if preview.response is not None:
            body = preview.response.json_body
            st.code(
                json.dumps(body, indent=2, ensure_ascii=False) if body is not None else preview.response.text
            )
