"""Monocular depth (Marigold's recipe, REFERENCE.md §4): rgb -> the depth map normalised per image.

    condition   rgb
    target      depth, per-image 2 % / 98 % quantiles to [-1, 1], replicated to 3 channels
    read-back   channel mean -> [0, 1], affine-invariant: evaluation aligns it to the truth by least squares
    members     median | mean | Marigold's median compilation (sample.ensemble_method)
    metrics     absrel, delta1-3, rmse per image after alignment, averaged over images (REFERENCE.md §7)
    baseline    the training set's mean depth map, aligned the same way (prior_*)
Letters: M members, B / b batch, H, W image size.
"""

import torch

from minidp import ensemble, metrics, viz
from minidp.tasks.base import Task, masked_mean

DEPTH_QUANTILES = (0.02, 0.98)  # Marigold's near / far planes
PROGRESSION_T = (999, 799, 599, 400, 200, 0)  # supplementary Fig. 1 (its "1000" is our t = 999)
PROGRESSION_STEPS = 51  # round(linspace(0, 999, 51)) holds every t above, whatever sample.steps is
PRIOR_SCENES = 512  # training scenes the mean depth map is taken over


def encode_depth(depth, valid):
    """(B, H, W) metric depth + valid mask -> (B, 3, H, W) target in [-1, 1].

    near / far are the 2 % / 98 % quantiles of the image's valid depth, so a few extreme pixels do not
    squash the rest of the range; values beyond them are clipped.
    """
    masked = torch.where(valid, depth, torch.full_like(depth, float("nan"))).flatten(1)  # (B, H*W)
    q = torch.tensor(DEPTH_QUANTILES, dtype=depth.dtype, device=depth.device)
    near, far = torch.nanquantile(masked, q, dim=1)  # (B,) each
    near, far = near[:, None, None], far[:, None, None]
    d = (depth - near) / (far - near).clamp_min(1e-6) * 2 - 1
    d = torch.where(valid, d.clamp(-1, 1), torch.zeros_like(d))  # invalid pixels: mid-range, masked in the loss
    return d[:, None].expand(-1, 3, -1, -1).contiguous()  # (B, 3, H, W)


def decode_depth(x):
    """(B, 3, H, W) generated target -> (B, H, W) affine-invariant depth in [0, 1]."""
    return (x.mean(dim=1).clamp(-1, 1) + 1) / 2


def affine_invariant_l1(pred, target, valid):
    """E2E-FT's depth loss: pred (B, H, W) is aligned to target (B, H, W) by the per-image least-squares scale s and
    shift t over the valid pixels (B, H, W) bool (metrics.scale_shift_lstsq, evaluation's fit), then the mean
    |s pred + t - target| over them -> (B,).

    The fit is closed form inside the graph, so the gradient also flows through s and t (a prediction is only judged
    up to the affine map evaluation will fit anyway). A flat prediction (no variance over the valid pixels, e.g. a
    model whose output layer starts at zero: DiT's adaLN-Zero) has no scale to fit; it gets s = 1, not evaluation's
    s = 0: with s = 0 the aligned prediction would not depend on the model at all, the gradient would be exactly
    zero and a model trained from scratch would never leave its zero output (measured: an e2e run stayed at the flat
    loss for 200 steps). An image without a valid pixel gives NaN, as in evaluation."""
    s, t = metrics.scale_shift_lstsq(pred, target, valid, flat_scale=1.0)
    return masked_mean((s * pred + t - target).abs(), valid)


def depth_range(gt, valid):
    return dict(valid=valid, near=gt[valid].min().item(), far=gt[valid].max().item())


class Depth(Task):
    name = "depth"
    scene_keys = ("rgb", "depth", "valid", "label")
    datasets = ("world", "hypersim")
    augmentation = "blur"
    metric, higher_is_better = "absrel", False

    def make_sample(self, scenes, pick, device, data_cfg):
        rgb, depth, valid = (scenes[k].to(device) for k in ("rgb", "depth", "valid"))
        return {"label": scenes["label"].to(device), "cond": [rgb], "target": encode_depth(depth, valid),
                "mask": valid, "depth": depth, "valid": valid}

    def e2e_loss(self, x0, sample):
        """Affine-invariant L1 of the channel mean (not clipped: a clamp has no gradient outside [-1, 1]) against
        the normalised target over the valid pixels."""
        return affine_invariant_l1(x0.mean(dim=1), sample["target"].to(x0.dtype).mean(dim=1), sample["mask"])

    def merge(self, members, cfg):
        depths = decode_depth(members.flatten(0, 1)).view(*members.shape[:2], *members.shape[-2:])  # (M, b, H, W)
        return depths[0] if len(depths) == 1 else ensemble.ensemble(depths, cfg.sample.ensemble_method)

    def scores(self, pred, batch, prior):
        gt, valid = batch["depth"].cpu(), batch["valid"].cpu()
        out = metrics.depth_scores(pred, gt, valid)
        if prior is not None:
            out.update({f"prior_{k}": v for k, v in metrics.depth_scores(prior.expand_as(gt), gt, valid).items()})
        return out

    def prior(self, ev):
        """The training-set mean depth map (H, W) over valid pixels."""
        s = ev.train_scenes(PRIOR_SCENES)
        return (s["depth"] * s["valid"]).sum(0) / s["valid"].float().sum(0).clamp_min(1)

    def info(self, cfg):
        return {"ensemble_method": cfg.sample.ensemble_method}

    def figure(self, ev, b, pred, scores):
        gt, valid, rgb = b["depth"], b["valid"], b["cond"][0]
        k = min(4, len(gt))
        aligned = metrics.align_lstsq(pred[:k], gt[:k], valid[:k])
        rows = []
        for i in range(k):
            v, rng = valid[i], depth_range(gt[i], valid[i])
            err = ((aligned[i] - gt[i]).abs() / gt[i].clamp_min(1e-6) / 0.3).clamp(0, 1) * v  # white = 30 % or more
            rows.append([viz.to_image(rgb[i]), viz.depth_to_rgb(gt[i], **rng), viz.depth_to_rgb(aligned[i], **rng),
                         err.numpy()])
        viz.save_grid(rows, [["input", "ground truth", "prediction (aligned)", "|rel. error| (white >= 30%)"]] * k,
                      ev.figure_path("depth_grid.png"))
        self.progression_figure(ev)

    def progression_figure(self, ev):
        """The x0 prediction at t = 999, 799, ..., 0 for one validation scene, each aligned to ground truth (the
        scaling paper's supplementary Fig. 1). Always a 51-step linspace chain, whatever sample.steps is."""
        batch, (_, inter) = ev.chain([0], steps=PROGRESSION_STEPS, spacing="linspace", intermediates=True)
        gt, valid = batch["depth"].cpu(), batch["valid"].cpu()
        panels, titles = [], []
        for target_t in PROGRESSION_T:
            t, _, x0_hat = min(inter, key=lambda item: abs(item[0] - target_t))
            panels.append(metrics.align_lstsq(decode_depth(ev.decode(x0_hat)), gt, valid)[0])
            titles.append(f"x0 at t={t}")
        rng = depth_range(gt[0], valid[0])
        row = [viz.to_image(batch["cond"][0][0].cpu())] + [viz.depth_to_rgb(p, **rng) for p in panels]
        viz.save_grid([row + [viz.depth_to_rgb(gt[0], **rng)]], [["input"] + titles + ["ground truth"]],
                      ev.figure_path("denoising_progression.png"))

    def generalist_row(self, b, x0):
        rng = depth_range(b["depth"][0], b["valid"][0])
        pred = metrics.align_lstsq(decode_depth(x0), b["depth"], b["valid"])[0]
        return (torch.ones_like(b["depth"][0]).numpy(), "(none: blank)", viz.depth_to_rgb(b["depth"][0], **rng),
                viz.depth_to_rgb(pred, **rng))
