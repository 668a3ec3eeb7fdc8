"""The training recipe's pieces: each step's batch plan, the learning-rate schedule, EMA, the masked loss.

train.py is one loop (STYLE.md); what the loop does at each step is written here, as small pure functions that
the tests check one by one.

Notable choices:
- The global batch of step s (scene indices, timesteps, label drops, noise, object picks, condition drops) is
  drawn from one generator seeded by (train.seed, s), and each rank takes its own slice of it. So a run's numbers
  do not depend on the number of ranks or on accumulation (2 ranks x B == 1 rank x 2B, a test checks it), and
  resuming is exact. DiT seeds each rank with `seed * world_size + rank` instead, which ties the data to the
  world size. New draws are appended after the old ones, so adding one does not change earlier runs' batches.
- Timesteps: t ~ Uniform{0..T-1} (DiT), or ADDP's contribution-aware Multinomial(c_t^2) (its Algorithm B) when
  diffusion.timestep_weights is set.
- Text-conditioned tasks drop the text, the image or both with probability p each (InstructPix2Pix, p = 0.05),
  so two-scale guidance has all three predictions it needs at test time.
- Loss: MSE (or L1, train.loss) against the prediction type's target, averaged over the valid pixels of each sample, then over
  samples (Marigold masks invalid depth).
"""

import torch

from minidp import schedules, tasks


def batch_plan(cfg, step, latent, class_dropout, text):
    """Everything random about step `step`'s global batch, identical on every rank: a dict of (B, ...) tensors.

    indices (scene ids), t (timesteps), drop_label (class labels replaced by the null id), noise (B, *latent),
    pick (which object a referring / amodal sample asks about), drop_text, drop_image (bool)."""
    tc, B = cfg.train, cfg.train.global_batch
    gen = torch.Generator().manual_seed(tc.seed * 2**32 + step)
    timesteps = schedules.MultinomialTimesteps(cfg.diffusion.timestep_weights or [1.0], cfg.diffusion.T)
    plan = {"indices": torch.randint(cfg.data.train_size, (B,), generator=gen),
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
    return plan


def mixed_draws(cfg, B, gen, plan):
    """The generalist's part of a batch plan (drawn after everything else, so single-task plans are unchanged):

    task (B,) long, index into tasks.run_tasks(cfg), drawn with replacement in proportion to data.tasks' weights;
    t redrawn from diffusion.task_timestep_weights[task] for the tasks that have their own (one full draw per such
    task, then a selection: the same number of draws whatever the mix); the text and image drops kept only on
    referring samples (the other tasks have no text, and their image is never dropped)."""
    names = tasks.run_tasks(cfg)
    weights = torch.tensor([cfg.data.tasks[name] for name in names], dtype=torch.float64)
    task = torch.multinomial(weights, B, replacement=True, generator=gen)
    t = plan["t"].clone()
    for k, name in enumerate(names):
        own = cfg.diffusion.task_timestep_weights.get(name)
        if own:
            t = torch.where(task == k, schedules.MultinomialTimesteps(own, cfg.diffusion.T).sample(B, generator=gen), t)
    referring = task == names.index("referring") if "referring" in names else torch.zeros(B, dtype=torch.bool)
    return {"task": task, "t": t, "drop_text": plan["drop_text"] & referring,
            "drop_image": plan["drop_image"] & referring}


def loss_kinds(cfg):
    """Per-sample loss kind for a plan's task ids: (K,) bool, True where task k trains with L1 (train.task_loss,
    else train.loss); index it with plan["task"]."""
    return torch.tensor([cfg.train.task_loss.get(name, cfg.train.loss) == "l1" for name in tasks.run_tasks(cfg)])


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
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter (DiT's 10-line helper)."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.mul_(decay).add_(p.detach(), alpha=1 - decay)


def masked_loss(pred, target, mask, kind="mse"):
    """Per-sample mean squared (kind "mse") or absolute ("l1") error over the mask's pixels (all channels), then
    the mean over samples. kind may be a (B,) bool tensor, True for the samples that take L1 (the generalist
    mixes tasks that train with different losses; loss_kinds).

    L1's minimiser is the median, MSE's the mean: where the model cannot tell whether a pixel is object or
    background, MSE predicts their average, a gray that a threshold read-back (amodal: gray < 250) counts as object,
    while L1 picks one of the two. Palette (Saharia et al.) offers the same choice for image-to-image diffusion."""
    m = mask[:, None].to(pred.dtype)  # (B, 1, H, W)
    if torch.is_tensor(kind):  # per sample: L1 where True
        err = torch.where(kind.to(pred.device)[:, None, None, None], (pred - target).abs(), (pred - target) ** 2)
    else:
        err = (pred - target).abs() if kind == "l1" else (pred - target) ** 2
    per_sample = (err * m).sum(dim=(1, 2, 3)) / (m.sum(dim=(1, 2, 3)) * pred.shape[1]).clamp_min(1)
    return per_sample.mean()
