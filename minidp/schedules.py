"""Noise schedules, the forward process, eps / x0 / v conversions and timestep samplers.

Implements the discrete-time Gaussian diffusion of DDPM (Ho et al. 2020) with T = 1000 integer timesteps,
t = 0 the least noisy (REFERENCE.md §1):

    alpha_bar_t = prod_{s <= t} (1 - beta_s)                               (cumulative signal fraction)
    x_t = sqrt(alpha_bar_t) * x0 + sqrt(1 - alpha_bar_t) * eps,  eps ~ N(0, I)      (DDPM Eqn. 4)
    SNR(t) = alpha_bar_t / (1 - alpha_bar_t)

Three beta schedules, named as diffusers names them so configs can say either:
    linear         beta linear in t, 1e-4 .. 0.02 (DDPM, DiT)
    scaled_linear  sqrt(beta) linear in t, 0.00085 .. 0.012 (Stable Diffusion, hence Marigold)
    cosine         alpha_bar follows cos^2 (Nichol & Dhariwal 2021, Eqn. 17), diffusers `squaredcos_cap_v2`;
                   the scaling paper's best test-time schedule (its Fig. 10)
plus the zero-terminal-SNR rescale of Lin et al. 2024 (Algorithm 1), which makes x_{T-1} pure noise.

Prediction targets (Salimans & Ho 2022 for v), with a = alpha_bar_t:
    eps  the noise                       (DDPM, DiT)
    x0   the clean sample, "sample"      (ADDP with its augmentation, Appendix A.3.2)
    v  = sqrt(a) * eps - sqrt(1 - a) * x0 (Marigold)

Timestep samplers for training: uniform (DDPM Algorithm 1) and ADDP's contribution-aware multinomial
sampling (ADDP Algorithm B), plus the loss-scaling alternative it compares against (ADDP Table 5).

Notable choices:
- Schedules are computed and stored in float64 on the CPU (the cumprod of 1000 factors loses ~1e-5 relative
  precision in float32 and alpha_bar_{T-1} is ~4e-5 for `linear`). Per-timestep values are gathered on demand
  onto the device of `t` and cast to the dtype of the data they multiply, so one schedule serves every device.
- sqrt(alpha_bar) and sqrt(1 - alpha_bar) are taken in float64 BEFORE the cast, so float32 callers get the
  correctly rounded coefficient rather than the sqrt of a rounded one.
- The samplers draw on the generator's device and then move the result, so a CPU generator gives the same
  timesteps whatever device training runs on (reproducible seeds across machines).
"""

import math

import torch

# ----------------------------------------------------------------------------------------------------------
# Beta schedules
# ----------------------------------------------------------------------------------------------------------

# Default (beta_start, beta_end) per schedule: DDPM's for `linear`, Stable Diffusion's for `scaled_linear`.
# `cosine` has no such range: its betas follow from the cos^2 curve.
DEFAULT_BETA_RANGE = {"linear": (1e-4, 0.02), "scaled_linear": (0.00085, 0.012)}
SCHEDULES = ("linear", "scaled_linear", "cosine")
SCHEDULE_ALIASES = {"squaredcos_cap_v2": "cosine"}  # diffusers' name for the same schedule

PREDICTIONS = ("eps", "x0", "v")
PREDICTION_ALIASES = {"sample": "x0"}  # diffusers' name for x0-prediction


def _cosine_alpha_bar(s):
    """Nichol & Dhariwal's f(s) = cos^2((s + 0.008) / 1.008 * pi/2), s in [0, 1] (their Eqn. 17).

    The offset 0.008 keeps beta at s = 0 from being vanishingly small (their Sec. 3.2)."""
    return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2


def make_betas(name, T=1000, beta_start=None, beta_end=None):
    """The (T,) float64 betas of schedule `name` ("linear", "scaled_linear", "cosine"/"squaredcos_cap_v2").

    beta_start / beta_end default to the schedule's published values. `cosine` ignores them, as diffusers does:
    scheduler configs saved by diffusers always carry the two keys, whatever the schedule.
    """
    name = SCHEDULE_ALIASES.get(name, name)
    if name not in SCHEDULES:
        valid = SCHEDULES + tuple(SCHEDULE_ALIASES)
        raise ValueError(f"unknown noise schedule name={name!r}; valid choices: {', '.join(valid)}")
    if not isinstance(T, int) or T < 2:
        raise ValueError(f"T={T!r} must be an integer >= 2")
    if name == "cosine":
        # beta_i = 1 - f((i+1)/T) / f(i/T), so that alpha_bar_t = f((t+1)/T) / f(0) exactly; the cap 0.999
        # stops the last beta from reaching 1 (f(1) = 0), which would make x_{T-1} carry no signal at all
        # and the eps -> x0 conversion divide by zero (Nichol & Dhariwal Sec. 3.2).
        betas = [min(1 - _cosine_alpha_bar((i + 1) / T) / _cosine_alpha_bar(i / T), 0.999) for i in range(T)]
        return torch.tensor(betas, dtype=torch.float64)
    default_start, default_end = DEFAULT_BETA_RANGE[name]
    beta_start = default_start if beta_start is None else beta_start
    beta_end = default_end if beta_end is None else beta_end
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got beta_start={beta_start}, beta_end={beta_end}")
    if name == "linear":
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    # scaled_linear: linear in sqrt(beta), i.e. in the noise standard deviation added per step (LDM's choice)
    return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2


def rescale_zero_terminal_snr(betas):
    """Rescale betas so that alpha_bar_{T-1} = 0 (Lin et al. 2024, Algorithm 1).

    Common schedules leave signal in the "pure noise" x_{T-1} (SNR 4e-5 for linear), so a model never sees
    pure noise in training yet starts from it at inference. The fix shifts sqrt(alpha_bar) so its last value is
    0 and rescales it so its first value is unchanged, then converts back to betas. Afterwards the last beta is
    exactly 1: eps-prediction cannot recover x0 from x_{T-1} (use v or x0).
    """
    sqrt_ab = torch.cumprod(1 - betas.double(), dim=0).sqrt()  # (T,)
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    alpha_bar = sqrt_ab**2
    alphas = torch.cat([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])  # undo the cumprod, (T,)
    return 1 - alphas


# ----------------------------------------------------------------------------------------------------------
# The noise schedule: forward process and conversions
# ----------------------------------------------------------------------------------------------------------


def canonical_prediction(prediction):
    """Map a prediction-type name to one of PREDICTIONS ("sample" -> "x0"), or raise ValueError."""
    canonical = PREDICTION_ALIASES.get(prediction, prediction)
    if canonical not in PREDICTIONS:
        valid = PREDICTIONS + tuple(PREDICTION_ALIASES)
        raise ValueError(f"unknown prediction={prediction!r}; valid choices: {', '.join(valid)}")
    return canonical


def _at(values, t, like):
    """values[t] (float64 (T,) table) cast to like's dtype and device, shaped to broadcast over like.

    t: LongTensor (B,); like: (B, ...) -> returns (B, 1, ..., 1). Cast on the CPU first so devices without
    float64 (MPS) still work, then move and index (t may live on the CPU while like is on a GPU).
    """
    if values.device != like.device:  # a table moved with NoiseSchedule.to is indexed in place: no copy, no sync
        values = values.to(like.dtype).to(like.device)
    v = values[t.to(like.device)].to(like.dtype)  # (B,)
    return v.reshape(-1, *([1] * (like.dim() - 1)))  # (B, 1, ..., 1)


class NoiseSchedule:
    """A beta schedule with its alpha_bar, the forward process q(x_t | x0) and the eps / x0 / v algebra."""

    def __init__(self, name="linear", T=1000, beta_start=None, beta_end=None, zero_terminal_snr=False):
        self.name = SCHEDULE_ALIASES.get(name, name)
        self.T = T
        betas = make_betas(name, T, beta_start, beta_end)
        if zero_terminal_snr:
            betas = rescale_zero_terminal_snr(betas)
        self.betas = betas  # (T,) float64, CPU
        self.alpha_bar = torch.cumprod(1 - betas, dim=0)  # (T,) float64, CPU
        self.sqrt_alpha_bar = self.alpha_bar.sqrt()  # (T,) coefficient of x0 in x_t
        self.sqrt_one_minus_alpha_bar = (1 - self.alpha_bar).sqrt()  # (T,) coefficient of eps in x_t

    @classmethod
    def from_config(cls, d, name=""):
        """The schedule of a config's diffusion section d; `name` (sample.schedule at test time) swaps in another
        schedule at that schedule's default betas."""
        same = not name or name == d.schedule
        return cls(d.schedule if same else name, d.T, d.beta_start if same else None, d.beta_end if same else None,
                   d.zero_terminal_snr)

    def to(self, device):
        """Move the tables to `device` (float64 kept), so the training step indexes them without a host copy."""
        for name in ("betas", "alpha_bar", "sqrt_alpha_bar", "sqrt_one_minus_alpha_bar"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def __repr__(self):
        return f"NoiseSchedule(name={self.name!r}, T={self.T}, alpha_bar[-1]={self.alpha_bar[-1].item():.3g})"

    # -- forward process -------------------------------------------------------------------------------

    def q_sample(self, x0, t, eps):
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps (DDPM Eqn. 4); t: LongTensor (B,)."""
        return _at(self.sqrt_alpha_bar, t, x0) * x0 + _at(self.sqrt_one_minus_alpha_bar, t, x0) * eps

    def snr(self, t):
        """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t), float64 on t's device (0 at zero terminal SNR)."""
        a = self.alpha_bar.to(t.device)[t]
        return a / (1 - a)

    def log_snr(self, t):
        """log SNR(t) = log alpha_bar_t - log(1 - alpha_bar_t), float64 (-inf at zero terminal SNR).

        Written as a difference of logs rather than log(snr) so that it stays accurate where alpha_bar is
        close to 1 (t near 0), where 1 - alpha_bar ~ 1e-4."""
        a = self.alpha_bar.to(t.device)[t]
        return torch.log(a) - torch.log1p(-a)

    # -- conversions between eps, x0 and v (a = alpha_bar_t) ------------------------------------------------

    def x0_from_eps(self, x_t, t, eps):
        """x0 = (x_t - sqrt(1 - a) eps) / sqrt(a): invert the forward process given the noise."""
        return (x_t - _at(self.sqrt_one_minus_alpha_bar, t, x_t) * eps) / _at(self.sqrt_alpha_bar, t, x_t)

    def eps_from_x0(self, x_t, t, x0):
        """eps = (x_t - sqrt(a) x0) / sqrt(1 - a): the noise that takes x0 to x_t."""
        return (x_t - _at(self.sqrt_alpha_bar, t, x_t) * x0) / _at(self.sqrt_one_minus_alpha_bar, t, x_t)

    def v_from_x0_eps(self, x0, eps, t):
        """v = sqrt(a) eps - sqrt(1 - a) x0 (Salimans & Ho 2022, Sec. 4): the velocity of x_t along the circle
        x_t = cos(phi) x0 + sin(phi) eps, phi = arccos(sqrt(a))."""
        return _at(self.sqrt_alpha_bar, t, x0) * eps - _at(self.sqrt_one_minus_alpha_bar, t, x0) * x0

    def x0_from_v(self, x_t, t, v):
        """x0 = sqrt(a) x_t - sqrt(1 - a) v (a rotation back by phi; no division, so stable at every t)."""
        return _at(self.sqrt_alpha_bar, t, x_t) * x_t - _at(self.sqrt_one_minus_alpha_bar, t, x_t) * v

    def eps_from_v(self, x_t, t, v):
        """eps = sqrt(a) v + sqrt(1 - a) x_t."""
        return _at(self.sqrt_alpha_bar, t, x_t) * v + _at(self.sqrt_one_minus_alpha_bar, t, x_t) * x_t

    def target(self, x0, eps, t, prediction):
        """The regression target of a model trained with `prediction` in {"eps", "x0" ("sample"), "v"}."""
        prediction = canonical_prediction(prediction)
        if prediction == "eps":
            return eps
        if prediction == "x0":
            return x0
        return self.v_from_x0_eps(x0, eps, t)

    def to_x0_eps(self, pred, x_t, t, prediction):
        """Turn a model output of type `prediction` into the pair (x0_hat, eps_hat) consistent with x_t.

        Every sampler step needs both: x0_hat is where the trajectory points, eps_hat the direction to
        re-noise along. With eps-prediction at alpha_bar_t = 0 (zero terminal SNR) x0 is undefined (0/0)."""
        prediction = canonical_prediction(prediction)
        if prediction == "eps":
            return self.x0_from_eps(x_t, t, pred), pred
        if prediction == "x0":
            return pred, self.eps_from_x0(x_t, t, pred)
        return self.x0_from_v(x_t, t, pred), self.eps_from_v(x_t, t, pred)


# ----------------------------------------------------------------------------------------------------------
# Timestep samplers for training
# ----------------------------------------------------------------------------------------------------------


def _draw_device(generator, device):
    """Draw on the generator's device (a CPU generator cannot fill a CUDA tensor); the caller moves after."""
    return generator.device if generator is not None else device


def sample_uniform_timesteps(batch, T=1000, generator=None, device=None):
    """t ~ Uniform{0, ..., T-1}, a LongTensor (batch,) on `device` (DDPM Algorithm 1, DiT)."""
    t = torch.randint(0, T, (batch,), generator=generator, device=_draw_device(generator, device))
    return t.to(device) if device is not None else t


class MultinomialTimesteps:
    """ADDP's contribution-aware timestep sampling, t ~ Multinomial(c_0^2, ..., c_{T-1}^2) (ADDP Algorithm B).

    weights: length T (one per timestep) or length G dividing T (one per group of T/G consecutive timesteps,
    index 0 = timesteps 0 .. T/G - 1; ADDP merges the 1000 steps into 10 groups, its Appendix A.2.1). A group's
    weight is spread evenly over its timesteps; everything is normalised so `probs` sums to 1.
    """

    def __init__(self, weights, T=1000):
        w = torch.as_tensor(weights, dtype=torch.float64).flatten()  # (G,)
        G = w.numel()
        if G == 0 or T % G != 0:
            raise ValueError(f"weights has length {G}; it must be T={T} or a divisor of T (e.g. 10 groups)")
        if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights must be finite, non-negative and not all zero, got {w.tolist()}")
        # each group weight split evenly over its T/G timesteps, (G,) -> (T,)
        per_t = (w / (T // G)).repeat_interleave(T // G)  # (T,)
        self.T = T
        self.probs = per_t / per_t.sum()  # (T,) float64, sums to 1

    def sample(self, batch, generator=None, device=None):
        """A LongTensor (batch,) of timesteps drawn i.i.d. with probabilities `probs`."""
        probs = self.probs.to(_draw_device(generator, device) or "cpu")
        t = torch.multinomial(probs, batch, replacement=True, generator=generator)  # (batch,)
        return t.to(device) if device is not None else t
