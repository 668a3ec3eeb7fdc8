"""The synthetic world: procedural 3-D rooms rendered by analytic ray casting, with exact ground truth.

minidp's embedded default data (DESIGN.md, "The synthetic world"). No dataset can be downloaded on a fresh
machine, so every task of the scaling paper (Ravishankar et al. 2024, §3: depth, optical flow, amodal
segmentation, class-conditional pre-training) and ADDP's referring segmentation (Pang et al.) gets its images
and its *exact* targets from here: the renderer knows the geometry, so ground truth is computed, not estimated.

A scene: a pinhole camera inside an open-topped room (checkered floor, striped walls, per-scene colours) holding
1-4 primitives (spheres, boxes turned about the vertical, vertical cylinders) coloured from `PALETTE`, lit by
one directional light with Lambertian shading, an ambient term and hard shadows. Frame 2 follows a small camera
motion and a small motion of every object.

The renderer (minidp/render.py) holds the frame conventions and the exact ground-truth formulas; this module
samples the scenes it renders (plain-Python "specs", deterministic in (seed, index)), writes their referring
expressions, and is the public API: `render`, `render_specs`, `scene_spec`, `World`, `preview` and a CLI.

Notable choices:
- Class label (for pre-training) = the colour of the largest object, the "hero": the label is drawn first and
  uniformly from the scene's own generator, the hero is at least 1.25x bigger (in volume^(1/3)) and appears at
  least 1.25x bigger on screen than every other object, and sits near the image centre, so a nearest-class-mean
  classifier on raw pixels recovers the class. K <= 10: colour only; 10 < K <= 30: colour x shape.
- Layouts vary (room size, camera height / pitch / roll / yaw / field of view, object depths) so that the mean
  depth map of the dataset is a weak prior for any one scene (the depth fine-tuning must beat it).
- Most non-hero objects are placed just in front of or behind an earlier object, so that occlusion (amodal
  segmentation) is common rather than rare.
- Referring expressions are "the <colour> <shape>"; a word from left/right, front/back, big/small is added only
  when two objects share colour and shape (the most salient of the three contrasts is used). At most two
  objects share a colour and shape, so every expression names exactly one object.
- Deterministic in (seed, index): a scene draws every random number from its own torch.Generator.
- Sampling a scene is cheap (parameters only, `scene_spec`); rendering is batched in render.py.
"""

import math
import sys
from pathlib import Path

import numpy as np
import torch

from minidp.errors import ArgumentParser, int_in, one_line
from minidp import viz
from minidp.render import SHAPES, focal_fraction, pack, project, render_scenes

# Ordered name -> RGB albedo in [0, 1]. The first NUM_CLASS_COLOURS are the class colours: the 8 corners of the
# RGB cube, then orange and purple, as far apart as 10 colours get, so that a class is obvious even at 32 px.
# All names are one word so that expressions stay easy to parse.
PALETTE = {
    "red": (0.90, 0.08, 0.08),
    "green": (0.10, 0.72, 0.12),
    "blue": (0.10, 0.18, 0.95),
    "yellow": (0.95, 0.88, 0.08),
    "cyan": (0.08, 0.82, 0.88),
    "magenta": (0.88, 0.10, 0.82),
    "white": (0.94, 0.94, 0.94),
    "black": (0.06, 0.06, 0.06),
    "orange": (1.00, 0.50, 0.02),
    "purple": (0.45, 0.12, 0.75),
    "brown": (0.45, 0.27, 0.10),
    "gray": (0.50, 0.50, 0.50),
    "pink": (1.00, 0.62, 0.70),
}
COLOURS = tuple(PALETTE)
NUM_CLASS_COLOURS = 10
MAX_CLASSES = NUM_CLASS_COLOURS * len(SHAPES)  # colour x shape of the hero


# ----------------------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------------------

def _check_resolution(resolution):
    if isinstance(resolution, bool) or not isinstance(resolution, int) or not 16 <= resolution <= 256:
        raise ValueError(f"resolution must be an integer in 16..256, got {resolution!r}")


def _check_num_classes(num_classes):
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be an integer in 1..{MAX_CLASSES} (colour x shape), got {num_classes!r}")


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")


def _check_indices(indices):
    if isinstance(indices, (int, np.integer, str)):
        raise ValueError(f"indices must be a list, range or 1-D integer tensor of scene indices, got {indices!r}")
    if isinstance(indices, torch.Tensor):
        if indices.dim() != 1 or indices.dtype.is_floating_point or indices.dtype == torch.bool:
            raise ValueError(f"indices must be a 1-D integer tensor, got {indices.dtype} with {indices.dim()} dims")
        indices = indices.tolist()
    indices = list(indices)
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0:
            raise ValueError(f"indices must be non-negative integers, got {i!r}")
    return [int(i) for i in indices]


# ----------------------------------------------------------------------------------------------------------
# Per-scene randomness
# ----------------------------------------------------------------------------------------------------------

def _scene_seed(seed, index):
    """Mixes (seed, index) into one 63-bit generator seed (splitmix64), so neighbouring scenes are unrelated."""
    mask = (1 << 64) - 1
    z = (seed * 0x9E3779B97F4A7C15 + index + 1) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return (z ^ (z >> 31)) >> 1


class _Stream:
    """Uniform numbers from one scene's own torch.Generator, drawn 64 at a time (one torch call, not 100)."""

    def __init__(self, seed, index):
        self.generator = torch.Generator().manual_seed(_scene_seed(seed, index))
        self.buffer = []

    def uniform(self, lo=0.0, hi=1.0):
        if not self.buffer:
            self.buffer = torch.rand(64, generator=self.generator, dtype=torch.float64).tolist()[::-1]
        return lo + (hi - lo) * self.buffer.pop()

    def integer(self, n):
        return min(int(self.uniform() * n), n - 1)

    def choice(self, options):
        return options[self.integer(len(options))]


# ----------------------------------------------------------------------------------------------------------
# Object descriptions and referring expressions
# ----------------------------------------------------------------------------------------------------------

def _footprint(obj):
    """Radius of the object's footprint on the floor (a box's half-diagonal), for non-overlap tests."""
    hx, hy, _ = obj["half"]
    return math.hypot(hx, hy) if obj["shape"] == "box" else hx


def _size(obj):
    """Volume^(1/3): one shape-agnostic size for 'big' / 'small' and for keeping the hero the largest."""
    hx, hy, hz = obj["half"]
    volume = {"sphere": 4 / 3 * math.pi * hx ** 3, "box": 8 * hx * hy * hz, "cylinder": 2 * math.pi * hx ** 2 * hz}
    return volume[obj["shape"]] ** (1 / 3)


def describe(spec):
    """Per-object attributes of a scene spec: shape, colour, center, size, image_x, image_y, depth (frame 1)."""
    out = []
    for obj in spec["objects"]:
        if obj["shape"] not in SHAPES or obj["colour"] not in PALETTE:
            raise ValueError(f"object shape must be one of {SHAPES} and colour one of {COLOURS}, got {obj}")
        x, y, z = project(spec["camera"], obj["center"])
        out.append({"shape": obj["shape"], "colour": obj["colour"], "center": tuple(map(float, obj["center"])),
                    "size": _size(obj), "image_x": float(x), "image_y": float(y), "depth": float(z)})
    return out


def _contrast(a, b):
    """The word that tells object a from its twin b (same colour and shape), or None if none is salient.

    Each contrast is scored against the least difference a person would trust (10 % of the image width, a
    25 % depth or size ratio); the most salient contrast above its threshold wins."""
    scores = {
        "lr": abs(a["image_x"] - b["image_x"]) / 0.10,
        "fb": (max(a["depth"], b["depth"]) / min(a["depth"], b["depth"]) - 1) / 0.25,
        "bs": (max(a["size"], b["size"]) / min(a["size"], b["size"]) - 1) / 0.25,
    }
    best = max(scores, key=scores.get)
    if scores[best] < 1:
        return None
    if best == "lr":
        return "left" if a["image_x"] < b["image_x"] else "right"
    if best == "fb":
        return "front" if a["depth"] < b["depth"] else "back"
    return "big" if a["size"] > b["size"] else "small"


def expressions(objects):
    """One referring expression per object of `describe(spec)`; ValueError if an object cannot be singled out."""
    out = []
    for i, a in enumerate(objects):
        twins = [b for j, b in enumerate(objects) if j != i and (b["colour"], b["shape"]) == (a["colour"], a["shape"])]
        word = _contrast(a, twins[0]) if len(twins) == 1 else None
        if twins and word is None:
            raise ValueError(f"object {i} ({a['colour']} {a['shape']}) cannot be told from its twins: {twins}")
        out.append(f"the {word + ' ' if word else ''}{a['colour']} {a['shape']}")
    return out


# ----------------------------------------------------------------------------------------------------------
# Scene sampling (the cheap path: parameters only, no rendering)
# ----------------------------------------------------------------------------------------------------------

# Size ranges (scene units ~ metres). Hero: sphere radius, box half-extent, cylinder radius and half-height.
_HERO = {"sphere": (0.50, 0.80), "box": (0.35, 0.60), "cylinder": (0.40, 0.60), "height": (0.40, 0.80)}
_OTHER = {"sphere": (0.18, 0.45), "box": (0.15, 0.40), "cylinder": (0.14, 0.38), "height": (0.18, 0.55)}


def _new_object(rng, shape, colour, sizes):
    """An object with random size (from `sizes`), yaw and frame-2 motion, standing on the floor at x = y = 0."""
    if shape == "sphere":
        r = rng.uniform(*sizes["sphere"])
        half = (r, r, r)
    elif shape == "box":
        half = tuple(rng.uniform(*sizes["box"]) for _ in range(3))
    else:
        r = rng.uniform(*sizes["cylinder"])
        half = (r, r, rng.uniform(*sizes["height"]))
    # Objects rest on the floor; only boxes show a yaw (a turned sphere or cylinder looks the same).
    yaw = rng.uniform(0, 90) if shape == "box" else 0.0
    # Frame-2 motion: a slide on the floor (and a turn for boxes), small enough for flow of a few pixels.
    motion = (rng.uniform(-0.15, 0.15), rng.uniform(-0.15, 0.15), 0.0)
    turn = rng.uniform(-10, 10) if shape == "box" else 0.0
    return {"shape": shape, "colour": colour, "center": (0.0, 0.0, half[2]), "half": half, "yaw": yaw,
            "move": motion, "turn": turn}


def _stand_at(obj, xy):
    """Moves an object to floor position xy (its centre stays at its half-height above the floor)."""
    obj["center"] = (float(xy[0]), float(xy[1]), obj["half"][2])
    return obj


def _fits(obj, objects, room, camera):
    """Inside the room, clear of every other object (5 cm gap) and at least 0.5 m from the camera."""
    x, y, _ = obj["center"]
    r = _footprint(obj)
    width, depth, _ = room["size"]
    if abs(x) > width / 2 - r - 0.05 or not r + 0.05 < y < depth - r - 0.05:
        return False
    cx, cy, _ = camera["position"]
    if math.hypot(x - cx, y - cy) < r + 0.5:
        return False
    return all(math.hypot(x - o["center"][0], y - o["center"][1]) > r + _footprint(o) + 0.05 for o in objects)


def _frame_hero(rng, shape, colour, room, camera):
    """Places the hero and aims the camera at it, like a photographer: the hero stands at an apparent size of
    0.35-0.55 (size / distance, so about 1.5-3.7 m away) within 30 deg of the room's axis, and yaw and pitch
    are chosen so that it appears near the image centre (yaw within 12 deg, row 0.42-0.62). Pitch therefore
    follows from camera height and hero distance, which keeps it varied (about -5..45 deg)."""
    cam_xy = np.asarray(camera["position"][:2])
    hero = None
    for _ in range(40):
        candidate = _new_object(rng, shape, colour, _HERO)
        dist = _size(candidate) / rng.uniform(0.35, 0.55)
        bearing = math.radians(rng.uniform(-30, 30))  # from the room's forward axis (+y), positive = right
        _stand_at(candidate, cam_xy + dist * np.array([math.sin(bearing), math.cos(bearing)]))
        if _fits(candidate, [], room, camera):
            hero = candidate
            break
    if hero is None:  # nothing fitted (a cramped room): the middle of the room is always free
        hero = _stand_at(_new_object(rng, shape, colour, _HERO), (0.0, room["size"][1] / 2))
    offset = np.asarray(hero["center"]) - np.asarray(camera["position"])
    ground = math.hypot(offset[0], offset[1])
    camera["yaw"] = math.degrees(math.atan2(offset[0], offset[1])) + rng.uniform(-12, 12)
    # Image row of a point at angle a below the horizon: 0.5 + f tan(a - pitch); solve for a target row.
    down = math.degrees(math.atan2(-offset[2], ground))
    row = rng.uniform(0.42, 0.62)
    camera["pitch"] = min(max(down - math.degrees(math.atan((row - 0.5) / focal_fraction(camera))), -5.0), 45.0)
    return hero


def _screen_radius(camera, described):
    """Approximate on-screen radius (fraction of the width) of a described object: 0.62 size / depth x focal
    (0.62 x volume^(1/3) is a sphere's radius, and close to a box's or cylinder's silhouette)."""
    return focal_fraction(camera) * 0.62 * described["size"] / described["depth"]


def _hides(camera, front, back):
    """Would `front` (nearer) hide most of `back`? True when back's screen centre lies well inside front's disc."""
    gap = math.hypot(front["image_x"] - back["image_x"], front["image_y"] - back["image_y"])
    return gap < _screen_radius(camera, front) - 0.3 * _screen_radius(camera, back)


def _place_other(rng, objects, room, camera):
    """One more object, usually just in front of or behind an earlier one so that partial occlusion is common
    (the amodal task needs it), but never hiding or hidden by another almost entirely."""
    cam_xy = np.asarray(camera["position"][:2])
    described = describe({"camera": camera, "objects": objects})
    hero = described[0]
    for _ in range(12):
        if rng.uniform() < 0.3:  # a twin of an earlier object, so that spatial words get used
            twin = rng.choice(objects)
            shape, colour = twin["shape"], twin["colour"]
        else:
            shape, colour = rng.choice(SHAPES), rng.choice(COLOURS)
        obj = _new_object(rng, shape, colour, _OTHER)
        if rng.uniform() < 0.85:
            anchor = rng.choice(objects)
            toward = np.asarray(anchor["center"][:2]) - cam_xy
            toward /= np.linalg.norm(toward)
            side = np.array([toward[1], -toward[0]])
            reach = _footprint(obj) + _footprint(anchor)
            # Along the line of sight just in front of the anchor (covering part of it) or just behind it
            # (peeking out beside it): they overlap on screen but not in space.
            front = rng.uniform() < 0.4
            along = (-1.0 if front else 1.0) * rng.uniform(1.1, 1.8) * reach
            shift = rng.choice((-1.0, 1.0)) * (rng.uniform(0.0, 0.7) if front else rng.uniform(0.4, 1.0)) * reach
            xy = np.asarray(anchor["center"][:2]) + along * toward + shift * side
        else:
            bearing = math.radians(camera["yaw"] + rng.uniform(-25, 25))
            xy = cam_xy + rng.uniform(1.5, 7.0) * np.array([math.sin(bearing), math.cos(bearing)])
        if not _fits(_stand_at(obj, xy), objects, room, camera):
            continue
        mine = describe({"camera": camera, "objects": [obj]})[0]
        # On screen, and never as big (in space or on screen) as the hero that carries the class.
        if mine["depth"] <= 0.3 or not (0.02 < mine["image_x"] < 0.98 and 0.02 < mine["image_y"] < 0.98):
            continue
        if mine["size"] > 0.8 * hero["size"] or mine["size"] / mine["depth"] > 0.8 * hero["size"] / hero["depth"]:
            continue
        if any(_hides(camera, *sorted((mine, other), key=lambda o: o["depth"])) for other in described):
            continue
        # Referring: at most two objects per (colour, shape), and a twin pair must be tellable apart.
        twins = [d for d in described if (d["colour"], d["shape"]) == (colour, shape)]
        if len(twins) > 1 or (twins and _contrast(mine, twins[0]) is None):
            continue
        return obj
    return None


def _muted(rng, lo, hi):
    """A low-saturation colour (grey level in [lo, hi] plus a slight tint): rooms must not look like a class."""
    grey = rng.uniform(lo, hi)
    return tuple(min(max(grey + rng.uniform(-0.08, 0.08), 0.0), 1.0) for _ in range(3))


def scene_spec(index, seed=0, num_classes=10):
    """The parameters of scene `index` (plain Python, no rendering): the cheap path, e.g. for label statistics.

    Returns {"label", "room", "camera", "camera2", "light", "objects"}; see `render_specs` for the meaning."""
    _check_num_classes(num_classes)
    _check_seed(seed)
    (index,) = _check_indices([index])
    rng = _Stream(int(seed), index)
    label = rng.integer(num_classes)  # first draw: exactly uniform classes whatever the layout needs
    room = {"size": (rng.uniform(5.0, 9.0), rng.uniform(7.0, 12.0), rng.uniform(2.6, 4.0)),
            "floor": (_muted(rng, 0.45, 0.75), None), "tile": rng.uniform(0.4, 1.0),
            "wall": (_muted(rng, 0.50, 0.85), None), "stripe": rng.uniform(0.25, 0.8), "bands": rng.uniform() < 0.5}
    # Second tone of each texture: the first one darkened, so textures stay low-contrast and muted.
    room["floor"] = (room["floor"][0], tuple(c * rng.uniform(0.65, 0.85) for c in room["floor"][0]))
    room["wall"] = (room["wall"][0], tuple(c * rng.uniform(0.75, 0.9) for c in room["wall"][0]))
    camera = {"position": (rng.uniform(-0.25, 0.25) * room["size"][0], rng.uniform(0.2, 1.5), rng.uniform(0.6, 2.4)),
              "yaw": 0.0, "pitch": 0.0, "roll": rng.uniform(-10, 10), "fov": rng.uniform(50, 70)}
    # The hero carries the class: its colour (and its shape when K > 10); the camera is aimed at it.
    colour = COLOURS[label % NUM_CLASS_COLOURS]
    shape = SHAPES[label // NUM_CLASS_COLOURS] if num_classes > NUM_CLASS_COLOURS else rng.choice(SHAPES)
    objects = [_frame_hero(rng, shape, colour, room, camera)]
    # Frame 2: the camera moves a few centimetres and turns by about a degree.
    camera2 = {"position": tuple(p + rng.uniform(-0.12, 0.12) for p in camera["position"]),
               "yaw": camera["yaw"] + rng.uniform(-1.5, 1.5), "pitch": camera["pitch"] + rng.uniform(-1.5, 1.5),
               "roll": camera["roll"] + rng.uniform(-1.0, 1.0), "fov": camera["fov"]}
    azimuth, elevation = math.radians(rng.uniform(0, 360)), math.radians(rng.uniform(35, 70))
    light = {"direction": (math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth),
                           math.sin(elevation)), "ambient": rng.uniform(0.4, 0.55)}
    wanted = 1 + min(int(rng.uniform() ** 0.6 * 4), 3)  # 1..4 objects, more often 3-4 (more occlusion)
    for _ in range(wanted - 1):
        obj = _place_other(rng, objects, room, camera)
        if obj is not None:
            objects.append(obj)
    return {"label": label, "room": room, "camera": camera, "camera2": camera2, "light": light, "objects": objects}


# ----------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------

def render_specs(specs, resolution=64, second_frame=True):
    """Renders a list of scene specs (from `scene_spec`, or written by hand) into a batch.

    A spec: {"label": int, "room": {"size": (W, D, Hw), "floor": (rgb, rgb), "tile", "wall": (rgb, rgb), "stripe",
    "bands": bool}, "camera" and "camera2": {"position": xyz, "yaw", "pitch", "roll", "fov"} (degrees),
    "light": {"direction": xyz toward the light, "ambient"}, "objects": [{"shape", "colour", "center", "half":
    half-extents (sphere r, r, r; cylinder r, r, h), "yaw", "move": xyz, "turn": degrees}, ...]}.

    Returns (B scenes, S = render.MAX_OBJECTS slots, R = resolution):
        rgb, rgb2 (B, 3, R, R) in [-1, 1]       frames 1 and 2
        depth (B, R, R) planar z, valid (B, R, R) bool (False on sky, where depth is 0)
        normals (B, 3, R, R) unit surface normals in the camera frame (OpenCV axes), zero on sky
        ids, ids2 (B, R, R) long                 visible object per pixel, 0 = room / sky, k + 1 = slot k
        amodal (B, S, R, R) bool                 full object masks, all False for empty slots
        alone (B, S, 3, R, R) in [-1, 1]         each object alone on white (+1)
        flow (B, 2, R, R) pixels (u = x, v = y), flow_valid (B, R, R) bool
        ref_masks (B, S, R, R) bool              visible mask of the object expression k refers to
        label (B,) long, num_objects (B,) long, focal (B,) pixels
        expressions: B lists of str, objects: B lists of dicts from `describe`
    second_frame=False leaves out rgb2, ids2, flow and flow_valid (render.SECOND_FRAME_KEYS) and half the work.
    """
    _check_resolution(resolution)
    if len(specs) == 0:
        raise ValueError("specs must hold at least one scene")
    objects = [describe(spec) for spec in specs]
    words = [expressions(objs) for objs in objects]
    scene = pack(specs, resolution, PALETTE)
    return {
        **render_scenes(scene, resolution, second_frame),
        "label": torch.tensor([spec["label"] for spec in specs], dtype=torch.long),
        "num_objects": torch.tensor([len(spec["objects"]) for spec in specs], dtype=torch.long),
        "focal": scene["focal"],
        "expressions": words,
        "objects": objects,
    }


def render(indices, resolution=64, seed=0, num_classes=10, second_frame=True):
    """Scenes `indices` of the world (seed, num_classes), rendered as one batch; see `render_specs`."""
    _check_resolution(resolution)
    _check_num_classes(num_classes)
    indices = _check_indices(indices)
    if not indices:
        raise ValueError("indices must name at least one scene, got none")
    return render_specs([scene_spec(i, seed, num_classes) for i in indices], resolution, second_frame)


def collate(items):
    """Batches `World` items: tensors are stacked, lists (expressions, objects) kept as lists of lists."""
    stack = lambda key: torch.stack([it[key] for it in items])  # noqa: E731
    return {key: stack(key) if isinstance(value, torch.Tensor) else [it[key] for it in items]
            for key, value in items[0].items()}


class World(torch.utils.data.Dataset):
    """`size` scenes of the world as a Dataset; use `collate` with a DataLoader (expressions vary in length)."""

    def __init__(self, size, resolution=64, seed=0, num_classes=10):
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"size must be a non-negative integer, got {size!r}")
        _check_resolution(resolution)
        _check_num_classes(num_classes)
        _check_seed(seed)
        self.size, self.resolution, self.seed, self.num_classes = size, resolution, seed, num_classes

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        (index,) = _check_indices([index])
        if index >= self.size:
            raise IndexError(f"index {index} out of range for a World of size {self.size}")
        batch = render([index], self.resolution, self.seed, self.num_classes)
        return {k: v[0] for k, v in batch.items()}


# ----------------------------------------------------------------------------------------------------------
# Preview: python -m minidp.world --out world.png [--n 4 --resolution 64 --seed 0]
# ----------------------------------------------------------------------------------------------------------

def preview(batch, path):
    """A grid, one row per scene: rgb, frame 2, depth, flow, visible ids, the most occluded object's amodal mask
    over its visible mask (blue visible, orange hidden), and a referring example (the referred object's visible
    mask in a spotlight) titled with its expression."""
    rows, titles = [], []
    for b in range(batch["rgb"].shape[0]):
        n = int(batch["num_objects"][b])
        amodal, visible = batch["amodal"][b, :n], batch["ref_masks"][b, :n]  # (n, H, W)
        fraction = visible.sum((1, 2)) / amodal.sum((1, 2)).clamp_min(1)
        k = int(fraction.argmin())  # the most occluded object
        # The referring example: an expression that needed a spatial word if there is one, else any object.
        words = [i for i, e in enumerate(batch["expressions"][b]) if len(e.split()) == 4]
        j = words[0] if words else b % n
        rows.append([
            viz.to_image(batch["rgb"][b]), viz.to_image(batch["rgb2"][b]),
            viz.depth_to_rgb(batch["depth"][b], batch["valid"][b]),
            viz.flow_to_rgb(batch["flow"][b], batch["flow_valid"][b]),
            viz.ids_to_rgb(batch["ids"][b]),
            viz.amodal_to_rgb(batch["amodal"][b, k], batch["ref_masks"][b, k]),
            viz.spotlight(batch["rgb"][b], batch["ref_masks"][b, j]),
        ])
        titles.append(["rgb", "frame 2", "depth", "flow", "ids", f"amodal {int(100 * fraction[k])}% vis.",
                       batch["expressions"][b][j]])
    viz.save_grid(rows, titles, path)


def main(argv=None):

    parser = ArgumentParser(prog="python -m minidp.world", description="Preview grid of the synthetic world.")
    parser.add_argument("--out", default="world.png", help="the PNG to write (its folder must exist)")
    parser.add_argument("--n", type=int_in(1, 1000), default=4, help="number of scenes (rows)")
    parser.add_argument("--resolution", type=int_in(16, 256), default=64, help="pixels per side")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not Path(args.out).parent.is_dir():  # before any rendering
        parser.error(f"--out: cannot write {args.out}: {Path(args.out).parent} is not a directory")
    try:
        preview(render(range(args.n), args.resolution, args.seed), args.out)
    except OSError as e:  # the file system refused the figure (permissions, a full disk)
        print(f"error: --out: cannot write {args.out} ({e.strerror or one_line(e)})", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
