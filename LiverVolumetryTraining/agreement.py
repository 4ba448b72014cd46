"""Agreement statistics between automated and reference measurements.

* :func:`icc_agreement`: intraclass correlation ICC(2,1) — two-way random effects,
  absolute agreement, single rater (Shrout & Fleiss ICC2; McGraw & Wong ICC(A,1)) —
  computed by pingouin, with its 95 % confidence interval. pingouin needs at least 5
  ratings, i.e. 3 cases for two raters.
* :func:`bland_altman`: bias (mean of automated − reference), SD of the differences and
  95 % limits of agreement, bias ± 1.96 SD.
* :func:`mann_whitney`: two-sided Mann–Whitney U test between two groups (e.g. the Dice
  of two cohorts), via scipy.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: How the ICC is defined, for reports.
ICC_FORM = "ICC(2,1): two-way random effects, absolute agreement, single rater (pingouin 'ICC2' / 'ICC(A,1)')"
#: Fewest cases for which an ICC is computed (pingouin needs at least 5 ratings).
MIN_ICC_CASES = 3
#: pingouin's names of the ICC(2,1) row: 'ICC2' in older releases, 'ICC(A,1)' from 0.6 on.
_ICC2_NAMES = ("ICC2", "ICC(A,1)")


@dataclass(frozen=True)
class ICCResult:
    """ICC(2,1) of two raters over ``n`` cases, with its 95 % confidence interval.

    ``icc`` is NaN when it is undefined (no variation between or within cases at all).
    The interval is pingouin's, which rounds it to 2 decimals; reports print it so.
    """

    icc: float
    ci95_low: float
    ci95_high: float
    n: int
    form: str = ICC_FORM


@dataclass(frozen=True)
class BlandAltman:
    """Bland–Altman agreement of paired values: differences are ``a - b``."""

    bias: float
    sd: float
    loa_low: float
    loa_high: float
    n: int


@dataclass(frozen=True)
class MannWhitney:
    """Two-sided Mann–Whitney U test of the values of ``group_a`` against ``group_b``."""

    group_a: str
    group_b: str
    n_a: int
    n_b: int
    median_a: float
    median_b: float
    u: float
    p_value: float


def _paired(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired values needed: got {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def icc_agreement(a: Sequence[float], b: Sequence[float]) -> ICCResult | None:
    """ICC(2,1) of paired ratings ``a`` (e.g. automated) and ``b`` (e.g. reference).

    Pairs with a non-finite value are left out. Returns None for fewer than
    :data:`MIN_ICC_CASES` usable cases.
    """
    import pandas as pd
    import pingouin

    x, y = _paired(a, b)
    n = len(x)
    if n < MIN_ICC_CASES:
        return None
    table = pd.DataFrame({"case": np.tile(np.arange(n), 2), "rater": np.repeat(["a", "b"], n),
                          "value": np.concatenate([x, y])})
    with warnings.catch_warnings():  # constant data: pingouin divides by zero and returns NaN;
        warnings.simplefilter("ignore")  # also its own pandas deprecation warnings
        result = pingouin.intraclass_corr(table, targets="case", raters="rater", ratings="value")
    row = result[result["Type"].isin(_ICC2_NAMES)]
    if len(row) != 1:
        raise RuntimeError(f"pingouin returned no ICC(2,1) row (types: {', '.join(result['Type'])})")
    ci_column = next((c for c in row.columns if str(c).startswith("CI95")), None)  # 'CI95%' in older releases
    low, high = (float(v) for v in row[ci_column].iloc[0]) if ci_column else (math.nan, math.nan)
    return ICCResult(icc=float(row["ICC"].iloc[0]), ci95_low=low, ci95_high=high, n=n)


def bland_altman(a: Sequence[float], b: Sequence[float]) -> BlandAltman | None:
    """Bias, SD (n − 1) and 95 % limits of agreement of ``a - b``; None for < 2 pairs."""
    x, y = _paired(a, b)
    if len(x) < 2:
        return None
    difference = x - y
    bias, sd = float(difference.mean()), float(difference.std(ddof=1))
    return BlandAltman(bias=bias, sd=sd, loa_low=bias - 1.96 * sd, loa_high=bias + 1.96 * sd, n=len(x))


def mann_whitney(values: Sequence[float], groups: Sequence[str]) -> MannWhitney | None:
    """Two-sided Mann–Whitney U of ``values`` split by ``groups``; None unless there are
    exactly two distinct groups, each with at least one finite value. ``u`` is the
    statistic of the first group (in sorted order)."""
    from scipy.stats import mannwhitneyu

    x = np.asarray(values, dtype=float)
    labels = np.asarray(groups, dtype=object)
    names = sorted(set(labels.tolist()))
    if len(names) != 2:
        return None
    first, second = (x[(labels == name) & np.isfinite(x)] for name in names)
    if len(first) == 0 or len(second) == 0:
        return None
    test = mannwhitneyu(first, second, alternative="two-sided")
    return MannWhitney(group_a=names[0], group_b=names[1], n_a=len(first), n_b=len(second),
                       median_a=float(np.median(first)), median_b=float(np.median(second)),
                       u=float(test.statistic), p_value=float(test.pvalue))
