"""Tests for minidp/metrics.py: depth (AbsRel, delta_k, RMSE, least-squares alignment), EPE, IoU / mIoU / oIoU.

Every expected number is worked out by hand in a comment next to it (or, for least squares, also checked
against numpy.linalg.lstsq); properties cover masking (an outlier on an invalid pixel changes nothing) and
batching (a batch gives the per-image values).

Run: python -m pytest -q tests/test_metrics.py
"""

import numpy as np
import pytest
import torch

from minidp.metrics import (
    MIN_DEPTH,
    MIN_DISPARITY,
    absrel,
    align_lstsq,
    align_lstsq_disparity,
    delta,
    depth_metrics,
    epe,
    iou,
    miou,
    oiou,
    rmse,
)


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


# Image 0: every pixel valid.      gt = [[1, 2], [4, 5]],   pred = [[1.1, 2], [5, 5]]
# Image 1: pixel (1, 1) invalid.   gt = [[2, 2], [2, 100]], pred = [[1, 3], [2, 0.001]]
GT = t([[[1, 2], [4, 5]], [[2, 2], [2, 100]]])
PRED = t([[[1.1, 2], [5, 5]], [[1, 3], [2, 0.001]]])
MASK = torch.tensor([[[True, True], [True, True]], [[True, True], [True, False]]])


def test_absrel_matches_hand_computation():
    # image 0: (0.1/1 + 0/2 + 1/4 + 0/5) / 4 = 0.35 / 4 = 0.0875
    # image 1: (1/2 + 1/2 + 0/2) / 3 = 1/3  (the invalid pixel, |0.001 - 100| / 100, is ignored)
    assert torch.allclose(absrel(PRED, GT, MASK), t([0.0875, 1 / 3]), atol=1e-6)


def test_delta_matches_hand_computation_with_strict_threshold():
    # image 0 ratios max(p/g, g/p): 1.1, 1, 1.25, 1 -> "< 1.25" is strict, so 1.25 fails: delta1 = 3/4;
    #   delta2 (1.5625) and delta3 (1.953125): all four pass -> 1.
    # image 1 ratios on valid pixels: 2, 1.5, 1 -> delta1 = 1/3; delta2: 1.5 < 1.5625 -> 2/3; delta3: 2 > 1.953 -> 2/3
    assert torch.allclose(delta(PRED, GT, MASK, k=1), t([0.75, 1 / 3]), atol=1e-6)
    assert torch.allclose(delta(PRED, GT, MASK, k=2), t([1.0, 2 / 3]), atol=1e-6)
    assert torch.allclose(delta(PRED, GT, MASK, k=3), t([1.0, 2 / 3]), atol=1e-6)


def test_rmse_matches_hand_computation():
    # image 0: sqrt((0.1^2 + 0 + 1^2 + 0) / 4) = sqrt(1.01 / 4) = sqrt(0.2525)
    # image 1: sqrt((1 + 1 + 0) / 3) = sqrt(2/3)
    assert torch.allclose(rmse(PRED, GT, MASK), t([0.2525**0.5, (2 / 3) ** 0.5]), atol=1e-6)


def test_depth_metrics_without_alignment_average_per_image_values():
    m = depth_metrics(PRED, GT, MASK, align=None)
    assert set(m) == {"absrel", "delta1", "delta2", "delta3", "rmse"}
    assert all(isinstance(v, float) for v in m.values())
    # means over the two images of the values above
    assert m["absrel"] == pytest.approx((0.0875 + 1 / 3) / 2, abs=1e-6)
    assert m["delta1"] == pytest.approx((0.75 + 1 / 3) / 2, abs=1e-6)
    assert m["delta2"] == pytest.approx((1 + 2 / 3) / 2, abs=1e-6)
    assert m["rmse"] == pytest.approx((0.2525**0.5 + (2 / 3) ** 0.5) / 2, abs=1e-6)


def test_lstsq_alignment_matches_hand_solution_and_numpy():
    # Fit gt = s * pred + t for pred = [0, 1, 2], gt = [1, 2, 4]:
    # mean(pred) = 1, mean(gt) = 7/3; cov = ((-1)(-4/3) + 0 + (1)(5/3)) / 3 = 1; var = (1 + 0 + 1) / 3 = 2/3
    # s = 1 / (2/3) = 1.5, t = 7/3 - 1.5 = 5/6 -> aligned = [5/6, 7/3, 23/6]
    pred, gt, mask = t([[[0, 1, 2]]]), t([[[1, 2, 4]]]), torch.ones(1, 1, 3, dtype=torch.bool)
    aligned = align_lstsq(pred, gt, mask)
    assert torch.allclose(aligned, t([[[5 / 6, 7 / 3, 23 / 6]]]), atol=1e-6)
    a = np.stack([pred.flatten().numpy(), np.ones(3)], axis=1)  # Marigold's lstsq([pred, 1], gt)
    (s, shift), *_ = np.linalg.lstsq(a, gt.flatten().numpy(), rcond=None)
    assert np.allclose(aligned.flatten().numpy(), s * pred.flatten().numpy() + shift, atol=1e-6)


def test_affine_prediction_aligns_exactly_and_masked_outlier_changes_nothing():
    torch.manual_seed(0)
    gt = 1 + 4 * torch.rand(2, 6, 7)
    mask = torch.ones(2, 6, 7, dtype=torch.bool)
    mask[:, 0, 0] = False
    pred = 2 * gt + 3  # affine-invariant prediction: least squares must undo exactly this
    pred[:, 0, 0] = 1000.0  # an outlier on an invalid pixel
    m = depth_metrics(pred, gt, mask)
    assert m["absrel"] == pytest.approx(0, abs=1e-5)
    assert m["rmse"] == pytest.approx(0, abs=1e-4)
    assert m["delta1"] == 1.0
    pred_no_outlier = pred.clone()
    pred_no_outlier[:, 0, 0] = -7.0
    assert depth_metrics(pred_no_outlier, gt, mask) == pytest.approx(m, abs=1e-6)
    # ... whereas the same outlier on a valid pixel does change the fit
    assert depth_metrics(pred, gt, torch.ones_like(mask))["absrel"] > 0.1


def test_disparity_alignment_inverts_affine_disparity_and_clamps_nonpositive():
    # pred = 3/gt + 1 is affine in disparity 1/gt (s = 1/3, t = -1/3), so depth comes back exactly.
    torch.manual_seed(1)
    gt = 1 + 4 * torch.rand(1, 5, 5)
    mask = torch.ones(1, 5, 5, dtype=torch.bool)
    assert torch.allclose(align_lstsq_disparity(3 / gt + 1, gt, mask), gt, rtol=1e-4)
    assert depth_metrics(3 / gt + 1, gt, mask, align="disparity")["absrel"] == pytest.approx(0, abs=1e-5)
    # gt = [1, 2] (valid), pred = [2, 1] = 2 * disparity -> s = 0.5, t = 0. The invalid third pixel has pred -4,
    # fitted disparity 0.5 * -4 = -2 <= 0 -> clamped to MIN_DISPARITY -> depth 1 / MIN_DISPARITY = 1000.
    gt, pred = t([[[1, 2, 1]]]), t([[[2, 1, -4]]])
    mask = torch.tensor([[[True, True, False]]])
    out = align_lstsq_disparity(pred, gt, mask)
    assert torch.allclose(out, t([[[1, 2, 1 / MIN_DISPARITY]]]), rtol=1e-5)


def test_depth_metrics_clamp_nonpositive_predictions_to_min_depth():
    # gt = [1, 1], pred = [1, -1] with no alignment: -1 is clamped to MIN_DEPTH = 1e-5, so
    # absrel = (0 + |1e-5 - 1| / 1) / 2 = 0.499995, delta1 = 1/2 (the ratio 1e5 fails), rmse = sqrt((1 - 1e-5)^2 / 2)
    m = depth_metrics(t([[[1, -1]]]), t([[[1, 1]]]), torch.ones(1, 1, 2, dtype=torch.bool), align=None)
    assert m["absrel"] == pytest.approx((1 - MIN_DEPTH) / 2, abs=1e-6)
    assert m["delta1"] == 0.5
    assert m["rmse"] == pytest.approx((1 - MIN_DEPTH) / 2**0.5, abs=1e-6)


def test_batched_metrics_equal_per_image_metrics():
    torch.manual_seed(2)
    gt, pred = 1 + torch.rand(3, 4, 5), torch.rand(3, 4, 5)
    mask = torch.rand(3, 4, 5) > 0.3
    batched = align_lstsq(pred, gt, mask)
    for b in range(3):
        single = align_lstsq(pred[b : b + 1], gt[b : b + 1], mask[b : b + 1])
        assert torch.allclose(batched[b : b + 1], single, atol=1e-6)
    per_image = [depth_metrics(pred[b : b + 1], gt[b : b + 1], mask[b : b + 1])["absrel"] for b in range(3)]
    assert depth_metrics(pred, gt, mask)["absrel"] == pytest.approx(sum(per_image) / 3, abs=1e-6)


def test_epe_matches_hand_computation_on_2x2():
    # error vectors (u, v): (3, 4) -> 5, (0, 0) -> 0, (0, 1) -> 1, (1, 0) -> 1; mean = 7/4.
    # Without pixel (0, 0): (0 + 1 + 1) / 3 = 2/3.
    flow_gt = t([[[[3, 0], [0, 1]], [[4, 0], [1, 0]]]])  # (1, 2, 2, 2): u plane then v plane
    flow_pred = torch.zeros_like(flow_gt)
    assert torch.allclose(epe(flow_pred, flow_gt), t([1.75]))
    mask = torch.tensor([[[False, True], [True, True]]])
    assert torch.allclose(epe(flow_pred, flow_gt, mask), t([2 / 3]))


def test_iou_miou_oiou_match_hand_computation_and_differ():
    pred = torch.zeros(2, 3, 3, dtype=torch.bool)
    gt = torch.zeros(2, 3, 3, dtype=torch.bool)
    pred[0] = True  # sample 0: pred all 9 pixels, gt the top 6 -> inter 6, union 9 -> IoU 2/3
    gt[0, :2] = True
    pred[1, 0, 0:2] = True  # sample 1: pred {(0,0), (0,1)}, gt {(0,1), (0,2)} -> inter 1, union 3 -> IoU 1/3
    gt[1, 0, 1:3] = True
    assert torch.allclose(iou(pred, gt), t([2 / 3, 1 / 3]))
    assert miou(pred, gt) == pytest.approx(0.5)  # (2/3 + 1/3) / 2
    assert oiou(pred, gt) == pytest.approx(7 / 12)  # (6 + 1) / (9 + 3): the big sample weighs more


def test_iou_of_two_empty_masks_is_one_and_empty_against_nonempty_is_zero():
    empty = torch.zeros(1, 2, 2, dtype=torch.bool)
    full = torch.ones(1, 2, 2, dtype=torch.bool)
    assert iou(empty, empty).item() == 1.0
    assert iou(empty, full).item() == 0.0
    assert oiou(empty, empty) == 1.0


def test_bad_inputs_raise_clear_errors():
    good_mask = torch.ones(1, 2, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"pred \(1, 2, 2\).*gt \(1, 2, 3\)"):
        absrel(torch.ones(1, 2, 2), torch.ones(1, 2, 3), good_mask)
    with pytest.raises(ValueError, match="bool"):
        rmse(torch.ones(1, 2, 2), torch.ones(1, 2, 2), torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match=r"no valid pixel in image\(s\) \[1\]"):
        rmse(torch.ones(2, 2, 2), torch.ones(2, 2, 2), torch.tensor([[[True] * 2] * 2, [[False] * 2] * 2]))
    with pytest.raises(ValueError, match="'depth', 'disparity', None"):
        depth_metrics(torch.ones(1, 2, 2), torch.ones(1, 2, 2), good_mask, align="log")
    with pytest.raises(ValueError, match="gt must be > 0"):
        absrel(torch.ones(1, 2, 2), torch.zeros(1, 2, 2), good_mask)
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        epe(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match=r"mask \(2, 2\).*flow \(1, 2, 2, 2\)"):
        epe(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2), torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"pred_mask \(1, 2, 2\).*gt_mask \(1, 3, 2\)"):
        iou(good_mask, torch.ones(1, 3, 2, dtype=torch.bool))
