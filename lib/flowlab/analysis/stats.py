"""Turn a batch run (one row per guest) into the tables an analyst reads: split health, lift, breakdowns.

Pure pandas/scipy: no I/O, no streamlit, no module state, inputs are never modified. Every function is
vectorised (labels are factorised once and counted with ``np.bincount``), so a whole results page costs
about 0.15 s on 100,000 guests; the page layer adds caching. Tables come out already aggregated (a few
rows per variant), which is what :mod:`flowlab.analysis.charts` expects, so Altair never sees raw rows.

Conventions shared by every function:

* Only *served* rows count towards variant statistics: ``ok`` is true (when the column exists) and the
  ``variant`` label is not empty. Failed calls are the business of :func:`errors_by_type`.
* Shares are fractions (0.58, not 58). Missing dimension values become ``"(missing)"``; levels past the
  cap are grouped as ``"(other)"``, following GrowthBook's dimension drill-down.
* Statistical choices are explained where they are made: Wilson intervals for proportions, Pearson
  chi-square at p < 0.001 for sample ratio mismatch, the Katz log interval for relative lift and a pooled
  two-proportion z-test for its p-value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

# Experiment planning, sequential intervals and the timeout budget (issue #10) live in their own modules;
# analysts look for them here too. Those modules import this one lazily, inside functions: no import cycle.
from flowlab.analysis.budget import budget_sentence, timeout_budget
from flowlab.analysis.distributions import chi2_sf, chisquare, norm_ppf, norm_sf
from flowlab.analysis.planning import (
    PlanInputs,
    detection_power,
    minimum_detectable_effect,
    planning_defaults,
    planning_sentence,
    power_curve,
    sample_size,
)
from flowlab.analysis.sequential import (
    always_valid_interval,
    always_valid_p_value,
    peeking_path,
    peeking_sentence,
    sequential_conversion,
    simulate_aa,
)

__all__ = [
    "ALL",
    "MIN_PER_VARIANT",
    "MISSING",
    "OTHER",
    "UNKNOWN_ERROR",
    "PlanInputs",
    "RunComparison",
    "SplitHealth",
    "always_valid_interval",
    "always_valid_p_value",
    "breakdown",
    "budget_sentence",
    "compare_runs",
    "conversion_by_variant",
    "detection_accuracy",
    "detection_power",
    "errors_by_type",
    "join_outcomes",
    "latency_histogram",
    "latency_summary",
    "minimum_detectable_effect",
    "offers_by_variant",
    "peeking_path",
    "peeking_sentence",
    "planning_defaults",
    "planning_sentence",
    "power_curve",
    "sample_size",
    "sequential_conversion",
    "simulate_aa",
    "split_health",
    "split_health_by",
    "timeout_budget",
    "variant_order",
    "wilson_interval",
]

OTHER = "(other)"
MISSING = "(missing)"
ALL = "(all)"
UNKNOWN_ERROR = "(unknown)"

#: GrowthBook's guard: below 8 guests per variant the chi-square approximation is too rough to alarm on.
MIN_PER_VARIANT = 8

_TRUE_STRINGS = ("true", "1", "yes", "y", "t")
_FloatArray = npt.NDArray[np.float64]
_IntArray = npt.NDArray[np.intp]
_CONTROL_NAMES = ("control", "a", "baseline", "default")


# --------------------------------------------------------------------------------------------- results


@dataclass(frozen=True, eq=False)
class SplitHealth:
    """Outcome of a sample ratio mismatch check (``eq=False``: DataFrames have no truth value).

    ``table`` has one row per variant: ``variant, count, share, share_low, share_high, expected_share,
    difference, status`` where status is ``"expected"`` or ``"unexpected"`` (a label outside ``expected``;
    its share is of all served guests and it is left out of the test).
    """

    table: pd.DataFrame
    chi2: float
    p_value: float
    srm: bool
    verdict: str


@dataclass(frozen=True, eq=False)
class RunComparison:
    """What changed between two runs of the same flow (e.g. before and after a decision-table edit).

    ``variants``: share per variant in each run; ``offers``: share of each variant's guests given each
    offer in each run; ``switched``: a sample of guests served in both runs whose variant changed, with
    ``switched_count`` the full count out of ``common_guests`` guests served in both.

    ``changed``: a sample of guests served in both runs whose *answer* changed (variant or offers), with
    both answers and, when the runs have them, both sandbox execution refs (the traces say why; e.g. a
    simulated DRAFT flow against the live one, #11); ``changed_count`` the full count.
    """

    variants: pd.DataFrame
    offers: pd.DataFrame
    switched: pd.DataFrame
    summary: str
    switched_count: int = 0
    common_guests: int = 0
    changed: pd.DataFrame = field(default_factory=pd.DataFrame)
    changed_count: int = 0

    @property
    def changed_share(self) -> float | None:
        """Share of the guests served in both runs whose answer changed (None when there are none)."""
        return self.changed_count / self.common_guests if self.common_guests else None


# --------------------------------------------------------------------------------------------- helpers


def wilson_interval(successes: Any, n: Any, confidence: float = 0.95) -> tuple[_FloatArray, _FloatArray]:
    """Wilson score interval for a proportion, vectorised; NaN where ``n`` is 0.

    Wilson rather than the textbook normal (Wald) interval because Wald collapses to zero width at 0% or
    100% and undercovers for small counts or rare events, both common here (a variant seen by 30 guests,
    a 2% conversion rate), while Wilson stays inside [0, 1] and keeps close to nominal coverage.
    """
    x = np.asarray(successes, dtype=float)
    size = np.asarray(n, dtype=float)
    z = float(norm_ppf(0.5 + confidence / 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = x / size
        denom = 1 + z * z / size
        centre = (p + z * z / (2 * size)) / denom
        half = z * np.sqrt(p * (1 - p) / size + z * z / (4 * size * size)) / denom
        # Exact at the edges (0 and n successes), where rounding would otherwise leave 1e-19 crumbs.
        low = np.where(size > 0, np.where(x <= 0, 0.0, np.clip(centre - half, 0.0, 1.0)), np.nan)
        high = np.where(size > 0, np.where(x >= size, 1.0, np.clip(centre + half, 0.0, 1.0)), np.nan)
    return low.astype(float), high.astype(float)


def variant_order(labels: Iterable[str]) -> list[str]:
    """The display order shared by every table and chart: names, then ``#fingerprints``, then ``(notes)``."""

    def key(label: str) -> tuple[int, str, str]:
        group = 2 if label.startswith("(") else 1 if label.startswith("#") else 0
        return (group, label.casefold(), label)

    return sorted({str(label) for label in labels}, key=key)


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str = "the run") -> None:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{what} must be a pandas DataFrame, not {type(frame).__name__}")
    for column in columns:
        if column not in frame.columns:
            have = ", ".join(map(str, frame.columns)) or "none"
            raise ValueError(f"{what} has no {column!r} column: it has {have}")


def _as_bool(values: pd.Series) -> pd.Series:
    """Booleans from bools, 0/1 or strings such as ``"True"``/``"yes"`` (CSV round trips); NaN is false."""
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.fillna(False).astype(bool)
    if pd.api.types.is_numeric_dtype(values.dtype):
        return values.fillna(0).astype(float) != 0
    return values.astype(str).str.strip().str.lower().isin(_TRUE_STRINGS)


def _labels(values: pd.Series) -> pd.Series:
    """Labels as plain strings, NaN/None as ``""``."""
    if pd.api.types.is_string_dtype(values.dtype) and not pd.api.types.is_object_dtype(values.dtype):
        return values.fillna("").astype(str)
    return values.astype(object).where(values.notna(), "").astype(str)


def _ok_mask(runs: pd.DataFrame) -> npt.NDArray[np.bool_]:
    if "ok" in runs.columns:
        return _as_bool(runs["ok"]).to_numpy(dtype=bool)
    return np.ones(len(runs), dtype=bool)


def _served_mask(runs: pd.DataFrame, column: str = "variant") -> npt.NDArray[np.bool_]:
    """Rows that count for variant statistics: ok (when known) and labelled."""
    values = runs[column]
    labelled = values.notna().to_numpy(dtype=bool) & (_labels(values) != "").to_numpy(dtype=bool)
    return _ok_mask(runs) & labelled


def _served(runs: pd.DataFrame, column: str = "variant") -> pd.Series:
    """Labels of served rows, indexed like ``runs``."""
    return _labels(runs[column][_served_mask(runs, column)])


def _text(value: Any) -> str:
    if isinstance(value, float | np.floating) and math.isfinite(value) and float(value).is_integer():
        return str(int(value))  # tier 1.0 (a CSV column with gaps) reads as "1"
    return str(value)


def _encode(values: pd.Series, *, missing: str = "") -> tuple[_IntArray, list[str]]:
    """An integer code per row and the distinct texts, so grouping is ``np.bincount`` not string hashing.

    NaN and ``""`` become ``missing``; values with the same text (``1`` and ``"1"``) share a code.
    """
    dtype = values.dtype
    if pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype):
        # Fast path for text columns (the common case): distinct values are already distinct texts.
        raw, uniques = pd.factorize(values.fillna(""), use_na_sentinel=True)
        texts: list[str] = uniques.tolist()
        if missing and "" in texts:
            texts[texts.index("")] = missing
        return raw.astype(np.intp), texts
    raw, uniques = pd.factorize(values, use_na_sentinel=True)
    if pd.api.types.is_float_dtype(dtype):
        floats = np.asarray(uniques, dtype=float)
        whole = np.isfinite(floats) & (floats == np.round(floats)) & (np.abs(floats) < 2.0**53)
        as_int = np.where(whole, floats, 0.0).astype(np.int64).astype(str)
        names = np.where(whole, as_int, floats.astype(str)).tolist()
    elif pd.api.types.is_numeric_dtype(dtype):
        names = np.asarray(uniques).astype(str).tolist()
    else:
        names = [_text(u) for u in uniques]
    names = [missing if name == "" else name for name in names]
    if len(raw) and raw.min() < 0:
        names.append(missing)
        raw = np.where(raw < 0, len(names) - 1, raw)
    merged, merged_names = pd.factorize(pd.Index(names, dtype=object))
    codes = merged[raw] if len(raw) else np.zeros(0, dtype=np.intp)
    return codes.astype(np.intp), [str(name) for name in merged_names]


def _key_text(values: pd.Series) -> pd.Series:
    """A key column as text (ids read from a CSV may be numbers), positionally indexed."""
    if pd.api.types.is_string_dtype(values.dtype) and not pd.api.types.is_object_dtype(values.dtype):
        return values.fillna("").reset_index(drop=True)
    codes, names = _encode(values)
    return pd.Series(np.asarray(names, dtype=object)[codes] if len(codes) else [], dtype=object)


def _reorder(codes: _IntArray, names: Sequence[str], order: Sequence[str]) -> _IntArray:
    """Recode so that code ``i`` means ``order[i]`` (names missing from ``order`` become -1)."""
    position = {name: i for i, name in enumerate(order)}
    lookup = np.array([position.get(name, -1) for name in names], dtype=np.intp)
    return lookup[codes] if len(codes) else codes


def _encode_variants(labels: pd.Series) -> tuple[_IntArray, list[str]]:
    codes, names = _encode(labels)
    order = variant_order(names)
    return _reorder(codes, names, order), order


def _levels(values: pd.Series, max_levels: int) -> tuple[_IntArray, list[str]]:
    """Level codes (biggest first, ties by name) with missing as ``(missing)`` and the tail as ``(other)``."""
    if max_levels < 1:
        raise ValueError(f"max_levels must be at least 1, got {max_levels}")
    codes, names = _encode(values, missing=MISSING)
    counts = np.bincount(codes, minlength=len(names))
    ranked = sorted(range(len(names)), key=lambda i: (-int(counts[i]), names[i]))
    lookup = np.full(len(names), min(len(names), max_levels), dtype=np.intp)
    keep = ranked[:max_levels]
    lookup[keep] = np.arange(len(keep))
    order = [names[i] for i in keep] + ([OTHER] if len(ranked) > max_levels else [])
    return (lookup[codes] if len(codes) else codes), order


def _crosstab(rows: _IntArray, n_rows: int, cols: _IntArray, n_cols: int) -> npt.NDArray[np.int64]:
    """Counts of (row, column) code pairs as an ``n_rows x n_cols`` matrix."""
    flat = np.bincount(rows * n_cols + cols, minlength=n_rows * n_cols)
    return flat.reshape(n_rows, n_cols).astype(np.int64)


def _normalise_expected(expected: Mapping[str, float]) -> dict[str, float]:
    """Shares from shares or weights ({"A": 50, "B": 50} works); zero-weight variants are dropped."""
    weights = {str(k): float(v) for k, v in expected.items()}
    bad = {k: v for k, v in weights.items() if not math.isfinite(v) or v < 0}
    if bad:
        raise ValueError(f"expected shares must be finite and non-negative: {bad}")
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("expected shares must add up to more than zero")
    return {k: v / total for k, v in weights.items() if v > 0}


def _pct(share: float, *, digits: int = 0) -> str:
    value = round(share * 100, digits)
    text = f"{value:.{digits}f}"
    return f"{text}%"


def _shares_text(shares: Sequence[float]) -> str:
    if len(shares) > 5:
        return "shares"
    whole = all(abs(s * 100 - round(s * 100)) < 0.05 for s in shares)
    return "/".join(f"{s * 100:.0f}" if whole else f"{s * 100:.1f}" for s in shares)


def _p_text(p: float) -> str:
    if not math.isfinite(p):
        return "p not available"
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def _int_text(n: int) -> str:
    return f"{n:,}"


# --------------------------------------------------------------------------------------------- split


def _chi2_rows(observed: _FloatArray, shares: _FloatArray) -> tuple[_FloatArray, _FloatArray]:
    """Pearson chi-square goodness of fit per row of ``observed`` against ``shares`` (NaN where n == 0)."""
    n = observed.sum(axis=1)
    expected = n[:, None] * shares[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = ((observed - expected) ** 2 / expected).sum(axis=1)
    chi2 = np.where(n > 0, chi2, np.nan)
    dof = len(shares) - 1
    p = chi2_sf(chi2, dof) if dof > 0 else np.full(len(chi2), np.nan)
    return chi2.astype(float), np.asarray(p, dtype=float)


def split_health(
    runs: pd.DataFrame,
    expected: Mapping[str, float] | None = None,
    *,
    column: str = "variant",
    alpha: float = 0.001,
) -> SplitHealth:
    """Is traffic split between variants the way the flow says? A sample ratio mismatch (SRM) check.

    Pearson chi-square goodness of fit of the served counts against ``expected`` shares (or weights; equal
    shares over the observed labels when omitted). The default ``alpha = 0.001`` follows GrowthBook and Eppo:
    the check is run again and again while a batch fills and on every dimension, so a strict threshold
    keeps false alarms rare, while real SRMs (broken targeting, caching, bots) give p-values far below it.
    No alarm is raised below 8 guests per variant, where the test is unreliable.
    """
    _require(runs, [column])
    labels = _served(runs, column)
    counts = labels.value_counts()
    served_total = int(counts.sum())

    if expected is not None:
        shares = _normalise_expected(expected)
    else:
        observed_names = variant_order(counts.index)
        shares = {name: 1 / len(observed_names) for name in observed_names}
    names = [name for name in variant_order(shares) if name in shares]
    unexpected = [name for name in variant_order(counts.index) if name not in shares]

    observed = np.array([int(counts.get(name, 0)) for name in names], dtype=float)
    expected_shares = np.array([shares[name] for name in names], dtype=float)
    tested = int(observed.sum())
    low, high = wilson_interval(observed, tested)
    # Unexpected labels: shares of all served guests (they are outside the tested design).
    extra = np.array([int(counts[name]) for name in unexpected], dtype=float)
    extra_low, extra_high = wilson_interval(extra, served_total)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.concatenate([observed / tested, extra / served_total])
    expected_column = np.concatenate([expected_shares, np.full(len(unexpected), np.nan)])
    table = pd.DataFrame(
        {
            "variant": pd.Series([*names, *unexpected], dtype=object),
            "count": np.concatenate([observed, extra]).astype("int64"),
            "share": share,
            "share_low": np.concatenate([low, extra_low]),
            "share_high": np.concatenate([high, extra_high]),
            "expected_share": expected_column,
            "difference": share - expected_column,
            "status": pd.Series(["expected"] * len(names) + ["unexpected"] * len(unexpected), dtype=object),
        }
    )

    chi2, p_value, srm = math.nan, math.nan, False
    k = len(names)
    if k >= 2 and tested > 0:
        chi2, p_value = chisquare(observed, expected_shares * tested)
        srm = p_value < alpha and tested >= MIN_PER_VARIANT * k

    verdict = _split_verdict(
        table, names, unexpected, tested, served_total, k, p_value, srm, alpha, expected is None
    )
    return SplitHealth(table=table, chi2=chi2, p_value=p_value, srm=bool(srm), verdict=verdict)


def _split_verdict(
    table: pd.DataFrame,
    names: list[str],
    unexpected: list[str],
    tested: int,
    served_total: int,
    k: int,
    p_value: float,
    srm: bool,
    alpha: float,
    equal: bool,
) -> str:
    note = ""
    if unexpected and served_total:
        extra = served_total - tested
        shown = ", ".join(unexpected[:3]) + (" …" if len(unexpected) > 3 else "")
        note = (
            f" Also, {_int_text(extra)} guests ({_pct(extra / served_total, digits=1)}) got a label outside "
            f"the expected variants ({shown}); they are left out of the test."
        )
    if served_total == 0:
        return "No successful responses yet, so the split cannot be checked."
    if tested == 0:
        return (
            f"None of the {_int_text(served_total)} successful responses carried an expected variant label. "
            "Check the variant detection path or the expected variant names." + note
        )
    if k < 2:
        only = names[0] if names else "?"
        if equal:
            return (
                f"Only one variant ({only}) was served, to {_int_text(tested)} guests, so there is no split "
                "to check. If the flow should split traffic, check that the experiment is live and that its "
                "variants return different content."
            )
        return f"Only one variant ({only}) is expected, so there is no split to check." + note
    expected_text = _shares_text(table.loc[table["status"] == "expected", "expected_share"].tolist())
    if tested < MIN_PER_VARIANT * k:
        return (
            f"Too few guests to judge the split: {_int_text(tested)} across {k} variants, and at least "
            f"{MIN_PER_VARIANT * k} are needed. Run a bigger batch." + note
        )
    if not srm and alpha <= p_value < 0.01:  # Statsig's "yellow" band: worth a second look, not an alarm
        return (
            f"Borderline split: observed shares are close to the expected {expected_text} but "
            f"{_p_text(p_value)}; not a mismatch at p < {alpha:g}. Check again as the batch grows." + note
        )
    if not srm:
        return (
            f"Healthy split: observed shares match the expected {expected_text} ({_p_text(p_value)})." + note
        )
    tested_rows = table[table["status"] == "expected"]
    difference = tested_rows["difference"].to_numpy(dtype=float)
    order = np.lexsort((-difference, -np.abs(difference)))
    worst = tested_rows.iloc[int(order[0])]
    observed_share, expected_share = float(worst["share"]), float(worst["expected_share"])
    digits = 0 if round(observed_share * 100) != round(expected_share * 100) else 1
    return (
        f"Sample ratio mismatch: {worst['variant']} got {_pct(observed_share, digits=digits)} of guests "
        f"where {_pct(expected_share, digits=0 if digits == 0 else 1)} was expected ({_p_text(p_value)}). "
        "Check targeting, caching or bot filtering before trusting results." + note
    )


def split_health_by(
    runs: pd.DataFrame,
    dimension: str,
    expected: Mapping[str, float] | None = None,
    *,
    max_levels: int = 10,
    column: str = "variant",
    alpha: float = 0.001,
) -> pd.DataFrame:
    """The SRM test within each level of a dimension (Eppo's "dimensional SRM"; Statsig's SRM drivers).

    An overall healthy split can hide one broken segment (a country behind a cache, a device with a bot).
    Without ``expected``, every level is tested against equal shares over the variants seen in the whole
    run, so a level missing a variant is flagged too. Columns: ``level, guests, chi2, p_value, srm,
    variant, share, expected_share`` where the last three name the variant furthest from its expected share.
    With many levels some p-values are small by chance; p < 0.001 keeps that rare.
    """
    _require(runs, [column, dimension])
    mask = _served_mask(runs, column)
    level_codes, order = _levels(runs[dimension][mask], max_levels)
    variant_codes, seen = _encode_variants(_labels(runs[column][mask]))
    if expected is not None:
        shares = _normalise_expected(expected)
    else:
        shares = {name: 1 / len(seen) for name in seen}
    names = [name for name in variant_order(shares) if name in shares]
    columns = ["level", "guests", "chi2", "p_value", "srm", "variant", "share", "expected_share"]
    if not mask.any() or not names:
        return pd.DataFrame({name: pd.Series(dtype=_BY_DTYPES[name]) for name in columns})

    counts = _crosstab(level_codes, len(order), variant_codes, len(seen))
    position = {name: j for j, name in enumerate(seen)}
    observed = np.zeros((len(order), len(names)), dtype=float)
    for j, name in enumerate(names):
        if name in position:
            observed[:, j] = counts[:, position[name]]
    share_vector = np.array([shares[name] for name in names], dtype=float)
    chi2, p = _chi2_rows(observed, share_vector)
    n = observed.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        observed_share = observed / n[:, None]
    deviation = np.nan_to_num(observed_share - share_vector[None, :], nan=0.0)
    worst = np.abs(deviation).argmax(axis=1) if len(names) else np.zeros(len(order), dtype=int)
    rows = np.arange(len(order))
    enough = n >= MIN_PER_VARIANT * len(names)
    return pd.DataFrame(
        {
            "level": order,
            "guests": n.astype("int64"),
            "chi2": chi2,
            "p_value": p,
            "srm": (np.nan_to_num(p, nan=1.0) < alpha) & enough,
            "variant": [names[i] for i in worst],
            "share": observed_share[rows, worst],
            "expected_share": share_vector[worst],
        }
    )


_BY_DTYPES: dict[str, str] = {
    "level": "object",
    "guests": "int64",
    "chi2": "float64",
    "p_value": "float64",
    "srm": "bool",
    "variant": "object",
    "share": "float64",
    "expected_share": "float64",
}


# --------------------------------------------------------------------------------------------- outcomes


def join_outcomes(runs: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """The run with ``converted`` (bool) and ``revenue`` (float) per guest; guests without outcomes get 0.

    A left join on ``guest`` compared as text (a CSV may read ids as numbers). Several outcome rows for a
    guest are combined (converted if any row converted, revenue summed) so the run keeps one row per guest.
    Outcome columns replace any ``converted``/``revenue`` columns the run already had.
    """
    _require(runs, ["guest"])
    _require(outcomes, ["guest", "converted"], what="the outcomes table")
    # One factorisation over both key columns (as text) gives shared guest codes: no hashing twice.
    keys = pd.concat([_key_text(runs["guest"]), _key_text(outcomes["guest"])], ignore_index=True)
    codes, distinct = pd.factorize(keys)
    run_codes, outcome_codes = codes[: len(runs)], codes[len(runs) :]
    converted = _as_bool(outcomes["converted"]).to_numpy(dtype=float)
    revenue = (
        pd.to_numeric(outcomes["revenue"], errors="coerce").fillna(0.0).to_numpy(dtype=float)
        if "revenue" in outcomes.columns
        else np.zeros(len(outcomes))
    )
    guest_converted = np.bincount(outcome_codes, weights=converted, minlength=len(distinct)) > 0
    guest_revenue = np.bincount(outcome_codes, weights=revenue, minlength=len(distinct))
    joined = runs.drop(columns=[c for c in ("converted", "revenue") if c in runs.columns])
    joined["converted"] = guest_converted[run_codes].astype(bool)
    joined["revenue"] = guest_revenue[run_codes].astype(float)
    return joined


def _default_control(labels: Sequence[str], counts: pd.Series) -> str:
    folded = {label.strip().casefold(): label for label in labels}
    for name in _CONTROL_NAMES:
        if name in folded:
            return folded[name]
    for label in labels:
        if "control" in label.casefold():
            return label
    ranked = sorted(labels, key=lambda label: (-int(counts[label]), variant_order(labels).index(label)))
    return ranked[0]


def conversion_by_variant(
    joined: pd.DataFrame, *, control: str | None = None, confidence: float = 0.95
) -> pd.DataFrame:
    """Conversion rate per variant and relative lift against the control, with intervals and p-values.

    Columns: ``variant, is_control, guests, conversions, rate, rate_low, rate_high, revenue,
    revenue_per_guest, rate_difference, lift, lift_low, lift_high, p_value`` (control row first; lift
    columns are NaN for the control).

    * Rate intervals: Wilson (see :func:`wilson_interval`).
    * Lift ``(p_v - p_c) / p_c``: Katz log interval, i.e. the delta method on ``log(p_v / p_c)`` with
      ``se² = 1/x_v - 1/n_v + 1/x_c - 1/n_c``, exponentiated back. The ratio's sampling distribution is
      skewed; on the log scale it is close to normal, so the interval is asymmetric the way it should be.
      Undefined (NaN) when either arm has no conversions.
    * p-value: two-sided pooled two-proportion z-test (the test most platforms report). It works on the
      difference, the interval on the ratio, so right at the edge the two can disagree. Batch runs
      sample decisions, not a randomised experiment with real exposure: read it as a sanity check.

    The control defaults to a variant named "control"/"A"/"baseline"/"default" (any case), then one whose
    name contains "control", then the most frequent.
    """
    _require(joined, ["variant", "converted"], what="the joined run")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    mask = _served_mask(joined)
    codes, names = _encode_variants(_labels(joined["variant"][mask]))
    converted = _as_bool(joined["converted"][mask]).to_numpy(dtype=float)
    has_revenue = "revenue" in joined.columns
    columns = [
        "variant",
        "is_control",
        "guests",
        "conversions",
        "rate",
        "rate_low",
        "rate_high",
        "revenue",
        "revenue_per_guest",
        "rate_difference",
        "lift",
        "lift_low",
        "lift_high",
        "p_value",
    ]
    if not names:
        if control is not None:
            raise ValueError(f"control {control!r} is not among the variants: there are no served rows")
        empty = {c: pd.Series(dtype="float64") for c in columns}
        empty["variant"] = pd.Series(dtype="object")
        empty["is_control"] = pd.Series(dtype="bool")
        empty["guests"] = pd.Series(dtype="int64")
        empty["conversions"] = pd.Series(dtype="int64")
        return pd.DataFrame(empty)

    k = len(names)
    guests = np.bincount(codes, minlength=k).astype(float)
    conversions = np.bincount(codes, weights=converted, minlength=k)
    if has_revenue:
        values = pd.to_numeric(joined["revenue"][mask], errors="coerce").fillna(0.0).to_numpy(dtype=float)
        revenue_sum = np.bincount(codes, weights=values, minlength=k)
    else:
        revenue_sum = np.full(k, np.nan)
    if control is None:
        control = _default_control(names, pd.Series(guests, index=names))
    elif control not in names:
        raise ValueError(f"control {control!r} is not among the variants: {names}")
    ordered = [control, *[name for name in names if name != control]]
    pick = np.array([names.index(name) for name in ordered], dtype=np.intp)
    n, x, revenue = guests[pick], conversions[pick], revenue_sum[pick]
    rate = x / n
    low, high = wilson_interval(x, n, confidence)
    n_c, x_c = n[0], x[0]
    p_c = x_c / n_c
    z = float(norm_ppf(0.5 + confidence / 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = np.log(rate) - np.log(p_c)
        se = np.sqrt(1 / x - 1 / n + 1 / x_c - 1 / n_c)
        defined = (x > 0) & (x_c > 0)
        lift = np.where(p_c > 0, rate / p_c - 1, np.nan)
        lift_low = np.where(defined, np.exp(log_ratio - z * se) - 1, np.nan)
        lift_high = np.where(defined, np.exp(log_ratio + z * se) - 1, np.nan)
        pooled = (x + x_c) / (n + n_c)
        se_diff = np.sqrt(pooled * (1 - pooled) * (1 / n + 1 / n_c))
        z_stat = (rate - p_c) / se_diff
    p_value = np.where(se_diff > 0, 2 * norm_sf(np.abs(np.nan_to_num(z_stat))), 1.0)
    is_control = np.arange(len(ordered)) == 0
    return pd.DataFrame(
        {
            "variant": ordered,
            "is_control": is_control,
            "guests": n.astype("int64"),
            "conversions": x.astype("int64"),
            "rate": rate,
            "rate_low": low,
            "rate_high": high,
            "revenue": revenue,
            "revenue_per_guest": revenue / n,
            "rate_difference": rate - p_c,
            "lift": np.where(is_control, np.nan, lift),
            "lift_low": np.where(is_control, np.nan, lift_low),
            "lift_high": np.where(is_control, np.nan, lift_high),
            "p_value": np.where(is_control, np.nan, p_value),
        }
    )


# --------------------------------------------------------------------------------------------- breakdowns


def breakdown(
    runs: pd.DataFrame,
    dimension: str,
    *,
    value: str = "variant",
    max_levels: int = 10,
    ok_only: bool | None = None,
) -> pd.DataFrame:
    """Counts and shares of ``value`` within each level of ``dimension``, long format for charts.

    Columns: ``<dimension>, <value>, count, share, level_count``; ``share`` is within the level.
    Levels are the ``max_levels`` biggest (rest ``"(other)"``, last), so the table stays chart-sized.
    ``ok_only`` defaults to true when ``value`` is ``"variant"`` (failed calls have no variant) and to
    false otherwise, so ``value="error_type"`` shows failures per level.
    """
    _require(runs, [dimension, value])
    if dimension == value:
        raise ValueError(f"dimension and value must differ, both are {dimension!r}")
    reserved = {"count", "share", "level_count"}
    if {dimension, value} & reserved:
        raise ValueError(f"dimension/value cannot be named {sorted(reserved)}")
    if ok_only is None:
        ok_only = value == "variant"
    mask = _served_mask(runs, value) if ok_only else np.ones(len(runs), dtype=bool)
    level_codes, levels = _levels(runs[dimension][mask], max_levels)
    value_codes, names = _encode(runs[value][mask], missing="(none)")
    values = variant_order(names)
    grid = _crosstab(level_codes, len(levels), _reorder(value_codes, names, values), len(values))
    level_index, value_index = np.nonzero(grid)
    count = grid[level_index, value_index]
    level_count = grid.sum(axis=1)[level_index]
    return pd.DataFrame(
        {
            dimension: pd.Series([levels[i] for i in level_index], dtype=object),
            value: pd.Series([values[j] for j in value_index], dtype=object),
            "count": count.astype("int64"),
            "share": count / level_count if len(count) else np.zeros(0),
            "level_count": level_count.astype("int64"),
        }
    )


def _offer_titles(raw: Any) -> tuple[str, ...]:
    """Offer titles from the ``offers`` cell: a JSON list of titles (or of offer objects), or a list."""
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return ()
    items: Any = raw
    if isinstance(raw, str):
        text = raw.strip()
        if not text:
            return ()
        try:
            items = json.loads(text)
        except ValueError:
            return (text,)
    if isinstance(items, str):
        items = [items]
    if isinstance(items, np.ndarray):
        items = items.tolist()
    if not isinstance(items, list | tuple):
        return ()
    titles: list[str] = []
    for item in items:
        if isinstance(item, Mapping):
            title = item.get("title") or item.get("name") or item.get("ref") or item.get("key")
            text = str(title) if title else json.dumps(item, sort_keys=True, default=str)
        else:
            text = str(item)
        if text and text not in titles:
            titles.append(text)
    return tuple(titles)


def _offer_matrix(
    runs: pd.DataFrame,
) -> tuple[list[str], npt.NDArray[np.int64], list[str], npt.NDArray[np.int64]]:
    """Served variants, guests per variant, offer titles, and guests per (variant, offer) as a matrix.

    Cells are parsed once per distinct text (a flow returns few distinct offer lists), then the
    (variant, cell) counts are exploded into (variant, offer) counts with array arithmetic.
    """
    mask = _served_mask(runs)
    codes, variants = _encode_variants(_labels(runs["variant"][mask]))
    guests = np.bincount(codes, minlength=len(variants)).astype(np.int64)
    cells = runs["offers"][mask]
    try:
        cell_codes, uniques = pd.factorize(cells, use_na_sentinel=False)
        parsed = [_offer_titles(u) for u in uniques]
    except TypeError:  # unhashable cells (lists from Parquet): parse row by row
        rows = pd.Series([_offer_titles(v) for v in cells], dtype=object)
        cell_codes, distinct = pd.factorize(rows)
        parsed = [tuple(u) for u in distinct]
    offer_index: dict[str, int] = {}
    per_cell = [[offer_index.setdefault(title, len(offer_index)) for title in titles] for titles in parsed]
    offers = list(offer_index)
    matrix = np.zeros((len(variants), len(offers)), dtype=np.int64)
    if not offers or not len(codes):
        return variants, guests, offers, matrix
    n_cells = len(parsed)
    pairs, pair_n = np.unique(codes.astype(np.int64) * n_cells + cell_codes, return_counts=True)
    pair_variant, pair_cell = pairs // n_cells, pairs % n_cells
    lengths = np.array([len(cell) for cell in per_cell], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    flat = np.array([i for cell in per_cell for i in cell], dtype=np.intp)
    repeat = lengths[pair_cell]
    offsets = np.repeat(starts[pair_cell] - (np.cumsum(repeat) - repeat), repeat) + np.arange(repeat.sum())
    np.add.at(matrix, (np.repeat(pair_variant, repeat), flat[offsets]), np.repeat(pair_n, repeat))
    return variants, guests, offers, matrix


def offers_by_variant(runs: pd.DataFrame, *, top: int | None = 10) -> pd.DataFrame:
    """How often each offer was served per variant: ``variant, offer, count, guests, share``.

    The ``offers`` cells are exploded (each offer counted once per guest); ``share`` is of the variant's
    guests. The same ``top`` offers overall (``None``: all) are listed for every variant, zeros included,
    so variants compare side by side: "B gave Free shipping to 0%" is an answer too.
    """
    _require(runs, ["variant", "offers"])
    variants, guests, offers, matrix = _offer_matrix(runs)
    totals = matrix.sum(axis=0)
    ranked = sorted(range(len(offers)), key=lambda j: (-int(totals[j]), offers[j]))
    if top is not None:
        ranked = ranked[: max(top, 0)]
    if not ranked or not variants:
        return pd.DataFrame(
            {
                "variant": pd.Series(dtype=object),
                "offer": pd.Series(dtype=object),
                "count": pd.Series(dtype="int64"),
                "guests": pd.Series(dtype="int64"),
                "share": pd.Series(dtype="float64"),
            }
        )
    count = matrix[:, ranked].ravel()
    size = np.repeat(guests, len(ranked))
    return pd.DataFrame(
        {
            "variant": pd.Series(np.repeat(np.array(variants, dtype=object), len(ranked)), dtype=object),
            "offer": pd.Series(
                np.tile(np.array([offers[j] for j in ranked], dtype=object), len(variants)), dtype=object
            ),
            "count": count,
            "guests": size,
            "share": count / size,
        }
    )


# --------------------------------------------------------------------------------------------- latency


def _latency(runs: pd.DataFrame) -> tuple[_IntArray, list[str], _FloatArray]:
    """Variant codes, variant names and latencies of served calls with a known latency."""
    _require(runs, ["variant", "latency_ms"])
    mask = _served_mask(runs)
    codes, names = _encode_variants(_labels(runs["variant"][mask]))
    latency = pd.to_numeric(runs["latency_ms"][mask], errors="coerce").to_numpy(dtype=float)
    known = ~np.isnan(latency)
    codes, latency = codes[known], latency[known]
    present = np.bincount(codes, minlength=len(names)) > 0
    kept = [name for name, seen in zip(names, present, strict=True) if seen]
    return _reorder(codes, names, kept), kept, latency


def latency_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Latency of served calls per variant and overall (``"(all)"``, last row).

    Columns: ``variant, count, mean, p50, p95, p99, max`` in milliseconds. Percentiles interpolate
    linearly, like ``numpy.percentile``. Tails (p95/p99) matter more than the mean for page budgets.
    """
    codes, names, latency = _latency(runs)
    order = np.argsort(codes, kind="stable")
    grouped = latency[order]
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    groups = [grouped[bounds[i] : bounds[i + 1]] for i in range(len(names))]
    if len(latency):
        groups.append(latency)
    rows = [
        (
            len(values),
            float(values.mean()),
            *np.percentile(values, [50, 95, 99]).tolist(),
            float(values.max()),
        )
        for values in groups
    ]
    table = pd.DataFrame(rows, columns=["count", "mean", "p50", "p95", "p99", "max"], dtype=float)
    table.insert(0, "variant", pd.Series([*names, ALL][: len(rows)], dtype=object))
    table["count"] = table["count"].astype("int64")
    return table


def latency_histogram(runs: pd.DataFrame, bins: int = 30) -> pd.DataFrame:
    """Latency of served calls pre-binned for charts: ``variant, bin_start, bin_end, count, share``.

    All variants share the same ``bins`` equal-width bins over the observed range, so bars line up;
    ``share`` is of that variant's calls. Every (variant, bin) pair is present, zeros included.
    """
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    codes, names, latency = _latency(runs)
    if not len(latency):
        return pd.DataFrame(
            {
                "variant": pd.Series(dtype=object),
                "bin_start": pd.Series(dtype="float64"),
                "bin_end": pd.Series(dtype="float64"),
                "count": pd.Series(dtype="int64"),
                "share": pd.Series(dtype="float64"),
            }
        )
    edges = np.histogram_bin_edges(latency, bins=bins)
    index = np.clip(np.searchsorted(edges, latency, side="right") - 1, 0, bins - 1)
    counts = _crosstab(codes, len(names), index.astype(np.intp), bins)
    totals = counts.sum(axis=1, keepdims=True)
    return pd.DataFrame(
        {
            "variant": pd.Series(np.repeat(np.array(names, dtype=object), bins), dtype=object),
            "bin_start": np.tile(edges[:-1], len(names)),
            "bin_end": np.tile(edges[1:], len(names)),
            "count": counts.ravel(),
            "share": (counts / totals).ravel(),
        }
    )


# --------------------------------------------------------------------------------------------- errors


def errors_by_type(runs: pd.DataFrame) -> pd.DataFrame:
    """Failed calls per ``error_type``: ``error_type, count, share, share_of_errors, example``.

    ``share`` is of all rows in the run (what fraction of guests got no answer of that kind);
    ``example`` is the first message seen for the type. A failure without a type is ``"(unknown)"``.
    """
    _require(runs, ["error_type"])
    types = runs["error_type"]
    failed = ~_ok_mask(runs) if "ok" in runs.columns else (_labels(types) != "").to_numpy(dtype=bool)
    codes, names = _encode(types[failed], missing=UNKNOWN_ERROR)
    if not len(codes):
        return pd.DataFrame(
            {
                "error_type": pd.Series(dtype=object),
                "count": pd.Series(dtype="int64"),
                "share": pd.Series(dtype="float64"),
                "share_of_errors": pd.Series(dtype="float64"),
                "example": pd.Series(dtype=object),
            }
        )
    counts = np.bincount(codes, minlength=len(names))
    examples = [""] * len(names)
    if "error" in runs.columns:
        messages = _labels(runs["error"][failed]).to_numpy(dtype=object)
        said = messages != ""
        seen, first = np.unique(codes[said], return_index=True)
        for code, at in zip(seen.tolist(), first.tolist(), strict=True):
            examples[code] = str(messages[said][at])
    order = sorted(range(len(names)), key=lambda i: (-int(counts[i]), names[i]))
    count = counts[order].astype("int64")
    return pd.DataFrame(
        {
            "error_type": pd.Series([names[i] for i in order], dtype=object),
            "count": count,
            "share": count / len(runs),
            "share_of_errors": count / count.sum(),
            "example": pd.Series([examples[i] for i in order], dtype=object),
        }
    )


# --------------------------------------------------------------------------------------------- comparison


def _variant_shares(runs: pd.DataFrame) -> pd.DataFrame:
    counts = _served(runs).value_counts()
    total = int(counts.sum())
    return pd.DataFrame({"count": counts, "share": counts / total if total else counts.astype(float)})


def compare_runs(
    before: pd.DataFrame, after: pd.DataFrame, *, key: str = "guest", sample: int = 20
) -> RunComparison:
    """Compare two runs of a flow: variant shares, offers per variant, and guests that switched variant.

    Shares are of served guests in each run; ``change`` is ``after - before`` (0.08 = +8 points). Only
    guests served in both runs can switch; a guest appearing twice in a run counts with its last row.
    ``switched`` holds the first ``sample`` switchers in the after run's order.
    """
    _require(before, [key, "variant"], what="the before run")
    _require(after, [key, "variant"], what="the after run")

    b, a = _variant_shares(before), _variant_shares(after)
    names = variant_order([*b.index, *a.index])
    variants = pd.DataFrame(
        {
            "variant": names,
            "count_before": b["count"].reindex(names, fill_value=0).to_numpy(dtype="int64"),
            "share_before": b["share"].reindex(names, fill_value=0.0).to_numpy(dtype=float),
            "count_after": a["count"].reindex(names, fill_value=0).to_numpy(dtype="int64"),
            "share_after": a["share"].reindex(names, fill_value=0.0).to_numpy(dtype=float),
        }
    )
    variants["change"] = variants["share_after"] - variants["share_before"]

    offers = _compare_offers(before, after, set(b.index), set(a.index))

    # One factorisation over both runs' keys, then a guest's last served row in each run.
    before_mask, after_mask = _served_mask(before), _served_mask(after)
    keys = pd.concat(
        [_key_text(before[key][before_mask]), _key_text(after[key][after_mask])], ignore_index=True
    )
    codes, distinct = pd.factorize(keys)
    split = int(before_mask.sum())
    before_labels = _labels(before["variant"][before_mask]).to_numpy(dtype=object)
    after_labels = _labels(after["variant"][after_mask]).to_numpy(dtype=object)

    def last_rows(run_codes: _IntArray) -> tuple[_IntArray, _IntArray]:
        found, from_end = np.unique(run_codes[::-1], return_index=True)
        return found.astype(np.intp), (len(run_codes) - 1 - from_end).astype(np.intp)

    before_codes, before_rows = last_rows(codes[:split])
    after_codes, after_rows = last_rows(codes[split:])
    in_order = np.argsort(after_rows, kind="stable")
    after_codes, after_rows = after_codes[in_order], after_rows[in_order]
    lookup = np.full(len(distinct), -1, dtype=np.intp)
    lookup[before_codes] = before_rows
    position = lookup[after_codes]
    common = position >= 0
    was = before_labels[position[common]]
    now = after_labels[after_rows[common]]
    moved = was != now
    take = min(max(sample, 0), int(moved.sum()))
    key_names = np.asarray(distinct, dtype=object)
    switched = pd.DataFrame(
        {
            key: pd.Series(key_names[after_codes[common][moved][:take]], dtype=object),
            "variant_before": pd.Series(was[moved][:take], dtype=object),
            "variant_after": pd.Series(now[moved][:take], dtype=object),
        }
    )
    common_count, changed_count = int(common.sum()), int(moved.sum())

    # The whole answer: a guest whose variant stayed but whose offers changed counts too.
    before_rows_common, after_rows_common = position[common], after_rows[common]
    offers_was = _offer_keys(before, before_mask)[before_rows_common]
    offers_now = _offer_keys(after, after_mask)[after_rows_common]
    answer_moved = moved | (offers_was != offers_now)
    pick = np.flatnonzero(answer_moved)[: max(sample, 0)]
    changed_frame = pd.DataFrame(
        {
            key: pd.Series(key_names[after_codes[common][pick]], dtype=object),
            "variant_before": pd.Series(was[pick], dtype=object),
            "variant_after": pd.Series(now[pick], dtype=object),
            "offers_before": pd.Series([" | ".join(o) for o in offers_was[pick]], dtype=object),
            "offers_after": pd.Series([" | ".join(o) for o in offers_now[pick]], dtype=object),
        }
    )
    if "execution_ref" in before.columns and "execution_ref" in after.columns:
        refs_before = _labels(before["execution_ref"][before_mask]).to_numpy(dtype=object)
        refs_after = _labels(after["execution_ref"][after_mask]).to_numpy(dtype=object)
        changed_frame["execution_before"] = pd.Series(refs_before[before_rows_common[pick]], dtype=object)
        changed_frame["execution_after"] = pd.Series(refs_after[after_rows_common[pick]], dtype=object)

    summary = _comparison_summary(variants, offers, common_count, changed_count)
    answers_changed = int(answer_moved.sum())
    if common_count and answers_changed != changed_count:
        summary += (
            f" {_int_text(answers_changed)} ({_pct(answers_changed / common_count, digits=1)}) got a "
            "different answer (variant or offers)."
        )
    return RunComparison(
        variants=variants,
        offers=offers,
        switched=switched,
        summary=summary,
        switched_count=changed_count,
        common_guests=common_count,
        changed=changed_frame,
        changed_count=answers_changed,
    )


def _offer_keys(run: pd.DataFrame, mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.object_]:
    """Each masked row's offer titles as a tuple (parsed once per distinct cell); () without offers."""
    out = np.empty(int(mask.sum()), dtype=object)
    if "offers" not in run.columns:
        for i in range(len(out)):
            out[i] = ()
        return out
    cells = run["offers"][mask]
    try:
        codes, uniques = pd.factorize(cells, use_na_sentinel=False)
        parsed = [_offer_titles(u) for u in uniques]
    except TypeError:  # unhashable cells (lists from Parquet)
        codes, parsed = np.arange(len(cells)), [_offer_titles(v) for v in cells]
    table = np.empty(len(parsed), dtype=object)
    for i, titles in enumerate(parsed):
        table[i] = titles
    return table[codes] if len(codes) else out


def _offer_shares(run: pd.DataFrame) -> pd.Series:
    variants, guests, offers, matrix = _offer_matrix(run)
    index = pd.MultiIndex.from_product([variants, offers], names=["variant", "offer"])
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = (matrix / guests[:, None]).ravel()
    return pd.Series(shares, index=index, dtype=float)


def _compare_offers(
    before: pd.DataFrame, after: pd.DataFrame, before_variants: set[str], after_variants: set[str]
) -> pd.DataFrame:
    columns = ["variant", "offer", "share_before", "share_after", "change"]
    if "offers" not in before.columns or "offers" not in after.columns:
        return pd.DataFrame(
            {c: pd.Series(dtype=object if c in ("variant", "offer") else "float64") for c in columns}
        )
    b, a = _offer_shares(before), _offer_shares(after)
    index = b.index.union(a.index)
    table = pd.DataFrame({"share_before": b.reindex(index), "share_after": a.reindex(index)}).reset_index()
    # An offer a served variant never got is a real 0%; a variant absent from a run stays NaN.
    table.loc[table["share_before"].isna() & table["variant"].isin(before_variants), "share_before"] = 0.0
    table.loc[table["share_after"].isna() & table["variant"].isin(after_variants), "share_after"] = 0.0
    table["change"] = table["share_after"] - table["share_before"]
    rank = {name: i for i, name in enumerate(variant_order(table["variant"]))}
    table = table.assign(_rank=table["variant"].map(rank), _size=-table["change"].abs().fillna(0.0))
    table = table.sort_values(["_rank", "_size", "offer"]).drop(columns=["_rank", "_size"])
    return table[columns].reset_index(drop=True)


def _comparison_summary(variants: pd.DataFrame, offers: pd.DataFrame, common: int, changed: int) -> str:
    parts: list[str] = []
    if common:
        parts.append(
            f"{_int_text(common)} guests were served in both runs; {_int_text(changed)} "
            f"({_pct(changed / common, digits=1)}) got a different variant."
        )
    else:
        parts.append("No guest was served in both runs, so nobody can be followed from one run to the other.")
    if len(variants):
        change = variants["change"].to_numpy(dtype=float)
        moved = variants.iloc[int(np.lexsort((-change, -np.abs(change)))[0])]  # ties: name the gainer
        if abs(float(moved["change"])) >= 0.0005:
            parts.append(
                f"Biggest share change: {moved['variant']} {_pct(float(moved['share_before']), digits=1)} → "
                f"{_pct(float(moved['share_after']), digits=1)} ({float(moved['change']) * 100:+.1f} pts)."
            )
        else:
            parts.append("Variant shares are unchanged.")
    changes = offers.dropna(subset=["change"]) if len(offers) else offers
    if len(changes):
        moved = changes.iloc[int(np.argmax(changes["change"].abs().to_numpy()))]
        if abs(float(moved["change"])) >= 0.0005:
            parts.append(
                f"Biggest offer change: {moved['offer']!s} in {moved['variant']} "
                f"{_pct(float(moved['share_before']), digits=1)} → "
                f"{_pct(float(moved['share_after']), digits=1)}."
            )
    return " ".join(parts)


# --------------------------------------------------------------------------------------------- detection


def detection_accuracy(runs: pd.DataFrame) -> float | None:
    """How well detected labels agree with the sandbox's true assignment; ``None`` without ``true_variant``.

    Labels are arbitrary (a fingerprint, an offer title), so each detected label is mapped to the true
    variant it most often stands for, and we count the served rows where that mapping holds. This
    measures purity: 1.0 means no label mixes two true variants. It does not penalise one true variant
    split over several labels (e.g. personalised bodies); compare label and variant counts for that.
    """
    _require(runs, ["variant"])
    if "true_variant" not in runs.columns:
        return None
    mask = _served_mask(runs)
    truth = _labels(runs["true_variant"][mask])
    known = (truth != "").to_numpy(dtype=bool)
    if not known.any():
        return None
    label_codes, _ = _encode(runs["variant"][mask][known])
    truth_codes, truth_names = _encode(truth[known])
    width = max(len(truth_names), 1)
    pairs, counts = np.unique(label_codes.astype(np.int64) * width + truth_codes, return_counts=True)
    best = np.zeros(int(label_codes.max()) + 1, dtype=np.int64)
    np.maximum.at(best, pairs // width, counts)
    return int(best.sum()) / int(known.sum())
