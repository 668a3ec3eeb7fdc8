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
    for task in data_cfg.tasks or [data_cfg.task]:
        tasks.check_dataset_task(data_cfg.dataset, task)
    if data_cfg.dataset != "world":
        raise ValueError(f"data.dataset = {data_cfg.dataset!r}: reading real datasets is not wired into training "
                         "yet; valid today: world")
    scenes = world.render(indices, resolution=data_cfg.resolution, seed=data_cfg.seed,
                          num_classes=data_cfg.num_classes)
    scenes["tokens"] = tasks.scene_tokens(scenes["expressions"])  # (B, S, L)
    return scenes


def render_cache(data_cfg, n, chunk=256, log=None, task=None):
    """Scenes 0..n-1 rendered once into memory, only the keys `task` (default data.task; a list: a generalist's
    tasks) reads: {key: (n, ...) tensor}; `log(text)` reports progress."""
    names = task if isinstance(task, (list, tuple)) else [task or data_cfg.task]
    keys = tasks.scene_keys(names)
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


def make_mixed_batch(data_cfg, names, task, indices, device="cpu", cache=None, pick=None):
    """A generalist's batch: sample i is task names[task[i]] of scene indices[i] (the scaling paper's §6.4).

    Each task's samples are built by tasks.make_sample and put back in batch order, with the release's three input
    groups: "cond" = [rgb, the task's second condition image or a blank (zeros, the null image)]; "tokens" (B, L)
    are all padding (the null text, which adds exactly 0) except for referring samples. Also "target", "mask"
    (B, ...) and "task" (B,) long."""
    task = torch.as_tensor(task, dtype=torch.long)
    idx = torch.as_tensor(indices, dtype=torch.long)
    pick = idx if pick is None else torch.as_tensor(pick)
    B = len(idx)
    out = None
    for k, name in enumerate(names):
        rows = (task == k).nonzero().flatten()  # (B_k,) positions of this task's samples
        if len(rows) == 0:
            continue
        scenes = {key: v[idx[rows]] for key, v in cache.items()} if cache is not None else \
            render_scenes(data_cfg, idx[rows].tolist())
        s = tasks.make_sample(name, scenes, pick[rows], device)
        second = s["cond"][1] if len(s["cond"]) > 1 else torch.zeros_like(s["cond"][0])  # the blank image
        tokens = s.get("tokens", torch.zeros(len(rows), tasks.MAX_TOKENS, dtype=torch.long, device=device))
        parts = {"rgb": s["cond"][0], "second": second, "target": s["target"], "mask": s["mask"], "tokens": tokens}
        if out is None:
            out = {key: v.new_zeros((B, *v.shape[1:])) for key, v in parts.items()}
        for key, v in parts.items():
            out[key][rows.to(device)] = v
    return {"cond": [out.pop("rgb"), out.pop("second")], **out, "task": task.to(device)}
