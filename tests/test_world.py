"""The synthetic world (minidp/world.py): determinism, ground truth over whole scenes, dataset statistics, bad input.

The closed-form checks of single rays (ray-sphere / box / cylinder depth, f t / z flow) are the renderer's and
live in tests/test_render.py; here the claims are about rendered scenes: sky pixels, frame-2 ids at the flow
target, visible masks inside amodal masks, expressions, and statistics (occlusion, labels, class cue, depth
prior) measured on a few thousand scenes at low resolution.

Run: python -m pytest -q tests/test_world.py      (about 10 s on a quiet 2-core CPU)
"""

import re

import numpy as np
import pytest
import torch

from minidp import render, world


# ----------------------------------------------------------------------------------------------------------
# Determinism and resolution independence
# ----------------------------------------------------------------------------------------------------------

def test_same_seed_and_index_give_identical_scenes_whatever_the_batch():
    a = world.render([3, 7], 32, seed=5)
    b = world.render([7], 32, seed=5)
    again = world.render([3, 7], 32, seed=5)
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, again[key]), key
            assert torch.equal(value[1], b[key][0]), f"{key}: a scene must not depend on its batch neighbours"
    assert a["expressions"] == again["expressions"] and a["expressions"][1] == b["expressions"][0]


def test_without_the_second_frame_every_other_key_is_the_same_and_a_cache_skips_it_only_when_unread():
    from minidp import config, data, tasks
    full, first = world.render([2, 9], 32, seed=4), world.render([2, 9], 32, seed=4, second_frame=False)
    assert set(full) - set(first) == set(render.SECOND_FRAME_KEYS) and set(first) < set(full)
    for key, value in first.items():
        assert torch.equal(value, full[key]) if isinstance(value, torch.Tensor) else value == full[key], key
    for name in ("depth", "flow"):  # the training cache: depth reads no second-frame key, flow does
        cfg = config.load_config(f"configs/{name}.yaml", ["data.train_size=4"])
        cache = data.render_cache(cfg.data, 4, run=tasks.run_tasks(cfg))
        rendered = world.render(range(4), 32, seed=cfg.data.seed)
        assert set(cache) == set(tasks.get(name).scene_keys)
        assert all(torch.equal(cache[k], rendered[k]) for k in cache)


def test_different_index_or_seed_gives_a_different_scene():
    a = world.render([0, 1], 32)
    c = world.render([0], 32, seed=1)
    assert not torch.allclose(a["rgb"][0], a["rgb"][1])
    assert not torch.allclose(a["depth"][0], c["depth"][0])


def test_geometry_does_not_depend_on_resolution():
    # Pixel centres of a 16-px image are exactly the centres of pixels 1, 4, 7, ... of a 48-px image.
    lo, hi = world.render(range(6), 16), world.render(range(6), 48)
    assert lo["objects"] == hi["objects"] and lo["expressions"] == hi["expressions"]
    sub = (slice(None), slice(1, None, 3), slice(1, None, 3))
    assert (lo["ids"] == hi["ids"][sub]).float().mean() > 0.995
    same = lo["ids"] == hi["ids"][sub]
    torch.testing.assert_close(lo["depth"][same], hi["depth"][sub][same], rtol=1e-4, atol=1e-5)


def test_valid_is_false_exactly_on_sky_pixels_which_have_zero_depth_and_no_object():
    out = world.render(range(32), 32)
    sky = ~out["valid"]
    assert sky.any(), "some scenes should see the open top of the room"
    assert (out["depth"][sky] == 0).all() and (out["depth"][~sky] > 0).all()
    assert (out["ids"][sky] == 0).all() and not out["flow_valid"][sky].any()


def test_flow_lands_on_the_same_object_in_frame_2():
    out = world.render(range(24), 64)
    B, R = out["ids"].shape[0], 64
    ys, xs = torch.meshgrid(torch.arange(R), torch.arange(R), indexing="ij")
    x2 = (xs + out["flow"][:, 0]).round().long().clamp(0, R - 1)
    y2 = (ys + out["flow"][:, 1]).round().long().clamp(0, R - 1)
    ids2 = out["ids2"][torch.arange(B)[:, None, None], y2, x2]
    ok = out["flow_valid"]
    assert ok.float().mean() > 0.7
    agree = (ids2 == out["ids"])[ok].float().mean()
    assert agree >= 0.95, f"only {agree:.3f} of flow-valid pixels land on the same id in frame 2"
    # Flow is not trivially zero: cameras and objects move by a few pixels at 64 px.
    assert 0.3 < out["flow"].norm(dim=1)[ok].median() < 10


# ----------------------------------------------------------------------------------------------------------
# Amodal, alone, referring
# ----------------------------------------------------------------------------------------------------------

def test_visible_masks_are_inside_amodal_masks_and_alone_images_show_exactly_the_amodal_mask():
    out = world.render(range(32), 32)
    vis, amodal = out["ref_masks"], out["amodal"]
    assert not (vis & ~amodal).any()
    for k in range(render.MAX_OBJECTS):
        assert torch.equal(vis[:, k], out["ids"] == k + 1)
    empty = torch.arange(render.MAX_OBJECTS)[None] >= out["num_objects"][:, None]  # (B, S) absent slots
    assert not amodal[empty].any()
    # pix2gestalt reads the whole object back from the "alone" image as the non-white pixels.
    assert torch.equal((out["alone"] < 1).any(2), amodal)


def test_partial_occlusion_is_common_and_full_occlusion_rare():
    out = world.render(range(1000), 32)
    present = torch.arange(render.MAX_OBJECTS)[None] < out["num_objects"][:, None]
    visible = out["ref_masks"].sum((2, 3)).float()[present]
    whole = out["amodal"].sum((2, 3)).float()[present]
    fraction = visible / whole.clamp_min(1)
    partial = ((fraction > 0.1) & (fraction < 0.9)).float().mean()
    assert partial >= 0.30, f"only {partial:.3f} of objects are partly occluded"
    assert (fraction <= 0.1).float().mean() < 0.06


EXPRESSION = re.compile(r"^the (?:(left|right|front|back|big|small) )?(\w+) (\w+)$")
PICK = {"left": ("image_x", min), "right": ("image_x", max), "front": ("depth", min), "back": ("depth", max),
        "small": ("size", min), "big": ("size", max)}


def referents(expression, objects):
    """Indices of the objects an expression can mean, by parsing it against the objects' attributes."""
    word, colour, shape = EXPRESSION.match(expression).groups()
    matches = [k for k, o in enumerate(objects) if (o["colour"], o["shape"]) == (colour, shape)]
    if word is None:
        return matches
    key, extreme = PICK[word]
    best = extreme(objects[k][key] for k in matches)
    return [k for k in matches if objects[k][key] == best]


def test_every_expression_names_exactly_one_object_its_own():
    out = world.render(range(48), 16)
    scenes = [(out["objects"][b], out["expressions"][b]) for b in range(48)]
    for i in range(48, 600):  # the cheap path: the same attributes and expressions without rendering
        spec = world.scene_spec(i)
        objects = world.describe(spec)
        scenes.append((objects, world.expressions(objects)))
    used = set()
    for objects, expressions in scenes:
        assert len(expressions) == len(objects)
        for k, expression in enumerate(expressions):
            assert EXPRESSION.match(expression), expression
            assert referents(expression, objects) == [k], (expression, objects)
            word = EXPRESSION.match(expression).group(1)
            used.add(word)
            twins = referents(expression.replace(f"{word} ", ""), objects) if word else [k]
            assert (len(twins) > 1) == (word is not None), "a word only where colour + shape is ambiguous"
    assert {"left", "right", "front", "back", "big", "small"} <= used, f"words seen: {used}"


def test_ref_masks_are_the_visible_mask_of_the_referred_object():
    out = world.render(range(8), 32)
    for b in range(8):
        for k in range(int(out["num_objects"][b])):
            assert torch.equal(out["ref_masks"][b, k], out["ids"][b] == k + 1)


# ----------------------------------------------------------------------------------------------------------
# Class labels: balanced, carried by the hero's colour, visible to a nearest-class-mean classifier
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("num_classes", [10, 3, 20])
def test_labels_are_balanced_and_set_the_hero_colour(num_classes):
    n = 5000 if num_classes == 10 else 1000
    specs = [world.scene_spec(i, num_classes=num_classes) for i in range(n)]
    counts = np.bincount([s["label"] for s in specs], minlength=num_classes)
    assert len(counts) == num_classes
    assert counts.min() > 0.5 * n / num_classes and counts.max() < 2 * n / num_classes
    for s in specs[:300]:
        hero = s["objects"][0]
        assert hero["colour"] == world.COLOURS[s["label"] % world.NUM_CLASS_COLOURS]
        if num_classes > world.NUM_CLASS_COLOURS:
            assert hero["shape"] == render.SHAPES[s["label"] // world.NUM_CLASS_COLOURS]
        sizes = [o["size"] for o in world.describe(s)]
        assert all(size <= 0.8 * sizes[0] + 1e-9 for size in sizes[1:]), "the hero must be the largest object"


def test_class_is_recoverable_by_nearest_class_mean_on_pixels():
    out = world.render(range(1200), 32)
    x, y = out["rgb"].flatten(1), out["label"]
    train, test = slice(0, 800), slice(800, None)
    means = torch.stack([x[train][y[train] == k].mean(0) for k in range(10)])
    accuracy = (torch.cdist(x[test], means).argmin(1) == y[test]).float().mean()
    assert accuracy >= 0.7, f"nearest-class-mean accuracy {accuracy:.3f}"


def test_mean_depth_map_is_a_weak_prior_of_one_scene():
    # The depth fine-tuning must beat the training-set mean depth map, least-squares aligned per image, by 2x
    # in AbsRel: that is only possible if the mean map is a poor predictor of any one scene.
    out = world.render(range(600), 32)
    depth, valid = out["depth"].double(), out["valid"]
    train, test = slice(0, 400), slice(400, None)
    mean = (depth[train] * valid[train]).sum(0) / valid[train].sum(0).clamp_min(1)
    errors = []
    for d, v in zip(depth[test], valid[test]):
        A = torch.stack([mean[v], torch.ones_like(mean[v])], 1)
        scale_shift = torch.linalg.lstsq(A, d[v][:, None]).solution
        errors.append(((A @ scale_shift).squeeze(1) - d[v]).abs().div(d[v]).mean())
    absrel = torch.stack(errors).mean()
    assert absrel > 0.15, f"the mean depth map is too good a prior (AbsRel {absrel:.3f})"


# ----------------------------------------------------------------------------------------------------------
# API: dataset, collate, bad input
# ----------------------------------------------------------------------------------------------------------

def test_world_dataset_items_match_render_and_collate_for_a_dataloader():
    data = world.World(5, resolution=16, seed=2)
    assert len(data) == 5
    item = data[3]
    batch = world.render([3], 16, seed=2)
    assert item["rgb"].shape == (3, 16, 16) and item["label"].shape == () and isinstance(item["expressions"], list)
    assert torch.equal(item["depth"], batch["depth"][0])
    loader = torch.utils.data.DataLoader(data, batch_size=2, collate_fn=world.collate)
    first = next(iter(loader))
    assert first["amodal"].shape == (2, render.MAX_OBJECTS, 16, 16) and len(first["expressions"]) == 2
    with pytest.raises(IndexError):
        data[5]


@pytest.mark.parametrize("call, name", [
    (lambda: world.render([0], resolution=8), "resolution"),
    (lambda: world.render([0], resolution=300), "resolution"),
    (lambda: world.render([0], resolution=32.0), "resolution"),
    (lambda: world.render([0, -1], 32), "indices"),
    (lambda: world.render(torch.tensor([0.5]), 32), "indices"),
    (lambda: world.render([0], 32, num_classes=0), "num_classes"),
    (lambda: world.World(4, resolution=512), "resolution"),
    (lambda: world.World(4, num_classes=0), "num_classes"),
    (lambda: world.World(4)[-1], "indices"),
    (lambda: world.scene_spec(-2), "indices"),
    (lambda: world.render(5, 32), "indices"),
    (lambda: world.render([], 32), "indices"),
    (lambda: world.render([0], 32, seed=1.5), "seed"),
])
def test_bad_input_raises_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_render_returns_every_documented_key_with_its_shape_and_dtype():
    B, R, S = 2, 16, render.MAX_OBJECTS
    out = world.render(range(B), R)
    shapes = {"rgb": (B, 3, R, R), "rgb2": (B, 3, R, R), "depth": (B, R, R), "valid": (B, R, R), "ids": (B, R, R),
              "ids2": (B, R, R), "amodal": (B, S, R, R), "alone": (B, S, 3, R, R), "flow": (B, 2, R, R),
              "flow_valid": (B, R, R), "ref_masks": (B, S, R, R), "label": (B,), "num_objects": (B,), "focal": (B,)}
    for key, shape in shapes.items():
        assert out[key].shape == shape, key
    assert out["rgb"].dtype == torch.float32 and out["ids"].dtype == torch.long and out["valid"].dtype == torch.bool
    assert out["rgb"].min() >= -1 and out["rgb"].max() <= 1 and out["alone"].max() == 1
    assert len(out["expressions"]) == B and len(out["objects"]) == B
    assert all(len(e) == int(n) for e, n in zip(out["expressions"], out["num_objects"]))
