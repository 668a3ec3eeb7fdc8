"""Surface normals: rgb -> the camera-frame unit normal of every pixel, as an image.

Neither paper predicts normals; Marigold v1.1 and DSINE do, and the world's analytic geometry makes them exact
(minidp/render.py: the outward normal of the sphere, box, cylinder or room plane hit, in OpenCV camera axes).

    condition   rgb
    target      the unit normal (x, y, z), already in [-1, 1], on the 3 channels; invalid (sky) pixels 0, masked
    read-back   the vector renormalised to unit length
    members     the normalised mean (the mean direction)
    metrics     the angle between predicted and true normals in degrees (the normals literature's, e.g. DSINE and
                Marigold v1.1): per image over valid pixels, averaged over images: angle_mean, angle_median,
                within_11_25, within_22_5, within_30 (fractions of pixels below those angles). The literature
                pools the pixels of the whole dataset instead (one median over every pixel), which cannot be
                resampled scene by scene; the per-image form can.
    baseline    the training set's mean normal map, renormalised (prior_*)
Letters: M members, B / b batch, H, W image size.
"""

import torch
import torch.nn.functional as F

from minidp import viz
from minidp.tasks.base import Task, masked_mean

PRIOR_SCENES = 512  # training scenes the mean normal map is taken over
THRESHOLDS = (11.25, 22.5, 30.0)  # degrees: the normals literature's "within t" fractions


def decode_normals(x):
    """(..., 3, H, W) generated targets -> unit normals of the same shape."""
    return F.normalize(x.float(), dim=-3)


def angular_error(pred, gt):
    """Angle in degrees between the directions of pred and gt, (B, 3, H, W) each -> (B, H, W), as
    atan2(|a x b|, a . b): unlike arccos of the dot product it stays accurate near 0 (float32 arccos is off by
    ~1e-3 degrees there). A zero vector counts as 90 degrees from everything."""
    if pred.shape != gt.shape or pred.dim() != 4 or pred.shape[1] != 3:
        raise ValueError(f"normals must be (B, 3, H, W) alike, got {tuple(pred.shape)} and {tuple(gt.shape)}")
    cross, dot = torch.linalg.cross(pred, gt, dim=1).norm(dim=1), (pred * gt).sum(dim=1)  # (B, H, W) each
    return torch.where((cross == 0) & (dot == 0), 90.0, torch.rad2deg(torch.atan2(cross, dot)))


def normal_scores(pred, gt, valid):
    """Per image over valid pixels (B, H, W) bool: angle_mean, angle_median (degrees), within_11_25, within_22_5,
    within_30 (fractions of pixels): (B,) each."""
    err = angular_error(pred, gt)  # (B, H, W)
    mean = lambda x: masked_mean(x, valid)  # noqa: E731 (B, H, W) -> (B,)
    out = {"angle_mean": mean(err), "angle_median": torch.stack([e[v].median() for e, v in zip(err, valid)])}
    for t in THRESHOLDS:
        out[f"within_{t:g}".replace(".", "_")] = mean((err < t).to(err.dtype))
    return out


class Normals(Task):
    name = "normals"
    scene_keys = ("rgb", "normals", "valid", "label")
    metric, higher_is_better = "angle_mean", False

    def make_sample(self, scenes, pick, device, data_cfg):
        rgb, normals, valid = (scenes[k].to(device) for k in ("rgb", "normals", "valid"))
        return {"label": scenes["label"].to(device), "cond": [rgb], "target": normals, "mask": valid,
                "normals": normals, "valid": valid}

    def e2e_loss(self, x0, sample):
        """The angular loss of E2E-FT: 1 - cos between the renormalised prediction and the true normal, averaged
        over the valid pixels: 0 for the truth, 2 for its negation."""
        cos = (F.normalize(x0, dim=1) * sample["target"].to(x0.dtype)).sum(dim=1)  # (B, H, W)
        return masked_mean(1 - cos, sample["mask"])

    def merge(self, members, cfg):
        return decode_normals(members.mean(dim=0))  # (b, 3, H, W): the normalised mean of the members

    def scores(self, pred, batch, prior):
        gt, valid = batch["normals"].cpu(), batch["valid"].cpu()
        out = normal_scores(pred, gt, valid)
        if prior is not None:
            out.update({f"prior_{k}": v for k, v in normal_scores(prior.expand_as(gt), gt, valid).items()})
        return out

    def prior(self, ev):
        s = ev.train_scenes(PRIOR_SCENES)
        return decode_normals((s["normals"] * s["valid"][:, None]).sum(0, keepdim=True))  # (1, 3, H, W)

    def figure(self, ev, b, pred, scores):
        rows, titles = [], []
        for i in range(min(4, len(pred))):
            err = angular_error(pred[i:i + 1], b["normals"][i:i + 1])[0] * b["valid"][i] / 45  # white: 45 deg
            rows.append([viz.to_image(b["cond"][0][i]), viz.to_image(b["normals"][i]), viz.to_image(pred[i]),
                         err.clamp(0, 1).numpy()])
            titles.append(["input", "true normals", "predicted normals", f"angle error {scores['angle_mean'][i]:.1f} deg"])
        viz.save_grid(rows, titles, ev.figure_path("normals_grid.png"))

    def generalist_row(self, b, x0):
        return (torch.ones_like(b["valid"][0], dtype=torch.float).numpy(), "(none: blank)",
                viz.to_image(b["normals"][0]), viz.to_image(decode_normals(x0)[0]))
