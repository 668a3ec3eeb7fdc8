"""Per-task evaluation: sample, decode, ensemble, metrics, baseline, figure. One function per task.

`evaluate(model, cfg, out_dir, device)` is what train.py runs at the end of training and what sample.py runs on a
saved checkpoint, so the numbers a run reports are the numbers sample.py reproduces. Every perception task runs
the same loop (`predict`): for each validation batch, M ensemble members x DDIM(N steps) in one batch, decoded
and merged by the task's rule (REFERENCE.md §5), then compared with the world's exact ground truth:

    task       metric (eval.json keys)              members merged by        baseline (prior_* keys)
    depth      absrel, delta1-3, rmse (aligned)     median | mean | compile  the training set's mean depth map
    flow       epe (pixels, non-occluded pixels)    mean                     zero flow
    amodal     miou of the read-back mask           pixel-wise median        the visible mask as the whole object
    referring  oiou, miou of the red read-back      pixel-wise median        the largest visible object
    class      class_accuracy (nearest class mean)  -                        chance

A generalist (train.mode multitask) is evaluated task by task with the same functions (its router entry and label
row chosen by tasks.run_tasks' order); eval.json then has one section per task, and generalist_figure draws the
scaling paper's Fig. 11 (one row per task).

Referring segmentation samples with InstructPix2Pix two-scale guidance (REFERENCE.md §1): three predictions per
step, e(0,0), e(I,0), e(I,D), batched as one forward of 3B; the null image is all zeros, the null text all padding.
Letters: M members, B batch, C channels, H, W image size.
"""

import copy
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from minidp import data, ddim, dit, ensemble, metrics, schedules, tasks, viz

PROGRESSION_T = (999, 799, 599, 400, 200, 0)  # supplementary Fig. 1 (its "1000" is our t = 999)
PROGRESSION_STEPS = 51  # round(linspace(0, 999, 51)) holds every t above, whatever sample.steps is


def sampling_schedule(cfg):
    """The noise schedule used at test time: the training one unless sample.schedule overrides it."""
    d = cfg.diffusion
    name = cfg.sample.schedule or d.schedule
    same = name == d.schedule
    return schedules.NoiseSchedule(name, d.T, d.beta_start if same else None, d.beta_end if same else None,
                                   d.zero_terminal_snr)


def model_fn_for(model, cond, y, task, tokens=None, guidance=None):
    """f(x_t, t) -> prediction for DDIM: prepends the condition latents, keeps the first C output channels.

    guidance = (s_I, s_D) turns on two-scale guidance over the image (cond[0]) and the text (tokens)."""
    def fn(x_t, t):
        C = x_t.shape[1]
        if guidance is None:
            text = {} if tokens is None else {"tokens": tokens}
            return model(torch.cat(cond + [x_t], dim=1), t, y, task=task, **text)[:, :C]
        blank = [torch.zeros_like(cond[0])] + cond[1:]  # the null image (InstructPix2Pix: zero latents)
        x_in = torch.cat([torch.cat(blank + [x_t], 1), torch.cat(cond + [x_t], 1), torch.cat(cond + [x_t], 1)])
        null = torch.zeros_like(tokens)
        out = model(x_in, t.repeat(3), y.repeat(3), task=task.repeat(3), tokens=torch.cat([null, null, tokens]))
        e_none, e_img, e_img_txt = out[:, :C].chunk(3)  # (B, C, H, W) each
        return ddim.two_scale_combine(e_none, e_img, e_img_txt, *guidance)

    return fn


@torch.no_grad()
def generate(model_fn, cfg, shape, generator, device, steps=None, spacing=None, return_intermediates=False):
    """DDIM from fresh noise of `shape` (drawn from `generator` on the CPU, so results do not depend on the
    device); steps / spacing default to the config's sample section."""
    s = cfg.sample
    x_T = torch.randn(shape, generator=generator).to(device)
    return ddim.ddim_sample(model_fn, x_T, sampling_schedule(cfg), steps=steps or s.steps,
                            prediction=cfg.diffusion.prediction, spacing=spacing or s.spacing, eta=s.eta,
                            clip_x0=s.clip_x0 or None, return_intermediates=return_intermediates)


def conditioned_fn(model, cfg, batch, repeat=1):
    """The model_fn for a batch of the task's samples, each repeated `repeat` times (member-major)."""
    cond = [c.repeat(repeat, 1, 1, 1) for c in batch["cond"]]
    n = cond[0].shape[0]
    device = cond[0].device
    k = tasks.run_tasks(cfg).index(cfg.data.task)  # the task's router entry and label row
    if len(cond) + 1 < model.in_groups:  # a generalist reads a blank second condition for one-condition tasks
        cond.append(torch.zeros_like(cond[0]))
    y = torch.full((n,), dit.task_label(model, k), dtype=torch.long, device=device)
    task = torch.full((n,), k, dtype=torch.long, device=device)
    tokens = batch["tokens"].repeat(repeat, 1) if "tokens" in batch else None  # None: the null text (adds 0)
    guidance = (cfg.sample.image_guidance, cfg.sample.text_guidance) if tokens is not None else None
    return model_fn_for(model, cond, y, task, tokens, guidance)


@torch.no_grad()
def predict(model, cfg, device, n):
    """Yields (batch, members) over the first n validation scenes: members (M, b, C, H, W) generated targets."""
    s, dc = cfg.sample, cfg.data
    gen = torch.Generator().manual_seed(s.seed)
    for start in range(0, n, s.batch):
        idx = list(range(dc.val_offset + start, dc.val_offset + min(start + s.batch, n)))
        batch = data.make_batch(dc, idx, device)
        b, M = len(idx), s.ensemble
        x0 = generate(conditioned_fn(model, cfg, batch, M), cfg, (M * b, *batch["target"].shape[1:]), gen, device)
        yield batch, x0.float().view(M, b, *x0.shape[1:]).cpu()


def figures_dir(out_dir):
    path = Path(out_dir) / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_info(cfg, n, seconds, **extra):
    s = cfg.sample
    return dict(num_images=n, steps=s.steps, ensemble=s.ensemble, schedule=s.schedule or cfg.diffusion.schedule,
                spacing=s.spacing, seconds=seconds, **extra)


# ----------------------------------------------------------------------------------------------------------
# Depth
# ----------------------------------------------------------------------------------------------------------

def mean_depth_prior(cfg, n=512):
    """The training-set mean depth map (over valid pixels), from the first n training scenes."""
    s = data.render_cache(cfg.data, min(n, cfg.data.train_size))
    return (s["depth"] * s["valid"]).sum(0) / s["valid"].float().sum(0).clamp_min(1)  # (H, W)


def evaluate_depth(model, cfg, out_dir, device, n):
    t0, preds, gts, valids, rgbs = time.time(), [], [], [], []
    for batch, members in predict(model, cfg, device, n):
        depths = tasks.decode_depth(members.flatten(0, 1)).view(*members.shape[:2], *members.shape[-2:])  # (M, b, H, W)
        preds.append(depths[0] if len(depths) == 1 else ensemble.ensemble(depths, cfg.sample.ensemble_method))
        gts.append(batch["depth"].cpu())
        valids.append(batch["valid"].cpu())
        rgbs.append(batch["cond"][0].cpu())
    pred, gt, valid, rgb = torch.cat(preds), torch.cat(gts), torch.cat(valids), torch.cat(rgbs)
    result = metrics.depth_metrics(pred, gt, valid)
    prior = mean_depth_prior(cfg).expand_as(gt)
    result.update({f"prior_{k}": v for k, v in metrics.depth_metrics(prior, gt, valid).items()})
    result.update(run_info(cfg, n, time.time() - t0, ensemble_method=cfg.sample.ensemble_method))

    k = min(4, n)
    aligned = metrics.align_lstsq(pred[:k], gt[:k], valid[:k])
    rows = []
    for i in range(k):
        v, rng = valid[i], depth_range(gt[i], valid[i])
        err = ((aligned[i] - gt[i]).abs() / gt[i].clamp_min(1e-6) / 0.3).clamp(0, 1) * v  # white = 30 % or more
        rows.append([viz.to_image(rgb[i]), viz.depth_to_rgb(gt[i], **rng), viz.depth_to_rgb(aligned[i], **rng),
                     err.numpy()])
    viz.save_grid(rows, [["input", "ground truth", "prediction (aligned)", "|rel. error| (white >= 30%)"]] * k,
                  figures_dir(out_dir) / "depth_grid.png")
    progression_figure(model, cfg, device, figures_dir(out_dir) / "denoising_progression.png")
    return result


def depth_range(gt, valid):
    return dict(valid=valid, near=gt[valid].min().item(), far=gt[valid].max().item())


@torch.no_grad()
def progression_figure(model, cfg, device, path):
    """The x0 prediction at t = 999, 799, ..., 0 for one validation scene, each aligned to ground truth.

    Always a 51-step linspace chain, so the figure shows the same timesteps whatever sample.steps is."""
    batch = data.make_batch(cfg.data, [cfg.data.val_offset], device)
    _, inter = generate(conditioned_fn(model, cfg, batch), cfg, batch["target"].shape,
                        torch.Generator().manual_seed(cfg.sample.seed), device, steps=PROGRESSION_STEPS,
                        spacing="linspace", return_intermediates=True)
    gt, valid = batch["depth"].cpu(), batch["valid"].cpu()
    panels, titles = [], []
    for target_t in PROGRESSION_T:
        t, _, x0_hat = min(inter, key=lambda item: abs(item[0] - target_t))
        panels.append(metrics.align_lstsq(tasks.decode_depth(x0_hat.float().cpu()), gt, valid)[0])
        titles.append(f"x0 at t={t}")
    rng = depth_range(gt[0], valid[0])
    row = [viz.to_image(batch["cond"][0][0].cpu())] + [viz.depth_to_rgb(p, **rng) for p in panels]
    viz.save_grid([row + [viz.depth_to_rgb(gt[0], **rng)]], [["input"] + titles + ["ground truth"]], path)


# ----------------------------------------------------------------------------------------------------------
# Optical flow
# ----------------------------------------------------------------------------------------------------------

def evaluate_flow(model, cfg, out_dir, device, n):
    t0, preds, gts, valids, frames = time.time(), [], [], [], []
    for batch, members in predict(model, cfg, device, n):
        flows = tasks.decode_flow(members.flatten(0, 1)).view(*members.shape[:2], 2, *members.shape[-2:])
        preds.append(ensemble.ensemble_flow(flows))  # (M, b, 2, H, W) -> (b, 2, H, W): flow members average
        gts.append(batch["flow"].cpu())
        valids.append(batch["flow_valid"].cpu())
        frames.append(torch.stack([c.cpu() for c in batch["cond"]], 1))  # (b, 2, 3, H, W)
    pred, gt, valid, frames = torch.cat(preds), torch.cat(gts), torch.cat(valids), torch.cat(frames)
    ok = valid.flatten(1).any(1)  # EPE is over non-occluded pixels; a scene with none has no EPE
    result = {"epe": metrics.epe(pred[ok], gt[ok], valid[ok]).mean().item(),
              "prior_epe": metrics.epe(torch.zeros_like(gt[ok]), gt[ok], valid[ok]).mean().item()}
    result.update(run_info(cfg, n, time.time() - t0))

    rows = []
    for i in range(min(4, n)):
        radius = gt[i].norm(dim=0)[valid[i]].max().item() if valid[i].any() else 1.0  # one scale per row
        err = (pred[i] - gt[i]).norm(dim=0) * valid[i]
        rows.append([viz.to_image(frames[i, 0]), viz.to_image(frames[i, 1]),
                     viz.flow_to_rgb(gt[i], valid[i], max_radius=radius),
                     viz.flow_to_rgb(pred[i], max_radius=radius), (err / max(radius, 1e-6)).clamp(0, 1).numpy()])
    titles = [["frame 1", "frame 2", "true flow", "predicted flow", "EPE (white: max |flow|)"]] * len(rows)
    viz.save_grid(rows, titles, figures_dir(out_dir) / "flow_grid.png")
    return result


# ----------------------------------------------------------------------------------------------------------
# Masks: amodal completion and referring segmentation
# ----------------------------------------------------------------------------------------------------------

def predict_masks(model, cfg, device, n, read_back):
    """Generated images merged by the pixel-wise median, their read-back masks, the ground truth and the baseline's
    masks, and the first batch (for the figure)."""
    images, pred, gt, prior, first = [], [], [], [], None
    for batch, members in predict(model, cfg, device, n):
        merged = members[0] if len(members) == 1 else ensemble.ensemble_median(members)  # (b, 3, H, W)
        images.append(merged)
        pred.append(read_back(merged))
        gt.append(batch["gt_mask"].cpu())
        prior.append(batch["prior_mask"].cpu())
        if first is None:
            first = {k: v.cpu() if torch.is_tensor(v) else [c.cpu() for c in v] for k, v in batch.items()}
    return torch.cat(images), torch.cat(pred), torch.cat(gt), torch.cat(prior), first


def evaluate_amodal(model, cfg, out_dir, device, n):
    """mIoU of the read-back mask; figure: image, visible mask, truth, prediction, and the predicted mask against
    the true one (green hit, red extra, blue missed)."""
    t0 = time.time()
    images, pred, gt, prior, b = predict_masks(model, cfg, device, n, tasks.amodal_mask)
    result = {"miou": metrics.miou(pred, gt), "prior_miou": metrics.miou(prior, gt)}
    result.update(run_info(cfg, n, time.time() - t0))

    rows = []
    ious = metrics.iou(pred, gt)
    for i in range(min(4, len(b["target"]))):
        rows.append([viz.to_image(b["cond"][0][i]), viz.to_image(b["cond"][1][i]), viz.to_image(b["target"][i]),
                     viz.to_image(images[i]), viz.mask_errors(pred[i], gt[i])])
    titles = [["image", "visible mask", "true whole object", "predicted whole object",
               f"mask IoU {ious[i]:.2f}"] for i in range(len(rows))]
    viz.save_grid(rows, titles, figures_dir(out_dir) / "amodal_grid.png")
    return result


def evaluate_referring(model, cfg, out_dir, device, n):
    t0 = time.time()
    images, pred, gt, prior, b = predict_masks(model, cfg, device, n, tasks.red_mask)
    result = {"oiou": metrics.oiou(pred, gt), "miou": metrics.miou(pred, gt),
              "prior_oiou": metrics.oiou(prior, gt), "prior_miou": metrics.miou(prior, gt)}
    result.update(run_info(cfg, n, time.time() - t0, image_guidance=cfg.sample.image_guidance,
                           text_guidance=cfg.sample.text_guidance))

    rows = []
    words = tasks.detokenize(b["tokens"])
    for i in range(min(4, len(b["target"]))):
        rows.append([viz.to_image(b["cond"][0][i]), viz.spotlight(b["cond"][0][i], gt[i]), viz.to_image(images[i]),
                     viz.overlay_mask(b["cond"][0][i], pred[i])])
    titles = [[f'"{words[i]}"', "true mask", "predicted painting", "predicted mask"] for i in range(len(rows))]
    viz.save_grid(rows, titles, figures_dir(out_dir) / "referring_grid.png")
    return result


@torch.no_grad()
def paint_expression(model, cfg, device, scene, expression, path):
    """Referring segmentation of a user's expression on validation scene `scene` (ValueError naming a word
    outside the vocabulary): draws image, painting and mask to `path`; returns the mask (H, W)."""
    tokens = tasks.tokenize([expression])
    batch = data.make_batch(cfg.data, [cfg.data.val_offset + scene], device)
    batch["tokens"] = tokens.to(device)
    M = cfg.sample.ensemble
    gen = torch.Generator().manual_seed(cfg.sample.seed)
    x0 = generate(conditioned_fn(model, cfg, batch, M), cfg, (M, *batch["target"].shape[1:]), gen, device).cpu()
    painting = ensemble.ensemble_median(x0[:, None])[0]  # (3, H, W)
    mask = tasks.red_mask(painting[None])[0]
    rgb = batch["cond"][0][0].cpu()
    viz.save_grid([[viz.to_image(rgb), viz.to_image(painting), viz.overlay_mask(rgb, mask)]],
                  [[f'scene {scene}: "{expression}"', "predicted painting", "predicted mask"]], path)
    return mask


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
def evaluate_class(model, cfg, out_dir, device, n):
    s, K = cfg.sample, cfg.data.num_classes
    y = torch.arange(K, device=device).repeat_interleave(max(1, n // K))  # (K*n,)
    gen = torch.Generator().manual_seed(s.seed)
    t0 = time.time()
    samples = []
    for start in range(0, len(y), s.batch):
        yb = y[start:start + s.batch]
        fn = ddim.guided_model_fn_cfg(model, yb, torch.full_like(yb, model.num_classes), s.cfg_scale)
        shape = (len(yb), model.in_channels, model.input_size, model.input_size)
        samples.append(generate(fn, cfg, shape, gen, device).cpu())
    samples = torch.cat(samples).clamp(-1, 1)
    seconds = time.time() - t0
    means = fit_class_means(cfg)
    real = data.render_scenes(cfg.data, range(cfg.data.val_offset, cfg.data.val_offset + 500))
    result = {
        "class_accuracy": (nearest_class(means, samples) == y.cpu()).float().mean().item(),
        "real_class_accuracy": (nearest_class(means, real["rgb"]) == real["label"]).float().mean().item(),
        "chance": 1 / K, "num_samples": len(y), "steps": s.steps, "cfg_scale": s.cfg_scale, "seconds": seconds,
    }
    rows = [[viz.to_image(img) for img in samples[y.cpu() == k][:8]] for k in range(K)]
    viz.save_grid(rows, [[f"class {k}"] + [""] * (len(r) - 1) for k, r in enumerate(rows)],
                  figures_dir(out_dir) / "class_samples.png", cell=64)
    return result


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------

EVALUATORS = {"class": evaluate_class, "depth": evaluate_depth, "flow": evaluate_flow, "amodal": evaluate_amodal,
              "referring": evaluate_referring}


def task_config(cfg, name):
    """A copy of `cfg` that evaluates task `name` (a generalist's evaluators read data.task)."""
    c = copy.deepcopy(cfg)
    c.data.task = name
    return c


def evaluate(model, cfg, out_dir, device, quick=False):
    """Evaluate `model` (EMA weights) as `cfg` says; write eval.json and figures into out_dir; return metrics.

    A generalist (train.mode multitask) is evaluated on every task it was trained on, or on sample.task only:
    eval.json holds one section per task, each with a single-task run's keys, and figures/generalist.png one row
    per task. quick (train.eval_every): at most 8 images (20 class samples), and eval.json is left alone."""
    model.eval()
    names = [cfg.sample.task] if cfg.sample.task else tasks.run_tasks(cfg)
    results, multitask = {}, cfg.train.mode == "multitask"
    for name in names:
        n = cfg.sample.num_images
        if quick:
            n = min(n, 20 if name == "class" else 8)
        results[name] = EVALUATORS[name](model, task_config(cfg, name), out_dir, device, n)
        values = (f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in results[name].items())
        print(f"eval {name + ' ' if multitask else ''}| " + " | ".join(values), flush=True)
    if multitask:
        generalist_figure(model, cfg, names, device, figures_dir(out_dir) / "generalist.png")
    result = results if multitask else results[names[0]]
    if not quick:
        (Path(out_dir) / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


@torch.no_grad()
def generalist_figure(model, cfg, names, device, path):
    """The scaling paper's Fig. 11 for the world: one row per task, input, condition, truth and prediction for
    validation scene 0 (one ensemble member, sample.steps DDIM steps)."""
    rows, titles = [], []
    for name in names:
        c = task_config(cfg, name)
        b = data.make_batch(c.data, [c.data.val_offset], device)
        x0 = generate(conditioned_fn(model, c, b), c, b["target"].shape, torch.Generator().manual_seed(c.sample.seed),
                      device).float().cpu()
        b = {k: v.cpu() if torch.is_tensor(v) else [t.cpu() for t in v] for k, v in b.items()}
        rgb = viz.to_image(b["cond"][0][0])
        if name == "depth":
            rng = depth_range(b["depth"][0], b["valid"][0])
            pred = metrics.align_lstsq(tasks.decode_depth(x0), b["depth"], b["valid"])[0]
            condition, cond_title = torch.ones_like(b["depth"][0]).numpy(), "(none: blank)"
            truth, shown = viz.depth_to_rgb(b["depth"][0], **rng), viz.depth_to_rgb(pred, **rng)
        elif name == "flow":
            radius = max(b["flow"][0].norm(dim=0).max().item(), 1e-6)
            condition, cond_title = viz.to_image(b["cond"][1][0]), "frame 2"
            truth = viz.flow_to_rgb(b["flow"][0], b["flow_valid"][0], max_radius=radius)
            shown = viz.flow_to_rgb(tasks.decode_flow(x0)[0], max_radius=radius)
        else:  # amodal, referring: the target image itself
            if name == "amodal":
                condition, cond_title = viz.to_image(b["cond"][1][0]), "visible mask"
            else:
                condition, cond_title = rgb, f'"{tasks.detokenize(b["tokens"])[0]}"'
            truth, shown = viz.to_image(b["target"][0]), viz.to_image(x0[0])
        rows.append([rgb, condition, truth, shown])
        titles.append([f"{name}: input", cond_title, "truth", "prediction"])
    viz.save_grid(rows, titles, path)
