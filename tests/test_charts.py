"""flowlab.analysis.charts: each builder turns an aggregated analysis table into a valid, small Vega-Lite spec."""

from __future__ import annotations

import json
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import pytest

from flowlab import analysis
from flowlab.analysis import charts
from flowlab.analysis.charts import (
    MAX_CHART_ROWS,
    breakdown_chart,
    conversion_chart,
    errors_chart,
    latency_chart,
    lift_chart,
    offers_chart,
    split_chart,
    variant_scale,
)

OFFERS = {
    "A": json.dumps(["Free shipping"]),
    "B": json.dumps(["Free shipping", "10% off"]),
    "(No matching variant)": "[]",
}


def make_runs(n: int = 12_000, seed: int = 21) -> pd.DataFrame:
    """A run bigger than Altair's 5,000-row limit, so a chart fed raw rows would fail."""
    rng = np.random.default_rng(seed)
    variant = rng.choice(list(OFFERS), size=n, p=[0.49, 0.49, 0.02])
    ok = rng.random(n) > 0.05
    error_type = np.where(ok, "", rng.choice(["timeout", "http_503"], size=n))
    return pd.DataFrame(
        {
            "guest": [f"g{i}" for i in range(n)],
            "ok": ok,
            "variant": np.where(ok, variant, ""),
            "offers": np.where(ok, [OFFERS[v] for v in variant], "[]"),
            "latency_ms": rng.lognormal(np.log(90), 0.5, size=n),
            "error_type": error_type,
            "error": np.where(ok, "", "ReadTimeout after 10 s"),
            "segment": rng.choice(["new", "returning", "vip"], size=n),
            "country": rng.choice([f"C{i:02d}" for i in range(25)], size=n),
            "true_variant": variant,
        }
    )


@pytest.fixture(scope="module")
def runs() -> pd.DataFrame:
    return make_runs()


@pytest.fixture(scope="module")
def conversion(runs: pd.DataFrame) -> pd.DataFrame:
    rng = np.random.default_rng(4)
    rate = runs["variant"].map({"A": 0.1, "B": 0.125}).fillna(0.05).to_numpy()
    outcomes = pd.DataFrame({"guest": runs["guest"], "converted": rng.random(len(runs)) < rate})
    return analysis.conversion_by_variant(analysis.join_outcomes(runs, outcomes))


def layers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec["layer"]) if "layer" in spec else [spec]


def mark(layer: dict[str, Any]) -> str:
    value = layer["mark"]
    return str(value["type"] if isinstance(value, dict) else value)


def dataset_sizes(spec: dict[str, Any]) -> list[int]:
    return [len(rows) for rows in spec.get("datasets", {}).values()]


def check_common(chart: alt.TopLevelMixin) -> dict[str, Any]:
    spec: dict[str, Any] = chart.to_dict()  # validates against the Vega-Lite schema
    assert spec["width"] == "container"
    assert spec["title"]["text"]
    sizes = dataset_sizes(spec)
    assert sizes and all(size < MAX_CHART_ROWS for size in sizes)
    return spec


def colour_of(spec: dict[str, Any], variant: str) -> str:
    for layer in layers(spec):
        colour = layer.get("encoding", {}).get("color", {})
        scale = colour.get("scale")
        if scale and "domain" in scale:
            return str(scale["range"][scale["domain"].index(variant)])
    raise AssertionError("no colour scale in the chart")


def test_split_chart(runs: pd.DataFrame) -> None:
    table = analysis.split_health(runs, {"A": 0.5, "B": 0.5}).table
    spec = check_common(split_chart(table))
    bars, interval, tick = layers(spec)
    assert [mark(x) for x in (bars, interval, tick)] == ["bar", "rule", "tick"]
    assert all(layer["encoding"]["x"]["field"] == "variant" for layer in (bars, interval, tick))
    assert bars["encoding"]["x"]["sort"] == ["A", "B", "(No matching variant)"]
    assert bars["encoding"]["y"]["field"] == "share"
    assert bars["encoding"]["y"]["axis"]["format"] == "%"
    assert (interval["encoding"]["y"]["field"], interval["encoding"]["y2"]["field"]) == (
        "share_low",
        "share_high",
    )
    assert tick["encoding"]["y"]["field"] == "expected_share"
    assert {t["field"] for t in bars["encoding"]["tooltip"]} >= {"count", "share", "expected_share"}
    assert dataset_sizes(spec) == [3]


def test_conversion_chart_highlights_the_control(conversion: pd.DataFrame) -> None:
    spec = check_common(conversion_chart(conversion))
    bars, interval, control = layers(spec)
    assert [mark(x) for x in (bars, interval, control)] == ["bar", "rule", "rule"]
    assert bars["encoding"]["x"]["field"] == "rate"
    assert (interval["encoding"]["x"]["field"], interval["encoding"]["x2"]["field"]) == (
        "rate_low",
        "rate_high",
    )
    assert bars["encoding"]["strokeWidth"] == {
        "field": "outline",
        "legend": None,
        "scale": None,
        "type": "quantitative",
    }
    assert [row["outline"] for row in next(iter(spec["datasets"].values()))] == [2.0, 0.0, 0.0]
    assert control["transform"] == [{"filter": "datum.is_control"}]
    rows = next(iter(spec["datasets"].values()))
    assert rows[0]["label"] == "A (control)"
    assert bars["encoding"]["y"]["field"] == "label"
    assert bars["encoding"]["y"]["sort"][0] == "A (control)"


def test_lift_chart(conversion: pd.DataFrame) -> None:
    spec = check_common(lift_chart(conversion))
    interval, points, zero = layers(spec)
    assert [mark(x) for x in (interval, points, zero)] == ["rule", "point", "rule"]
    assert (
        interval["encoding"]["x"]["field"] == "lift_low"
        and interval["encoding"]["x2"]["field"] == "lift_high"
    )
    assert points["encoding"]["x"]["field"] == "lift"
    assert zero["encoding"]["x"]["field"] == "zero"
    assert "vs A" in spec["title"]["text"]
    datasets = list(spec["datasets"].values())
    variants = {row.get("variant") for rows in datasets for row in rows}
    assert "A" not in variants and "B" in variants  # the control has no lift to draw


def test_breakdown_chart(runs: pd.DataFrame) -> None:
    table = analysis.breakdown(runs, "country", max_levels=8)
    spec = check_common(breakdown_chart(table, "country"))
    assert mark(spec) == "bar"
    assert spec["encoding"]["x"]["stack"] == "normalize"
    assert spec["encoding"]["y"]["field"] == "country"
    assert spec["encoding"]["y"]["sort"][-1] == "(other)" and len(spec["encoding"]["y"]["sort"]) == 9
    assert spec["encoding"]["color"]["field"] == "variant"
    errors = analysis.breakdown(runs, "segment", value="error_type")
    spec = check_common(breakdown_chart(errors, "segment", value="error_type"))
    assert spec["encoding"]["color"]["field"] == "error_type"


def test_offers_chart(runs: pd.DataFrame) -> None:
    spec = check_common(offers_chart(analysis.offers_by_variant(runs)))
    assert mark(spec) == "bar"
    assert spec["encoding"]["y"]["field"] == "offer"
    assert spec["encoding"]["yOffset"]["field"] == "variant"
    assert spec["encoding"]["x"]["field"] == "share"
    assert spec["encoding"]["y"]["sort"] == ["Free shipping", "10% off"]


def test_latency_chart(runs: pd.DataFrame) -> None:
    spec = check_common(latency_chart(analysis.latency_histogram(runs, bins=25)))
    assert mark(spec) == "bar"
    assert spec["encoding"]["x"]["bin"] == "binned"
    assert spec["encoding"]["x2"]["field"] == "bin_end"
    assert spec["encoding"]["y"]["field"] == "count"
    assert dataset_sizes(spec) == [75]


def test_errors_chart(runs: pd.DataFrame) -> None:
    table = analysis.errors_by_type(runs)
    spec = check_common(errors_chart(table))
    assert mark(spec) == "bar"
    assert spec["encoding"]["y"]["field"] == "error_type"
    assert spec["encoding"]["y"]["sort"] == table["error_type"].tolist()
    assert "example" in {t["field"] for t in spec["encoding"]["tooltip"]}


def test_variant_colours_are_consistent(runs: pd.DataFrame, conversion: pd.DataFrame) -> None:
    split = check_common(split_chart(analysis.split_health(runs).table))
    offers = check_common(offers_chart(analysis.offers_by_variant(runs)))
    latency = check_common(latency_chart(analysis.latency_histogram(runs)))
    conv = check_common(conversion_chart(conversion))
    for variant in ("A", "B"):
        assert colour_of(split, variant) == colour_of(offers, variant) == colour_of(latency, variant)
        assert colour_of(split, variant) == colour_of(conv, variant)
    first = variant_scale(["B", "(No matching variant)", "A"]).to_dict()
    second = variant_scale(["A", "B", "(No matching variant)"]).to_dict()
    assert first == second
    assert first["domain"] == ["A", "B", "(No matching variant)"]
    assert first["range"][2] in charts.NOTE_GREYS and first["range"][0] not in charts.NOTE_GREYS
    pinned = check_common(
        offers_chart(analysis.offers_by_variant(runs[runs["variant"] != "A"]), variants=["A", "B"])
    )
    assert colour_of(pinned, "B") == colour_of(split, "B")


def test_raw_runs_are_refused(runs: pd.DataFrame) -> None:
    raw = runs.assign(count=1, share=0.1, bin_start=0.0, bin_end=1.0)
    with pytest.raises(ValueError, match="aggregated tables"):
        latency_chart(raw)


def test_missing_columns_are_named(runs: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="the split table has no 'share' column"):
        split_chart(pd.DataFrame({"variant": ["A"], "count": [1]}))
    with pytest.raises(ValueError, match="the breakdown table has no 'tier' column"):
        breakdown_chart(analysis.breakdown(runs, "segment"), "tier")


def test_empty_tables_still_chart(runs: pd.DataFrame) -> None:
    empty = runs.iloc[:0]
    builders = [
        split_chart(analysis.split_health(empty).table),
        conversion_chart(analysis.conversion_by_variant(empty.assign(converted=False))),
        lift_chart(analysis.conversion_by_variant(empty.assign(converted=False))),
        breakdown_chart(analysis.breakdown(empty, "segment"), "segment"),
        offers_chart(analysis.offers_by_variant(empty)),
        latency_chart(analysis.latency_histogram(empty)),
        errors_chart(analysis.errors_by_type(empty)),
    ]
    for chart in builders:
        spec = chart.to_dict()
        assert spec["width"] == "container"


def test_public_api() -> None:
    assert set(charts.__all__) == {
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
    }
    assert "streamlit" not in charts.__dict__
