"""The synthetic world: procedural 3-D rooms rendered by analytic ray casting, with exact ground truth.

minidp's embedded default data (DESIGN.md, "The synthetic world"). No dataset can be downloaded on a fresh
machine, so every task of the scaling paper (Ravishankar et al. 2024, §3: depth, optical flow, amodal
segmentation, class-conditional pre-training) and ADDP's referring segmentation (Pang et al.) gets its images
and its *exact* targets from here: the renderer knows the geometry, so ground truth is computed, not estimated.

A scene: a pinhole camera inside an open-topped room (checkered floor, striped walls, per-scene colours) holding
1-4 primitives (spheres, boxes turned about the vertical, vertical cylinders) coloured from `PALETTE`, lit by
one directional light with Lambertian shading, an ambient term and hard shadows. Frame 2 follows a small camera
motion and a small motion of every object.

Frames and conventions (the tests rely on them):
    world:  x right, y forward (into the room), z up; floor z = 0; room [-W/2, W/2] x [0, D] x [0, Hw], open at
            the top (rays leaving through it see "sky": depth 0, valid False)
    camera: OpenCV, x right, y down, z forward; R_cw (camera-to-world) = Rz(-yaw) Rx(-pitch) R_level Rz(roll),
            so positive yaw turns right and positive pitch looks down
    pixels: pixel (i, j) (row, column) is the point (x, y) = (j, i); principal point c = (R - 1) / 2;
            focal length f = R * 0.5 / tan(fov / 2) pixels, so geometry does not depend on the resolution R

Exact ground truth (one ray per pixel centre, no anti-aliasing, so every target is exact at that centre):
    ray:     d = R_cw ((j - c) / f, (i - c) / f, 1),  hit point P = C + t d  (analytic sphere / slab / cylinder
             and plane intersections)
    depth:   planar z = t, because d's component along the optical axis is 1 (not the ray length |t d|)
    flow:    P' = c_k + m_k + Rz(dpsi_k) (P - c_k) for a point on object k (P' = P on the room);
             (X2, Y2, Z2) = R2_cw^T (P' - C2);  flow = (f X2 / Z2 + c, f Y2 / Z2 + c) - (j, i)
    occlusion: P' is visible in frame 2 iff frame 2's depth map, evaluated exactly at the sub-pixel point
             (f X2 / Z2 + c, f Y2 / Z2 + c) by casting camera 2's ray through it, equals Z2 (relative 1e-3);
             flow_valid also needs the point inside frame 2's image and a valid (non-sky) frame-1 pixel
    amodal:  object k's full mask = pixels whose ray hits object k, ignoring every other object
    ref_masks: the VISIBLE mask of the referred object (ids == k + 1), as in RefCOCO-style datasets

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
- Rendering is batched over scenes x objects x pixels; the only Python loops are over the 3 shapes and over
  the cheap per-scene parameter sampling.

Letter legend for shape comments: B scenes, S object slots (MAX_OBJECTS), P pixels (H * W), H, W rows and
columns, m candidate (scene, pixel, slot) rays.
"""

import argparse
import math

import numpy as np
import torch

MAX_OBJECTS = 4
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
SHAPES = ("sphere", "box", "cylinder")
NUM_CLASS_COLOURS = 10
MAX_CLASSES = NUM_CLASS_COLOURS * len(SHAPES)  # colour x shape of the hero
SKY = ((0.62, 0.78, 0.95), (0.88, 0.93, 1.0))  # sky colour at the horizon and straight up
_EPS_T = 1e-3  # minimum ray parameter of a hit, so shadow rays do not re-hit the surface they start on


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
# Small geometry on one scene (numpy, float64): cameras, projection, object descriptions
# ----------------------------------------------------------------------------------------------------------

def _rot_z(deg):
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rot_x(deg):
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


# Columns: where the camera's x (right), y (down), z (forward) axes point in the world of a level camera.
_LEVEL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


def camera_matrix(camera):
    """Camera-to-world rotation R_cw (3, 3) of a camera dict (yaw right, pitch down, roll, all in degrees)."""
    return _rot_z(-camera["yaw"]) @ _rot_x(-camera["pitch"]) @ _LEVEL @ _rot_z(camera["roll"])


def focal_fraction(camera):
    """Focal length as a fraction of the image width (multiply by the resolution for pixels)."""
    return 0.5 / math.tan(math.radians(camera["fov"]) / 2)


def project(camera, point):
    """(x, y, z): a world point's image position as fractions of the width (0 = left edge) and its planar depth."""
    xyz = camera_matrix(camera).T @ (np.asarray(point, float) - np.asarray(camera["position"], float))
    f = focal_fraction(camera)
    return f * xyz[0] / xyz[2] + 0.5, f * xyz[1] / xyz[2] + 0.5, xyz[2]


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
# Batched tensors of a list of specs
# ----------------------------------------------------------------------------------------------------------

def _pack(specs, resolution):
    """Every number the renderer needs, as float32 tensors with a leading scene dim B."""
    B, S = len(specs), MAX_OBJECTS
    present, shape = np.zeros((B, S), bool), np.zeros((B, S), np.int64)
    center, half, albedo, move = (np.zeros((B, S, 3)) for _ in range(4))
    half[:] = 1.0  # empty slots: harmless unit-sized geometry that is never selected
    yaw, turn = np.zeros((B, S)), np.zeros((B, S))
    for b, spec in enumerate(specs):
        if not 1 <= len(spec["objects"]) <= MAX_OBJECTS:
            raise ValueError(f"a scene holds 1..{MAX_OBJECTS} objects, got {len(spec['objects'])}")
        for s, obj in enumerate(spec["objects"]):
            present[b, s], shape[b, s] = True, SHAPES.index(obj["shape"])
            center[b, s], half[b, s], albedo[b, s] = obj["center"], obj["half"], PALETTE[obj["colour"]]
            yaw[b, s], move[b, s], turn[b, s] = math.radians(obj["yaw"]), obj["move"], math.radians(obj["turn"])
    # Bounding-sphere radius for culling rays: a sphere's own radius, else the half-extent vector's length.
    radius = np.where(shape == 0, half[..., 0], np.linalg.norm(half, axis=-1)) * present
    rooms = [s["room"] for s in specs]
    # Colour table (B, 3, 8): floor tones, wall tones, then the 4 object slots' albedos (see _material).
    table = np.concatenate([[r["floor"] for r in rooms], [r["wall"] for r in rooms], albedo], 1).transpose(0, 2, 1)
    size = np.array([r["size"] for r in rooms])  # (B, 3): width, depth, wall height
    light = np.array([s["light"]["direction"] for s in specs])
    f32 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    return {
        "present": torch.from_numpy(present), "shape": torch.from_numpy(shape), "center": f32(center),
        "half": f32(half), "radius": f32(radius), "table": f32(table), "yaw": f32(yaw),
        # Frame 2: every object slid and turned by its own motion.
        "center2": f32(center + move), "yaw2": f32(yaw + turn),
        "lo": f32(np.stack([-size[:, 0] / 2, np.zeros(B), np.zeros(B)], 1)),
        "hi": f32(np.stack([size[:, 0] / 2, size[:, 1], size[:, 2]], 1)),
        "tile": f32([r["tile"] for r in rooms]), "stripe": f32([r["stripe"] for r in rooms]),
        "bands": torch.tensor([bool(r["bands"]) for r in rooms]),
        "light": f32(light / np.linalg.norm(light, axis=1, keepdims=True)),
        "ambient": f32([s["light"]["ambient"] for s in specs]),
        "pos": f32([s["camera"]["position"] for s in specs]), "rot": f32([camera_matrix(s["camera"]) for s in specs]),
        "pos2": f32([s["camera2"]["position"] for s in specs]),
        "rot2": f32([camera_matrix(s["camera2"]) for s in specs]),
        "focal": f32([focal_fraction(s["camera"]) * resolution for s in specs]),  # pixels
        "focal2": f32([focal_fraction(s["camera2"]) * resolution for s in specs]),
    }


# ----------------------------------------------------------------------------------------------------------
# Ray casting: rays, the room, the three primitives
# ----------------------------------------------------------------------------------------------------------

def _pixel_grid(resolution):
    """Pixel-centre offsets from the principal point: x (P,) and y (P,), in pixels, row-major."""
    coords = torch.arange(resolution, dtype=torch.float32) - (resolution - 1) / 2  # (W,)
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")  # (H, W) each
    return xs.reshape(-1), ys.reshape(-1)  # (P,) each


def _pixel_rays(rot, focal, resolution):
    """World directions (B, P, 3) through every pixel centre, scaled so the camera-z component is exactly 1."""
    xs, ys = _pixel_grid(resolution)
    f = focal[:, None]  # (B, 1)
    d_cam = torch.stack([xs / f, ys / f, torch.ones_like(xs / f)], -1)  # (B, P, 3)
    return d_cam @ rot.transpose(1, 2)  # (B, P, 3): row p is R_cw d_cam[p]


def _turn(v, cos, sin):
    """Rotates the xy part of v (..., 3) about z by the angle with the given cos and sin (broadcast over ...)."""
    x, y, z = v.unbind(-1)
    return torch.stack([cos * x - sin * y, sin * x + cos * y, z], -1)


def _safe(d):
    """Direction components with exact zeros nudged, so slab divisions give +-inf instead of nan."""
    return torch.where(d == 0, torch.full_like(d, 1e-12), d)


def _hit_room(origin, dirs, lo, hi):
    """Exit of rays starting inside the room box [lo, hi] (B, 3): t (B, P), inward normal (B, P, 3), the axis of
    the wall hit (0 side wall, 1 front/back wall, 2 floor or open top) (B, P), and sky (B, P): left through the top."""
    d = _safe(dirs)
    bound = torch.where(d > 0, hi[:, None], lo[:, None])  # (B, P, 3): the face each axis leaves through
    t, axis = ((bound - origin) / d).min(-1)  # (B, P): the first face reached
    d_axis = d.gather(-1, axis[..., None])  # (B, P, 1)
    normal = torch.zeros_like(d).scatter_(-1, axis[..., None], -torch.sign(d_axis))  # (B, P, 3)
    sky = (axis == 2) & (d[..., 2] > 0)
    return t, normal, axis, sky


def _sphere(o, d, half, want_normal):
    """|o + t d| = r: the smaller root of a t^2 + 2 b t + c = 0 (o relative to the centre)."""
    r = half[..., 0]  # (m,)
    a, b, c = (d * d).sum(-1), (o * d).sum(-1), (o * o).sum(-1) - r * r  # (m,) each
    disc = b * b - a * c
    t = (-b - disc.clamp_min(0).sqrt()) / a
    t = torch.where((disc >= 0) & (t > _EPS_T), t, math.inf)
    if not want_normal:
        return t, None
    return t, (o + torch.nan_to_num(t, posinf=0.0)[..., None] * d) / r[..., None]


def _box(o, d, half, want_normal):
    """Slab test in the box frame: enter when the last of the three slabs is entered, before any is left."""
    d = _safe(d)
    t1, t2 = (-half - o) / d, (half - o) / d  # (m, 3)
    t_near, axis = torch.minimum(t1, t2).max(-1)  # (m,)
    t_far = torch.maximum(t1, t2).amin(-1)
    t = torch.where((t_near <= t_far) & (t_near > _EPS_T), t_near, math.inf)
    if not want_normal:
        return t, None
    d_axis = d.gather(-1, axis[..., None])  # (m, 1)
    return t, torch.zeros_like(t1).scatter_(-1, axis[..., None], -torch.sign(d_axis))


def _cylinder(o, d, half, want_normal):
    """Vertical cylinder: the side (a circle in xy, height within +-h) or the cap facing the ray origin."""
    r, h = half[..., 0], half[..., 2]  # (m,) each
    a = (d[..., :2] ** 2).sum(-1).clamp_min(1e-12)
    b = (o[..., :2] * d[..., :2]).sum(-1)
    c = (o[..., :2] ** 2).sum(-1) - r * r
    disc = b * b - a * c
    t_side = (-b - disc.clamp_min(0).sqrt()) / a  # (m,)
    z_side = o[..., 2] + t_side * d[..., 2]
    t_side = torch.where((disc >= 0) & (z_side.abs() <= h) & (t_side > _EPS_T), t_side, math.inf)
    cap = torch.where(o[..., 2] > 0, h, -h)  # (m,): the cap plane on the origin's side
    t_cap = (cap - o[..., 2]) / _safe(d[..., 2])
    on_cap = ((o[..., :2] + t_cap[..., None] * d[..., :2]) ** 2).sum(-1) <= r * r
    t_cap = torch.where(on_cap & (t_cap > _EPS_T), t_cap, math.inf)
    t = torch.minimum(t_side, t_cap)
    if not want_normal:
        return t, None
    p = o + torch.nan_to_num(t, posinf=0.0)[..., None] * d  # (m, 3)
    side = torch.stack([p[..., 0] / r, p[..., 1] / r, torch.zeros_like(t)], -1)
    top = torch.stack([torch.zeros_like(t), torch.zeros_like(t), torch.sign(cap)], -1)
    return t, torch.where((t_cap < t_side)[..., None], top, side)


_INTERSECT = {"sphere": _sphere, "box": _box, "cylinder": _cylinder}


def _screen_boxes(scene, pos, rot, focal, center, resolution):
    """Pixels inside the screen bounding box of every slot's bounding sphere: a cull mask (B, S, P) for rays
    through pixel centres. A sphere (X, Y, Z, r) in camera coordinates projects between the two planes through
    the camera centre tangent to it, x / z = k with k = (X Z -+ r sqrt(X^2 + Z^2 - r^2)) / (Z^2 - r^2), and the
    same for y; a row mask (B, S, H) AND a column mask (B, S, W) give the box in one cheap outer product."""
    B, S = scene["present"].shape
    cam = (center - pos[:, None]) @ rot  # (B, S, 3): camera coordinates of the centres, R_cw^T (c - C)
    X, Y, Z = cam.unbind(-1)  # (B, S) each
    r = scene["radius"] * 1.01 + 1e-3  # 1 % + 1 mm of slack: float32 rounding must never cull a real hit
    den = Z * Z - r * r
    ahead = (Z > 0) & (den > 1e-6)  # else the sphere reaches behind the camera plane: keep the whole image
    f = focal[:, None, None]  # (B, 1, 1)
    coords = torch.arange(resolution, dtype=torch.float32) - (resolution - 1) / 2  # (W,) pixel offsets
    masks = []
    for U in (Y, X):
        root = r * (U * U + den).clamp_min(0).sqrt()
        lo, hi = ((U * Z - root) / den)[..., None] * f, ((U * Z + root) / den)[..., None] * f  # (B, S, 1)
        masks.append(((coords >= lo) & (coords <= hi)) | ~ahead[..., None])  # (B, S, H or W)
    rows, cols = masks
    return (rows[..., :, None] & cols[..., None, :]).view(B, S, -1) & scene["present"][..., None]  # (B, S, P)


def _sphere_cull(origin, dirs, scene, center):
    """Rays that meet a slot's bounding sphere: (B, S, P) bool, for rays that do not start at a camera centre.
    o = origin - center is expanded as |origin|^2 - 2 origin . center + |center|^2 so that all slots are tested
    with matrix products, never materialising o for every (pixel, slot) pair."""
    ct = center.transpose(1, 2)  # (B, 3, S)
    od = (origin * dirs).sum(-1, keepdim=True) - dirs @ ct  # (B, P or 1, S): o . d
    oo = (origin * origin).sum(-1, keepdim=True) - 2 * origin @ ct + (ct * ct).sum(1, keepdim=True)  # |o|^2
    dd = (dirs * dirs).sum(-1, keepdim=True)  # (B, P or 1, 1)
    c = oo - (scene["radius"] * 1.01 + 1e-3)[:, None] ** 2  # (B, P or 1, S), slack as in _screen_boxes
    # Real roots, and the far one ahead of the origin (od < 0: centre ahead; c < 0: origin inside the sphere).
    near = (od * od > dd * c) & ((od < 0) | (c < 0)) & scene["present"][:, None]  # (B, P, S)
    return near.transpose(1, 2)  # (B, S, P)


def _hit_objects(origin, dirs, scene, center, yaw, near, light=None):
    """Every object slot against every ray, each ignoring the others (so occluded parts still hit: amodal).

    origin and dirs: (B, P, 3) or (B, 1, 3), one of them per pixel; near (B, S, P): the cull mask, rays that may
    hit (from _screen_boxes or _sphere_cull, typically a few %): only those get the exact intersection of
    their slot's shape. Returns the candidates, compact: scene b, slot s, pixel p, hit distance t (inf on a
    miss) and, if light (B, 3) is given, the Lambert term max(n . l, 0), all (m,)."""
    P = near.shape[2]
    b, s, p = torch.nonzero(near, as_tuple=True)  # (m,) each: candidate rays
    o = origin.expand(-1, P, -1)[b, p] - center[b, s]  # (m, 3): ray origin relative to the object centre
    d = dirs.expand(-1, P, -1)[b, p]  # (m, 3)
    shape, half = scene["shape"][b, s], scene["half"][b, s]  # (m,), (m, 3)
    t = torch.full((len(b),), math.inf)
    normal = torch.zeros(len(b), 3) if light is not None else None
    for k, name in enumerate(SHAPES):
        i = torch.nonzero(shape == k).squeeze(1)  # (m_k,) candidates of this shape
        oc, dc = o[i], d[i]  # (m_k, 3)
        if name == "box":  # into the box frame: rotate by -yaw about the vertical
            cos, sin = yaw[b[i], s[i]].cos(), yaw[b[i], s[i]].sin()  # (m_k,)
            oc, dc = _turn(oc, cos, -sin), _turn(dc, cos, -sin)
        t[i], n_k = _INTERSECT[name](oc, dc, half[i], light is not None)
        if light is not None:
            normal[i] = _turn(n_k, cos, sin) if name == "box" else n_k  # box normals back to the world
    lam = (normal * light[b]).sum(-1).clamp_min(0) if light is not None else None
    return b, s, p, t, lam


def _dense(shape, b, s, p, values, fill):
    """Scatters compact candidate values into a dense (B, S, P) tensor filled with `fill` elsewhere."""
    out = torch.full(shape, fill)
    out[b, s, p] = values
    return out


# ----------------------------------------------------------------------------------------------------------
# Shading and the two frames
# ----------------------------------------------------------------------------------------------------------

def _material(points, axis, on_obj, slot, scene):
    """Index (B, P) into the scene's colour table: 0 / 1 floor tones (checker), 2 / 3 wall tones (vertical
    stripes or horizontal bands), 4 + k object slot k. Textures live in world coordinates, so they stay put
    when the camera moves (flow of a textured wall is the wall's motion)."""
    x, y, z = points.unbind(-1)  # (B, P) each
    tile, stripe = scene["tile"][:, None], scene["stripe"][:, None]  # (B, 1)
    floor_odd = ((x / tile).floor() + (y / tile).floor()).remainder(2)  # (B, P): 0. or 1.
    along = torch.where(axis == 0, y, x)  # horizontal coordinate along the wall that was hit
    wall_odd = (torch.where(scene["bands"][:, None], z, along) / stripe).floor().remainder(2)
    room = torch.where(axis == 2, floor_odd, 2 + wall_odd).long()
    return torch.where(on_obj, 4 + slot, room)


def _render_frame(scene, pos, rot, focal, center, yaw, resolution):
    """One frame: colour, planar depth, validity, visible ids, plus per-slot hits for amodal / alone / flow."""
    B, S = scene["present"].shape
    dirs = _pixel_rays(rot, focal, resolution)  # (B, P, 3)
    origin = pos[:, None]  # (B, 1, 3)
    light, ambient = scene["light"], scene["ambient"][:, None]  # (B, 3), (B, 1)
    t_room, n_room, axis, sky = _hit_room(origin, dirs, scene["lo"], scene["hi"])
    boxes = _screen_boxes(scene, pos, rot, focal, center, resolution)  # (B, S, P)
    b, s, p, t, lam = _hit_objects(origin, dirs, scene, center, yaw, boxes, light)
    t_obj, lam_obj = _dense(boxes.shape, b, s, p, t, math.inf), _dense(boxes.shape, b, s, p, lam, 0.0)  # (B, S, P)
    t_near, slot = t_obj.min(1)  # (B, P): nearest object and its slot
    on_obj = t_near < t_room
    valid = on_obj | ~sky
    depth = torch.where(on_obj, t_near, t_room).masked_fill(~valid, 0.0)  # planar z = t (camera-z of d is 1)
    points = origin + depth[..., None] * dirs  # (B, P, 3) world hit points
    lam_room = (n_room * light[:, None]).sum(-1).clamp_min(0)  # (B, P)
    lam = torch.where(on_obj, lam_obj.gather(1, slot[:, None]).squeeze(1), lam_room)
    # Hard shadows: a ray from the hit point toward the light, against every object but the one hit (a convex
    # object cannot shadow itself where n . l > 0, and n . l <= 0 is dark anyway).
    shadow_rays = (points, light[:, None])
    b, s, p, t, _ = _hit_objects(*shadow_rays, scene, center, yaw, _sphere_cull(*shadow_rays, scene, center))
    blocker = (t < math.inf) & ~(on_obj[b, p] & (slot[b, p] == s))  # (m,) hits by another object
    lit = torch.ones_like(on_obj)
    lit[b[blocker], p[blocker]] = False  # (B, P)
    shade = ambient + (1 - ambient) * lam * lit  # (B, P)
    material = _material(points, axis, on_obj, slot, scene)[:, None].expand(-1, 3, -1)  # (B, 3, P)
    colour = scene["table"].gather(2, material) * shade[:, None]  # (B, 3, P), channels first like the output
    elevation = (dirs[..., 2] / dirs.norm(dim=-1)).clamp(0, 1)[:, None]  # (B, 1, P)
    sky_colour = torch.tensor(SKY[0])[:, None] * (1 - elevation) + torch.tensor(SKY[1])[:, None] * elevation
    colour = torch.where(valid[:, None], colour, sky_colour)  # (B, 3, P)
    ids = torch.where(on_obj, slot + 1, 0)
    return {"rgb": colour * 2 - 1, "depth": depth, "valid": valid, "ids": ids, "t_obj": t_obj, "lam_obj": lam_obj,
            "points": points, "on_obj": on_obj, "slot": slot}


def _flow(scene, frame1, resolution):
    """Exact forward flow frame 1 -> frame 2 (B, 2, P) and its validity (B, P): in view, not occluded, not sky."""
    points, slot, on_obj = frame1["points"], frame1["slot"], frame1["on_obj"]
    idx3 = slot[..., None].expand(-1, -1, 3)  # (B, P, 3)
    c1, c2 = scene["center"].gather(1, idx3), scene["center2"].gather(1, idx3)  # (B, P, 3)
    turn = (scene["yaw2"] - scene["yaw"]).gather(1, slot)  # (B, P)
    moved = torch.where(on_obj[..., None], c2 + _turn(points - c1, turn.cos(), turn.sin()), points)  # P'
    cam = (moved - scene["pos2"][:, None]) @ scene["rot2"]  # (B, P, 3): R2_cw^T (P' - C2), row form
    z2 = cam[..., 2]
    ahead = z2 > 1e-6
    z_safe = torch.where(ahead, z2, torch.ones_like(z2))
    f2 = scene["focal2"][:, None]  # (B, 1)
    xs, ys = _pixel_grid(resolution)
    flow = torch.stack([f2 * cam[..., 0] / z_safe - xs, f2 * cam[..., 1] / z_safe - ys], 1)  # (B, 2, P)
    edge = (resolution - 1) / 2 + 0.5  # pixel-centre offsets of the image borders
    inside = ahead & ((xs + flow[:, 0]).abs() < edge) & ((ys + flow[:, 1]).abs() < edge)
    # Occlusion: frame 2's depth at the exact sub-pixel point, by casting camera 2's ray through it.
    dirs2 = (cam / z_safe[..., None]) @ scene["rot2"].transpose(1, 2)  # (B, P, 3), camera-z component 1
    t_room2 = _hit_room(scene["pos2"][:, None], dirs2, scene["lo"], scene["hi"])[0]
    rays2, center2 = (scene["pos2"][:, None], dirs2), scene["center2"]
    b, s, p, t, _ = _hit_objects(*rays2, scene, center2, scene["yaw2"], _sphere_cull(*rays2, scene, center2))
    P = t_room2.shape[1]
    t_first = t_room2.flatten().scatter_reduce(0, b * P + p, t, "amin").view_as(t_room2)  # (B, P) nearest hit
    visible = t_first >= z2 * (1 - 1e-3)
    valid = frame1["valid"] & inside & visible
    flow = flow * (frame1["valid"] & ahead)[:, None]  # sky (and anything behind camera 2) gets zero flow
    return flow, valid


# ----------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------

def render_specs(specs, resolution=64):
    """Renders a list of scene specs (from `scene_spec`, or written by hand) into a batch.

    A spec: {"label": int, "room": {"size": (W, D, Hw), "floor": (rgb, rgb), "tile", "wall": (rgb, rgb), "stripe",
    "bands": bool}, "camera" and "camera2": {"position": xyz, "yaw", "pitch", "roll", "fov"} (degrees),
    "light": {"direction": xyz toward the light, "ambient"}, "objects": [{"shape", "colour", "center", "half":
    half-extents (sphere r, r, r; cylinder r, r, h), "yaw", "move": xyz, "turn": degrees}, ...]}.

    Returns (B scenes, S = MAX_OBJECTS slots, R = resolution):
        rgb, rgb2 (B, 3, R, R) in [-1, 1]       frames 1 and 2
        depth (B, R, R) planar z, valid (B, R, R) bool (False on sky, where depth is 0)
        ids, ids2 (B, R, R) long                 visible object per pixel, 0 = room / sky, k + 1 = slot k
        amodal (B, S, R, R) bool                 full object masks, all False for empty slots
        alone (B, S, 3, R, R) in [-1, 1]         each object alone on white (+1)
        flow (B, 2, R, R) pixels (u = x, v = y), flow_valid (B, R, R) bool
        ref_masks (B, S, R, R) bool              visible mask of the object expression k refers to
        label (B,) long, num_objects (B,) long, focal (B,) pixels
        expressions: B lists of str, objects: B lists of dicts from `describe`
    """
    _check_resolution(resolution)
    if len(specs) == 0:
        raise ValueError("specs must hold at least one scene")
    objects = [describe(spec) for spec in specs]
    words = [expressions(objs) for objs in objects]
    scene = _pack(specs, resolution)
    B, S, R = len(specs), MAX_OBJECTS, resolution
    f1 = _render_frame(scene, scene["pos"], scene["rot"], scene["focal"], scene["center"], scene["yaw"], R)
    f2 = _render_frame(scene, scene["pos2"], scene["rot2"], scene["focal2"], scene["center2"], scene["yaw2"], R)
    flow, flow_valid = _flow(scene, f1, R)
    amodal = f1["t_obj"] < math.inf  # (B, S, P)
    ambient = scene["ambient"][:, None, None]  # (B, 1, 1)
    shade = (ambient + (1 - ambient) * f1["lam_obj"])[:, :, None]  # (B, S, 1, P)
    albedo = scene["table"][:, :, 4:].transpose(1, 2)[..., None]  # (B, S, 3, 1)
    alone = torch.where(amodal[:, :, None], albedo * shade * 2 - 1, 1.0)  # (B, S, 3, P), white background
    ids = f1["ids"].view(B, R, R)
    return {
        "rgb": f1["rgb"].view(B, 3, R, R),
        "depth": f1["depth"].view(B, R, R),
        "valid": f1["valid"].view(B, R, R),
        "ids": ids,
        "amodal": amodal.view(B, S, R, R),
        "alone": alone.view(B, S, 3, R, R),
        "rgb2": f2["rgb"].view(B, 3, R, R),
        "ids2": f2["ids"].view(B, R, R),
        "flow": flow.view(B, 2, R, R),
        "flow_valid": flow_valid.view(B, R, R),
        "ref_masks": ids[:, None] == torch.arange(1, S + 1)[None, :, None, None],  # (B, S, H, W)
        "label": torch.tensor([spec["label"] for spec in specs], dtype=torch.long),
        "num_objects": torch.tensor([len(spec["objects"]) for spec in specs], dtype=torch.long),
        "focal": scene["focal"],
        "expressions": words,
        "objects": objects,
    }


def render(indices, resolution=64, seed=0, num_classes=10):
    """Scenes `indices` of the world (seed, num_classes), rendered as one batch; see `render_specs`."""
    _check_resolution(resolution)
    _check_num_classes(num_classes)
    indices = _check_indices(indices)
    if not indices:
        raise ValueError("indices must name at least one scene, got none")
    return render_specs([scene_spec(i, seed, num_classes) for i in indices], resolution)


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
# Preview: python -m minidp.world --out world.png
# ----------------------------------------------------------------------------------------------------------

def preview(batch, path):
    """A grid, one row per scene: rgb, frame 2, depth, flow, visible ids, the most occluded object's amodal mask
    over its visible mask (blue visible, orange hidden), and a referring example (the referred object's visible
    mask in a spotlight) titled with its expression."""
    from minidp import viz  # matplotlib is imported only when a figure is drawn

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


def main():
    parser = argparse.ArgumentParser(description="Preview grid of the synthetic world.")
    parser.add_argument("--out", default="world.png")
    parser.add_argument("--n", type=int, default=4, help="number of scenes (rows)")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    preview(render(range(args.n), args.resolution, args.seed), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
