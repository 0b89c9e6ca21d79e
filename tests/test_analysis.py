"""flowlab.analysis.stats on synthetic run tables whose truth we know (seeded numpy generators)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from scipy import stats

from flowlab import analysis
from flowlab.analysis.stats import (
    RunComparison,
    SplitHealth,
    breakdown,
    compare_runs,
    conversion_by_variant,
    detection_accuracy,
    errors_by_type,
    join_outcomes,
    latency_histogram,
    latency_summary,
    offers_by_variant,
    split_health,
    split_health_by,
    variant_order,
    wilson_interval,
)

COUNTRIES = ["DE", "FR", "GB", "US", "NL", "ES", "IT", "SE", "PL", "BE", "AT", "CH", "DK", "IE", "PT"]
COUNTRY_WEIGHTS = np.array([15, 12, 12, 10, 8, 8, 7, 6, 5, 5, 4, 3, 2, 2, 1], dtype=float)
OFFERS_A = json.dumps(["Free shipping"])
OFFERS_B_BOTH = json.dumps(["Free shipping", "10% off"])
OFFERS_B_ONE = json.dumps(["10% off"])
ERRORS = {
    "timeout": (0, "ReadTimeout after 10.0 s"),
    "http_503": (503, "503 Service Unavailable"),
    "http_429": (429, "429 Too Many Requests"),
}


def make_runs(
    n: int = 20_000,
    shares: Mapping[str, float] | None = None,
    *,
    seed: int = 7,
    fail_rate: float = 0.03,
    broken_country: str | None = None,
    broken_shares: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """A run table shaped like the batch runner's output: one row per guest, ~3% failed calls."""
    rng = np.random.default_rng(seed)
    shares = shares or {"A": 0.5, "B": 0.5}
    names = list(shares)
    variant = rng.choice(names, size=n, p=np.array(list(shares.values())))
    country = rng.choice(COUNTRIES, size=n, p=COUNTRY_WEIGHTS / COUNTRY_WEIGHTS.sum())
    if broken_country is not None and broken_shares is not None:
        mask = country == broken_country
        variant[mask] = rng.choice(list(broken_shares), size=int(mask.sum()), p=list(broken_shares.values()))
    ok = rng.random(n) >= fail_rate
    error_type = np.where(ok, "", rng.choice(list(ERRORS), size=n, p=[0.5, 0.3, 0.2]))
    offers = np.where(variant == "A", OFFERS_A, np.where(rng.random(n) < 0.6, OFFERS_B_BOTH, OFFERS_B_ONE))
    latency = rng.lognormal(np.log(80), 0.4, size=n) + np.where(variant == "B", 10.0, 0.0)
    return pd.DataFrame(
        {
            "row": np.arange(n),
            "guest": [f"g{i:06d}" for i in range(n)],
            "identity": "browserId",
            "status_code": [200 if o else ERRORS[e][0] for o, e in zip(ok, error_type, strict=True)],
            "ok": ok,
            "variant": np.where(ok, variant, ""),
            "variant_source": np.where(ok, "field", ""),
            "offers": np.where(ok, offers, "[]"),
            "offer_count": [len(json.loads(o)) if k else 0 for o, k in zip(offers, ok, strict=True)],
            "latency_ms": latency,
            "attempts": np.where(ok, 1, 3),
            "error": [ERRORS[e][1] if e else "" for e in error_type],
            "error_type": error_type,
            "body": "{}",
            "execution_ref": [f"x{i}" for i in range(n)],
            "finished_at": 1.7e9 + np.arange(n) * 0.01,
            "channel": "WEB",
            "pointOfSale": "demo-eu",
            "language": "EN",
            "currencyCode": "EUR",
            "segment": rng.choice(["new", "returning", "vip"], size=n),
            "country": country,
            "tier": rng.choice([1, 2, 3], size=n).astype(float),
            "true_variant": variant,
        }
    )


def make_outcomes(runs: pd.DataFrame, rates: Mapping[str, float], *, seed: int = 11) -> pd.DataFrame:
    """One row per conversion event (as an analytics export would give), for guests in ``runs``."""
    rng = np.random.default_rng(seed)
    p = runs["true_variant"].map(rates).to_numpy(dtype=float)
    converted = rng.random(len(runs)) < p
    guests = runs.loc[converted, "guest"].to_numpy()
    revenue = rng.gamma(2.0, 20.0, size=len(guests))
    events = pd.DataFrame({"guest": guests, "converted": True, "revenue": revenue})
    repeat = events.head(50).assign(revenue=5.0)  # some guests converted twice
    stranger = pd.DataFrame({"guest": ["not-in-run"], "converted": [True], "revenue": [99.0]})
    return pd.concat([events, repeat, stranger], ignore_index=True)


@pytest.fixture(scope="module")
def healthy() -> pd.DataFrame:
    return make_runs()


@pytest.fixture(scope="module")
def broken() -> pd.DataFrame:
    return make_runs(shares={"A": 0.42, "B": 0.58}, seed=8)


@pytest.fixture(scope="module")
def joined(healthy: pd.DataFrame) -> pd.DataFrame:
    return join_outcomes(healthy, make_outcomes(healthy, {"A": 0.10, "B": 0.125}))


def served(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["ok"]]


# --------------------------------------------------------------------------------------------- Wilson


def test_wilson_matches_scipy() -> None:
    xs, ns = np.array([0, 1, 5, 50, 97, 10]), np.array([10, 10, 40, 100, 100, 10])
    low, high = wilson_interval(xs, ns, 0.95)
    for x, n, lo, hi in zip(xs, ns, low, high, strict=True):
        ci = stats.binomtest(int(x), int(n)).proportion_ci(0.95, method="wilson")
        assert lo == pytest.approx(ci.low, abs=1e-9)
        assert hi == pytest.approx(ci.high, abs=1e-9)


def test_wilson_zero_n_is_nan_without_warnings() -> None:
    low, high = wilson_interval([0, 3], [0, 6])
    assert np.isnan(low[0]) and np.isnan(high[0])
    assert low[1] < 0.5 < high[1]


@settings(max_examples=200, deadline=None, database=None)
@given(st.integers(min_value=1, max_value=10_000), st.data(), st.floats(min_value=0.5, max_value=0.999))
def test_wilson_bounds_property(n: int, data: st.DataObject, confidence: float) -> None:
    x = data.draw(st.integers(min_value=0, max_value=n))
    low, high = wilson_interval(x, n, confidence)
    assert 0.0 <= float(low) <= x / n <= float(high) <= 1.0


# --------------------------------------------------------------------------------------------- split health


def test_healthy_split_is_not_flagged(healthy: pd.DataFrame) -> None:
    result = split_health(healthy)
    assert isinstance(result, SplitHealth)
    assert not result.srm
    assert result.p_value > 0.001
    assert result.verdict.startswith("Healthy split: observed shares match the expected 50/50 (p = ")
    table = result.table.set_index("variant")
    assert list(table.index) == ["A", "B"]
    assert table["count"].sum() == served(healthy).shape[0]
    assert (table["share_low"] < 0.5).all() and (table["share_high"] > 0.5).all()
    assert (table["expected_share"] == 0.5).all()
    assert set(table["status"]) == {"expected"}


def test_broken_split_is_flagged(broken: pd.DataFrame) -> None:
    result = split_health(broken, {"A": 0.5, "B": 0.5})
    assert result.srm
    assert result.p_value < 0.001
    assert result.chi2 > 100
    assert result.verdict == (
        "Sample ratio mismatch: B got 58% of guests where 50% was expected (p < 0.001). "
        "Check targeting, caching or bot filtering before trusting results."
    )
    b = result.table.set_index("variant").loc["B"]
    assert b["share_low"] < 0.58 < b["share_high"]
    assert b["difference"] == pytest.approx(b["share"] - 0.5)


def test_broken_split_matches_its_design(broken: pd.DataFrame) -> None:
    weights = split_health(broken, {"A": 42, "B": 58})  # weights, not shares: normalised
    assert not weights.srm
    assert weights.table["expected_share"].tolist() == pytest.approx([0.42, 0.58])
    assert "42/58" in weights.verdict


def test_chi2_matches_scipy(broken: pd.DataFrame) -> None:
    counts = served(broken)["variant"].value_counts().reindex(["A", "B"]).to_numpy()
    expected = stats.chisquare(counts, [counts.sum() * 0.5] * 2)
    result = split_health(broken)
    assert result.chi2 == pytest.approx(expected.statistic)
    assert result.p_value == pytest.approx(expected.pvalue)


def test_unexpected_labels_are_reported_not_tested(healthy: pd.DataFrame) -> None:
    runs = healthy.copy()
    runs.loc[runs.index[:300], "variant"] = "(No matching variant)"
    runs.loc[runs.index[:300], "ok"] = True
    result = split_health(runs, {"A": 0.5, "B": 0.5})
    table = result.table.set_index("variant")
    assert table.loc["(No matching variant)", "status"] == "unexpected"
    assert np.isnan(table.loc["(No matching variant)", "expected_share"])
    assert table.loc[["A", "B"], "share"].sum() == pytest.approx(1.0)
    assert "outside the expected variants ((No matching variant))" in result.verdict
    assert not result.srm


def test_expected_variant_never_served_is_a_mismatch(healthy: pd.DataFrame) -> None:
    result = split_health(healthy, {"A": 1, "B": 1, "C": 1})
    table = result.table.set_index("variant")
    assert table.loc["C", "count"] == 0
    assert table.loc["C", "share_high"] < 0.001
    assert result.srm
    assert "33.3/33.3/33.3" not in result.verdict  # names the worst variant instead
    assert result.verdict.startswith("Sample ratio mismatch: C got 0% of guests where 33% was expected")


def test_split_edge_cases(healthy: pd.DataFrame) -> None:
    empty = split_health(healthy.iloc[:0])
    assert empty.table.empty and not empty.srm and np.isnan(empty.p_value)
    assert empty.verdict == "No successful responses yet, so the split cannot be checked."

    only_a = healthy[healthy["variant"] == "A"]
    one = split_health(only_a)
    assert not one.srm and np.isnan(one.p_value)
    assert one.verdict.startswith("Only one variant (A) was served")

    tiny = split_health(served(healthy).head(6))
    assert not tiny.srm
    assert tiny.verdict.startswith("Too few guests to judge the split")

    all_failed = split_health(healthy[~healthy["ok"]])
    assert all_failed.table.empty and "No successful responses" in all_failed.verdict

    unknown = split_health(healthy, {"X": 0.5, "Y": 0.5})
    assert not unknown.srm and unknown.verdict.startswith("None of the")

    single = split_health(healthy, {"A": 1.0})
    assert single.verdict.startswith("Only one variant (A) is expected")


def test_borderline_split_and_custom_alpha() -> None:
    runs = pd.DataFrame({"variant": ["A"] * 5000 + ["B"] * 5300, "ok": True})
    result = split_health(runs)
    assert 0.001 < result.p_value < 0.01 and not result.srm
    assert result.verdict.startswith("Borderline split: observed shares are close to the expected 50/50")
    assert split_health(runs, alpha=0.01).srm


def test_split_rejects_bad_expected(healthy: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        split_health(healthy, {"A": -1, "B": 2})
    with pytest.raises(ValueError, match="more than zero"):
        split_health(healthy, {"A": 0})


def test_split_health_by_finds_the_broken_level() -> None:
    runs = make_runs(seed=3, broken_country="NL", broken_shares={"A": 0.35, "B": 0.65})
    by = split_health_by(runs, "country", {"A": 0.5, "B": 0.5}, max_levels=10)
    assert list(by.columns) == [
        "level",
        "guests",
        "chi2",
        "p_value",
        "srm",
        "variant",
        "share",
        "expected_share",
    ]
    assert len(by) == 11 and by["level"].iloc[-1] == "(other)"
    assert by["guests"].sum() == served(runs).shape[0]
    assert by.loc[by["srm"], "level"].tolist() == ["NL"]
    nl = by.set_index("level").loc["NL"]
    assert nl["variant"] in {"A", "B"} and abs(nl["share"] - 0.5) > 0.1
    assert (by["guests"].iloc[:-1].diff().dropna() <= 0).all()


def test_split_health_by_default_expected_and_empty(healthy: pd.DataFrame) -> None:
    by = split_health_by(healthy, "segment")
    assert set(by["level"]) == {"new", "returning", "vip"} and not by["srm"].any()
    assert split_health_by(healthy.iloc[:0], "segment").empty
    with pytest.raises(ValueError, match="the run has no 'region' column"):
        split_health_by(healthy, "region")


# --------------------------------------------------------------------------------------------- outcomes


def test_join_outcomes(healthy: pd.DataFrame) -> None:
    outcomes = make_outcomes(healthy, {"A": 0.10, "B": 0.125})
    before = healthy.copy()
    joined = join_outcomes(healthy, outcomes)
    pd.testing.assert_frame_equal(healthy, before)
    assert len(joined) == len(healthy)
    assert joined["converted"].dtype == bool and joined["revenue"].dtype == float
    assert joined["converted"].sum() == outcomes.loc[outcomes["guest"] != "not-in-run", "guest"].nunique()
    assert joined["revenue"].sum() == pytest.approx(outcomes["revenue"].sum() - 99.0)
    missing = ~joined["guest"].isin(outcomes["guest"])
    assert not joined.loc[missing, "converted"].any() and (joined.loc[missing, "revenue"] == 0).all()


def test_join_outcomes_text_and_numeric_keys() -> None:
    runs = pd.DataFrame({"guest": ["1", "2", "3"], "variant": ["A", "B", "A"], "converted": [9, 9, 9]})
    outcomes = pd.DataFrame({"guest": [1, 3, 3], "converted": ["true", "0", "yes"]})
    joined = join_outcomes(runs, outcomes)
    assert joined["converted"].tolist() == [True, False, True]
    assert joined["revenue"].tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="the outcomes table has no 'converted' column"):
        join_outcomes(runs, outcomes.drop(columns="converted"))


def test_conversion_lift_recovers_the_truth(joined: pd.DataFrame) -> None:
    table = conversion_by_variant(joined)
    assert table["variant"].tolist() == ["A", "B"]
    assert table["is_control"].tolist() == [True, False]
    a, b = table.iloc[0], table.iloc[1]
    assert a["rate_low"] < 0.10 < a["rate_high"]
    assert b["rate_low"] < 0.125 < b["rate_high"]
    assert b["lift"] == pytest.approx(0.25, abs=0.1)
    assert b["lift_low"] < 0.25 < b["lift_high"]
    assert b["lift_low"] > 0
    assert b["p_value"] < 1e-4
    assert np.isnan(a["lift"]) and np.isnan(a["p_value"])
    assert b["rate_difference"] == pytest.approx(b["rate"] - a["rate"])
    assert table["guests"].sum() == served(joined).shape[0]
    assert (table["revenue_per_guest"] > 0).all()


def test_conversion_p_value_matches_a_z_test(joined: pd.DataFrame) -> None:
    table = conversion_by_variant(joined).set_index("variant")
    x = table["conversions"].to_numpy(dtype=float)
    n = table["guests"].to_numpy(dtype=float)
    pooled = x.sum() / n.sum()
    z = (x[1] / n[1] - x[0] / n[0]) / np.sqrt(pooled * (1 - pooled) * (1 / n[0] + 1 / n[1]))
    assert table.loc["B", "p_value"] == pytest.approx(2 * stats.norm.sf(abs(z)))


def test_aa_test_shows_no_lift(healthy: pd.DataFrame) -> None:
    joined = join_outcomes(healthy, make_outcomes(healthy, {"A": 0.1, "B": 0.1}, seed=5))
    b = conversion_by_variant(joined, confidence=0.99).iloc[1]
    assert b["lift_low"] < 0 < b["lift_high"]
    assert b["p_value"] > 0.01


def test_control_choice(joined: pd.DataFrame) -> None:
    renamed = joined.assign(variant=joined["variant"].replace({"A": "#1a2b3c4d", "B": "Control"}))
    assert conversion_by_variant(renamed)["variant"].iloc[0] == "Control"
    fingerprints = joined.assign(variant=joined["variant"].replace({"A": "#1a2b3c4d", "B": "#ffee0011"}))
    most = served(fingerprints)["variant"].value_counts().idxmax()
    assert conversion_by_variant(fingerprints)["variant"].iloc[0] == most
    explicit = conversion_by_variant(joined, control="B")
    assert explicit["variant"].tolist() == ["B", "A"] and explicit["lift"].iloc[1] < 0
    with pytest.raises(ValueError, match="control 'Z' is not among the variants"):
        conversion_by_variant(joined, control="Z")


def test_conversion_zero_conversions_and_empty() -> None:
    runs = pd.DataFrame(
        {
            "variant": ["A"] * 20 + ["B"] * 20,
            "ok": True,
            "converted": [False] * 20 + [True] * 2 + [False] * 18,
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = conversion_by_variant(runs)
    assert table["rate"].tolist() == [0.0, 0.1]
    assert np.isnan(table["lift"].iloc[1]) and np.isnan(table["lift_low"].iloc[1])
    assert 0 < table["p_value"].iloc[1] < 1
    assert table["revenue"].isna().all()
    empty = conversion_by_variant(runs.iloc[:0])
    assert empty.empty and "lift_low" in empty.columns
    with pytest.raises(ValueError, match="the joined run has no 'converted' column"):
        conversion_by_variant(runs.drop(columns="converted"))


# --------------------------------------------------------------------------------------------- breakdowns


def test_breakdown_caps_levels(healthy: pd.DataFrame) -> None:
    table = breakdown(healthy, "country", max_levels=5)
    assert list(table.columns) == ["country", "variant", "count", "share", "level_count"]
    levels = list(dict.fromkeys(table["country"]))
    assert levels == ["DE", "FR", "GB", "US", "NL", "(other)"] or levels[-1] == "(other)"
    assert len(levels) == 6
    assert table["count"].sum() == served(healthy).shape[0]
    assert table.groupby("country")["share"].sum().to_numpy() == pytest.approx(np.ones(6))
    top5 = served(healthy)["country"].value_counts().head(5).index.tolist()
    assert levels[:5] == top5
    other = table[table["country"] == "(other)"]
    assert other["level_count"].iloc[0] == served(healthy)["country"].isin(top5).__invert__().sum()


def test_breakdown_numbers_missing_and_other_values(healthy: pd.DataFrame) -> None:
    runs = healthy.copy()
    runs.loc[runs.index[:100], "tier"] = np.nan
    tiers = breakdown(runs, "tier")
    assert set(tiers["tier"]) == {"1", "2", "3", "(missing)"}  # 1.0 from a CSV with gaps reads "1"
    errors = breakdown(healthy, "segment", value="error_type")
    assert errors["count"].sum() == len(healthy)
    assert "(none)" in set(errors["error_type"]) and "timeout" in set(errors["error_type"])
    with pytest.raises(ValueError, match="must differ"):
        breakdown(healthy, "variant")
    with pytest.raises(ValueError, match="max_levels must be at least 1"):
        breakdown(healthy, "segment", max_levels=0)
    assert breakdown(healthy.iloc[:0], "segment").empty


def test_offers_explode(healthy: pd.DataFrame) -> None:
    table = offers_by_variant(healthy)
    assert list(table.columns) == ["variant", "offer", "count", "guests", "share"]
    cell = table.set_index(["variant", "offer"])
    b = served(healthy)[served(healthy)["variant"] == "B"]
    assert cell.loc[("B", "Free shipping"), "count"] == (b["offers"] == OFFERS_B_BOTH).sum()
    assert cell.loc[("B", "10% off"), "share"] == pytest.approx(1.0)
    assert cell.loc[("A", "Free shipping"), "share"] == pytest.approx(1.0)
    assert cell.loc[("A", "10% off"), "count"] == 0  # zeros are listed
    assert len(offers_by_variant(healthy, top=1)) == 2


def test_offers_odd_cells() -> None:
    runs = pd.DataFrame(
        {
            "variant": ["A", "A", "A", "B", "B"],
            "ok": [True, True, True, True, False],
            "offers": [
                '["X", "X", "Y"]',
                '[{"title": "Z"}, {"name": "X"}]',
                "not json",
                None,
                '["Never"]',
            ],
        }
    )
    table = offers_by_variant(runs, top=None).set_index(["variant", "offer"])
    assert table.loc[("A", "X"), "count"] == 2  # once per guest
    assert table.loc[("A", "Z"), "count"] == 1 and table.loc[("A", "not json"), "count"] == 1
    assert table.loc[("B", "X"), "count"] == 0 and table.loc[("B", "X"), "guests"] == 1
    assert ("B", "Never") not in table.index
    lists = runs.assign(offers=[["X"], ["X", "Y"], [], [], ["Never"]])
    assert offers_by_variant(lists).set_index(["variant", "offer"]).loc[("A", "X"), "count"] == 2
    assert offers_by_variant(runs.iloc[:0]).empty


# ------------------------------------------------------------------------------------- latency, errors


def test_latency_summary_matches_numpy(healthy: pd.DataFrame) -> None:
    table = latency_summary(healthy).set_index("variant")
    assert list(table.index) == ["A", "B", "(all)"]
    ok = served(healthy)
    for name, values in [("A", ok[ok["variant"] == "A"]), ("B", ok[ok["variant"] == "B"]), ("(all)", ok)]:
        latency = values["latency_ms"].to_numpy()
        row = table.loc[name]
        assert row["count"] == len(latency)
        assert row["mean"] == pytest.approx(latency.mean())
        assert [row["p50"], row["p95"], row["p99"]] == pytest.approx(np.percentile(latency, [50, 95, 99]))
        assert row["max"] == pytest.approx(latency.max())
    assert table.loc["B", "p50"] > table.loc["A", "p50"]
    assert latency_summary(healthy.iloc[:0]).empty


def test_latency_histogram(healthy: pd.DataFrame) -> None:
    hist = latency_histogram(healthy, bins=20)
    assert len(hist) == 40
    per_variant = hist.groupby("variant")["count"].sum()
    assert per_variant.to_dict() == served(healthy)["variant"].value_counts().to_dict()
    assert hist.groupby("variant")["share"].sum().to_numpy() == pytest.approx([1.0, 1.0])
    a = hist[hist["variant"] == "A"]
    assert (a["bin_end"].to_numpy()[:-1] == a["bin_start"].to_numpy()[1:]).all()
    assert a["bin_start"].iloc[0] == pytest.approx(served(healthy)["latency_ms"].min())
    counts, _ = np.histogram(
        served(healthy).query("variant == 'A'")["latency_ms"],
        bins=a["bin_start"].tolist() + [a["bin_end"].iloc[-1]],
    )
    assert a["count"].tolist() == counts.tolist()
    one = latency_histogram(pd.DataFrame({"variant": ["A"], "latency_ms": [5.0]}), bins=3)
    assert one["count"].sum() == 1
    assert latency_histogram(healthy.iloc[:0]).empty
    with pytest.raises(ValueError, match="bins must be at least 1"):
        latency_histogram(healthy, bins=0)


def test_errors_by_type(healthy: pd.DataFrame) -> None:
    table = errors_by_type(healthy)
    failed = healthy[~healthy["ok"]]
    assert table["count"].sum() == len(failed)
    assert table["error_type"].tolist() == failed["error_type"].value_counts().index.tolist()
    assert table.set_index("error_type").loc["timeout", "example"] == "ReadTimeout after 10.0 s"
    assert table["share"].sum() == pytest.approx(len(failed) / len(healthy))
    assert table["share_of_errors"].sum() == pytest.approx(1.0)
    assert errors_by_type(served(healthy)).empty
    untyped = pd.DataFrame({"ok": [False, True], "error_type": ["", ""], "error": ["boom", ""]})
    assert errors_by_type(untyped)[["error_type", "example"]].values.tolist() == [["(unknown)", "boom"]]


# ------------------------------------------------------------------------------- comparison, detection


def test_compare_runs_finds_switched_guests(healthy: pd.DataFrame) -> None:
    after = healthy.copy()
    flip = after.index[(after["variant"] == "A").to_numpy()][:500]
    after.loc[flip, "variant"] = "B"
    after.loc[flip, "offers"] = OFFERS_B_ONE
    result = compare_runs(healthy, after)
    assert isinstance(result, RunComparison)
    assert result.switched_count == 500
    assert result.common_guests == served(healthy).shape[0]
    assert len(result.switched) == 20
    assert set(result.switched["variant_before"]) == {"A"} and set(result.switched["variant_after"]) == {"B"}
    assert set(result.switched["guest"]) <= set(after.loc[flip, "guest"])
    variants = result.variants.set_index("variant")
    assert variants.loc["B", "change"] == pytest.approx(500 / served(healthy).shape[0])
    assert variants["change"].sum() == pytest.approx(0.0)
    offers = result.offers.set_index(["variant", "offer"])
    assert offers.loc[("B", "Free shipping"), "change"] < 0
    assert "500 (2.6%) got a different variant" in result.summary
    assert "Biggest share change: B" in result.summary

    same = compare_runs(healthy, healthy)
    assert same.switched_count == 0 and same.switched.empty
    assert "Variant shares are unchanged." in same.summary

    new_variant = compare_runs(healthy, after.assign(variant=after["variant"].replace({"B": "C"})))
    offers_c = new_variant.offers.set_index(["variant", "offer"])
    assert np.isnan(offers_c.loc[("C", "10% off"), "share_before"])

    disjoint = compare_runs(healthy, healthy.iloc[:0])
    assert disjoint.common_guests == 0 and "No guest was served in both runs" in disjoint.summary


def test_detection_accuracy(healthy: pd.DataFrame) -> None:
    assert detection_accuracy(healthy.drop(columns="true_variant")) is None
    fingerprints = healthy.assign(variant=healthy["variant"].replace({"A": "#aaaa0001", "B": "#bbbb0002"}))
    assert detection_accuracy(fingerprints) == 1.0
    confused = fingerprints.copy()
    wrong = confused.index[(confused["variant"] == "#bbbb0002").to_numpy()][:300]
    confused.loc[wrong, "variant"] = "#aaaa0001"
    assert detection_accuracy(confused) == pytest.approx(1 - 300 / served(healthy).shape[0])
    assert detection_accuracy(healthy.iloc[:0]) is None


# --------------------------------------------------------------------------------------------- contracts


PAGE: list[tuple[str, Callable[[pd.DataFrame], Any]]] = [
    ("split_health", lambda r: split_health(r)),
    ("split_health_by", lambda r: split_health_by(r, "country")),
    ("conversion_by_variant", lambda r: conversion_by_variant(r)),
    ("breakdown", lambda r: breakdown(r, "segment")),
    ("offers_by_variant", lambda r: offers_by_variant(r)),
    ("latency_summary", lambda r: latency_summary(r)),
    ("latency_histogram", lambda r: latency_histogram(r)),
    ("errors_by_type", lambda r: errors_by_type(r)),
    ("compare_runs", lambda r: compare_runs(r, r)),
    ("detection_accuracy", lambda r: detection_accuracy(r)),
]


@pytest.mark.parametrize(("name", "call"), PAGE, ids=[name for name, _ in PAGE])
def test_inputs_are_not_mutated(joined: pd.DataFrame, name: str, call: Callable[[pd.DataFrame], Any]) -> None:
    before = joined.copy(deep=True)
    call(joined)
    pd.testing.assert_frame_equal(joined, before)


@pytest.mark.parametrize(("name", "call"), PAGE, ids=[name for name, _ in PAGE])
def test_empty_runs(joined: pd.DataFrame, name: str, call: Callable[[pd.DataFrame], Any]) -> None:
    result = call(joined.iloc[:0])
    if isinstance(result, pd.DataFrame):
        assert result.empty
    elif isinstance(result, SplitHealth):
        assert result.table.empty and not result.srm
    elif isinstance(result, RunComparison):
        assert result.switched_count == 0
    else:
        assert result is None


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: split_health(r), "the run has no 'variant' column: it has guest, ok"),
        (lambda r: offers_by_variant(r.assign(variant="A")), "the run has no 'offers' column"),
        (lambda r: latency_summary(r.assign(variant="A")), "the run has no 'latency_ms' column"),
        (lambda r: errors_by_type(r), "the run has no 'error_type' column"),
        (lambda r: breakdown(r.assign(variant="A"), "segment"), "the run has no 'segment' column"),
        (lambda r: compare_runs(r, r), "the before run has no 'variant' column"),
        (lambda r: compare_runs(r.assign(variant="A"), r), "the after run has no 'variant' column"),
        (lambda r: detection_accuracy(r), "the run has no 'variant' column"),
        (lambda r: join_outcomes(r.drop(columns="guest"), r), "the run has no 'guest' column: it has ok"),
    ],
)
def test_missing_columns_are_named(call: Callable[[pd.DataFrame], Any], message: str) -> None:
    runs = pd.DataFrame({"guest": ["g1"], "ok": [True]})
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(runs)


def test_not_a_dataframe() -> None:
    with pytest.raises(TypeError, match="must be a pandas DataFrame"):
        split_health([{"variant": "A"}])  # type: ignore[arg-type]


def test_ok_column_from_csv_strings(healthy: pd.DataFrame) -> None:
    text = healthy.assign(ok=healthy["ok"].map({True: "True", False: "False"}))
    assert split_health(text).table["count"].tolist() == split_health(healthy).table["count"].tolist()


def test_variant_order() -> None:
    assert variant_order(["(No matching variant)", "#00ff", "b", "A", "B"]) == [
        "A",
        "B",
        "b",
        "#00ff",
        "(No matching variant)",
    ]


def test_public_api() -> None:
    from flowlab.analysis import membership, stats

    # ``flowlab.analysis`` is the stats API plus the Edge membership functions, nothing else.
    assert set(analysis.__all__) == set(stats.__all__) | (set(analysis.__all__) & set(membership.__all__))
    assert {"membership_rates", "attribute_summary"} <= set(analysis.__all__)
    functions = {
        name
        for name, value in vars(stats).items()
        if not name.startswith("_") and getattr(value, "__module__", "") == "flowlab.analysis.stats"
    }
    constants = {"ALL", "MIN_PER_VARIANT", "MISSING", "OTHER", "UNKNOWN_ERROR"}
    # Issue #10: planning, sequential intervals and the timeout budget live in their own modules.
    own_modules = {"flowlab.analysis.planning", "flowlab.analysis.sequential", "flowlab.analysis.budget"}
    reexported = {n for n in stats.__all__ if getattr(getattr(stats, n), "__module__", "") in own_modules}
    assert set(stats.__all__) == functions | constants | reexported
    assert len(analysis.__all__) == len(set(analysis.__all__))


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["A", "B", "C", "", "(x)"]), st.booleans(), st.sampled_from(["s1", "s2", None])
        ),
        max_size=60,
    )
)
def test_tables_are_consistent_on_any_run(rows: list[tuple[str, bool, str | None]]) -> None:
    runs = pd.DataFrame(rows, columns=["variant", "ok", "segment"])
    served_n = int(((runs["variant"] != "") & runs["ok"]).sum()) if len(runs) else 0
    health = split_health(runs)
    assert int(health.table["count"].sum()) == served_n
    assert np.isnan(health.p_value) or 0.0 <= health.p_value <= 1.0
    assert health.verdict
    table = breakdown(runs, "segment")
    assert int(table["count"].sum()) == served_n
    if served_n:
        assert table.groupby("segment")["share"].sum().to_numpy() == pytest.approx(1.0)
    by = split_health_by(runs, "segment")
    assert int(by["guests"].sum()) == served_n
