"""Visualisation helpers (minidp/viz.py): flow colour wheel, depth colormap, overlays, grids and curves.

The flow wheel is checked against values derived by hand from Baker et al.'s construction (55 colours in
segments RY 15, YG 6, GC 4, CB 11, BM 13, MR 6; hue from atan2(-v, -u) / pi), and against the `flow_vis`
package when it is installed; the depth colormap against the monotone-luminance claim; PNG sizes against the
size save_grid promises, read back from the PNG header.

Run: python -m pytest -q tests/test_viz.py      (a few seconds)
"""

import struct

import numpy as np
import pytest
import torch

from minidp import viz


def png_size(path):
    """(width, height) from a PNG's IHDR chunk: bytes 16..24, two big-endian uint32."""
    with open(path, "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_flow_wheel_has_baker_segments():
    wheel = viz.flow_wheel()
    assert wheel.shape == (55, 3)
    # Segment starts: red, yellow, green, cyan, blue, magenta at 0, 15, 21, 25, 36, 49.
    starts = {0: (255, 0, 0), 15: (255, 255, 0), 21: (0, 255, 0), 25: (0, 255, 255), 36: (0, 0, 255),
              49: (255, 0, 255)}
    for k, colour in starts.items():
        assert tuple(wheel[k]) == colour, k
    assert tuple(wheel[1]) == (255, 17, 0)  # floor(255 * 1 / 15)
    assert tuple(wheel[54]) == (255, 0, 255 - 212)  # 255 - floor(255 * 5 / 6)


def test_flow_colours_at_the_four_directions_match_hand_derivation():
    # One pixel per direction, all of radius 1 = the largest radius, so no desaturation.
    flow = torch.tensor([[[1.0, -1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0, -1.0]]])  # (2, 1, 4): u, v
    rgb = viz.flow_to_rgb(flow)[0].astype(int)  # (4, 3)
    # u > 0: atan2(-0., -1) = -pi -> wheel position 0: pure red.
    # u < 0: atan2(-0., 1) = 0 -> position 27 = CB entry 2: (0, 255 - floor(510 / 11), 255) = (0, 209, 255).
    # v > 0 (down): atan2(-1, -0.) = -pi/2 -> position 13.5: halfway between (255, 221, 0) and (255, 238, 0).
    # v < 0 (up): atan2(1, -0.) = pi/2 -> position 40.5: halfway between BM entries 4 and 5: (78 + 98) / 2 = 88.
    expected = np.array([[255, 0, 0], [0, 209, 255], [255, 229.5, 0], [88, 0, 255]])
    assert np.abs(rgb - expected).max() <= 1


def test_zero_flow_is_white_and_invalid_flow_black():
    flow = torch.tensor([[[0.0, 2.0]], [[0.0, 0.0]]])
    rgb = viz.flow_to_rgb(flow, valid=torch.tensor([[True, False]]))
    assert tuple(rgb[0, 0]) == (255, 255, 255) and tuple(rgb[0, 1]) == (0, 0, 0)


def test_flow_matches_flow_vis_package_when_installed():
    flow_vis = pytest.importorskip("flow_vis")
    rng = np.random.default_rng(0)
    uv = rng.normal(size=(16, 16, 2))
    ours = viz.flow_to_rgb(torch.from_numpy(uv).permute(2, 0, 1)).astype(int)
    theirs = flow_vis.flow_to_color(uv).astype(int)
    assert np.abs(ours - theirs).max() <= 1


def test_depth_colormap_luminance_falls_monotonically_with_depth_and_invalid_is_white():
    depth = torch.linspace(1.0, 10.0, 64)[None]  # (1, 64)
    valid = torch.ones(1, 64, dtype=torch.bool)
    valid[0, -1] = False
    rgb = viz.depth_to_rgb(depth, valid)[0].astype(float)  # (64, 3)
    luminance = rgb[:-1] @ np.array([0.2126, 0.7152, 0.0722])
    assert (np.diff(luminance) <= 0.5).all() and luminance[0] - luminance[-1] > 150
    assert tuple(rgb[-1]) == (255, 255, 255)


def test_overlay_changes_only_masked_pixels_and_spotlight_dims_the_rest():
    image = torch.zeros(3, 4, 4)  # grey 0.5 in [0, 1]
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[1, 2] = True
    over = viz.overlay_mask(image, mask, colour=(1.0, 0.0, 0.0), alpha=0.5)
    assert np.allclose(over[1, 2], [0.75, 0.25, 0.25]) and np.allclose(over[~mask.numpy()], 0.5)
    spot = viz.spotlight(image, mask, dim=0.2)
    assert np.allclose(spot[1, 2], 0.5) and np.allclose(spot[~mask.numpy()], 0.1)


def test_save_grid_writes_a_png_of_the_promised_size(tmp_path):
    rows = [[torch.zeros(3, 8, 8), np.zeros((8, 8, 3), np.uint8), np.ones((8, 8))] for _ in range(2)]
    titles = [["a", "b", "c"], ["d", "e", "f"]]
    viz.save_grid(rows, titles, tmp_path / "grid.png", cell=64)
    assert png_size(tmp_path / "grid.png") == (3 * 64, 2 * (64 + 14))
    viz.save_grid(rows, None, tmp_path / "bare.png", cell=50)
    assert png_size(tmp_path / "bare.png") == (3 * 50, 2 * 50)


def test_save_grid_puts_each_image_in_its_cell_scaled_by_nearest_neighbour_with_its_aspect_kept(tmp_path):
    plt = viz.pyplot()
    checker = np.kron([[0, 1], [1, 0]], np.ones((2, 2)))  # 4 x 4 grey levels: 2 x 2 blocks of black and white
    wide = np.zeros((2, 4, 3))
    wide[..., 2] = 1.0  # a blue image twice as wide as it is high
    red = torch.full((3, 4, 4), -1.0)
    red[0] = 1.0  # (3, H, W) in [-1, 1]: pure red
    viz.save_grid([[checker, wide], [red]], [["checker", "wide"], ["", "unused"]], tmp_path / "g.png", cell=40)
    png = plt.imread(tmp_path / "g.png")[..., :3]  # (H, W, C) floats in [0, 1]
    assert png.shape == (2 * 54, 80, 3)
    cell = png[14:54, 0:40]  # row 0, column 0: below the 14-pixel title band
    assert np.array_equal(cell[:20, :20], np.zeros((20, 20, 3))) and np.array_equal(cell[:20, 20:], np.ones((20, 20, 3)))
    assert np.array_equal(cell[20:, :20], np.ones((20, 20, 3))) and np.array_equal(cell[20:, 20:], np.zeros((20, 20, 3)))
    blue = png[14:54, 40:80]  # 40 x 20 in the middle of its cell, white above and below
    assert np.array_equal(blue[10:30], np.broadcast_to([0.0, 0.0, 1.0], (20, 40, 3)))
    assert np.array_equal(blue[:10], np.ones((10, 40, 3))) and np.array_equal(blue[30:], np.ones((10, 40, 3)))
    assert np.array_equal(png[54 + 14:, 0:40], np.broadcast_to([1.0, 0.0, 0.0], (40, 40, 3)))
    assert png[54 + 14:, 40:].min() == 1.0  # a row shorter than the widest stays white
    assert png[:14, :40].min() < 0.5 and png[:14, 40:].min() < 0.5  # each title is drawn in its band...
    assert png[54:54 + 14].min() == 1.0  # ...and an empty title, or one without an image, is not


def test_plot_curves_writes_a_png(tmp_path):
    viz.plot_curves({"a": ([1, 10, 100], [3.0, 2.0, 1.5]), "b": ([1, 10, 100], [2.5, 1.8, 1.0])},
                    tmp_path / "curves.png", xlabel="compute", ylabel="loss", logx=True, logy=True)
    width, height = png_size(tmp_path / "curves.png")
    assert (width, height) == (650, 350)  # figsize (6.5, 3.5) at dpi 100: the legend sits right of the axes


def test_ids_to_rgb_gives_background_and_objects_distinct_colours():
    rgb = viz.ids_to_rgb(torch.tensor([[0, 1, 2, 3, 4]]))[0]
    assert len({tuple(c) for c in rgb}) == 5
