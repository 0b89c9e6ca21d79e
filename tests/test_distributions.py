"""flowlab.analysis.distributions gives scipy.stats's values without importing scipy.stats (a second of start-up)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from flowlab.analysis import distributions as d

X = np.array([-8.0, -3.2, -1.0, 0.0, 0.4, 1.96, 5.0, 9.0])
Q = np.array([1e-12, 0.001, 0.025, 0.5, 0.8, 0.975, 0.999999])


def test_normal_functions_match_scipy_stats() -> None:
    np.testing.assert_allclose(d.norm_cdf(X), stats.norm.cdf(X), rtol=1e-12, atol=0)
    np.testing.assert_allclose(d.norm_sf(X), stats.norm.sf(X), rtol=1e-12, atol=0)
    np.testing.assert_allclose(d.norm_ppf(Q), stats.norm.ppf(Q), rtol=1e-12, atol=0)


@pytest.mark.parametrize("dof", [1, 2, 5, 30])
def test_chi_square_matches_scipy_stats(dof: int) -> None:
    x = np.array([0.0, 0.5, 3.84, 10.0, 80.0])
    np.testing.assert_allclose(d.chi2_sf(x, dof), stats.chi2.sf(x, dof), rtol=1e-10, atol=0)


def test_goodness_of_fit_matches_scipy_stats() -> None:
    observed = np.array([520, 480, 1012])
    expected = np.array([0.25, 0.25, 0.5]) * observed.sum()
    ours = d.chisquare(observed, expected)
    theirs = stats.chisquare(observed, expected)
    assert ours == pytest.approx((theirs.statistic, theirs.pvalue), rel=1e-12)


def test_the_analysis_modules_do_not_import_scipy_stats() -> None:
    code = (
        "import sys, flowlab.analysis, flowlab.analysis.planning, flowlab.analysis.sequential, flowlab.analysis.budget;"
        "print(sorted(m for m in ('scipy.stats', 'scipy.optimize') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
