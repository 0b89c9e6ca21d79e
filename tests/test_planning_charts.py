"""flowlab.analysis.charts for issue #10: the power curve with the run marked, latency against the timeout budget."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from flowlab import analysis
from flowlab.analysis.charts import MAX_CHART_ROWS, budget_chart, power_chart, variant_scale
from flowlab.analysis.planning import power_curve


def make_run(n: int = 12_000, seed: int = 5) -> pd.DataFrame:
    """Bigger than Altair's row limit, so a chart fed raw rows would fail."""
    rng = np.random.default_rng(seed)
    variant = rng.choice(["A", "B"], size=n)
    latency = rng.lognormal(np.log(300), 0.5, size=n) * np.where(variant == "B", 1.4, 1.0)
    return pd.DataFrame(
        {"guest": [f"g{i}" for i in range(n)], "ok": True, "variant": variant, "latency_ms": latency}
    )


def datasets(spec: dict[str, Any]) -> list[list[dict[str, Any]]]:
    return list(spec.get("datasets", {}).values())


def test_power_chart_marks_the_run_and_the_target() -> None:
    curve = power_curve(0.05, 0.2)
    spec = power_chart(curve, guests=1200, target_power=0.9).to_dict()  # validates against Vega-Lite
    assert spec["width"] == "container" and spec["title"]["text"] == "Chance to detect the effect"
    line, target, run = spec["layer"]
    assert line["mark"]["type"] == "line"
    assert (line["encoding"]["x"]["field"], line["encoding"]["y"]["field"]) == ("guests_per_variant", "power")
    assert line["encoding"]["y"]["scale"]["domain"] == [0, 1]
    values = [rows for rows in datasets(spec)]
    assert [{"power": 0.9}] in values
    assert [{"guests_per_variant": 1200.0, "label": "this run"}] in values
    assert run["mark"]["type"] == "rule" and run["encoding"]["x"]["field"] == "guests_per_variant"
    assert len(power_chart(curve).to_dict()["layer"]) == 2  # no run to mark


def test_budget_chart_draws_the_budget_on_each_variant() -> None:
    run = make_run()
    spec = budget_chart(analysis.latency_histogram(run), budget_ms=250, variants=["A", "B"]).to_dict()
    assert spec["facet"]["row"]["field"] == "variant" and spec["facet"]["row"]["sort"] == ["A", "B"]
    bars, rule = spec["spec"]["layer"]
    assert bars["mark"]["type"] == "bar" and bars["encoding"]["y"]["field"] == "share"
    assert rule["mark"]["type"] == "rule" and rule["encoding"]["x"] == {"datum": 250.0}
    assert "250 ms" in spec["title"]["subtitle"]
    scale = variant_scale(["A", "B"]).to_dict()
    assert bars["encoding"]["color"]["scale"] == scale
    assert all(len(rows) < MAX_CHART_ROWS for rows in datasets(spec))


def test_charts_refuse_raw_runs() -> None:
    run = make_run()
    with pytest.raises(ValueError, match="not a raw run"):
        budget_chart(run.assign(bin_start=0.0, bin_end=1.0, count=1, share=0.1))
    with pytest.raises(ValueError, match="the power curve has no 'power' column"):
        power_chart(pd.DataFrame({"guests_per_variant": [1, 2]}))
