"""Optical flow: frames 1 and 2 -> the forward flow as an image.

    conditions  frame 1, frame 2 (the scaling paper's release: frame 1 the input, frame 2 the conditional image)
    target      (u / s, v / s, 0), s = 0.15 x resolution, clipped to [-1, 1]
    read-back   (u, v) = s x channels 0, 1
    members     averaged (REFERENCE.md §5)
    metric      epe: per image the mean end-point error over the pixels visible in frame 2, averaged over the
                images that have such a pixel. A deviation, flagged: the paper's EPE (FlyingChairs, which has no
                occlusion mask) counts every pixel; the world's flow of an occluded pixel is defined but not
                observable in frame 2.
    baseline    zero flow (prior_epe: the mean |flow| over the same pixels)

Notable choices:
- One 3-channel target and one model run per prediction, not the release's two runs (one task label per
  component, each component / 75 replicated to 3 channels; REFERENCE.md §4). Both components come out of the
  same denoising trajectory, so they cannot disagree about which object moved, and inference costs half. The
  scale is the release's: 75 px on its 512 px images is 0.146 of the width; minidp divides by 0.15 x resolution
  (4.8 px at 32 px, where 99 % of the world's flow components are below 4.2 px), and clips beyond it.
- No ADDP augmentation: a flow field's values are displacements, so warping it would also need its vectors
  rotated and scaled, and the paper gives no recipe to follow.
Letters: M members, B / b batch, H, W image size.
"""

import torch

from minidp import ensemble, metrics, viz
from minidp.tasks.base import Task, masked_mean, per_scene

FLOW_SCALE = 0.15  # flow is divided by FLOW_SCALE x resolution (the release: 75 px at 512 px)


def encode_flow(flow):
    """(B, 2, H, W) flow in pixels -> (B, 3, H, W) target (u / s, v / s, 0), clipped to [-1, 1]."""
    s = FLOW_SCALE * flow.shape[-1]
    uv = (flow / s).clamp(-1, 1)  # (B, 2, H, W)
    return torch.cat([uv, torch.zeros_like(uv[:, :1])], dim=1)  # (B, 3, H, W)


def decode_flow(x):
    """(B, 3, H, W) generated target -> (B, 2, H, W) flow in pixels (the third channel carries nothing)."""
    return x[:, :2].clamp(-1, 1) * (FLOW_SCALE * x.shape[-1])


class Flow(Task):
    name = "flow"
    cond_images = 2
    scene_keys = ("rgb", "rgb2", "flow", "flow_valid", "label")
    datasets = ("world", "flyingchairs")
    metric, higher_is_better = "epe", False

    def make_sample(self, scenes, pick, device, data_cfg):
        flow, ok = scenes["flow"].to(device), scenes["flow_valid"].to(device)
        return {"label": scenes["label"].to(device), "cond": [scenes["rgb"].to(device), scenes["rgb2"].to(device)],
                "target": encode_flow(flow), "mask": ok, "flow": flow, "flow_valid": ok}

    def e2e_loss(self, x0, sample):
        """L1 of the decoded (u, v) in pixels (not clipped: a clamp has no gradient beyond the range) against the
        true flow, over the pixels that stay in frame 2."""
        err = (x0[:, :2] * (FLOW_SCALE * x0.shape[-1]) - sample["flow"].to(x0.dtype)).abs().sum(dim=1)  # (B, H, W)
        return masked_mean(err, sample["mask"])

    def merge(self, members, cfg):
        flows = decode_flow(members.flatten(0, 1)).view(*members.shape[:2], 2, *members.shape[-2:])
        return ensemble.ensemble_flow(flows)  # (b, 2, H, W)

    def scores(self, pred, batch, prior):
        gt, valid = batch["flow"].cpu(), batch["flow_valid"].cpu()
        ok = valid.flatten(1).any(1)  # a scene with no pixel visible in frame 2 has no EPE
        out = {"epe": per_scene(metrics.epe(pred[ok], gt[ok], valid[ok]), ok)}
        if prior is not None:
            out["prior_epe"] = per_scene(metrics.epe(torch.full_like(gt[ok], prior), gt[ok], valid[ok]), ok)
        return out

    def prior(self, ev):
        return 0.0  # the baseline's flow, in pixels, everywhere

    def figure(self, ev, b, pred, scores):
        gt, valid, rows = b["flow"], b["flow_valid"], []
        for i in range(min(4, len(gt))):
            radius = gt[i].norm(dim=0)[valid[i]].max().item() if valid[i].any() else 1.0  # one scale per row
            err = (pred[i] - gt[i]).norm(dim=0) * valid[i]
            rows.append([viz.to_image(b["cond"][0][i]), viz.to_image(b["cond"][1][i]),
                         viz.flow_to_rgb(gt[i], valid[i], max_radius=radius),
                         viz.flow_to_rgb(pred[i], max_radius=radius), (err / max(radius, 1e-6)).clamp(0, 1).numpy()])
        titles = [["frame 1", "frame 2", "true flow", "predicted flow", "EPE (white: max |flow|)"]] * len(rows)
        viz.save_grid(rows, titles, ev.figure_path("flow_grid.png"))

    def generalist_row(self, b, x0):
        radius = max(b["flow"][0].norm(dim=0).max().item(), 1e-6)
        return (viz.to_image(b["cond"][1][0]), "frame 2", viz.flow_to_rgb(b["flow"][0], b["flow_valid"][0], max_radius=radius),
                viz.flow_to_rgb(decode_flow(x0)[0], max_radius=radius))
