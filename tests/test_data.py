"""Task encodings: Marigold's depth normalisation and its decoding, and the batch format.

Run: pytest -q tests/test_data.py
"""

import pytest
import torch

from minidp import data
from minidp.config import DataConfig


def test_depth_encoding_maps_quantiles_to_minus_one_and_one():
    # 101 depths 0..100 along a row: the 2 % / 98 % quantiles are exactly 2 and 98 (linear interpolation),
    # so d' = (d - 2) / 96 * 2 - 1: d = 2 -> -1, d = 50 -> 0, d = 98 -> 1, beyond them clipped.
    depth = torch.arange(101.0).view(1, 1, 101)
    valid = torch.ones_like(depth, dtype=torch.bool)
    enc = data.encode_depth(depth, valid)
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
    a, b = data.encode_depth(depth, valid), data.encode_depth(depth2, valid2)
    keep = valid2[0, 0]
    # quantiles are over 100 valid values now, so allow the small shift that removing one pixel makes
    assert torch.allclose(a[0, 0, 0, keep], b[0, 0, 0, keep], atol=0.03)
    assert b[0, 0, 0, 50].item() == 0.0


def test_decode_inverts_encode_up_to_an_affine_map():
    torch.manual_seed(0)
    depth = torch.rand(2, 8, 8) * 5 + 1
    valid = torch.ones_like(depth, dtype=torch.bool)
    dec = data.decode_depth(data.encode_depth(depth, valid))  # in [0, 1]
    assert dec.min() >= 0 and dec.max() <= 1
    # inside the quantile range decode(encode(d)) = (d - near) / (far - near): exactly affine in d
    for i in range(2):
        d, e = depth[i].flatten(), dec[i].flatten()
        inside = (e > 0) & (e < 1)
        A = torch.stack([d[inside], torch.ones_like(d[inside])], 1)
        sol = torch.linalg.lstsq(A, e[inside][:, None]).solution
        assert torch.allclose(A @ sol, e[inside][:, None], atol=1e-5)


def test_unknown_task_is_named():
    with pytest.raises(ValueError, match="unknown task 'normals'"):
        data.task_id("normals")


@pytest.mark.parametrize("task, n_cond", [("class", 0), ("depth", 1)])
def test_batch_format(task, n_cond):
    cfg = DataConfig(task=task, resolution=16)
    b = data.make_batch(cfg, [0, 1, 2])
    assert len(b["cond"]) == n_cond and b["target"].shape == (3, 3, 16, 16)
    assert b["target"].min() >= -1 and b["target"].max() <= 1
    assert b["task"].tolist() == [data.TASKS[task]] * 3 and b["mask"].shape == (3, 16, 16)
    # the batch is a pure function of the indices: the same indices render the same scenes
    assert torch.equal(data.make_batch(cfg, [1])["target"][0], b["target"][1])
