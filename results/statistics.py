"""Statistics of the tables: mean and spread over seeds, Student-t confidence intervals and the
paired t-test of LTKD against its comparator, with Holm's adjustment.

The t quantiles and the paired test come from scipy.stats (a well-kept implementation rather
than our own); scipy is imported inside the functions, so reading results stays light.

- `summary(values)`: n, mean, sample standard deviation (ddof 1) and the two-sided 95% interval
  mean ± t_{0.975, n-1} · s / sqrt(n). One value: the mean alone, no spread and no interval.
- `paired_test(ours, theirs)`: two-sided paired t-test (scipy.stats.ttest_rel) on the pairs
  present in both mappings (key: seed and teacher seed), with the mean paired difference and its
  t-interval. Fewer than two pairs, or differences that are all equal (zero spread: t is 0/0 or
  ±inf, and scipy's p of 0 would read as a certain gain): no test (p is None) and a reason.
- `holm(p_values)`: Holm's step-down adjustment of a family of p-values.
"""
from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

CONFIDENCE = 0.95
ALPHA = 0.05  # significance level of the gain row's mark


def clean(values: Iterable) -> list[float]:
    """The finite numbers among `values` (None and NaN dropped)."""
    out = []
    for value in values:
        if value is None:
            continue
        value = float(value)
        if math.isfinite(value):
            out.append(value)
    return out


def t_interval(mean: float, std: float | None, n: int, level: float = CONFIDENCE) -> tuple[float, float] | None:
    """Two-sided Student-t interval of a mean of n values with sample std `std` (n - 1 degrees of
    freedom); None with fewer than two values."""
    if n < 2 or std is None or not math.isfinite(std):
        return None
    from scipy import stats

    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return mean - half, mean + half


@dataclass
class Summary:
    n: int
    mean: float | None
    std: float | None  # None with fewer than two values
    ci: tuple[float, float] | None  # None with fewer than two values


def summary(values: Iterable, level: float = CONFIDENCE) -> Summary:
    values = clean(values)
    if not values:
        return Summary(0, None, None, None)
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else None
    return Summary(len(values), mean, std, t_interval(mean, std, len(values), level))


@dataclass
class PairedTest:
    n_pairs: int
    mean_difference: float | None  # mean of ours - theirs over the pairs
    ci: tuple[float, float] | None  # t-interval of the mean difference
    statistic: float | None
    p_value: float | None  # two-sided; None when no test could be made
    reason: str | None = None  # why there is no test

    @property
    def significant(self) -> bool | None:
        """True / False at ALPHA; None without a test."""
        return None if self.p_value is None else self.p_value < ALPHA


def pair_values(pairs: Mapping) -> dict:
    """Finite values of a key -> value mapping."""
    return {key: float(value) for key, value in pairs.items()
            if value is not None and math.isfinite(float(value))}


def paired_test(ours: Mapping, theirs: Mapping, level: float = CONFIDENCE) -> PairedTest:
    """Paired two-sided t-test of `ours` against `theirs` (key -> value, e.g. (seed, teacher seed)
    -> accuracy) over the keys both hold."""
    ours, theirs = pair_values(ours), pair_values(theirs)
    keys = sorted(set(ours) & set(theirs), key=repr)
    a = [ours[k] for k in keys]
    b = [theirs[k] for k in keys]
    n = len(keys)
    if n == 0:
        return PairedTest(0, None, None, None, None, "no pair run by both")
    differences = [x - y for x, y in zip(a, b)]
    mean = statistics.fmean(differences)
    if n < 2:
        return PairedTest(n, mean, None, None, None, "one pair")
    std = statistics.stdev(differences)
    ci = t_interval(mean, std, n, level)
    # Equal up to float rounding (50.1 - 48 and 51.1 - 49 differ in the last bit): no spread.
    if max(differences) - min(differences) <= 1e-9 * max(1.0, max(abs(d) for d in differences)):
        return PairedTest(n, mean, None, None, None, f"all {n} differences equal: no test")
    from scipy import stats

    with warnings.catch_warnings():  # nearly constant differences: scipy warns about precision
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_rel(a, b)
    p = float(result.pvalue)
    statistic = float(result.statistic)
    if not (math.isfinite(p) and math.isfinite(statistic)):
        return PairedTest(n, mean, ci, None, None, "no finite test statistic: no test")
    return PairedTest(n, mean, ci, statistic, p)


def holm(p_values: Iterable[float | None]) -> list[float | None]:
    """Holm-adjusted p-values, in the input order; None (no test) stays None and is not counted.

    Sorted ascending p_(1) <= ... <= p_(m): adjusted p_(i) = max_{k <= i} min(1, (m - k + 1) p_(k)),
    so rejecting where adjusted p < alpha controls the family-wise error rate at alpha.
    """
    values = list(p_values)
    tested = sorted((p, i) for i, p in enumerate(values) if p is not None)
    m = len(tested)
    out: list[float | None] = [None] * len(values)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out
