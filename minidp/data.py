"""Tasks and batches: what the model is asked to generate, and how each target is encoded as an image.

Every task is image-to-image generation (the scaling paper's unified view, its §3): a sample is
`{cond: [images], target: image, task: id, label: class}` with every image in [-1, 1], channels first.
The model sees `cat([codec(cond_1), ..., codec(cond_k), x_t])` and denoises the target.

- class   (pre-training, DiT): no condition image; target = the rgb scene; label = the world's class.
- depth   (Marigold, REFERENCE.md §4): cond = [rgb]; target = depth normalised per image by its 2 % / 98 %
          quantiles to [-1, 1] and replicated to 3 channels; decoded by the channel mean, clipped, (d + 1) / 2.
          The prediction is affine-invariant: metrics align it to ground truth by least squares.

Notable choice: a batch is a pure function of the scene indices (the world renders them on the fly,
deterministically), so the training loop can build any slice of any step's global batch on any rank.
Letters: B batch, C channels, H, W image size.
"""

import torch

from minidp import world

# Stable task ids (DESIGN.md: one table; checkpoints record them). Never renumber; append new tasks.
TASKS = {
    "class": 0,
    "depth": 1,
}
DEPTH_QUANTILES = (0.02, 0.98)  # Marigold's near / far planes


def task_id(name):
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
    return TASKS[name]


def num_cond_images(task):
    """How many condition images the task feeds the model (the input-widening group count is this + 1)."""
    return {"class": 0, "depth": 1}[task]


# ----------------------------------------------------------------------------------------------------------
# Depth encoding (Marigold)
# ----------------------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------------------------------------

CACHED_KEYS = ("rgb", "depth", "valid", "label")  # what the class and depth tasks read from a scene


def render_scenes(data_cfg, indices):
    if data_cfg.dataset != "world":
        raise ValueError(f"unknown dataset {data_cfg.dataset!r}; valid: world")
    return world.render(indices, resolution=data_cfg.resolution, seed=data_cfg.seed,
                        num_classes=data_cfg.num_classes)


def render_cache(data_cfg, n, chunk=256, log=None):
    """Scenes 0..n-1 rendered once into memory (only the keys the tasks read): {key: (n, ...) tensor}.

    Rendering every batch on the fly costs about as much as a tiny model's training step on a CPU, so the
    training loop reads a cache instead (about 17 KB per 32 px scene); `log(text)` reports progress.
    """
    parts = {k: [] for k in CACHED_KEYS}
    for start in range(0, n, chunk):
        scenes = render_scenes(data_cfg, range(start, min(start + chunk, n)))
        for k in CACHED_KEYS:
            parts[k].append(scenes[k])
        if log is not None:
            log(f"rendered {min(start + chunk, n)}/{n} training scenes")
    return {k: torch.cat(v) for k, v in parts.items()}


def make_batch(data_cfg, indices, device="cpu", cache=None):
    """Build the task's sample dict for scenes `indices`, batched, on `device`: read from `cache`
    (see render_cache) when given, else rendered now.

    Returns {"cond": list of (B, 3, H, W), "target": (B, 3, H, W), "task": (B,) long, "label": (B,) long,
    "mask": (B, H, W) bool (pixels the loss counts), and for evaluation "depth", "valid" where they exist}.
    """
    if cache is not None:
        idx = torch.as_tensor(indices, dtype=torch.long)
        scenes = {k: v[idx] for k, v in cache.items()}
    else:
        scenes = render_scenes(data_cfg, indices)
    rgb = scenes["rgb"].to(device)
    B = rgb.shape[0]
    batch = {
        "task": torch.full((B,), task_id(data_cfg.task), dtype=torch.long, device=device),
        "label": scenes["label"].to(device),
    }
    if data_cfg.task == "class":
        batch.update(cond=[], target=rgb, mask=torch.ones_like(rgb[:, 0], dtype=torch.bool))
    elif data_cfg.task == "depth":
        depth, valid = scenes["depth"].to(device), scenes["valid"].to(device)
        batch.update(cond=[rgb], target=encode_depth(depth, valid), mask=valid, depth=depth, valid=valid)
    else:
        raise ValueError(f"task {data_cfg.task!r} has no batch builder yet; valid: class, depth")
    return batch
