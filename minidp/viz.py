"""Pictures of tensors: depth colormaps, the optical-flow colour wheel, mask overlays, grids and curves.

The only minidp module that imports matplotlib (always with the Agg backend: figures are written to PNG files,
never shown, so this works on a headless machine and inside the tests).

- Depth: the perceptually uniform 'magma' colormap, near = bright, far = dark, so luminance falls monotonically
  with depth (a rainbow map like 'Spectral' has no monotone luminance and hides errors). Invalid pixels are white.
- Flow: the Middlebury colour wheel of Baker et al. ("A Database and Evaluation Methodology for Optical Flow",
  REFERENCE.md §9): 55 colours in segments red-yellow 15, yellow-green 6, green-cyan 4, cyan-blue 11,
  blue-magenta 13, magenta-red 6; hue from atan2(-v, -u) / pi, saturation from the radius normalised by the
  largest radius. So rightward flow is red, leftward cyan-blue, downward (v > 0) yellow, upward violet.
- Image conventions: a torch tensor (3, H, W) is an image in [-1, 1] (DESIGN.md); a numpy array (H, W, 3) is
  uint8 in 0..255 or float in [0, 1]; a 2-D array is a grey-level image. Functions return (H, W, 3) arrays.

Letter legend for shape comments: H, W rows and columns, C = 3 colour channels.
"""

import numpy as np
import torch


def pyplot():
    """matplotlib.pyplot with the Agg backend (files only: no display on servers, CI or in the tests). Imported
    on the first figure, not with this module: it costs ~1 s of the start-up of every process that imports
    minidp, and most never draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

# Categorical colours for instance ids (id 0, the background, is dark grey).
_ID_COLOURS = np.array([[60, 60, 60], [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40],
                        [148, 103, 189], [140, 86, 75], [227, 119, 194], [188, 189, 34]], dtype=np.uint8)


def _numpy(x):
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def to_image(x):
    """A (3, H, W) tensor in [-1, 1] as an (H, W, 3) float array in [0, 1]; arrays are passed to `as_float`."""
    if isinstance(x, torch.Tensor) and x.dim() == 3 and x.shape[0] == 3:
        return np.clip((_numpy(x).transpose(1, 2, 0) + 1) / 2, 0, 1)  # (C, H, W) -> (H, W, C)
    return as_float(x)


def as_float(x):
    """Any supported image (see the module docstring) as an (H, W, 3) float array in [0, 1]."""
    if isinstance(x, torch.Tensor) and x.dim() == 3 and x.shape[0] == 3:
        return to_image(x)
    a = _numpy(x)
    if a.dtype == np.uint8:
        a = a / 255.0
    a = a.astype(np.float64)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, -1)  # (H, W) -> (H, W, C)
    return np.clip(a, 0, 1)


def depth_to_rgb(depth, valid=None, near=None, far=None):
    """(H, W) depth -> (H, W, 3) uint8 with 'magma', near bright and far dark; invalid pixels white.

    near / far default to the min / max over valid pixels."""
    d = _numpy(depth).astype(np.float64)
    ok = np.ones(d.shape, bool) if valid is None else _numpy(valid).astype(bool)
    if not ok.any():
        return np.full(d.shape + (3,), 255, np.uint8)
    near = d[ok].min() if near is None else near
    far = d[ok].max() if far is None else far
    x = np.clip((d - near) / max(far - near, 1e-12), 0, 1)
    rgb = pyplot().get_cmap("magma")(1 - x)[..., :3]  # (H, W, C); 1 - x puts near at the bright end
    rgb[~ok] = 1.0
    return (rgb * 255).round().astype(np.uint8)


def flow_wheel():
    """The 55 Middlebury wheel colours (55, 3), 0..255, as Baker et al.'s code builds them (integer steps)."""
    def ramp(n):  # 0, floor(255 / n), ..., floor(255 (n - 1) / n)
        return np.floor(255 * np.arange(n) / n)

    segments = []
    for n, rising, falling, fixed in [(15, 1, None, 0), (6, None, 0, 1), (4, 2, None, 1),
                                      (11, None, 1, 2), (13, 0, None, 2), (6, None, 2, 0)]:
        seg = np.zeros((n, 3))
        seg[:, fixed] = 255
        if rising is not None:
            seg[:, rising] = ramp(n)
        else:
            seg[:, falling] = 255 - ramp(n)
        segments.append(seg)
    return np.concatenate(segments)  # (55, C)


def flow_to_rgb(flow, valid=None, max_radius=None):
    """(2, H, W) flow (u, v) in pixels -> (H, W, 3) uint8 on the Middlebury wheel; invalid pixels black.

    The radius is normalised by max_radius, by default the largest radius over valid pixels."""
    u, v = _numpy(flow).astype(np.float64)  # (H, W) each
    ok = np.ones(u.shape, bool) if valid is None else _numpy(valid).astype(bool)
    radius = np.hypot(u, v)
    if max_radius is None:
        max_radius = radius[ok].max() if ok.any() else 0.0
    radius = radius / max(max_radius, 1e-12)
    wheel = flow_wheel() / 255  # (55, C)
    angle = np.arctan2(-v, -u) / np.pi  # in [-1, 1]
    fk = (angle + 1) / 2 * (len(wheel) - 1)  # position on the wheel, 0 .. 54
    k0 = np.floor(fk).astype(int)
    k1 = (k0 + 1) % len(wheel)
    frac = (fk - k0)[..., None]
    col = (1 - frac) * wheel[k0] + frac * wheel[k1]  # (H, W, C)
    r = radius[..., None]
    col = np.where(r <= 1, 1 - r * (1 - col), col * 0.75)  # desaturate small flow; darken out-of-range flow
    col[~ok] = 0.0
    return (255 * col).round().astype(np.uint8)


def ids_to_rgb(ids):
    """(H, W) instance ids -> (H, W, 3) uint8, one categorical colour per id (0 = background, dark grey)."""
    return _ID_COLOURS[_numpy(ids).astype(np.int64) % len(_ID_COLOURS)]


def amodal_to_rgb(amodal, visible):
    """An object's full mask over its visible mask: visible part blue, hidden part orange, rest white."""
    a, vis = _numpy(amodal).astype(bool), _numpy(visible).astype(bool)
    out = np.full(a.shape + (3,), 255, np.uint8)
    out[a & ~vis] = (255, 160, 40)
    out[vis] = (31, 90, 200)
    return out


def mask_errors(pred, gt):
    """A predicted mask against the true one: hits green, extra pixels red, missed pixels blue, rest light grey."""
    p, g = _numpy(pred).astype(bool), _numpy(gt).astype(bool)
    out = np.full(p.shape + (3,), 230, np.uint8)
    out[p & g] = (44, 160, 44)
    out[p & ~g] = (214, 39, 40)
    out[~p & g] = (31, 119, 180)
    return out


def overlay_mask(image, mask, colour=(1.0, 0.0, 0.0), alpha=0.55):
    """The image (see `as_float`) with the mask painted in `colour` at opacity alpha: (H, W, 3) float in [0, 1]."""
    img = to_image(image)
    m = _numpy(mask).astype(bool)[..., None]  # (H, W, 1)
    return np.where(m, (1 - alpha) * img + alpha * np.asarray(colour, float), img)


def spotlight(image, mask, dim=0.3):
    """The image with everything outside the mask dimmed to `dim`: shows a mask whatever the object's colour."""
    img = to_image(image)
    return np.where(_numpy(mask).astype(bool)[..., None], img, dim * img)


def save_grid(rows, titles, path, cell=128):
    """Saves a grid of images: rows[r][c] is any supported image, titles[r][c] its title (or titles=None).

    Every image is scaled to fit a cell x cell pixel square (nearest neighbour, so a 16 px prediction stays 16 sharp
    blocks; its aspect kept, centred on white); titles get a 14-pixel band above each row, so the PNG is exactly
    (columns * cell) x (rows * (cell + 14 if titles else cell)) pixels (width x height). The grid is put together
    here as one picture and drawn without axes: a generalist's evaluation draws 60 images, and an axes per image
    made matplotlib the slowest part of a micro run's evaluation."""
    nrows, ncols = len(rows), max(len(r) for r in rows)
    band = 14 if titles is not None else 0
    canvas = np.ones((nrows * (cell + band), ncols * cell, 3))  # (H, W, C), white
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            img = as_float(image)
            h, w = img.shape[:2]
            out_h, out_w = max(1, round(h * cell / max(h, w))), max(1, round(w * cell / max(h, w)))
            top = r * (cell + band) + band + (cell - out_h) // 2
            left = c * cell + (cell - out_w) // 2
            ys = ((np.arange(out_h) + 0.5) * h / out_h).astype(int)  # the source row each output row shows
            xs = ((np.arange(out_w) + 0.5) * w / out_w).astype(int)
            canvas[top:top + out_h, left:left + out_w] = img[ys][:, xs]
    dpi = 100
    plt = pyplot()
    fig = plt.figure(figsize=(canvas.shape[1] / dpi, canvas.shape[0] / dpi), dpi=dpi)
    fig.figimage(canvas, origin="upper")
    for r in range(nrows if titles is not None else 0):
        for c, title in enumerate(titles[r][:len(rows[r])]):
            if title:  # centred above its cell, 1 px above the image
                fig.text((c + 0.5) / ncols, 1 - (r * (cell + band) + band - 1) / canvas.shape[0], title,
                         ha="center", va="bottom", fontsize=6.5)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def plot_curves(curves, path, xlabel="", ylabel="", title=None, logx=False, logy=False):
    """Line plot of curves {name: (xs, ys)} to a PNG, with a legend; log axes on request."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.5), dpi=100)
    for name, (xs, ys) in curves.items():
        ax.plot(_numpy(xs), _numpy(ys), marker="o", markersize=4, label=name)
    ax.set(xscale="log" if logx else "linear", yscale="log" if logy else "linear", xlabel=xlabel, ylabel=ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))  # outside: a sweep's points stay visible
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
