"""The training-scene cache and batches: a cached batch equals a freshly rendered one, the cache keeps only what
the task reads, and the object a referring sample asks about follows `pick`. Real datasets: indices map to the
readers' splits, the DataLoader's sampler gives each rank train.py's slice of the batch plan, masks follow latents.

Run: pytest -q tests/test_data.py
"""

import dataclasses

import numpy as np
import pytest
import torch
from test_readers import write_png

from minidp import data, readers, recipe, tasks, vae
from minidp.config import DataConfig, load_config


@pytest.mark.parametrize("task", ["depth", "flow", "amodal", "referring"])
def test_a_cached_batch_equals_a_rendered_one_and_the_cache_keeps_only_the_tasks_keys(task):
    cfg = DataConfig(task=task, resolution=16)
    cache = data.render_cache(cfg, 6, chunk=4)
    assert set(cache) == set(tasks.get(task).scene_keys)
    cached, rendered = data.make_batch(cfg, [5, 1], cache=cache), data.make_batch(cfg, [5, 1])
    for key in ("target", "mask"):
        assert torch.equal(cached[key], rendered[key]), key
    assert all(torch.equal(a, b) for a, b in zip(cached["cond"], rendered["cond"]))


def test_pick_chooses_the_referred_object_and_defaults_to_the_scene_index():
    cfg = DataConfig(task="referring", resolution=16)
    scenes = data.render_scenes(cfg, [3])
    n_visible = int((scenes["ref_masks"][0].flatten(1).sum(1) > 0).sum())
    assert n_visible >= 2  # scene 3 has two objects to tell apart, or the test proves nothing
    masks = [data.make_batch(cfg, [3], pick=torch.tensor([p]))["gt_mask"] for p in range(n_visible)]
    assert not torch.equal(masks[0], masks[1])
    assert torch.equal(data.make_batch(cfg, [3])["gt_mask"], masks[3 % n_visible])


# ----------------------------------------------------------------------------------------------------------
# Real datasets in the world's index space, the DataLoader's batches, latents
# ----------------------------------------------------------------------------------------------------------

def hypersim_tree(root, n_train, n_val=2, height=20, width=24, seed=0):
    """A tiny Hypersim in Marigold's PNG layout: n_train / n_val frames of random RGB and depth (0 mm = invalid)."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for k in range(n):
            scene = root / split / f"ai_00{k % 2}_001"
            write_png(scene / f"rgb_cam_00_fr{k:04d}.png", rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
            mm = rng.integers(500, 9000, (height, width)).astype(np.uint16)
            mm[: height // 4] = 0  # a band of invalid depth, so masks matter
            write_png(scene / f"depth_plane_cam_00_fr{k:04d}.png", mm)
    return root


def test_step_indices_are_the_batch_plans_indices():
    cfg = load_config(None, ["train.global_batch=8", "data.train_size=50", "train.seed=3"])
    for step in (0, 1, 17):
        plan = recipe.batch_plan(cfg, step, (3, 4, 4), class_dropout=True, text=True)
        assert torch.equal(recipe.step_indices(cfg, step), plan["indices"])


@pytest.mark.parametrize("world_size, accum", [(1, 1), (2, 1), (2, 2), (4, 1)])
def test_step_batches_give_each_rank_train_py_slices_and_together_the_global_batch(world_size, accum):
    cfg = load_config(None, ["train.global_batch=8", "data.train_size=50", "train.steps=4"])
    micro = 8 // (world_size * accum)
    per_rank = [list(data.StepBatches(cfg, 1, r, accum, micro)) for r in range(world_size)]
    for r in range(world_size):
        assert len(per_rank[r]) == len(data.StepBatches(cfg, 1, r, accum, micro)) == 3 * accum  # steps 1, 2, 3
    for s, step in enumerate(range(1, 4)):
        plan = recipe.step_indices(cfg, step).tolist()
        for r in range(world_size):
            for m in range(accum):  # train.py's slice for rank r, micro-step m
                sl = slice((r * accum + m) * micro, (r * accum + m + 1) * micro)
                assert per_rank[r][s * accum + m] == plan[sl]
        assert sum((per_rank[r][s * accum + m] for r in range(world_size) for m in range(accum)), []) == plan


def test_latent_mask_keeps_a_latent_pixel_only_when_all_its_pixels_are_valid():
    mask = torch.ones(1, 4, 4, dtype=torch.bool)
    mask[0, 0, 0] = False  # one invalid pixel in the top-left 2 x 2 block
    mask[0, 2:, 2:] = False  # the whole bottom-right block
    assert data.latent_mask(mask, 2).tolist() == [[[False, True], [True, False]]]
    assert data.latent_mask(mask, 1) is mask


def test_a_real_dataset_maps_training_and_validation_indices_to_its_splits(tmp_path):
    hypersim_tree(tmp_path, n_train=5, n_val=2)
    cfg = load_config(None, ["data.dataset=hypersim", f"data.root={tmp_path}", "data.task=depth",
                             "train.mode=finetune", "data.resolution=16", "data.train_size=4", "data.val_size=2",
                             "sample.num_images=2"])
    train, val = readers.Hypersim(tmp_path, "train", 16), readers.Hypersim(tmp_path, "val", 16)
    scenes = data.render_scenes(cfg.data, [3, cfg.data.val_offset + 1])
    assert set(scenes) == set(tasks.get("depth").scene_keys) | {"index"}
    assert torch.equal(scenes["depth"][0], train[3]["depth"]) and torch.equal(scenes["rgb"][1], val[1]["rgb"])
    assert scenes["label"].tolist() == [0, 0]
    batch = data.make_batch(cfg.data, [3])
    assert torch.equal(batch["target"], tasks.encode_depth(train[3]["depth"][None], train[3]["valid"][None]))
    with pytest.raises(readers.DatasetError, match=r"5 training samples, fewer than data.train_size = 9; set "):
        data.real_scenes(dataclasses.replace(cfg.data, train_size=9))


def test_hypersim_training_frames_come_from_data_split_file(tmp_path):
    for split in ("train", "val"):
        for k in range(3):
            write_png(tmp_path / split / "ai_001_001" / f"rgb_cam_00_fr{k:04d}.png",
                      np.full((4, 4, 3), 10 * k, np.uint8))
            write_png(tmp_path / split / "ai_001_001" / f"depth_plane_cam_00_fr{k:04d}.png",
                      np.full((4, 4), 1000 + k, np.uint16))
    listed = tmp_path / "lists" / "train_filtered.txt"  # Marigold's filtered list, kept outside data.root
    listed.parent.mkdir()
    listed.write_text("ai_001_001/rgb_cam_00_fr0002.png ai_001_001/depth_plane_cam_00_fr0002.png")
    cfg = load_config(None, ["data.dataset=hypersim", "data.task=depth", "train.mode=finetune", f"data.root={tmp_path}",
                             "data.resolution=16", "data.train_size=1", "data.val_size=3", "sample.num_images=3",
                             f"data.split_file={listed}"])
    scenes = data.render_scenes(cfg.data, [0, cfg.data.val_offset + 2])
    assert scenes["depth"][:, 0, 0].tolist() == pytest.approx([1.002, 1.002])  # training frame 0 is the list's fr0002
    with pytest.raises(readers.DatasetError, match=r"1 training samples, fewer than data.train_size = 2"):
        data.real_scenes(dataclasses.replace(cfg.data, train_size=2))
    assert data.cache_identity(cfg.data)["split_file"] == str(listed)


def test_imagenet_reads_train_and_val_class_folders(tmp_path):
    for split, n in (("train", 3), ("val", 2)):
        for k in range(n):
            write_png(tmp_path / split / f"n0{k % 2}" / f"{k}.png", np.full((4, 4, 3), 40 * k + n, np.uint8))
    cfg = load_config(None, ["data.dataset=imagenet", f"data.root={tmp_path}", "data.resolution=16",
                             "data.train_size=3", "data.val_size=2", "data.num_classes=2"])
    scenes = data.render_scenes(cfg.data, [1, cfg.data.val_offset + 1])
    assert scenes["label"].tolist() == [0, 1]  # train: 0.png, 2.png (n00), 1.png (n01); val: 0.png, 1.png
    assert scenes["rgb"][:, 0, 0, 0].tolist() == pytest.approx([(80 + 3) / 127.5 - 1, (40 + 2) / 127.5 - 1])
    with pytest.raises(readers.DatasetError, match=r"2 class folders, more than data.num_classes = 1"):
        data.real_scenes(dataclasses.replace(cfg.data, num_classes=1))


def test_pix2gestalt_holds_out_the_official_last_percent_and_fills_the_worlds_slot_keys(tmp_path):
    rng = np.random.default_rng(0)
    for k in range(4):
        for folder in ("occlusion", "visible_object_mask", "whole", "whole_mask"):
            write_png(tmp_path / folder / f"{k}.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    cfg = load_config(None, ["data.dataset=pix2gestalt", "data.task=amodal", "train.mode=finetune",
                             f"data.root={tmp_path}", "data.resolution=16", "data.train_size=3", "data.val_size=1",
                             "sample.num_images=1"])
    ds = readers.Pix2Gestalt(tmp_path, resolution=16)
    scenes = data.render_scenes(cfg.data, [cfg.data.val_offset])
    # 4 samples: floor(0.99 * 4) = 3 train, so validation sample 0 is sample 3, never trained on
    assert torch.equal(scenes["rgb"][0], ds[3]["rgb"])
    assert torch.equal(scenes["ref_masks"][0, 0], ds[3]["ids"] == 1) and scenes["num_objects"].tolist() == [1]
    batch = data.make_batch(cfg.data, [cfg.data.val_offset], pick=torch.tensor([5]))  # any pick: slot 0
    assert torch.equal(batch["gt_mask"][0], ds[3]["amodal"][0])
    with pytest.raises(readers.DatasetError, match=r"3 training samples, fewer than data.train_size = 4; set "
                                                   r"data.train_size=3"):
        data.real_scenes(dataclasses.replace(cfg.data, train_size=4))


def test_to_latents_encodes_target_and_conditions_and_shrinks_the_mask():
    torch.manual_seed(0)
    codec = vae.make_codec("sd-vae", block_out_channels=(32, 32, 32, 32), layers_per_block=1)
    batch = data.make_batch(DataConfig(task="flow", resolution=16), [0, 1])
    lat = data.to_latents(batch, codec)
    assert lat["target"].shape == (2, 4, 2, 2) and [c.shape for c in lat["cond"]] == [(2, 4, 2, 2)] * 2
    assert torch.equal(lat["cond"][1], codec.encode(batch["cond"][1]))
    assert torch.equal(lat["mask"], data.latent_mask(batch["mask"], 8))
    assert data.to_latents(lat, codec) is lat  # a batch already in latent space (the latent cache's) passes
