"""The few normal and chi-square functions the analysis needs, from ``scipy.special`` alone.

``scipy.stats`` costs about a second to import on the project's 2-core machine (it pulls in most of
scipy), and the Analysis page paid it on its first render; ``scipy.special`` holds the same numerical
kernels (``ndtr``, ``ndtri``, ``chdtrc``) that ``scipy.stats.norm`` and ``chi2`` call, at a third of the
import cost. Values are identical to ``scipy.stats`` (tests compare them).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import special

__all__ = ["chi2_sf", "chisquare", "norm_cdf", "norm_ppf", "norm_sf"]


def norm_cdf(x: Any) -> Any:
    """Standard normal CDF (``scipy.stats.norm.cdf``)."""
    return special.ndtr(x)


def norm_sf(x: Any) -> Any:
    """Standard normal survival function, ``1 - cdf`` without cancellation (``scipy.stats.norm.sf``)."""
    return special.ndtr(np.negative(x))


def norm_ppf(q: Any) -> Any:
    """Standard normal quantile (``scipy.stats.norm.ppf``)."""
    return special.ndtri(q)


def chi2_sf(x: Any, dof: Any) -> Any:
    """Chi-square survival function (``scipy.stats.chi2.sf``)."""
    return special.chdtrc(dof, x)


def chisquare(observed: Any, expected: Any) -> tuple[float, float]:
    """Pearson's goodness-of-fit test, ``(statistic, p-value)`` with ``k - 1`` degrees of freedom.

    The same as ``scipy.stats.chisquare(observed, expected)`` when both sum to the same total.
    """
    o = np.asarray(observed, dtype=float)
    e = np.asarray(expected, dtype=float)
    statistic = float(np.sum((o - e) ** 2 / e))
    return statistic, float(chi2_sf(statistic, len(o) - 1))
