"""Altair chart for :func:`flowlab.analysis.membership.membership_rates`: DataFrame in, chart out.

Its own module so that the variant charts in :mod:`flowlab.analysis.charts` stay about variants; it uses
the same palette, title style and row guard (Altair refuses more than 5,000 inline rows).
"""

from __future__ import annotations

import math
from typing import Any

import altair as alt
import pandas as pd

from flowlab.analysis.charts import PALETTE, RULE_COLOUR, _checked, _title

__all__ = ["membership_chart"]


def membership_chart(
    rates: pd.DataFrame, *, by: str | None = None, confidence: float = 0.95
) -> alt.LayerChart:
    """Membership rate per audience as a horizontal bar with its interval as a black rule.

    With ``by`` (the dimension column of a ``membership_rates(..., by=...)`` table) each audience gets one
    bar per level, side by side and coloured by level, so "Gold members: 55% in DE, 12% in FR" reads on one
    row. Audiences keep the table's order (biggest first).
    """
    columns = ["audience", "name", "guests", "members", "rate", "rate_low", "rate_high"]
    data = _checked(rates, [*columns, *([by] if by else [])], "the membership table")
    data = data[data["guests"] > 0].copy()
    order = list(dict.fromkeys(data["name"].astype(str)))
    data["name"] = data["name"].astype(str)
    tooltip: list[Any] = [
        alt.Tooltip("name:N", title="Audience"),
        alt.Tooltip("rate:Q", title="Members", format=".1%"),
        alt.Tooltip("rate_low:Q", title=f"{confidence:.0%} interval from", format=".1%"),
        alt.Tooltip("rate_high:Q", title="to", format=".1%"),
        alt.Tooltip("members:Q", title="Members", format=","),
        alt.Tooltip("guests:Q", title="Identities answered", format=","),
        alt.Tooltip("audience:N", title="Audience id"),
    ]
    y = alt.Y("name:N", sort=order, title=None, axis=alt.Axis(labelLimit=260))
    # Up to the highest interval end (rounded up to 10%), not always 100%: small audiences stay readable.
    upper = min(1.0, math.ceil(float(data["rate_high"].max() if len(data) else 1.0) * 10 + 1e-9) / 10 or 0.1)
    x = alt.X("rate:Q", title="Share of identities in the audience", axis=alt.Axis(format="%"),
              scale=alt.Scale(domain=[0, upper]))  # fmt: skip
    encode: dict[str, Any] = {"y": y, "x": x, "tooltip": tooltip}
    rule_encode: dict[str, Any] = {
        "y": y,
        "x": alt.X("rate_low:Q"),
        "x2": alt.X2("rate_high"),
        "tooltip": tooltip,
    }
    if by:
        levels = list(dict.fromkeys(data[by].astype(str)))
        data[by] = data[by].astype(str)
        tooltip.insert(1, alt.Tooltip(f"{by}:N", title=by))
        palette = [PALETTE[i % len(PALETTE)] for i in range(len(levels))]
        colour = alt.Color(f"{by}:N", sort=levels, title=by, scale=alt.Scale(domain=levels, range=palette))
        offset = alt.YOffset(f"{by}:N", sort=levels)
        encode.update(color=colour, yOffset=offset)
        rule_encode["yOffset"] = offset
        bars = alt.Chart(data).mark_bar(opacity=0.85).encode(**encode)
    else:
        bars = alt.Chart(data).mark_bar(color=PALETTE[0], opacity=0.85).encode(**encode)
    rules = alt.Chart(data).mark_rule(color=RULE_COLOUR, strokeWidth=1.5).encode(**rule_encode)
    subtitle = f"Bars: share of answered identities; black lines: {confidence:.0%} Wilson intervals."
    title = "Audience membership" + (f" by {by}" if by else "")
    return alt.LayerChart(layer=[bars, rules], width="container", title=_title(title, subtitle))
