"""The paper's benchmark layouts (minidp/benchmark_sets.py): each benchmark's folder or archive, built tiny here in
its published layout, reads back exactly, with the protocol's crops and valid masks equal to hand-computed ones.

Independent references: PNGs are written byte by byte (tests/test_readers.write_png), the crops are stated as the
pixel rows and columns they must come to. tests/test_protocol.py builds its runs' benchmark folders with nyu_tree.

Run: pytest -q tests/test_benchmark_sets.py
"""

import tarfile
from pathlib import Path

import numpy as np
import torch
from test_readers import rgb_array, write_png

from minidp import benchmark_sets


def as_unit(arr):
    return torch.from_numpy(arr.astype(np.float32)).permute(2, 0, 1) / 127.5 - 1  # (3, H, W)


def tar_folder(folder, archive):
    """Pack folder's files as members "./<path>", the way Marigold's evaluation archives are made."""
    with tarfile.open(archive, "w") as tar:
        for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
            tar.add(path, arcname="./" + path.relative_to(folder).as_posix())


def write_list(root, bench, lines):
    path = Path(root) / benchmark_sets.BENCHMARKS[bench].split
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))  # Marigold's lists end without a newline


def nyu_tree(root, n=2, size=(480, 640), archive=True):
    """NYUv2 in Marigold's layout: test/<scene>/rgb_NNNN.png, depth_NNNN.png (mm), filled_NNNN.png; depth (mm)."""
    folder = Path(root) / "nyuv2" / "nyu_labeled_extracted"
    lines, depths = [], []
    for k in range(n):
        rows, cols = np.mgrid[:size[0], :size[1]]
        mm = (1500 + 5 * rows + 3 * cols + 100 * k).astype(np.uint16)  # a slanted floor: 1.5 .. 5.8 m
        mm[size[0] * 5 // 24, size[1] * 5 // 32] = 0  # (100, 100) at 480 x 640: a hole in the sensor's depth
        mm[size[0] * 5 // 12, size[1] * 15 // 32] = 12000  # (200, 300): 12 m, beyond NYUv2's 10 m
        rel = [f"test/kitchen_0004/{kind}_{k + 1:04d}.png" for kind in ("rgb", "depth", "filled")]
        write_png(folder / rel[0], rgb_array(k, *size))
        write_png(folder / rel[1], mm)
        write_png(folder / rel[2], np.full(size, 2000, dtype=np.uint16))
        lines.append(" ".join(rel))
        depths.append(mm)
    if archive:
        tar_folder(folder, folder.with_suffix(".tar"))
        for p in sorted(folder.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        folder.rmdir()
    write_list(root, "nyuv2", lines)
    return depths


# ----------------------------------------------------------------------------------------------------------
# Layouts read back exactly, with the protocol's crops and valid masks
# ----------------------------------------------------------------------------------------------------------

def test_nyuv2_from_its_archive_reads_back_with_the_eigen_mask(tmp_path):
    depths = nyu_tree(tmp_path)
    frames = benchmark_sets.open_frames(benchmark_sets.BENCHMARKS["nyuv2"], tmp_path)
    assert len(frames) == 2
    item = frames[1]
    assert torch.equal(item["rgb"], as_unit(rgb_array(1, 480, 640)))
    assert torch.equal(item["depth"], torch.from_numpy(depths[1].astype(np.float32)) / 1000)
    valid = item["valid"]
    # the Eigen region is rows 45..470 and columns 41..600, hand-stated; minus the hole and the 12 m pixel
    assert valid.sum().item() == 426 * 560 - 2
    assert valid[45, 41] and valid[470, 600] and not valid[44, 41] and not valid[45, 40]
    assert not valid[471, 600] and not valid[470, 601] and not valid[100, 100] and not valid[200, 300]


def test_kitti_drops_frames_without_ground_truth_and_applies_the_benchmark_crop_and_eigen_mask(tmp_path):
    folder = tmp_path / "kitti" / "kitti_eigen_split_test"
    H, W = 375, 1242  # a raw KITTI frame: the crop keeps rows 23..374, columns 13..1228
    rgb = rgb_array(5, H, W)
    depth = np.zeros((H, W), np.uint16)
    depth[::3, ::2] = 256 * 20  # sparse lidar, 20 m
    depth[300, 600] = 256 * 90  # beyond KITTI's 80 m
    rgb_rel = "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png"
    depth_rel = "2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png"
    write_png(folder / rgb_rel, rgb)
    write_png(folder / depth_rel, depth)
    write_list(tmp_path, "kitti", [f"{rgb_rel} {depth_rel} 721.5377",
                                   "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000075.png None 721.5377"])
    frames = benchmark_sets.open_frames(benchmark_sets.BENCHMARKS["kitti"], tmp_path)  # the extracted folder works too
    assert len(frames) == 1
    item = frames[0]
    assert torch.equal(item["rgb"], as_unit(rgb[23:375, 13:1229]))
    assert torch.equal(item["depth"], torch.from_numpy(depth[23:375, 13:1229].astype(np.float32)) / 256)
    # Eigen's region of the 352 x 1216 crop: rows int(0.3324324 * 352) = 117 .. 320, columns 43 .. 1171
    expected = np.zeros((352, 1216), bool)
    expected[117:321, 43:1172] = True
    cropped = depth[23:375, 13:1229] / 256
    expected &= (cropped > 1e-5) & (cropped < 80)
    assert item["valid"].tolist() == expected.tolist()
    assert not item["valid"][300 - 23, 600 - 13]


def test_eth3d_diode_scannet_hypersim_layouts_read_back_exactly(tmp_path):
    # ETH3D: an 8-bit JPG and raw float32 depth of the image's size, inf where missing
    eth = tmp_path / "eth3d" / "eth3d"
    rgb = rgb_array(7, 6, 8)
    write_png(eth / "rgb/office/images/dslr_images/DSC_0219.JPG", rgb)  # PNG bytes: exact, whatever the name
    depth = np.linspace(0.5, 30, 48, dtype=np.float32).reshape(6, 8)
    depth[2, 3] = np.inf
    depth_rel = "depth/office_dslr_depth/office/ground_truth_depth/dslr_images/DSC_0219.JPG"
    (eth / depth_rel).parent.mkdir(parents=True)
    (eth / depth_rel).write_bytes(depth.astype("<f4").tobytes())
    tar_folder(eth, eth.with_suffix(".tar"))
    write_list(tmp_path, "eth3d", [f"rgb/office/images/dslr_images/DSC_0219.JPG {depth_rel}"])
    item = benchmark_sets.open_frames(benchmark_sets.BENCHMARKS["eth3d"], tmp_path)[0]
    assert torch.equal(item["rgb"], as_unit(rgb))
    assert item["depth"][2, 3].item() == 0 and not item["valid"][2, 3] and item["valid"].sum().item() == 47
    kept = np.isfinite(depth)
    assert np.array_equal(item["depth"].numpy()[kept], depth[kept])

    # DIODE: depth (H, W, 1) .npy and its mask .npy, the mask alone says what is valid
    diode = tmp_path / "diode" / "diode_val"
    base = "indoors/scene_00021/scan_00189/00021_00189_indoors_200_010"
    write_png(diode / f"{base}.png", rgb)
    d = np.random.default_rng(0).uniform(0.1, 400, (6, 8, 1)).astype(np.float32)
    mask = np.random.default_rng(1).random((6, 8)) > 0.3
    np.save(diode / f"{base}_depth.npy", d)
    np.save(diode / f"{base}_depth_mask.npy", mask.astype(np.float32))
    write_list(tmp_path, "diode", [f"{base}.png {base}_depth.npy {base}_depth_mask.npy"])
    item = benchmark_sets.open_frames(benchmark_sets.BENCHMARKS["diode"], tmp_path)[0]
    assert torch.equal(item["depth"], torch.from_numpy(d[..., 0])) and item["valid"].tolist() == mask.tolist()

    # ScanNet: colour/NNNNNN.jpg and 16-bit depth in mm; Hypersim val: Marigold's PNGs, valid (1e-5, 65) m
    for bench, rgb_rel, depth_rel, folder in (
            ("scannet", "scene0406_02/color/000300.jpg", "scene0406_02/depth/000300.png",
             "scannet/scannet_val_sampled_800_1"),
            ("hypersim_val", "ai_003_010/rgb_cam_00_fr0000.png", "ai_003_010/depth_plane_cam_00_fr0000.png",
             "hypersim/hypersim_processed_val")):
        mm = np.array([[0, 500, 9999, 10001, 64999, 65535, 1, 3000]] * 6, dtype=np.uint16)
        write_png(tmp_path / folder / rgb_rel, rgb)
        write_png(tmp_path / folder / depth_rel, mm)
        write_list(tmp_path, bench, [f"{rgb_rel} {depth_rel}"])
        item = benchmark_sets.open_frames(benchmark_sets.BENCHMARKS[bench], tmp_path)[0]
        low, high = benchmark_sets.BENCHMARKS[bench].depth_range
        assert torch.equal(item["rgb"], as_unit(rgb))
        assert torch.equal(item["depth"], torch.from_numpy(mm.astype(np.float32)) / 1000)
        assert item["valid"].tolist() == ((mm / 1000 > low) & (mm / 1000 < high)).tolist(), bench
