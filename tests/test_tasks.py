"""Task encodings and read-backs against independent references: Marigold's depth normalisation, the flow
encoding, pix2gestalt's amodal read-back, ADDP's red read-back, the tokenizer, and the batch format.

Run: pytest -q tests/test_tasks.py
"""

import pytest
import torch

from minidp import config, data, metrics, render, tasks, world
from minidp.tasks import normals as normals_task
from minidp.config import DataConfig


def test_depth_encoding_maps_quantiles_to_minus_one_and_one():
    # 101 depths 0..100 along a row: the 2 % / 98 % quantiles are exactly 2 and 98 (linear interpolation),
    # so d' = (d - 2) / 96 * 2 - 1: d = 2 -> -1, d = 50 -> 0, d = 98 -> 1, beyond them clipped.
    depth = torch.arange(101.0).view(1, 1, 101)
    valid = torch.ones_like(depth, dtype=torch.bool)
    enc = tasks.encode_depth(depth, valid)
    assert enc.shape == (1, 3, 1, 101)
    assert torch.equal(enc[:, 0], enc[:, 1]) and torch.equal(enc[:, 0], enc[:, 2])  # replicated channels
    row = enc[0, 0, 0]
    assert row[2].item() == pytest.approx(-1) and row[50].item() == pytest.approx(0) and row[98].item() == pytest.approx(1)
    assert row[0].item() == -1 and row[100].item() == 1  # clipped
    assert row[26].item() == pytest.approx((26 - 2) / 96 * 2 - 1)


def test_depth_encoding_ignores_invalid_pixels():
    depth = torch.arange(101.0).view(1, 1, 101).clone()
    valid = torch.ones_like(depth, dtype=torch.bool)
    depth2, valid2 = depth.clone(), valid.clone()
    depth2[..., 50] = 1e6  # a huge invalid value must not move near / far
    valid2[..., 50] = False
    a, b = tasks.encode_depth(depth, valid), tasks.encode_depth(depth2, valid2)
    keep = valid2[0, 0]
    # quantiles are over 100 valid values now, so allow the small shift that removing one pixel makes
    assert torch.allclose(a[0, 0, 0, keep], b[0, 0, 0, keep], atol=0.03)
    assert b[0, 0, 0, 50].item() == 0.0


def test_decode_inverts_encode_up_to_an_affine_map():
    torch.manual_seed(0)
    depth = torch.rand(2, 8, 8) * 5 + 1
    valid = torch.ones_like(depth, dtype=torch.bool)
    dec = tasks.decode_depth(tasks.encode_depth(depth, valid))  # in [0, 1]
    assert dec.min() >= 0 and dec.max() <= 1
    # inside the quantile range decode(encode(d)) = (d - near) / (far - near): exactly affine in d
    for i in range(2):
        d, e = depth[i].flatten(), dec[i].flatten()
        inside = (e > 0) & (e < 1)
        A = torch.stack([d[inside], torch.ones_like(d[inside])], 1)
        sol = torch.linalg.lstsq(A, e[inside][:, None]).solution
        assert torch.allclose(A @ sol, e[inside][:, None], atol=1e-5)


def test_unknown_task_is_named():
    with pytest.raises(ValueError, match="unknown task 'stereo'"):
        tasks.get("stereo")


@pytest.mark.parametrize("task, n_cond", [("class", 0), ("depth", 1)])
def test_batch_format(task, n_cond):
    cfg = DataConfig(task=task, resolution=16)
    b = data.make_batch(cfg, [0, 1, 2])
    assert len(b["cond"]) == n_cond and b["target"].shape == (3, 3, 16, 16)
    assert b["target"].min() >= -1 and b["target"].max() <= 1
    assert b["mask"].shape == (3, 16, 16)
    # the batch is a pure function of the indices: the same indices render the same scenes
    assert torch.equal(data.make_batch(cfg, [1])["target"][0], b["target"][1])


# ----------------------------------------------------------------------------------------------------------
# Optical flow
# ----------------------------------------------------------------------------------------------------------

def test_flow_encoding_round_trips_within_float_precision_in_range_and_clips_beyond():
    R = 32
    s = tasks.FLOW_SCALE * R  # 4.8 px at 32 px
    flow = torch.linspace(-s, s, 2 * R * R).view(1, 2, R, R)
    enc = tasks.encode_flow(flow)
    assert enc.shape == (1, 3, R, R) and torch.all(enc[:, 2] == 0)
    assert enc[0, 0, 0, 0].item() == pytest.approx(-1) and enc[0, 1, -1, -1].item() == pytest.approx(1)
    assert torch.allclose(tasks.decode_flow(enc), flow, atol=1e-5)
    # out of range: clipped to the largest encodable value, sign kept
    far = torch.tensor([3 * s, -10 * s]).view(1, 2, 1, 1).expand(1, 2, R, R)
    assert torch.allclose(tasks.decode_flow(tasks.encode_flow(far))[0, :, 0, 0], torch.tensor([s, -s]))


def test_flow_scale_covers_the_worlds_flow():
    scenes = world.render(range(64), resolution=32)
    ok = scenes["flow_valid"][:, None].expand(-1, 2, -1, -1)
    inside = (scenes["flow"].abs() <= tasks.FLOW_SCALE * 32)[ok].float().mean().item()
    assert inside > 0.99  # clipping touches under 1 % of the valid flow components


# ----------------------------------------------------------------------------------------------------------
# Amodal completion (pix2gestalt) and referring segmentation (ADDP)
# ----------------------------------------------------------------------------------------------------------

def test_amodal_read_back_of_the_worlds_whole_object_recovers_its_amodal_mask():
    scenes = world.render(range(32), resolution=32)
    n = scenes["num_objects"]
    slots = torch.arange(render.MAX_OBJECTS)[None] < n[:, None]  # (B, S) real objects
    pred = tasks.amodal_mask(scenes["alone"][slots])  # (objects, H, W)
    gt = scenes["amodal"][slots]
    assert metrics.oiou(pred, gt) >= 0.99 and metrics.miou(pred, gt) >= 0.99


def test_red_read_back_of_a_ground_truth_target_recovers_the_referring_mask_exactly():
    scenes = data.render_scenes(DataConfig(task="referring", resolution=32), range(64))
    for k in range(render.MAX_OBJECTS):
        target = tasks.paint_red(scenes["rgb"], scenes["ref_masks"][:, k])
        assert torch.equal(tasks.red_mask(target), scenes["ref_masks"][:, k])


def test_red_read_back_threshold_by_hand():
    # (255, 0, 0) - (215, 30, 0) has length 50 exactly: outside (strict); (220, 30, 0) is inside.
    to_unit = lambda rgb: torch.tensor(rgb, dtype=torch.float64).view(1, 3, 1, 1) / 127.5 - 1  # noqa: E731
    assert not tasks.red_mask(to_unit([215.0, 30.0, 0.0])).item()
    assert tasks.red_mask(to_unit([220.0, 30.0, 0.0])).item()


def test_pick_objects_chooses_visible_objects_and_prefers_occluded_ones():
    visible = torch.zeros(1, 4, 2, 2, dtype=torch.bool)
    amodal = torch.zeros(1, 4, 2, 2, dtype=torch.bool)
    visible[0, 0, 0, 0] = amodal[0, 0, 0, 0] = True  # slot 0: fully visible
    amodal[0, 1] = True                               # slot 1: hidden entirely
    visible[0, 2, 0, 0] = True
    amodal[0, 2, 0] = True                            # slot 2: partly occluded
    n = torch.tensor([3])
    picks = [tasks.pick_objects(visible, amodal, n, torch.tensor([p]), True).item() for p in range(4)]
    assert picks == [2, 2, 2, 2]
    picks = [tasks.pick_objects(visible, None, n, torch.tensor([p]), False).item() for p in range(4)]
    assert picks == [0, 2, 0, 2]  # the two visible objects, in turn; never the hidden one


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("task", ["amodal", "referring"])
def test_mask_samples_of_scenes_held_on_a_gpu_equal_the_cpu_ones(task):
    # training keeps the rendered world on the GPU; the object pick once met CPU tensors there and raised
    cfg = DataConfig(task=task, resolution=16)
    scenes = data.render_scenes(cfg, range(6))
    pick = torch.tensor([0, 5, 11, 2, 7, 3])  # on the CPU, as the batch plan gives it
    cpu = tasks.get(task).make_sample(scenes, pick, "cpu", cfg)
    gpu = tasks.get(task).make_sample({k: v.cuda() if torch.is_tensor(v) else v for k, v in scenes.items()}, pick,
                                      "cuda", cfg)
    assert set(gpu) == set(cpu)
    for key in cpu:
        for a, b in zip(*((x if isinstance(x, list) else [x]) for x in (gpu[key], cpu[key]))):
            assert a.device.type == "cuda" and torch.equal(a.cpu(), b), key


# ----------------------------------------------------------------------------------------------------------
# Text
# ----------------------------------------------------------------------------------------------------------

def test_tokenizer_round_trips_every_world_expression():
    scenes = world.render(range(64), resolution=16)
    expressions = [e for per_scene in scenes["expressions"] for e in per_scene]
    assert any(len(e.split()) == 4 for e in expressions)  # a contrast word is covered
    tokens = tasks.tokenize(expressions)
    assert tokens.shape == (len(expressions), tasks.MAX_TOKENS)
    assert tasks.detokenize(tokens) == expressions


def test_tokenizer_names_an_unknown_word():
    with pytest.raises(ValueError, match="'teal'"):
        tasks.tokenize(["the teal sphere"])


@pytest.mark.parametrize("task, n_cond", [("flow", 2), ("amodal", 2), ("referring", 1)])
def test_new_task_batches(task, n_cond):
    cfg = DataConfig(task=task, resolution=16)
    b = data.make_batch(cfg, [0, 1, 2])
    assert len(b["cond"]) == n_cond and b["target"].shape == (3, 3, 16, 16)
    top = cfg.amodal_white if task == "amodal" else 1  # amodal's background sits beyond white on purpose
    assert b["target"].min() >= -1 and b["target"].max() <= top
    if task == "referring":
        assert b["tokens"].shape == (3, tasks.MAX_TOKENS) and tasks.red_mask(b["target"]).equal(b["gt_mask"])
    if task == "amodal":
        assert tasks.amodal_mask(b["target"]).equal(b["gt_mask"]) and (b["prior_mask"] <= b["gt_mask"]).all()


@pytest.mark.parametrize("white", [1.0, 1.1, 2.0])
def test_the_amodal_background_is_data_amodal_white_and_reads_back_as_not_object(white):
    # the amodal recipe's rungs (tutorial 06): background at white, 1.1 and 1.5 (the default) beyond it
    cfg = DataConfig(task="amodal", resolution=16, amodal_white=white)
    b = data.make_batch(cfg, [0, 1, 2, 3])
    outside = ~b["gt_mask"][:, None].expand_as(b["target"])
    assert outside.any() and (b["target"][outside] == white).all()
    assert b["target"][~outside].max() <= 1  # the object itself is an image
    assert tasks.amodal_mask(b["target"]).equal(b["gt_mask"])
    assert (tasks.get("amodal").augment_background(b["cond"][0], cfg) == white).all()  # ADDP's augmentation paints it


def test_an_amodal_background_below_white_is_refused():
    with pytest.raises(config.ConfigError, match=r"data.amodal_white.*\[1.0, 10.0\]"):
        config.load_config(None, ["data.task=amodal", "data.amodal_white=0.9"])


def test_a_dataset_that_cannot_provide_the_task_is_named():
    with pytest.raises(ValueError, match="'flyingchairs' cannot provide task 'depth'"):
        tasks.check_dataset_task("flyingchairs", "depth")


def test_every_real_dataset_of_the_task_table_has_a_reader():
    from minidp import readers

    assert set(tasks.DATASETS) - {"world"} == set(readers.DATASETS)
    assert {d for task in tasks.TASKS.values() for d in task.datasets} == set(tasks.DATASETS)


# ----------------------------------------------------------------------------------------------------------
# Surface normals (the fifth perception task)
# ----------------------------------------------------------------------------------------------------------

def finite_difference_normals(depth, focal):
    """Unit normals (3, R, R) of the surface a planar depth map (R, R) sees, from central differences of the
    back-projected points P = z ((j - c) / f, (i - c) / f, 1), turned to face the camera; NaN at the border."""
    R = depth.shape[-1]
    c = (R - 1) / 2
    i, j = torch.meshgrid(torch.arange(R, dtype=torch.float64), torch.arange(R, dtype=torch.float64), indexing="ij")
    z = depth.double()
    P = torch.stack([z * (j - c) / focal, z * (i - c) / focal, z])  # (3, R, R)
    full = torch.full_like(P, float("nan"))
    dx, dy = full.clone(), full.clone()
    dx[:, :, 1:-1] = P[:, :, 2:] - P[:, :, :-2]  # along a row
    dy[:, 1:-1, :] = P[:, 2:, :] - P[:, :-2, :]  # along a column
    n = torch.nn.functional.normalize(torch.linalg.cross(dx, dy, dim=0), dim=0)
    return torch.where((n * P).sum(0, keepdim=True) > 0, -n, n)  # facing the camera


def test_renderer_normals_equal_finite_differences_of_its_depth_on_planes_and_spheres():
    R = 96
    spec = world.scene_spec(3, 0, 10)  # a sphere, a box, a sphere and a cylinder in a room
    scene = world.render_specs([spec], R)
    normals, depth, ids, valid = scene["normals"][0], scene["depth"][0], scene["ids"][0], scene["valid"][0]
    fd = finite_difference_normals(depth, scene["focal"][0].item())
    rendered = normals.double()
    unit_error = (rendered.norm(dim=0) - 1).abs()
    assert unit_error[valid].max() < 1e-5 and (rendered[:, ~valid] == 0).all()
    # a pixel counts when its 3x3 neighbourhood lies on one surface: the same object (or the room) with the
    # same normal (no wall corner, no silhouette)
    same = torch.ones(R, R, dtype=torch.bool)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            shifted_ids = torch.roll(ids, (di, dj), (0, 1))
            same &= (shifted_ids == ids) & torch.roll(valid, (di, dj), (0, 1))
            if di or dj:
                same &= (ids > 0) | ((torch.roll(normals, (di, dj), (1, 2)) - normals).abs().amax(0) < 1e-6)
    same[[0, -1]] = False
    same[:, [0, -1]] = False
    angle = normals_task.angular_error(fd[None].float(), rendered[None].float())[0]
    planes = same & (ids == 0)
    spheres = same & torch.isin(ids, torch.tensor([k + 1 for k, o in enumerate(spec["objects"]) if o["shape"] == "sphere"]))
    assert planes.sum() > 500 and spheres.sum() > 50  # enough pixels that the test can fail
    assert angle[planes].max() < 0.1  # a plane's central difference is exact up to float32 depth
    assert angle[spheres].median() < 2.0 and angle[spheres].max() < 8.0  # a chord of a curved surface: O(pixel)


def test_normals_read_back_of_ground_truth_is_exact_and_scores_perfectly():
    cfg = DataConfig(task="normals", resolution=32)
    b = data.make_batch(cfg, [0, 1, 2])
    task = tasks.get("normals")
    assert b["target"].min() >= -1 and b["target"].max() <= 1 and torch.equal(b["mask"], b["valid"])
    pred = task.merge(b["target"][None], None)  # one member: the read-back of the true target
    assert normals_task.angular_error(pred, b["normals"])[b["valid"]].max() < 0.01  # degrees
    scores = task.scores(pred, b, prior=None)
    assert scores["angle_mean"].max() < 0.01 and (scores["within_11_25"] == 1).all()
    flipped = task.scores(-pred, b, prior=None)  # the opposite direction: 180 degrees everywhere
    assert torch.allclose(flipped["angle_median"], torch.full((3,), 180.0)) and (flipped["within_30"] == 0).all()


def test_normal_members_merge_by_their_normalised_mean():
    task = tasks.get("normals")
    n = torch.nn.functional.normalize(torch.tensor([1.0, 2.0, -2.0]), dim=0)[:, None, None].expand(3, 2, 2)
    tilt = torch.tensor([0.3, 0.0, 0.0])[:, None, None]
    members = torch.stack([n + tilt, n - tilt, 3 * n])[:, None]  # (M=3, b=1, 3, 2, 2): symmetric tilts, a long copy
    assert torch.allclose(task.merge(members, None)[0], n, atol=1e-6)
