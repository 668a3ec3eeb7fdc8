"""Analytic ray casting of packed scenes: the renderer behind the synthetic world (world.py).

world.py samples scene parameters (plain Python dicts, "specs"); this module turns a batch of specs into
tensors and renders them by ray casting in torch: colour, planar depth, validity, visible object ids, each
object's full (amodal) hits and its appearance alone, and the exact forward optical flow to a second frame.
Nothing here is random; everything is a closed-form function of the spec, which is what makes the world's
ground truth exact (tests/test_render.py checks the kernels, tests/test_world.py the whole rendering).

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
    normals: the analytic surface's outward unit normal at the hit (the room's: pointing into the room), in the
             camera frame (OpenCV axes), so a surface facing the camera has n_z < 0
    flow:    P' = c_k + m_k + Rz(dpsi_k) (P - c_k) for a point on object k (P' = P on the room);
             (X2, Y2, Z2) = R2_cw^T (P' - C2);  flow = (f X2 / Z2 + c, f Y2 / Z2 + c) - (j, i)
    occlusion: P' is visible in frame 2 iff frame 2's depth map, evaluated exactly at the sub-pixel point
             (f X2 / Z2 + c, f Y2 / Z2 + c) by casting camera 2's ray through it, equals Z2 (relative 1e-3);
             flow_valid also needs the point inside frame 2's image and a valid (non-sky) frame-1 pixel
    amodal:  object k's full mask = pixels whose ray hits object k, ignoring every other object
    ref_masks: the VISIBLE mask of the referred object (ids == k + 1), as in RefCOCO-style datasets

Notable choices:
- One ray per pixel centre, no anti-aliasing: every target is exact at the pixel centre it belongs to.
- Rendering is batched over scenes x objects x pixels; the only Python loop is over the 3 shapes. Rays are culled
  before the exact intersection (screen-space boxes of each object's bounding sphere for camera rays, a
  ray-sphere test for shadow and frame-2 rays), with a little slack so that culling never drops a real hit.
- Shadows are hard: a ray from the hit point toward the light, tested against every object but the one hit.
- Textures live in world coordinates, so they stay put when the camera moves.

Letter legend for shape comments: B scenes, S object slots (MAX_OBJECTS), P pixels (H * W), H, W rows and
columns, m candidate (scene, pixel, slot) rays.
"""

import math

import numpy as np
import torch

MAX_OBJECTS = 4  # object slots S of a packed scene: the world places 1..MAX_OBJECTS objects
SHAPES = ("sphere", "box", "cylinder")  # shape ids of a packed scene, in this order
SKY = ((0.62, 0.78, 0.95), (0.88, 0.93, 1.0))  # sky colour at the horizon and straight up
_EPS_T = 1e-3  # minimum ray parameter of a hit, so shadow rays do not re-hit the surface they start on


# ----------------------------------------------------------------------------------------------------------
# The camera of one scene (numpy, float64): rotation, focal length, projection
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




# ----------------------------------------------------------------------------------------------------------
# Batched tensors of a list of specs
# ----------------------------------------------------------------------------------------------------------

def pack(specs, resolution, palette):
    """Every number the renderer needs, as float32 tensors with a leading scene dim B.

    specs: scene dicts as documented in `world.render_specs`; palette: colour name -> RGB albedo in [0, 1]."""
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
            center[b, s], half[b, s], albedo[b, s] = obj["center"], obj["half"], palette[obj["colour"]]
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


def pixel_rays(rot, focal, resolution):
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


def hit_room(origin, dirs, lo, hi):
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


def screen_boxes(scene, pos, rot, focal, center, resolution):
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


def sphere_cull(origin, dirs, scene, center):
    """Rays that meet a slot's bounding sphere: (B, S, P) bool, for rays that do not start at a camera centre.
    o = origin - center is expanded as |origin|^2 - 2 origin . center + |center|^2 so that all slots are tested
    with matrix products, never materialising o for every (pixel, slot) pair."""
    ct = center.transpose(1, 2)  # (B, 3, S)
    od = (origin * dirs).sum(-1, keepdim=True) - dirs @ ct  # (B, P or 1, S): o . d
    oo = (origin * origin).sum(-1, keepdim=True) - 2 * origin @ ct + (ct * ct).sum(1, keepdim=True)  # |o|^2
    dd = (dirs * dirs).sum(-1, keepdim=True)  # (B, P or 1, 1)
    c = oo - (scene["radius"] * 1.01 + 1e-3)[:, None] ** 2  # (B, P or 1, S), slack as in screen_boxes
    # Real roots, and the far one ahead of the origin (od < 0: centre ahead; c < 0: origin inside the sphere).
    near = (od * od > dd * c) & ((od < 0) | (c < 0)) & scene["present"][:, None]  # (B, P, S)
    return near.transpose(1, 2)  # (B, S, P)


def hit_objects(origin, dirs, scene, center, yaw, near, light=None):
    """Every object slot against every ray, each ignoring the others (so occluded parts still hit: amodal).

    origin and dirs: (B, P, 3) or (B, 1, 3), one of them per pixel; near (B, S, P): the cull mask, rays that may
    hit (from screen_boxes or sphere_cull, typically a few %): only those get the exact intersection of
    their slot's shape. Returns the candidates, compact: scene b, slot s, pixel p, hit distance t (inf on a
    miss) and, if light (B, 3) is given, the Lambert term max(n . l, 0), all (m,), and the outward unit normal
    (m, 3) in the world frame."""
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
    return b, s, p, t, lam, normal


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


def render_frame(scene, pos, rot, focal, center, yaw, resolution):
    """One frame: colour, planar depth, validity, visible ids, plus per-slot hits for amodal / alone / flow."""
    dirs = pixel_rays(rot, focal, resolution)  # (B, P, 3)
    origin = pos[:, None]  # (B, 1, 3)
    light, ambient = scene["light"], scene["ambient"][:, None]  # (B, 3), (B, 1)
    t_room, n_room, axis, sky = hit_room(origin, dirs, scene["lo"], scene["hi"])
    boxes = screen_boxes(scene, pos, rot, focal, center, resolution)  # (B, S, P)
    b, s, p, t, lam, n_hit = hit_objects(origin, dirs, scene, center, yaw, boxes, light)
    t_obj, lam_obj = _dense(boxes.shape, b, s, p, t, math.inf), _dense(boxes.shape, b, s, p, lam, 0.0)  # (B, S, P)
    n_obj = _dense((*boxes.shape, 3), b, s, p, n_hit, 0.0)  # (B, S, P, 3)
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
    b, s, p, t, _, _ = hit_objects(*shadow_rays, scene, center, yaw, sphere_cull(*shadow_rays, scene, center))
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
    # Surface normals in the camera frame (R_cw^T n, row form n R_cw): exact, from the analytic surface hit
    n_world = torch.where(on_obj[..., None], n_obj.gather(1, slot[:, None, :, None].expand(-1, -1, -1, 3))[:, 0], n_room)
    n_cam = n_world @ rot  # (B, P, 3); renormalised: a sphere's (o + t d) / r is unit only to float32 rounding
    normals = (n_cam / n_cam.norm(dim=-1, keepdim=True).clamp_min(1e-12) * valid[..., None]).transpose(1, 2)  # (B, 3, P)
    return {"rgb": colour * 2 - 1, "normals": normals, "depth": depth, "valid": valid, "ids": ids, "t_obj": t_obj, "lam_obj": lam_obj,
            "points": points, "on_obj": on_obj, "slot": slot}


def frame_flow(scene, frame1, resolution):
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
    t_room2 = hit_room(scene["pos2"][:, None], dirs2, scene["lo"], scene["hi"])[0]
    rays2, center2 = (scene["pos2"][:, None], dirs2), scene["center2"]
    b, s, p, t, _, _ = hit_objects(*rays2, scene, center2, scene["yaw2"], sphere_cull(*rays2, scene, center2))
    P = t_room2.shape[1]
    t_first = t_room2.flatten().scatter_reduce(0, b * P + p, t, "amin").view_as(t_room2)  # (B, P) nearest hit
    visible = t_first >= z2 * (1 - 1e-3)
    valid = frame1["valid"] & inside & visible
    flow = flow * (frame1["valid"] & ahead)[:, None]  # sky (and anything behind camera 2) gets zero flow
    return flow, valid


SECOND_FRAME_KEYS = ("rgb2", "ids2", "flow", "flow_valid")  # what needs the second frame's camera and motion


def render_scenes(scene, resolution, second_frame=True):
    """Both frames of packed scenes (from `pack`) and everything derived from them, as (B, ...) image tensors.

    Returns rgb, depth, normals, valid, ids, amodal, alone, rgb2, ids2, flow, flow_valid and ref_masks, with the shapes
    and meanings documented in `world.render_specs` (which adds the per-scene labels and the expressions).
    second_frame=False skips frame 2 and the flow (SECOND_FRAME_KEYS are then absent): about half the work, for a
    training cache of a task that reads neither; frame 1's keys are the same tensors either way."""
    B, S = scene["present"].shape
    R = resolution
    f1 = render_frame(scene, scene["pos"], scene["rot"], scene["focal"], scene["center"], scene["yaw"], R)
    amodal = f1["t_obj"] < math.inf  # (B, S, P)
    ambient = scene["ambient"][:, None, None]  # (B, 1, 1)
    shade = (ambient + (1 - ambient) * f1["lam_obj"])[:, :, None]  # (B, S, 1, P)
    albedo = scene["table"][:, :, 4:].transpose(1, 2)[..., None]  # (B, S, 3, 1)
    alone = torch.where(amodal[:, :, None], albedo * shade * 2 - 1, 1.0)  # (B, S, 3, P), white background
    ids = f1["ids"].view(B, R, R)
    second = {}
    if second_frame:
        f2 = render_frame(scene, scene["pos2"], scene["rot2"], scene["focal2"], scene["center2"], scene["yaw2"], R)
        flow, flow_valid = frame_flow(scene, f1, R)
        second = {"rgb2": f2["rgb"].view(B, 3, R, R), "ids2": f2["ids"].view(B, R, R), "flow": flow.view(B, 2, R, R),
                  "flow_valid": flow_valid.view(B, R, R)}
    return {
        "rgb": f1["rgb"].view(B, 3, R, R),
        "depth": f1["depth"].view(B, R, R),
        "normals": f1["normals"].reshape(B, 3, R, R),
        "valid": f1["valid"].view(B, R, R),
        "ids": ids,
        "amodal": amodal.view(B, S, R, R),
        "alone": alone.view(B, S, 3, R, R),
        **second,
        "ref_masks": ids[:, None] == torch.arange(1, S + 1)[None, :, None, None],  # (B, S, H, W)
    }
