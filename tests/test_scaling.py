"""Spec for minidp/scaling.py: the lower convex hull, the iterative power-law fit, smoothing, reading logs.

Independent references: a brute-force lower hull (a point is on it unless some segment between two other
points passes on or below it); points generated from a known law a * C^b, exact or with noise only above it
(the fit must find a and b again); the paper's own pre-training law L = 0.23 * C^-0.0098; hand-written logs.

Run: python -m pytest -q tests/test_scaling.py
"""

import json
import math

import numpy as np
import pytest

from minidp.scaling import (
    fit_power_law,
    forward_macs_from_log,
    inference_macs,
    loss_curve,
    envelope,
    lower_hull,
    metric_value,
    read_log,
    smooth_log,
)


def brute_force_lower_hull(x, y):
    """Vertices of the lower hull by definition: not on or above any chord between two other points."""
    keep = []
    for i in range(len(x)):
        if any(x[j] == x[i] and (y[j] < y[i] or (y[j] == y[i] and j < i)) for j in range(len(x))):
            continue  # a lower (or an earlier equal) point at the same x hides it
        covered = False
        for j in range(len(x)):
            for k in range(len(x)):
                if x[j] < x[i] < x[k]:
                    chord = y[j] + (y[k] - y[j]) * (x[i] - x[j]) / (x[k] - x[j])
                    covered |= y[i] >= chord - 1e-12
        if not covered:
            keep.append(i)
    return sorted(keep, key=lambda i: x[i])


# ---- the lower hull ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_lower_hull_matches_brute_force(seed):
    g = np.random.default_rng(seed)
    x = np.round(g.uniform(0, 10, 25), 1)  # rounded: some shared x values
    y = g.uniform(0, 10, 25)
    assert lower_hull(x, y).tolist() == brute_force_lower_hull(x, y)


def test_lower_hull_drops_collinear_points():
    x = np.arange(5.0)
    assert lower_hull(x, 2 * x + 1).tolist() == [0, 4]  # the middle points lie on the chord


# ---- the fit ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("b", [-0.01, -0.1, -0.5])
@pytest.mark.parametrize("seed", [0, 1])
def test_fit_recovers_law_within_one_percent_from_noise_above_it(b, seed):
    # 1000 points over six decades of compute, each 0-0.6 % (|N(0, 0.2 %)|) above the law. The bias grows
    # with the noise: over 20 seeds the worst relative error of b = -0.01 is 0.5 % here, 3.8 % at 1 % noise.
    g = np.random.default_rng(seed)
    a = 2.0
    C = 10 ** g.uniform(10, 16, 1000)
    L = a * C ** b * (1 + np.abs(g.normal(0, 0.002, C.size)))
    fit = fit_power_law(C, L)
    assert fit["a"] == pytest.approx(a, rel=0.01)
    assert fit["b"] == pytest.approx(b, rel=0.01)
    assert fit["r2"] > 0.9


def test_fit_recovers_the_papers_pretraining_law():
    # the paper's Fig. 2 law, sampled like six training curves: each run's loss touches the envelope once (at
    # its compute-optimal point) and lies above it everywhere else. The smallest run is logged from its
    # compute-optimal point on: before it, nothing has less compute, so its warm-up would be the envelope's
    # left end (the envelope keeps every point that no point with less compute beats). The largest run's
    # tail rises above its own lowest point and is dropped as dominated.
    a, b = 0.23, -0.0098
    C, L = [], []
    for centre in np.linspace(15, 20, 6):  # log10 MACs where run i is compute-optimal
        c = 10 ** np.linspace(centre - (centre > 15), centre + 1, 30)
        C.append(c)
        L.append(a * c ** b * (1 + 0.05 * np.log10(c / 10 ** centre) ** 2))
    fit = fit_power_law(np.concatenate(C), np.concatenate(L))
    assert fit["a"] == pytest.approx(0.23, rel=0.01)
    assert fit["b"] == pytest.approx(-0.0098, rel=0.01)


def test_the_envelope_ends_at_the_lowest_loss_and_recovers_a_known_law():
    # 60 points over six decades, on or up to 5 % above L = 0.23 C^-0.0098, every 7th exactly on it. The
    # last on-law point is the 57th; the three after it are above it (dominated). The whole lower hull ran
    # up to them and gave 0.2256 C^-0.00909 (b off by 7 %); the envelope stops at the lowest loss.
    C = np.logspace(10, 16, 60)
    L = 0.23 * C ** -0.0098 * (1 + np.random.default_rng(1).uniform(0, 0.05, 60))
    L[::7] = 0.23 * C[::7] ** -0.0098
    fit = fit_power_law(C, L)
    assert fit["hull"][-1] == int(np.argmin(L)) == 56
    assert fit["a"] == pytest.approx(0.23, rel=0.01)
    assert fit["b"] == pytest.approx(-0.0098, rel=0.01)


def test_a_loss_that_rises_with_compute_has_no_law():
    # the least compute is already the lowest loss (more DDIM steps, tutorial 09): the envelope is one point
    with pytest.raises(ValueError, match="does not fall with compute"):
        fit_power_law([1e9, 1e10, 1e11], [0.15, 0.16, 0.17])


def test_envelope_is_the_lower_hull_up_to_its_lowest_point():
    x = np.arange(6.0)
    y = np.array([3.0, 1.0, 0.5, 0.4, 0.6, 2.0])  # convex; the last two have more x and higher y than x = 3
    assert lower_hull(x, y).tolist() == [0, 1, 2, 3, 4, 5]
    assert envelope(x, y).tolist() == [0, 1, 2, 3]


def test_points_exactly_on_the_law_give_the_law_and_r2_one():
    C = np.logspace(9, 15, 7)
    fit = fit_power_law(C, 0.5 * C ** -0.2)
    assert fit["a"] == pytest.approx(0.5, rel=1e-9) and fit["b"] == pytest.approx(-0.2, rel=1e-9)
    assert fit["r2"] == pytest.approx(1.0)


def test_one_point_far_below_the_envelope_pulls_the_fit_down_to_it():
    C = np.logspace(10, 16, 13)
    L = 1.0 * C ** -0.1
    low = 6  # the middle point, 30 % below the law
    L[low] *= 0.7
    fit = fit_power_law(C, L)
    assert low in fit["used"]
    law_at_low = math.log(C[low] ** -0.1)
    fitted_at_low = math.log(fit["a"] * C[low] ** fit["b"])
    # least squares through the hull (both ends and the low point) moves the curve a third of the way down
    assert law_at_low - fitted_at_low == pytest.approx(-math.log(0.7) / 3, rel=1e-6)


def test_points_below_the_first_fit_are_added_and_refit():
    # a convex, falling envelope (hull = 5 points) and a cloud just above its middle: the least-squares line through
    # the hull passes above part of the cloud, so the second fit uses more points and sits lower
    x = np.linspace(0, 6, 5)
    C_hull, L_hull = 10 ** x, np.exp(0.05 * (x - 6) ** 2)
    C_cloud = 10 ** np.linspace(2, 4, 9)
    L_cloud = np.exp(0.05 * (np.log10(C_cloud) - 6) ** 2 + 0.04)  # hull chords rise <= 0.028 above the parabola
    C, L = np.concatenate([C_hull, C_cloud]), np.concatenate([L_hull, L_cloud])
    first = fit_power_law(C, L, max_iter=1)
    full = fit_power_law(C, L)
    assert first["iterations"] == 1 and len(first["used"]) == 5
    assert full["iterations"] >= 2 and len(full["used"]) > 5
    assert full["a"] < first["a"]


def test_n_max_stops_early_when_few_points_lie_below():
    x = np.linspace(0, 6, 5)
    C = np.concatenate([10 ** x, 10 ** np.linspace(2, 4, 9)])
    L = np.concatenate([np.exp(0.05 * (x - 6) ** 2), np.exp(0.05 * (np.log10(C[5:]) - 6) ** 2 + 0.04)])
    # all 9 cloud points lie below the first fit: n_max = 10 stops there, n_max = 9 refits
    assert fit_power_law(C, L, n_max=10)["iterations"] == 1
    assert fit_power_law(C, L, n_max=9)["iterations"] >= 2


@pytest.mark.parametrize("C, L, message", [
    ([1e9, 1e10], [1.0, 0.9], "at least 3 points"),
    ([1e9, 1e10, 1e11], [1.0, 0.0, 0.8], "positive"),
    ([1e9, -1e10, 1e11], [1.0, 0.9, 0.8], "positive"),
    ([1e9, 1e10, 1e11], [1.0, float("nan"), 0.8], "non-finite"),
    ([1e9, 1e9, 1e9], [1.0, 0.9, 0.8], "distinct"),
    ([1e9, 1e10, 1e11], [1.0, 0.9], "same length"),
])
def test_bad_points_are_a_clear_value_error(C, L, message):
    with pytest.raises(ValueError, match=message):
        fit_power_law(C, L)


# ---- smoothing --------------------------------------------------------------------------------------------


def test_smoothing_leaves_a_power_law_unchanged_even_at_the_ends():
    L = 3.0 * np.logspace(6, 12, 20) ** -0.3  # geometric: a straight line in log space
    np.testing.assert_allclose(smooth_log(L, window=5), L, rtol=1e-12)


def test_smoothing_removes_alternating_noise_and_does_not_lag():
    base = np.full(21, 0.5)
    noisy = base * np.exp(0.1 * (-1) ** np.arange(21))
    out = smooth_log(noisy, window=5)
    # interior windows hold 5 alternating signs: the mean of log noise is +-0.02, from +-0.1
    assert np.max(np.abs(np.log(out[2:-2] / base[2:-2]))) == pytest.approx(0.02)
    # a step rising at index 10: the centred average is symmetric about it (a causal EMA would be late)
    step = np.where(np.arange(21) < 10, 1.0, math.e)
    s = np.log(smooth_log(step, window=5))
    np.testing.assert_allclose(s[8:12], [0.2, 0.4, 0.6, 0.8])


# ---- reading logs -----------------------------------------------------------------------------------------


def test_read_log_keeps_the_last_record_of_a_resumed_step_and_counts_cut_lines(tmp_path):
    lines = [{"step": 10, "loss": 0.5, "train_macs": 30}, {"step": 20, "loss": 0.4, "train_macs": 60},
             {"step": 20, "loss": 0.39, "train_macs": 60}, {"step": 30, "loss": 0.3, "train_macs": 90}]
    text = "\n".join(json.dumps(r) for r in lines[:2]) + '\n{"step": 30, "lo\n'  # killed mid-line
    text += "\n".join(json.dumps(r) for r in lines[2:]) + "\n"
    (tmp_path / "log.jsonl").write_text(text)
    records, bad = read_log(tmp_path / "log.jsonl")
    assert [r["step"] for r in records] == [10, 20, 30] and records[1]["loss"] == 0.39 and bad == 1
    macs, loss = loss_curve(records, window=1)
    assert macs.tolist() == [30, 60, 90] and loss.tolist() == pytest.approx([0.5, 0.39, 0.3])


def test_forward_and_inference_macs_follow_train_pys_bookkeeping():
    # train_macs = 3 x forward MACs x samples seen; 40 steps of batch 8 with 1000 MACs per forward
    records = [{"step": 40, "loss": 0.1, "train_macs": 3 * 1000 * 40 * 8}]
    assert forward_macs_from_log(records, global_batch=8) == 1000
    assert forward_macs_from_log([{"step": 1, "loss": 0.1}], global_batch=8) is None
    assert inference_macs({"steps": 10, "ensemble": 5}, 1000) == 50_000


def test_metric_value_reads_errors_as_one_minus_accuracy():
    ev = {"absrel": 0.1, "delta1": 0.9}
    assert metric_value(ev, "absrel") == 0.1 and metric_value(ev, "delta1_err") == pytest.approx(0.1)
    with pytest.raises(KeyError):
        metric_value(ev, "rmse")
