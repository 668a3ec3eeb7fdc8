"""Evaluation metrics: depth (AbsRel, delta_k, RMSE, least-squares alignment), optical flow (EPE), masks (IoU).

The scaling paper's supplementary §4 defines the metrics it reports (equation numbers are that document's):

    delta_1 = mean_i [ max(d_hat_i / d_i, d_i / d_hat_i) < 1.25 ]          (Eqn. 2; delta_k uses 1.25**k)
    AbsRel  = mean_i |d_hat_i - d_i| / d_i                                  (Eqn. 3)
    EPE     = mean_i || F_hat_i - F_i ||_2                                  (Eqn. 4)
    IoU_i   = TP_i / (TP_i + FP_i + FN_i),  mIoU = mean_i IoU_i             (Eqns. 5, 6)

and ADDP reports oIoU = (sum of intersections) / (sum of unions) over the whole dataset.

Depth predicted by a Marigold-style model is affine-invariant (it lives in [0, 1] or [-1, 1], not metres), so
before any ratio is taken the prediction is aligned to the ground truth by a per-image least-squares fit of a
scale s and a shift t, exactly as Marigold's evaluation does (`lstsq([pred, 1], gt)` over valid pixels).

Notable choices
- Every function is batched and returns one value per image, shape (B,); `depth_metrics` then averages over
  images ("per image, then averaged over images", as Marigold evaluates), so a large image does not outweigh a
  small one.
- Valid pixels are given by a boolean mask of the same shape as the depth map; invalid pixels never enter a fit
  or an average (a masked-out outlier changes nothing). An image with no valid pixel is an error, not a NaN.
- The least-squares fit uses the centred closed form s = cov(pred, gt) / var(pred), t = mean(gt) - s mean(pred)
  rather than the raw normal equations, which cancel catastrophically in float32 when depths are large.
- Aligned predictions are clamped to MIN_DEPTH before ratios: a least-squares fit may send a few pixels to zero
  or below (an affine map of a far-away outlier), where d_hat / d and d / d_hat are meaningless or infinite.
  Marigold's evaluation clips to the dataset's valid depth range for the same reason; MIN_DEPTH is Hypersim's
  lower valid bound (1e-5 m).
- IoU of two empty masks is defined as 1 (the prediction "found" the nothing that was there); likewise oIoU of
  an all-empty dataset. The alternatives (0 or NaN) would punish a correct empty prediction or poison a mean.

Shape legend: B images, H height, W width (flow has 2 channels: u, v).
"""

import torch

MIN_DEPTH = 1e-5  # Hypersim's lower valid depth (REFERENCE.md §9); a floor for aligned predictions before ratios
MIN_DISPARITY = 1e-3  # Marigold's evaluation floor for aligned disparity ("avoid 0 disparity"): depth <= 1000


# ----------------------------------------------------------------------------------------------------------
# Helpers: input checks and masked per-image means


def _check_same_shape(**tensors):
    """Raise ValueError naming every argument's shape unless all shapes agree."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"shape mismatch: {listed}; they must be equal")


def _check_depth_inputs(pred, gt, mask):
    """Validate a (B, H, W) depth triple with a non-empty boolean mask per image."""
    _check_same_shape(pred=pred, gt=gt, mask=mask)
    if pred.dim() != 3:
        raise ValueError(f"pred must have shape (B, H, W), got {tuple(pred.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor (True = valid pixel), got dtype {mask.dtype}")
    empty = (~mask.flatten(1).any(dim=1)).nonzero().flatten()
    if len(empty) > 0:
        raise ValueError(f"mask has no valid pixel in image(s) {empty.tolist()}; every image needs at least one")


def _check_positive_gt(gt, mask):
    """Ratios need d > 0 wherever the mask says a pixel is valid."""
    if (gt[mask] <= 0).any():
        raise ValueError("gt must be > 0 at every valid pixel (mask it out otherwise)")


def _masked_mean(x, mask):
    """Mean of x over the True pixels of each image: (B, H, W), (B, H, W) -> (B,)."""
    m = mask.to(x.dtype)
    return (x * m).flatten(1).sum(dim=1) / m.flatten(1).sum(dim=1)  # (B, H*W) -> (B,)


# ----------------------------------------------------------------------------------------------------------
# Least-squares scale-and-shift alignment


def scale_shift_lstsq(x, y, mask, flat_scale=0.0):
    """Per-image least squares y ~ s * x + t over valid pixels; returns s, t of shape (B, 1, 1) for broadcasting.
    Closed form, so it is differentiable (the e2e depth loss keeps it inside the graph: tasks/depth.py).

    A constant x carries no shape: any s fits equally, with t = mean(y) - s * mean(x). Evaluation takes s = 0
    (the default, guarded against 0/0); training passes flat_scale=1, which keeps the gradient to x alive."""
    x_mean = _masked_mean(x, mask)[:, None, None]  # (B, 1, 1)
    y_mean = _masked_mean(y, mask)[:, None, None]
    xc, yc = x - x_mean, y - y_mean
    cov = _masked_mean(xc * yc, mask)[:, None, None]
    var = _masked_mean(xc * xc, mask)[:, None, None]
    s = torch.where(var > 0, cov / var.clamp_min(torch.finfo(x.dtype).tiny), torch.full_like(var, flat_scale))
    return s, y_mean - s * x_mean  # t


def fit_scale_shift(pred, gt, mask):
    """The per-image least-squares s, t of align_lstsq, each (B, 1, 1): for a fit made on one copy of an image
    and applied to another (Marigold fits ETH3D on a copy downsized to 1024 px, then aligns the full image)."""
    _check_depth_inputs(pred, gt, mask)
    return scale_shift_lstsq(pred, gt, mask)


def align_lstsq(pred, gt, mask):
    """Scale and shift pred to gt per image by least squares over valid pixels (Marigold's lstsq([pred, 1], gt)).

    pred, gt: (B, H, W) float; mask: (B, H, W) bool. Returns the aligned prediction (B, H, W), defined at every
    pixel (the fit uses valid pixels only, then applies to all).
    """
    s, t = fit_scale_shift(pred, gt, mask)
    return s * pred + t


def align_lstsq_disparity(pred, gt, mask):
    """Align in disparity space: fit pred to 1/gt by least squares, then return depth = 1/aligned.

    For models whose output is affine-invariant disparity (inverse depth), the affine ambiguity lives in
    disparity space, not depth space. The fitted disparity is clamped to MIN_DISPARITY before inverting, so a
    pixel fitted to zero or negative disparity becomes far away (1/MIN_DISPARITY) instead of inf or negative.
    pred, gt: (B, H, W); mask: (B, H, W) bool; gt must be > 0 on valid pixels. Returns depth (B, H, W).
    """
    _check_depth_inputs(pred, gt, mask)
    _check_positive_gt(gt, mask)
    gt_disp = 1.0 / torch.where(mask, gt, torch.ones_like(gt))  # invalid pixels (maybe gt = 0) are never used
    s, t = scale_shift_lstsq(pred, gt_disp, mask)
    return 1.0 / (s * pred + t).clamp_min(MIN_DISPARITY)


# ----------------------------------------------------------------------------------------------------------
# Depth metrics (per image, shape (B,))


def absrel(pred, gt, mask):
    """Absolute relative error mean |d_hat - d| / d over valid pixels (supplementary Eqn. 3): (B,)."""
    _check_depth_inputs(pred, gt, mask)
    _check_positive_gt(gt, mask)
    ratio = (pred - gt).abs() / torch.where(mask, gt, torch.ones_like(gt))  # 1 at invalid pixels avoids 0-division
    return _masked_mean(ratio, mask)


def delta(pred, gt, mask, k=1):
    """Threshold accuracy: fraction of valid pixels with max(d_hat/d, d/d_hat) < 1.25**k (Eqn. 2): (B,).

    pred must be positive at valid pixels (clamp it first, as depth_metrics does).
    """
    _check_depth_inputs(pred, gt, mask)
    _check_positive_gt(gt, mask)
    if k not in (1, 2, 3):
        raise ValueError(f"k must be one of 1, 2, 3 (threshold 1.25**k), got {k!r}")
    if (pred[mask] <= 0).any():
        raise ValueError("pred must be > 0 at every valid pixel for delta (clamp it, e.g. to MIN_DEPTH)")
    one = torch.ones_like(gt)
    p, g = torch.where(mask, pred, one), torch.where(mask, gt, one)  # 1 at invalid pixels keeps ratios finite
    ratio = torch.maximum(p / g, g / p)
    return _masked_mean((ratio < 1.25**k).to(pred.dtype), mask)


def rmse(pred, gt, mask):
    """Root mean squared error sqrt(mean (d_hat - d)^2) over valid pixels, per image: (B,)."""
    _check_depth_inputs(pred, gt, mask)
    return _masked_mean((pred - gt) ** 2, mask).sqrt()


def depth_scores(pred, gt, mask, align="depth"):
    """All depth metrics per image, {"absrel", "delta1", "delta2", "delta3", "rmse"}: (B,) each.

    align: "depth" (least squares in depth space, Marigold's default), "disparity" (least squares on 1/gt), or
    None (pred is already metric).
    """
    if align == "depth":
        pred = align_lstsq(pred, gt, mask)
    elif align == "disparity":
        pred = align_lstsq_disparity(pred, gt, mask)
    elif align is not None:
        raise ValueError(f"align must be one of 'depth', 'disparity', None; got {align!r}")
    pred = pred.clamp_min(MIN_DEPTH)  # ratios need d_hat > 0; see the module docstring
    return {"absrel": absrel(pred, gt, mask), "delta1": delta(pred, gt, mask, k=1),
            "delta2": delta(pred, gt, mask, k=2), "delta3": delta(pred, gt, mask, k=3), "rmse": rmse(pred, gt, mask)}


def depth_metrics(pred, gt, mask, align="depth"):
    """depth_scores averaged over images, as Python floats."""
    return {k: v.mean().item() for k, v in depth_scores(pred, gt, mask, align).items()}


# ----------------------------------------------------------------------------------------------------------
# Optical flow


def epe(flow_pred, flow_gt, mask=None):
    """End-point error: per image, the mean over (valid) pixels of ||F_hat - F||_2 (Eqn. 4).

    flow_pred, flow_gt: (B, 2, H, W); mask: optional (B, H, W) bool. Returns (B,).
    """
    _check_same_shape(flow_pred=flow_pred, flow_gt=flow_gt)
    if flow_pred.dim() != 4 or flow_pred.shape[1] != 2:
        raise ValueError(f"flow must have shape (B, 2, H, W), got {tuple(flow_pred.shape)}")
    err = (flow_pred - flow_gt).norm(dim=1)  # (B, 2, H, W) -> (B, H, W): L2 over (u, v)
    if mask is None:
        return err.flatten(1).mean(dim=1)
    if tuple(mask.shape) != tuple(err.shape):
        raise ValueError(f"shape mismatch: mask {tuple(mask.shape)} vs flow {tuple(flow_pred.shape)}; "
                         f"mask must be (B, H, W) = {tuple(err.shape)}")
    _check_depth_inputs(err, err, mask)  # bool dtype and a valid pixel in every image, as for depth
    return _masked_mean(err, mask)


# ----------------------------------------------------------------------------------------------------------
# Segmentation masks


def _check_masks(pred, gt):
    _check_same_shape(pred_mask=pred, gt_mask=gt)
    if pred.dtype != torch.bool or gt.dtype != torch.bool:
        raise ValueError(f"masks must be bool tensors, got pred_mask {pred.dtype} and gt_mask {gt.dtype}")
    if pred.dim() < 2:
        raise ValueError(f"masks must have shape (B, ...) with at least one pixel dim, got {tuple(pred.shape)}")


def intersection_union(pred, gt):
    """Per-sample |pred & gt| and |pred | gt| as float counts: (B, ...) -> (B,), (B,)."""
    inter = (pred & gt).flatten(1).sum(dim=1).double()  # (B, ...) -> (B,); double: exact counts on big datasets
    union = (pred | gt).flatten(1).sum(dim=1).double()
    return inter, union


def iou(pred_mask, gt_mask):
    """Per-sample IoU = TP / (TP + FP + FN) = |pred & gt| / |pred | gt| (Eqn. 5): (B,) float.

    Two empty masks have IoU 1 by definition (see the module docstring).
    """
    _check_masks(pred_mask, gt_mask)
    inter, union = intersection_union(pred_mask, gt_mask)
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union)).float()


def miou(pred, gt):
    """Mean over samples of the per-sample IoU (Eqn. 6): a float. Each sample counts equally."""
    return iou(pred, gt).mean().item()


def oiou(pred, gt):
    """Overall IoU: total intersection / total union over all samples (ADDP's metric): a float.

    Large objects dominate it, unlike mIoU. To evaluate a dataset, pass all its masks at once (or accumulate
    the intersections and unions yourself): the ratio of sums is not the mean of per-batch ratios.
    """
    _check_masks(pred, gt)
    inter, union = intersection_union(pred, gt)
    total_union = union.sum().item()
    return inter.sum().item() / total_union if total_union > 0 else 1.0

