"""Real datasets in their published layouts, read into the same sample dicts the synthetic world yields.

The world (world.py) is minidp's default data; a config may instead point at a real dataset on disk. Each reader
here is a map-style torch Dataset whose `__getitem__(i)` is deterministic (no random crops: augmentation is the
training loop's business) and returns the world's keys for the tasks the dataset serves (world.render_specs):

    ImageFolder   ImageNet-style class folders (pre-training)    rgb (3, R, R) in [-1, 1], label () long
    Hypersim      Marigold's PNG layout (depth)                  rgb, depth (R, R) metres, valid (R, R) bool
    FlyingChairs  data/*.ppm, *.flo + split file (flow)          rgb, rgb2, flow (2, R, R) pixels, flow_valid
    Pix2Gestalt   occlusion/, visible_object_mask/, whole/, whole_mask/ (amodal), one object per sample in
                  slot 0 of the world's slot axis S = 1:         rgb, ids (R, R) long (1 = visible object,
                                                                 0 = rest), amodal (1, R, R) bool, alone (1, 3, R, R)

File formats (REFERENCE.md §9): Middlebury .flo (read and write), binary PPM (P6, 8 or 16 bit), 8-bit JPEG/PNG
and 16-bit PNG. No new dependency: JPEG/PNG go through Pillow, which matplotlib (a runtime dependency) requires;
PPM and .flo are a few lines of numpy. Pillow opens a 16-bit grayscale PNG as mode "I;16" (Pillow >= 10; numpy
gives uint16) or "I" (older; int32): both hold the exact stored integers, which `read_png16` returns as int32.

Resolution (`resolution=R`, or None for the native size): the shorter side is resized to R (aspect ratio kept)
and the centre R x R square is cropped, because the world and the models are square. The ground truth follows
the image: RGB (and pix2gestalt's `whole`) is resampled bilinearly with antialiasing; depth, valid and masks
with nearest-exact (never blending depths across an object boundary into a depth that exists nowhere); flow
with nearest-exact too, then u is multiplied by new_width / width and v by new_height / height, since a
displacement measured in pixels shrinks with the image.

Notable choices:
- Every malformed input (missing folder, missing split file, wrong .flo magic, truncated file, a sample whose
  partner file is missing) is a `DatasetError` (a ValueError) whose one-line message names the file.
- FlyingChairs' flow is dense (no occlusion mask is published): flow_valid = |u| < 1000 and |v| < 1000, the
  sanity bound RAFT applies, so only corrupt vectors are masked; the world's flow_valid also marks occlusions.
- Hypersim: depth = uint16 millimetres / 1000; valid = 1e-5 < depth < 65 m (Marigold's range); invalid pixels
  keep their stored value. Marigold trains on the frames of its filtered lists (prs-eth/Marigold,
  data_split/hypersim_depth/filename_list_{train,val}_filtered.txt: 53,885 and 7,370 frames), not on everything
  its preprocessing writes (~59K training frames; the lists drop frames whose depth spans < 0.5 m, whose RGB spans
  < 10 grey levels or with > 3 % invalid pixels, its issue #158 says); a list copied into root/ (or passed as
  split_file) is read, in its own order, and a line naming a missing frame is an error. The raw release stores the
  distance to the camera centre, not planar depth: `distance_to_planar_depth` converts it (the 886.81 px focal
  length belongs to 1024 x 768 frames and is scaled with the width; another aspect ratio is refused), and
  `read_hypersim_hdf5` reads it when h5py is installed, NaN (no surface) becoming 0, which the valid range marks
  invalid, as Marigold's preprocessing does.
- ImageFolder: a validation folder takes the training folder's class list (`classes=`), so a class missing from
  val/ cannot shift the labels of the classes after it; a folder outside that list is an error.
- pix2gestalt: the official loader (cvlab-columbia/pix2gestalt, ldm/data/simple.py) sorts each folder's full file
  names and holds out the last 1 % (from floor(0.99 N)); `split="train" | "val"` reproduces that order and split
  (samples are still matched by id, not by position). Masks are 0/255; one stored as 0/1 would read as empty,
  so a mask whose largest value is 1..127 is refused.
- Sample order is the sorted file order (or the split list's), so index i means the same sample on every machine.

Legend for shape comments: H, W native size, R output resolution.
"""

import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

FLO_MAGIC = 202021.25  # the float32 whose little-endian bytes spell "PIEH"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp")
HYPERSIM_FOCAL = 886.81  # pixels, for Hypersim's 1024 x 768 images (REFERENCE.md §9)
HYPERSIM_SIZE = (768, 1024)  # (height, width) the focal length above belongs to
HYPERSIM_VALID = (1e-5, 65.0)  # metres, Marigold's valid depth range
FLOW_SANITY = 1000.0  # pixels; larger vectors are corrupt (RAFT's bound)


class DatasetError(ValueError):
    """A missing or malformed dataset file or folder; the message is one line that names it."""


# ----------------------------------------------------------------------------------------------------------
# Decoding files
# ----------------------------------------------------------------------------------------------------------

def _need_file(path):
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    return path


def _read(path, text=False):
    """A dataset file's bytes (or text); an unreadable one is a one-line DatasetError naming it and the OS's reason."""
    path = _need_file(path)
    try:
        return path.read_text() if text else path.read_bytes()
    except (OSError, UnicodeDecodeError) as e:  # permissions, an I/O error, a "text" file that is not text
        raise DatasetError(f"{path}: cannot read it ({getattr(e, 'strerror', None) or type(e).__name__})") from None


def read_ppm(path):
    """Binary PPM (P6) -> uint8 (3, H, W), or int32 (3, H, W) when maxval > 255 (16-bit big-endian samples)."""
    data = _read(path)
    fields, pos = [], 0
    while len(fields) < 4:  # magic, width, height, maxval, separated by whitespace; '#' starts a comment
        while pos < len(data) and data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.find(b"\n", pos) + 1 or len(data)
            continue
        start = pos
        while pos < len(data) and not data[pos:pos + 1].isspace():
            pos += 1
        if start == pos:
            raise DatasetError(f"{path}: truncated PPM header")
        fields.append(data[start:pos])
    if fields[0] != b"P6":
        raise DatasetError(f"{path}: not a binary PPM (magic {fields[0][:8]!r}, expected b'P6')")
    try:
        width, height, maxval = (int(f) for f in fields[1:])
    except ValueError:
        raise DatasetError(f"{path}: bad PPM header {b' '.join(fields)[:40]!r}") from None
    if width <= 0 or height <= 0 or not 0 < maxval < 65536:
        raise DatasetError(f"{path}: bad PPM size {width}x{height} or maxval {maxval}")
    dtype = np.dtype(">u2") if maxval > 255 else np.dtype(np.uint8)
    pixels = data[pos + 1:]  # exactly one whitespace byte ends the header
    expected = width * height * 3 * dtype.itemsize
    if len(pixels) < expected:
        raise DatasetError(f"{path}: truncated PPM: expected {expected} bytes of pixels, found {len(pixels)}")
    arr = np.frombuffer(pixels[:expected], dtype=dtype).reshape(height, width, 3)  # (H, W, 3)
    arr = arr.astype(np.int32) if maxval > 255 else arr.copy()
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()  # (3, H, W)


def _open(path):
    try:
        return Image.open(_need_file(path))
    except OSError as e:
        raise DatasetError(f"{path}: cannot decode image ({e.__class__.__name__})") from None


def read_image(path):
    """An 8-bit colour image (JPEG, PNG, PPM, ...) -> uint8 (3, H, W); greyscale and RGBA become RGB."""
    if Path(path).suffix.lower() == ".ppm":
        img = read_ppm(path)
        if img.dtype != torch.uint8:
            raise DatasetError(f"{path}: a 16-bit PPM where an 8-bit image was expected")
        return img
    with _open(path) as im:
        arr = np.asarray(im.convert("RGB"))  # (H, W, 3) uint8
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()  # (3, H, W)


def read_mask(path):
    """A 0/255 mask image (grey or RGB) -> bool (H, W), True above 127. A non-empty mask whose largest value is at
    most 127 (a mask saved as 0/1) would read as empty: it is a DatasetError instead."""
    with _open(path) as im:  # one grey channel, uint8 (H, W): an RGB mask is converted by Pillow's luma
        grey = torch.from_numpy(np.asarray(im.convert("L")).copy())
    top = int(grey.max())
    if 0 < top <= 127:
        raise DatasetError(f"{path}: a mask whose largest value is {top}; masks are stored as 0/255 (this one "
                           "looks like 0/1: multiply it by 255)")
    return grey > 127


def read_png16(path):
    """A 16-bit greyscale PNG -> int32 (H, W) holding the stored integers 0..65535 exactly."""
    with _open(path) as im:
        if im.mode not in ("I;16", "I;16B", "I"):
            raise DatasetError(f"{path}: expected a 16-bit greyscale PNG, Pillow reads mode {im.mode}")
        arr = np.asarray(im).astype(np.int32)  # uint16 (mode I;16) or int32 (mode I): widen, never rescale
    return torch.from_numpy(arr)


def to_unit_range(img):
    """uint8 (..., H, W) -> float32 in [-1, 1] (0 -> -1, 255 -> +1), the world's image range."""
    return img.float() / 127.5 - 1


def read_flo(path):
    """Middlebury .flo -> float32 (2, H, W): u (rightward, x) then v (downward, y), in pixels."""
    data = _read(path)
    if len(data) < 12:
        raise DatasetError(f"{path}: truncated .flo header ({len(data)} bytes, expected 12)")
    magic, width, height = struct.unpack("<fii", data[:12])
    if magic != FLO_MAGIC:
        raise DatasetError(f"{path}: wrong .flo magic {data[:4]!r}, expected b'PIEH'")
    if width <= 0 or height <= 0:
        raise DatasetError(f"{path}: bad .flo size {width}x{height}")
    expected = width * height * 2 * 4
    if len(data) - 12 < expected:
        raise DatasetError(f"{path}: truncated .flo: expected {expected} bytes of flow, found {len(data) - 12}")
    arr = np.frombuffer(data[12:12 + expected], dtype="<f4").reshape(height, width, 2)  # (H, W, 2) u, v interleaved
    return torch.from_numpy(arr.astype(np.float32)).permute(2, 0, 1).contiguous()  # (2, H, W)


def write_flo(path, flow):
    """float (2, H, W) flow -> a Middlebury .flo file (little-endian float32)."""
    flow = torch.as_tensor(flow)
    if flow.ndim != 3 or flow.shape[0] != 2:
        raise ValueError(f"flow must have shape (2, H, W), got {tuple(flow.shape)}")
    _, height, width = flow.shape
    arr = flow.detach().cpu().float().permute(1, 2, 0).numpy().astype("<f4")  # (H, W, 2)
    Path(path).write_bytes(struct.pack("<fii", FLO_MAGIC, width, height) + arr.tobytes())


# ----------------------------------------------------------------------------------------------------------
# Resizing: shorter side to R, centre crop R x R; the ground truth follows the image
# ----------------------------------------------------------------------------------------------------------

def _plan(height, width, resolution):
    """(new_h, new_w, top, left): the resized size (shorter side = R) and the centre crop's corner."""
    scale = resolution / min(height, width)
    new_h, new_w = max(resolution, round(height * scale)), max(resolution, round(width * scale))
    return new_h, new_w, (new_h - resolution) // 2, (new_w - resolution) // 2


def _crop(x, plan, resolution):
    _, _, top, left = plan
    return x[..., top:top + resolution, left:left + resolution]


def resize_image(img, resolution):
    """float (C, H, W) -> (C, R, R): bilinear with antialiasing, then the centre crop. None: unchanged."""
    if resolution is None:
        return img
    plan = _plan(*img.shape[-2:], resolution)
    out = F.interpolate(img[None].float(), size=plan[:2], mode="bilinear", antialias=True, align_corners=False)
    return _crop(out[0], plan, resolution)


def resize_nearest(x, resolution):
    """(..., H, W) depth / mask / ids -> (..., R, R): nearest-exact (values are copied, never blended)."""
    if resolution is None:
        return x
    plan = _plan(*x.shape[-2:], resolution)
    lead = x.shape[:-2]
    flat = x.reshape(1, -1, *x.shape[-2:])  # (1, C, H, W) with every leading axis folded into C
    out = F.interpolate(flat.float(), size=plan[:2], mode="nearest-exact").to(x.dtype)
    return _crop(out.reshape(*lead, *plan[:2]), plan, resolution)


def resize_flow(flow, resolution):
    """(2, H, W) flow in pixels -> (2, R, R): nearest-exact, then u, v rescaled with the image's width, height."""
    if resolution is None:
        return flow
    height, width = flow.shape[-2:]
    new_h, new_w, _, _ = _plan(height, width, resolution)
    scale = torch.tensor([new_w / width, new_h / height], dtype=flow.dtype)[:, None, None]  # (2, 1, 1)
    return resize_nearest(flow, resolution) * scale


# ----------------------------------------------------------------------------------------------------------
# Hypersim's raw distances
# ----------------------------------------------------------------------------------------------------------

def hypersim_focal(height, width, path="distance"):
    """Hypersim's focal length in pixels for an (height, width) array: 886.81 at 1024 x 768, scaled with the width.
    Every Hypersim camera has the same 60 degree horizontal field of view, so only a 4:3 array has a known focal."""
    if height * HYPERSIM_SIZE[1] != width * HYPERSIM_SIZE[0]:
        raise DatasetError(f"{path}: a {width}x{height} array is not 4:3 like Hypersim's 1024x768 frames; "
                           "pass its focal length explicitly")
    return HYPERSIM_FOCAL * width / HYPERSIM_SIZE[1]


def distance_to_planar_depth(distance, focal=None):
    """(H, W) distance from the camera centre -> planar depth: d * f / ||(x, y, f)||, with (x, y) the pixel
    centre's offset from the image centre, in pixels (x = j - (W - 1) / 2, y = i - (H - 1) / 2). focal None:
    Hypersim's, for the array's size (hypersim_focal)."""
    height, width = distance.shape
    focal = hypersim_focal(height, width) if focal is None else focal
    y = torch.arange(height, dtype=torch.float64) - (height - 1) / 2
    x = torch.arange(width, dtype=torch.float64) - (width - 1) / 2
    norm = torch.sqrt(x[None, :] ** 2 + y[:, None] ** 2 + focal ** 2)  # (H, W)
    return (distance.double() * focal / norm).to(distance.dtype)


def read_hypersim_hdf5(path, focal=None):
    """A raw Hypersim `*.depth_meters.hdf5` (distance, NaN where no surface was hit) -> planar depth (H, W) float32,
    0 where the distance is NaN (invalid under HYPERSIM_VALID). Needs h5py, which minidp does not depend on."""
    try:
        import h5py
    except ImportError:
        raise DatasetError(f"{path}: reading Hypersim's raw .hdf5 needs the optional package h5py "
                           "(pip install h5py); Marigold's PNG layout needs nothing") from None
    with h5py.File(_need_file(path), "r") as f:
        distance = torch.from_numpy(np.asarray(f["dataset"], dtype=np.float32))
    if focal is None:
        focal = hypersim_focal(*distance.shape, path=path)
    return distance_to_planar_depth(torch.nan_to_num(distance, nan=0.0), focal)


# ----------------------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------------------

def _need_dir(path):
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{path}: no such folder")
    return path


def _images_in(folder):
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class SampleList(torch.utils.data.Dataset):
    """A dataset of a `samples` list, one per index (every reader here, benchmark_sets.DepthFrames); subclasses
    decode sample i in __getitem__."""

    def __len__(self):
        return len(self.samples)


class ImageFolder(SampleList):
    """root/<class>/<image>: labels are the sorted class-folder names' indices (torchvision's ImageFolder), or
    their indices in `classes` (the training folder's list, for a validation folder that may lack some)."""

    def __init__(self, root, resolution=None, classes=None):
        root = _need_dir(root)
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        if not found:
            raise DatasetError(f"{root}: no class folders")
        self.classes = list(classes) if classes is not None else found
        label = {name: k for k, name in enumerate(self.classes)}
        unknown = [name for name in found if name not in label]
        if unknown:
            raise DatasetError(f"{root / unknown[0]}: a class folder the training split does not have "
                               f"({len(unknown)} such folder(s)); labels would not match the training labels")
        self.samples = [(path, label[name]) for name in found for path in _images_in(root / name)]
        if not self.samples:
            raise DatasetError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
        self.resolution = resolution

    def __getitem__(self, i):
        path, label = self.samples[i]
        return {"rgb": resize_image(to_unit_range(read_image(path)), self.resolution),
                "label": torch.tensor(label, dtype=torch.long)}


def read_split_list(path, columns, exists, where, skip=lambda names: False):
    """Marigold's file lists: one frame per line, its first `columns` names -> [[name, ...]] in the list's order;
    exists(name) says whether `where` holds the named file. A line for which skip(names) holds is left out; a short
    line or a name that is not there is a DatasetError naming the list and the line."""
    frames = []
    for number, line in enumerate(_read(path, text=True).splitlines(), start=1):
        names = line.split()
        if not names:
            continue
        if len(names) < columns:
            raise DatasetError(f"{path}: line {number} has {len(names)} path(s), expected {columns}")
        if skip(names):
            continue
        for name in names[:columns]:
            if not exists(name):
                raise DatasetError(f"{path}: line {number} names {name}, which does not exist in {where}")
        frames.append(names[:columns])
    if not frames:
        raise DatasetError(f"{path}: no frames listed")
    return frames


class Hypersim(SampleList):
    """Marigold's Hypersim: root/<split>/<scene>/rgb_cam_XX_frYYYY.png + depth_plane_cam_XX_frYYYY.png
    (uint16 millimetres). The frames are those of Marigold's filtered list when there is one: `split_file`, or
    root/filename_list_<split>_filtered.txt (copied from prs-eth/Marigold's data_split/hypersim_depth/)."""

    def __init__(self, root, split="train", resolution=None, split_file=None):
        folder = _need_dir(Path(root) / split)
        listed = Path(split_file) if split_file is not None else Path(root) / f"filename_list_{split}_filtered.txt"
        if split_file is not None or listed.is_file():
            listed = read_split_list(listed, 2, lambda name: (folder / name).is_file(), folder)
            self.samples = [(folder / rgb, folder / depth) for rgb, depth in listed]
        else:  # every frame Marigold's preprocessing wrote, sorted
            self.samples = []
            for rgb in sorted(folder.glob("*/rgb_*.png")):
                depth = rgb.with_name("depth_plane_" + rgb.name[len("rgb_"):])
                if not depth.is_file():
                    raise DatasetError(f"{depth}: missing depth for {rgb.name}")
                self.samples.append((rgb, depth))
        if not self.samples:
            raise DatasetError(f"{folder}: no <scene>/rgb_*.png files")
        self.resolution = resolution

    def __getitem__(self, i):
        rgb_path, depth_path = self.samples[i]
        depth = read_png16(depth_path).float() / 1000  # (H, W) metres
        valid = (depth > HYPERSIM_VALID[0]) & (depth < HYPERSIM_VALID[1])
        rgb = to_unit_range(read_image(rgb_path))  # (3, H, W)
        if rgb.shape[-2:] != depth.shape:
            raise DatasetError(f"{depth_path}: size {tuple(depth.shape)} differs from its image's {tuple(rgb.shape[-2:])}")
        return {"rgb": resize_image(rgb, self.resolution), "depth": resize_nearest(depth, self.resolution),
                "valid": resize_nearest(valid, self.resolution)}


class FlyingChairs(SampleList):
    """root/data/NNNNN_{img1.ppm, img2.ppm, flow.flo}; split file: line k (sample k in sorted order) holds
    1 (train) or 2 (validation). The split file defaults to root/FlyingChairs_train_val.txt."""

    SPLITS = {"train": 1, "val": 2}

    def __init__(self, root, split="train", resolution=None, split_file=None):
        if split not in self.SPLITS:
            raise DatasetError(f"unknown FlyingChairs split {split!r}; valid: {', '.join(self.SPLITS)}")
        data = _need_dir(Path(root) / "data")
        split_file = Path(split_file) if split_file is not None else Path(root) / "FlyingChairs_train_val.txt"
        ids = sorted(p.name[:-len("_img1.ppm")] for p in data.glob("*_img1.ppm"))
        if not ids:
            raise DatasetError(f"{data}: no *_img1.ppm files")
        text = _read(split_file, text=True)
        try:
            marks = [int(tok) for tok in text.split()]
        except ValueError:
            raise DatasetError(f"{split_file}: expected one integer (1 or 2) per line") from None
        if len(marks) != len(ids) or not set(marks) <= {1, 2}:
            raise DatasetError(f"{split_file}: {len(marks)} entries of 1/2 for {len(ids)} samples in {data}")
        self.samples = [(data / f"{i}_img1.ppm", data / f"{i}_img2.ppm", data / f"{i}_flow.flo")
                        for i, mark in zip(ids, marks) if mark == self.SPLITS[split]]
        self.resolution = resolution

    def __getitem__(self, i):
        img1, img2, flo = self.samples[i]
        flow = read_flo(flo)  # (2, H, W)
        valid = (flow.abs() < FLOW_SANITY).all(dim=0)  # (H, W); False where NaN or inf
        flow = torch.where(valid, flow, 0.0)  # a masked-out NaN would still make the masked loss NaN (NaN x 0)
        R = self.resolution
        return {"rgb": resize_image(to_unit_range(read_image(img1)), R),
                "rgb2": resize_image(to_unit_range(read_image(img2)), R),
                "flow": resize_flow(flow, R), "flow_valid": resize_nearest(valid, R)}


class Pix2Gestalt(SampleList):
    """root/{occlusion, visible_object_mask, whole, whole_mask}/ with one file per sample in each folder.
    Files match by name once a folder's own suffix is dropped: `12_occlusion.png` and `12.png` are sample 12.
    Order and split are the official loader's: occlusion/'s file names sorted whole (so `10_occlusion.png`
    comes before `1_occlusion.png`), the last 1 % from floor(0.99 N) held out as "val"; split None: every sample."""

    FOLDERS = {"occlusion": "_occlusion", "visible_object_mask": "_visible_mask", "whole": "_whole",
               "whole_mask": "_whole_mask"}
    SPLITS = ("train", "val", None)

    def __init__(self, root, split=None, resolution=None):
        if split not in self.SPLITS:
            raise DatasetError(f"unknown pix2gestalt split {split!r}; valid: train, val (or None: every sample)")
        by_folder = {folder: {p.stem.removesuffix(suffix): p for p in _images_in(_need_dir(Path(root) / folder))}
                     for folder, suffix in self.FOLDERS.items()}
        ids = sorted(by_folder["occlusion"], key=lambda i: by_folder["occlusion"][i].name)  # the official order
        if not ids:
            raise DatasetError(f"{Path(root) / 'occlusion'}: no images")
        held_out = len(ids) * 99 // 100  # floor(N / 100 * 99), the official first validation sample
        ids = {"train": ids[:held_out], "val": ids[held_out:], None: ids}[split]
        for folder, files in by_folder.items():
            missing = [i for i in ids if i not in files]
            if missing:
                raise DatasetError(f"{Path(root) / folder}: no file for sample {missing[0]!r} "
                                   f"({len(missing)} of {len(ids)} missing)")
        self.samples = [tuple(by_folder[f][i] for f in self.FOLDERS) for i in ids]
        self.resolution = resolution

    def __getitem__(self, i):
        occlusion, visible, whole, whole_mask = self.samples[i]
        R = self.resolution
        visible = read_mask(visible)  # (H, W)
        return {"rgb": resize_image(to_unit_range(read_image(occlusion)), R),
                "ids": resize_nearest(visible.long(), R),
                "amodal": resize_nearest(read_mask(whole_mask), R)[None],  # (1, R, R)
                "alone": resize_image(to_unit_range(read_image(whole)), R)[None]}  # (1, 3, R, R)


DATASETS = {"imagenet": ImageFolder, "hypersim": Hypersim, "flyingchairs": FlyingChairs, "pix2gestalt": Pix2Gestalt}
