"""The timeout budget: what share of each variant's guests would have seen the default experience.

A website does not wait for a slow decision: Sitecore's JSS personalize middleware gives up after
**400 ms** (its default since PR #1507, raised from 250 ms because "with 250 … the request gets timeout and
the user always gets the default experience") and serves the default page instead
(``shared/reference/sitecore-personalize-api.md`` §7). So a call slower than the budget is, for the
visitor, a call that never happened, and a variant whose decision is slower (a decision model calling a
slow connection) quietly loses part of its audience to the default. A batch run measures every call's
latency, which is all it takes to count them.

Pure pandas, like :mod:`flowlab.analysis.stats`: served rows only (ok and labelled; a failed call has no
variant and is :func:`flowlab.analysis.stats.errors_by_type`'s business, though its visitor saw the default too).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["JSS_TIMEOUT_MS", "budget_sentence", "timeout_budget"]

#: Sitecore JSS personalize middleware's default timeout for Personalize calls (reference §7).
JSS_TIMEOUT_MS = 400.0

_COLUMNS = {
    "variant": "object",
    "calls": "int64",
    "over_budget": "int64",
    "share_over": "float64",
    "share_over_low": "float64",
    "share_over_high": "float64",
    "p50": "float64",
    "p95": "float64",
    "p99": "float64",
    "budget_ms": "float64",
}


def _check_budget(budget_ms: float) -> float:
    if isinstance(budget_ms, bool) or not isinstance(budget_ms, int | float | np.integer | np.floating):
        raise TypeError(f"budget_ms must be a number of milliseconds, not {type(budget_ms).__name__}")
    budget = float(budget_ms)
    if not math.isfinite(budget) or budget <= 0:
        raise ValueError(
            f"budget_ms must be a positive number of milliseconds (400 for JSS), got {budget_ms}"
        )
    return budget


def timeout_budget(
    run: pd.DataFrame, budget_ms: float = JSS_TIMEOUT_MS, *, confidence: float = 0.95
) -> pd.DataFrame:
    """Per variant (and ``"(all)"``, last), the share of served calls slower than ``budget_ms``.

    Columns: ``variant, calls, over_budget, share_over, share_over_low, share_over_high, p50, p95, p99,
    budget_ms``. ``share_over`` is the share of the variant's calls with ``latency_ms > budget_ms``: those
    guests would have seen the default experience. Its interval is Wilson's
    (:func:`flowlab.analysis.stats.wilson_interval`: a share of 0% or 2% still gets an honest interval);
    percentiles are in milliseconds, as in :func:`flowlab.analysis.stats.latency_summary`. Rows with no
    latency are left out.
    """
    budget = _check_budget(budget_ms)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (0.95 for 95%), got {confidence}")
    from flowlab.analysis import stats as analysis  # here, not at the top: stats re-exports this module

    codes, names, latency = analysis._latency(run)
    if not len(latency):
        return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in _COLUMNS.items()})
    slow = latency > budget
    calls = np.bincount(codes, minlength=len(names))
    over = np.bincount(codes, weights=slow, minlength=len(names)).round().astype(np.int64)
    calls = np.append(calls, len(latency))
    over = np.append(over, int(slow.sum()))
    low, high = analysis.wilson_interval(over, calls, confidence)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    groups = [latency[order][bounds[i] : bounds[i + 1]] for i in range(len(names))] + [latency]
    percentiles = np.array([np.percentile(values, [50, 95, 99]) for values in groups], dtype=float)
    return pd.DataFrame(
        {
            "variant": pd.Series([*names, analysis.ALL], dtype=object),
            "calls": calls.astype(np.int64),
            "over_budget": over,
            "share_over": over / calls,
            "share_over_low": low,
            "share_over_high": high,
            "p50": percentiles[:, 0],
            "p95": percentiles[:, 1],
            "p99": percentiles[:, 2],
            "budget_ms": budget,
        }
    )


def _share(share: float) -> str:
    if share <= 0:
        return "0%"
    if share < 0.001:
        return "<0.1%"
    return f"{share:.1%}" if share < 0.01 else f"{share:.0%}"


def budget_sentence(budget: pd.DataFrame) -> str:
    """The line a person needs, from :func:`timeout_budget`'s table, e.g. "With JSS's 400 ms timeout, 7%
    of B's guests would have seen the default (A: 2%)." The page and the CLI's batch summary print it.
    """
    missing = [c for c in ("variant", "calls", "share_over", "p99", "budget_ms") if c not in budget.columns]
    if missing:
        raise ValueError(f"the budget table has no {missing[0]!r} column: pass timeout_budget(run)'s result")
    variants = budget[budget["variant"] != "(all)"]
    if not len(variants):
        return "No successful calls with a latency yet, so the timeout budget cannot be checked."
    limit = float(budget["budget_ms"].iloc[0])
    who = "JSS's 400 ms timeout" if limit == JSS_TIMEOUT_MS else f"a {limit:,g} ms timeout"
    shares = variants["share_over"].to_numpy(dtype=float)
    if not (shares > 0).any():
        slowest = variants.iloc[int(np.argmax(variants["p99"].to_numpy(dtype=float)))]
        return (
            f"With {who}, no guest would have seen the default: every call answered within {limit:,g} ms "
            f"(highest p99: {slowest['variant']}, {float(slowest['p99']):,.0f} ms)."
        )
    worst = int(np.argmax(shares))
    text = f"With {who}, {_share(shares[worst])} of {variants['variant'].iloc[worst]}'s guests would have seen the default"
    others = [
        f"{name}: {_share(share)}"
        for i, (name, share) in enumerate(zip(variants["variant"], shares, strict=True))
        if i != worst
    ]
    return text + (f" ({', '.join(others)})." if others else ".")
