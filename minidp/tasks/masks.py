"""Mask tasks as image generation: amodal completion (pix2gestalt) and referring segmentation (ADDP).

    amodal     conditions: rgb, the visible mask (+1 on the object, -1 elsewhere, 3 channels)
               target: the whole object alone on a background beyond white; read-back: gray < 250 (pix2gestalt)
               metric: miou; baseline: the visible mask taken as the whole object
    referring  condition: rgb, and the expression as tokens (InstructPix2Pix two-scale guidance)
               target: rgb at 80 % with the object painted pure red; read-back: L2 to red < 50 (ADDP)
               metrics: oiou (a ratio of sums over scenes), miou; baseline: the largest visible object
    Members of both merge by the pixel-wise median (REFERENCE.md §5).

Notable choices:
- Amodal: the queried object is a partly occluded one whenever the scene has one (the interesting case, and the
  one pix2gestalt trains on). The target's background is data.amodal_white, by default 1.5, beyond white: the
  read-back threshold (gray 250) sits 0.04 below white, inside a small model's error at the object's edges, and a
  background learned at 1.5 is clipped to exact white by DDIM's x0 clipping. Measured on configs/amodal.yaml with L1, 2500 steps: from scratch,
  mIoU 0.628 with the background at 1.0, 0.674 at 1.1; from the pre-trained run, 0.703 at 1.1, 0.727 at 1.5,
  0.727 at 2.0 (64 scenes, one seed, no interval). The read-back is unchanged.
- Referring: the painted target keeps the image at 80 % brightness. The world's brightest red object lies 38.5
  (0..255 units) from pure red, inside ADDP's 50 read-back radius, so an unpainted red object would read back as
  the mask; at 80 % every world colour is at least 75 away, and the ground-truth target reads back exactly.
- Text: a word-level tokenizer over the world's fixed vocabulary (its colours, shapes and contrast words; a test
  holds the list equal to world.py's); id 0 pads. A word outside the vocabulary is an error that names it.
- Which object a sample asks about comes from a `pick` number the training batch plan draws (so every expression
  of a scene gets trained) or, at evaluation, from the scene index. Its latents therefore depend on the step, and
  a latent cache cannot hold them (except pix2gestalt's, one object per sample).
Letters: M members, B / b batch, S object slots, L tokens, H, W image size.
"""

import torch

from minidp import ensemble, metrics, viz
from minidp.tasks.base import Task, mask_image, to_255

AMODAL_GRAY = 250    # pix2gestalt: the whole object is where the gray value (0..255) is below 250
RED_RADIUS = 50      # ADDP: the mask is where the colour (0..255) lies within L2 distance 50 of red
REFERRING_DIM = 0.8  # the painted target's brightness (see the module docstring)

COLOURS = ("red", "green", "blue", "yellow", "cyan", "magenta", "white", "black", "orange", "purple", "brown",
           "gray", "pink")  # world.COLOURS
SHAPES = ("sphere", "box", "cylinder")  # render.SHAPES
CONTRAST_WORDS = ("left", "right", "front", "back", "big", "small")  # world._contrast's words
VOCAB = ("<pad>", "the") + COLOURS + SHAPES + CONTRAST_WORDS  # id 0 pads
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


def scene_tokens(expressions, slots):
    """The world's per-scene expression lists -> (B, S, L) tokens (empty slots all padding)."""
    return torch.stack([tokenize(list(e) + [""] * (slots - len(e))) for e in expressions])


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
    pick = pick.to(visible.device)  # the batch plan's pick is on the CPU, the scenes may be on a GPU
    seen = visible.flatten(2).sum(-1)  # (B, S) visible pixels
    whole = amodal.flatten(2).sum(-1) if amodal is not None else seen  # (B, S) object pixels
    live = (seen > 0) & (torch.arange(S, device=visible.device)[None] < num_objects[:, None])  # (B, S)
    if occluded_first:
        hidden = live & (seen < whole)
        live = torch.where(hidden.any(dim=1, keepdim=True), hidden, live)
    count = live.sum(dim=1).clamp_min(1)  # (B,)
    nth = pick % count  # (B,) which candidate
    rank = live.long().cumsum(dim=1) - 1  # (B, S) index of each candidate among the candidates
    return (live & (rank == nth[:, None])).float().argmax(dim=1)  # (B,)


class MaskTask(Task):
    """What amodal and referring share: a target image merged by the median, a mask read back from it."""

    augmentation = "mask"
    metric, higher_is_better = "miou", True
    step_metric_name = "iou"  # intermediates.json's name of the per-scene IoU
    read_back = None  # (B, 3, H, W) generated target -> (B, H, W) bool mask: each task's read-back rule

    def cacheable(self, dataset):
        return dataset == "pix2gestalt"  # one object per sample; the world's depend on the step's pick

    def merge(self, members, cfg):
        painting = members[0] if len(members) == 1 else ensemble.ensemble_median(members)  # (b, 3, H, W)
        mask = self.read_back(painting)
        return {"painting": painting, "mask": mask, "plain": mask}

    def scores(self, pred, batch, prior):
        gt = batch["gt_mask"].cpu()
        out = {"miou": metrics.iou(pred["mask"], gt)}
        if prior is not None:
            out["prior_miou"] = metrics.iou(batch[prior].cpu(), gt)
        return out

    def prior(self, ev):
        return "prior_mask"  # the batch key of the baseline's answer (Task.make_sample puts it there)


class Amodal(MaskTask):
    name = "amodal"
    cond_images = 2
    scene_keys = ("rgb", "amodal", "ref_masks", "alone", "num_objects", "label")
    datasets = ("world", "pix2gestalt")

    read_back = staticmethod(amodal_mask)

    def augment_background(self, rgb, data_cfg):
        return torch.full_like(rgb, data_cfg.amodal_white)

    def make_sample(self, scenes, pick, device, data_cfg):
        rgb, amodal = scenes["rgb"].to(device), scenes["amodal"]
        k = pick_objects(scenes["ref_masks"], amodal, scenes["num_objects"], pick, occluded_first=True)
        rows = torch.arange(len(k), device=k.device)  # k is on the scenes' device (a GPU's for a cached world)
        visible, whole, alone = (x[rows, k].to(device) for x in (scenes["ref_masks"], amodal, scenes["alone"]))
        target = torch.where(whole[:, None], alone, torch.full_like(alone, data_cfg.amodal_white))
        # the baseline's answer: the visible part taken as the whole object
        return {"label": scenes["label"].to(device), "cond": [rgb, mask_image(visible)], "target": target,
                "mask": torch.ones_like(rgb[:, 0], dtype=torch.bool), "gt_mask": whole, "prior_mask": visible}

    def figure(self, ev, b, pred, scores):
        """Image, visible mask, truth, prediction, and the predicted mask against the true one (green hit, red extra,
        blue missed)."""
        rows, ious = [], scores["miou"]
        for i in range(min(4, len(b["target"]))):
            rows.append([viz.to_image(b["cond"][0][i]), viz.to_image(b["cond"][1][i]), viz.to_image(b["target"][i]),
                         viz.to_image(pred["painting"][i]), viz.mask_errors(pred["mask"][i], b["gt_mask"][i])])
        titles = [["image", "visible mask", "true whole object", "predicted whole object",
                   f"mask IoU {ious[i]:.2f}"] for i in range(len(rows))]
        viz.save_grid(rows, titles, ev.figure_path("amodal_grid.png"))

    def generalist_row(self, b, x0):
        return viz.to_image(b["cond"][1][0]), "visible mask", viz.to_image(b["target"][0]), viz.to_image(x0[0])


class Referring(MaskTask):
    name = "referring"
    scene_keys = ("rgb", "ref_masks", "tokens", "num_objects", "label")
    text = True
    ratio_metrics = ("oiou",)

    read_back = staticmethod(red_mask)

    def augment_background(self, rgb, data_cfg):
        return (rgb + 1) * REFERRING_DIM - 1

    def make_sample(self, scenes, pick, device, data_cfg):
        rgb = scenes["rgb"].to(device)
        k = pick_objects(scenes["ref_masks"], None, scenes["num_objects"], pick, occluded_first=False)
        rows = torch.arange(len(k), device=k.device)
        visible = scenes["ref_masks"][rows, k].to(device)  # (B, H, W)
        # the baseline's answer: the largest visible object, whatever the expression says
        largest = scenes["ref_masks"].flatten(2).sum(-1).argmax(dim=1)  # (B,)
        return {"label": scenes["label"].to(device), "cond": [rgb], "target": paint_red(rgb, visible),
                "mask": torch.ones_like(rgb[:, 0], dtype=torch.bool), "gt_mask": visible,
                "prior_mask": scenes["ref_masks"][rows, largest].to(device), "tokens": scenes["tokens"][rows, k].to(device)}

    def scores(self, pred, batch, prior):
        gt = batch["gt_mask"].cpu()
        out = {}
        for name, mask in [("", pred["mask"])] + ([("prior_", batch[prior].cpu())] if prior is not None else []) \
                + ([("plain_", pred["plain"])] if "corrected" in pred else []):
            inter, union = metrics.intersection_union(mask, gt)
            out.update({f"{name}oiou:num": inter, f"{name}oiou:den": union, f"{name}miou": metrics.iou(mask, gt)})
        return out

    def info(self, cfg):
        s = cfg.sample
        extra = dict(correctional=s.correctional, correctional_guidance=s.correctional_guidance) if s.correctional else {}
        return {**extra, "image_guidance": s.image_guidance, "text_guidance": s.text_guidance}

    def figure(self, ev, b, pred, scores):
        rows, words = [], detokenize(b["tokens"])
        for i in range(min(4, len(b["target"]))):
            rgb = b["cond"][0][i]
            rows.append([viz.to_image(rgb), viz.spotlight(rgb, b["gt_mask"][i]), viz.to_image(pred["painting"][i]),
                         viz.overlay_mask(rgb, pred["mask"][i])])
        titles = [[f'"{words[i]}"', "true mask", "predicted painting", "predicted mask"] for i in range(len(rows))]
        viz.save_grid(rows, titles, ev.figure_path("referring_grid.png"))

    def generalist_row(self, b, x0):
        return (viz.to_image(b["cond"][0][0]), f'"{detokenize(b["tokens"])[0]}"', viz.to_image(b["target"][0]),
                viz.to_image(x0[0]))
