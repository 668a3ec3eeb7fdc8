"""Class-conditional generation: DiT pre-training on the world's scenes, labelled by their largest object.

    target      the rgb scene; no condition image; the label is the scene's class (dropped to the null class
                with model.class_dropout_prob, for classifier-free guidance)
    metric      class_accuracy: guided samples (sample.cfg_scale) of each class classified by the nearest class
                mean of real training scenes' 8x8 colour layout; real_class_accuracy is the same classifier on
                real validation scenes (what a perfect generator would score), chance 1 / K
Letters: B batch, K classes, F features.
"""

import time

import torch
import torch.nn.functional as F

from minidp import ddim, stats, viz
from minidp.tasks.base import Task

CLASS_MEAN_SCENES = 2000  # training scenes the class means are taken over
REAL_SCENES = 500  # validation scenes real_class_accuracy is measured on


def class_features(images):
    """What the nearest-class-mean classifier sees: the image average-pooled to 8x8 (colour layout)."""
    return F.adaptive_avg_pool2d(images.float(), 8).flatten(1)  # (B, 3*8*8)


def nearest_class(means, images):
    return torch.cdist(class_features(images), means).argmin(dim=1)


class Classes(Task):
    name = "class"
    cond_images = 0
    pretraining = True
    datasets = ("world", "imagenet")

    def make_sample(self, scenes, pick, device, data_cfg):
        rgb = scenes["rgb"].to(device)
        return {"label": scenes["label"].to(device), "cond": [], "target": rgb,
                "mask": torch.ones_like(rgb[:, 0], dtype=torch.bool)}

    def evaluate(self, ev):
        cfg, model = ev.cfg, ev.model
        s, K = cfg.sample, cfg.data.num_classes
        y = torch.arange(K, device=ev.device).repeat_interleave(max(1, ev.n // K))  # (K*n,)
        gen = torch.Generator().manual_seed(s.seed)
        t0 = time.time()
        samples = []
        for start in range(0, len(y), s.batch):
            yb = y[start:start + s.batch]
            fn = ddim.guided_model_fn_cfg(model, yb, torch.full_like(yb, model.num_classes), s.cfg_scale)
            shape = (len(yb), model.in_channels, model.input_size, model.input_size)
            samples.append(ev.decode(ev.generate(fn, cfg, shape, gen, ev.device)))
        samples = torch.cat(samples).clamp(-1, 1)
        seconds = time.time() - t0
        train = ev.train_scenes(CLASS_MEAN_SCENES)
        feats, labels = class_features(train["rgb"]), train["label"]
        means = torch.stack([feats[labels == k].mean(0) for k in range(K)])  # (K, F)
        real = ev.scenes(range(min(REAL_SCENES, cfg.data.val_size) if cfg.data.dataset != "world" else REAL_SCENES))
        hits = (nearest_class(means, samples) == y.cpu()).float()  # (K*n,) per generated sample
        real_hits = (nearest_class(means, real["rgb"]) == real["label"]).float()  # per real scene
        result = {
            "class_accuracy": hits.mean().item(), "real_class_accuracy": real_hits.mean().item(),
            "chance": 1 / K, "num_samples": len(y), "steps": s.steps, "cfg_scale": s.cfg_scale, "seconds": seconds,
            # 95 % intervals over the generated samples and the real scenes (percentile bootstrap)
            "class_accuracy_ci": list(stats.bootstrap_ci(hits.double().numpy())),
            "real_class_accuracy_ci": list(stats.bootstrap_ci(real_hits.double().numpy())), "n": len(y),
        }
        rows = [[viz.to_image(img) for img in samples[y.cpu() == k][:8]] for k in range(K)]
        viz.save_grid(rows, [[f"class {k}"] + [""] * (len(r) - 1) for k, r in enumerate(rows)],
                      ev.figure_path("class_samples.png"), cell=64)
        return result
