"""The renderer (minidp/render.py): camera conventions, exact per-ray depth and flow, culling that loses nothing.

Every geometric claim is checked against an independent computation written here from the conventions in the
module docstring (world x right / y forward / z up, OpenCV camera, pixel (i, j) at (x, y) = (j, i), principal
point (R - 1) / 2, focal R / (2 tan(fov / 2))): closed-form ray-sphere, ray-plane and ray-cylinder depth, and
f t / z flow for a translating camera or object. Scenes are written by hand here, not sampled by world.py.

Run: python -m pytest -q tests/test_render.py      (a few seconds on a quiet 2-core CPU)
"""

import math

import numpy as np
import torch

from minidp import render
from minidp.world import PALETTE, scene_spec


def hand_spec(objects, position=(0.0, 1.0, 1.2), move_camera=(0.0, 0.0, 0.0), fov=60.0):
    """A level camera (yaw = pitch = roll = 0) in an 8 x 10 x 4 room, frame 2 translated by move_camera."""
    camera = {"position": position, "yaw": 0.0, "pitch": 0.0, "roll": 0.0, "fov": fov}
    room = {"size": (8.0, 10.0, 4.0), "floor": ((0.6, 0.6, 0.6), (0.45, 0.45, 0.45)), "tile": 0.7,
            "wall": ((0.7, 0.7, 0.65), (0.6, 0.6, 0.55)), "stripe": 0.5, "bands": False}
    return {"label": 0, "room": room, "camera": camera,
            "camera2": dict(camera, position=tuple(p + m for p, m in zip(position, move_camera))),
            "light": {"direction": (0.3, -0.4, 0.8), "ambient": 0.5}, "objects": objects}


def sphere(center, r, colour="red", move=(0.0, 0.0, 0.0)):
    return {"shape": "sphere", "colour": colour, "center": center, "half": (r, r, r), "yaw": 0.0, "move": move,
            "turn": 0.0}


def render_one(spec, resolution):
    """render_scenes of a single hand-written spec."""
    return render.render_scenes(render.pack([spec], resolution, PALETTE), resolution)


def level_rays(resolution, fov):
    """World ray directions (H, W, 3) of a level camera, derived independently of render.py: camera x is world
    x, camera y (down) is world -z, camera z (forward) is world y; float64."""
    f = resolution / (2 * math.tan(math.radians(fov) / 2))
    c = (resolution - 1) / 2
    i, j = np.meshgrid(np.arange(resolution), np.arange(resolution), indexing="ij")
    return np.stack([(j - c) / f, np.ones_like(i, dtype=float), -(i - c) / f], -1), f


# ----------------------------------------------------------------------------------------------------------
# Camera conventions
# ----------------------------------------------------------------------------------------------------------

def test_positive_yaw_turns_right_and_positive_pitch_looks_down():
    def forward(**angles):  # the camera's optical axis (camera z) in world coordinates
        return render.camera_matrix({"yaw": 0.0, "pitch": 0.0, "roll": 0.0, **angles}) @ np.array([0.0, 0.0, 1.0])

    np.testing.assert_allclose(forward(), [0, 1, 0], atol=1e-12)  # level: into the room (+y)
    np.testing.assert_allclose(forward(yaw=90.0), [1, 0, 0], atol=1e-12)  # world right
    np.testing.assert_allclose(forward(pitch=90.0), [0, 0, -1], atol=1e-12)  # straight down
    # Roll turns the image about the optical axis only: the axis itself does not move.
    np.testing.assert_allclose(forward(roll=25.0), [0, 1, 0], atol=1e-12)


def test_project_puts_a_point_on_the_axis_at_the_image_centre_and_half_fov_at_the_edge():
    camera = {"position": (1.0, 2.0, 1.5), "yaw": 30.0, "pitch": 10.0, "roll": 5.0, "fov": 60.0}
    axis = render.camera_matrix(camera) @ np.array([0.0, 0.0, 1.0])
    x, y, z = render.project(camera, np.array(camera["position"]) + 3.0 * axis)
    np.testing.assert_allclose([x, y, z], [0.5, 0.5, 3.0], atol=1e-12)
    # A level camera: a point 30 deg (half the fov) to the right lies on the right edge of the image.
    level = dict(camera, yaw=0.0, pitch=0.0, roll=0.0)
    x, y, _ = render.project(level, (1.0 + math.tan(math.radians(30)), 3.0, 1.5))
    np.testing.assert_allclose([x, y], [1.0, 0.5], atol=1e-12)


# ----------------------------------------------------------------------------------------------------------
# Exact depth
# ----------------------------------------------------------------------------------------------------------

def test_depth_matches_closed_form_ray_sphere_and_fronto_parallel_wall():
    R, fov = 64, 60.0
    cam, centre, r = np.array([0.0, 1.0, 1.2]), np.array([0.4, 5.0, 1.4]), 0.9
    out = render_one(hand_spec([sphere(tuple(centre), r)], tuple(cam), fov=fov), R)
    d, _ = level_rays(R, fov)
    # |C + t d - S|^2 = r^2  ->  a t^2 + 2 b t + c = 0, nearer root; planar depth = (hit - C) . forward.
    oc = cam - centre
    a, b, c = (d * d).sum(-1), (d * oc).sum(-1), oc @ oc - r * r
    disc = b * b - a * c
    t = (-b - np.sqrt(np.maximum(disc, 0))) / a
    hit = disc > 0
    planar = ((t[..., None] * d) @ np.array([0.0, 1.0, 0.0]))
    ids, depth = out["ids"][0].numpy(), out["depth"][0].numpy().astype(float)
    assert (ids == 1).sum() > 200
    assert ((ids == 1) != hit).sum() <= 2, "sphere silhouette differs beyond silhouette rounding"
    both = hit & (ids == 1)
    np.testing.assert_allclose(depth[both], planar[both], rtol=1e-4)
    # The back wall y = 10 is parallel to the image plane: constant planar depth 10 - C_y (its ray length varies).
    t_wall = (10.0 - cam[1]) / d[..., 1]
    on_wall = (~hit) & (np.abs(cam[0] + t_wall * d[..., 0]) < 3.9) & (cam[2] + t_wall * d[..., 2] > 0.1) & \
              (cam[2] + t_wall * d[..., 2] < 3.9)
    assert on_wall.sum() > 500
    np.testing.assert_allclose(depth[on_wall], 10.0 - cam[1], rtol=1e-5)
    assert out["valid"][0][torch.from_numpy(on_wall)].all()


def test_box_face_and_cylinder_side_depths_match_closed_form():
    box = {"shape": "box", "colour": "blue", "center": (-1.5, 4.0, 0.6), "half": (0.5, 0.4, 0.6), "yaw": 0.0,
           "move": (0.0, 0.0, 0.0), "turn": 0.0}
    cyl = {"shape": "cylinder", "colour": "green", "center": (1.5, 4.0, 1.2), "half": (0.5, 0.5, 1.2), "yaw": 0.0,
           "move": (0.0, 0.0, 0.0), "turn": 0.0}
    out = render_one(hand_spec([box, cyl]), 64)
    d, _ = level_rays(64, 60.0)
    ids, depth = out["ids"][0].numpy(), out["depth"][0].numpy()
    # The box's front face y = 4 - 0.4 faces the camera (y = 1): planar depth 2.6 wherever it is seen head-on.
    t = 2.6 / d[..., 1]
    x, z = t * d[..., 0], 1.2 + t * d[..., 2]
    face = (np.abs(x + 1.5) < 0.45) & (np.abs(z - 0.6) < 0.55)
    assert face.sum() > 50 and (ids[face] == 1).all()
    np.testing.assert_allclose(depth[face], 2.6, rtol=1e-5)
    # The cylinder's side: the ray's ground track C_xy + t (dx, 1) meets the circle |xy - (1.5, 4)| = 0.5 where
    # (dx^2 + 1) t^2 - 2 (1.5 dx + 3) t + (1.5^2 + 3^2 - 0.5^2) = 0; planar depth is t (forward component 1).
    a, b, c = d[..., 0] ** 2 + 1, -(1.5 * d[..., 0] + 3.0), 1.5 ** 2 + 3.0 ** 2 - 0.25
    disc = b * b - a * c
    t_side = (-b - np.sqrt(np.maximum(disc, 0))) / a
    height = 1.2 + t_side * d[..., 2]
    expected_side = (disc > 0) & (height > 0.05) & (height < 2.35)
    assert (ids[expected_side] == 2).mean() > 0.97, "the cylinder's mask should cover its closed-form side"
    side = expected_side & (ids == 2)
    assert side.sum() > 100
    np.testing.assert_allclose(depth[side], t_side[side], rtol=1e-4)


# ----------------------------------------------------------------------------------------------------------
# Exact flow
# ----------------------------------------------------------------------------------------------------------

def test_flow_equals_f_t_over_z_for_a_camera_translation_parallel_to_the_image():
    tx, tz = 0.1, 0.05  # world right and up; in camera coordinates (x right, y down): (0.1, -0.05, 0)
    out = render_one(hand_spec([sphere((0.4, 4.0, 1.2), 0.8)], move_camera=(tx, 0.0, tz)), 64)
    _, f = level_rays(64, 60.0)
    z, ok = out["depth"][0].double(), out["flow_valid"][0]
    assert ok.sum() > 0.9 * out["valid"][0].sum(), "only borders and occlusions should be invalid"
    # A static point seen from a camera moved by t has camera coordinates X - t: flow = -f t / Z.
    expected = torch.stack([-f * tx / z, -f * (-tz) / z])
    torch.testing.assert_close(out["flow"][0].double()[:, ok], expected[:, ok], rtol=1e-4, atol=1e-4)


def test_flow_of_a_sliding_object_equals_f_m_over_z_and_the_room_stays_still():
    out = render_one(hand_spec([sphere((0.0, 4.0, 1.2), 0.8, move=(0.12, 0.0, 0.0))]), 64)
    _, f = level_rays(64, 60.0)
    z, ok, ids = out["depth"][0].double(), out["flow_valid"][0], out["ids"][0]
    on = ok & (ids == 1)
    assert on.sum() > 300
    torch.testing.assert_close(out["flow"][0, 0].double()[on], f * 0.12 / z[on], rtol=1e-4, atol=1e-4)
    assert out["flow"][0, 1][on].abs().max() < 1e-4
    room = ok & (ids == 0)
    assert out["flow"][0][:, room].abs().max() < 1e-4
    # The sphere slides right, over a strip of room that frame 2 no longer sees: occluded, hence not valid.
    assert (~ok & (ids == 0)).sum() > 10


# ----------------------------------------------------------------------------------------------------------
# Culling
# ----------------------------------------------------------------------------------------------------------

def test_culled_ray_casting_finds_exactly_the_hits_of_testing_every_ray_against_every_object():
    R = 32
    scene = render.pack([scene_spec(i) for i in range(6)], R, PALETTE)
    pos, rot, focal, center, yaw = scene["pos"], scene["rot"], scene["focal"], scene["center"], scene["yaw"]
    dirs = render.pixel_rays(rot, focal, R)  # (B, P, 3)
    B, S = scene["present"].shape
    every = scene["present"][..., None].expand(B, S, R * R)  # (B, S, P): no culling at all

    def dense_hits(origin, near):
        b, s, p, t, _, _ = render.hit_objects(origin, dirs, scene, center, yaw, near)
        out = torch.full((B, S, R * R), math.inf)
        out[b, s, p] = t
        return out

    camera = pos[:, None]  # (B, 1, 3)
    full = dense_hits(camera, every)
    assert (full < math.inf).sum() > 300, "the scenes should show their objects"
    culled = render.screen_boxes(scene, pos, rot, focal, center, R)
    assert culled.float().mean() < 0.5, "screen boxes should cull most candidate rays"
    assert torch.equal(dense_hits(camera, culled), full)
    # The same for rays that do not start at the camera (as the shadow rays do): sphere_cull.
    origins = camera + 0.5 * dirs  # (B, P, 3), half a unit along each ray
    assert torch.equal(dense_hits(origins, render.sphere_cull(origins, dirs, scene, center)),
                       dense_hits(origins, every))
