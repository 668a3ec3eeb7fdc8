"""ADDP's diffusion-tailored augmentation: corrupt the clean target more at noisier timesteps.

ADDP (Pang, Xu & Wang; papers/003, Sec. 3.2 and Appendix A.3) trains on x_t made from a corrupted target,

    x0' = Augment(x0, t),   x_t = sqrt(alpha_bar_t) x0' + sqrt(1 - alpha_bar_t) eps           (ADDP Eqn. 4)

so that the model learns to correct the coarse, drifting predictions it meets at early denoising steps (the
"training-denoising distribution shift"), and predicts the clean x0 (not eps; its A.3.2 and Table C). The
corruption grows linearly with t (its Table D: better than a constant strength). With s = intensity * t / T:

- depth (A.3.1): Gaussian blur, kernel 31, sigma = 10 * s * U(0, 1).
- masks (referring, amodal; A.3.1): colour jitter of brightness, contrast and saturation by factors in
  1 +- 0.2 s; an affine jitter of the mask region, rotation within +-10 s degrees, translation within
  +-0.05 s of the image size, scale within 1 +- 0.05 s (0.95..1.05 at s = 1); random erasing of a box
  covering s * (1..5 %) of the image.
- flow: none (identity). ADDP defines augmentations for depth and for referring masks only; a flow field's
  values are displacements, so warping it would also need its vectors rotated and scaled, and the paper
  gives no recipe to follow.
`intensity` is the paper's Fig. 8 knob (0x, 0.5x, 1x, 2x); 0 returns the target unchanged, as does t = 0.

Notable choices:
- Blur randomisation: sigma = 10 * t/T * U(0,1), the paper's t/T (A.3.1: "maximum intensity 10 t/T") with
  the release's uniform draw. The release uses (t + 1)/T; at t = 0 its sigma <= 0.01 px, whose off-centre taps
  are exp(-5000) = 0, so the two differ by nothing measurable, and ours makes t = 0 an exact identity.
- Blur: separable convolution with reflect padding (torchvision's gaussian_blur convention); on images
  smaller than 16 px the kernel is truncated to the largest radius reflect padding allows (size - 1) and
  renormalised. sigma = 0 gives a delta kernel, an exact identity.
- Mask targets are composites target = (1 - m) * background + m * foreground. The release (refseg_dataset.py)
  keeps the binary mask and the input image apart: it jitters the colour of the red paint, warps and erases
  the mask alone, and re-paints it over the unchanged image. With only the target in hand we recover m as
  the pixels that differ from `background` (default: white, the background of pix2gestalt's amodal targets
  and of masks drawn on white; pass the input image for targets painted over it, ADDP's referring format),
  then warp target and mask with one affine map, jitter the warped foreground, erase part of the mask and
  re-composite. Values stay in [-1, 1] (every step clamps or takes convex combinations).
- The paper's ranges, not the release's: the release draws rotation 50 i, translation 0.2 i, scale 1 +- 0.2 i
  and erasing of up to 20 i % with p = 0.5, for i = 0.2 t/T; we use the paper's A.3.1 values above.
  Erasing scales its area by s as well, so t = 0 is an identity like every other part.
- Colour jitter follows torchvision's ColorJitter formulas in a fixed order (brightness, contrast,
  saturation; torchvision shuffles it), in [0, 1] units; the contrast mean is the mask's mean grey, which for
  a solid paint colour is the release's (it jitters an all-red image).
- Randomness: every number is drawn on the CPU from `generator` (a fixed count per sample, whatever t is),
  then moved, so a seed gives the same augmentation on every device. Geometry is built in float64.
- Augment pixel targets: with a latent codec (the SD VAE) apply it before encoding, as the release does.

Shape legend: B batch, C channels (3), H, W image size, K kernel taps.
"""

import math

import torch
import torch.nn.functional as F

KINDS = ("none", "blur", "mask")  # a task names its kind (Task.augmentation): depth blur, masks mask, flow none

KERNEL_SIZE = 31  # A.3.1
MAX_SIGMA = 10.0  # blur sigma at t = T (A.3.1)
MAX_JITTER = 0.2  # brightness / contrast / saturation factor range at t = T (A.3.1)
MAX_ROTATION = 10.0  # degrees (A.3.1)
MAX_TRANSLATION = 0.05  # fraction of the image size (A.3.1)
MAX_SCALE = 0.05  # scale within 0.95..1.05 (A.3.1)
ERASE_AREA = (0.01, 0.05)  # fraction of the image area (A.3.1; torchvision RandomErasing's `scale`)
ERASE_RATIO = (0.3, 3.3)  # box aspect ratio, log-uniform (torchvision RandomErasing's default)
MASK_TOL = 1 / 255  # a pixel belongs to the mask if it differs from the background by more (half an 8-bit level)
GREY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, torchvision's rgb_to_grayscale

# ----------------------------------------------------------------------------------------------------------
# Gaussian blur (depth)
# ----------------------------------------------------------------------------------------------------------


def gaussian_kernels(sigma, radius):
    """Normalised 1-D Gaussian kernels (B, 2 radius + 1), float64, one per sigma (B,); sigma 0 -> a delta."""
    k = torch.arange(-radius, radius + 1, dtype=torch.float64)  # (K,)
    sigma = torch.as_tensor(sigma, dtype=torch.float64).clamp_min(1e-12)[:, None]  # (B, 1)
    w = torch.exp(-0.5 * (k / sigma) ** 2)  # (B, K); the centre tap is exp(0) = 1, so never all zero
    return w / w.sum(dim=1, keepdim=True)


def _conv_along(x, kernels, axis):
    """Convolve each sample of x (B, C, H, W) with its own 1-D kernel (B, K) along axis 2 (H) or 3 (W)."""
    B, C, H, W = x.shape
    r = (kernels.shape[1] - 1) // 2
    w = kernels.to(x.dtype).to(x.device).repeat_interleave(C, dim=0)  # (B*C, K), one per channel
    flat = x.reshape(1, B * C, H, W)  # each (sample, channel) is its own group
    if axis == 3:
        flat = F.pad(flat, (r, r, 0, 0), mode="reflect")
        weight = w[:, None, None, :]  # (B*C, 1, 1, K)
    else:
        flat = F.pad(flat, (0, 0, r, r), mode="reflect")
        weight = w[:, None, :, None]  # (B*C, 1, K, 1)
    return F.conv2d(flat, weight, groups=B * C).reshape(B, C, H, W)


def gaussian_blur(x, sigma, kernel_size=KERNEL_SIZE):
    """Blur each image of x (B, C, H, W) with its own sigma (B,): separable, reflect-padded, same shape."""
    radius = (kernel_size - 1) // 2
    sigma = torch.as_tensor(sigma, dtype=torch.float64).cpu()
    rh, rw = min(radius, x.shape[2] - 1), min(radius, x.shape[3] - 1)  # reflect padding needs pad < size
    x = _conv_along(x, gaussian_kernels(sigma, rw), axis=3)
    return _conv_along(x, gaussian_kernels(sigma, rh), axis=2)


# ----------------------------------------------------------------------------------------------------------
# Mask augmentation (referring, amodal)
# ----------------------------------------------------------------------------------------------------------


def affine_theta(angle_deg, translate, scale, H, W):
    """affine_grid's theta (B, 2, 3), float64, for a forward map that rotates by angle_deg (B,), scales by
    scale (B,) about the image centre, then shifts by translate (B, 2) = (dx / W, dy / H).

    affine_grid wants the inverse (output pixel -> input pixel) in [-1, 1] coordinates, which stretch x by
    W / 2 and y by H / 2; rotating in those would shear non-square images, so rotate in pixel units:
    theta = D^-1 (sR)^-1 D, shift -D^-1 (sR)^-1 b, with D = diag(W/2, H/2) and b the shift in pixels."""
    a = torch.as_tensor(angle_deg, dtype=torch.float64) * math.pi / 180
    cos, sin = torch.cos(a) / scale, torch.sin(a) / scale  # (B,) the inverse: rotate by -a, scale by 1/s
    inv = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # (B, 2, 2)
    D = torch.tensor([W / 2, H / 2], dtype=torch.float64)  # (2,)
    lin = inv * D[None, None, :] / D[None, :, None]  # D^-1 inv D, (B, 2, 2)
    b = translate.to(torch.float64) * torch.tensor([W, H], dtype=torch.float64)  # (B, 2) pixels
    shift = -(inv @ b[:, :, None])[:, :, 0] / D  # (B, 2)
    return torch.cat([lin, shift[:, :, None]], dim=2)  # (B, 2, 3)


def erase_boxes(area, ratio, top_u, left_u, H, W):
    """Boolean boxes (B, H, W) covering `area` (B,) of the image with aspect h/w = ratio (B,), placed by
    top_u, left_u (B,) in [0, 1) anywhere they fit (torchvision RandomErasing's geometry)."""
    h = (area * H * W * ratio).sqrt().round().clamp(0, H).long()  # (B,)
    w = (area * H * W / ratio).sqrt().round().clamp(0, W).long()  # (B,)
    top = (top_u * (H - h + 1)).floor().long()  # (B,)
    left = (left_u * (W - w + 1)).floor().long()  # (B,)
    rows, cols = torch.arange(H), torch.arange(W)
    in_rows = (rows[None] >= top[:, None]) & (rows[None] < (top + h)[:, None])  # (B, H)
    in_cols = (cols[None] >= left[:, None]) & (cols[None] < (left + w)[:, None])  # (B, W)
    return in_rows[:, :, None] & in_cols[:, None, :]  # (B, H, W)


def _grey(y):
    """Luma (B, 1, H, W) of RGB y (B, 3, H, W) in [0, 1]."""
    r, g, b = y.unbind(1)
    return (GREY[0] * r + GREY[1] * g + GREY[2] * b)[:, None]


def colour_jitter(y, m, brightness, contrast, saturation):
    """torchvision's ColorJitter formulas on y (B, 3, H, W) in [0, 1] with factors (B,) each, in that order.

    The contrast pivot is the mean grey over the (soft) mask m (B, 1, H, W), the whole image if m is empty."""
    f = lambda v: v.to(y.dtype).to(y.device)[:, None, None, None]  # (B,) -> (B, 1, 1, 1)  # noqa: E731
    y = (y * f(brightness)).clamp(0, 1)
    weight = torch.where(m.sum((1, 2, 3), keepdim=True) > 0, m, torch.ones_like(m))  # (B, 1, H, W)
    mean = (_grey(y) * weight).sum((1, 2, 3), keepdim=True) / weight.sum((1, 2, 3), keepdim=True)
    y = (f(contrast) * y + (1 - f(contrast)) * mean).clamp(0, 1)
    return (f(saturation) * y + (1 - f(saturation)) * _grey(y)).clamp(0, 1)


def augment_mask(x0, s, u, background=None):
    """Colour, location and shape jitter of mask-like targets x0 (B, 3, H, W) in [-1, 1] at strengths s (B,),
    from uniforms u (B, 11) in [0, 1); see the module docstring for the composite model."""
    B, C, H, W = x0.shape
    if C != 3:
        raise ValueError(f"mask targets are RGB images (B, 3, H, W), got {C} channels")
    bg = torch.ones_like(x0) if background is None else background.to(x0.dtype).expand_as(x0)
    m = ((x0 - bg).abs().amax(dim=1, keepdim=True) > MASK_TOL).to(x0.dtype)  # (B, 1, H, W)

    sym = lambda col, top: top * s * (2 * u[:, col] - 1)  # noqa: E731 -- uniform in +-top * s, (B,)
    theta = affine_theta(sym(0, MAX_ROTATION), torch.stack([sym(1, MAX_TRANSLATION), sym(2, MAX_TRANSLATION)], 1),
                         1 + sym(3, MAX_SCALE), H, W)  # (B, 2, 3)
    grid = F.affine_grid(theta.to(x0.dtype).to(x0.device), (B, C, H, W), align_corners=False)  # (B, H, W, 2)
    fg = F.grid_sample(x0, grid, mode="bilinear", padding_mode="border", align_corners=False)
    m = F.grid_sample(m, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # nothing enters

    fg = colour_jitter((fg + 1) / 2, m, 1 + sym(4, MAX_JITTER), 1 + sym(5, MAX_JITTER), 1 + sym(6, MAX_JITTER))
    fg = fg * 2 - 1

    lo, hi = ERASE_AREA
    ratio = torch.exp(math.log(ERASE_RATIO[0]) + u[:, 8] * math.log(ERASE_RATIO[1] / ERASE_RATIO[0]))
    box = erase_boxes(s * (lo + (hi - lo) * u[:, 7]), ratio, u[:, 9], u[:, 10], H, W)  # (B, H, W)
    m = m * (~box).to(x0.dtype).to(x0.device)[:, None]  # (B, 1, H, W)
    return (1 - m) * bg + m * fg


# ----------------------------------------------------------------------------------------------------------
# The entry point
# ----------------------------------------------------------------------------------------------------------


def _check(x0, t, kind, intensity, T):
    """t as a CPU LongTensor (B,), after checking every argument (ValueError naming the bad one)."""
    if kind not in KINDS:
        raise ValueError(f"unknown augmentation {kind!r}; valid: {', '.join(KINDS)}")
    if x0.dim() != 4:
        raise ValueError(f"x0 must be (B, C, H, W), got shape {tuple(x0.shape)}")
    B = x0.shape[0]
    t = torch.as_tensor(t).cpu()
    if t.shape != (B,) or t.is_floating_point() or t.min() < 0 or t.max() >= T:
        raise ValueError(f"t must be integer timesteps (B={B},) in 0..{T - 1}, got {t.tolist()}")
    if not (isinstance(intensity, (int, float)) and math.isfinite(intensity) and intensity >= 0):
        raise ValueError(f"intensity={intensity!r} must be a finite number >= 0")
    return t


def augment_target(x0, t, kind, intensity=1.0, generator=None, T=1000, background=None):
    """x0' = Augment(x0, t) (ADDP Eqn. 4) for a batch x0 (B, C, H, W) in [-1, 1] at timesteps t (B,).

    kind: "blur" (depth), "mask" (mask jitter: referring, amodal), "none" (identity: flow). intensity scales every
    strength (0 = identity). generator: a CPU torch.Generator (or None for the global one). background
    (B or 1, 3, H, W): what mask targets are drawn on; None = white. Returns a new tensor like x0."""
    t = _check(x0, t, kind, intensity, T)
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU generator (draws move to x0's device), got {generator.device}")
    if kind == "none" or intensity == 0:
        return x0.clone()
    u = torch.rand(x0.shape[0], 1 if kind == "blur" else 11, generator=generator, dtype=torch.float64)  # (B, 1 or 11)
    return augment_from_uniforms(x0, t, kind, u, intensity, T, background)


def augment_from_uniforms(x0, t, kind, u, intensity=1.0, T=1000, background=None):
    """augment_target with its random numbers given: u (B, K) uniforms in [0, 1), K >= 1 for depth (column 0
    scales sigma) and K >= 11 for masks. The training loop draws u in its batch plan (minidp/recipe.py), so a
    sample's augmentation depends on its own row only, not on how the batch is split over ranks."""
    t = _check(x0, t, kind, intensity, T)
    if kind == "none" or intensity == 0:
        return x0.clone()
    u = torch.as_tensor(u, dtype=torch.float64).cpu()
    need = 1 if kind == "blur" else 11
    if u.dim() != 2 or u.shape[0] != x0.shape[0] or u.shape[1] < need:
        raise ValueError(f"u must be (B={x0.shape[0]}, >= {need}) uniforms for augmentation {kind!r}, got {tuple(u.shape)}")
    s = intensity * t.to(torch.float64) / T  # (B,) strength, linear in t (ADDP Table D)
    if kind == "blur":
        out = gaussian_blur(x0, MAX_SIGMA * s * u[:, 0])
    else:
        out = augment_mask(x0, s, u[:, :11], background)
    keep = (s == 0).to(x0.device)[:, None, None, None]  # t = 0: exactly the target, not a resampled copy
    return torch.where(keep, x0, out)
