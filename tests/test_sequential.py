"""flowlab.analysis.sequential: always-valid intervals against the mSPRT formula, A/A peeking on the sandbox's guests."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flowlab import analysis
from flowlab.admin import SandboxAdmin
from flowlab.analysis.outcomes import sandbox_outcomes, with_outcomes
from flowlab.analysis.sequential import (
    DEFAULT_PLANNED_GUESTS,
    always_valid_interval,
    always_valid_p_value,
    peeking_path,
    peeking_sentence,
    sequential_conversion,
    simulate_aa,
)
from flowlab.batch.runlog import load_results
from flowlab.batch.runner import BatchOptions, run_batch_to_file
from flowlab.batch.samples import generate_guests, guests_from_sandbox
from flowlab.sandbox import SandboxServer

FLOW = "checkout_ab_test"


def johari_lambda(x_c: float, x_v: float, n: float, theta: float, tau2: float) -> float:
    """The mSPRT likelihood ratio for Bernoulli data as printed in Johari et al. (2017), n guests per arm."""
    p_c, p_v = x_c / n, x_v / n
    v = p_c * (1 - p_c) + p_v * (1 - p_v)
    diff = p_v - p_c - theta
    return math.sqrt(v / (v + n * tau2)) * math.exp(n**2 * tau2 * diff**2 / (2 * v * (v + n * tau2)))


def growthbook_rho2(alpha: float, planned: float) -> float:
    return (-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / planned


@pytest.mark.parametrize(
    ("x_c", "x_v", "n"), [(100, 130, 1000), (40, 41, 400), (900, 1000, 5000), (3, 9, 60)]
)
@pytest.mark.parametrize("confidence", [0.95, 0.9, 0.99])
def test_interval_is_where_the_mixture_likelihood_ratio_stays_below_one_over_alpha(
    x_c: int, x_v: int, n: int, confidence: float
) -> None:
    alpha = 1 - confidence
    low, high = always_valid_interval(x_c, n, x_v, n, confidence=confidence)
    # Johari's τ² is on the scale of the difference; GrowthBook's ρ² ties it to the planned guests.
    v = x_c / n * (1 - x_c / n) + x_v / n * (1 - x_v / n)
    tau2 = growthbook_rho2(alpha, DEFAULT_PLANNED_GUESTS) * 2 * v
    for edge in (float(low), float(high)):
        assert johari_lambda(x_c, x_v, n, edge, tau2) == pytest.approx(1 / alpha, rel=1e-9)
    p = float(always_valid_p_value(x_c, n, x_v, n, confidence=confidence))
    assert p == pytest.approx(min(1.0, 1 / johari_lambda(x_c, x_v, n, 0.0, tau2)), rel=1e-9)
    assert (p <= alpha) == (low > 0 or high < 0)


def test_growthbook_halfwidth_formula() -> None:
    """GrowthBook's SequentialTwoSidedTTest half-width, written out from its docs, gives the same interval."""
    x_c, n_c, x_v, n_v, alpha, planned = 120, 1100, 150, 900, 0.05, 3000
    p_c, p_v = x_c / n_c, x_v / n_v
    variance = p_c * (1 - p_c) / n_c + p_v * (1 - p_v) / n_v
    total = n_c + n_v
    rho = math.sqrt(growthbook_rho2(alpha, planned))
    s2 = variance * total
    half = math.sqrt(s2) * math.sqrt(
        2 * (total * rho**2 + 1) * math.log(math.sqrt(total * rho**2 + 1) / alpha) / (total * rho) ** 2
    )
    low, high = always_valid_interval(x_c, n_c, x_v, n_v, planned_guests=planned)
    assert (float(low), float(high)) == pytest.approx((p_v - p_c - half, p_v - p_c + half), rel=1e-12)


def test_sequential_is_wider_than_fixed_and_tightest_near_the_planned_size() -> None:
    x_c, x_v = np.array([100.0]), np.array([125.0])
    fixed_half = 1.959964 * math.sqrt(2 * 0.1 * 0.9 / 1000)
    widths = {}
    for planned in (200, 2000, 20_000, 200_000):
        low, high = always_valid_interval(x_c, 1000, x_v, 1000, planned_guests=planned)
        widths[planned] = float(high[0] - low[0]) / 2
        assert widths[planned] > fixed_half
    assert min(widths, key=widths.__getitem__) == 2000  # 2,000 guests in the comparison
    assert widths[2000] < 2 * fixed_half


def test_relative_interval_and_undefined_cases() -> None:
    low, high = always_valid_interval(100, 1000, 125, 1000, relative=True)
    assert low < 0.25 < high
    lows, highs = always_valid_interval([0, 5, 10, 10], [50, 50, 50, 50], [5, 0, 50, 10], [50, 50, 50, 50])
    assert np.isnan(lows[:3]).all() and np.isnan(highs[:3]).all() and not np.isnan(lows[3])
    assert always_valid_p_value([0, 10], [50, 50], [5, 10], [50, 50]).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="confidence must be between 0 and 1"):
        always_valid_interval(1, 10, 2, 10, confidence=95)
    with pytest.raises(ValueError, match="planned_guests must be at least 1"):
        always_valid_interval(1, 10, 2, 10, planned_guests=0)


def test_coverage_under_peeking_with_a_real_lift() -> None:
    """With a true 25% lift the always-valid interval covers it at every one of 50 looks in >= 95% of runs."""
    rng = np.random.default_rng(7)
    runs, guests, p_c, p_v = 400, 4000, 0.1, 0.125
    looks = np.linspace(80, guests, 50).astype(int) - 1
    x_c = np.cumsum(rng.random((runs, guests)) < p_c, axis=1)[:, looks]
    x_v = np.cumsum(rng.random((runs, guests)) < p_v, axis=1)[:, looks]
    n = np.broadcast_to(looks + 1.0, x_c.shape)
    low, high = always_valid_interval(x_c, n, x_v, n, planned_guests=2 * guests)
    covered = np.where(np.isnan(low), True, (low <= p_v - p_c) & (p_v - p_c <= high)).all(axis=1)
    assert covered.mean() >= 0.95


# ---- runs on the sandbox ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tenant() -> Iterator[SandboxServer]:
    with SandboxServer(seed=5) as server:
        yield server


@pytest.fixture(scope="module")
def tenant_admin(tenant: SandboxServer) -> Iterator[SandboxAdmin]:
    with SandboxAdmin(base_url=tenant.url) as client:
        yield client


@pytest.fixture(scope="module")
def demo_run(
    tenant: SandboxServer, tenant_admin: SandboxAdmin, tmp_path_factory: pytest.TempPathFactory
) -> pd.DataFrame:
    """The sandbox's 1,200 seeded demo guests through the demo A/B test, with its simulated outcomes."""
    path = tmp_path_factory.mktemp("seq") / "demo.sqlite"
    options = BatchOptions(base_url=tenant.url, client_key=tenant.client_key, friendly_id=FLOW)
    summary = run_batch_to_file(guests_from_sandbox(tenant_admin, 1200), options, path, progress=False)
    assert summary.ok == 1200
    return with_outcomes(load_results(path).sort_values("row"), sandbox_outcomes(tenant_admin, FLOW))


def test_aa_peeking_on_the_sandboxs_seeded_guests(demo_run: pd.DataFrame) -> None:
    """A/A on the sandbox's real bucketing of its demo guests: peeking breaks the fixed test, not mSPRT."""
    table = analysis.conversion_by_variant(demo_run)
    control = str(table["variant"].iloc[0])
    arms = (demo_run["variant"] != control).astype(int).to_numpy()
    rate = float(table["rate"].iloc[0])  # both arms convert at the control's observed rate
    result = simulate_aa(arms, rate=rate, experiments=200, looks=20, seed=2026)
    print(result.summary())
    assert result.guests == 1200 and result.looks == 20
    assert result.fixed_final <= 0.10  # one planned look: close to alpha
    assert result.fixed_peeking > 2 * result.alpha  # twenty looks: far above alpha
    assert result.sequential_peeking <= result.alpha  # always valid: at or below alpha however often we look


def test_sequential_conversion_mirrors_the_fixed_table(demo_run: pd.DataFrame) -> None:
    fixed = analysis.conversion_by_variant(demo_run)
    seq = sequential_conversion(demo_run)
    assert list(seq.columns) == [*fixed.columns, "rate_difference_low", "rate_difference_high"]
    same = ["variant", "is_control", "guests", "conversions", "rate", "rate_low", "rate_high", "lift"]
    pd.testing.assert_frame_equal(seq[same], fixed[same])
    b = seq.iloc[1]
    assert b["lift_low"] < fixed["lift_low"].iloc[1] and b["lift_high"] > fixed["lift_high"].iloc[1]
    assert b["p_value"] >= fixed["p_value"].iloc[1]
    assert b["rate_difference_low"] < b["rate_difference"] < b["rate_difference_high"]
    assert seq.iloc[0][["lift_low", "p_value", "rate_difference_low"]].isna().all()
    assert len(sequential_conversion(demo_run.iloc[:0])) == 0


def test_peeking_path_on_a_real_lift(
    tenant: SandboxServer, tenant_admin: SandboxAdmin, tmp_path: Path
) -> None:
    """3,000 new guests through the demo A/B test, where B truly converts 25% better."""
    options = BatchOptions(base_url=tenant.url, client_key=tenant.client_key, friendly_id=FLOW)
    run_batch_to_file(generate_guests(3000, seed=44), options, tmp_path / "ab.sqlite", progress=False)
    joined = with_outcomes(load_results(tmp_path / "ab.sqlite"), sandbox_outcomes(tenant_admin, FLOW))
    path = peeking_path(joined, looks=10)
    assert path["look"].tolist() == list(range(1, 11)) and path["variant"].nunique() == 1
    assert path["guests"].is_monotonic_increasing and path["guests"].iloc[-1] == 3000
    final = analysis.conversion_by_variant(joined)
    assert path["fixed_p_value"].iloc[-1] == pytest.approx(final["p_value"].iloc[1])
    # An always-valid interval contains the fixed one at every look.
    assert (path["sequential_low"] <= path["fixed_low"]).all() and (
        path["sequential_high"] >= path["fixed_high"]
    ).all()
    assert (path["sequential_significant"] <= path["fixed_significant"]).all()
    text = peeking_sentence(path)
    assert text.startswith(f"{path['variant'].iloc[0]}: ")
    every = peeking_path(joined, every=1000)
    assert every["guests"].tolist() == [1000, 2000, 3000]


def test_peeking_sentences() -> None:
    def path(fixed: list[bool], seq: list[bool]) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "look": range(1, len(fixed) + 1),
                "guests": [100 * (i + 1) for i in range(len(fixed))],
                "variant": "B",
                "fixed_significant": fixed,
                "sequential_significant": seq,
            }
        )

    noise = peeking_sentence(path([False, True, False, False], [False] * 4))
    assert noise == (
        "B: a fixed-horizon test read at each of 4 looks would have called it significant at 1 of them "
        "(first at 200 guests); the always-valid interval never did, so those looks were noise."
    )
    assert "excludes no change from 300 guests" in peeking_sentence(
        path([False, True, True], [False, False, True])
    )
    assert "not yet safe to call while peeking" in peeking_sentence(path([False, True], [False, False]))
    assert peeking_sentence(path([False], [False])).endswith("neither did the always-valid one.")
    assert peeking_sentence(path([], [])) == "Too few guests to look at the run as it grew."


def test_bad_simulation_inputs() -> None:
    with pytest.raises(ValueError, match="arms must be a non-empty sequence of 0"):
        simulate_aa([0, 2], rate=0.1)
    with pytest.raises(ValueError, match="rate must be between 0 and 1"):
        simulate_aa([0, 1], rate=10)
    with pytest.raises(ValueError, match="every must be at least 1 row"):
        peeking_path(pd.DataFrame({"variant": ["A"], "converted": [True]}), every=0)


def test_reexported_from_analysis() -> None:
    assert analysis.sequential_conversion is sequential_conversion
    assert analysis.peeking_path is peeking_path
