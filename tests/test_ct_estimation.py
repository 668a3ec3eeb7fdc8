"""Spec for minidp/ct_estimation.py: ADDP's contribution factors c_t^2 (Sec. 3.1, Algorithm A) and their CLI.

Independent references: the diffusion formula summed by hand in numpy from the linear betas; tables of
metrics with known answers (a final metric equal to one step's metric, steps exactly uncorrelated with it,
steps drawn independently of it); numpy's least squares and correlation for the nested R^2; the release's
vectors as printed in REFERENCE.md §6.

Run: PYTHONPATH=$PWD python -m pytest -q tests/test_ct_estimation.py
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from minidp.ct_estimation import (
    PRESETS,
    apply_floor,
    diffusion_ct2,
    group_sums,
    load_weights,
    main,
    nested_r2,
    perception_ct2,
)
from minidp.schedules import NoiseSchedule

ROOT = Path(__file__).resolve().parent.parent


def table_with_final_at(k, S=10, N=200, seed=0):
    """Q (S, N): the final metric equals step k's; every other step is exactly uncorrelated with it.

    The other rows come from a QR of [1, y, random...], so each is orthogonal to the constant, to y and to
    each other: they explain exactly nothing of y, and step k explains all of it."""
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(N, generator=g, dtype=torch.float64)
    basis = torch.cat([torch.ones(N, 1, dtype=torch.float64), y[:, None],
                       torch.randn(N, S, generator=g, dtype=torch.float64)], dim=1)  # (N, S + 2)
    q, _ = torch.linalg.qr(basis)
    Q = q[:, 2:].T.clone()  # (S, N) zero mean, orthogonal to y
    Q[k] = y
    Q[-1] = y  # the last row is the final metric
    return Q


# ---- the diffusion formula ------------------------------------------------------------------------------


def test_diffusion_ct2_matches_hand_sum_for_linear_schedule():
    betas = np.linspace(1e-4, 0.02, 1000)
    alpha_bar = np.cumprod(1 - betas)
    ratio = (1 - alpha_bar) / alpha_bar
    expected = np.array([ratio[g * 100:(g + 1) * 100].sum() for g in range(10)])
    expected /= expected.sum()
    got = diffusion_ct2(NoiseSchedule("linear").alpha_bar, groups=10)
    assert got.shape == (10,)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    assert (got[1:] > got[:-1]).all()  # noisier groups weigh more (index 0 = least noisy)


def test_diffusion_ct2_refuses_zero_terminal_snr():
    with pytest.raises(ValueError, match="zero terminal SNR"):
        diffusion_ct2(NoiseSchedule("linear", zero_terminal_snr=True).alpha_bar)


# ---- Algorithm A on tables with known answers -----------------------------------------------------------


@pytest.mark.parametrize("k", [0, 4, 9])
def test_final_equal_to_one_step_puts_all_weight_on_that_steps_group(k):
    # trailing DDIM with S = 10 records t = 999, 899, ..., 99: row k lies in group 9 - k
    w = perception_ct2(table_with_final_at(k), groups=10, floor=0.01)
    expected = torch.full((10,), 0.01, dtype=torch.float64)
    expected[9 - k] = 1 - 9 * 0.01  # every other step explains nothing: exactly the floor
    torch.testing.assert_close(w, expected, rtol=0, atol=1e-12)


def test_steps_drawn_independently_of_the_final_metric_get_the_floor():
    # not constructed to be uncorrelated: chance R^2 ~ 1/N = 5e-4 per step, far under the 1 % floor
    g = torch.Generator().manual_seed(1)
    Q = torch.rand(10, 2000, generator=g, dtype=torch.float64)
    Q[6] = Q[-1] + 0.01 * torch.randn(2000, generator=g, dtype=torch.float64)  # t = 399: explains ~99.9 %
    w = perception_ct2(Q)
    assert w.argmax().item() == 3
    others = torch.cat([w[:3], w[4:]])
    torch.testing.assert_close(others, torch.full((9,), 0.01, dtype=torch.float64), rtol=0, atol=1e-12)


def test_one_group_is_100_timesteps_for_T_1000_in_10_groups():
    assert group_sums(torch.ones(1000), torch.arange(1000), T=1000, groups=10).tolist() == [100.0] * 10
    ts = [999, 500, 100, 99, 0]
    for row, group in [(2, 1), (3, 0), (4, 0), (1, 5)]:  # t = 100 opens group 1, t = 99 closes group 0
        Q = table_with_final_at(row, S=5, N=60)
        w = perception_ct2(Q, timesteps=ts, floor=0.0)
        assert w.argmax().item() == group and w[group] == pytest.approx(1.0, abs=1e-12), (row, ts[row])


def test_increments_are_never_negative_even_with_collinear_and_constant_steps():
    g = torch.Generator().manual_seed(2)
    Q = torch.rand(10, 200, generator=g, dtype=torch.float64)
    Q[0] = 0.0  # IoU 0 for every sample at the noisiest step
    Q[2] = Q[1]  # a step that repeats the previous one adds nothing
    Q[5] = 2 * Q[3] - Q[4]  # an exact linear combination of earlier steps adds nothing either
    r2 = nested_r2(Q)
    assert r2[0] == pytest.approx(0.0, abs=1e-12) and r2[-1] == pytest.approx(1.0, abs=1e-12)
    w = perception_ct2(Q, floor=0.0)
    assert (w >= 0).all() and w.sum().item() == pytest.approx(1.0, abs=1e-12)
    # the paper's Algorithm A line 7 subtracts the other way round: every increment would be <= 0
    assert (torch.diff(r2) >= -1e-12).all()


def test_nested_r2_matches_numpy_least_squares():
    rng = np.random.default_rng(3)
    Q = rng.random((4, 60))
    Q[-1] = Q[0] + Q[1] + 0.3 * rng.random(60)
    got = nested_r2(torch.from_numpy(Q)).numpy()
    assert got[0] == pytest.approx(np.corrcoef(Q[0], Q[-1])[0, 1] ** 2, rel=1e-10)  # one regressor: r^2
    y = Q[-1]
    for k in range(4):
        A = np.column_stack([np.ones(60), Q[: k + 1].T])
        resid = y - A @ np.linalg.lstsq(A, y, rcond=None)[0]
        assert got[k] == pytest.approx(1 - resid @ resid / ((y - y.mean()) @ (y - y.mean())), rel=1e-10)


@pytest.mark.parametrize("floor", [0.0, 0.01, 0.05])
def test_weights_sum_to_one_and_no_group_is_under_the_floor(floor):
    g = torch.Generator().manual_seed(4)
    Q = torch.rand(10, 150, generator=g).cumsum(0)  # a metric that drifts and accumulates over steps
    w = perception_ct2(Q, floor=floor)
    assert w.shape == (10,) and w.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert (w >= floor - 1e-15).all()


def test_metric_direction_does_not_change_the_weights():
    # R^2 is invariant to negating the metric: RMSE (lower is better) and -RMSE give the same c^2
    g = torch.Generator().manual_seed(5)
    Q = torch.rand(10, 120, generator=g, dtype=torch.float64).cumsum(0)
    torch.testing.assert_close(perception_ct2(Q), perception_ct2(-Q), rtol=0, atol=1e-12)


def test_apply_floor_raises_small_groups_and_keeps_the_ratios_of_the_rest():
    w = apply_floor([0.0, 0.002, 0.6, 0.398], floor=0.05)
    assert w[:2].tolist() == [0.05, 0.05]
    assert w[2].item() / w[3].item() == pytest.approx(0.6 / 0.398, rel=1e-12)
    assert w.sum().item() == pytest.approx(1.0, abs=1e-12)
    # raising one group can push another under the floor: the second round floors it too
    w = apply_floor([0.0, 0.0, 0.105, 0.895], floor=0.1)
    assert w[:3].tolist() == pytest.approx([0.1, 0.1, 0.1]) and w[3].item() == pytest.approx(0.7)


def test_saturation_guard_refuses_fewer_than_ten_samples_per_step():
    Q = torch.rand(10, 99, generator=torch.Generator().manual_seed(6))
    with pytest.raises(ValueError, match=r"N >= 10 \* S"):
        perception_ct2(Q)
    # what the guard prevents: with N = S samples the S - 1 pure-noise steps before the last (plus the
    # intercept) already fit the final metric perfectly
    Q = torch.rand(10, 10, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    Q[-1] = torch.rand(10, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    assert nested_r2(Q)[-2].item() == pytest.approx(1.0, abs=1e-9)


def test_bad_timesteps_are_refused():
    Q = table_with_final_at(3)
    with pytest.raises(ValueError, match="strictly decreasing"):
        perception_ct2(Q, timesteps=list(range(10)))
    with pytest.raises(ValueError, match="10 rows"):
        perception_ct2(Q, timesteps=[999, 0])


# ---- presets and load_weights ---------------------------------------------------------------------------


def test_presets_are_the_release_vectors_normalised():
    depth = np.array([1, 1, 3, 7, 13, 14, 8, 4, 22, 33], dtype=float)
    ris = np.array([1, 1, 1, 1, 1, 1, 1, 2, 4, 95], dtype=float)
    np.testing.assert_allclose(load_weights("depth_release").numpy(), depth / 106, rtol=1e-15)
    np.testing.assert_allclose(load_weights("ris_release").numpy(), ris / 108, rtol=1e-15)


def test_load_weights_unknown_preset_names_the_valid_ones():
    with pytest.raises(ValueError) as e:
        load_weights("depth_paper")
    assert all(name in str(e.value) for name in PRESETS)


@pytest.mark.parametrize("content, match", [
    ({"weights": [0.1] * 9}, "9 weights, expected groups=10"),
    ({"weights": [0.2] * 9 + [-0.8]}, "non-negative"),
    ({"weights": [0.0] * 10}, "not all zero"),
    ({"weights": ["a"] * 10}, "list of numbers"),
    ([0.1] * 10, "JSON object"),
])
def test_load_weights_refuses_bad_files(tmp_path, content, match):
    path = tmp_path / "w.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=match):
        load_weights(path, groups=10)


def test_load_weights_reads_a_weights_file(tmp_path):
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"weights": [2, 2, 1, 1, 1, 1, 1, 1, 0, 0]}))
    assert load_weights(path).tolist() == pytest.approx([0.2, 0.2] + [0.1] * 6 + [0.0, 0.0])


# ---- the CLI --------------------------------------------------------------------------------------------


def write_intermediates(path, Q, timesteps=None, **extra):
    timesteps = list(range(999, 0, -100)) if timesteps is None else timesteps
    path.write_text(json.dumps({"timesteps": timesteps, "metric": "iou", "higher_is_better": True,
                                "Q": Q.tolist() if torch.is_tensor(Q) else Q, **extra}))
    return path


def test_cli_writes_the_weights_algorithm_a_gives_and_the_figure(tmp_path, capsys):
    Q = table_with_final_at(2)
    src = write_intermediates(tmp_path / "inter.json", Q)
    out = tmp_path / "run" / "weights.json"
    assert main([str(src), "-o", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["groups"] == 10 and record["samples"] == 200
    torch.testing.assert_close(load_weights(out), perception_ct2(Q), rtol=0, atol=1e-12)
    assert out.with_suffix(".png").stat().st_size > 0
    assert "c_t^2 by group" in capsys.readouterr().out


@pytest.mark.parametrize("content, match", [
    ({"timesteps": [999, 899], "metric": "iou", "higher_is_better": True}, "no per-step metrics"),
    ({"timesteps": [999, 899], "Q": [[0.1] * 30, [0.2] * 29]}, "different lengths"),
    ({"timesteps": [999], "Q": [[0.1, 0.2] * 15, [0.3, 0.1] * 15]}, "'timesteps' has 1 entries"),
    ({"timesteps": [999, 899], "Q": [[0.1, 0.2] * 5, [0.3, 0.1] * 5]}, "need N >= 10"),
    ({"timesteps": [999, 899], "Q": [[0.1, 0.2] * 15, [0.3, 0.1] * 15], "schedule": "cosyne"}, "unknown 'schedule'"),
    ("not json {", "cannot read"),
])
def test_cli_bad_intermediates_is_one_error_line_and_exit_2(tmp_path, capsys, content, match):
    src = tmp_path / "inter.json"
    src.write_text(content if isinstance(content, str) else json.dumps(content))
    assert main([str(src), "-o", str(tmp_path / "w.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and match in err
    assert not (tmp_path / "w.json").exists()


def test_cli_as_a_module_fails_cleanly_on_a_missing_file(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "minidp.ct_estimation", str(tmp_path / "nope.json"), "-o",
                           str(tmp_path / "w.json")], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": ""})
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
