"""Datasets and batches: scenes of the synthetic world rendered once into memory, and batches built from them.

A batch is a pure function of the scene indices (and, for referring / amodal, of a `pick` number choosing the
object), so the training loop can build any slice of any step's global batch on any rank. What each task makes
of a scene (condition images, target, read-back) lives in minidp/tasks.py.

Notable choice: the training scenes are rendered once at start-up into an in-memory cache holding only the keys
the task reads (tasks.SCENE_KEYS): rendering every batch on the fly costs about as much as a tiny model's training
step on a CPU. Referring expressions are cached as token ids (tasks.scene_tokens), so the cache is all tensors.
"""

import torch

from minidp import tasks, world


def render_scenes(data_cfg, indices):
    """Scenes `indices` of the configured dataset: the world's full render dict (world.render_specs) + tokens."""
    tasks.check_dataset_task(data_cfg.dataset, data_cfg.task)
    if data_cfg.dataset != "world":
        raise ValueError(f"data.dataset = {data_cfg.dataset!r}: reading real datasets is not wired into training "
                         "yet; valid today: world")
    scenes = world.render(indices, resolution=data_cfg.resolution, seed=data_cfg.seed,
                          num_classes=data_cfg.num_classes)
    scenes["tokens"] = tasks.scene_tokens(scenes["expressions"])  # (B, S, L)
    return scenes


def render_cache(data_cfg, n, chunk=256, log=None, task=None):
    """Scenes 0..n-1 rendered once into memory, only the keys `task` (default data.task) reads:
    {key: (n, ...) tensor}; `log(text)` reports progress."""
    keys = tasks.SCENE_KEYS[task or data_cfg.task]
    parts = {k: [] for k in keys}
    for start in range(0, n, chunk):
        scenes = render_scenes(data_cfg, range(start, min(start + chunk, n)))
        for k in keys:
            parts[k].append(scenes[k])
        if log is not None:
            log(f"rendered {min(start + chunk, n)}/{n} training scenes")
    return {k: torch.cat(v) for k, v in parts.items()}


def make_batch(data_cfg, indices, device="cpu", cache=None, pick=None):
    """The task's sample dict (tasks.make_sample) for scenes `indices`, on `device`: read from `cache` (see
    render_cache) when given, else rendered now. pick (B,) chooses the object of referring / amodal samples;
    default: the scene index."""
    idx = torch.as_tensor(list(indices) if not torch.is_tensor(indices) else indices, dtype=torch.long)
    if cache is not None:
        scenes = {k: v[idx] for k, v in cache.items()}
    else:
        scenes = render_scenes(data_cfg, idx.tolist())
    return tasks.make_sample(data_cfg.task, scenes, idx if pick is None else pick, device)
