"""The training recipe's pieces: each step's batch plan, what is noised, the loss, the learning-rate schedule, EMA.

train.py is one loop (STYLE.md); what the loop does at each step is written here, as small pure functions that
the tests check one by one.

Notable choices:
- The global batch of step s (scene indices, timesteps, label drops, noise, object picks, condition drops) is
  drawn from one generator seeded by (train.seed, s), and each rank takes its own slice of it. So a run's numbers
  do not depend on the number of ranks or on accumulation (2 ranks x B == 1 rank x 2B, a test checks it), and
  resuming is exact. DiT seeds each rank with `seed * world_size + rank` instead, which ties the data to the
  world size. New draws are appended after the old ones, so adding one does not change earlier runs' batches.
- Timesteps: t ~ Uniform{0..T-1} (DiT), or ADDP's contribution-aware Multinomial(c_t^2) (its Algorithm B) with
  c_t^2 from diffusion.timestep_sampling (the diffusion formula, a released preset, or a weights.json that
  minidp.ct_estimation estimated) or the explicit diffusion.timestep_weights. With diffusion.ct_usage = loss,
  ADDP's weaker alternative (its Table 5), t stays uniform and each sample's loss is multiplied by
  G c_g^2 / sum(c^2) for its group g: mean 1 over uniform t, so uniform c^2 is plain training, bit for bit.
  Weights are resolved once per process (a weights file is read at start-up, again when a run resumes: keep it
  unchanged while a run may still resume).
- Augmentation (train.augment, ADDP Sec. 3.2): the clean target is corrupted by minidp.augment before noising,
  from uniforms drawn in the plan, one row per sample, so it too is independent of ranks and exact on resume.
  The loss stays against the clean target (x0-prediction; config.py refuses eps / v with augmentation).
- Text-conditioned tasks drop the text, the image or both with probability p each (InstructPix2Pix, p = 0.05),
  so two-scale guidance has all three predictions it needs at test time.
- Loss: MSE (or L1, train.loss) against the prediction type's target, averaged over the valid pixels of each sample, then over
  samples (Marigold masks invalid depth).
"""

import torch

from minidp import augment, ct_estimation, moe, schedules, tasks

AUGMENT_UNIFORMS = 11  # per-sample uniforms of augment.augment_from_uniforms (the mask recipe uses all 11)
_WEIGHTS = {}  # resolved c_t^2 per diffusion section (a weights file is read once per process)


def timestep_weights(cfg):
    """The run's c_t^2 per group as a list of floats, or None for uniform t. ValueError (one line) for a
    weights file that is missing, malformed, of the wrong length or with negative entries.

    Presets and explicit vectors are returned as written (not normalised), so MultinomialTimesteps sees the
    same numbers as before the presets existed and old runs draw the same timesteps."""
    d = cfg.diffusion
    key = repr(d)
    if key not in _WEIGHTS:
        if d.timestep_weights:
            w = list(d.timestep_weights)
        elif d.timestep_sampling == "uniform":
            w = None
        elif d.timestep_sampling == "diffusion":
            alpha_bar = schedules.NoiseSchedule.from_config(d).alpha_bar
            w = ct_estimation.diffusion_ct2(alpha_bar, ct_estimation.GROUPS).tolist()
        elif d.timestep_sampling in ct_estimation.PRESETS:
            w = list(ct_estimation.PRESETS[d.timestep_sampling])
        else:  # perception:<file>, checked by load_weights (length, sign, format)
            w = ct_estimation.load_weights(d.timestep_sampling.split(":", 1)[1], ct_estimation.GROUPS).tolist()
        if w is not None:
            schedules.MultinomialTimesteps(w, d.T)  # G must divide T: fail here, at start-up, not at step 0
        _WEIGHTS[key] = w
    return _WEIGHTS[key]


def loss_weights(cfg, t):
    """Per-sample loss multipliers (B,) float32: 1 (ct_usage prob, uniform t), or G c_g^2 / sum(c^2) for the
    group g of each t (ct_usage loss); computed in float64, so equal weights give exactly 1."""
    w = timestep_weights(cfg)
    if cfg.diffusion.ct_usage == "prob" or w is None:
        return torch.ones(t.shape, dtype=torch.float32)
    w = torch.tensor(w, dtype=torch.float64)  # (G,)
    per_group = w * len(w) / w.sum()  # (G,) mean 1
    return per_group[t // (cfg.diffusion.T // len(w))].to(torch.float32)  # (B,)


def noised_target(cfg, task, pixels, batch, codec, t, u):
    """What the step noises (B, C, h, w): the clean target latent, or with train.augment ADDP's corruption of the
    pixel target at timesteps t (B,) from the plan's uniforms u (B, AUGMENT_UNIFORMS), encoded by the codec (the
    release augments before encoding); the loss stays against the clean target."""
    if not cfg.train.augment:
        return batch["target"]
    background = task.augment_background(pixels["cond"][0], cfg.data) if pixels["cond"] else None
    return codec.encode(augment.augment_from_uniforms(pixels["target"], t, task.augmentation, u, cfg.train.augment,
                                                      T=cfg.diffusion.T, background=background))


def batch_plan(cfg, step, latent, class_dropout, text):
    """Everything random about step `step`'s global batch, identical on every rank: a dict of (B, ...) tensors.

    indices (scene ids), t (timesteps), drop_label (class labels replaced by the null id), noise (B, *latent),
    pick (which object a referring / amodal sample asks about), drop_text, drop_image (bool), augment_u
    (B, AUGMENT_UNIFORMS) the augmentation's uniforms, loss_weight (B,) the per-sample loss multipliers."""
    tc, B = cfg.train, cfg.train.global_batch
    gen = step_generator(cfg, step)
    w = timestep_weights(cfg)
    timesteps = schedules.MultinomialTimesteps(w if w is not None and cfg.diffusion.ct_usage == "prob" else [1.0],
                                               cfg.diffusion.T)
    plan = {"indices": torch.randint(cfg.data.train_size, (B,), generator=gen),  # first: see step_indices
            "t": timesteps.sample(B, generator=gen)}
    plan["drop_label"] = torch.rand(B, generator=gen) < (cfg.model.class_dropout_prob if class_dropout else 0.0)
    plan["noise"] = torch.randn((B, *latent), generator=gen)
    plan["pick"] = torch.randint(2**20, (B,), generator=gen)
    u = torch.rand(B, generator=gen)  # u < p: text only; p <= u < 2p: image only; 2p <= u < 3p: both
    p = tc.cond_drop_prob if text else 0.0
    plan["drop_text"] = (u < p) | ((u >= 2 * p) & (u < 3 * p))
    plan["drop_image"] = (u >= p) & (u < 3 * p)
    if cfg.train.mode == "multitask":
        plan.update(mixed_draws(cfg, B, gen, plan))
    elif cfg.train.mode == "finetune":
        plan["task"] = torch.zeros(B, dtype=torch.long)  # not a draw: every sample is the run's task 0
    plan["augment_u"] = torch.rand(B, AUGMENT_UNIFORMS, generator=gen, dtype=torch.float64)
    if cfg.train.objective == "e2e":  # not a draw (the draws above stay, so the scenes match a diffusion run's)
        plan["t"] = torch.full((B,), cfg.diffusion.T - 1, dtype=torch.long)
    plan["loss_weight"] = loss_weights(cfg, plan["t"])  # not a draw: from the final t
    return plan


SEED_STRIDE = 0x9E3779B1  # odd, ~0.618 x 2^32: seed k's streams start far from every other seed's


def step_generator(cfg, step):
    """The generator of step `step`'s plan. torch's CPU generator keeps only the low 32 bits of its seed, so the
    seed and the step are combined within them: (step + train.seed x SEED_STRIDE) mod 2^32. Seed 0 is the step
    itself; seed k's steps meet seed 0's only after ~2.6e9 steps. (Until 2026-12-04 this was seed x 2^32 + step,
    whose low 32 bits ignore the seed: every train.seed drew the same batches, noise and timesteps.)"""
    return torch.Generator().manual_seed((step + cfg.train.seed * SEED_STRIDE) % 2**32)


def step_indices(cfg, step):
    """batch_plan(cfg, step, ...)["indices"] without drawing the rest: the generator's first draw, so a data loader
    can fetch the samples of steps ahead (minidp/data.py). A test holds the two equal."""
    return torch.randint(cfg.data.train_size, (cfg.train.global_batch,), generator=step_generator(cfg, step))


def mixed_draws(cfg, B, gen, plan):
    """The generalist's part of a batch plan (drawn after everything else, so single-task plans are unchanged):

    task (B,) long, index into tasks.run_tasks(cfg), drawn with replacement in proportion to data.tasks' weights;
    t redrawn from diffusion.task_timestep_weights[task] for the tasks that have their own (one full draw per such
    task, then a selection: the same number of draws whatever the mix); the text and image drops kept only on
    samples of text tasks (the other tasks have no text, and their image is never dropped)."""
    run = tasks.run_tasks(cfg)
    weights = torch.tensor([cfg.data.tasks[one.name] for one in run], dtype=torch.float64)
    task = torch.multinomial(weights, B, replacement=True, generator=gen)
    t = plan["t"].clone()
    for k, one in enumerate(run):
        own = cfg.diffusion.task_timestep_weights.get(one.name)
        if own:
            t = torch.where(task == k, schedules.MultinomialTimesteps(own, cfg.diffusion.T).sample(B, generator=gen), t)
    text = torch.tensor([one.text for one in run])[task]  # (B,) bool
    return {"task": task, "t": t, "drop_text": plan["drop_text"] & text, "drop_image": plan["drop_image"] & text}


def loss_kinds(cfg):
    """Per-sample loss kind for a plan's task ids: (K,) bool, True where task k trains with L1 (train.task_loss,
    else train.loss); index it with plan["task"]."""
    return torch.tensor([cfg.train.task_loss.get(one.name, cfg.train.loss) == "l1" for one in tasks.run_tasks(cfg)])


def lr_at(step, tc):
    """Linear warm-up, then constant (DiT) or exponential decay from lr to lr_final over the run (Marigold)."""
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    if tc.lr_schedule == "constant":
        return tc.lr
    progress = (step - tc.warmup_steps) / max(1, tc.steps - tc.warmup_steps)
    return tc.lr * (tc.lr_final / tc.lr) ** progress


@torch.no_grad()
def update_ema(ema, model, decay):
    """ema <- decay * ema + (1 - decay) * model = ema + (1 - decay) (model - ema), DiT's update, for every parameter
    in one foreach call (one kernel launch per step on a GPU instead of two per parameter)."""
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1 - decay)


def masked_loss(pred, target, mask, kind="mse", weights=None):
    """Per-sample mean squared (kind "mse") or absolute ("l1") error over the mask's pixels (all channels), times
    the sample's weight (B,) if given (ADDP's loss scaling), then the mean over samples. kind may be a (B,) bool
    tensor, True for the samples that take L1 (the generalist mixes tasks that train with different losses;
    loss_kinds).

    L1's minimiser is the median, MSE's the mean: where the model cannot tell whether a pixel is object or
    background, MSE predicts their average, a gray that a threshold read-back (amodal: gray < 250) counts as object,
    while L1 picks one of the two. Palette (Saharia et al.) offers the same choice for image-to-image diffusion."""
    m = mask[:, None].to(pred.dtype)  # (B, 1, H, W)
    if torch.is_tensor(kind):  # per sample: L1 where True
        err = torch.where(kind.to(pred.device)[:, None, None, None], (pred - target).abs(), (pred - target) ** 2)
    else:
        err = (pred - target).abs() if kind == "l1" else (pred - target) ** 2
    per_sample = (err * m).sum(dim=(1, 2, 3)) / (m.sum(dim=(1, 2, 3)) * pred.shape[1]).clamp_min(1)
    if weights is not None:
        per_sample = per_sample * weights.to(per_sample.dtype)
    return per_sample.mean()


def model_input(cfg, schedule, noised, plan, rows):
    """x_t (B, C, h, w), the noisy target the model denoises: q_sample of `noised` (noised_target) at the plan's t
    with the plan's noise, or for train.objective e2e zeros (E2E-FT feeds the noise's mean, so the one-step
    prediction is deterministic; q_sample at t = T - 1 without noise would still show the target, scaled by
    sqrt(alpha_bar), 0.068 on scaled_linear)."""
    if cfg.train.objective == "e2e":
        return torch.zeros_like(noised)
    return schedule.q_sample(noised, plan["t"][rows], plan["noise"][rows])


def e2e_loss(cfg, task, out, x_t, t, pixels, schedule, codec, kind):
    """E2E-FT's loss of a micro-batch: the output turned into x0 by the run's parameterisation, decoded with its
    graph, and the task's own loss in its own space (task.e2e_loss: depth affine-invariant L1, normals 1 - cos, flow
    L1 in pixels); a task without a differentiable read-back (amodal, referring) takes masked_loss on the decoded
    image against the pixel target instead."""
    pred = out[:, :x_t.shape[1]]
    pred = pred.float() if pred.dtype in (torch.bfloat16, torch.float16) else pred  # autocast's bf16 up; a test's f64 kept
    image = codec.decode_differentiable(schedule.to_x0_eps(pred, x_t, t, cfg.diffusion.prediction)[0])
    per_sample = task.e2e_loss(image, pixels)
    if per_sample is None:
        return masked_loss(image, pixels["target"].to(image.dtype), pixels["mask"], kind)
    return per_sample.mean()


def loss(cfg, out, batch, schedule, plan, rows, l1_of_task):
    """The diffusion loss of a micro-batch: the model's output `out` against the prediction type's target, masked
    (masked_loss), with the loss kind of each sample's task (l1_of_task: loss_kinds) and the plan's loss weights."""
    x0, task = batch["target"], plan.get("task")
    pred = out[:, :x0.shape[1]].float()  # drop the learned-sigma half if the model has one
    target = schedule.target(x0, plan["noise"][rows], plan["t"][rows], cfg.diffusion.prediction)
    kind = cfg.train.loss if task is None else l1_of_task[task[rows]]
    return masked_loss(pred, target, batch["mask"], kind, plan["loss_weight"][rows])


def balance_terms(model, like):
    """(DiT-MoE's balance loss, the MoE layers' expert loads) of the last forward; (0, None) for a dense model."""
    if "num_experts" not in model.config:
        return torch.zeros((), device=like.device), None
    return moe.moe_aux(model)  # returned explicitly by the MoE layers of this forward
