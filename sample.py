"""Sample from a trained run and evaluate it: DDIM, test-time ensembling, metrics, figures.

    python sample.py runs/depth [sample.steps=200 sample.ensemble=5 sample.schedule=cosine ...]

Loads `runs/<name>/ckpt.pt` (EMA weights) and the config stored inside it, applies `sample.*` overrides, and
writes `eval.json` and `figures/*.png` into the run directory (or `--out`). train.py calls `evaluate` at the
end of training, so the numbers a run reports are the numbers this script reproduces.

- depth: for each validation scene, M ensemble members (one batch: the M members of an image run together)
  x DDIM(N steps) -> decode (channel mean) -> ensemble (median / mean / median compilation) -> AbsRel, delta1-3,
  RMSE after per-image least-squares alignment. The mean-depth prior (the training-set mean depth map,
  aligned per image the same way) is reported beside it as the baseline a model must beat. Figures: a grid
  (input, ground truth, prediction, error) and the supplementary Fig. 1 denoising progression.
- class: K x n class-conditional samples with classifier-free guidance; `class_accuracy` = how many a
  nearest-class-mean classifier, fitted on real world images, assigns to the prompted class. Figure: a grid
  of samples per class.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from minidp import config as cfglib
from minidp import data, ddim, dit, ensemble, metrics, schedules, viz

PROGRESSION_T = (999, 799, 599, 400, 200, 0)  # supplementary Fig. 1 (its "1000" is our t = 999)
PROGRESSION_STEPS = 51  # round(linspace(0, 999, 51)) holds every t above, whatever sample.steps is


def sampling_schedule(cfg):
    """The noise schedule used at test time: the training one unless sample.schedule overrides it."""
    d = cfg.diffusion
    name = cfg.sample.schedule or d.schedule
    same = name == d.schedule
    return schedules.NoiseSchedule(name, d.T, d.beta_start if same else None, d.beta_end if same else None,
                                   d.zero_terminal_snr)


def model_fn_for(model, cond, y, task):
    """f(x_t, t) -> prediction for DDIM: prepends the condition latents, keeps the first C output channels."""

    def fn(x_t, t):
        x_in = torch.cat(cond + [x_t], dim=1) if cond else x_t
        return model(x_in, t, y, task=task)[:, : x_t.shape[1]]

    return fn


@torch.no_grad()
def generate(model, cfg, cond, y, task, generator, steps=None, spacing=None, return_intermediates=False):
    """DDIM from fresh noise for a batch: cond is a list of (B, C, H, W) latents, y (B,) labels.
    steps / spacing default to the config's sample section."""
    B = y.shape[0]
    C = model.in_channels
    x_T = torch.randn((B, C, model.input_size, model.input_size), generator=generator).to(y.device)
    s = cfg.sample
    return ddim.ddim_sample(model_fn_for(model, cond, y, task), x_T, sampling_schedule(cfg), steps=steps or s.steps,
                            prediction=cfg.diffusion.prediction, spacing=spacing or s.spacing, eta=s.eta,
                            clip_x0=s.clip_x0 or None, return_intermediates=return_intermediates)


# ----------------------------------------------------------------------------------------------------------
# Depth
# ----------------------------------------------------------------------------------------------------------

def mean_depth_prior(cfg, n=512):
    """The training-set mean depth map (over valid pixels), from the first n training scenes."""
    s = data.render_cache(cfg.data, min(n, cfg.data.train_size))
    return (s["depth"] * s["valid"]).sum(0) / s["valid"].float().sum(0).clamp_min(1)  # (H, W)


@torch.no_grad()
def evaluate_depth(model, cfg, out_dir, device, quick=False):
    s, dc = cfg.sample, cfg.data
    n = min(s.num_images, 8) if quick else s.num_images
    label = torch.tensor(dit.task_label(model, 0), device=device)
    gen = torch.Generator().manual_seed(s.seed)
    preds, gts, valids, rgbs = [], [], [], []
    t0 = time.time()
    for start in range(0, n, s.batch):
        idx = list(range(dc.val_offset + start, dc.val_offset + min(start + s.batch, n)))
        batch = data.make_batch(dc, idx, device)
        b, M = len(idx), s.ensemble
        # the M members of each image run as one batch: (M*b, ...), member-major
        cond = [c.repeat(M, 1, 1, 1) for c in batch["cond"]]
        y = label.expand(M * b).contiguous()
        task = torch.zeros(M * b, dtype=torch.long, device=device)
        x0 = generate(model, cfg, cond, y, task, gen)
        members = data.decode_depth(x0.float()).view(M, b, *x0.shape[-2:])  # (M, b, H, W)
        merged = members[0] if M == 1 else ensemble.ensemble(members, s.ensemble_method)
        preds.append(merged.cpu())
        gts.append(batch["depth"].cpu())
        valids.append(batch["valid"].cpu())
        rgbs.append(batch["cond"][0].cpu())
    pred, gt, valid = torch.cat(preds), torch.cat(gts), torch.cat(valids)
    seconds = time.time() - t0
    result = metrics.depth_metrics(pred, gt, valid)
    prior = mean_depth_prior(cfg).expand_as(gt)
    result.update({f"prior_{k}": v for k, v in metrics.depth_metrics(prior, gt, valid).items()})
    result.update(num_images=n, steps=s.steps, ensemble=s.ensemble, ensemble_method=s.ensemble_method,
                  schedule=s.schedule or cfg.diffusion.schedule, spacing=s.spacing, seconds=seconds)

    figures = Path(out_dir) / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    k = min(4, n)
    aligned = metrics.align_lstsq(pred[:k], gt[:k], valid[:k])
    depth_grid_figure(rgbs[0][:k], gt[:k], aligned, valid[:k], figures / "depth_grid.png")
    progression_figure(model, cfg, device, figures / "denoising_progression.png")
    return result


@torch.no_grad()
def progression_figure(model, cfg, device, path):
    """The x0 prediction at t = 999, 799, ..., 0 for one validation scene, each aligned to ground truth.

    Always a 51-step linspace chain, so the figure shows the same timesteps whatever sample.steps is."""
    batch = data.make_batch(cfg.data, [cfg.data.val_offset], device)
    y = torch.tensor([dit.task_label(model, 0)], device=device)
    task = torch.zeros(1, dtype=torch.long, device=device)
    _, inter = generate(model, cfg, batch["cond"], y, task, torch.Generator().manual_seed(cfg.sample.seed),
                        steps=PROGRESSION_STEPS, spacing="linspace", return_intermediates=True)
    gt, valid = batch["depth"].cpu(), batch["valid"].cpu()
    panels, titles = [], []
    for target_t in PROGRESSION_T:
        t, _, x0_hat = min(inter, key=lambda item: abs(item[0] - target_t))
        d = data.decode_depth(x0_hat.float().cpu())
        panels.append(metrics.align_lstsq(d, gt, valid)[0])
        titles.append(f"x0 at t={t}")
    rng = dict(valid=valid[0], near=gt[0][valid[0]].min().item(), far=gt[0][valid[0]].max().item())
    row = [viz.to_image(batch["cond"][0][0].cpu())] + [viz.depth_to_rgb(p, **rng) for p in panels]
    viz.save_grid([row + [viz.depth_to_rgb(gt[0], **rng)]], [["input"] + titles + ["ground truth"]], path)


def depth_grid_figure(rgb, gt, pred, valid, path, max_err=0.3):
    """One row per image: input, ground truth, aligned prediction (same colour range), |relative error|."""
    rows, titles = [], []
    for i in range(len(gt)):
        v = valid[i]
        rng = dict(valid=v, near=gt[i][v].min().item(), far=gt[i][v].max().item())
        err = ((pred[i] - gt[i]).abs() / gt[i].clamp_min(1e-6) / max_err).clamp(0, 1) * v  # white = max_err or more
        rows.append([viz.to_image(rgb[i]), viz.depth_to_rgb(gt[i], **rng), viz.depth_to_rgb(pred[i], **rng),
                     err.numpy()])
        titles.append(["input", "ground truth", "prediction (aligned)", f"|rel. error| (white >= {max_err:.0%})"])
    viz.save_grid(rows, titles, path)


# ----------------------------------------------------------------------------------------------------------
# Class-conditional generation
# ----------------------------------------------------------------------------------------------------------

def class_features(images):
    """What the nearest-class-mean classifier sees: the image average-pooled to 8x8 (colour layout)."""
    return F.adaptive_avg_pool2d(images.float(), 8).flatten(1)  # (B, 3*8*8)


def fit_class_means(cfg, n=2000):
    """Per-class mean feature over n real training scenes: (K, F)."""
    s = data.render_cache(cfg.data, n)
    feats, labels = class_features(s["rgb"]), s["label"]
    return torch.stack([feats[labels == k].mean(0) for k in range(cfg.data.num_classes)])


def nearest_class(means, images):
    return torch.cdist(class_features(images), means).argmin(dim=1)


@torch.no_grad()
def evaluate_class(model, cfg, out_dir, device, quick=False):
    s, K = cfg.sample, cfg.data.num_classes
    per_class = 2 if quick else max(1, s.num_images // K)
    y = torch.arange(K, device=device).repeat_interleave(per_class)  # (K*n,)
    gen = torch.Generator().manual_seed(s.seed)
    t0 = time.time()
    samples = []
    for start in range(0, len(y), s.batch):
        yb = y[start:start + s.batch]
        x_T = torch.randn((len(yb), model.in_channels, model.input_size, model.input_size), generator=gen).to(device)
        fn = ddim.guided_model_fn_cfg(model, yb, torch.full_like(yb, model.num_classes), s.cfg_scale)
        samples.append(ddim.ddim_sample(fn, x_T, sampling_schedule(cfg), steps=s.steps, clip_x0=s.clip_x0 or None,
                                        prediction=cfg.diffusion.prediction, spacing=s.spacing, eta=s.eta).cpu())
    samples = torch.cat(samples).clamp(-1, 1)
    seconds = time.time() - t0
    means = fit_class_means(cfg)
    real = data.render_scenes(cfg.data, range(cfg.data.val_offset, cfg.data.val_offset + 500))
    result = {
        "class_accuracy": (nearest_class(means, samples) == y.cpu()).float().mean().item(),
        "real_class_accuracy": (nearest_class(means, real["rgb"]) == real["label"]).float().mean().item(),
        "chance": 1 / K, "num_samples": len(y), "steps": s.steps, "cfg_scale": s.cfg_scale, "seconds": seconds,
    }
    figures = Path(out_dir) / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    rows = [[viz.to_image(img) for img in samples[y.cpu() == k][:8]] for k in range(K)]
    viz.save_grid(rows, [[f"class {k}"] + [""] * (len(r) - 1) for k, r in enumerate(rows)],
                  figures / "class_samples.png", cell=64)
    return result


# ----------------------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------------------

def evaluate(model, cfg, out_dir, device, quick=False):
    """Evaluate `model` (EMA weights) as `cfg` says; write eval.json and figures into out_dir; return metrics."""
    model.eval()
    fn = {"depth": evaluate_depth, "class": evaluate_class}[cfg.data.task]
    result = fn(model, cfg, out_dir, device, quick=quick)
    if not quick:
        (Path(out_dir) / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    print("eval | " + " | ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()),
          flush=True)
    return result


def main(argv=None):
    import train  # its checkpoint loading and InputError: one place for every "bad checkpoint" message

    p = argparse.ArgumentParser(description="Sample from and evaluate a minidp run (see the module docstring).")
    p.add_argument("run", help="a run directory (holding ckpt.pt) or a checkpoint file")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. sample.steps=200 sample.ensemble=5")
    p.add_argument("--out", help="where eval.json and figures/ go (default: the run directory)")
    args = p.parse_args(argv)
    try:
        path = Path(args.run)
        ckpt_path = path / "ckpt.pt" if path.is_dir() else path
        ckpt = train.load_checkpoint(ckpt_path, "sample.py")
        cfg = cfglib.config_from_dict(ckpt.get("config", {}), source=str(ckpt_path))
        cfglib.apply_overrides(cfg, args.overrides)
        model = train.model_from_checkpoint(ckpt, ckpt_path, weights="ema")
        device = train.choose_device(cfg.train.device, 0)
    except (cfglib.ConfigError, train.InputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else ckpt_path.parent
    out.mkdir(parents=True, exist_ok=True)
    evaluate(model.to(device), cfg, out, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
