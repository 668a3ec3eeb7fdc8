"""The training-scene cache and batches: a cached batch equals a freshly rendered one, the cache keeps only what
the task reads, and the object a referring sample asks about follows `pick`.

Run: pytest -q tests/test_data.py
"""

import pytest
import torch

from minidp import data, tasks
from minidp.config import DataConfig


@pytest.mark.parametrize("task", ["depth", "flow", "amodal", "referring"])
def test_a_cached_batch_equals_a_rendered_one_and_the_cache_keeps_only_the_tasks_keys(task):
    cfg = DataConfig(task=task, resolution=16)
    cache = data.render_cache(cfg, 6, chunk=4)
    assert set(cache) == set(tasks.SCENE_KEYS[task])
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


def test_a_real_dataset_is_refused_until_it_is_wired():
    with pytest.raises(ValueError, match="not wired"):
        data.render_scenes(DataConfig(dataset="flyingchairs", task="flow", resolution=16), [0])
