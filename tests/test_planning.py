"""flowlab.analysis.planning: sample size, MDE and power against independent implementations and published values."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import pytest
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import power_proportions_2indep, proportion_effectsize

from flowlab import analysis
from flowlab.admin import SandboxAdmin
from flowlab.analysis.planning import (
    PlanInputs,
    detection_power,
    minimum_detectable_effect,
    planning_defaults,
    planning_sentence,
    power_curve,
    sample_size,
)

EXPORT = Path(__file__).parent / "fixtures" / "sitecore-demo-edge" / "demo" / "experience" / "personalize"

BASELINES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5)
LIFTS = (0.05, 0.1, 0.2, 0.5)
GRID = [(b, m, a, p) for b, m in itertools.product(BASELINES, LIFTS) for a, p in ((0.05, 0.8), (0.01, 0.9))]


@pytest.mark.parametrize(("baseline", "lift", "alpha", "power"), GRID)
def test_sample_size_matches_statsmodels_pooled_z_test(
    baseline: float, lift: float, alpha: float, power: float
) -> None:
    """statsmodels' power_proportions_2indep (pooled null, unpooled alternative) is the same test."""
    n = sample_size(baseline, lift, alpha=alpha, power=power)
    diff = baseline * lift
    at_n = power_proportions_2indep(diff, baseline, n, alpha=alpha, return_results=False)
    below = power_proportions_2indep(diff, baseline, n * 0.99, alpha=alpha, return_results=False)
    assert at_n >= power - 1e-6  # enough guests
    assert below < power  # and not 1% more than needed


@pytest.mark.parametrize(("baseline", "lift", "alpha", "power"), GRID)
def test_sample_size_close_to_cohens_h(baseline: float, lift: float, alpha: float, power: float) -> None:
    """The arcsine (Cohen's h) approximation is a different formula: it agrees within a few percent."""
    ours = sample_size(baseline, lift, alpha=alpha, power=power)
    effect = proportion_effectsize(baseline * (1 + lift), baseline)
    theirs = NormalIndPower().solve_power(effect_size=effect, alpha=alpha, power=power, ratio=1.0)
    assert ours == pytest.approx(theirs, rel=0.05)


def test_published_calculator_values() -> None:
    # R's ?power.prop.test example: power.prop.test(p1 = .50, p2 = .75, power = .90) gives n = 76.65.
    assert sample_size(0.5, 0.25, power=0.9, relative=False) == 77
    # Evan Miller's calculator (evanmiller.org/ab-testing/sample-size.html) shows 1,030 per variation for
    # a 20% baseline and a 5-point absolute MDE. It puts the baseline's variance, not the pooled one, in the
    # null term, so it asks for ~6% fewer guests than the pooled z-test we report needs.
    assert sample_size(0.2, 0.05, relative=False) == pytest.approx(1030, rel=0.07)
    assert sample_size(0.2, 0.05, relative=False) > 1030


def test_relative_and_absolute_agree() -> None:
    assert sample_size(0.04, 0.25) == sample_size(0.04, 0.01, relative=False)
    assert minimum_detectable_effect(5000, 0.04, relative=False) == pytest.approx(
        0.04 * minimum_detectable_effect(5000, 0.04), rel=1e-9
    )


@pytest.mark.parametrize(("baseline", "lift"), list(itertools.product(BASELINES, LIFTS)))
def test_mde_inverts_sample_size(baseline: float, lift: float) -> None:
    n = sample_size(baseline, lift)
    mde = minimum_detectable_effect(n, baseline)
    assert mde == pytest.approx(lift, rel=0.01)
    assert mde <= lift + 1e-9  # n was rounded up, so it detects a little less than the lift, never more
    assert detection_power(n, baseline, lift) == pytest.approx(0.8, abs=0.005)
    assert minimum_detectable_effect(n - 1 if n > 1 else n, baseline) >= mde


def test_mde_of_a_tiny_run_is_infinite() -> None:
    assert minimum_detectable_effect(2, 0.3) == math.inf
    assert minimum_detectable_effect(2, 0.3, relative=False) == math.inf


def test_more_variants_split_alpha_bonferroni() -> None:
    # Three variants: two comparisons with the control, each at alpha / 2.
    assert sample_size(0.05, 0.2, variants=3) == sample_size(0.05, 0.2, alpha=0.025)
    assert sample_size(0.05, 0.2, variants=4) == sample_size(0.05, 0.2, alpha=0.05 / 3)
    assert minimum_detectable_effect(8000, 0.05, variants=3) > minimum_detectable_effect(8000, 0.05)


def test_power_curve_crosses_the_target_at_the_sample_size() -> None:
    curve = power_curve(0.05, 0.2)
    assert list(curve.columns) == ["guests_per_variant", "power"]
    assert curve["power"].is_monotonic_increasing
    n = sample_size(0.05, 0.2)
    assert curve["guests_per_variant"].max() == 2 * n
    below = curve[curve["guests_per_variant"] < n]["power"]
    above = curve[curve["guests_per_variant"] >= n]["power"]
    assert (below < 0.8).all() and (above >= 0.8).all()
    assert len(power_curve(0.05, 0.2, max_guests=500, points=10)) == 10


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: sample_size(0, 0.2), "baseline must be a conversion rate between 0 and 1"),
        (lambda: sample_size(1, 0.2), "baseline must be a conversion rate between 0 and 1"),
        (lambda: sample_size(5, 0.2), "for 5% give 0.05"),
        (lambda: sample_size(0.05, 0), "mde must be more than 0"),
        (lambda: sample_size(0.05, -0.1, relative=False), "0.01 for +1 percentage point"),
        (lambda: sample_size(0.9, 0.2), "target rate of 108.0%"),
        (lambda: sample_size(0.9, 0.1, relative=False), "lower the mde or the baseline"),
        (lambda: sample_size(0.05, 0.2, alpha=0), "alpha must be between 0 and 1"),
        (lambda: sample_size(0.05, 0.2, power=80), "power must be between 0 and 1 (0.8 for 80%)"),
        (lambda: sample_size(0.05, 0.2, variants=1), "variants must be a whole number of at least 2"),
        (lambda: sample_size(0.05, float("nan")), "mde must be a finite number"),
        (lambda: minimum_detectable_effect(0, 0.05), "n_per_variant must be at least 1 guest"),
        (lambda: minimum_detectable_effect(100, 1.5), "baseline must be a conversion rate"),
        (lambda: power_curve(0.05, 0.2, points=1), "points must be at least 2"),
        (lambda: PlanInputs(baseline=0.05, mde=0.2, alpha=1.5), "alpha must be between 0 and 1"),
    ],
)
def test_bad_inputs_say_what_to_fix(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        call()  # type: ignore[operator]


def test_wrong_types_are_named() -> None:
    with pytest.raises(TypeError, match="baseline must be a number, not str"):
        sample_size("0.05", 0.2)  # type: ignore[arg-type]


# ---- Sitecore's sampleSizeConfig --------------------------------------------------------------------------


def load(path: str) -> dict[str, object]:
    return json.loads((EXPORT / path / "bx-ace-editor.json").read_text())


def test_planning_defaults_from_sitecores_demo_export() -> None:
    premium = planning_defaults(load("experiments/web/Premium Session Page - VIP Ticket Upgrade"))
    assert premium == PlanInputs(
        baseline=0.02,
        mde=0.2,
        relative=True,
        alpha=0.05,
        power=0.8,
        source="sampleSizeConfig of premium_session_page__vip_ticket_upgrade_experiment",
    )
    assert premium is not None and premium.sample_size() == sample_size(0.02, 0.2)
    # 15% base, a relative 2% difference: Sitecore's "minimum detectable difference %" is relative.
    upsell = planning_defaults(load("experiments/web/Ticket Checkout - VIP Upsell"))
    assert upsell is not None and (upsell.baseline, upsell.mde, upsell.relative) == (0.15, 0.02, True)
    assert upsell.sample_size() == sample_size(0.15, 0.02) > 200_000
    experience = planning_defaults(load("experiences/fullStack/Dynamic Welcome Message"))
    assert experience is not None and experience.baseline == 0.02


def test_planning_defaults_without_config_and_with_bad_config() -> None:
    flow = load("experiences/fullStack/Dynamic Welcome Message")
    assert planning_defaults({k: v for k, v in flow.items() if k != "sampleSizeConfig"}) is None
    assert planning_defaults({"sampleSizeConfig": {"baseValue": 0.02}}) is None
    with pytest.raises(ValueError, match=r"sampleSizeConfig.baseValue must be a fraction .* got 2"):
        planning_defaults({"sampleSizeConfig": {**flow["sampleSizeConfig"], "baseValue": 2}})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match=r"sampleSizeConfig of x: a 60% lift on a 70.0% baseline"):
        planning_defaults(
            {
                "friendlyId": "x",
                "sampleSizeConfig": {
                    "baseValue": 0.7,
                    "minimumDetectableDifference": 0.6,
                    "confidenceLevel": 0.9,
                },
            }
        )
    with pytest.raises(TypeError, match="must be a mapping"):
        planning_defaults([])  # type: ignore[arg-type]


def test_planning_defaults_from_the_sandbox_flow(admin: SandboxAdmin) -> None:
    plan = planning_defaults(admin.flow("checkout_ab_test"))
    assert plan is not None and plan.source == "sampleSizeConfig of checkout_ab_test"
    assert (plan.baseline, plan.mde, plan.power) == (0.05, 0.2, 0.8)


def test_planning_sentence() -> None:
    plan = PlanInputs(baseline=0.05, mde=0.2)
    text = planning_sentence(1200, plan)
    assert text.startswith(
        "1,200 of the 8,158 guests per variant needed to detect a 20% lift on a 5% baseline"
    )
    assert "at 95% confidence and 80% power (15%)" in text
    assert text.endswith(
        f"this run can detect a lift of {minimum_detectable_effect(1200, 0.05):.0%} or more."
    )
    assert planning_sentence(9000, plan).count("(100%)") == 1
    assert planning_sentence(2, plan).endswith("too small to detect any lift.")
    assert planning_sentence(0, plan).endswith("(0%).")


def test_reexported_from_analysis() -> None:
    assert analysis.sample_size is sample_size
    assert analysis.minimum_detectable_effect is minimum_detectable_effect
    assert analysis.power_curve is power_curve
