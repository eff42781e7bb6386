"""Significance of metric differences between runs on the same users (scipy.stats).

Per-user metrics are paired by user: a paired t-test and a Wilcoxon signed-rank test on the differences, a
bootstrap confidence interval of the mean difference, and Holm's step-down correction when several metrics (or
several comparisons) are tested at once. Seeds of one configuration are aggregated by a t interval over the
seeds' means (with one seed, a bootstrap interval over users).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 2000


@dataclasses.dataclass(frozen=True)
class PairedTest:
    """One metric, run B minus run A over the same users."""

    mean_diff: float
    ci_low: float
    ci_high: float
    t_p: float
    wilcoxon_p: float
    users: int


def bootstrap_ci(values: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` at `CONFIDENCE`."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2 or np.all(values == values[0]):
        m = float(values.mean()) if values.size else float("nan")
        return m, m
    res = stats.bootstrap(
        (values,), np.mean, confidence_level=CONFIDENCE, n_resamples=RESAMPLES, method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_test(a: np.ndarray, b: np.ndarray, seed: int = 0) -> PairedTest:
    """Paired t-test, Wilcoxon signed-rank test and bootstrap CI of ``mean(b - a)``; equal inputs give p = 1."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples need the same 1-D shape, got {a.shape} and {b.shape}")
    diff = b - a
    if not np.any(diff):
        return PairedTest(0.0, 0.0, 0.0, 1.0, 1.0, a.size)
    t_p = float(stats.ttest_rel(b, a).pvalue)
    w_p = float(stats.wilcoxon(b, a).pvalue)
    low, high = bootstrap_ci(diff, seed)
    return PairedTest(float(diff.mean()), low, high, t_p, w_p, a.size)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1), in the input order."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out.tolist()


def seed_interval(means: Sequence[float]) -> tuple[float, float, float]:
    """Mean and t interval at `CONFIDENCE` over the seeds' means (low = high = mean with one seed)."""
    x = np.asarray(means, dtype=np.float64)
    m = float(x.mean())
    if x.size < 2:
        return m, m, m
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return m, m - half, m + half
