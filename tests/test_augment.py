"""Spec for minidp/augment.py: ADDP's diffusion-tailored augmentation (Sec. 3.2, Appendix A.3.1).

Independent references: scipy's gaussian_filter1d (mode 'mirror' is torch's 'reflect') when scipy is
importable; torch.roll and torch.rot90 for whole-pixel translations and quarter turns; the total variation
of an image as the measure of blur; hand-computed box areas; exact identities at t = 0 and intensity 0.

Run: PYTHONPATH=$PWD python -m pytest -q tests/test_augment.py
"""

import pytest
import torch
import torch.nn.functional as F

from minidp.augment import KINDS, affine_theta, augment_target, erase_boxes, gaussian_blur

H, W = 32, 40


def red_masks(B, seed=0, background=None):
    """Targets in ADDP's referring format: random discs painted pure red over `background` (white default)."""
    g = torch.Generator().manual_seed(seed)
    rows, cols = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    centre = torch.rand(B, 2, generator=g) * torch.tensor([H / 2, W / 2]) + torch.tensor([H / 4, W / 4])
    disc = (rows - centre[:, :1, None]) ** 2 + (cols - centre[:, 1:, None]) ** 2 < 50  # (B, H, W)
    x = torch.ones(B, 3, H, W) if background is None else background.clone()
    red = torch.tensor([1.0, -1.0, -1.0])[:, None]
    for b in range(B):
        x[b][:, disc[b]] = red
    return x


def total_variation(x):
    return (x[..., 1:, :] - x[..., :-1, :]).abs().sum() + (x[..., :, 1:] - x[..., :, :-1]).abs().sum()


def targets_for(task, B=4):
    if task in ("mask", "mask"):
        return red_masks(B)
    return torch.rand(B, 3, H, W, generator=torch.Generator().manual_seed(1)) * 2 - 1


# ---- identities -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", KINDS)
def test_t_zero_is_exactly_the_target(task):
    x0 = targets_for(task)
    out = augment_target(x0, torch.zeros(4, dtype=torch.long), task, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, x0) and out is not x0


@pytest.mark.parametrize("task", KINDS)
def test_intensity_zero_is_the_identity_at_every_t(task):
    x0 = targets_for(task)
    out = augment_target(x0, torch.tensor([999, 500, 10, 0]), task, intensity=0.0)
    assert torch.equal(out, x0)


def test_only_the_t_zero_samples_of_a_batch_stay_untouched():
    x0 = targets_for("blur")
    out = augment_target(x0, torch.tensor([0, 999, 0, 999]), "blur", generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[[0, 2]], x0[[0, 2]]) and not torch.equal(out[[1, 3]], x0[[1, 3]])


def test_flow_is_never_augmented():
    x0 = targets_for("none")
    assert torch.equal(augment_target(x0, torch.full((4,), 999), "none", intensity=2.0), x0)


# ---- depth: Gaussian blur -------------------------------------------------------------------------------


def test_blur_strength_grows_with_t():
    # the same seed draws the same U(0, 1) per sample, so every sigma = 10 t/T U grows with t; blur removes
    # total variation (averaged over 16 samples so that no single small U decides it)
    x0 = targets_for("blur", B=16)
    drops = []
    for t in [100, 300, 600, 999]:
        out = augment_target(x0, torch.full((16,), t), "blur", generator=torch.Generator().manual_seed(3))
        drops.append((total_variation(x0) - total_variation(out)).item())
    assert 0 < drops[0] < drops[1] < drops[2] < drops[3], drops


@pytest.mark.parametrize("h, w", [(40, 48), (10, 12)])  # 10 x 12: the kernel is truncated to fit the padding
def test_gaussian_blur_matches_scipy(h, w):
    ndimage = pytest.importorskip("scipy.ndimage")
    x = torch.rand(3, 2, h, w, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    sigma = torch.tensor([0.5, 2.0, 7.3], dtype=torch.float64)
    got = gaussian_blur(x, sigma)
    rh, rw = min(15, h - 1), min(15, w - 1)
    for b, s in enumerate(sigma.tolist()):
        ref = ndimage.gaussian_filter1d(x[b].numpy(), s, axis=-1, mode="mirror", truncate=rw / s)
        ref = ndimage.gaussian_filter1d(ref, s, axis=-2, mode="mirror", truncate=rh / s)
        torch.testing.assert_close(got[b], torch.from_numpy(ref), rtol=1e-12, atol=1e-12)


def test_blur_keeps_a_constant_image_constant():
    x = torch.full((2, 3, 20, 20), 0.37, dtype=torch.float64)
    torch.testing.assert_close(gaussian_blur(x, torch.tensor([3.0, 10.0])), x, rtol=0, atol=1e-14)


# ---- masks: colour, location and shape ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("task", ["mask"])
def test_mask_augmentation_keeps_shape_dtype_and_value_range(task, dtype):
    photo = torch.rand(6, 3, H, W, generator=torch.Generator().manual_seed(5)) * 2 - 1
    for background in [None, photo]:
        x0 = red_masks(6, background=background).to(dtype)
        out = augment_target(x0, torch.tensor([999, 800, 600, 400, 200, 1]), task, intensity=2.0,
                             generator=torch.Generator().manual_seed(6), background=background)
        assert out.shape == x0.shape and out.dtype == dtype
        assert out.min() >= -1 and out.max() <= 1
        assert not torch.equal(out[:3], x0[:3])


def test_mask_change_grows_with_t():
    x0 = red_masks(32, seed=7)
    change = [(augment_target(x0, torch.full((32,), t), "mask", generator=torch.Generator().manual_seed(8))
               - x0).abs().mean().item() for t in [250, 500, 999]]
    assert change[0] < change[1] < change[2], change


def test_an_empty_mask_stays_its_background():
    # a target with nothing drawn on its background has no mask to jitter, move or erase
    photo = torch.rand(3, 3, H, W, generator=torch.Generator().manual_seed(9)) * 2 - 1
    out = augment_target(photo, torch.full((3,), 999), "mask", generator=torch.Generator().manual_seed(0),
                         background=photo)
    assert torch.equal(out, photo)
    white = torch.ones(2, 3, H, W)
    assert torch.equal(augment_target(white, torch.full((2,), 999), "mask"), white)


def test_affine_theta_whole_pixel_translation_is_a_roll():
    x = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    theta = affine_theta(torch.zeros(1), torch.tensor([[3 / W, -2 / H]], dtype=torch.float64), torch.ones(1), H, W)
    grid = F.affine_grid(theta, (1, 3, H, W), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    rolled = torch.roll(x, shifts=(-2, 3), dims=(2, 3))  # content moves 3 px right, 2 px up
    torch.testing.assert_close(out[..., :H - 2, 3:], rolled[..., :H - 2, 3:], rtol=0, atol=1e-12)


def test_affine_theta_quarter_turn_is_rot90_and_keeps_squares_square_on_wide_images():
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    grid = F.affine_grid(affine_theta(torch.tensor([90.0]), torch.zeros(1, 2), torch.ones(1), 24, 24),
                         (1, 3, 24, 24), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", align_corners=False)
    assert any(torch.allclose(out, torch.rot90(x, k, dims=(2, 3)), atol=1e-12) for k in (1, -1))
    # a 6 x 6 square at the centre of a 16 x 32 image maps onto itself (rotating in [-1, 1] units would
    # turn it into a 3 x 12 bar)
    sq = torch.zeros(1, 1, 16, 32, dtype=torch.float64)
    sq[..., 5:11, 13:19] = 1
    grid = F.affine_grid(affine_theta(torch.tensor([90.0]), torch.zeros(1, 2), torch.ones(1), 16, 32),
                         (1, 1, 16, 32), align_corners=False)
    torch.testing.assert_close(F.grid_sample(sq, grid, mode="bilinear", align_corners=False), sq, rtol=0, atol=1e-12)


def test_erase_boxes_cover_the_requested_fraction_of_the_image():
    area = torch.tensor([0.01, 0.03, 0.05, 0.0], dtype=torch.float64)
    ratio = torch.tensor([1.0, 0.5, 2.0, 1.0], dtype=torch.float64)
    u = torch.tensor([0.0, 0.5, 0.99, 0.3], dtype=torch.float64)
    boxes = erase_boxes(area, ratio, u, u.flip(0), 100, 100)
    # h = round(sqrt(A HW r)), w = round(sqrt(A HW / r)): 10 x 10; sqrt(150) -> 12 x sqrt(600) -> 24;
    # sqrt(1000) -> 32 x sqrt(250) -> 16; nothing for A = 0
    assert boxes.sum((1, 2)).tolist() == [100, 12 * 24, 32 * 16, 0]


# ---- randomness and errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["blur", "mask"])
def test_same_generator_seed_same_output_other_seed_differs(task):
    x0, t = targets_for(task), torch.tensor([999, 700, 400, 100])
    a = augment_target(x0, t, task, generator=torch.Generator().manual_seed(12))
    b = augment_target(x0, t, task, generator=torch.Generator().manual_seed(12))
    c = augment_target(x0, t, task, generator=torch.Generator().manual_seed(13))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("task", ["blur", "mask"])
def test_cuda_gives_the_cpu_result_for_the_same_seed(task):
    x0, t = targets_for(task), torch.tensor([999, 700, 400, 0])
    cpu = augment_target(x0, t, task, generator=torch.Generator().manual_seed(14))
    gpu = augment_target(x0.cuda(), t.cuda(), task, generator=torch.Generator().manual_seed(14))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)


def test_bad_arguments_are_refused():
    x0 = targets_for("blur")
    with pytest.raises(ValueError, match="valid: none, blur, mask"):
        augment_target(x0, torch.zeros(4, dtype=torch.long), "stretch")
    with pytest.raises(ValueError, match="0..999"):
        augment_target(x0, torch.full((4,), 1000), "blur")
    with pytest.raises(ValueError, match="B=4"):
        augment_target(x0, torch.zeros(3, dtype=torch.long), "blur")
    with pytest.raises(ValueError, match="intensity"):
        augment_target(x0, torch.zeros(4, dtype=torch.long), "blur", intensity=-1.0)
    with pytest.raises(ValueError, match="RGB"):
        augment_target(x0[:, :1], torch.full((4,), 10), "mask")
