"""Spec for minidp/stats.py: bootstrap and paired intervals, the t-interval over seeds, the verdict rule.

Independent references: simulation (normal samples of known mean: how often does the interval cover it), the
closed-form t-interval with t quantiles from a printed table (and scipy.stats.t when scipy is installed), the
closed-form variance of a paired difference, and a two-scene oIoU whose bootstrap distribution can be written
down by hand.

Run: python -m pytest -q tests/test_stats.py
"""

import math

import numpy as np
import pytest

from minidp.stats import (bootstrap_ci, paired_diff_ci, ratio_ci, ratio_columns, ratio_of_sums, seed_interval,
                          t_cdf, t_quantile, verdict)

# ---- bootstrap over scenes ---------------------------------------------------------------------------------


def test_bootstrap_ci_covers_the_true_mean_about_95_percent_of_the_time():
    # 800 experiments of 200 normal scenes each: a 95 % interval must cover the true mean 95 +- 2 % of the time
    # (the binomial standard error of the coverage is 0.8 % here). 1000 draws per interval keep this at ~2 s.
    g = np.random.default_rng(0)
    trials, covered = 800, 0
    for i in range(trials):
        x = g.normal(3.0, 2.0, 200)
        lo, hi = bootstrap_ci(x, n_boot=1000, seed=i)
        covered += lo <= 3.0 <= hi
    assert 0.93 <= covered / trials <= 0.97


def test_bootstrap_ci_is_close_to_the_normal_interval_of_a_mean():
    # for a mean of n values the interval is about mean +- 1.96 s / sqrt(n)
    x = np.random.default_rng(1).normal(0.0, 1.0, 1000)
    lo, hi = bootstrap_ci(x)
    half = 1.96 * x.std(ddof=1) / math.sqrt(x.size)
    assert lo == pytest.approx(x.mean() - half, abs=0.1 * half)
    assert hi == pytest.approx(x.mean() + half, abs=0.1 * half)


def test_nan_scenes_are_dropped_not_counted():
    x = np.random.default_rng(2).normal(size=50)
    with_nan = np.concatenate([x[:20], [np.nan, np.nan], x[20:]])
    # the same finite rows in the same order draw the same resamples
    assert bootstrap_ci(with_nan, stat=np.mean) == bootstrap_ci(x, stat=np.mean)
    b = x + 1.0
    a_nan, b_nan = np.concatenate([x, [np.nan, 5.0]]), np.concatenate([b, [7.0, np.nan]])
    assert paired_diff_ci(a_nan, b_nan) == paired_diff_ci(x, b)  # dropped where EITHER run is NaN


def test_every_nan_is_a_clear_error():
    with pytest.raises(ValueError, match="no scene left"):
        bootstrap_ci([np.nan, np.nan])


# ---- paired intervals ---------------------------------------------------------------------------------------


def test_paired_ci_is_at_least_3x_narrower_than_one_runs_for_correlated_runs():
    # scene difficulty d (sd 1) is shared by both runs; each run adds its own noise (sd 0.1) and B is 0.05 worse:
    # correlation ~0.99, so Var(a - b) = 2 * 0.01 is 50x smaller than Var(a) ~ 1.01 (the interval ~7x narrower)
    g = np.random.default_rng(3)
    d = g.normal(0.0, 1.0, 500)
    a, b = d + g.normal(0, 0.1, 500), d + 0.05 + g.normal(0, 0.1, 500)
    lo_a, hi_a = bootstrap_ci(a)
    diff, lo, hi = paired_diff_ci(a, b)
    assert diff == pytest.approx(a.mean() - b.mean())
    assert (hi_a - lo_a) >= 3 * (hi - lo)
    expected = 2 * 1.96 * math.sqrt(np.var(a - b, ddof=1) / a.size)  # the closed form of a paired mean
    assert hi - lo == pytest.approx(expected, rel=0.1)
    assert verdict(lo, hi, "lower") == "A better"  # while one run's intervals overlap completely


def test_paired_diff_of_a_run_with_itself_is_exactly_zero():
    a = np.random.default_rng(4).uniform(size=64)
    assert paired_diff_ci(a, a) == (0.0, 0.0, 0.0)


def test_paired_values_must_hold_the_same_scenes():
    with pytest.raises(ValueError, match="same shape"):
        paired_diff_ci(np.zeros(10), np.zeros(11))


# ---- ratio metrics (oIoU) ------------------------------------------------------------------------------------


def test_oiou_interval_is_a_ratio_of_resampled_sums():
    # scene A: intersection 1, union 1 (IoU 1); scene B: intersection 0, union 3 (IoU 0). oIoU = 1 / 4.
    # Resampling two scenes: AA (p 1/4) -> 1, AB or BA (p 1/2) -> (1 + 0) / (1 + 3) = 0.25, BB (p 1/4) -> 0.
    # The middle 20 % of that distribution (its 40 % and 60 % quantiles) is exactly 0.25; a mean of per-scene
    # IoUs would put the mixed draws, and so this interval, at 0.5.
    value, lo, hi = ratio_ci([1.0, 0.0], [1.0, 3.0], level=0.2)
    assert (value, lo, hi) == (0.25, 0.25, 0.25)
    assert ratio_of_sums(ratio_columns([1.0, 0.0], [1.0, 3.0])) == 0.25
    # the same statistic in a paired comparison: B's oIoU is 2 / 4, so A - B = -0.25 in every mixed draw
    a, b = ratio_columns([1.0, 0.0], [1.0, 3.0]), ratio_columns([1.0, 1.0], [1.0, 3.0])
    assert paired_diff_ci(a, b, stat=ratio_of_sums, level=0.2) == (-0.25, -0.25, -0.25)


# ---- Student's t over seeds ---------------------------------------------------------------------------------

# two-sided 95 % critical values, from any printed t table (e.g. Abramowitz & Stegun Table 26.10)
T_TABLE = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 9: 2.262, 30: 2.042, 120: 1.980}


@pytest.mark.parametrize("df, t", T_TABLE.items())
def test_t_quantile_matches_the_printed_table(df, t):
    assert t_quantile(0.975, df) == pytest.approx(t, abs=5e-4)
    assert t_cdf(t_quantile(0.975, df), df) == pytest.approx(0.975, abs=1e-12)


def test_t_quantile_tends_to_the_normal_quantile():
    assert t_quantile(0.975, 1e6) == pytest.approx(1.959964, abs=1e-5)
    assert t_quantile(0.5, 3) == pytest.approx(0.0, abs=1e-12)
    assert t_quantile(0.025, 4) == pytest.approx(-t_quantile(0.975, 4), abs=1e-12)


def test_t_quantile_matches_scipy_when_installed():
    st = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 5, 10, 50):
        for p in (0.9, 0.95, 0.975, 0.995, 0.9995):
            assert t_quantile(p, df) == pytest.approx(st.t.ppf(p, df), rel=1e-9)


def test_seed_interval_is_the_closed_form_t_interval():
    values = [0.101, 0.108, 0.097, 0.104]
    mean, half = seed_interval(values)
    s = math.sqrt(sum((v - 0.1025) ** 2 for v in values) / 3)  # hand: mean 0.1025, sample sd with n - 1
    assert mean == pytest.approx(0.1025, abs=1e-15)
    assert half == pytest.approx(3.182446 * s / 2, rel=1e-6)  # t_{0.975, 3} = 3.182446, sqrt(4) = 2


def test_seed_interval_matches_scipy_when_installed():
    st = pytest.importorskip("scipy.stats")
    values = np.random.default_rng(5).normal(1.0, 0.3, 3)
    mean, half = seed_interval(values, level=0.9)
    lo, hi = st.t.interval(0.9, values.size - 1, loc=values.mean(), scale=st.sem(values))
    assert (mean - half, mean + half) == pytest.approx((lo, hi), rel=1e-9)


def test_one_seed_has_no_interval():
    assert seed_interval([0.3]) == (0.3, math.inf)
    assert verdict(-math.inf, math.inf) == "no difference detected"


# ---- the verdict rule ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lo, hi, better, word", [
    (-0.02, -0.01, "lower", "A better"),     # A - B < 0 and lower is better
    (-0.02, -0.01, "higher", "B better"),
    (0.01, 0.02, "lower", "B better"),
    (0.01, 0.02, "higher", "A better"),
    (-0.01, 0.02, "lower", "no difference detected"),
    (0.0, 0.02, "higher", "no difference detected"),  # an interval touching 0 does not exclude it
])
def test_verdict_names_the_better_run_only_when_the_interval_excludes_zero(lo, hi, better, word):
    assert verdict(lo, hi, better) == word


def test_verdict_rejects_a_direction_it_does_not_know():
    with pytest.raises(ValueError, match="better"):
        verdict(0.0, 1.0, "smaller")
