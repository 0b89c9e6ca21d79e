"""The Batch run page's guest sample: generated (N, seed and mix), the sandbox's demo guests, or an uploaded
CSV whose row problems are listed while its valid rows can still run."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import pandas as pd
import streamlit as st

from flowlab.batch.samples import (
    GuestSample,
    edge_sample_from_sandbox,
    generate_guests,
    guests_from_sandbox,
    read_guests,
)
from flowlab.errors import FlowLabError, SampleError
from flowlab.personalize.models import CHANNELS
from flowlab.workbench.edge_preview import EVENT_TYPES
from ui.target import Target, sandbox_admin
from ui.text import plain

__all__ = ["campaign_mix", "edge_sample_picker", "sample_picker"]

_SOURCES = {"generate": "Generate", "demo": "Sandbox demo guests", "upload": "Upload a CSV"}
_TIERS = ("none", "bronze", "silver", "gold", "platinum")
_TIER_DEFAULTS = (45, 25, 18, 9, 3)
_CAMPAIGNS = ("spring_trail", "run_club", "city_commuter")
_DEFAULT_CHANNELS = ("WEB", "MOBILE_WEB", "MOBILE_APP")
_PREVIEW_ROWS = 20

# ---- the guest sample -----------------------------------------------------------------------------------


@st.cache_resource(max_entries=4, show_spinner="Generating guests…")
def _generated(
    n: int,
    seed: int,
    channels: tuple[str, ...],
    points_of_sale: tuple[str, ...],
    languages: tuple[str, ...],
    campaigns: tuple[str | None, ...],
    tiers: tuple[tuple[str, float], ...],
) -> GuestSample:
    return generate_guests(
        n,
        seed=seed,
        channels=channels,
        points_of_sale=points_of_sale,
        languages=languages or None,
        campaigns=campaigns,
        tier_mix=dict(tiers),
    )


@st.cache_resource(max_entries=4, show_spinner="Reading the sandbox's guests…")
def _demo(base_url: str, n: int) -> GuestSample:
    return guests_from_sandbox(sandbox_admin(base_url), n)


@st.cache_resource(max_entries=4, show_spinner="Checking every row…")
def _uploaded(data: bytes, name: str) -> GuestSample:
    source = io.BytesIO(data)
    source.name = name
    return read_guests(source)


@st.cache_data(ttl=30, show_spinner=False)
def _points_of_sale(base_url: str) -> list[str]:
    return [
        str(p.get("name")) for p in sandbox_admin(base_url).info().get("pointsOfSale", []) if p.get("name")
    ]


def campaign_mix(campaigns: Sequence[str], share: int) -> tuple[str | None, ...]:
    """The ``campaigns`` list for ``generate_guests`` so that ``share`` percent of guests get a campaign.

    The generator picks uniformly from the list, so shares become repeats (None = no campaign), reduced to
    the smallest list: 60% over three campaigns is the library's own default, ``(None, None, a, b, c)``.
    """
    if not campaigns or share <= 0:
        return (None,)
    if share >= 100:
        return tuple(campaigns)
    nones, each = (100 - share) * len(campaigns), share
    divisor = math.gcd(nones, each)
    return (None,) * (nones // divisor) + tuple(campaigns) * (each // divisor)


def _generate_controls(target: Target) -> GuestSample | None:
    left, right = st.columns(2)
    n = int(left.number_input("Guests", 1, 1_000_000, 5000, step=500, key="batch_n"))
    seed = int(
        right.number_input(
            "Seed", 0, 2**31 - 1, 42, key="batch_seed", help="The same seed and mix give the same guests."
        )
    )
    try:
        shops = _points_of_sale(target.base_url) if target.is_sandbox else []
    except FlowLabError:
        shops = []
    shops = shops or ([target.point_of_sale] if target.point_of_sale else [])
    with st.expander("Mix: channels, shops, languages, campaigns, loyalty tiers", expanded=not shops):
        channels = st.multiselect("Channels", CHANNELS, list(_DEFAULT_CHANNELS), key="batch_channels")
        pos = st.multiselect(
            "Points of sale",
            shops,
            shops,
            key="batch_pos",
            accept_new_options=True,
            help="Each guest gets one at random. Type a name to add a point of sale of your tenant.",
        )
        languages = st.multiselect(
            "Languages",
            ["EN", "DE", "FR", "ES", "IT", "NL"],
            [],
            key="batch_languages",
            accept_new_options=True,
            help="Empty: each shop's own language (sandbox shops), else EN.",
        )
        campaigns = st.multiselect(
            "Campaigns (sent as params.utm.campaign)",
            list(_CAMPAIGNS),
            list(_CAMPAIGNS),
            key="batch_campaigns",
            accept_new_options=True,
        )
        share = st.slider(
            "Guests arriving from a campaign", 0, 100, 60, step=5, format="%d%%", key="batch_share"
        )
        st.caption("Loyalty tiers (relative weights)")
        weights = [
            column.number_input(tier, 0, 100, default, key=f"batch_tier_{tier}")
            for column, tier, default in zip(st.columns(len(_TIERS)), _TIERS, _TIER_DEFAULTS, strict=True)
        ]
    missing = [
        what
        for what, ok in (
            ("a channel", channels),
            ("a point of sale (type your tenant's in Mix, e.g. myshop/uk)", pos),
            ("some weight to a loyalty tier", sum(weights) > 0),
        )
        if not ok
    ]
    if missing:
        st.error(f"To generate guests, add {' and '.join(missing)}.", icon=":material/error:")
        return None
    tiers = tuple((t, float(w)) for t, w in zip(_TIERS, weights, strict=True) if w > 0)
    try:
        return _generated(
            n, seed, tuple(channels), tuple(pos), tuple(languages), campaign_mix(campaigns, share), tiers
        )
    except SampleError as exc:
        st.error(plain(str(exc)), icon=":material/error:")
        return None


def _demo_controls(target: Target) -> GuestSample | None:
    if not target.is_sandbox:
        st.info(
            "Demo guests live in the sandbox; a live tenant does not know them. Generate guests or upload a "
            "CSV instead.",
            icon=":material/info:",
        )
        return None
    n = int(st.number_input("Guests (personas first)", 1, 10_000, 1000, step=100, key="batch_demo_n"))
    try:
        return _demo(target.base_url, n)
    except FlowLabError as exc:
        st.error(plain(str(exc)), icon=":material/error:")
        return None


def _problems_table(sample: GuestSample) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "row": [p.row for p in sample.problems],
            "line": [p.line for p in sample.problems],
            "column": [p.field for p in sample.problems],
            "problem": [p.message for p in sample.problems],
        }
    )


def _upload_controls() -> GuestSample | None:
    upload = st.file_uploader(
        "Guest CSV",
        type=["csv", "txt"],
        key="batch_upload",
        help="One guest per row: a browserId, email, or identifiers.provider + identifiers.id column. "
        "Optional channel, pointOfSale, language, currencyCode and params.<name> columns; any other "
        "column is kept for analysis (segment, tier…).",
    )
    if upload is None:
        st.caption(
            "Columns: `browserId` or `email` (one per row); optional `channel`, `pointOfSale`, `language`, "
            "`currencyCode` and `params.<name>`; any other column is kept for the analysis."
        )
        return None
    try:
        sample = _uploaded(upload.getvalue(), upload.name)
    except SampleError as exc:
        st.error(plain(str(exc)), icon=":material/error:")
        return None
    return _checked_rows(sample)


def _checked_rows(sample: GuestSample) -> GuestSample | None:
    """Say which rows of an uploaded sample will be skipped (and why), or that all are valid."""
    if sample.problems:
        st.warning(
            f"{len({p.row for p in sample.problems}):,} row(s) have problems and will be skipped; "
            f"{len(sample):,} valid row(s) can run.",
            icon=":material/warning:",
        )
        st.dataframe(
            _problems_table(sample), hide_index=True, width="stretch", key="batch_problems", height=220
        )
    else:
        st.success(f"All {len(sample):,} rows are valid.", icon=":material/check_circle:")
    return sample if len(sample) else None


def sample_picker(target: Target) -> GuestSample | None:
    """Where the guests come from; returns the sample to run (valid rows only), or None."""
    sources = list(_SOURCES) if target.is_sandbox else ["generate", "upload"]
    source = st.segmented_control(
        "Guests",
        sources,
        format_func=_SOURCES.__getitem__,
        default="generate",
        required=True,
        key="batch_source",
    )
    if source == "demo":
        sample = _demo_controls(target)
    elif source == "upload":
        sample = _upload_controls()
    else:
        sample = _generate_controls(target)
    if sample is not None and len(sample):
        with st.expander(f"Preview: the first {min(_PREVIEW_ROWS, len(sample))} of {len(sample):,} guests"):
            head = GuestSample(sample.guests[:_PREVIEW_ROWS], columns=sample.columns)
            st.dataframe(head.to_dataframe(), hide_index=True, width="stretch")
    return sample


# ---- AEP Edge identities --------------------------------------------------------------------------------

_EDGE_SOURCES = {"profiles": "Sandbox edge profiles", "upload": "Upload an Edge CSV"}
_PAGE_VIEW = "web.webpagedetails.pageViews"


@st.cache_resource(max_entries=4, show_spinner="Reading the sandbox's edge profiles…")
def _edge_profiles(base_url: str, n: int, event_type: str, new_visitors: bool) -> GuestSample:
    return edge_sample_from_sandbox(base_url, limit=n, event_type=event_type, new_visitors=new_visitors)


def _edge_profile_controls(target: Target) -> GuestSample | None:
    left, right = st.columns(2)
    n = int(
        left.number_input(
            "Identities", 1, 100_000, 5000, step=500, key="batch_edge_n",
            help="The sandbox's edge profiles first (1,200, with their attributes as analysis columns), then "
            "first-time visitors with new ECIDs, whom only an edge audience on the event can qualify.",
        )
    )  # fmt: skip
    event_type = right.selectbox(
        "Event type", EVENT_TYPES, index=EVENT_TYPES.index(_PAGE_VIEW) if _PAGE_VIEW in EVENT_TYPES else 0,
        key="batch_edge_event", help="Sent with every identity; a checkout qualifies the edge audiences on it.",
    )  # fmt: skip
    new_visitors = st.checkbox(
        "Fill up with first-time visitors", True, key="batch_edge_new",
        help="Off: at most the sandbox's known profiles.",
    )  # fmt: skip
    try:
        return _edge_profiles(target.base_url, n, str(event_type), new_visitors)
    except FlowLabError as exc:
        st.error(plain(str(exc)), icon=":material/error:")
        return None


def _edge_upload_controls() -> GuestSample | None:
    upload = st.file_uploader(
        "Edge CSV",
        type=["csv", "txt"],
        key="batch_edge_upload",
        help="One identity per row: identity.namespace (Email, ECID, CRMID, Phone or yours) and identity.id; "
        "optional eventType, data.<name> and xdm.<path> columns; any other column is kept for analysis.",
    )
    if upload is None:
        st.caption(
            "Columns: `identity.namespace` and `identity.id`; optional `eventType`, `data.<name>` and "
            "`xdm.<path>`; any other column (countryCode, loyaltyTier…) is kept for the membership analysis."
        )
        return None
    try:
        sample = _uploaded(upload.getvalue(), upload.name)
    except SampleError as exc:
        st.error(plain(str(exc)), icon=":material/error:")
        return None
    if sample.provider != "edge":
        st.error(
            "This is a Sitecore guest CSV (browserId, email or identifiers.*). An AEP Edge batch needs "
            "identity.namespace and identity.id columns.",
            icon=":material/error:",
        )
        return None
    return _checked_rows(sample)


def edge_sample_picker(target: Target) -> GuestSample | None:
    """The identities of an AEP Edge batch: the sandbox's edge profiles, or an uploaded Edge CSV."""
    sources = list(_EDGE_SOURCES) if target.is_sandbox else ["upload"]
    source = st.segmented_control(
        "Identities",
        sources,
        format_func=_EDGE_SOURCES.__getitem__,
        default=sources[0],
        required=True,
        key="batch_edge_source",
    )
    sample = _edge_upload_controls() if source == "upload" else _edge_profile_controls(target)
    if sample is not None and len(sample):
        with st.expander(
            f"Preview: the first {min(_PREVIEW_ROWS, len(sample))} of {len(sample):,} identities"
        ):
            head = GuestSample(
                sample.guests[:_PREVIEW_ROWS], columns=sample.columns, provider=sample.provider
            )
            st.dataframe(head.to_dataframe(), hide_index=True, width="stretch")
    return sample
