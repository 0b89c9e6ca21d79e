"""Always-valid intervals and p-values for conversion lift, so a run can be read while it grows.

Why: a fixed-horizon interval (:func:`flowlab.analysis.stats.conversion_by_variant`) promises 95% coverage at
*one* planned look. Read it after every hundred guests and stop at the first "significant" look, and the
false-positive rate climbs far past 5% (20 looks at an A/A test: about a quarter of them "win"; see
:func:`simulate_aa`). An always-valid interval covers the true difference at every look at once, so
peeking, stopping early or continuing is safe.

The method is the mixture sequential probability ratio test (mSPRT) of Johari, Koomen, Pekelis and Walsh
("Peeking at A/B tests", KDD 2017), in the normal-mixture form GrowthBook and Eppo document. With an
estimate ``d`` (difference of rates, or relative lift) of variance ``σ²`` and a normal mixture of variance
``τ²`` over the true effect, the likelihood ratio against "effect = θ" is::

    Λ(θ) = sqrt(σ² / (σ² + τ²)) · exp( τ² (d − θ)² / (2 σ² (σ² + τ²)) )

It is a martingale under the null, so ``P(Λ ever reaches 1/α) ≤ α`` (Ville's inequality). The
always-valid p-value is ``min(1, 1/Λ(0))`` and the interval is every θ with ``Λ(θ) < 1/α``::

    d ± sqrt( σ² (σ² + τ²) / τ² · (2 ln(1/α) + ln((σ² + τ²) / σ²)) )

**Tuning parameter.** ``τ²`` decides *when* the interval is tightest. Like GrowthBook we set it from
``planned_guests`` (N*, the guests expected in the comparison, control plus variant; default 5,000 as in
GrowthBook): ``τ² = ρ² · N · σ²`` with ``ρ² = (−2 ln α + ln(1 − 2 ln α)) / N*``, which makes the interval
narrowest around N* guests (Howard et al. 2021, eq. 161 of arXiv:2103.06476). Any value keeps the
guarantee; a value close to the run's real size costs the least width (at N* the interval is about 1.5-2x
as wide as the fixed-horizon one; that is the price of being allowed to peek).

Variances are unpooled (``p(1-p)/n`` per arm) and, for the relative lift, from the delta method
(``σ² = var_v / p_c² + p_v² var_c / p_c⁴``), both as GrowthBook does. Intervals are normal approximations,
so they are NaN until both arms have a conversion and a non-conversion; each variant is compared with the
control at the chosen confidence (no multiple-comparison correction, as in ``conversion_by_variant``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from flowlab.analysis.distributions import norm_sf

__all__ = [
    "DEFAULT_PLANNED_GUESTS",
    "AASimulation",
    "always_valid_interval",
    "always_valid_p_value",
    "peeking_path",
    "peeking_sentence",
    "sequential_conversion",
    "simulate_aa",
]

#: GrowthBook's default "estimated number of users" for its sequential tuning parameter.
DEFAULT_PLANNED_GUESTS = 5000
#: At most this many looks in :func:`peeking_path` (each look is one conversion table).
MAX_LOOKS = 200

_FloatArray = npt.NDArray[np.float64]


# --------------------------------------------------------------------------------------------- core


def _check(confidence: float, planned_guests: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (0.95 for 95%), got {confidence}")
    if not math.isfinite(planned_guests) or planned_guests < 1:
        raise ValueError(
            f"planned_guests must be at least 1 (the guests you expect in a comparison), got {planned_guests}"
        )
    return 1 - confidence


def _rho2(alpha: float, planned_guests: float) -> float:
    """GrowthBook's ρ²: the mixture that makes the interval narrowest at ``planned_guests``."""
    log_alpha = math.log(alpha)
    return (-2 * log_alpha + math.log(1 - 2 * log_alpha)) / planned_guests


def _estimate(
    x_c: Any, n_c: Any, x_v: Any, n_v: Any, relative: bool
) -> tuple[_FloatArray, _FloatArray, _FloatArray]:
    """The estimate, its variance and the guests in the comparison; NaN where undefined."""
    xc, nc, xv, nv = (np.asarray(a, dtype=float) for a in (x_c, n_c, x_v, n_v))
    with np.errstate(divide="ignore", invalid="ignore"):
        pc, pv = xc / nc, xv / nv
        var_c, var_v = pc * (1 - pc) / nc, pv * (1 - pv) / nv
        if relative:
            estimate = pv / pc - 1
            variance = var_v / pc**2 + pv**2 * var_c / pc**4
        else:
            estimate = pv - pc
            variance = var_c + var_v
        # Both arms need a conversion and a non-conversion, or the normal approximation has no variance.
        defined = (xc > 0) & (xc < nc) & (xv > 0) & (xv < nv)
        variance = np.where(defined & np.isfinite(variance) & (variance > 0), variance, np.nan)
    return np.asarray(estimate, dtype=float), np.asarray(variance, dtype=float), nc + nv


def _halfwidth(
    variance: _FloatArray, guests: _FloatArray, alpha: float, planned_guests: float
) -> _FloatArray:
    mix = _rho2(alpha, planned_guests) * guests  # τ² / σ²
    with np.errstate(divide="ignore", invalid="ignore"):
        width2 = variance * (1 + mix) / mix * (2 * math.log(1 / alpha) + np.log1p(mix))
    return np.asarray(np.sqrt(width2), dtype=float)


def always_valid_interval(
    conversions_control: Any,
    guests_control: Any,
    conversions_variant: Any,
    guests_variant: Any,
    *,
    confidence: float = 0.95,
    planned_guests: float = DEFAULT_PLANNED_GUESTS,
    relative: bool = False,
) -> tuple[_FloatArray, _FloatArray]:
    """Always-valid interval for ``p_v − p_c`` (or the relative lift ``p_v / p_c − 1``), vectorised.

    Counts may be scalars or arrays (one comparison per element). See the module docstring for the
    formula and the ``planned_guests`` tuning parameter. NaN where an arm has only conversions or none.
    """
    alpha = _check(confidence, planned_guests)
    estimate, variance, guests = _estimate(
        conversions_control, guests_control, conversions_variant, guests_variant, relative
    )
    half = _halfwidth(variance, guests, alpha, planned_guests)
    return estimate - half, estimate + half


def always_valid_p_value(
    conversions_control: Any,
    guests_control: Any,
    conversions_variant: Any,
    guests_variant: Any,
    *,
    confidence: float = 0.95,
    planned_guests: float = DEFAULT_PLANNED_GUESTS,
    relative: bool = False,
) -> _FloatArray:
    """Always-valid p-value ``min(1, 1/Λ(0))`` for "no difference"; 1 where the variance is undefined.

    ``confidence`` only tunes the mixture (as for the interval), so that ``p ≤ 1 − confidence`` exactly
    when :func:`always_valid_interval` at that confidence excludes 0. A p-value read at any look, chosen
    in any way (including "stop as soon as it is small"), is still valid.
    """
    alpha = _check(confidence, planned_guests)
    estimate, variance, guests = _estimate(
        conversions_control, guests_control, conversions_variant, guests_variant, relative
    )
    mix = _rho2(alpha, planned_guests) * guests  # τ² / σ²
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_lr = -0.5 * np.log1p(mix) + mix * estimate**2 / (2 * variance * (1 + mix))
        p = np.minimum(1.0, np.exp(-log_lr))
    return np.asarray(np.where(np.isfinite(variance), p, 1.0), dtype=float)


# --------------------------------------------------------------------------------------------- runs


def sequential_conversion(
    joined: pd.DataFrame,
    *,
    control: str | None = None,
    confidence: float = 0.95,
    planned_guests: float = DEFAULT_PLANNED_GUESTS,
) -> pd.DataFrame:
    """:func:`~flowlab.analysis.stats.conversion_by_variant` with always-valid intervals and p-values.

    Same columns and rows, so the same charts take it; ``lift_low``, ``lift_high`` and ``p_value`` are
    the always-valid ones (the interval in the module docstring, on the relative lift; the p-value on the
    difference, like the fixed table's), and ``rate_difference_low``/``rate_difference_high`` are added.
    Wider than the fixed-horizon intervals by design: they stay valid however often the run is read.
    """
    _check(confidence, planned_guests)
    from flowlab.analysis import stats as analysis  # here, not at the top: stats re-exports this module

    table = analysis.conversion_by_variant(joined, control=control, confidence=confidence)
    if not len(table):
        return table.assign(
            rate_difference_low=pd.Series(dtype="float64"), rate_difference_high=pd.Series(dtype="float64")
        )
    x = table["conversions"].to_numpy(dtype=float)
    n = table["guests"].to_numpy(dtype=float)
    is_control = table["is_control"].to_numpy(dtype=bool)
    args = (x[0], n[0], x, n)
    diff_low, diff_high = always_valid_interval(*args, confidence=confidence, planned_guests=planned_guests)
    lift_low, lift_high = always_valid_interval(
        *args, confidence=confidence, planned_guests=planned_guests, relative=True
    )
    p_value = always_valid_p_value(*args, confidence=confidence, planned_guests=planned_guests)
    out = table.copy()
    out["lift_low"] = np.where(is_control, np.nan, lift_low)
    out["lift_high"] = np.where(is_control, np.nan, lift_high)
    out["p_value"] = np.where(is_control, np.nan, p_value)
    out["rate_difference_low"] = np.where(is_control, np.nan, diff_low)
    out["rate_difference_high"] = np.where(is_control, np.nan, diff_high)
    return out


def peeking_path(
    joined: pd.DataFrame,
    *,
    every: int | None = None,
    looks: int = 20,
    control: str | None = None,
    confidence: float = 0.95,
    planned_guests: float | None = None,
) -> pd.DataFrame:
    """Both kinds of interval at each look as the run grew (rows in run order), for "does peeking matter?".

    A look every ``every`` rows (default: ``looks`` evenly spaced looks, the last at the whole run).
    ``planned_guests`` defaults to the run's served guests, the size the analyst planned for. Columns:
    ``look, guests, variant, lift, fixed_low, fixed_high, fixed_p_value, fixed_significant,
    sequential_low, sequential_high, sequential_p_value, sequential_significant`` (one row per look and
    non-control variant).
    """
    alpha = _check(confidence, planned_guests or 1)
    from flowlab.analysis import stats as analysis  # here, not at the top: stats re-exports this module

    total = len(joined)
    stops: list[int] = []
    if every is None:
        if looks < 1:
            raise ValueError(f"looks must be at least 1, got {looks}")
        if total:
            stops = np.ceil(np.linspace(total / looks, total, looks)).astype(int).tolist()
    else:
        if every < 1:
            raise ValueError(f"every must be at least 1 row, got {every}")
        stops = [*range(every, total, every), total] if total else []
    ends = sorted({int(e) for e in stops if e > 0})
    if len(ends) > MAX_LOOKS:
        raise ValueError(f"{len(ends)} looks is too many (at most {MAX_LOOKS}): look less often")
    final = analysis.conversion_by_variant(joined, control=control, confidence=confidence)
    if control is None and len(final):
        control = str(final["variant"].iloc[0])  # the same control at every look
    planned = planned_guests if planned_guests is not None else float(max(final["guests"].sum(), 1))
    frames = []
    for look, end in enumerate(ends, start=1):
        part = joined.iloc[:end]
        fixed = analysis.conversion_by_variant(part, confidence=confidence, control=_present(part, control))
        if len(fixed) < 2 or not bool(fixed["is_control"].iloc[0]) or fixed["variant"].iloc[0] != control:
            continue
        seq = sequential_conversion(part, control=control, confidence=confidence, planned_guests=planned)
        rows = ~fixed["is_control"].to_numpy(dtype=bool)
        fixed_p = fixed["p_value"].to_numpy(dtype=float)[rows]
        seq_p = seq["p_value"].to_numpy(dtype=float)[rows]
        frames.append(
            pd.DataFrame(
                {
                    "look": look,
                    "guests": int(fixed["guests"].sum()),
                    "variant": fixed["variant"].to_numpy(dtype=object)[rows],
                    "lift": fixed["lift"].to_numpy(dtype=float)[rows],
                    "fixed_low": fixed["lift_low"].to_numpy(dtype=float)[rows],
                    "fixed_high": fixed["lift_high"].to_numpy(dtype=float)[rows],
                    "fixed_p_value": fixed_p,
                    "fixed_significant": fixed_p < alpha,
                    "sequential_low": seq["lift_low"].to_numpy(dtype=float)[rows],
                    "sequential_high": seq["lift_high"].to_numpy(dtype=float)[rows],
                    "sequential_p_value": seq_p,
                    "sequential_significant": seq_p <= alpha,
                }
            )
        )
    if not frames:
        return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in _PATH_DTYPES.items()})
    return pd.concat(frames, ignore_index=True)


_PATH_DTYPES = {
    "look": "int64",
    "guests": "int64",
    "variant": "object",
    "lift": "float64",
    "fixed_low": "float64",
    "fixed_high": "float64",
    "fixed_p_value": "float64",
    "fixed_significant": "bool",
    "sequential_low": "float64",
    "sequential_high": "float64",
    "sequential_p_value": "float64",
    "sequential_significant": "bool",
}


def _present(part: pd.DataFrame, control: str | None) -> str | None:
    """The control if this prefix of the run has served it (else the look is skipped)."""
    if control is None or "variant" not in part.columns:
        return None
    labels = part["variant"].astype(object).where(part["variant"].notna(), "").astype(str)
    return control if (labels == control).any() else None


def peeking_sentence(path: pd.DataFrame, *, confidence: float = 0.95) -> str:
    """Does peeking change the verdict? One sentence per variant from :func:`peeking_path`."""
    if not len(path):
        return "Too few guests to look at the run as it grew."
    looks = int(path["look"].nunique())
    parts = []
    for variant, rows in path.groupby("variant", sort=False):
        fixed = rows[rows["fixed_significant"]]
        seq = rows[rows["sequential_significant"]]
        last = rows.iloc[-1]
        text = f"{variant}: "
        if len(fixed):
            text += (
                f"a fixed-horizon test read at each of {looks} looks would have called it significant at "
                f"{len(fixed)} of them (first at {int(fixed['guests'].iloc[0]):,} guests)"
            )
        else:
            text += f"the fixed-horizon interval never excluded no change in {looks} looks"
        if len(seq):
            text += (
                f"; the always-valid interval excludes no change from {int(seq['guests'].iloc[0]):,} guests, "
                "so stopping there is safe."
            )
        elif bool(last["fixed_significant"]):
            text += (
                "; the always-valid interval does not exclude no change yet: significant at the planned "
                "end, not yet safe to call while peeking."
            )
        elif len(fixed):
            text += "; the always-valid interval never did, so those looks were noise."
        else:
            text += "; neither did the always-valid one."
        parts.append(text)
    return " ".join(parts)


# --------------------------------------------------------------------------------------------- A/A


@dataclass(frozen=True)
class AASimulation:
    """False-positive rates of A/A experiments read at several looks (see :func:`simulate_aa`).

    ``fixed_final``: share significant at the last look only (the planned read, ≈ α);
    ``fixed_peeking``: share where *any* look was significant with the fixed-horizon test;
    ``sequential_peeking``: the same with the always-valid p-value.
    """

    experiments: int
    looks: int
    guests: int
    rate: float
    alpha: float
    fixed_final: float
    fixed_peeking: float
    sequential_peeking: float

    def summary(self) -> str:
        return (
            f"{self.experiments} A/A experiments of {self.guests:,} guests at {self.rate:.0%} conversion, "
            f"{self.looks} looks: fixed-horizon {self.fixed_peeking:.0%} false positives when peeking "
            f"({self.fixed_final:.0%} at the final look only), sequential {self.sequential_peeking:.1%} "
            f"(alpha {self.alpha:.0%})"
        )


def simulate_aa(
    arms: Sequence[int] | npt.ArrayLike,
    *,
    rate: float,
    experiments: int = 200,
    looks: int = 20,
    alpha: float = 0.05,
    planned_guests: float | None = None,
    seed: int = 0,
) -> AASimulation:
    """Peek at ``experiments`` A/A tests and count how often each kind of test calls a winner.

    ``arms`` is the arm of each guest in arrival order (0 = control, 1 = variant), e.g. the sandbox's
    real bucketing of its demo guests. Every guest converts with the same ``rate`` whatever its arm
    (fixed ``seed``), so any "significant" look is a false positive. The fixed-horizon test is the
    pooled z-test of :func:`flowlab.analysis.stats.conversion_by_variant`; the sequential one is
    :func:`always_valid_p_value` tuned for ``planned_guests`` (default: all guests).
    """
    arm = np.asarray(arms, dtype=np.int64)
    if arm.ndim != 1 or not len(arm) or not np.isin(arm, (0, 1)).all():
        raise ValueError("arms must be a non-empty sequence of 0 (control) and 1 (variant)")
    if not 0 < rate < 1:
        raise ValueError(f"rate must be between 0 and 1 (0.1 for 10%), got {rate}")
    if experiments < 1 or looks < 1:
        raise ValueError(f"experiments and looks must be at least 1, got {experiments} and {looks}")
    _check(1 - alpha, planned_guests or 1)
    rng = np.random.default_rng(seed)
    converted = rng.random((experiments, len(arm))) < rate
    ends = np.unique(np.ceil(np.linspace(len(arm) / looks, len(arm), looks)).astype(np.int64)) - 1
    in_variant = arm == 1
    x_v = np.cumsum(converted & in_variant, axis=1)[:, ends].astype(float)
    x_c = np.cumsum(converted & ~in_variant, axis=1)[:, ends].astype(float)
    n_v = np.broadcast_to(np.cumsum(in_variant)[ends].astype(float), x_v.shape)
    n_c = np.broadcast_to(np.cumsum(~in_variant)[ends].astype(float), x_c.shape)

    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = (x_c + x_v) / (n_c + n_v)
        se = np.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_v))
        z = (x_v / n_v - x_c / n_c) / se
    fixed_p = np.where(se > 0, 2 * norm_sf(np.abs(np.nan_to_num(z))), 1.0)
    planned = planned_guests if planned_guests is not None else float(len(arm))
    seq_p = always_valid_p_value(x_c, n_c, x_v, n_v, confidence=1 - alpha, planned_guests=planned)
    return AASimulation(
        experiments=experiments,
        looks=len(ends),
        guests=len(arm),
        rate=rate,
        alpha=alpha,
        fixed_final=float((fixed_p[:, -1] < alpha).mean()),
        fixed_peeking=float((fixed_p < alpha).any(axis=1).mean()),
        sequential_peeking=float((seq_p <= alpha).any(axis=1).mean()),
    )
