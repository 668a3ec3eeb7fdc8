"""Spec for minidp/schedules.py: beta schedules, forward process, eps/x0/v algebra, timestep samplers.

Each claim is checked against an independent reference: the closed forms of REFERENCE.md §1 recomputed here
with numpy/math, algebraic round trips, diffusers' own schedule code when it is importable (skipped, never
failed, without it), and the sampling frequencies of 200,000 draws against ADDP's published weights.

Run: python -m pytest -q tests/test_schedules.py
"""

import math

import numpy as np
import pytest
import torch

from minidp.schedules import (
    MultinomialTimesteps,
    NoiseSchedule,
    make_betas,
    rescale_zero_terminal_snr,
    sample_uniform_timesteps,
)

T = 1000
SCHEDULES = ["linear", "scaled_linear", "cosine"]
ADDP_DEPTH_WEIGHTS = [1, 1, 3, 7, 13, 14, 8, 4, 22, 33]  # ADDP release, groups of 100 timesteps, index 0 = 0..99


def cos_f(s):
    """Nichol & Dhariwal's f(s), written out again here as the test's own reference."""
    return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2


# ---- schedules: closed forms ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCHEDULES + ["squaredcos_cap_v2"])
def test_alpha_bar_is_strictly_decreasing_from_one_minus_first_beta(name):
    s = NoiseSchedule(name)
    assert s.betas.dtype == torch.float64 and s.betas.shape == (T,)
    assert s.alpha_bar[0].item() == pytest.approx(1 - s.betas[0].item(), abs=1e-15)
    assert (s.alpha_bar[1:] < s.alpha_bar[:-1]).all(), "more noise at every later timestep"
    assert 0 < s.alpha_bar[-1].item() < 5e-3, "the last timestep is nearly (not exactly) pure noise"


@pytest.mark.parametrize("name, start, end", [("linear", 1e-4, 0.02), ("scaled_linear", 0.00085, 0.012)])
def test_linear_schedules_match_numpy_product_at_both_ends(name, start, end):
    betas = np.linspace(start, end, T) if name == "linear" else np.linspace(start**0.5, end**0.5, T) ** 2
    s = NoiseSchedule(name)
    assert s.alpha_bar[0].item() == pytest.approx(1 - start, rel=1e-12)
    # independent route: the product as exp(sum(log1p(-beta)))
    assert s.alpha_bar[-1].item() == pytest.approx(math.exp(np.log1p(-betas).sum()), rel=1e-9)
    assert s.alpha_bar[T // 2].item() == pytest.approx(math.exp(np.log1p(-betas[: T // 2 + 1]).sum()), rel=1e-9)


def test_linear_schedule_final_alpha_bar_is_ddpm_value():
    # DDPM's schedule leaves alpha_bar_999 ~ 4.04e-5 of signal (SNR ~ 4e-5, Lin et al. 2024's complaint)
    assert NoiseSchedule("linear").alpha_bar[-1].item() == pytest.approx(4.0358e-5, rel=1e-4)


def test_cosine_alpha_bar_matches_hand_formula_at_start_middle_end():
    s = NoiseSchedule("cosine")
    # alpha_bar_t = f((t+1)/T) / f(0) as long as no beta hits the 0.999 cap, i.e. for every t < T-1
    assert s.alpha_bar[0].item() == pytest.approx(cos_f(1 / T) / cos_f(0), rel=1e-12)
    assert s.alpha_bar[T // 2].item() == pytest.approx(cos_f((T // 2 + 1) / T) / cos_f(0), rel=1e-12)
    # the last beta would be 1 (f(1) = 0) and is capped at 0.999, leaving 0.1 % of alpha_bar_{T-2}
    assert s.betas[-1].item() == 0.999
    assert s.alpha_bar[-1].item() == pytest.approx(cos_f((T - 1) / T) / cos_f(0) * 0.001, rel=1e-9)


def test_cosine_corrupts_more_slowly_and_keeps_more_timesteps_at_informative_noise_levels():
    # The scaling paper's Fig. 10 argument: linear destroys the signal early (alpha_bar(T/2) ~ 0.08 against
    # cosine's ~ 0.49) and then spends its last ~230 timesteps at log-SNR < -6, nearly pure noise; cosine
    # spreads its timesteps over the band |log-SNR| < 3 where the coarse structure of x0 is decided.
    lin, cos = NoiseSchedule("linear"), NoiseSchedule("cosine")
    assert lin.alpha_bar[T // 2] < 0.1 < 0.4 < cos.alpha_bar[T // 2]
    lin_l, cos_l = lin.log_snr(torch.arange(T)), cos.log_snr(torch.arange(T))
    assert (cos_l.abs() < 3).sum() > 1.4 * (lin_l.abs() < 3).sum()  # 726 against 482 timesteps
    assert (lin_l < -6).sum() > 200 and (cos_l < -6).sum() < 50


def test_make_betas_respects_custom_range():
    betas = make_betas("linear", T=10, beta_start=0.1, beta_end=0.2)
    torch.testing.assert_close(betas, torch.tensor(np.linspace(0.1, 0.2, 10)), rtol=0, atol=1e-15)


def test_zero_terminal_snr_rescale_keeps_first_and_zeroes_last_alpha_bar():
    for name in SCHEDULES:
        base, zt = NoiseSchedule(name), NoiseSchedule(name, zero_terminal_snr=True)
        assert zt.alpha_bar[-1].item() == 0.0
        assert zt.alpha_bar[0].item() == pytest.approx(base.alpha_bar[0].item(), rel=1e-12)
        # sqrt(alpha_bar) is an affine map of the original one (Lin et al. Algorithm 1)
        a, b = base.alpha_bar.sqrt(), zt.alpha_bar.sqrt()
        expected = (a - a[-1]) * a[0] / (a[0] - a[-1])
        torch.testing.assert_close(b, expected, rtol=0, atol=1e-12)
        assert zt.snr(torch.tensor([T - 1])).item() == 0.0 and zt.log_snr(torch.tensor([T - 1])).item() == -math.inf


@pytest.mark.parametrize("name, diffusers_name", [("linear", "linear"), ("scaled_linear", "scaled_linear"),
                                                  ("cosine", "squaredcos_cap_v2")])
def test_schedules_match_diffusers(name, diffusers_name):
    ddim = pytest.importorskip("diffusers.schedulers.scheduling_ddim")
    s = NoiseSchedule(name)
    kw = {} if name == "cosine" else dict(beta_start=s.betas[0].item(), beta_end=s.betas[-1].item())
    ref = ddim.DDIMScheduler(beta_schedule=diffusers_name, **kw)
    # diffusers works in float32: agreement to float32 accuracy of the cumprod
    torch.testing.assert_close(ref.alphas_cumprod.double(), s.alpha_bar, rtol=2e-5, atol=1e-7)
    zt = ddim.rescale_zero_terminal_snr(s.betas.clone())
    torch.testing.assert_close(rescale_zero_terminal_snr(s.betas), zt.double(), rtol=0, atol=1e-12)


# ---- forward process and conversions --------------------------------------------------------------------


@pytest.mark.parametrize("name", SCHEDULES)
def test_q_sample_matches_formula_per_sample(name):
    s = NoiseSchedule(name)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 4, 4, generator=g)
    t = torch.tensor([0, 500, 999])
    x_t = s.q_sample(x0, t, eps)
    assert x_t.dtype == torch.float32
    for i in range(3):
        a = s.alpha_bar[t[i]].item()
        torch.testing.assert_close(x_t[i], math.sqrt(a) * x0[i] + math.sqrt(1 - a) * eps[i])


@pytest.mark.parametrize("zero_terminal_snr", [False, True])
@pytest.mark.parametrize("name", SCHEDULES)
def test_eps_x0_v_conversions_round_trip(name, zero_terminal_snr):
    s = NoiseSchedule(name, zero_terminal_snr=zero_terminal_snr)
    g = torch.Generator().manual_seed(1)
    # random t, but never T-1 under zero terminal SNR: there x0 cannot be recovered from (x_t, eps)
    t = torch.randint(0, T - 1, (16,), generator=g)
    x0 = torch.randn(16, 3, 2, 2, generator=g, dtype=torch.float64)
    eps = torch.randn(16, 3, 2, 2, generator=g, dtype=torch.float64)
    x_t = s.q_sample(x0, t, eps)
    torch.testing.assert_close(s.x0_from_eps(x_t, t, eps), x0, rtol=0, atol=1e-6)
    torch.testing.assert_close(s.eps_from_x0(x_t, t, x0), eps, rtol=0, atol=1e-6)
    v = s.v_from_x0_eps(x0, eps, t)
    torch.testing.assert_close(s.x0_from_v(x_t, t, v), x0, rtol=0, atol=1e-6)
    torch.testing.assert_close(s.eps_from_v(x_t, t, v), eps, rtol=0, atol=1e-6)
    for prediction in ["eps", "x0", "sample", "v"]:
        target = s.target(x0, eps, t, prediction)
        x0_hat, eps_hat = s.to_x0_eps(target, x_t, t, prediction)
        torch.testing.assert_close(x0_hat, x0, rtol=0, atol=1e-6)
        torch.testing.assert_close(eps_hat, eps, rtol=0, atol=1e-6)


def test_v_target_is_velocity_of_the_circle():
    # x_t = cos(phi) x0 + sin(phi) eps with phi = arccos(sqrt(a)); v = d x_t / d phi (Salimans & Ho 2022)
    s = NoiseSchedule("cosine")
    t = torch.tensor([300])
    x0, eps = torch.tensor([[0.7]], dtype=torch.float64), torch.tensor([[-1.3]], dtype=torch.float64)
    phi = math.acos(math.sqrt(s.alpha_bar[300].item()))
    expected = -math.sin(phi) * 0.7 + math.cos(phi) * -1.3
    assert s.target(x0, eps, t, "v").item() == pytest.approx(expected, rel=1e-12)


def test_snr_and_log_snr_agree_with_alpha_bar():
    s = NoiseSchedule("linear")
    t = torch.tensor([0, 123, 999])
    a = s.alpha_bar[t]
    torch.testing.assert_close(s.snr(t), a / (1 - a))
    torch.testing.assert_close(s.log_snr(t), torch.log(a / (1 - a)))
    assert (s.log_snr(torch.arange(1, T)) < s.log_snr(torch.arange(T - 1))).all()


# ---- timestep samplers ----------------------------------------------------------------------------------


def test_uniform_timesteps_are_in_range_and_seeded():
    t1 = sample_uniform_timesteps(5000, T, generator=torch.Generator().manual_seed(3))
    t2 = sample_uniform_timesteps(5000, T, generator=torch.Generator().manual_seed(3))
    assert t1.dtype == torch.long and t1.shape == (5000,) and torch.equal(t1, t2)
    assert t1.min() >= 0 and t1.max() <= T - 1 and t1.min() < 10 and t1.max() > T - 10


def test_multinomial_frequencies_match_addp_depth_weights():
    sampler = MultinomialTimesteps(ADDP_DEPTH_WEIGHTS, T)
    t = sampler.sample(200_000, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and t.min() >= 0 and t.max() <= T - 1
    freq = torch.bincount(t // 100, minlength=10).double() / t.numel()
    expected = torch.tensor(ADDP_DEPTH_WEIGHTS, dtype=torch.float64) / sum(ADDP_DEPTH_WEIGHTS)
    # a 1 % absolute tolerance is > 10 standard errors (sqrt(0.31 * 0.69 / 2e5) ~ 0.1 %)
    assert (freq - expected).abs().max() < 0.01


def test_multinomial_spreads_group_weight_evenly_and_normalises():
    sampler = MultinomialTimesteps(ADDP_DEPTH_WEIGHTS, T)
    assert sampler.probs.shape == (T,)
    assert sampler.probs.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert sampler.probs[0].item() == pytest.approx(1 / 106 / 100, rel=1e-12)
    assert sampler.probs[999].item() == pytest.approx(33 / 106 / 100, rel=1e-12)
    assert torch.equal(sampler.probs[900:], sampler.probs[900].expand(100)), "flat inside a group"
    per_t = MultinomialTimesteps(torch.arange(1, T + 1), T)  # one weight per timestep, taken as is
    assert per_t.probs[T - 1].item() == pytest.approx(T / (T * (T + 1) / 2), rel=1e-12)


# ---- bad input ------------------------------------------------------------------------------------------


def test_bad_input_raises_value_error_naming_value_and_choices():
    with pytest.raises(ValueError, match=r"'quadratic'.*linear, scaled_linear, cosine"):
        NoiseSchedule("quadratic")
    s = NoiseSchedule("linear")
    x = torch.zeros(1, 1)
    with pytest.raises(ValueError, match=r"'epsilon'.*eps, x0, v, sample"):
        s.target(x, x, torch.tensor([0]), "epsilon")
    with pytest.raises(ValueError, match=r"'velocity'.*eps, x0, v"):
        s.to_x0_eps(x, x, torch.tensor([0]), "velocity")
    with pytest.raises(ValueError, match="length 7"):
        MultinomialTimesteps([1] * 7, T)
    with pytest.raises(ValueError, match="non-negative"):
        MultinomialTimesteps([1, -1], T)
    with pytest.raises(ValueError, match="beta_start"):
        make_betas("linear", beta_start=0.1, beta_end=0.01)
