"""The paper's evaluation sets in the layouts Marigold's evaluation reads: which frames, where, and how each is read.

minidp/protocol.py evaluates a run on them; this module only finds and reads them. The facts were read from
prs-eth/Marigold (src/dataset/*_dataset.py, config/dataset_depth/data_*.yaml, data_split/):

    benchmark     frames  under --root (Marigold's `dir`)        depth file           valid (m)    crop / mask
    hypersim_val  7370    hypersim/hypersim_processed_val.tar    16-bit PNG, mm       (1e-5, 65)   -
    nyuv2         654     nyuv2/nyu_labeled_extracted.tar        16-bit PNG, mm       (1e-3, 10)   Eigen [45:471,41:601]
    kitti         652     kitti/kitti_eigen_split_test.tar       16-bit PNG, 1/256 m  (1e-5, 80)   KB crop, Eigen
    eth3d         454     eth3d/eth3d.tar                        raw float32, inf=0   (1e-5, inf)  -
    scannet       800     scannet/scannet_val_sampled_800_1.tar  16-bit PNG, mm       (1e-3, 10)   -
    diode         771     diode/diode_val.tar                    .npy + mask .npy     its mask     -

Each frame list is Marigold's data_split/ file (copy that folder into --root): one line per frame, the paths of its
RGB image, its depth (KITTI: "None" for the 45 frames without ground truth, dropped), and a third column (NYUv2 the
filled depth, unused by evaluation; KITTI the focal length; DIODE the mask). An archive is read in place (members
named "./<path>", as Marigold's tars are); the folder it extracts to (the same name without .tar) works too.

Notable choices:
- Marigold's ETH3D reader hard-codes 6048 x 4032; minidp takes the RGB image's size (the same for every real frame)
  and refuses a depth file of another byte count, so test fixtures can be small. NYUv2's Eigen mask is in pixels
  of 480 x 640 frames and KITTI's benchmark crop needs at least 352 x 1216: other sizes are refused.
- Every file that cannot be read, a layout that does not match and a frame list that names a missing frame is a
  DatasetError with one line naming the file.
Letters: H, W a frame's size.
"""

import io
import math
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from minidp import readers
from minidp.errors import one_line
from minidp.readers import DatasetError

NYU_EIGEN_CROP = (45, 471, 41, 601)  # rows, columns of 480 x 640 frames (Marigold's nyu_dataset.py)
NYU_SIZE = (480, 640)
KITTI_BM_CROP = (352, 1216)  # KITTI's benchmark size: the bottom 352 rows, the centre 1216 columns
KITTI_EIGEN_CROP = (0.3324324, 0.91351351, 0.0359477, 0.96405229)  # fractions of the cropped frame (Eigen NIPS'14)


# ----------------------------------------------------------------------------------------------------------
# The benchmarks
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Benchmark:
    name: str                        # --benchmark NAME, and eval_<name>.json
    task: str                        # what it measures (a run must have been trained on it)
    title: str                       # its column in the paper's table
    source: str                      # under --root: Marigold's archive (or the folder it extracts to), or a folder
    split: str = ""                  # under --root: the frame list (Marigold's data_split/ file); "" = the reader's
    frames: int = 0                  # frames of the official evaluation
    depth_range: tuple = (0.0, math.inf)  # metres: valid ground truth, and the clip of the aligned prediction
    align: str = "depth"             # least squares in "depth" or "disparity"
    align_max_res: int = 0           # fit on a copy downsized to at most this many pixels a side (0: full size)


BENCHMARKS = {b.name: b for b in [
    Benchmark("hypersim_val", "depth", "Hypersim", "hypersim/hypersim_processed_val.tar",
              "data_split/hypersim_depth/filename_list_val_filtered.txt", 7370, (1e-5, 65.0)),
    Benchmark("eth3d", "depth", "ETH3D", "eth3d/eth3d.tar", "data_split/eth3d_depth/eth3d_filename_list.txt", 454,
              (1e-5, math.inf), align_max_res=1024),
    Benchmark("nyuv2", "depth", "NYUv2", "nyuv2/nyu_labeled_extracted.tar",
              "data_split/nyu_depth/labeled/filename_list_test.txt", 654, (1e-3, 10.0)),
    Benchmark("scannet", "depth", "ScanNet", "scannet/scannet_val_sampled_800_1.tar",
              "data_split/scannet_depth/scannet_val_sampled_list_800_1.txt", 800, (1e-3, 10.0)),
    Benchmark("diode", "depth", "DIODE", "diode/diode_val.tar",
              "data_split/diode_depth/diode_val_all_filename_list.txt", 771, (0.6, 350.0)),
    Benchmark("kitti", "depth", "KITTI", "kitti/kitti_eigen_split_test.tar",
              "data_split/kitti_depth/eigen_test_files_with_gt.txt", 652, (1e-5, 80.0)),
    Benchmark("flyingchairs_val", "flow", "FlyingChairs", "FlyingChairs_release", frames=640),
    Benchmark("pix2gestalt_val", "amodal", "P2G", "pix2gestalt"),  # 1 % of the release, whatever its size
]}

# ----------------------------------------------------------------------------------------------------------
# Files: a folder or a tar archive read in place
# ----------------------------------------------------------------------------------------------------------

class Store:
    """A benchmark's files by relative path, from a folder or from a tar archive without extracting it."""

    def __init__(self, path):
        self.path, self.tar = Path(path), None
        if self.path.is_file():
            if not tarfile.is_tarfile(self.path):
                raise DatasetError(f"{self.path}: not a tar archive")
            self.tar = tarfile.open(self.path)
            # Marigold's archives name members "./<path>"; one made without "./" works the same
            self.members = {m.name.removeprefix("./"): m for m in self.tar.getmembers() if m.isfile()}

    def has(self, rel):
        return rel in self.members if self.tar is not None else (self.path / rel).is_file()

    def read(self, rel):
        try:
            if self.tar is not None:
                return self.tar.extractfile(self.members[rel]).read()
            return (self.path / rel).read_bytes()
        except (OSError, tarfile.TarError) as e:  # an unreadable file, a truncated archive
            raise DatasetError(f"{self.name(rel)}: cannot read it ({one_line(e)})") from None

    def name(self, rel):
        return f"{self.path}:{rel}" if self.tar is not None else str(self.path / rel)


def open_store(root, source):
    """root/source (an archive), or the folder it extracts to (source without .tar); DatasetError if neither."""
    path = Path(root) / source
    folder = path.with_suffix("") if path.suffix == ".tar" else path
    for candidate in (path, folder):
        if candidate.is_dir() or candidate.is_file():
            return Store(candidate)
    also = f" (or the folder {folder})" if folder != path else ""
    raise DatasetError(f"{path}: no such archive or folder{also}; tutorial 10 says what to download and where")


def read_frame_list(root, bench, store):
    """Marigold's frame list for `bench`: [line's paths] with every named file checked present in `store`, KITTI's
    frames without ground truth dropped (Marigold's kitti_dataset.py)."""
    path = Path(root) / bench.split
    if not path.is_file():
        raise DatasetError(f"{path}: no frame list; copy prs-eth/Marigold's data_split/ folder into {root}")
    columns = 3 if bench.name == "diode" else 2  # DIODE's third path is its mask; NYUv2's (filled depth) is unused
    # KITTI: 45 of the 697 Eigen test frames have no ground truth ("None" for the depth), dropped
    return readers.read_split_list(path, columns, store.has, store.path,
                                   skip=lambda names: bench.name == "kitti" and names[1] == "None")


# ----------------------------------------------------------------------------------------------------------
# Decoding one depth frame: (rgb uint8 (3, H, W), depth (H, W) metres, valid (H, W) bool), crops applied
# ----------------------------------------------------------------------------------------------------------

def _image(data, name):
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.mode, np.asarray(im.convert("RGB") if im.mode not in ("I;16", "I;16B", "I") else im)
    except OSError as e:
        raise DatasetError(f"{name}: cannot decode image ({type(e).__name__})") from None


def _rgb(store, rel):
    mode, arr = _image(store.read(rel), store.name(rel))
    if arr.ndim != 3:
        raise DatasetError(f"{store.name(rel)}: expected a colour image, Pillow reads mode {mode}")
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()  # (3, H, W) uint8


def _png16(store, rel, scale):
    """A 16-bit PNG of depth in units of 1/scale metres -> (H, W) float32 metres."""
    mode, arr = _image(store.read(rel), store.name(rel))
    if arr.ndim != 2:
        raise DatasetError(f"{store.name(rel)}: expected a 16-bit greyscale PNG of depth, Pillow reads mode {mode}")
    return torch.from_numpy(arr.astype(np.float32) / scale)


def _npy(store, rel):
    try:
        return np.load(io.BytesIO(store.read(rel)), allow_pickle=False).squeeze()
    except ValueError as e:
        raise DatasetError(f"{store.name(rel)}: not a readable .npy array ({one_line(e)})") from None


def _in_range(depth, bench):
    low, high = bench.depth_range
    return (depth > low) & (depth < high)


def _same_size(rgb, depth, store, rel):
    if tuple(rgb.shape[-2:]) != tuple(depth.shape):
        raise DatasetError(f"{store.name(rel)}: depth {tuple(depth.shape)} does not match its image's "
                           f"{tuple(rgb.shape[-2:])}")


def nyu_eigen_mask(height, width):
    """NYUv2's evaluation region (Eigen et al.): rows 45..470, columns 41..600 of a 480 x 640 frame."""
    top, bottom, left, right = NYU_EIGEN_CROP
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[top:bottom, left:right] = True
    return mask


def kitti_benchmark_crop(x):
    """(..., H, W) -> (..., 352, 1216): KITTI's benchmark size, the bottom rows and the centre columns."""
    height, width = x.shape[-2:]
    h, w = KITTI_BM_CROP
    top, left = height - h, (width - w) // 2
    return x[..., top:top + h, left:left + w]


def kitti_eigen_mask(height, width):
    """KITTI's Eigen evaluation region, as fractions of the (cropped) frame, truncated to pixels as Marigold does."""
    r0, r1, c0, c1 = KITTI_EIGEN_CROP
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[int(r0 * height):int(r1 * height), int(c0 * width):int(c1 * width)] = True
    return mask


def read_png_mm(store, names, bench):  # Hypersim, ScanNet: 16-bit PNG in millimetres
    rgb, depth = _rgb(store, names[0]), _png16(store, names[1], 1000.0)
    _same_size(rgb, depth, store, names[1])
    return rgb, depth, _in_range(depth, bench)


def read_nyuv2(store, names, bench):
    rgb, depth, valid = read_png_mm(store, names, bench)
    if tuple(depth.shape) != NYU_SIZE:
        raise DatasetError(f"{store.name(names[1])}: {tuple(depth.shape)} is not NYUv2's 480 x 640, where the Eigen "
                           "mask is defined")
    return rgb, depth, valid & nyu_eigen_mask(*depth.shape)


def read_kitti(store, names, bench):
    rgb, depth = _rgb(store, names[0]), _png16(store, names[1], 256.0)  # KITTI stores depth * 256
    _same_size(rgb, depth, store, names[1])
    if depth.shape[0] < KITTI_BM_CROP[0] or depth.shape[1] < KITTI_BM_CROP[1]:
        raise DatasetError(f"{store.name(names[1])}: {tuple(depth.shape)} is smaller than KITTI's benchmark crop "
                           f"{KITTI_BM_CROP}")
    rgb, depth = kitti_benchmark_crop(rgb), kitti_benchmark_crop(depth)
    return rgb, depth, _in_range(depth, bench) & kitti_eigen_mask(*depth.shape)


def read_eth3d(store, names, bench):
    rgb = _rgb(store, names[0])
    height, width = rgb.shape[-2:]
    data = store.read(names[1])
    if len(data) != height * width * 4:
        raise DatasetError(f"{store.name(names[1])}: {len(data)} bytes, not the {height * width * 4} of a "
                           f"{width}x{height} float32 depth map (ETH3D's raw format)")
    depth = torch.from_numpy(np.frombuffer(data, dtype="<f4").reshape(height, width).copy())
    depth[torch.isinf(depth)] = 0.0  # ETH3D marks missing depth with inf; Marigold sets it to 0 (invalid)
    return rgb, depth, _in_range(depth, bench)


def read_diode(store, names, bench):
    rgb = _rgb(store, names[0])
    depth = torch.from_numpy(_npy(store, names[1]).astype(np.float32))
    valid = torch.from_numpy(_npy(store, names[2]).astype(bool))  # DIODE's mask alone (Marigold's diode_dataset.py)
    _same_size(rgb, depth, store, names[1])
    _same_size(rgb, valid, store, names[2])
    return rgb, depth, valid


FRAME_READERS = {"hypersim_val": read_png_mm, "scannet": read_png_mm, "nyuv2": read_nyuv2, "kitti": read_kitti,
                 "eth3d": read_eth3d, "diode": read_diode}


class DepthFrames(readers.SampleList):
    """A depth benchmark's frames in its list's order: {"rgb" (3, H, W) in [-1, 1], "depth" (H, W), "valid"}."""

    def __init__(self, bench, root):
        self.bench, self.store = bench, open_store(root, bench.source)
        self.samples = read_frame_list(root, bench, self.store)

    def __getitem__(self, i):
        rgb, depth, valid = FRAME_READERS[self.bench.name](self.store, self.samples[i], self.bench)
        if not valid.any():
            raise DatasetError(f"{self.store.name(self.samples[i][1])}: no valid depth pixel in the evaluation region")
        return {"rgb": readers.to_unit_range(rgb), "depth": depth, "valid": valid}


def open_frames(bench, root):
    """The benchmark's frames at their native size (every file checked present before any model work)."""
    if bench.task == "depth":
        return DepthFrames(bench, root)
    folder = Path(root) / bench.source
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder; tutorial 10 says what to download and where")
    if bench.task == "flow":
        return readers.FlyingChairs(folder, split="val")
    return readers.Pix2Gestalt(folder, split="val")
