"""The analysis report's helpers: dimensions, table filters, SRM per dimension, typed splits, verdict kinds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flowlab.analysis.report import (
    dimensions,
    filter_run,
    parse_split,
    split_by_dimensions,
    table_columns,
    verdict_kind,
)
from flowlab.analysis.stats import split_health


def run(n: int = 400, *, skew: float = 0.5, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    variant = np.where(rng.random(n) < skew, "A", "B")
    return pd.DataFrame(
        {
            "row": np.arange(1, n + 1),
            "guest": [f"g{i}" for i in range(n)],
            "variant": variant,
            "ok": rng.random(n) > 0.05,
            "offers": [["x"]] * n,
            "body": ["{}"] * n,
            "pointOfSale": rng.choice(["lumen/de", "lumen/uk"], n),
            "channel": rng.choice(["WEB", "MOBILE_APP"], n),
            "language": ["EN"] * n,
            "tier": rng.choice(["gold", "none", ""], n),
            "guestRef": [f"ref{i}" for i in range(n)],
            "loyaltyPoints": np.arange(n),
        }
    )


def test_dimensions_are_repeating_columns_not_ids_or_results() -> None:
    frame = run()
    assert dimensions(frame) == ["pointOfSale", "channel", "tier"]  # language has one value; ids repeat never
    assert table_columns(frame)[:4] == ["row", "guest", "variant", "ok"]
    assert "body" not in table_columns(frame) and "loyaltyPoints" in table_columns(frame)


def test_filter_run_combines_filters_and_reads_missing_levels() -> None:
    frame = run()
    assert len(filter_run(frame)) == len(frame)
    only_b_ok = filter_run(frame, variants=["B"], ok=True)
    assert set(only_b_ok["variant"]) == {"B"} and only_b_ok["ok"].all()
    missing_tier = filter_run(frame, dimension="tier", levels=["(missing)"])
    assert len(missing_tier) == int((frame["tier"] == "").sum()) > 0
    assert frame.shape == run().shape  # not modified


def test_split_by_dimensions_finds_the_broken_segment() -> None:
    healthy, broken = run(2000, seed=2), run(2000, skew=0.8, seed=3)
    broken["pointOfSale"] = "lumen/fr"
    frame = pd.concat([healthy, broken.assign(guest=broken["guest"] + "b")], ignore_index=True)
    table = split_by_dimensions(frame, ["pointOfSale", "channel"], {"A": 0.5, "B": 0.5})
    assert table.columns.tolist()[:4] == ["dimension", "levels", "mismatches", "worst_level"]
    pos = table.set_index("dimension").loc["pointOfSale"]
    assert pos["mismatches"] == 1 and pos["worst_level"] == "lumen/fr" and pos["worst_p_value"] < 1e-6


@pytest.mark.parametrize(
    ("text", "shares"),
    [
        ("A=50, B=50", {"A": 0.5, "B": 0.5}),
        ("control: 90%; treatment: 10%", {"control": 0.9, "treatment": 0.1}),
    ],
)
def test_parse_split(text: str, shares: dict[str, float]) -> None:
    assert parse_split(text) == pytest.approx(shares)


@pytest.mark.parametrize("text", ["A", "A=50", "A=50, A=50", "A=x, B=2"])
def test_parse_split_says_what_to_write(text: str) -> None:
    with pytest.raises(ValueError, match="A=50, B=50|appears twice"):
        parse_split(text)


def test_verdict_kinds() -> None:
    assert verdict_kind(split_health(run(4000), {"A": 0.5, "B": 0.5})) == "success"
    assert verdict_kind(split_health(run(4000, skew=0.7), {"A": 0.5, "B": 0.5})) == "error"
    assert verdict_kind(split_health(run(6), {"A": 0.5, "B": 0.5})) == "warning"
