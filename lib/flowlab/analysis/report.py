"""The analysis report's small decisions, kept out of the page: which columns are dimensions, how to filter
the run table, SRM across every dimension at once, a typed-in split, and how alarming a verdict is.

Pure pandas on a run's DataFrame (``RunStore.to_dataframe``, optionally joined with outcomes): no I/O, no
streamlit, inputs never modified, so the app can cache every result and notebooks can call the same code.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd

from flowlab.analysis.stats import RunComparison, SplitHealth, split_health_by
from flowlab.batch.runs import RESULT_COLUMNS

__all__ = [
    "REQUEST_DIMENSIONS",
    "TABLE_COLUMNS",
    "comparison_rows",
    "conversion_rows",
    "dimensions",
    "filter_run",
    "levels",
    "parse_split",
    "split_by_dimensions",
    "split_rows",
    "table_columns",
    "verdict_kind",
]

#: Request fields that make good dimensions (the sample's own columns are considered too).
REQUEST_DIMENSIONS: tuple[str, ...] = ("pointOfSale", "channel", "language", "currencyCode")
#: Result columns shown in the run table, in this order (sample columns follow).
TABLE_COLUMNS: tuple[str, ...] = (
    "row",
    "guest",
    "variant",
    "true_variant",
    "ok",
    "status_code",
    "offers",
    "latency_ms",
    "attempts",
    "error_type",
    "error",
    "converted",
    "revenue",
    *REQUEST_DIMENSIONS,
)
_NOT_DIMENSIONS = frozenset(
    {*RESULT_COLUMNS, "body", "converted", "revenue", "true_variant", "guestRef", "email", "browserId"}
)
_SPLIT_ITEM = re.compile(r"^\s*(?P<label>[^=:]+?)\s*[=:]\s*(?P<weight>[0-9]+(?:\.[0-9]+)?)\s*%?\s*$")


def dimensions(frame: pd.DataFrame, *, max_levels: int = 200) -> list[str]:
    """Columns worth breaking a run down by: request fields and sample columns with 2 to ``max_levels``
    distinct values that repeat (an id column, one value per guest, is not a dimension)."""
    extras = [c for c in frame.columns if c not in _NOT_DIMENSIONS and c not in REQUEST_DIMENSIONS]
    candidates = [c for c in REQUEST_DIMENSIONS[:2] if c in frame.columns]
    candidates += extras + [c for c in REQUEST_DIMENSIONS[2:] if c in frame.columns]
    found = []
    for column in candidates:
        values = frame[column]
        if values.dtype == object and values.map(lambda v: isinstance(v, list | dict)).any():
            continue
        distinct = values.nunique(dropna=False)
        if 2 <= distinct <= max_levels and distinct <= max(len(frame) // 2, 2):
            found.append(column)
    return found


def table_columns(frame: pd.DataFrame) -> list[str]:
    """The run table's columns: results people read first, then the sample's own columns."""
    shown = [c for c in TABLE_COLUMNS if c in frame.columns]
    extras = [c for c in frame.columns if c not in _NOT_DIMENSIONS and c not in shown]
    return shown + extras


def filter_run(
    frame: pd.DataFrame,
    *,
    variants: Sequence[str] = (),
    ok: bool | None = None,
    dimension: str | None = None,
    levels: Sequence[str] = (),
) -> pd.DataFrame:
    """Rows of the run that match every filter given (an empty filter keeps everything).

    ``levels`` compare as text, the way the breakdown shows them (``(missing)`` matches an empty value).
    """
    mask = np.ones(len(frame), dtype=bool)
    if variants:
        mask &= frame["variant"].astype(str).isin([str(v) for v in variants]).to_numpy()
    if ok is not None:
        mask &= (frame["ok"].fillna(False).astype(bool) == ok).to_numpy()
    if dimension and levels:
        values = frame[dimension].astype(object).where(frame[dimension].notna(), "(missing)").astype(str)
        values = values.replace("", "(missing)")
        mask &= values.isin([str(level) for level in levels]).to_numpy()
    return frame[mask]


def levels(frame: pd.DataFrame, column: str, *, limit: int = 200) -> list[str]:
    """The distinct values of a column as the filters show them (text, ``(missing)`` for empty), the
    ``limit`` most frequent, sorted by name."""
    values = (
        frame[column].astype(object).where(frame[column].notna(), "").astype(str).replace("", "(missing)")
    )
    common = values.value_counts().head(limit).index
    return sorted(str(v) for v in common)


def split_by_dimensions(
    frame: pd.DataFrame,
    dimensions: Sequence[str],
    expected: Mapping[str, float] | None = None,
    *,
    max_levels: int = 10,
    alpha: float = 0.001,
) -> pd.DataFrame:
    """Dimensional SRM in one table: per dimension, how many levels were tested and the worst of them.

    Columns: ``dimension, levels, mismatches, worst_level, worst_p_value, worst_variant, worst_share,
    expected_share``. An overall healthy split can hide one broken segment (Eppo, Statsig); this is the
    place to spot it without opening every dimension. Levels past ``max_levels`` are pooled as "(other)".
    """
    rows = []
    for dimension in dimensions:
        table = split_health_by(frame, dimension, expected, max_levels=max_levels, alpha=alpha)
        tested = table.dropna(subset=["p_value"])
        if tested.empty:
            rows.append((dimension, len(table), 0, "", math.nan, "", math.nan, math.nan))
            continue
        worst = tested.iloc[int(np.argmin(tested["p_value"].to_numpy(dtype=float)))]
        rows.append(
            (
                dimension,
                len(table),
                int(table["srm"].sum()),
                str(worst["level"]),
                float(worst["p_value"]),
                str(worst["variant"]),
                float(worst["share"]),
                float(worst["expected_share"]),
            )
        )
    columns = [
        "dimension",
        "levels",
        "mismatches",
        "worst_level",
        "worst_p_value",
        "worst_variant",
        "worst_share",
        "expected_share",
    ]
    return pd.DataFrame.from_records(rows, columns=columns)


def parse_split(text: str) -> dict[str, float]:
    """A split typed by a person: ``A=50, B=50`` (or ``A: 50%; B: 50%``) as ``{"A": 0.5, "B": 0.5}``.

    Raises ``ValueError`` with a message that shows the expected form.
    """
    items = [item for item in re.split(r"[,;\n]", text) if item.strip()]
    weights: dict[str, float] = {}
    for item in items:
        match = _SPLIT_ITEM.match(item)
        if match is None:
            raise ValueError(f"'{item.strip()}' is not 'label=share': write e.g. A=50, B=50")
        label = match["label"].strip()
        if label in weights:
            raise ValueError(f"'{label}' appears twice in the split")
        weights[label] = float(match["weight"])
    total = sum(weights.values())
    if len(weights) < 2 or total <= 0:
        raise ValueError("give at least two variants with positive shares, e.g. A=50, B=50")
    return {label: weight / total for label, weight in weights.items()}


def verdict_kind(health: SplitHealth) -> Literal["success", "warning", "error"]:
    """How to show a split verdict: an SRM is an error, a healthy split a success, anything that could
    not be judged (too few guests, one variant, borderline p) a warning."""
    if health.srm:
        return "error"
    return "success" if health.verdict.startswith("Healthy split") else "warning"


# ---- tables for people ----------------------------------------------------------------------------------


def _pct(value: float, digits: int = 1) -> str:
    return "–" if not math.isfinite(value) else f"{value * 100:.{digits}f}%"


def _interval(low: float, high: float, *, signed: bool = False) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "–"
    sign = "+" if signed else ""
    return f"{low * 100:{sign}.1f}% to {high * 100:{sign}.1f}%"


def split_rows(table: pd.DataFrame, labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """``SplitHealth.table`` as people read it: guests, observed share with its 95% interval, expected.

    With ``labels`` (detected label → flow variant, ``outcomes.label_variants``) the flow's own variant
    names are shown next to the labels.
    """
    rows = pd.DataFrame({"variant": table["variant"].astype(str)})
    if labels:
        rows["flow variant"] = rows["variant"].map(dict(labels)).fillna("")
    rows["guests"] = table["count"].astype("int64").map("{:,}".format)
    rows["observed"] = [_pct(float(v)) for v in table["share"]]
    rows["95% interval"] = [
        _interval(float(lo), float(hi))
        for lo, hi in zip(table["share_low"], table["share_high"], strict=True)
    ]
    rows["expected"] = [_pct(float(v)) for v in table["expected_share"]]
    return rows


def conversion_rows(table: pd.DataFrame) -> pd.DataFrame:
    """``analysis.conversion_by_variant`` as people read it: one line per variant, intervals in words."""
    control = table.loc[table["is_control"].astype(bool), "variant"]
    against = str(control.iloc[0]) if len(control) else "control"
    rows = pd.DataFrame(
        {
            "variant": [
                f"{v} (control)" if c else str(v)
                for v, c in zip(table["variant"], table["is_control"], strict=True)
            ],
            "guests": table["guests"].astype("int64").map("{:,}".format),
            "conversions": table["conversions"].astype("int64").map("{:,}".format),
            "conversion rate": [_pct(float(v), 2) for v in table["rate"]],
            "95% interval": [
                _interval(float(lo), float(hi))
                for lo, hi in zip(table["rate_low"], table["rate_high"], strict=True)
            ],
            "revenue per guest": [
                "–" if not math.isfinite(float(v)) else f"{float(v):,.2f}" for v in table["revenue_per_guest"]
            ],
            f"lift vs {against}": [
                "" if c else ("–" if not math.isfinite(float(v)) else f"{float(v) * 100:+.1f}%")
                for v, c in zip(table["lift"], table["is_control"], strict=True)
            ],
            "lift 95% interval": [
                "" if c else _interval(float(lo), float(hi), signed=True)
                for lo, hi, c in zip(table["lift_low"], table["lift_high"], table["is_control"], strict=True)
            ],
            "p-value": [
                ""
                if c
                else ("–" if not math.isfinite(float(p)) else ("< 0.001" if p < 0.001 else f"{p:.3f}"))
                for p, c in zip(table["p_value"], table["is_control"], strict=True)
            ],
        }
    )
    return rows


def _points(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value * 100:+.1f} pts"


def comparison_rows(comparison: RunComparison) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``analysis.compare_runs`` as people read it: variant shares, then offer shares per variant.

    Offers a variant got in neither run are left out (they are zero in both); changes are in percentage
    points, biggest first within each variant (the order ``compare_runs`` gives).
    """
    v = comparison.variants
    variants = pd.DataFrame(
        {
            "variant": v["variant"].astype(str),
            "guests before": v["count_before"].astype("int64").map("{:,}".format),
            "share before": [_pct(float(x)) for x in v["share_before"]],
            "guests after": v["count_after"].astype("int64").map("{:,}".format),
            "share after": [_pct(float(x)) for x in v["share_after"]],
            "change": [_points(float(x)) for x in v["change"]],
        }
    )
    o = comparison.offers
    seen = ~((o["share_before"].fillna(0.0) == 0) & (o["share_after"].fillna(0.0) == 0))
    o = o[seen]
    offers = pd.DataFrame(
        {
            "variant": o["variant"].astype(str),
            "offer": o["offer"].astype(str),
            "before": [_pct(float(x)) for x in o["share_before"]],
            "after": [_pct(float(x)) for x in o["share_after"]],
            "change": [_points(float(x)) for x in o["change"]],
        }
    )
    return variants, offers.reset_index(drop=True)
