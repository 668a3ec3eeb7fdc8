"""Per-task evaluation: sample, decode, ensemble, metrics, baseline, figure. One function per task.

`evaluate(model, cfg, out_dir, device)` is what train.py runs at the end of training and what sample.py runs on a
saved checkpoint, so the numbers a run reports are the numbers sample.py reproduces. Every perception task samples
its validation scenes with minidp/sampling.py (M members x DDIM(N steps), decoded, merged by the task's rule,
REFERENCE.md §5) and compares them with the world's exact ground truth:

    task       metric (eval.json keys)              members merged by        baseline (prior_* keys)
    depth      absrel, delta1-3, rmse (aligned)     median | mean | compile  the training set's mean depth map
    flow       epe (pixels, non-occluded pixels)    mean                     zero flow
    amodal     miou of the read-back mask           pixel-wise median        the visible mask as the whole object
    referring  oiou, miou of the red read-back      pixel-wise median        the largest visible object
    class      class_accuracy (nearest class mean)  -                        chance

A generalist (train.mode multitask) is evaluated task by task with the same functions (its router entry and label
row chosen by tasks.run_tasks' order); eval.json then has one section per task, and generalist_figure draws the
scaling paper's Fig. 11 (one row per task).

Referring segmentation samples with two-scale guidance, or with ADDP's correctional guidance when
sample.correctional is set (minidp/sampling.py); eval.json's plain_oiou / plain_miou are then the same run (same
noise) without the correction.

sample.intermediates = True also writes intermediates.json: the metric of every sample's clean prediction x0_hat
at every DDIM step of the evaluation chain (ADDP Fig. 1a, and the table minidp.ct_estimation's Algorithm A
reads), and figures/step_metric.png. The last row is the final prediction, so its mean is eval.json's miou
(referring, amodal); depth records the per-image AbsRel, flow the per-image EPE (scenes with no valid flow
pixel are left out). Algorithm A wants one step per timestep group: sample.steps = 10 with trailing spacing.
Letters: M members, B batch, C channels, H, W image size, S recorded steps, N samples, k correctional prompts.
"""

import copy
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from minidp import data, ddim, files, metrics, sampling, schedules, tasks, viz

PROGRESSION_T = (999, 799, 599, 400, 200, 0)  # supplementary Fig. 1 (its "1000" is our t = 999)
PROGRESSION_STEPS = 51  # round(linspace(0, 999, 51)) holds every t above, whatever sample.steps is


# ----------------------------------------------------------------------------------------------------------
# Per-step metrics: ADDP's Fig. 1a and the table of its Algorithm A (sample.intermediates)
# ----------------------------------------------------------------------------------------------------------

# task -> (metric name, higher is better, per-sample metric (b,) of members (M, b, C, H, W) against a batch)
STEP_METRICS = {
    "depth": ("absrel", False, lambda cfg, m, b: metrics.absrel(
        metrics.align_lstsq(sampling.merge_depth(m, cfg.sample.ensemble_method), b["depth"].cpu(), b["valid"].cpu())
        .clamp_min(metrics.MIN_DEPTH), b["depth"].cpu(), b["valid"].cpu())),
    "flow": ("epe", False, lambda cfg, m, b: metrics.epe(sampling.merge_flow(m), b["flow"].cpu(), b["flow_valid"].cpu())),
    "amodal": ("iou", True, lambda cfg, m, b: metrics.iou(tasks.amodal_mask(sampling.merge_images(m)), b["gt_mask"].cpu())),
    "referring": ("iou", True, lambda cfg, m, b: metrics.iou(tasks.red_mask(sampling.merge_images(m)), b["gt_mask"].cpu())),
}


class StepRecorder:
    """Collects the per-sample metric of x0_hat at every DDIM step, batch by batch: Q (S, N), noisiest first."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.name, self.higher_is_better, self.score = STEP_METRICS[cfg.data.task]
        self.timesteps, self.columns = None, []

    def add(self, batch, steps):
        """steps: [(t, members (M, b, C, H, W))] in sampling order."""
        keep = batch["flow_valid"].flatten(1).any(1).cpu() if "flow_valid" in batch else slice(None)
        sub = {k: v[keep] for k, v in batch.items() if k in ("depth", "valid", "flow", "flow_valid", "gt_mask")}
        self.timesteps = [t for t, _ in steps]
        self.columns.append(torch.stack([self.score(self.cfg, m[:, keep], sub).double() for _, m in steps]))

    def write(self, out_dir):
        """intermediates.json (minidp.ct_estimation's input format) and figures/step_metric.png; the dict."""
        d = self.cfg.diffusion
        name = self.cfg.sample.schedule or d.schedule
        record = {"timesteps": self.timesteps, "metric": self.name, "higher_is_better": self.higher_is_better,
                  "T": d.T, "schedule": schedules.SCHEDULE_ALIASES.get(name, name), "task": self.cfg.data.task,
                  "steps": self.cfg.sample.steps, "spacing": self.cfg.sample.spacing,
                  "Q": torch.cat(self.columns, dim=1).tolist()}  # (S, N)
        path = Path(out_dir) / "intermediates.json"
        path.write_text(json.dumps(record) + "\n")
        plot_step_metrics({"this run": path}, figures_dir(out_dir) / "step_metric.png")
        return record


def plot_step_metrics(runs, path):
    """ADDP's Fig. 1a: the mean metric of x0_hat at each denoising step, one curve per {name: intermediates.json}."""
    curves, metric = {}, "metric"
    for label, file in runs.items():
        rec = json.loads(Path(file).read_text())
        Q = torch.tensor(rec["Q"], dtype=torch.float64)  # (S, N)
        curves[label] = (list(range(1, len(Q) + 1)), Q.mean(dim=1).tolist())
        metric = rec["metric"]
    viz.plot_curves(curves, path, xlabel="denoising step (1 = the noisiest)", ylabel=f"mean {metric} of x0_hat",
                    title="quality along the denoising chain (ADDP Fig. 1a)")


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
    s = data.render_cache(cfg.data, n if cfg.data.dataset == "world" else min(n, cfg.data.train_size))
    return (s["depth"] * s["valid"]).sum(0) / s["valid"].float().sum(0).clamp_min(1)  # (H, W)


def evaluate_depth(model, cfg, out_dir, device, n, codec, recorder=None):
    t0, preds, gts, valids, rgbs = time.time(), [], [], [], []
    for batch, members in sampling.predict(model, cfg, device, n, codec, recorder):
        preds.append(sampling.merge_depth(members, cfg.sample.ensemble_method))
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
    progression_figure(model, cfg, device, figures_dir(out_dir) / "denoising_progression.png", codec)
    return result


def depth_range(gt, valid):
    return dict(valid=valid, near=gt[valid].min().item(), far=gt[valid].max().item())


@torch.no_grad()
def progression_figure(model, cfg, device, path, codec):
    """The x0 prediction at t = 999, 799, ..., 0 for one validation scene, each aligned to ground truth.

    Always a 51-step linspace chain, so the figure shows the same timesteps whatever sample.steps is."""
    batch = data.make_batch(cfg.data, [cfg.data.val_offset], device)
    latents = data.to_latents(batch, codec)
    _, inter = sampling.generate(sampling.conditioned_fn(model, cfg, latents), cfg, latents["target"].shape,
                        torch.Generator().manual_seed(cfg.sample.seed), device, steps=PROGRESSION_STEPS,
                        spacing="linspace", return_intermediates=True)
    gt, valid = batch["depth"].cpu(), batch["valid"].cpu()
    panels, titles = [], []
    for target_t in PROGRESSION_T:
        t, _, x0_hat = min(inter, key=lambda item: abs(item[0] - target_t))
        panels.append(metrics.align_lstsq(tasks.decode_depth(codec.decode(x0_hat.float()).cpu()), gt, valid)[0])
        titles.append(f"x0 at t={t}")
    rng = depth_range(gt[0], valid[0])
    row = [viz.to_image(batch["cond"][0][0].cpu())] + [viz.depth_to_rgb(p, **rng) for p in panels]
    viz.save_grid([row + [viz.depth_to_rgb(gt[0], **rng)]], [["input"] + titles + ["ground truth"]], path)


# ----------------------------------------------------------------------------------------------------------
# Optical flow
# ----------------------------------------------------------------------------------------------------------

def evaluate_flow(model, cfg, out_dir, device, n, codec, recorder=None):
    t0, preds, gts, valids, frames = time.time(), [], [], [], []
    for batch, members in sampling.predict(model, cfg, device, n, codec, recorder):
        preds.append(sampling.merge_flow(members))
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

def to_cpu(batch):
    """A batch's tensors (and lists of tensors) on the CPU, for figures."""
    return {k: v.cpu() if torch.is_tensor(v) else [c.cpu() for c in v] for k, v in batch.items()}


def collect_masks(items):
    """(images, masks, ground truth, the baseline's masks, first batch, plain masks), each concatenated over the
    validation batches, from items (batch, painting (b, 3, H, W), mask (b, H, W), plain mask (b, H, W))."""
    images, pred, plain, gt, prior, first = [], [], [], [], [], None
    for batch, painting, mask, plain_mask in items:
        images.append(painting)
        pred.append(mask)
        plain.append(plain_mask)
        gt.append(batch["gt_mask"].cpu())
        prior.append(batch["prior_mask"].cpu())
        first = first or to_cpu(batch)
    return torch.cat(images), torch.cat(pred), torch.cat(gt), torch.cat(prior), first, torch.cat(plain)


def predict_masks(model, cfg, device, n, codec, read_back, recorder=None):
    """Generated images merged by the pixel-wise median, their read-back masks, the ground truth and the baseline's
    masks, and the first batch (for the figure)."""
    def items():
        for batch, members in sampling.predict(model, cfg, device, n, codec, recorder):
            merged = sampling.merge_images(members)  # (b, 3, H, W)
            mask = read_back(merged)
            yield batch, merged, mask, mask
    return collect_masks(items())[:5]


def evaluate_amodal(model, cfg, out_dir, device, n, codec, recorder=None):
    """mIoU of the read-back mask; figure: image, visible mask, truth, prediction, and the predicted mask against
    the true one (green hit, red extra, blue missed)."""
    t0 = time.time()
    images, pred, gt, prior, b = predict_masks(model, cfg, device, n, codec, tasks.amodal_mask, recorder)
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


def evaluate_referring(model, cfg, out_dir, device, n, codec, recorder=None):
    t0 = time.time()
    s = cfg.sample
    if s.correctional:
        images, pred, gt, prior, b, plain = predict_correctional(model, cfg, device, n, codec)
    else:
        images, pred, gt, prior, b = predict_masks(model, cfg, device, n, codec, tasks.red_mask, recorder)
    result = {"oiou": metrics.oiou(pred, gt), "miou": metrics.miou(pred, gt),
              "prior_oiou": metrics.oiou(prior, gt), "prior_miou": metrics.miou(prior, gt)}
    if s.correctional:
        result.update(plain_oiou=metrics.oiou(plain, gt), plain_miou=metrics.miou(plain, gt),
                      correctional=s.correctional, correctional_guidance=s.correctional_guidance)
    result.update(run_info(cfg, n, time.time() - t0, image_guidance=s.image_guidance, text_guidance=s.text_guidance))

    rows = []
    words = tasks.detokenize(b["tokens"])
    for i in range(min(4, len(b["target"]))):
        rows.append([viz.to_image(b["cond"][0][i]), viz.spotlight(b["cond"][0][i], gt[i]), viz.to_image(images[i]),
                     viz.overlay_mask(b["cond"][0][i], pred[i])])
    titles = [[f'"{words[i]}"', "true mask", "predicted painting", "predicted mask"] for i in range(len(rows))]
    viz.save_grid(rows, titles, figures_dir(out_dir) / "referring_grid.png")
    return result


def predict_correctional(model, cfg, device, n, codec):
    """predict_masks' tuple with sample.correctional's masks, plus the plain two-scale masks of the same run."""
    gen = torch.Generator().manual_seed(cfg.sample.seed)

    def items():
        for idx, batch, latents in sampling.validation_batches(cfg, device, n, codec):
            painting, plain_mask, mask = sampling.corrected_batch(model, cfg, latents, idx, gen, device, codec)
            yield batch, painting, mask, plain_mask
    return collect_masks(items())


@torch.no_grad()
def paint_expression(model, cfg, device, scene, expression, path, codec):
    """Referring segmentation of a user's expression on validation scene `scene` (ValueError naming a word
    outside the vocabulary), with sample.correctional if set: draws image, painting and mask to `path`; returns
    the mask (H, W)."""
    tokens = tasks.tokenize([expression])
    idx = [cfg.data.val_offset + scene]
    batch = data.make_batch(cfg.data, idx, device)
    batch["tokens"] = tokens.to(device)
    gen = torch.Generator().manual_seed(cfg.sample.seed)
    painting, plain, mask = sampling.corrected_batch(model, cfg, data.to_latents(batch, codec), idx, gen, device, codec)
    painting, mask = painting[0], (mask if cfg.sample.correctional else plain)[0]
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
    s = data.render_cache(cfg.data, n if cfg.data.dataset == "world" else min(n, cfg.data.train_size))
    feats, labels = class_features(s["rgb"]), s["label"]
    return torch.stack([feats[labels == k].mean(0) for k in range(cfg.data.num_classes)])


def nearest_class(means, images):
    return torch.cdist(class_features(images), means).argmin(dim=1)


@torch.no_grad()
def evaluate_class(model, cfg, out_dir, device, n, codec):
    s, K = cfg.sample, cfg.data.num_classes
    y = torch.arange(K, device=device).repeat_interleave(max(1, n // K))  # (K*n,)
    gen = torch.Generator().manual_seed(s.seed)
    t0 = time.time()
    samples = []
    for start in range(0, len(y), s.batch):
        yb = y[start:start + s.batch]
        fn = ddim.guided_model_fn_cfg(model, yb, torch.full_like(yb, model.num_classes), s.cfg_scale)
        shape = (len(yb), model.in_channels, model.input_size, model.input_size)
        samples.append(codec.decode(sampling.generate(fn, cfg, shape, gen, device).float()).cpu())
    samples = torch.cat(samples).clamp(-1, 1)
    seconds = time.time() - t0
    means = fit_class_means(cfg)
    n_real = 500 if cfg.data.dataset == "world" else min(500, cfg.data.val_size)  # a real dataset has val_size
    real = data.render_scenes(cfg.data, range(cfg.data.val_offset, cfg.data.val_offset + n_real))
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


def evaluate(model, cfg, out_dir, device, quick=False, codec=None):
    """Evaluate `model` (EMA weights) as `cfg` says; write eval.json and figures into out_dir; return metrics.

    A generalist (train.mode multitask) is evaluated on every task it was trained on, or on sample.task only:
    eval.json holds one section per task, each with a single-task run's keys, and figures/generalist.png one row
    per task. quick (train.eval_every): at most 8 images (20 class samples), and eval.json is left alone. codec: the
    one the model was trained with (default: built from cfg.data, as the checkpoint's config records it)."""
    model.eval()
    codec = codec or data.make_codec(cfg.data, device)
    names = [cfg.sample.task] if cfg.sample.task else tasks.run_tasks(cfg)
    results, multitask = {}, cfg.train.mode == "multitask"
    for name in names:
        n = cfg.sample.num_images
        if quick:
            n = min(n, 20 if name == "class" else 8)
        c = task_config(cfg, name)
        recorder = StepRecorder(c) if c.sample.intermediates and not quick and name != "class" else None
        results[name] = EVALUATORS[name](model, c, out_dir, device, n, codec,
                                         **({"recorder": recorder} if recorder else {}))
        if recorder is not None:  # single-task runs only (a config rule)
            recorder.write(out_dir)
        values = (f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in results[name].items())
        print(f"eval {name + ' ' if multitask else ''}| " + " | ".join(values), flush=True)
    if multitask:
        generalist_figure(model, cfg, names, device, figures_dir(out_dir) / "generalist.png", codec)
    result = results if multitask else results[names[0]]
    if not quick:
        files.write_text(Path(out_dir) / "eval.json", json.dumps(result, indent=2) + "\n")  # atomic
    return result


@torch.no_grad()
def generalist_figure(model, cfg, names, device, path, codec):
    """The scaling paper's Fig. 11 for the world: one row per task, input, condition, truth and prediction for
    validation scene 0 (one ensemble member, sample.steps DDIM steps)."""
    rows, titles = [], []
    for name in names:
        c = task_config(cfg, name)
        b = data.make_batch(c.data, [c.data.val_offset], device)
        lat = data.to_latents(b, codec)
        z0 = sampling.generate(sampling.conditioned_fn(model, c, lat), c, lat["target"].shape, torch.Generator().manual_seed(c.sample.seed),
                      device)
        x0 = codec.decode(z0.float()).float().cpu()
        b = to_cpu(b)
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
