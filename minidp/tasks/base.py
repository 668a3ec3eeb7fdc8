"""The Task interface, its generic evaluation, and the helpers tasks share.

Every task is conditional image generation (the scaling paper's unified view, its §3 and Fig. 1): the model sees
`cat([codec(cond_1), ..., codec(cond_k), x_t])` and denoises a target image in [-1, 1]; a task-specific read-back
turns the generated image into the answer (a depth map, a flow field, a mask, a normal map). A task object holds
everything that differs between tasks; the rest of minidp asks it and never branches on a task's name.

Evaluation (what evaluate.evaluate does for every perception task): for each validation batch the M ensemble members
are merged by the task's rule (`merge`), scored per scene against the ground truth (`scores`: one value per scene
and metric, the baseline's as prior_*), and summarised: a metric is the mean over the scenes that have it (NaN =
the scene has no pixel the metric counts) or, for the names in `ratio_metrics`, a ratio of sums over scenes (oIoU),
each with its 95 % interval over scenes (`k_ci`, a percentile bootstrap; a ratio metric as a ratio of resampled
sums) and the number of scenes `n`; the per-scene values go to eval_scenes.npz, so two runs evaluated on the same
scenes compare paired (`python sample.py compare RUN_A RUN_B`).
`ev`, the evaluation context (minidp/evaluate.py), holds the model and the data and knows where figures go. A
pre-training task scores generated images instead, in its own `evaluate(ev)`.
Letters: M members, B / b batch, C channels, H, W image size.
"""

import torch

from minidp import stats


def to_255(x):
    """Images in [-1, 1] -> the 0..255 scale read-back thresholds are stated in."""
    return (x.clamp(-1, 1) + 1) * 127.5


def mask_image(mask):
    """(B, H, W) bool -> (B, 3, H, W): +1 on the mask, -1 elsewhere (a condition image)."""
    return (mask.float() * 2 - 1)[:, None].expand(-1, 3, -1, -1).contiguous()


def to_cpu(batch):
    """A batch's tensors (and lists of tensors) on the CPU, for figures."""
    return {k: v.cpu() if torch.is_tensor(v) else [c.cpu() for c in v] for k, v in batch.items()}


def masked_mean(values, mask):
    """values (B, H, W) averaged over each image's pixels where mask (B, H, W) holds -> (B,); 0 for an empty mask."""
    m = mask.to(values.dtype)
    return (values * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1)


def per_scene(values, ok):
    """values (n_ok,) of the scenes where ok (b,) holds, NaN for the others: (b,)."""
    out = torch.full(ok.shape, float("nan"), dtype=values.dtype)
    out[ok] = values
    return out


def summarize(scores, ratio_metrics=()):
    """{metric: (n,) per-scene values} -> {metric: float}: the mean over scenes that have a value, or for a ratio
    metric k (scores k:num and k:den; also prior_k, plain_k) the ratio of the sums."""
    result = {}
    for key, v in scores.items():
        name = key.split(":")[0]
        if any(name == m or name.endswith("_" + m) for m in ratio_metrics):  # also prior_oiou, plain_oiou
            if key.endswith(":num"):
                union = scores[name + ":den"].sum().item()
                result[name] = v.sum().item() / union if union > 0 else 1.0
        else:
            result[key] = v[~v.isnan()].mean().item()
    return result


def intervals(scores):
    """{k_ci: [lo, hi]}: the 95 % percentile-bootstrap interval over scenes of each metric of `scores` (a ratio
    metric, k:num and k:den, as a ratio of resampled sums; minidp/stats.py)."""
    out = {}
    for key, v in scores.items():
        name, _, part = key.partition(":")
        if part == "num":
            _, lo, hi = stats.ratio_ci(v.double().numpy(), scores[name + ":den"].double().numpy())
        elif not part:
            lo, hi = stats.bootstrap_ci(v.double().numpy())
        else:
            continue
        out[f"{name}_ci"] = [float(lo), float(hi)]
    return out


class Task:
    """One perception task (or pre-training). Subclasses set the attributes and implement the methods."""

    name = ""                 # the registry key, recorded in checkpoints
    cond_images = 1           # condition images the model reads (its input groups: this + 1)
    scene_keys = ("rgb", "label")  # what the task reads from a scene (a training cache keeps only these)
    datasets = ("world",)     # datasets that can provide it (the real readers provide one task each)
    augmentation = "none"     # ADDP's augmentation kind (minidp/augment.py): none | blur | mask
    text = False              # conditioned on an expression (two-scale guidance, condition dropout)
    pretraining = False       # class-conditional generation: evaluated on generated images, never augmented
    metric, higher_is_better = "", False  # the per-scene metric of ADDP's Fig. 1a and Algorithm A
    step_metric_name = None   # its name in intermediates.json, if not `metric`
    ratio_metrics = ()        # metrics that are a ratio of sums over scenes, not a mean

    def cacheable(self, dataset):
        """Whether a sample's latents depend on its index alone (a latent cache can hold them)."""
        return True

    def augment_background(self, rgb, data_cfg):
        """What a mask target is painted over (augment.augment_target's `background`); None: not a mask."""
        return None

    def make_sample(self, scenes, pick, device, data_cfg):
        """{"cond": [(B, 3, H, W)], "target": (B, 3, H, W), "mask": (B, H, W) bool (pixels the loss counts),
        "label": (B,)} plus the ground truth evaluation reads, from a batch of scenes; pick (B,) chooses the object
        of tasks that ask about one; data_cfg is the run's data section (a task's own options, e.g. amodal_white)."""
        raise NotImplementedError

    def merge(self, members, cfg):
        """Generated targets (M, b, 3, H, W) -> the task's prediction for b scenes."""
        raise NotImplementedError

    def e2e_loss(self, x0, sample):
        """End-to-end fine-tuning's loss in the task's own space (E2E-FT; train.objective e2e): the decoded
        prediction x0 (B, 3, H, W), differentiable, against the pixel sample -> (B,) per-sample losses; None for a
        task whose read-back is not differentiable (a threshold, a colour match), which keeps the image-space loss."""
        return None

    def scores(self, pred, batch, prior):
        """{metric: (b,) per-scene values} of a prediction against the batch's truth, the baseline's as prior_*."""
        raise NotImplementedError

    def prior(self, ev):
        """What the baseline needs beyond the batch (e.g. the training set's mean map), or None."""
        return None

    def info(self, cfg):
        """Extra run information for eval.json."""
        return {}

    def figure(self, ev, batch, pred, scores):
        """Draws the task's figure(s) from the first validation batch (CPU) and its prediction."""

    def generalist_row(self, batch, x0):
        """(condition picture, its title, truth picture, prediction picture) of scene 0 for the generalist's
        figure (the scaling paper's Fig. 11), from the decoded target x0 (1, 3, H, W)."""
        raise NotImplementedError
