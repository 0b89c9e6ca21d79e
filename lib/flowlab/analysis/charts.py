"""Altair chart builders for the tables made by :mod:`flowlab.analysis.stats`: DataFrame in, chart out.

Charts take the *aggregated* tables (a few rows per variant), never a raw run: Altair refuses more than
5,000 inline rows and Streamlit would ship every row to the browser. A builder given a table that large
raises ``ValueError`` to say so. No streamlit, no I/O; the page decides where a chart goes.

Every chart colours variants with :func:`variant_scale`, so "B" is the same colour on every chart of a
page. Colours follow :func:`flowlab.analysis.stats.variant_order`, so the same set of variants always gets the
same colours; pass ``variants=`` (e.g. the split table's variants) to pin them when charts show different
subsets.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import altair as alt
import pandas as pd

from flowlab.analysis.stats import variant_order

__all__ = [
    "MAX_CHART_ROWS",
    "breakdown_chart",
    "budget_chart",
    "conversion_chart",
    "errors_chart",
    "latency_chart",
    "lift_chart",
    "offers_chart",
    "power_chart",
    "split_chart",
    "variant_scale",
]

#: Altair's default ``max_rows``; aggregated tables are far smaller.
MAX_CHART_ROWS = 5000

#: Vega's tableau10, the palette people already know from Tableau and Vega-Lite defaults.
PALETTE = (
    "#4c78a8",
    "#f58518",
    "#54a24b",
    "#e45756",
    "#72b7b2",
    "#eeca3b",
    "#b279a2",
    "#ff9da6",
    "#9d755d",
    "#bab0ac",
)
#: Greys for notes such as "(No matching variant)" or "(all)": they are not variants, so they recede.
NOTE_GREYS = ("#7f7f7f", "#a6a6a6", "#595959", "#c7c7c7")
ERROR_COLOUR = "#e45756"
RULE_COLOUR = "#333333"


def variant_scale(variants: Iterable[str]) -> alt.Scale:
    """A colour scale that gives each variant the same colour on every chart built from the same labels.

    Real variants take the palette in :func:`~flowlab.analysis.stats.variant_order`; labels in parentheses
    (notes such as "(No matching variant)") get greys.
    """
    domain = variant_order(variants)
    colours: list[str] = []
    named = notes = 0
    for label in domain:
        if label.startswith("("):
            colours.append(NOTE_GREYS[notes % len(NOTE_GREYS)])
            notes += 1
        else:
            colours.append(PALETTE[named % len(PALETTE)])
            named += 1
    return alt.Scale(domain=domain, range=colours)


def _checked(frame: pd.DataFrame, columns: Sequence[str], what: str) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{what} must be a pandas DataFrame, not {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        have = ", ".join(map(str, frame.columns)) or "none"
        raise ValueError(f"{what} has no {missing[0]!r} column: it has {have}")
    if len(frame) > MAX_CHART_ROWS:
        raise ValueError(
            f"{what} has {len(frame):,} rows; charts take the aggregated tables from flowlab.analysis.stats "
            f"(at most {MAX_CHART_ROWS:,} rows), not a raw run"
        )
    return frame.reset_index(drop=True)


def _colour(
    variants: Sequence[str] | None, data: pd.DataFrame, field: str = "variant", title: str = "Variant"
) -> alt.Color:
    labels = list(variants) if variants is not None else [str(v) for v in data[field].unique()]
    labels += [str(v) for v in data[field].unique() if str(v) not in labels]
    return alt.Color(f"{field}:N", scale=variant_scale(labels), title=title)


def _title(text: str, subtitle: str | None = None) -> alt.TitleParams:
    if subtitle:
        return alt.TitleParams(text=text, subtitle=subtitle, anchor="start")
    return alt.TitleParams(text=text, anchor="start")


def split_chart(table: pd.DataFrame, *, variants: Sequence[str] | None = None) -> alt.LayerChart:
    """Observed share per variant (bars, 95% Wilson interval) with a tick at the expected share.

    Takes :attr:`SplitHealth.table <flowlab.analysis.stats.SplitHealth>`.
    """
    data = _checked(
        table, ["variant", "count", "share", "share_low", "share_high", "expected_share"], "the split table"
    )
    order = variant_order(data["variant"].astype(str))
    base = alt.Chart().encode(x=alt.X("variant:N", sort=order, title="Variant", axis=alt.Axis(labelAngle=0)))
    tooltip: list[Any] = [
        alt.Tooltip("variant:N", title="Variant"),
        alt.Tooltip("count:Q", title="Guests", format=","),
        alt.Tooltip("share:Q", title="Observed share", format=".1%"),
        alt.Tooltip("share_low:Q", title="95% interval from", format=".1%"),
        alt.Tooltip("share_high:Q", title="95% interval to", format=".1%"),
        alt.Tooltip("expected_share:Q", title="Expected share", format=".1%"),
    ]
    bars = base.mark_bar(opacity=0.85).encode(
        y=alt.Y("share:Q", title="Share of guests", axis=alt.Axis(format="%")),
        color=_colour(variants, data),
        tooltip=tooltip,
    )
    interval = base.mark_rule(color=RULE_COLOUR, strokeWidth=2).encode(
        y=alt.Y("share_low:Q"), y2=alt.Y2("share_high"), tooltip=tooltip
    )
    expected = base.mark_tick(color="black", thickness=3, size=36).encode(
        y=alt.Y("expected_share:Q"), tooltip=tooltip
    )
    return alt.LayerChart(
        data=data,
        layer=[bars, interval, expected],
        width="container",
        title=_title(
            "Share of guests per variant", "Bars: observed, with 95% interval. Black tick: expected."
        ),
    )


def conversion_chart(conversion: pd.DataFrame, *, variants: Sequence[str] | None = None) -> alt.LayerChart:
    """Conversion rate per variant with its interval; the control is labelled and drawn as a dashed line.

    Takes the table from :func:`flowlab.analysis.stats.conversion_by_variant`.
    """
    data = _checked(
        conversion,
        ["variant", "is_control", "guests", "conversions", "rate", "rate_low", "rate_high"],
        "the conversion table",
    )
    control = data["is_control"].astype(bool)
    data = data.assign(
        label=[f"{v} (control)" if c else str(v) for v, c in zip(data["variant"], control, strict=True)],
        outline=control.astype(float) * 2,  # the control's bar gets a black outline
    )
    order = data["label"].tolist()
    tooltip: list[Any] = [
        alt.Tooltip("label:N", title="Variant"),
        alt.Tooltip("guests:Q", title="Guests", format=","),
        alt.Tooltip("conversions:Q", title="Conversions", format=","),
        alt.Tooltip("rate:Q", title="Conversion rate", format=".2%"),
        alt.Tooltip("rate_low:Q", title="Interval from", format=".2%"),
        alt.Tooltip("rate_high:Q", title="Interval to", format=".2%"),
    ]
    base = alt.Chart().encode(y=alt.Y("label:N", sort=order, title=None))
    bars = base.mark_bar(opacity=0.85, stroke="black").encode(
        x=alt.X("rate:Q", title="Conversion rate", axis=alt.Axis(format="%")),
        color=_colour(variants, data),
        strokeWidth=alt.StrokeWidth("outline:Q", scale=None, legend=None),
        tooltip=tooltip,
    )
    interval = base.mark_rule(color=RULE_COLOUR, strokeWidth=2).encode(
        x=alt.X("rate_low:Q"), x2=alt.X2("rate_high"), tooltip=tooltip
    )
    control_rate = (
        alt.Chart()
        .transform_filter("datum.is_control")
        .mark_rule(color=RULE_COLOUR, strokeDash=[4, 4])
        .encode(x=alt.X("rate:Q"))
    )
    return alt.LayerChart(
        data=data,
        layer=[bars, interval, control_rate],
        width="container",
        title=_title(
            "Conversion rate per variant", "Whiskers: confidence interval. Dashed line: control rate."
        ),
    )


def lift_chart(conversion: pd.DataFrame, *, variants: Sequence[str] | None = None) -> alt.LayerChart:
    """Relative lift of each variant over the control, with its interval and a rule at zero.

    An interval that crosses zero means the data is compatible with no difference.
    """
    data = _checked(
        conversion,
        ["variant", "is_control", "lift", "lift_low", "lift_high", "p_value"],
        "the conversion table",
    )
    controls = data.loc[data["is_control"].astype(bool), "variant"].astype(str).tolist()
    colour = _colour(variants if variants is not None else data["variant"].astype(str).tolist(), data)
    data = data.loc[~data["is_control"].astype(bool)].reset_index(drop=True)
    order = data["variant"].astype(str).tolist()
    tooltip: list[Any] = [
        alt.Tooltip("variant:N", title="Variant"),
        alt.Tooltip("lift:Q", title="Lift vs control", format="+.1%"),
        alt.Tooltip("lift_low:Q", title="Interval from", format="+.1%"),
        alt.Tooltip("lift_high:Q", title="Interval to", format="+.1%"),
        alt.Tooltip("p_value:Q", title="p-value", format=".3g"),
    ]
    base = alt.Chart().encode(y=alt.Y("variant:N", sort=order, title=None))
    interval = base.mark_rule(strokeWidth=3).encode(
        x=alt.X("lift_low:Q", title="Lift vs control", axis=alt.Axis(format="+%")),
        x2=alt.X2("lift_high"),
        color=colour,
        tooltip=tooltip,
    )
    points = base.mark_point(filled=True, size=120).encode(x=alt.X("lift:Q"), color=colour, tooltip=tooltip)
    zero = (
        alt.Chart(alt.InlineData(values=[{"zero": 0.0}]))
        .mark_rule(color=RULE_COLOUR, strokeDash=[4, 4])
        .encode(x=alt.X("zero:Q"))
    )
    control = controls[0] if controls else "control"
    return alt.LayerChart(
        data=data,
        layer=[interval, points, zero],
        width="container",
        title=_title(f"Lift in conversion rate vs {control}", "Dot: estimate. Line: confidence interval."),
    )


def breakdown_chart(
    breakdown: pd.DataFrame,
    dimension: str,
    *,
    value: str = "variant",
    variants: Sequence[str] | None = None,
) -> alt.Chart:
    """Normalised stacked bars: the mix of ``value`` within each level of ``dimension``.

    Takes the table from :func:`flowlab.analysis.stats.breakdown`; levels keep its order (biggest first).
    """
    data = _checked(breakdown, [dimension, value, "count", "share", "level_count"], "the breakdown table")
    levels = list(dict.fromkeys(data[dimension].astype(str)))
    colour = (
        _colour(variants, data, value)
        if value == "variant"
        else alt.Color(f"{value}:N", title=value, sort=variant_order(data[value].astype(str)))
    )
    chart: alt.Chart = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            y=alt.Y(f"{dimension}:N", sort=levels, title=dimension),
            x=alt.X(
                "count:Q",
                stack="normalize",
                title=f"Share of guests in each {dimension}",
                axis=alt.Axis(format="%"),
            ),
            color=colour,
            order=alt.Order(f"{value}:N"),
            tooltip=[
                alt.Tooltip(f"{dimension}:N", title=dimension),
                alt.Tooltip(f"{value}:N", title=value),
                alt.Tooltip("count:Q", title="Guests", format=","),
                alt.Tooltip("share:Q", title=f"Share of the {dimension}", format=".1%"),
                alt.Tooltip("level_count:Q", title=f"Guests in the {dimension}", format=","),
            ],
        )
        .properties(width="container", title=_title(f"{value.capitalize()} mix by {dimension}"))
    )
    return chart


def offers_chart(offers: pd.DataFrame, *, variants: Sequence[str] | None = None) -> alt.Chart:
    """Share of each variant's guests that were shown each offer, offers side by side per variant.

    Takes the table from :func:`flowlab.analysis.stats.offers_by_variant`; offers keep its order.
    """
    data = _checked(offers, ["variant", "offer", "count", "guests", "share"], "the offers table")
    offer_order = (
        data.groupby("offer", sort=False)["count"]
        .sum()
        .sort_values(ascending=False, kind="stable")
        .index.astype(str)
        .tolist()
    )
    chart: alt.Chart = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            y=alt.Y("offer:N", sort=offer_order, title=None),
            x=alt.X("share:Q", title="Share of the variant's guests", axis=alt.Axis(format="%")),
            yOffset=alt.YOffset("variant:N", sort=variant_order(data["variant"].astype(str))),
            color=_colour(variants, data),
            tooltip=[
                alt.Tooltip("offer:N", title="Offer"),
                alt.Tooltip("variant:N", title="Variant"),
                alt.Tooltip("count:Q", title="Guests shown it", format=","),
                alt.Tooltip("guests:Q", title="Guests in the variant", format=","),
                alt.Tooltip("share:Q", title="Share", format=".1%"),
            ],
        )
        .properties(width="container", title=_title("Offers served per variant"))
    )
    return chart


def latency_chart(
    histogram: pd.DataFrame, *, variants: Sequence[str] | None = None, group: str = "Variant"
) -> alt.Chart:
    """Latency histogram of successful calls, stacked by variant (``group`` names what the ``variant``
    column holds: "Event type" for an AEP Edge run).

    Takes the pre-binned table from :func:`flowlab.analysis.stats.latency_histogram`.
    """
    data = _checked(histogram, ["variant", "bin_start", "bin_end", "count", "share"], "the latency histogram")
    chart: alt.Chart = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X("bin_start:Q", bin="binned", title="Latency (ms)"),
            x2=alt.X2("bin_end"),
            y=alt.Y("count:Q", stack="zero", title="Calls"),
            color=_colour(variants, data, title=group),
            tooltip=[
                alt.Tooltip("variant:N", title=group),
                alt.Tooltip("bin_start:Q", title="From (ms)", format=",.0f"),
                alt.Tooltip("bin_end:Q", title="To (ms)", format=",.0f"),
                alt.Tooltip("count:Q", title="Calls", format=","),
                alt.Tooltip("share:Q", title=f"Share of the {group.lower()}'s calls", format=".1%"),
            ],
        )
        .properties(width="container", title=_title("Latency of successful calls"))
    )
    return chart


def errors_chart(errors: pd.DataFrame) -> alt.Chart:
    """Failed calls per error type, biggest first, with an example message in the tooltip.

    Takes the table from :func:`flowlab.analysis.stats.errors_by_type`.
    """
    data = _checked(errors, ["error_type", "count", "share", "example"], "the errors table")
    order = data.sort_values("count", ascending=False, kind="stable")["error_type"].astype(str).tolist()
    chart: alt.Chart = (
        alt.Chart(data)
        .mark_bar(color=ERROR_COLOUR)
        .encode(
            y=alt.Y("error_type:N", sort=order, title=None),
            x=alt.X("count:Q", title="Failed calls"),
            tooltip=[
                alt.Tooltip("error_type:N", title="Error"),
                alt.Tooltip("count:Q", title="Calls", format=","),
                alt.Tooltip("share:Q", title="Share of all calls", format=".1%"),
                alt.Tooltip("example:N", title="Example"),
            ],
        )
        .properties(width="container", title=_title("Failed calls by error type"))
    )
    return chart


# --------------------------------------------------------------------------------------------- planning (#10)


def power_chart(
    curve: pd.DataFrame, *, guests: float | None = None, target_power: float = 0.8
) -> alt.LayerChart:
    """Power against guests per variant, with the target power dashed and the run's size marked.

    Takes :func:`flowlab.analysis.planning.power_curve`; ``guests`` is the run's guests per variant (the smaller
    arm), drawn as a vertical rule so the analyst sees where the run stands on the curve.
    """
    data = _checked(curve, ["guests_per_variant", "power"], "the power curve")
    tooltip: list[Any] = [
        alt.Tooltip("guests_per_variant:Q", title="Guests per variant", format=","),
        alt.Tooltip("power:Q", title="Power", format=".0%"),
    ]
    line = (
        alt.Chart(data)
        .mark_line(color=PALETTE[0], strokeWidth=2)
        .encode(
            x=alt.X("guests_per_variant:Q", title="Guests per variant"),
            y=alt.Y("power:Q", title="Power", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
            tooltip=tooltip,
        )
    )
    target = (
        alt.Chart(pd.DataFrame({"power": [target_power]}))
        .mark_rule(color=RULE_COLOUR, strokeDash=[4, 4])
        .encode(y="power:Q", tooltip=[alt.Tooltip("power:Q", title="Target power", format=".0%")])
    )
    layers: list[Any] = [line, target]
    subtitle = f"Dashed: {target_power:.0%} power."
    if guests is not None:
        marker = pd.DataFrame({"guests_per_variant": [float(guests)], "label": ["this run"]})
        layers.append(
            alt.Chart(marker)
            .mark_rule(color=ERROR_COLOUR, strokeWidth=2)
            .encode(
                x="guests_per_variant:Q",
                tooltip=[
                    alt.Tooltip("guests_per_variant:Q", title="This run, guests per variant", format=",")
                ],
            )
        )
        subtitle += " Red: this run."
    return alt.LayerChart(
        layer=layers, width="container", title=_title("Chance to detect the effect", subtitle)
    )


def budget_chart(
    histogram: pd.DataFrame, *, budget_ms: float = 400.0, variants: Sequence[str] | None = None
) -> alt.FacetChart:
    """Latency distribution per variant (one row each) with the timeout budget drawn as a red rule.

    Takes :func:`flowlab.analysis.stats.latency_histogram`; bars right of the rule are guests who would have
    seen the default experience (:func:`flowlab.analysis.budget.timeout_budget` counts them).
    """
    data = _checked(histogram, ["variant", "bin_start", "bin_end", "count", "share"], "the latency histogram")
    order = variant_order(data["variant"].astype(str))
    bars = (
        alt.Chart()
        .mark_bar()
        .encode(
            x=alt.X("bin_start:Q", bin="binned", title="Latency (ms)"),
            x2=alt.X2("bin_end"),
            y=alt.Y("share:Q", title="Share of calls", axis=alt.Axis(format="%")),
            color=_colour(variants, data),
            tooltip=[
                alt.Tooltip("variant:N", title="Variant"),
                alt.Tooltip("bin_start:Q", title="From (ms)", format=",.0f"),
                alt.Tooltip("bin_end:Q", title="To (ms)", format=",.0f"),
                alt.Tooltip("count:Q", title="Calls", format=","),
                alt.Tooltip("share:Q", title="Share of the variant's calls", format=".1%"),
            ],
        )
    )
    rule = (
        alt.Chart()
        .mark_rule(color=ERROR_COLOUR, strokeWidth=2, strokeDash=[6, 3])
        .encode(x=alt.datum(float(budget_ms)), tooltip=[alt.Tooltip("budget_ms:Q", title="Budget (ms)")])
        .transform_calculate(budget_ms=f"{float(budget_ms)}")
    )
    chart: alt.FacetChart = (
        alt.layer(bars, rule, data=data)
        .properties(height=90)  # "container" width does not apply inside a facet
        .facet(row=alt.Row("variant:N", sort=order, title=None))
        .properties(
            title=_title(
                "Latency per variant against the timeout budget",
                f"Red line: {float(budget_ms):,g} ms; calls to its right would have shown the default.",
            )
        )
    )
    return chart
