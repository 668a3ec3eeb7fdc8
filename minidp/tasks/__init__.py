"""The task registry, and the one function that turns a batch of a task into the model's conditioning.

Each task is one object (one class per file in this package) holding everything that differs between tasks:
its condition images and scene keys, how a sample is made, the target's encoding and read-back, how ensemble
members merge, its augmentation, whether a latent cache can hold it, its metrics, baseline and figures, its row in
the generalist's figure. Adding a task is one class and one line in TASKS below.

    task       condition images          target image                                read-back
    class      -                         the rgb scene (DiT pre-training)            -
    depth      rgb                       depth, per-image 2 %/98 % quantiles, x3     channel mean -> [0, 1]
    flow       frame 1, frame 2          (u / s, v / s, 0), s = 0.15 x resolution    (u, v) = s x channels 0, 1
    amodal     rgb, visible mask         the whole object alone on white             gray < 250 (pix2gestalt)
    referring  rgb (+ the expression)    rgb at 80 %, the object painted pure red    L2 to red < 50 (ADDP)
    normals    rgb                       the camera-frame unit normal                renormalised vector

A run's tasks (`run_tasks`) are [data.task], or a generalist's data.tasks in registry order: entry k of that list
is the model's router entry k and label row k (dit.task_label), whatever order the YAML lists them in.
Letters: B batch, L tokens.
"""

import torch

from minidp import dit
from minidp.tasks.base import Task, mask_image, to_255
from minidp.tasks.classes import Classes
from minidp.tasks.depth import Depth, decode_depth, encode_depth
from minidp.tasks.flow import FLOW_SCALE, Flow, decode_flow, encode_flow
from minidp.tasks.masks import (MAX_TOKENS, REFERRING_DIM, VOCAB, Amodal, Referring, amodal_mask,
                                detokenize, paint_red, pick_objects, red_mask, scene_tokens, tokenize)
from minidp.tasks.normals import Normals, decode_normals

# The registry. Its order is the stable task order (router entries of a generalist): never reorder, append.
TASKS = {task.name: task for task in (Classes(), Depth(), Flow(), Amodal(), Referring(), Normals())}
DATASETS = ("world", "imagenet", "hypersim", "flyingchairs", "pix2gestalt")  # data.dataset's choices

__all__ = ["TASKS", "DATASETS", "Task", "get", "run_tasks", "scene_keys", "check_dataset_task", "model_inputs",
           # the tasks' pure helpers, for tests and tutorials
           "encode_depth", "decode_depth", "FLOW_SCALE", "encode_flow", "decode_flow", "REFERRING_DIM",
           "amodal_mask", "paint_red", "red_mask", "pick_objects", "mask_image", "to_255", "decode_normals",
           "MAX_TOKENS", "VOCAB", "tokenize", "detokenize", "scene_tokens"]


def get(name):
    """The task called `name`; ValueError (one line) naming the valid ones otherwise."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
    return TASKS[name]


def run_tasks(cfg):
    """The task objects a run trains, in its model's router order: data.tasks in registry order in train.mode
    multitask, else [data.task]."""
    if cfg.train.mode == "multitask":
        return [task for name, task in TASKS.items() if name in cfg.data.tasks]
    return [get(cfg.data.task)]


def scene_keys(run):
    """The scene keys any task of `run` reads (a generalist's training cache holds their union)."""
    return tuple(dict.fromkeys(k for task in run for k in task.scene_keys))


def check_dataset_task(dataset, name):
    """ValueError (one line) unless `dataset` can provide task `name`."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")
    if dataset not in get(name).datasets:
        provided = [n for n, task in TASKS.items() if dataset in task.datasets]
        raise ValueError(f"data.dataset = {dataset!r} cannot provide task {name!r} (it provides: {', '.join(provided)})")


def model_inputs(model, batch, k=None, drop_image=None, drop_text=None):
    """The model's conditioning for a batch (in latents) of training or sampling: (condition latents, label y (B,),
    router index (B,) or None, {"tokens": (B, L)} or {}). Training and sampling both call this.

    k (B,) long: each sample's task index in the run (its router entry and label row); None: pre-training, where
    the label is the scene's class. A condition list shorter than the model's input groups is padded with blank
    (zero) images: a generalist's one-condition tasks read a blank second condition (the release's layout).
    drop_image / drop_text (B,) bool: InstructPix2Pix's condition dropout (the null image is zeros, the null text
    all padding), for models with a text path; tokens go in only there."""
    cond = list(batch["cond"])
    while len(cond) + 1 < model.in_groups:  # a generalist's one-condition task: a blank second condition
        cond.append(torch.zeros_like(cond[0]))
    text = {}
    if model.config.get("vocab_size") and "tokens" in batch:  # the dropout is InstructPix2Pix's: text models only
        text["tokens"] = batch["tokens"] if drop_text is None else batch["tokens"] * ~drop_text[:, None]
        if drop_image is not None:
            cond[0] = cond[0] * ~drop_image[:, None, None, None]
    if k is None:
        return cond, batch["label"], None, text
    return cond, dit.task_label(model, 0) + k, k, text
