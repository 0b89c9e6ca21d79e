"""Plan an experiment's sample: guests needed per variant, the effect a run can detect, and its power.

Pure math (numpy/scipy, no I/O, no pandas beyond the power curve's table), so the Analysis page, the CLI
and notebooks all answer "is this experiment big enough?" with the same numbers.

The test being planned is the one :func:`flowlab.analysis.stats.conversion_by_variant` reports: a two-sided,
pooled two-proportion z-test of a variant against the control. The sample size is the standard normal
approximation for it (Fleiss; R's ``power.prop.test`` and statsmodels' ``power_proportions_2indep``)::

    p1 = baseline,  p2 = p1 * (1 + mde)  (relative)  or  p1 + mde  (absolute),  p̄ = (p1 + p2) / 2
    n  = ( z(1 - α'/2) * sqrt(2 p̄ (1 - p̄))  +  z(power) * sqrt(p1 (1 - p1) + p2 (1 - p2)) )² / (p2 - p1)²

per variant, rounded up. The null term uses the *pooled* variance because under "no difference" both arms
share one rate and the z-test pools them; the power term uses the *unpooled* variances because under the
alternative the arms really differ. (Evan Miller's calculator uses the baseline's variance in the null term
instead of the pooled one, so it asks for a few percent fewer guests.) With more than two variants every
variant is compared with the control, so α is split over those ``variants - 1`` comparisons (Bonferroni:
α' = α / (variants - 1)), which keeps the chance of any false winner at α. The far tail (a significant
result in the wrong direction) is ignored, as R and statsmodels do; it is negligible at useful powers.

Sitecore experiments carry the same three inputs in ``sampleSizeConfig`` (:func:`planning_defaults`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from flowlab.analysis.distributions import norm_cdf, norm_ppf

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_POWER",
    "PlanInputs",
    "detection_power",
    "minimum_detectable_effect",
    "planning_defaults",
    "planning_sentence",
    "power_curve",
    "sample_size",
]

DEFAULT_ALPHA = 0.05
#: 80% power: the convention of GrowthBook, Eppo, Evan Miller's calculator; Sitecore does not store one.
DEFAULT_POWER = 0.8


@dataclass(frozen=True)
class PlanInputs:
    """What a sample-size plan starts from; ``source`` says where it came from (for the page to show).

    ``baseline`` and (absolute) ``mde`` are fractions: 0.02 is 2%. ``relative=True`` reads ``mde`` as a
    relative lift (0.2 = +20%, so 2% → 2.4%). ``alpha`` is 1 − the confidence level.
    """

    baseline: float
    mde: float
    relative: bool = True
    alpha: float = DEFAULT_ALPHA
    power: float = DEFAULT_POWER
    source: str = "defaults"

    def __post_init__(self) -> None:
        _rates(self.baseline, self.mde, self.relative)
        _check_alpha_power(self.alpha, self.power)

    @property
    def confidence(self) -> float:
        return 1 - self.alpha

    def sample_size(self, variants: int = 2) -> int:
        """Guests per variant for these inputs (see :func:`sample_size`)."""
        return sample_size(
            self.baseline,
            self.mde,
            alpha=self.alpha,
            power=self.power,
            relative=self.relative,
            variants=variants,
        )


# --------------------------------------------------------------------------------------------- checks


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return number


def _rates(baseline: Any, mde: Any, relative: bool) -> tuple[float, float]:
    """The control and target conversion rates, or a ValueError that says what to change."""
    p1 = _number(baseline, "baseline")
    effect = _number(mde, "mde")
    if not 0 < p1 < 1:
        hint = f" (for {p1:g}% give {p1 / 100:g})" if 1 <= p1 < 100 else ""
        raise ValueError(
            f"baseline must be a conversion rate between 0 and 1, exclusive: 0.05 for 5%; got {p1:g}{hint}"
        )
    if effect <= 0:
        example = "0.2 for a 20% lift" if relative else "0.01 for +1 percentage point"
        raise ValueError(f"mde must be more than 0 ({example}); got {effect:g}")
    p2 = p1 * (1 + effect) if relative else p1 + effect
    if p2 >= 1:
        change = f"a {effect:.0%} lift" if relative else f"+{effect * 100:g} points"
        raise ValueError(
            f"{change} on a {p1:.1%} baseline is a target rate of {p2:.1%}, and a rate cannot reach 100%: "
            "lower the mde or the baseline"
        )
    return p1, p2


def _check_alpha_power(alpha: Any, power: Any) -> None:
    a, b = _number(alpha, "alpha"), _number(power, "power")
    if not 0 < a < 1:
        raise ValueError(f"alpha must be between 0 and 1 (0.05 for 95% confidence); got {a:g}")
    if not 0 < b < 1:
        raise ValueError(f"power must be between 0 and 1 (0.8 for 80%); got {b:g}")


def _check_variants(variants: Any) -> int:
    if isinstance(variants, bool) or not isinstance(variants, int | np.integer) or variants < 2:
        raise ValueError(
            f"variants must be a whole number of at least 2 (control included); got {variants!r}"
        )
    return int(variants)


def _check_guests(n: Any, name: str = "n_per_variant") -> float:
    guests = _number(n, name)
    if guests < 1:
        raise ValueError(f"{name} must be at least 1 guest; got {guests:g}")
    return guests


def _z_alpha(alpha: float, variants: int) -> float:
    """Two-sided critical value with α split over the ``variants - 1`` comparisons with the control."""
    return float(norm_ppf(1 - alpha / (variants - 1) / 2))


def _power(n: Any, p1: float, p2: Any, z_alpha: float) -> Any:
    """Power of the pooled z-test at ``n`` guests per variant (vectorised over ``n`` or ``p2``)."""
    p2 = np.asarray(p2, dtype=float)
    pooled = (p1 + p2) / 2
    null_sd = np.sqrt(2 * pooled * (1 - pooled))
    alt_sd = np.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return norm_cdf((np.abs(p2 - p1) * np.sqrt(n) - z_alpha * null_sd) / alt_sd)


# --------------------------------------------------------------------------------------------- public


def sample_size(
    baseline: float,
    mde: float,
    *,
    alpha: float = DEFAULT_ALPHA,
    power: float = DEFAULT_POWER,
    relative: bool = True,
    variants: int = 2,
) -> int:
    """Guests needed **per variant** to detect ``mde`` on ``baseline`` with a two-sided test.

    The formula and its choices (pooled null variance, Bonferroni over comparisons with the control) are
    in the module docstring. Example: ``sample_size(0.05, 0.2)`` is 8,158: at 5% conversion, a +20% lift
    (5% → 6%) needs 8,158 guests in each of A and B at 95% confidence and 80% power.
    """
    p1, p2 = _rates(baseline, mde, relative)
    _check_alpha_power(alpha, power)
    k = _check_variants(variants)
    pooled = (p1 + p2) / 2
    z_a, z_b = _z_alpha(alpha, k), float(norm_ppf(power))
    numerator = z_a * math.sqrt(2 * pooled * (1 - pooled)) + z_b * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    n = (numerator / (p2 - p1)) ** 2
    return max(1, math.ceil(n - 1e-9))  # 1e-9: a float crumb must not cost a whole extra guest


def detection_power(
    n_per_variant: float,
    baseline: float,
    mde: float,
    *,
    alpha: float = DEFAULT_ALPHA,
    relative: bool = True,
    variants: int = 2,
) -> float:
    """Chance that a run with ``n_per_variant`` guests per variant finds a true ``mde`` significant.

    The inverse of :func:`sample_size`: ``detection_power(sample_size(b, m), b, m)`` is just above 0.8.
    """
    n = _check_guests(n_per_variant)
    p1, p2 = _rates(baseline, mde, relative)
    _check_alpha_power(alpha, DEFAULT_POWER)
    return float(_power(n, p1, p2, _z_alpha(alpha, _check_variants(variants))))


def minimum_detectable_effect(
    n_per_variant: float,
    baseline: float,
    *,
    alpha: float = DEFAULT_ALPHA,
    power: float = DEFAULT_POWER,
    relative: bool = True,
    variants: int = 2,
) -> float:
    """The smallest lift a run of ``n_per_variant`` guests per variant detects with the given power.

    Relative (0.2 = +20%) or, with ``relative=False``, absolute (0.01 = +1 point). Solved numerically
    from the same power formula as :func:`sample_size`, so ``minimum_detectable_effect(sample_size(b, m),
    b)`` is ``m`` (a little under it: the sample size was rounded up). ``math.inf`` when even a rise to a
    100% conversion rate would not reach that power (a handful of guests).
    """
    n = _check_guests(n_per_variant)
    p1 = _number(baseline, "baseline")
    _rates(p1, 1e-9, False)  # baseline range check with the usual message
    _check_alpha_power(alpha, power)
    z_a = _z_alpha(alpha, _check_variants(variants))
    top = 1 - 1e-12
    if float(_power(n, p1, top, z_a)) < power:
        return math.inf
    from scipy import optimize  # only here: it costs half a second to import

    p2 = float(optimize.brentq(lambda q: float(_power(n, p1, q, z_a)) - power, p1 + 1e-12, top, xtol=1e-12))
    return (p2 - p1) / p1 if relative else p2 - p1


def power_curve(
    baseline: float,
    mde: float,
    *,
    alpha: float = DEFAULT_ALPHA,
    power: float = DEFAULT_POWER,
    relative: bool = True,
    variants: int = 2,
    max_guests: int | None = None,
    points: int = 60,
) -> pd.DataFrame:
    """Power against guests per variant for one effect, for a chart: ``guests_per_variant, power``.

    The curve runs from 1 guest to ``max_guests`` (default: twice the guests needed for ``power``, so the
    needed size sits in the middle), ``points`` rows, already aggregated for :func:`flowlab.analysis.charts.power_chart`.
    """
    p1, p2 = _rates(baseline, mde, relative)
    _check_alpha_power(alpha, power)
    k = _check_variants(variants)
    if points < 2:
        raise ValueError(f"points must be at least 2, got {points}")
    needed = sample_size(p1, mde, alpha=alpha, power=power, relative=relative, variants=k)
    top = int(_check_guests(max_guests, "max_guests")) if max_guests is not None else max(2 * needed, 2)
    guests = np.unique(np.linspace(1, top, points).round().astype(np.int64))
    return pd.DataFrame(
        {
            "guests_per_variant": guests,
            "power": np.asarray(_power(guests.astype(float), p1, p2, _z_alpha(alpha, k)), dtype=float),
        }
    )


def planning_defaults(flow_definition: Mapping[str, Any]) -> PlanInputs | None:
    """The plan a Sitecore flow definition carries in ``sampleSizeConfig``, or ``None`` if it has none.

    The export stores fractions (``{"baseValue": 0.02, "minimumDetectableDifference": 0.2,
    "confidenceLevel": 0.95}`` in Sitecore's demo export), and Sitecore documents the minimum detectable
    difference as a *relative* percent ("Base Rate %" 2%, "Minimum detectable difference %" 20%, "Confidence
    Level %" 95%: doc.sitecore.com, "Using minimum sample size"), so 0.2 means +20%. Power is not part of
    Sitecore's config: 80% (:data:`DEFAULT_POWER`). A config with a value out of range raises ValueError
    naming the field.
    """
    if not isinstance(flow_definition, Mapping):
        raise TypeError(
            f"flow_definition must be a mapping (the flow's JSON), not {type(flow_definition).__name__}"
        )
    config = flow_definition.get("sampleSizeConfig")
    if config is None:
        return None
    if not isinstance(config, Mapping):
        raise ValueError(f"sampleSizeConfig must be an object, got {type(config).__name__}")
    values: dict[str, float] = {}
    for field in ("baseValue", "minimumDetectableDifference", "confidenceLevel"):
        value = config.get(field)
        if value is None:
            return None  # a partial config says nothing the page can start from
        number = _number(value, f"sampleSizeConfig.{field}")
        if not 0 < number < 1:
            raise ValueError(
                f"sampleSizeConfig.{field} must be a fraction between 0 and 1 (0.02 for 2%), got {value!r}"
            )
        values[field] = number
    name = flow_definition.get("friendlyId") or flow_definition.get("name") or "the flow"
    try:
        return PlanInputs(
            baseline=values["baseValue"],
            mde=values["minimumDetectableDifference"],
            relative=True,
            alpha=round(1 - values["confidenceLevel"], 12),  # 0.05, not 0.050000000000000044
            power=DEFAULT_POWER,
            source=f"sampleSizeConfig of {name}",
        )
    except ValueError as error:
        raise ValueError(f"sampleSizeConfig of {name}: {error}") from None


def planning_sentence(guests_per_variant: int, plan: PlanInputs, *, variants: int = 2) -> str:
    """The line the page shows next to the verdict, e.g. "1,200 of the 8,158 guests per variant needed to
    detect a 20% lift at 95% confidence and 80% power (15%); this run can detect a lift of 56% or more."
    """
    needed = plan.sample_size(variants)
    effect = f"a {plan.mde:.0%} lift" if plan.relative else f"+{plan.mde * 100:.3g} points"
    have = max(int(guests_per_variant), 0)
    text = (
        f"{have:,} of the {needed:,} guests per variant needed to detect {effect} on a {plan.baseline * 100:.3g}% "
        f"baseline at {plan.confidence:.0%} confidence and {plan.power:.0%} power ({min(have / needed, 1):.0%})"
    )
    if have < 1:
        return text + "."
    mde = minimum_detectable_effect(
        have, plan.baseline, alpha=plan.alpha, power=plan.power, relative=plan.relative, variants=variants
    )
    if not math.isfinite(mde):
        return text + "; this run is too small to detect any lift."
    can = f"a lift of {mde:.0%}" if plan.relative else f"+{mde * 100:.2g} points"
    return text + f"; this run can detect {can} or more."
