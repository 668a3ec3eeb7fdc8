"""Spec for minidp/ddim.py: timestep spacings, the DDIM sampler and guidance.

Independent references: explicit timestep lists (and numpy re-derivations of REFERENCE.md §1's spacing
formulas); oracle denoisers that know x0, for which DDIM with eta = 0 must return x0 exactly; a DDPM
ancestral sampler written out here (posterior mean and beta_tilde), which DDIM with eta = 1 and N = T must
reproduce; diffusers' DDIMScheduler step by step when diffusers is importable (skipped, never failed,
without it); the guidance formulas' limiting cases.

Run: python -m pytest -q tests/test_ddim.py
"""

import math

import numpy as np
import pytest
import torch

from minidp.ddim import (
    correctional_combine,
    cfg_combine,
    ddim_sample,
    guided_model_fn_cfg,
    timesteps,
    two_scale_combine,
)
from minidp.schedules import NoiseSchedule

T = 1000
SPACINGS = ["leading", "trailing", "linspace"]


# ---- timestep spacings ----------------------------------------------------------------------------------


@pytest.mark.parametrize("spacing, n, expected", [
    ("leading", 4, [750, 500, 250, 0]),
    ("trailing", 4, [999, 749, 499, 249]),
    ("linspace", 4, [999, 666, 333, 0]),
    ("leading", 10, [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]),
    ("trailing", 10, [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]),
    ("linspace", 10, [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]),
    ("trailing", 1, [999]),
    ("leading", 1, [0]),
])
def test_spacings_match_explicit_lists(spacing, n, expected):
    ts = timesteps(n, spacing, T)
    assert ts.dtype == torch.long and ts.tolist() == expected


def test_leading_steps_offset_shifts_every_timestep():
    assert timesteps(4, "leading", T, steps_offset=1).tolist() == [751, 501, 251, 1]  # Stable Diffusion's offset


@pytest.mark.parametrize("n", [3, 7, 33, 999, 1000])
def test_spacings_match_numpy_formulas_for_awkward_counts(n):
    # N not dividing T: each spacing still yields exactly N distinct descending timesteps inside 0..T-1
    leading = (np.arange(n) * (T // n))[::-1]
    trailing = np.round(T - np.arange(n) * (T / n)).astype(np.int64) - 1
    linspace = np.round(np.linspace(0, T - 1, n))[::-1]
    for spacing, ref in [("leading", leading), ("trailing", trailing), ("linspace", linspace)]:
        ts = timesteps(n, spacing, T)
        assert ts.tolist() == ref.astype(np.int64).tolist(), spacing
        assert len(set(ts.tolist())) == n and ts.min() >= 0 and ts.max() <= T - 1


def test_spacings_match_diffusers_set_timesteps():
    ddim = pytest.importorskip("diffusers.schedulers.scheduling_ddim")
    for spacing in SPACINGS:
        for n in [1, 4, 10, 50, 200]:
            for offset in ([0, 1] if spacing == "leading" else [0]):
                ref = ddim.DDIMScheduler(timestep_spacing=spacing, steps_offset=offset)
                ref.set_timesteps(n)
                assert timesteps(n, spacing, T, offset).tolist() == ref.timesteps.tolist(), (spacing, n, offset)


# ---- oracle denoisers: DDIM must return the x0 they know ------------------------------------------------


def oracle(schedule, x0, prediction):
    """A perfect model for a single known x0: given x_t, the eps / x0 / v that x_t implies (REFERENCE.md §1)."""

    def fn(x_t, t):
        a = schedule.alpha_bar[t].reshape(-1, 1, 1, 1).to(x_t.dtype)  # (B, 1, 1, 1)
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        return {"eps": eps, "x0": x0, "sample": x0, "v": a.sqrt() * eps - (1 - a).sqrt() * x0}[prediction]

    return fn


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_ddim_with_oracle_returns_true_x0_for_any_step_count(name, spacing, prediction):
    s = NoiseSchedule(name)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    x_T = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    for n in [1, 2, 5, 50]:
        out = ddim_sample(oracle(s, x0, prediction), x_T, s, steps=n, prediction=prediction, spacing=spacing)
        # exact because the last step re-noises to alpha_prev = 1 (set_alpha_to_one): x = 1 * x0_hat + 0 * eps
        torch.testing.assert_close(out, x0, rtol=0, atol=1e-4, msg=f"N={n}")


@pytest.mark.parametrize("prediction", ["x0", "sample", "v"])
@pytest.mark.parametrize("spacing", ["trailing", "linspace"])
def test_ddim_with_oracle_starts_from_pure_noise_under_zero_terminal_snr(spacing, prediction):
    # these spacings start at t = T-1 where alpha_bar = 0: x0 and v still determine x0 (x0 = -v there)
    s = NoiseSchedule("scaled_linear", zero_terminal_snr=True)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(2, 1, 3, 3, generator=g, dtype=torch.float64)
    x_T = torch.randn(2, 1, 3, 3, generator=g, dtype=torch.float64)
    for n in [1, 2, 5, 50]:
        out = ddim_sample(oracle(s, x0, prediction), x_T, s, steps=n, prediction=prediction, spacing=spacing)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, x0, rtol=0, atol=1e-4, msg=f"N={n}")


def test_ddim_refuses_eps_prediction_at_zero_terminal_snr():
    s = NoiseSchedule("linear", zero_terminal_snr=True)
    x = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match=r"prediction='eps'.*t=999.*'v', 'x0'"):
        ddim_sample(lambda x_t, t: x_t, x, s, steps=4, spacing="trailing")
    # leading spacing never visits t = T-1, so eps-prediction is fine there
    x0 = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    out = ddim_sample(oracle(s, x0, "eps"), x.double(), s, steps=4, spacing="leading")
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-4)


def test_final_alpha_bar_zero_leaves_the_t0_noise_level():
    # With set_alpha_to_one=False the last step lands on alpha_bar[0], not 1. For the oracle, eta = 0 keeps
    # eps_hat fixed along the whole trajectory, so the output is the forward process at t = 0 of (x0, eps_T).
    s = NoiseSchedule("linear")
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(1, 2, 3, 3, generator=g, dtype=torch.float64)
    x_T = torch.randn(1, 2, 3, 3, generator=g, dtype=torch.float64)
    seq = timesteps(10, "leading", T)
    a_T, a_0 = s.alpha_bar[seq[0]].item(), s.alpha_bar[0].item()
    eps_T = (x_T - math.sqrt(a_T) * x0) / math.sqrt(1 - a_T)
    out = ddim_sample(oracle(s, x0, "eps"), x_T, s, steps=10, set_alpha_to_one=False)
    torch.testing.assert_close(out, math.sqrt(a_0) * x0 + math.sqrt(1 - a_0) * eps_T, rtol=0, atol=1e-10)
    assert (out - x0).abs().max() > 1e-3, "the t = 0 noise (sqrt(1e-4) = 1 %) is really there"


@pytest.mark.parametrize("spacing, n", [("linspace", 7), ("trailing", 3), ("leading", 6)])
def test_ddim_moves_to_the_noise_level_of_the_next_timestep_in_the_sequence(spacing, n):
    # A model that always answers the same eps e, with x_T built from (x0, e): x_T's first step puts x_t at
    # the forward-process point (x0, e) of the next noise level. The next call then recovers x0 exactly iff
    # the sampler's "previous" timestep is the one it tells the model next. diffusers' t - T//N rule breaks
    # this for linspace N=7 (999 -> 856, but it moves to 999 - 142 = 857) and trailing N=3 (666 -> 332).
    s = NoiseSchedule("linear")
    g = torch.Generator().manual_seed(3)
    x0, e = torch.randn(2, 1, 2, 2, generator=g, dtype=torch.float64), torch.randn(2, 1, 2, 2, generator=g,
                                                                                     dtype=torch.float64)
    t0 = timesteps(n, spacing, T)[0].item()
    x_T = s.alpha_bar[t0].sqrt() * x0 + (1 - s.alpha_bar[t0]).sqrt() * e
    _, inter = ddim_sample(lambda x_t, t: e, x_T, s, steps=n, spacing=spacing, return_intermediates=True)
    assert [t for t, _, _ in inter] == timesteps(n, spacing, T).tolist()
    for t, _, x0_hat in inter:
        torch.testing.assert_close(x0_hat, x0, rtol=0, atol=1e-9, msg=f"t={t}")


# ---- eta = 1 with every timestep is DDPM ----------------------------------------------------------------


def ddpm_ancestral(model_fn, x_T, alpha_bar, generator):
    """DDPM's sampler (Ho et al. 2020, Algorithm 2 in posterior-mean form), written independently of minidp.

    x_{t-1} = mu_tilde(x_t, x0_hat) + sqrt(beta_tilde_t) z, with (DDPM Eqn. 7)
    mu_tilde = sqrt(ab_{t-1}) beta_t / (1 - ab_t) x0_hat + sqrt(alpha_t) (1 - ab_{t-1}) / (1 - ab_t) x_t,
    beta_tilde_t = (1 - ab_{t-1}) / (1 - ab_t) beta_t, and ab_{-1} = 1 (no noise at the last step).
    """
    x = x_T
    for t in range(len(alpha_bar) - 1, -1, -1):
        ab, ab_prev = alpha_bar[t], (alpha_bar[t - 1] if t > 0 else 1.0)
        alpha = ab / ab_prev
        beta = 1 - alpha
        eps = model_fn(x, torch.full((x.shape[0],), t))
        x0_hat = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
        mean = math.sqrt(ab_prev) * beta / (1 - ab) * x0_hat + math.sqrt(alpha) * (1 - ab_prev) / (1 - ab) * x
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        x = mean + math.sqrt((1 - ab_prev) / (1 - ab) * beta) * z if t > 0 else mean
    return x


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_ddim_eta1_full_steps_matches_ddpm_ancestral(name):
    s = NoiseSchedule(name)
    g = torch.Generator().manual_seed(4)
    W = torch.randn(2, 2, generator=g, dtype=torch.float64) * 0.5

    def model(x_t, t):  # a fixed "network": mixes channels and depends on t, so every step differs
        return torch.einsum("oc,bchw->bohw", W, x_t) + torch.cos(t.double() / 150).reshape(-1, 1, 1, 1)

    x_T = torch.randn(3, 2, 2, 2, generator=g, dtype=torch.float64)
    ref = ddpm_ancestral(model, x_T, s.alpha_bar.tolist(), torch.Generator().manual_seed(7))
    out = ddim_sample(model, x_T, s, steps=T, eta=1.0, spacing="leading", generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # and eta really injects noise: the deterministic sampler lands elsewhere
    assert (ddim_sample(model, x_T, s, steps=T) - ref).abs().max() > 1e-2


# ---- step-by-step agreement with diffusers ---------------------------------------------------------------


def fixed_random_model(x_t, t):
    """A fixed "model" whose prediction depends on x_t and t, so it differs at every step."""
    W = torch.tensor([[0.6, -0.3, 0.1], [0.2, 0.5, -0.4], [-0.1, 0.3, 0.7]], dtype=x_t.dtype,
                     device=x_t.device)
    return torch.einsum("oc,bchw->bohw", W, x_t) + torch.sin(t.to(x_t.dtype) / 97).reshape(-1, 1, 1, 1)


DIFFUSERS_NAMES = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}
DIFFUSERS_PREDICTIONS = {"eps": "epsilon", "v": "v_prediction", "sample": "sample"}


def diffusers_trajectory(ddim, schedule, x_T, n, prediction, spacing, eta=0.0, clip=None, set_alpha_to_one=True,
                         generator=None):
    """Run diffusers' DDIMScheduler with our model; returns [(t, x_t, x0_hat)] and the final sample."""
    kw = {} if schedule.name == "cosine" else dict(beta_start=schedule.betas[0].item(),
                                                     beta_end=schedule.betas[-1].item())
    ref = ddim.DDIMScheduler(beta_schedule=DIFFUSERS_NAMES[schedule.name], prediction_type=DIFFUSERS_PREDICTIONS[
        prediction], timestep_spacing=spacing, clip_sample=clip is not None, clip_sample_range=clip or 1.0,
        set_alpha_to_one=set_alpha_to_one, **kw)
    # diffusers keeps alpha_bar in float32; test_schedules checks the schedules agree to that precision. Here
    # we hand it the float64 table so that this test isolates the step rule (float32 alpha_bar near
    # alpha_bar ~ 1e-5 would amplify rounding into x0_hat = (x_t - ...) / sqrt(alpha_bar) by ~100x).
    ref.alphas_cumprod = schedule.alpha_bar.clone()
    if not set_alpha_to_one:
        ref.final_alpha_cumprod = schedule.alpha_bar[0].clone()
    ref.set_timesteps(n)
    x, traj = x_T, []
    for t in ref.timesteps.tolist():
        out = ref.step(fixed_random_model(x, torch.full((x.shape[0],), t)), t, x, eta=eta,
                       use_clipped_model_output=clip is not None, generator=generator)
        traj.append((t, x, out.pred_original_sample))
        x = out.prev_sample
    return traj, x


@pytest.mark.parametrize("prediction", ["eps", "v", "sample"])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("name", ["linear", "scaled_linear", "cosine"])
def test_ddim_matches_diffusers_step_by_step(name, spacing, prediction):
    ddim = pytest.importorskip("diffusers.schedulers.scheduling_ddim")
    s = NoiseSchedule(name)
    x_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    ref_traj, ref_x0 = diffusers_trajectory(ddim, s, x_T, 10, prediction, spacing)
    x0, traj = ddim_sample(fixed_random_model, x_T, s, steps=10, prediction=prediction, spacing=spacing,
                           return_intermediates=True)
    assert [t for t, _, _ in traj] == [t for t, _, _ in ref_traj]
    for (t, x_t, x0_hat), (_, ref_x_t, ref_x0_hat) in zip(traj, ref_traj):
        torch.testing.assert_close(x_t, ref_x_t, rtol=1e-5, atol=1e-5, msg=f"x_t at t={t}")
        torch.testing.assert_close(x0_hat, ref_x0_hat, rtol=1e-5, atol=1e-5, msg=f"x0_hat at t={t}")
    torch.testing.assert_close(x0, ref_x0, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kw", [dict(clip_x0=1.0), dict(set_alpha_to_one=False), dict(eta=0.5)],
                         ids=["clip", "final_alpha_bar0", "eta0.5"])
def test_ddim_options_match_diffusers(kw):
    ddim = pytest.importorskip("diffusers.schedulers.scheduling_ddim")
    s = NoiseSchedule("scaled_linear")
    x_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    _, ref_x0 = diffusers_trajectory(ddim, s, x_T, 20, "eps", "leading", eta=kw.get("eta", 0.0),
                                     clip=kw.get("clip_x0"), set_alpha_to_one=kw.get("set_alpha_to_one", True),
                                     generator=torch.Generator().manual_seed(9))
    x0 = ddim_sample(fixed_random_model, x_T, s, steps=20, generator=torch.Generator().manual_seed(9), **kw)
    torch.testing.assert_close(x0, ref_x0, rtol=1e-5, atol=1e-5)


def test_intermediates_record_model_inputs_and_final_prediction():
    s = NoiseSchedule("cosine")
    x_T = torch.randn(2, 3, 2, 2, generator=torch.Generator().manual_seed(8))
    x0, inter = ddim_sample(fixed_random_model, x_T, s, steps=5, prediction="v", return_intermediates=True)
    assert len(inter) == 5 and inter[0][1] is x_T
    assert all(isinstance(t, int) for t, _, _ in inter)
    assert torch.equal(inter[-1][2], x0), "alpha_prev = 1 after the last step: the sample is the last x0_hat"


# ---- guidance ---------------------------------------------------------------------------------------------


def preds(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, 2, 2, generator=g, dtype=torch.float64) for _ in range(n)]


def test_guidance_at_scale_one_returns_the_conditional_prediction():
    e_none, e_img, e_neg, e_txt = preds(4)
    tight = dict(rtol=0, atol=1e-12)
    torch.testing.assert_close(cfg_combine(e_txt, e_none, 1.0), e_txt, **tight)
    torch.testing.assert_close(two_scale_combine(e_none, e_img, e_txt, 1.0, 1.0), e_txt, **tight)
    torch.testing.assert_close(correctional_combine(e_none, e_img, e_neg, e_txt, 1.0, 1.0, 1.0), e_txt, **tight)
    # scale 0 is the unconditional model
    torch.testing.assert_close(cfg_combine(e_txt, e_none, 0.0), e_none, **tight)


def test_guidance_with_all_conditions_equal_returns_that_prediction():
    (e,) = preds(1, seed=1)
    assert torch.equal(cfg_combine(e, e, 4.0), e)
    assert torch.equal(two_scale_combine(e, e, e, 1.5, 3.0), e)
    assert torch.equal(correctional_combine(e, e, e, e, 1.5, 2.0, 3.0), e)


def test_guidance_matches_hand_computed_scalars():
    # e(0,0) = 1, e(I,0) = 2, e(I,D-) = 4, e(I,D) = 7 with ADDP's w = (1.5, 2, 3):
    # 1 + 1.5 * 1 + 2 * 2 + 3 * 3 = 15.5 ; two-scale (1.5, 3): 1 + 1.5 * 1 + 3 * 5 = 17.5 ; CFG 4: 1 + 4 * 6 = 25
    one, two, four, seven = (torch.tensor([v]) for v in (1.0, 2.0, 4.0, 7.0))
    assert correctional_combine(one, two, four, seven, 1.5, 2.0, 3.0).item() == 15.5
    assert two_scale_combine(one, two, seven, 1.5, 3.0).item() == 17.5
    assert cfg_combine(seven, one, 4.0).item() == 25.0


def test_correctional_guidance_with_negative_equal_to_prompt_is_two_scale():
    e_none, e_img, e_txt = preds(3, seed=2)
    torch.testing.assert_close(correctional_combine(e_none, e_img, e_txt, e_txt, 1.5, 2.0, 3.0),
                               two_scale_combine(e_none, e_img, e_txt, 1.5, 2.0), rtol=0, atol=1e-12)


class CountingModel:
    """model(x, t, y) with DiT's learned-sigma output (2C channels); counts forward calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, y):
        self.calls.append(x.shape[0])
        mean = x * (1 + y.double()).reshape(-1, 1, 1, 1) + t.double().reshape(-1, 1, 1, 1) / 1000
        return torch.cat([mean, torch.full_like(x, 99.0)], dim=1)  # (B, 2C, H, W): mean, then "variance"


def test_guided_model_fn_cfg_runs_one_batched_forward_and_combines():
    model = CountingModel()
    y = torch.tensor([3, 5])
    fn = guided_model_fn_cfg(model, y, null_y=10, scale=4.0)
    x, t = preds(1, seed=3)[0], torch.tensor([500, 500])
    out = fn(x, t)
    assert model.calls == [4], "one forward pass over [cond; uncond] of batch 2B"
    cond = x * (1 + y.double()).reshape(-1, 1, 1, 1) + 0.5
    uncond = x * 11 + 0.5
    torch.testing.assert_close(out, uncond + 4.0 * (cond - uncond))  # the variance half (99s) is dropped
    torch.testing.assert_close(guided_model_fn_cfg(model, y, torch.tensor([10, 10]), 4.0)(x, t), out)


def test_guided_cfg_fn_plugs_into_ddim_sample():
    model = CountingModel()
    s = NoiseSchedule("linear")
    x_T = torch.randn(2, 3, 2, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    out = ddim_sample(guided_model_fn_cfg(model, torch.tensor([0, 1]), 2, 1.5), x_T, s, steps=3)
    assert out.shape == x_T.shape and model.calls == [4, 4, 4]


# ---- bad input --------------------------------------------------------------------------------------------


def test_bad_input_raises_value_error_naming_value_and_choices():
    s = NoiseSchedule("linear")
    x = torch.zeros(1, 1, 2, 2)
    model = lambda x_t, t: x_t  # noqa: E731
    with pytest.raises(ValueError, match=r"steps=0 .*1\.\.T=1000"):
        timesteps(0)
    with pytest.raises(ValueError, match=r"steps=1001 "):
        ddim_sample(model, x, s, steps=1001)
    with pytest.raises(ValueError, match=r"'uniform'.*leading, trailing, linspace"):
        ddim_sample(model, x, s, spacing="uniform")
    with pytest.raises(ValueError, match=r"'epsilon'.*eps, x0, v"):
        ddim_sample(model, x, s, prediction="epsilon")
    with pytest.raises(ValueError, match=r"steps_offset=1 .*'trailing'"):
        timesteps(4, "trailing", steps_offset=1)
    with pytest.raises(ValueError, match=r"steps_offset=1 .*outside 0\.\.999"):
        timesteps(1000, "leading", steps_offset=1)
    with pytest.raises(ValueError, match=r"clip_x0=-1"):
        ddim_sample(model, x, s, clip_x0=-1.0)
    with pytest.raises(ValueError, match=r"shape \(1, 2, 2, 2\), expected \(1, 1, 2, 2\)"):
        ddim_sample(lambda x_t, t: torch.cat([x_t, x_t], 1), x, s, steps=2)


# ---- devices ----------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_sampling_and_timesteps_match_cpu():
    from minidp.schedules import MultinomialTimesteps, sample_uniform_timesteps

    s = NoiseSchedule("cosine")
    x_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(10))
    cpu = ddim_sample(fixed_random_model, x_T, s, steps=10, prediction="v")
    gpu = ddim_sample(fixed_random_model, x_T.cuda(), s, steps=10, prediction="v")
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5)
    # a CPU generator gives the same timesteps whatever device they are sent to
    t_cpu = sample_uniform_timesteps(8, generator=torch.Generator().manual_seed(1))
    t_gpu = sample_uniform_timesteps(8, generator=torch.Generator().manual_seed(1), device="cuda")
    assert t_gpu.device.type == "cuda" and torch.equal(t_gpu.cpu(), t_cpu)
    m = MultinomialTimesteps([1, 2, 3, 4], 1000)
    t_gpu = m.sample(8, generator=torch.Generator().manual_seed(2), device="cuda")
    assert torch.equal(t_gpu.cpu(), m.sample(8, generator=torch.Generator().manual_seed(2)))
    # the schedule lives on the CPU; t on the CPU with data on the GPU is accepted too
    x0 = torch.ones(2, 1, 2, 2, device="cuda")
    torch.testing.assert_close(s.q_sample(x0, torch.tensor([0, 999]), x0).cpu(),
                               s.q_sample(x0.cpu(), torch.tensor([0, 999]), x0.cpu()))
