"""The task table: how each perception task becomes image-to-image generation, and how its answer is read back.

Every task is conditional image generation (the scaling paper's unified view, its §3 and Fig. 1): the model sees
`cat([codec(cond_1), ..., codec(cond_k), x_t])` and denoises a target image in [-1, 1]; a task-specific read-back
turns the generated image into the answer (a depth map, a flow field, a mask).

    task       condition images          target image                                read-back
    class      -                         the rgb scene (DiT pre-training)            -
    depth      rgb                       depth, per-image 2 %/98 % quantiles, x3     channel mean -> [0, 1]
    flow       frame 1, frame 2          (u / s, v / s, 0), s = 0.15 x resolution    (u, v) = s x channels 0, 1
    amodal     rgb, visible mask         the whole object alone on white             gray < 250 (pix2gestalt)
    referring  rgb (+ the expression)    rgb at 80 %, the object painted pure red    L2 to red < 50 (ADDP)

Notable choices:
- Flow: one 3-channel target and one model run per prediction, not the release's two runs (one task label per
  component, each component / 75 replicated to 3 channels; REFERENCE.md §4). Both components come out of the
  same denoising trajectory, so they cannot disagree about which object moved, and inference costs half. The
  scale is the release's: 75 px on its 512 px images is 0.146 of the width; minidp divides by 0.15 x resolution
  (4.8 px at 32 px, where 99 % of the world's flow components are below 4.2 px), and clips beyond it.
- Amodal: the queried object is a partly occluded one whenever the scene has one (the interesting case, and the
  one pix2gestalt trains on); the visible-mask condition is +1 on the object, -1 elsewhere, on 3 channels. The
  target's background is 1.5, beyond white: the read-back threshold (gray 250) sits 0.04 below white, inside a small
  model's error at the object's edges, and a background learned at 1.5 is clipped to exact white by DDIM's x0
  clipping. Measured on configs/amodal.yaml with L1, 2500 steps: from scratch, mIoU 0.628 with the background at
  1.0, 0.674 at 1.1; from the pre-trained run, 0.703 at 1.1, 0.727 at 1.5, 0.727 at 2.0. The read-back is unchanged.
- Referring: the painted target keeps the image at 80 % brightness. The world's brightest red object lies 38.5
  (0..255 units) from pure red, inside ADDP's 50 read-back radius, so an unpainted red object would read back as
  the mask; at 80 % every world colour is at least 75 away, and the ground-truth target reads back exactly.
- Text: a word-level tokenizer over the world's fixed vocabulary (its colours, shapes and contrast words); id 0
  pads. A word outside the vocabulary is an error that names it, never a silent <unk>.
- Which object a referring / amodal sample asks about comes from a `pick` number the training batch plan draws
  (so every expression of a scene gets trained) or, at evaluation, from the scene index.
Letters: B batch, S object slots, L tokens, H, W image size.
"""

import torch

from minidp import render, world

# Stable task ids (checkpoints record task names; ids only order the table). Never renumber; append new tasks.
TASKS = {"class": 0, "depth": 1, "flow": 2, "amodal": 3, "referring": 4}
COND_IMAGES = {"class": 0, "depth": 1, "flow": 2, "amodal": 2, "referring": 1}  # condition images per task
# What each task reads from a scene (the training cache keeps only these). "tokens" is built from "expressions".
SCENE_KEYS = {
    "class": ("rgb", "label"),
    "depth": ("rgb", "depth", "valid", "label"),
    "flow": ("rgb", "rgb2", "flow", "flow_valid", "label"),
    "amodal": ("rgb", "amodal", "ref_masks", "alone", "num_objects", "label"),
    "referring": ("rgb", "ref_masks", "tokens", "num_objects", "label"),
}
# Which tasks each dataset can provide (the real readers provide one task each; REFERENCE.md §9).
DATASET_TASKS = {
    "world": tuple(TASKS),
    "imagenet": ("class",),
    "hypersim": ("depth",),
    "flyingchairs": ("flow",),
    "pix2gestalt": ("amodal",),
}
DEPTH_QUANTILES = (0.02, 0.98)  # Marigold's near / far planes
FLOW_SCALE = 0.15               # flow is divided by FLOW_SCALE x resolution (the release: 75 px at 512 px)
AMODAL_GRAY = 250               # pix2gestalt: the whole object is where the gray value (0..255) is below 250
RED_RADIUS = 50                 # ADDP: the mask is where the colour (0..255) lies within L2 distance 50 of red
REFERRING_DIM = 0.8             # the painted target's brightness (see the module docstring)
AMODAL_WHITE = 1.5              # the amodal target's background, beyond white (see the module docstring)


def task_id(name):
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
    return TASKS[name]


def num_cond_images(task):
    """How many condition images the task feeds the model (the input-widening group count is this + 1)."""
    task_id(task)
    return COND_IMAGES[task]


def run_tasks(cfg):
    """The tasks a run trains, in its model's router order (entry k = label row k): data.tasks by task id in
    train.mode multitask (so the order does not depend on how the YAML lists them), else [data.task]."""
    if cfg.train.mode == "multitask":
        return sorted(cfg.data.tasks, key=TASKS.get)
    return [cfg.data.task]


def scene_keys(names):
    """The scene keys any of the tasks `names` reads (a generalist's training cache holds their union)."""
    return tuple(dict.fromkeys(k for name in names for k in SCENE_KEYS[name]))


def check_dataset_task(dataset, task):
    """ValueError (one line) unless `dataset` can provide `task`."""
    provided = DATASET_TASKS.get(dataset)
    if provided is None:
        raise ValueError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASET_TASKS)}")
    if task not in provided:
        raise ValueError(f"data.dataset = {dataset!r} cannot provide task {task!r} (it provides: {', '.join(provided)})")


def to_255(x):
    """Images in [-1, 1] -> the 0..255 scale the read-back thresholds are stated in."""
    return (x.clamp(-1, 1) + 1) * 127.5


# ----------------------------------------------------------------------------------------------------------
# Depth (Marigold)
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
# Optical flow
# ----------------------------------------------------------------------------------------------------------

def encode_flow(flow):
    """(B, 2, H, W) flow in pixels -> (B, 3, H, W) target (u / s, v / s, 0), clipped to [-1, 1]."""
    s = FLOW_SCALE * flow.shape[-1]
    uv = (flow / s).clamp(-1, 1)  # (B, 2, H, W)
    return torch.cat([uv, torch.zeros_like(uv[:, :1])], dim=1)  # (B, 3, H, W)


def decode_flow(x):
    """(B, 3, H, W) generated target -> (B, 2, H, W) flow in pixels (the third channel carries nothing)."""
    return x[:, :2].clamp(-1, 1) * (FLOW_SCALE * x.shape[-1])


# ----------------------------------------------------------------------------------------------------------
# Masks: amodal completion and referring segmentation
# ----------------------------------------------------------------------------------------------------------

def mask_image(mask):
    """(B, H, W) bool -> (B, 3, H, W): +1 on the mask, -1 elsewhere (a condition image)."""
    return (mask.float() * 2 - 1)[:, None].expand(-1, 3, -1, -1).contiguous()


def amodal_mask(x):
    """pix2gestalt's read-back: (B, 3, H, W) whole-object image on white -> (B, H, W) bool, gray < 250."""
    return to_255(x).mean(dim=1) < AMODAL_GRAY


def paint_red(rgb, mask):
    """The referring target: rgb at 80 % brightness with the mask painted pure red (1, -1, -1); (B, 3, H, W)."""
    dim = (rgb + 1) * REFERRING_DIM - 1
    red = torch.tensor([1.0, -1.0, -1.0], dtype=rgb.dtype, device=rgb.device)[None, :, None, None]
    return torch.where(mask[:, None], red, dim)


def red_mask(x):
    """ADDP's read-back: (B, 3, H, W) -> (B, H, W) bool, pixels within L2 distance 50 (0..255) of pure red."""
    red = torch.tensor([255.0, 0.0, 0.0], dtype=x.dtype, device=x.device)[None, :, None, None]
    return ((to_255(x) - red) ** 2).sum(dim=1) < RED_RADIUS**2


def pick_objects(visible, amodal, num_objects, pick, occluded_first):
    """The object slot each sample asks about: (B,) long.

    Candidates are the objects with at least one visible pixel (an object hidden entirely cannot be referred
    to or completed from its visible part); with `occluded_first`, the partly occluded ones among them when
    there are any. Slot = the (pick mod #candidates)-th candidate.
    """
    B, S = visible.shape[:2]
    seen = visible.flatten(2).sum(-1)  # (B, S) visible pixels
    whole = amodal.flatten(2).sum(-1) if amodal is not None else seen  # (B, S) object pixels
    live = (seen > 0) & (torch.arange(S)[None] < num_objects[:, None])  # (B, S)
    if occluded_first:
        hidden = live & (seen < whole)
        live = torch.where(hidden.any(dim=1, keepdim=True), hidden, live)
    count = live.sum(dim=1).clamp_min(1)  # (B,)
    nth = pick % count  # (B,) which candidate
    rank = live.long().cumsum(dim=1) - 1  # (B, S) index of each candidate among the candidates
    return (live & (rank == nth[:, None])).float().argmax(dim=1)  # (B,)


# ----------------------------------------------------------------------------------------------------------
# Text: the world's vocabulary
# ----------------------------------------------------------------------------------------------------------

CONTRAST_WORDS = ("left", "right", "front", "back", "big", "small")  # world._contrast's words
VOCAB = ("<pad>", "the") + world.COLOURS + render.SHAPES + CONTRAST_WORDS  # id 0 pads
WORD_IDS = {w: i for i, w in enumerate(VOCAB)}
MAX_TOKENS = 4  # "the <contrast> <colour> <shape>" is the longest world expression


def tokenize(expressions, length=MAX_TOKENS):
    """List of B strings -> (B, length) long token ids, 0-padded. An unknown word is a ValueError naming it."""
    out = torch.zeros((len(expressions), length), dtype=torch.long)
    for i, text in enumerate(expressions):
        words = text.lower().split()
        if len(words) > length:
            raise ValueError(f"expression {text!r} has {len(words)} words; at most {length} fit")
        for j, word in enumerate(words):
            if word not in WORD_IDS:
                raise ValueError(f"word {word!r} of {text!r} is not in the world's vocabulary "
                                 f"({' '.join(VOCAB[1:])})")
            out[i, j] = WORD_IDS[word]
    return out


def detokenize(tokens):
    """(B, L) token ids -> list of B strings (padding dropped)."""
    return [" ".join(VOCAB[t] for t in row.tolist() if t != 0) for row in tokens]


def scene_tokens(expressions):
    """The world's per-scene expression lists -> (B, S, L) tokens (empty slots all padding)."""
    S = render.MAX_OBJECTS
    return torch.stack([tokenize(list(e) + [""] * (S - len(e))) for e in expressions])


# ----------------------------------------------------------------------------------------------------------
# Samples
# ----------------------------------------------------------------------------------------------------------

def make_sample(task, scenes, pick, device="cpu"):
    """The task's sample dict from a batch of scenes (tensors with the keys in SCENE_KEYS[task]).

    pick (B,) long chooses the object of referring / amodal samples. Returns {"cond": list of (B, 3, H, W),
    "target": (B, 3, H, W), "mask": (B, H, W) bool (pixels the loss counts), "label": (B,)} plus the ground
    truth evaluation reads: "depth", "valid" | "flow", "flow_valid" | "gt_mask", "prior_mask" (+ "tokens").
    """
    rgb = scenes["rgb"].to(device)
    B = rgb.shape[0]
    sample = {"label": scenes["label"].to(device), "cond": [rgb]}
    everywhere = torch.ones_like(rgb[:, 0], dtype=torch.bool)
    if task == "class":
        sample.update(cond=[], target=rgb, mask=everywhere)
    elif task == "depth":
        depth, valid = scenes["depth"].to(device), scenes["valid"].to(device)
        sample.update(target=encode_depth(depth, valid), mask=valid, depth=depth, valid=valid)
    elif task == "flow":
        flow, ok = scenes["flow"].to(device), scenes["flow_valid"].to(device)
        sample.update(cond=[rgb, scenes["rgb2"].to(device)], target=encode_flow(flow), mask=ok, flow=flow,
                      flow_valid=ok)
    elif task in ("amodal", "referring"):
        amodal = scenes["amodal"] if task == "amodal" else None
        k = pick_objects(scenes["ref_masks"], amodal, scenes["num_objects"], pick.cpu(), task == "amodal")
        rows = torch.arange(B)
        visible = scenes["ref_masks"][rows, k].to(device)  # (B, H, W)
        if task == "amodal":
            whole = amodal[rows, k].to(device)
            # the baseline's answer: the visible part taken as the whole object
            alone = scenes["alone"][rows, k].to(device)
            target = torch.where(whole[:, None], alone, torch.full_like(alone, AMODAL_WHITE))
            sample.update(cond=[rgb, mask_image(visible)], target=target,
                          mask=everywhere, gt_mask=whole, prior_mask=visible)
        else:
            # the baseline's answer: the largest visible object, whatever the expression says
            largest = scenes["ref_masks"].flatten(2).sum(-1).argmax(dim=1)  # (B,)
            sample.update(target=paint_red(rgb, visible), mask=everywhere, gt_mask=visible,
                          prior_mask=scenes["ref_masks"][rows, largest].to(device),
                          tokens=scenes["tokens"][rows, k].to(device))
    else:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    return sample
