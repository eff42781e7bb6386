"""Significance tests against scipy.stats on known samples, and Holm's correction by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from trainer.evaluation.significance import bootstrap_ci, holm, paired_test, seed_interval


def test_paired_test_matches_scipy():
    rng = np.random.default_rng(0)
    a = rng.random(200)
    b = a + 0.05 + rng.normal(0, 0.1, 200)
    got = paired_test(a, b)
    assert got.t_p == pytest.approx(stats.ttest_rel(b, a).pvalue)
    assert got.wilcoxon_p == pytest.approx(stats.wilcoxon(b, a).pvalue)
    assert got.mean_diff == pytest.approx((b - a).mean())
    assert got.ci_low < got.mean_diff < got.ci_high and got.users == 200
    assert got.t_p < 0.01


def test_paired_test_of_equal_samples_is_not_significant():
    a = np.array([0.0, 1.0, 0.5])
    got = paired_test(a, a.copy())
    assert (got.mean_diff, got.t_p, got.wilcoxon_p) == (0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="same 1-D shape"):
        paired_test(a, a[:2])


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 times 3, 2, 1 -> 0.03, 0.06, 0.04 -> monotone 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_seed_interval_is_the_t_interval():
    means = [0.18, 0.185, 0.176]
    m, low, high = seed_interval(means)
    want = stats.t.interval(0.95, 2, loc=np.mean(means), scale=stats.sem(means))
    assert (low, high) == pytest.approx(want) and m == pytest.approx(np.mean(means))
    assert seed_interval([0.2]) == (0.2, 0.2, 0.2)


def test_bootstrap_ci_brackets_the_mean():
    x = np.random.default_rng(1).normal(1.0, 1.0, 500)
    low, high = bootstrap_ci(x)
    assert low < x.mean() < high and high - low < 0.3
    assert bootstrap_ci(np.ones(5)) == (1.0, 1.0)
