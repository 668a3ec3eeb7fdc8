"""DDIM sampling and guidance: turn a trained denoiser into predictions.

DDIM (Song, Meng & Ermon 2021) samples with N << T model calls. From x_t at a timestep t of the sampling
sequence to the next (less noisy) timestep p of that sequence, with a = alpha_bar_t, a_p = alpha_bar_p:

    x0_hat, eps_hat = the model's prediction, converted (schedules.NoiseSchedule.to_x0_eps)
    sigma = eta * sqrt((1 - a_p) / (1 - a) * (1 - a / a_p))                        (DDIM Eqn. 16)
    x_p   = sqrt(a_p) * x0_hat + sqrt(1 - a_p - sigma^2) * eps_hat + sigma * z      (DDIM Eqn. 12)

eta = 0 is the deterministic sampler (a discretisation of the probability-flow ODE, DDIM Sec. 4.3): the same
x_T always gives the same prediction, which is what perception wants (the scaling paper's Sec. 5). eta = 1
with every timestep (N = T) is DDPM's ancestral sampler: sigma^2 is then the posterior variance beta_tilde.

Guidance combines predictions under different conditions (each function's docstring has its formula):
class-conditional CFG (DiT), InstructPix2Pix's image + text two-scale guidance, and ADDP's correctional
guidance (ADDP Eqn. 5).

Notable choices:
- The previous timestep is the NEXT entry of the actual sequence. diffusers' DDIMScheduler.step uses
  t - T // N, which differs for `linspace` spacing (and for `trailing` when N does not divide T).
- After the last step alpha_prev = 1 (`set_alpha_to_one`, diffusers' default): the final x0_hat is returned
  as is. With alpha_bar[0] instead, the output keeps the t = 0 noise level sqrt(1 - alpha_bar[0]) ~ 1e-2.
- The whole batch shares one timestep per step, so coefficients are Python floats (from the float64 schedule)
  and the arithmetic runs in x_T's dtype: pass float64 noise for reference-grade comparisons.
- eps-prediction cannot start at alpha_bar = 0 (zero terminal SNR with `trailing`/`linspace` spacing):
  x0 = (x_t - eps) / 0 is undefined, so ddim_sample refuses it up front (Lin et al. 2024 use v-prediction).
- `clip_x0` clips x0_hat and recomputes eps_hat from the clipped x0 so the two stay consistent with x_t
  (diffusers' `clip_sample` + `use_clipped_model_output`).

Legend for shape comments: B batch, C channels, H, W spatial.
"""

import torch

from minidp.schedules import canonical_prediction

SPACINGS = ("leading", "trailing", "linspace")

# ----------------------------------------------------------------------------------------------------------
# Sampling timesteps
# ----------------------------------------------------------------------------------------------------------


def timesteps(steps, spacing="leading", T=1000, steps_offset=0):
    """The N = `steps` sampling timesteps, descending, as a LongTensor (N,) (diffusers' spacing names).

    leading:  arange(N) * (T // N) + steps_offset, reversed   (N=4: 750, 500, 250, 0) DDIM's original choice
    trailing: round(T - i * T / N) - 1 for i = 0..N-1         (N=4: 999, 749, 499, 249) starts at pure noise
    linspace: round(linspace(0, T - 1, N)), reversed          (N=4: 999, 666, 333, 0)
    Lin et al. 2024 (Table 2) recommend trailing: leading never visits t = T-1, the noisiest step, although
    sampling starts from pure noise. steps_offset (Stable Diffusion uses 1) applies to `leading` only.
    """
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing={spacing!r}; valid choices: {', '.join(SPACINGS)}")
    if not isinstance(steps, int) or not 1 <= steps <= T:
        raise ValueError(f"steps={steps!r} must be an integer in 1..T={T}")
    if spacing != "leading" and steps_offset != 0:
        raise ValueError(f"steps_offset={steps_offset} only applies to spacing='leading', not {spacing!r}")
    if spacing == "leading":
        ts = torch.arange(steps) * (T // steps) + steps_offset  # (N,) ascending
        if steps_offset < 0 or ts[-1] >= T:
            raise ValueError(f"steps_offset={steps_offset} puts timesteps outside 0..{T - 1} for steps={steps}")
        return ts.flip(0)
    if spacing == "trailing":
        # float64 T/N then round-half-to-even, as numpy does in diffusers, so both give identical sequences
        return (T - torch.arange(steps, dtype=torch.float64) * (T / steps)).round().long() - 1
    return torch.linspace(0, T - 1, steps, dtype=torch.float64).round().long().flip(0)


# ----------------------------------------------------------------------------------------------------------
# The sampler
# ----------------------------------------------------------------------------------------------------------


def ddim_sample(model_fn, x_T, schedule, steps=50, prediction="eps", spacing="leading", steps_offset=0,
                eta=0.0, clip_x0=None, set_alpha_to_one=True, generator=None, return_intermediates=False):
    """Run DDIM from the noise x_T (B, ...) to a sample x0 (B, ...).

    model_fn(x_t, t) -> prediction of type `prediction` ("eps", "x0"/"sample", "v"), same shape as x_t;
    t is a LongTensor (B,) on x_T's device. The caller draws x_T, so it controls the seed of each sample;
    `generator` only feeds the extra noise z of eta > 0.
    Returns x0, or (x0, intermediates) with intermediates a list of (t, x_t, x0_hat) in sampling order:
    the model's input at each step and the clean prediction it implied (ADDP Fig. 1, Algorithm A).
    """
    prediction = canonical_prediction(prediction)
    seq = timesteps(steps, spacing, schedule.T, steps_offset).tolist()
    alpha_bar = schedule.alpha_bar.tolist()  # Python floats from the float64 table
    if prediction == "eps" and alpha_bar[seq[0]] == 0:
        raise ValueError(f"prediction='eps' cannot start at t={seq[0]} where alpha_bar = 0 (zero terminal SNR): "
                         "x0 = (x_t - eps) / 0 is undefined; valid choices there: 'v', 'x0'")
    if clip_x0 is not None and not clip_x0 > 0:
        raise ValueError(f"clip_x0={clip_x0!r} must be None or a positive float")
    final_alpha_bar = 1.0 if set_alpha_to_one else alpha_bar[0]

    x = x_T
    intermediates = []
    for i, t in enumerate(seq):
        t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)  # (B,)
        pred = model_fn(x, t_batch)
        if pred.shape != x.shape:
            raise ValueError(f"model_fn returned shape {tuple(pred.shape)}, expected {tuple(x.shape)} (x_t's)")
        pred = pred.to(x.dtype)  # a bf16-autocast model would otherwise demote the whole trajectory
        x0_hat, eps_hat = schedule.to_x0_eps(pred, x, t_batch, prediction)
        if clip_x0 is not None:
            x0_hat = x0_hat.clamp(-clip_x0, clip_x0)
            eps_hat = schedule.eps_from_x0(x, t_batch, x0_hat)
        if return_intermediates:
            intermediates.append((t, x, x0_hat))

        a = alpha_bar[t]
        a_prev = alpha_bar[seq[i + 1]] if i + 1 < len(seq) else final_alpha_bar
        # DDIM Eqn. 16; max(.., 0) absorbs rounding where a == a_prev (sigma is then 0 anyway)
        var = (1 - a_prev) / (1 - a) * max(1 - a / a_prev, 0.0)
        sigma = eta * var**0.5
        # DDIM Eqn. 12: point at x0_hat, then re-noise to level a_prev along eps_hat (plus fresh noise z)
        x = a_prev**0.5 * x0_hat + max(1 - a_prev - sigma**2, 0.0) ** 0.5 * eps_hat
        if eta > 0:
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device
                            if generator is not None else x.device).to(x.device)
            x = x + sigma * z
    return (x, intermediates) if return_intermediates else x


# ----------------------------------------------------------------------------------------------------------
# Guidance: pure combinations of predictions
# ----------------------------------------------------------------------------------------------------------


def cfg_combine(cond, uncond, scale):
    """Classifier-free guidance (Ho & Salimans 2022; DiT): uncond + s * (cond - uncond).

    s = 1 is the plain conditional model; s > 1 extrapolates away from the unconditional prediction."""
    return uncond + scale * (cond - uncond)


def two_scale_combine(e_none, e_img, e_img_txt, s_img, s_txt):
    """InstructPix2Pix guidance (Brooks et al. 2023, Eqn. 3) with image I and text D:

        e(0,0) + s_I * (e(I,0) - e(0,0)) + s_D * (e(I,D) - e(I,0))

    ADDP uses s_I = 1.5, s_D = 3.0 (its Appendix A.1; 7.5 text for the InstructPix2Pix baseline)."""
    return e_none + s_img * (e_img - e_none) + s_txt * (e_img_txt - e_img)


def correctional_combine(e_none, e_img, e_img_neg, e_img_txt, w_img, w_neg, w_txt):
    """ADDP correctional guidance (its Eqn. 5) with image I, referring text D and correctional prompt D-:

        e(0,0) + w_I (e(I,0) - e(0,0)) + w_D- (e(I,D-) - e(I,0)) + w_D (e(I,D) - e(I,D-))

    D- names what the prediction wrongly grounded; w_D > w_D- pushes the result from D- towards D (ADDP:
    w_I = 1.5, w_D- = 2.0, w_D = 3.0). With D- = D it is two-scale guidance with s_D = w_D-."""
    return (e_none + w_img * (e_img - e_none) + w_neg * (e_img_neg - e_img)
            + w_txt * (e_img_txt - e_img_neg))


# ----------------------------------------------------------------------------------------------------------
# Guidance: one batched forward for every condition
# ----------------------------------------------------------------------------------------------------------


def guided_model_fn_cfg(model, y, null_y, scale):
    """A model_fn(x_t, t) for ddim_sample doing classifier-free guidance with one forward of batch 2B.

    model(x, t, y) -> out with out's first C channels the prediction (DiT with learned sigma returns 2C:
    the variance half is dropped, DDIM does not use it). y: LongTensor (B,) labels; null_y: the null label
    (DiT: num_classes), an int or a LongTensor (B,). Unlike DiT's sample.py, which guides only the first 3
    of 4 latent channels, every channel is guided.
    """
    if not torch.is_tensor(null_y):
        null_y = torch.full_like(y, null_y)
    y_both = torch.cat([y, null_y])  # (2B,) conditional first, then unconditional

    def fn(x_t, t):
        C = x_t.shape[1]
        out = model(torch.cat([x_t, x_t]), torch.cat([t, t]), y_both)  # (2B, C or 2C, H, W)
        cond, uncond = out[:, :C].chunk(2)  # (B, C, H, W) each
        return cfg_combine(cond, uncond, scale)

    return fn
