"""Test-time ensembling: merge M predictions of the same image (one per noise seed) into one.

A diffusion model gives a different prediction for every starting noise; the scaling paper spends test-time
compute by sampling N of them and merging (its final depth model: N = 5). Two families of merge:

- Naive: the pixel-wise median (or mean) over members. Right when every member is in the same units: optical
  flow members are averaged and amodal masks take the pixel-wise median (a majority vote), REFERENCE.md §5.
- Median compilation (Marigold, Ke et al., CVPR 2024, "test-time ensembling"): affine-invariant depth members
  are each in their own unknown scale and shift, so a pixel-wise median of the raw members mixes units.
  Give member i an affine map a_i = s_i * x_i + t_i, initialised to send its min/max to [0, 1], and minimise

      cost(s, t) = sum_{i<j} RMSE(a_i - a_j) / range(m)  +  lambda * (|0 - min(m)| + |1 - max(m)|)

  where m is the pixel-wise median (or mean) of the aligned members and range(m) = max(m) - min(m). Then
  merge the aligned members at full resolution and min-max normalise the result to [0, 1].

Notable choices (and deviations from Marigold's released code, REFERENCE.md §5)
- The division by range(m) is ours. Marigold's cost has the bare pairwise sum, and that cost is minimised by
  collapsing every member to a constant: shrinking all aligned members towards their centre by a factor c
  multiplies the pairwise term by c and moves the penalty to lambda * (1 - c), so along that path the cost is
  lambda + c * (pairwise - lambda), linear in c, and whenever the pairwise sum exceeds lambda (M = 10 members:
  45 pairs, so a mean pairwise RMSE above 0.02 / 45 = 4.4e-4, i.e. always in practice) the optimum is c = 0.
  Marigold never gets there because scipy's finite-difference BFGS on a float32 cost barely moves from its
  initialisation (a 1.5e-8 parameter step is below float32 resolution); a working optimiser, such as this
  file's or that same BFGS on a float64 cost, does collapse the members and the merged map is noise
  (benchmarks/bench_ensemble.py measures both). Measuring the pairwise term in units of the merged map's range
  makes it scale-invariant; the penalty still pins the common scale and shift (it is zero exactly when m spans
  [0, 1]), and wherever m spans [0, 1] this cost equals Marigold's.
- The pairwise term is computed from the members' means and covariance (one matmul, float64) rather than
  from M(M-1)/2 difference maps; the identity is written out in _pairwise_rmse.
- Optimiser: torch.optim.LBFGS with a strong-Wolfe line search and exact autograd gradients, all B images in
  one problem (their costs are independent, so the sum has the same minimiser), on preds' device. Marigold:
  scipy BFGS with finite differences (2M + 1 cost evaluations per gradient), one image at a time.
- Defaults max_iter = 50, tol = 1e-6 are Marigold's newest values (diffusers uses 2 and 1e-3, which with
  finite differences is barely one step); here tol bounds the largest gradient entry. Each LBFGS iteration
  costs one or a few cost evaluations. The objective is not smooth (the median and the extreme pixels switch),
  so LBFGS, like BFGS, ends at a kink; on small problems it ends within 0.3 % of scipy BFGS's cost.
- The fit runs on a copy downsized (nearest-exact, like Marigold) so its longer side is at most max_res; the
  (s, t) it finds are applied at full resolution.
- "Median" is torch.median: for an even number of members it is the lower of the two middle values (numpy
  would average them). Marigold's code does the same, and for 0/1 masks it makes the median a strict
  majority vote, ties going to False.
- Uncertainty (Marigold): median absolute deviation for the median, unbiased std for the mean, divided by the
  same range as the merged map, so it is in the merged map's [0, 1] units.

Shape legend: M members, B images, H height, W width, P = H*W pixels.
"""

import torch
import torch.nn.functional as F

REDUCTIONS = ("median", "mean")
METHODS = ("median", "mean", "compile")


# ----------------------------------------------------------------------------------------------------------
# Naive ensembles


def ensemble_median(preds):
    """Pixel-wise median over members: (M, ...) -> (...). Lower middle value when M is even (torch.median)."""
    _check_members(preds, "preds")
    return preds.median(dim=0).values


def ensemble_mean(preds):
    """Pixel-wise mean over members: (M, ...) -> (...)."""
    _check_members(preds, "preds")
    return preds.mean(dim=0)


def ensemble_flow(preds):
    """Average optical-flow members (flow is in pixels, not affine-invariant): (M, B, 2, H, W) -> (B, 2, H, W)."""
    if preds.dim() != 5 or preds.shape[2] != 2:
        raise ValueError(f"flow members must have shape (M, B, 2, H, W), got {tuple(preds.shape)}")
    return ensemble_mean(preds)


def ensemble_masks(preds):
    """Pixel-wise majority vote of boolean masks: (M, B, H, W) bool -> (B, H, W) bool.

    A pixel is True when strictly more than half of the members say so; a tie (even M) gives False. This is
    the pixel-wise median of 0/1 masks with torch.median's lower-middle convention.
    """
    _check_members(preds, "preds")
    if preds.dtype != torch.bool:
        raise ValueError(f"mask members must be a bool tensor, got dtype {preds.dtype}")
    votes = preds.sum(dim=0)  # (M, B, H, W) -> (B, H, W): number of members voting True
    return 2 * votes > preds.shape[0]


def _check_members(preds, name):
    if preds.dim() < 1 or preds.shape[0] < 1:
        raise ValueError(f"{name} must have a leading member dimension M >= 1, got shape {tuple(preds.shape)}")


# ----------------------------------------------------------------------------------------------------------
# Median compilation: cost, initialisation, fit


def _merge(aligned, reduction):
    """Pixel-wise merge of aligned members: (M, B, ...) -> (B, ...)."""
    if reduction == "median":
        return aligned.median(dim=0).values
    if reduction == "mean":
        return aligned.mean(dim=0)
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _spread(aligned, merged, reduction):
    """Marigold's uncertainty of a merge: median absolute deviation (median) or std (mean): (B, ...)."""
    if reduction == "median":
        return (aligned - merged).abs().median(dim=0).values
    # Unbiased std as in Marigold; a single member has no spread (and std with correction 1 would be NaN).
    return aligned.std(dim=0) if aligned.shape[0] > 1 else torch.zeros_like(merged)


def _align(preds, scale, shift):
    """a_i = s_i * x_i + t_i: preds (M, B, H, W), scale/shift (M, B) -> (M, B, H, W)."""
    return scale[:, :, None, None] * preds + shift[:, :, None, None]


def compilation_init(preds):
    """Marigold's starting point: the affine map sending each member's min/max to 0/1. (M, B, H, W) -> 2x (M, B)."""
    lo = preds.flatten(2).amin(dim=2)  # (M, B, P) -> (M, B)
    hi = preds.flatten(2).amax(dim=2)
    scale = 1.0 / (hi - lo).clamp_min(1e-6)  # a constant member gets a finite (huge) scale, as in Marigold
    shift = -scale * lo
    return scale, shift


def _member_stats(preds):
    """Each member's mean mu_i and the members' covariance C_ij over pixels, float64: (B, M), (B, M, M)."""
    x = preds.double().flatten(2).transpose(0, 1)  # (M, B, H, W) -> (M, B, P) -> (B, M, P)
    mu = x.mean(dim=2)  # (B, M)
    xc = x - mu[:, :, None]
    cov = xc @ xc.transpose(1, 2) / x.shape[2]  # (B, M, P) @ (B, P, M) -> (B, M, M)
    return mu, cov


def _pairwise_rmse(stats, scale, shift):
    """RMSE(a_i - a_j) for every pair of members, without forming a single difference map: (B, M, M) float64.

    With a_i = s_i x_i + t_i, and mu_i, C_ij the members' means and covariance over pixels (stats):
        mean((a_i - a_j)^2) = var(a_i - a_j) + (mean(a_i) - mean(a_j))^2
                            = s_i^2 C_ii + s_j^2 C_jj - 2 s_i s_j C_ij + (s_i mu_i + t_i - s_j mu_j - t_j)^2
    mu and C do not depend on (s, t): computed once per fit, they replace M(M-1)/2 passes over the pixels per
    evaluation, and the graph autograd differentiates is (M, M)-sized. float64, because var(a_i - a_j) is a
    small difference of large terms (noise^2 against signal^2: float32 would lose most of its digits).
    """
    mu, cov = stats
    s, t = scale.double().T, shift.double().T  # (M, B) -> (B, M)
    k = s[:, :, None] * cov * s[:, None, :]  # (B, M, M): s_i s_j C_ij = cov(a_i, a_j)
    var = k.diagonal(dim1=1, dim2=2)  # (B, M): var(a_i)
    mean = s * mu + t  # (B, M): mean(a_i)
    mse = var[:, :, None] + var[:, None, :] - 2 * k + (mean[:, :, None] - mean[:, None, :]) ** 2  # (B, M, M)
    # clamp: rounding can leave a tiny negative mse, and sqrt has an infinite derivative at 0 (identical members)
    return mse.clamp_min(1e-12).sqrt()


def _cost(preds, stats, scale, shift, reduction, regularizer):
    """compilation_cost with the member statistics already computed (the fit evaluates it many times)."""
    rmse = _pairwise_rmse(stats, scale, shift)  # (B, M, M), symmetric, zero diagonal up to the clamp
    pairwise = rmse.triu(diagonal=1).sum(dim=(1, 2))  # (B,): each pair i < j once
    merged = _merge(_align(preds, scale, shift), reduction)  # (B, H, W)
    lo, hi = merged.flatten(1).amin(dim=1).double(), merged.flatten(1).amax(dim=1).double()  # (B,)
    penalty = (0.0 - lo).abs() + (1.0 - hi).abs()
    return pairwise / (hi - lo).clamp_min(1e-6) + regularizer * penalty


def compilation_cost(preds, scale, shift, reduction="median", regularizer=0.02):
    """The median-compilation objective of one (s, t) per member, per image: returns (B,) float64.

    sum_{i<j} RMSE(a_i - a_j) / range(m) + regularizer * (|0 - min m| + |1 - max m|), with a_i = s_i x_i + t_i
    and m the pixel-wise `reduction` of the a_i (see the module docstring for why the range divides).
    preds (M, B, H, W); scale, shift (M, B).
    """
    return _cost(preds, _member_stats(preds), scale, shift, reduction, regularizer)


def compilation_fit(preds, reduction="median", regularizer=0.02, max_iter=50, tol=1e-6):
    """Minimise compilation_cost over (s, t) with LBFGS from compilation_init: (M, B, H, W) -> 2x (M, B).

    Runs with autograd enabled even when called under torch.no_grad() or torch.inference_mode() (sampling code
    usually is), on a float32 copy of preds on preds' device.
    """
    with torch.inference_mode(False), torch.enable_grad():
        x = preds.detach().float().clone()  # clone outside inference mode: autograd may save it for backward
        stats = _member_stats(x)
        scale, shift = compilation_init(x)
        scale.requires_grad_(True)
        shift.requires_grad_(True)
        opt = torch.optim.LBFGS(
            [scale, shift], lr=1.0, max_iter=max_iter, tolerance_grad=tol, line_search_fn="strong_wolfe"
        )

        def closure():
            opt.zero_grad()
            # Sum over images: the B problems share nothing, so this has each image's minimiser.
            cost = _cost(x, stats, scale, shift, reduction, regularizer).sum()
            cost.backward()
            return cost

        opt.step(closure)  # one step() runs up to max_iter LBFGS iterations
    return scale.detach(), shift.detach()


def _downsize(preds, max_res):
    """Nearest-exact resize of (M, B, H, W) so that max(H, W) <= max_res (a copy for the fit only)."""
    h, w = preds.shape[-2:]
    if max_res is None or max(h, w) <= max_res:
        return preds
    factor = max_res / max(h, w)
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    # interpolate reads (M, B, H, W) as (N, C, H, W): members as the batch, images as channels; that is fine
    # because nearest-exact resizing treats every (member, image) map independently.
    return F.interpolate(preds, size=size, mode="nearest-exact")


def median_compilation(preds, reduction="median", regularizer=0.02, max_iter=50, tol=1e-6, max_res=1024):
    """Marigold's affine-invariant ensemble of depth members: (M, B, H, W) -> merged, uncertainty, both (B, H, W).

    Fits one (s, t) per member on a copy of at most max_res px (longer side), aligns the full-resolution
    members, merges them with `reduction` ("median": uncertainty = median absolute deviation; "mean":
    uncertainty = std), and min-max normalises the merged map of each image to [0, 1] (float32).
    """
    if preds.dim() != 4:
        raise ValueError(f"preds must have shape (M, B, H, W), got {tuple(preds.shape)}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if max_res is not None and max_res < 1:
        raise ValueError(f"max_res must be a positive number of pixels or None, got {max_res!r}")
    preds = preds.detach().float()
    scale, shift = compilation_fit(_downsize(preds, max_res), reduction, regularizer, max_iter, tol)
    aligned = _align(preds, scale, shift)  # (M, B, H, W)
    merged = _merge(aligned, reduction)  # (B, H, W)
    uncertainty = _spread(aligned, merged, reduction)
    lo = merged.flatten(1).amin(dim=1)[:, None, None]  # (B, 1, 1)
    hi = merged.flatten(1).amax(dim=1)[:, None, None]
    span = (hi - lo).clamp_min(1e-6)  # a constant merged map stays finite (all zeros)
    return (merged - lo) / span, uncertainty / span


# ----------------------------------------------------------------------------------------------------------
# Dispatcher


def ensemble(preds, method):
    """Merge depth members (M, B, H, W) -> (B, H, W) with method in METHODS = ("median", "mean", "compile").

    "compile" returns median_compilation's merged map (in [0, 1]); call median_compilation for its uncertainty.
    The naive methods keep the members' units. Depth metrics align to ground truth anyway, so either is fine.
    """
    if method == "median":
        return ensemble_median(preds)
    if method == "mean":
        return ensemble_mean(preds)
    if method == "compile":
        return median_compilation(preds)[0]
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
