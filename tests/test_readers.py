"""Real-dataset readers: every layout is built tiny in tmp_path and read back exactly; every bad file is one line.

Independent references: the PNG and PPM fixtures are written byte by byte here (zlib + struct, not Pillow), so a
decoder that rescales 16-bit values or mis-orders channels fails; .flo is checked against its byte layout.

Run: pytest -q tests/test_readers.py
"""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from minidp import readers


# ----------------------------------------------------------------------------------------------------------
# Fixture writers, independent of the code under test
# ----------------------------------------------------------------------------------------------------------

def write_png(path, arr):
    """uint8 (H, W, 3) RGB, uint8 (H, W) grey or uint16 (H, W) grey -> a PNG file, written by hand (filter 0 on
    every row)."""
    arr = np.asarray(arr)
    colour, depth = (2, 8) if arr.ndim == 3 else (0, 8) if arr.dtype == np.uint8 else (0, 16)
    raw = arr.astype(">u2") if depth == 16 else arr.astype(np.uint8)
    height, width = arr.shape[:2]
    rows = b"".join(b"\x00" + raw[i].tobytes() for i in range(height))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows))
                           + chunk(b"IEND", b""))


def write_ppm(path, arr, comment=b""):
    """uint8 (H, W, 3) -> binary PPM (P6), optionally with a comment line in the header."""
    height, width = arr.shape[:2]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(b"P6\n" + comment + f"{width} {height}\n255\n".encode() + arr.astype(np.uint8).tobytes())


def rgb_array(seed, height=6, width=8):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def as_unit(arr):
    return torch.from_numpy(arr.astype(np.float32)).permute(2, 0, 1) / 127.5 - 1  # (3, H, W)


# ----------------------------------------------------------------------------------------------------------
# File formats
# ----------------------------------------------------------------------------------------------------------

def test_png16_decodes_every_uint16_value_exactly(tmp_path):
    mm = np.array([[0, 1, 255, 256], [32767, 32768, 40000, 65535]], dtype=np.uint16)  # both sides of 2^15
    write_png(tmp_path / "d.png", mm)
    out = readers.read_png16(tmp_path / "d.png")
    assert out.dtype == torch.int32 and out.tolist() == mm.astype(int).tolist()


def test_png16_reader_refuses_an_8bit_png(tmp_path):
    write_png(tmp_path / "rgb.png", rgb_array(0))
    with pytest.raises(readers.DatasetError, match=r"rgb\.png: expected a 16-bit greyscale PNG"):
        readers.read_png16(tmp_path / "rgb.png")


def test_png_and_ppm_decode_to_the_same_channels_first_bytes(tmp_path):
    arr = rgb_array(1)
    write_png(tmp_path / "a.png", arr)
    write_ppm(tmp_path / "a.ppm", arr, comment=b"# written by a test\n")
    expected = torch.from_numpy(arr).permute(2, 0, 1)
    assert torch.equal(readers.read_image(tmp_path / "a.png"), expected)
    assert torch.equal(readers.read_ppm(tmp_path / "a.ppm"), expected)


def test_ppm_bad_magic_and_truncation_are_one_line_errors_naming_the_file(tmp_path):
    (tmp_path / "p3.ppm").write_bytes(b"P3\n2 2\n255\n0 0 0")
    with pytest.raises(readers.DatasetError, match=r"p3\.ppm: not a binary PPM"):
        readers.read_ppm(tmp_path / "p3.ppm")
    write_ppm(tmp_path / "cut.ppm", rgb_array(2))
    (tmp_path / "cut.ppm").write_bytes((tmp_path / "cut.ppm").read_bytes()[:-5])
    with pytest.raises(readers.DatasetError, match=r"cut\.ppm: truncated PPM: expected 144 bytes of pixels, found 139"):
        readers.read_ppm(tmp_path / "cut.ppm")


def test_flo_write_then_read_is_identity_and_matches_the_byte_layout(tmp_path):
    flow = torch.randn(2, 3, 5) * 20
    readers.write_flo(tmp_path / "f.flo", flow)
    data = (tmp_path / "f.flo").read_bytes()
    assert data[:4] == b"PIEH" and struct.unpack("<ii", data[4:12]) == (5, 3)
    assert struct.unpack("<ff", data[12:20]) == (flow[0, 0, 0].item(), flow[1, 0, 0].item())  # u, v interleaved
    assert len(data) == 12 + 3 * 5 * 2 * 4
    assert torch.equal(readers.read_flo(tmp_path / "f.flo"), flow)


def test_flo_wrong_magic_truncation_and_absence_are_one_line_errors(tmp_path):
    readers.write_flo(tmp_path / "f.flo", torch.zeros(2, 4, 4))
    good = (tmp_path / "f.flo").read_bytes()
    (tmp_path / "magic.flo").write_bytes(b"HEIP" + good[4:])
    (tmp_path / "cut.flo").write_bytes(good[:-4])
    cases = {"magic.flo": r"magic\.flo: wrong \.flo magic b'HEIP', expected b'PIEH'",
             "cut.flo": r"cut\.flo: truncated \.flo: expected 128 bytes of flow, found 124",
             "none.flo": r"none\.flo: no such file"}
    for name, message in cases.items():
        with pytest.raises(readers.DatasetError, match=message) as info:
            readers.read_flo(tmp_path / name)
        assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------------------------------------
# Resizing
# ----------------------------------------------------------------------------------------------------------

def test_resize_keeps_the_centre_square_and_ground_truth_follows_the_image():
    # 8 x 12 -> shorter side 4: resized to 4 x 6, centre crop drops one column each side
    depth = torch.arange(96, dtype=torch.float32).reshape(8, 12)
    out = readers.resize_nearest(depth, 4)
    # nearest-exact at factor 2 samples source pixel 2 i + 1; the crop starts at resized column 1 = source 3
    assert out.tolist() == [[depth[2 * i + 1, 2 * j + 3].item() for j in range(4)] for i in range(4)]
    flow = torch.stack([torch.full((8, 12), 3.0), torch.full((8, 12), -2.0)])  # (2, 8, 12)
    assert torch.equal(readers.resize_flow(flow, 4), torch.stack([torch.full((4, 4), 1.5), torch.full((4, 4), -1.0)]))
    flat = torch.full((3, 8, 12), 0.25)
    assert torch.allclose(readers.resize_image(flat, 4), torch.full((3, 4, 4), 0.25))
    mask = torch.zeros(8, 12, dtype=torch.bool)
    mask[:, 6:] = True
    assert readers.resize_nearest(mask, 4).dtype == torch.bool
    assert readers.resize_nearest(mask, 4)[0].tolist() == [False, False, True, True]
    assert readers.resize_image(flat, None) is flat


def test_distance_to_planar_depth_flattens_a_fronto_parallel_wall():
    # a wall at planar depth 3 m: the distance to pixel (i, j) is 3 * ||(x, y, f)|| / f, hand-derived
    H, W, f = 4, 6, 5.0
    y = torch.arange(H, dtype=torch.float64)[:, None] - 1.5
    x = torch.arange(W, dtype=torch.float64)[None, :] - 2.5
    distance = 3.0 * torch.sqrt(x ** 2 + y ** 2 + f ** 2) / f
    assert torch.allclose(readers.distance_to_planar_depth(distance, focal=f), torch.full((H, W), 3.0, dtype=torch.float64))


def test_hypersim_focal_length_follows_the_arrays_size():
    # a wall at planar depth 2 m seen by a 6 x 8 array: Hypersim's 60 degree camera has f = 886.81 * 8 / 1024 px there
    f = 886.81 * 8 / 1024
    y = torch.arange(6, dtype=torch.float64)[:, None] - 2.5
    x = torch.arange(8, dtype=torch.float64)[None, :] - 3.5
    distance = 2.0 * torch.sqrt(x ** 2 + y ** 2 + f ** 2) / f
    assert torch.allclose(readers.distance_to_planar_depth(distance), torch.full((6, 8), 2.0, dtype=torch.float64))
    with pytest.raises(readers.DatasetError, match=r"a 5x5 array is not 4:3 like Hypersim's 1024x768 frames"):
        readers.distance_to_planar_depth(torch.ones(5, 5))


def test_hypersim_hdf5_nan_distance_reads_as_invalid_zero_depth(tmp_path):
    h5py = pytest.importorskip("h5py")
    distance = np.full((3, 4), 2.0, dtype=np.float32)
    distance[1, 2] = np.nan  # a ray that hit nothing
    with h5py.File(tmp_path / "frame.0000.depth_meters.hdf5", "w") as fh:
        fh["dataset"] = distance
    out = readers.read_hypersim_hdf5(tmp_path / "frame.0000.depth_meters.hdf5")
    assert not torch.isnan(out).any() and out[1, 2].item() == 0.0
    assert not readers.HYPERSIM_VALID[0] < out[1, 2].item() < readers.HYPERSIM_VALID[1]
    f = 886.81 * 4 / 1024  # the focal length of a 4 x 3 array
    assert out[0, 0].item() == pytest.approx(2.0 * f / np.sqrt(1.5 ** 2 + 1.0 ** 2 + f ** 2), rel=1e-6)


def test_hypersim_hdf5_is_converted_when_h5py_is_installed(tmp_path):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "frame.0000.depth_meters.hdf5", "w") as fh:
        fh["dataset"] = np.full((2, 2), 2.0, dtype=np.float32)
    out = readers.read_hypersim_hdf5(tmp_path / "frame.0000.depth_meters.hdf5", focal=1.0)
    assert torch.allclose(out, torch.full((2, 2), 2.0 / np.sqrt(1.5)))  # x, y = +-0.5 at f = 1


# ----------------------------------------------------------------------------------------------------------
# Layouts
# ----------------------------------------------------------------------------------------------------------

def test_image_folder_labels_are_sorted_class_names(tmp_path):
    arrays = {("n02", "b.png"): rgb_array(3), ("n01", "z.JPEG"): rgb_array(4), ("n02", "a.ppm"): rgb_array(5)}
    for (cls, name), arr in arrays.items():
        if name.endswith(".ppm"):
            write_ppm(tmp_path / cls / name, arr)
        elif name.endswith(".png"):
            write_png(tmp_path / cls / name, arr)
        else:  # a lossy JPEG: only its shape and label are checked
            from PIL import Image
            (tmp_path / cls).mkdir(exist_ok=True)
            Image.fromarray(arr).save(tmp_path / cls / name, format="JPEG")
    (tmp_path / "n02" / "notes.txt").write_text("not an image")
    ds = readers.ImageFolder(tmp_path)
    assert ds.classes == ["n01", "n02"] and len(ds) == 3
    assert [ds[i]["label"].item() for i in range(3)] == [0, 1, 1]
    assert ds[0]["rgb"].shape == (3, 6, 8)
    assert torch.equal(ds[1]["rgb"], as_unit(arrays[("n02", "a.ppm")]))  # a.ppm sorts before b.png
    assert torch.equal(ds[2]["rgb"], as_unit(arrays[("n02", "b.png")]))
    assert readers.ImageFolder(tmp_path, resolution=4)[2]["rgb"].shape == (3, 4, 4)


def test_hypersim_png_layout_reads_metres_and_marks_valid_depth(tmp_path):
    scene = tmp_path / "train" / "ai_001_001"
    mm = np.array([[0, 1500, 2000, 64999], [3000, 65535, 1, 700]] * 2, dtype=np.uint16)  # (4, 4)
    write_png(scene / "rgb_cam_00_fr0000.png", rgb_array(6, 4, 4))
    write_png(scene / "depth_plane_cam_00_fr0000.png", mm)
    write_png(scene / "rgb_cam_00_fr0001.png", rgb_array(7, 4, 4))
    write_png(scene / "depth_plane_cam_00_fr0001.png", mm)
    ds = readers.Hypersim(tmp_path, split="train")
    assert len(ds) == 2
    item = ds[0]
    assert torch.equal(item["rgb"], as_unit(rgb_array(6, 4, 4)))
    assert torch.equal(item["depth"], torch.from_numpy(mm.astype(np.float32)) / 1000)
    expected_valid = (mm > 0.01) & (mm < 65000)  # 1e-5 m < depth < 65 m, in millimetres
    assert item["valid"].tolist() == expected_valid.tolist()
    assert item["valid"][0, 0].item() is False and item["valid"][1, 1].item() is False  # 0 and 65.535 m
    with pytest.raises(readers.DatasetError, match=r"val: no such folder"):
        readers.Hypersim(tmp_path, split="val")
    (scene / "depth_plane_cam_00_fr0001.png").unlink()
    with pytest.raises(readers.DatasetError, match=r"depth_plane_cam_00_fr0001\.png: missing depth for rgb_cam_00_fr0001"):
        readers.Hypersim(tmp_path)


def test_hypersim_reads_marigolds_filtered_list_in_its_order(tmp_path):
    scene = tmp_path / "train" / "ai_001_001"
    mm = np.full((4, 4), 1500, dtype=np.uint16)
    for k in range(3):
        write_png(scene / f"rgb_cam_00_fr{k:04d}.png", rgb_array(20 + k, 4, 4))
        write_png(scene / f"depth_plane_cam_00_fr{k:04d}.png", mm)
    # Marigold's filtered list dropped frame 1; its lines are "<scene>/rgb_... <scene>/depth_plane_..."
    listed = tmp_path / "filename_list_train_filtered.txt"
    listed.write_text("ai_001_001/rgb_cam_00_fr0002.png ai_001_001/depth_plane_cam_00_fr0002.png\n"
                      "ai_001_001/rgb_cam_00_fr0000.png ai_001_001/depth_plane_cam_00_fr0000.png\n")
    ds = readers.Hypersim(tmp_path, split="train")
    assert len(ds) == 2
    assert torch.equal(ds[0]["rgb"], as_unit(rgb_array(22, 4, 4))) and torch.equal(ds[1]["rgb"], as_unit(rgb_array(20, 4, 4)))
    listed.write_text(listed.read_text() + "ai_001_001/rgb_cam_00_fr0007.png ai_001_001/depth_plane_cam_00_fr0007.png\n")
    with pytest.raises(readers.DatasetError, match=r"filename_list_train_filtered\.txt: line 3 names .*rgb_cam_00_fr0007"
                                                   r"\.png, which does not exist") as info:
        readers.Hypersim(tmp_path, split="train")
    assert "\n" not in str(info.value)
    listed.unlink()
    assert len(readers.Hypersim(tmp_path, split="train")) == 3  # no list: every frame the preprocessing wrote


def test_imagenet_val_is_labelled_with_the_training_class_list(tmp_path):
    from minidp import data

    for split, classes in (("train", ("n01", "n02", "n03")), ("val", ("n01", "n03"))):  # val lacks n02
        for k, cls in enumerate(classes):
            write_png(tmp_path / split / cls / "a.png", rgb_array(k, 4, 4))
    scenes = data.RealScenes("imagenet", tmp_path, "class", None, train_size=3, val_size=2, val_offset=100,
                             num_classes=3)
    assert [scenes[100 + j]["label"].item() for j in range(2)] == [0, 2]  # n03 is class 2, not val's own 1
    write_png(tmp_path / "val" / "n09" / "a.png", rgb_array(9, 4, 4))
    with pytest.raises(readers.DatasetError, match=r"n09: a class folder the training split does not have"):
        data.RealScenes("imagenet", tmp_path, "class", None, train_size=3, val_size=2, val_offset=100, num_classes=3)


def _gestalt(root, ids, visible_value=255):
    """pix2gestalt's four folders with the release's suffixes; masks single-channel 0/255 like the release's."""
    for k in ids:
        write_png(root / "occlusion" / f"{k}_occlusion.png", rgb_array(int(k), 6, 8))
        visible = np.zeros((6, 8), np.uint8)
        visible[1:3, 2:5] = visible_value
        write_png(root / "visible_object_mask" / f"{k}_visible_mask.png", visible)
        whole = np.zeros((6, 8), np.uint8)
        whole[1:5, 2:6] = 255
        write_png(root / "whole_mask" / f"{k}_whole_mask.png", whole)
        write_png(root / "whole" / f"{k}_whole.png", rgb_array(100 + int(k), 6, 8))


def test_pix2gestalt_order_and_held_out_split_are_the_official_loaders(tmp_path):
    _gestalt(tmp_path, ["1", "2", "10"])
    ds = readers.Pix2Gestalt(tmp_path)
    # the official loader sorts whole file names: "10_occlusion.png" < "1_occlusion.png" < "2_occlusion.png"
    assert [torch.equal(ds[i]["rgb"], as_unit(rgb_array(k, 6, 8))) for i, k in enumerate((10, 1, 2))] == [True] * 3
    train, val = readers.Pix2Gestalt(tmp_path, split="train"), readers.Pix2Gestalt(tmp_path, split="val")
    assert (len(train), len(val)) == (2, 1)  # floor(0.99 * 3) = 2 training samples, the last one held out
    assert torch.equal(val[0]["alone"], as_unit(rgb_array(102, 6, 8))[None])
    item = val[0]
    assert item["ids"].sum().item() == 6 and item["amodal"].sum().item() == 16  # single-channel masks read


def test_pix2gestalt_mask_stored_as_zero_one_is_refused(tmp_path):
    _gestalt(tmp_path, ["1", "2"], visible_value=1)
    ds = readers.Pix2Gestalt(tmp_path)
    with pytest.raises(readers.DatasetError, match=r"1_visible_mask\.png: a mask whose largest value is 1; masks are "
                                                   r"stored as 0/255") as info:
        ds[0]
    assert "\n" not in str(info.value)


def _chairs(root, n=3, marks=(1, 2, 1)):
    flows = []
    for k in range(1, n + 1):
        write_ppm(root / "data" / f"{k:05d}_img1.ppm", rgb_array(10 * k))
        write_ppm(root / "data" / f"{k:05d}_img2.ppm", rgb_array(10 * k + 1))
        flow = torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(k))
        readers.write_flo(root / "data" / f"{k:05d}_flow.flo", flow)
        flows.append(flow)
    (root / "FlyingChairs_train_val.txt").write_text("".join(f"{m}\n" for m in marks))
    return flows


def test_flyingchairs_splits_follow_the_split_file(tmp_path):
    flows = _chairs(tmp_path)
    train, val = readers.FlyingChairs(tmp_path, "train"), readers.FlyingChairs(tmp_path, "val")
    assert (len(train), len(val)) == (2, 1)
    item = val[0]  # sample 00002
    assert torch.equal(item["rgb"], as_unit(rgb_array(20)))
    assert torch.equal(item["rgb2"], as_unit(rgb_array(21)))
    assert torch.equal(item["flow"], flows[1]) and item["flow_valid"].all()
    assert torch.equal(train[1]["flow"], flows[2])
    small = readers.FlyingChairs(tmp_path, "train", resolution=3)[0]
    assert small["flow"].shape == (2, 3, 3) and small["rgb"].shape == (3, 3, 3)


def test_flyingchairs_missing_mismatched_or_undecodable_split_file_is_an_error(tmp_path):
    _chairs(tmp_path)
    (tmp_path / "FlyingChairs_train_val.txt").write_text("1\n2\n")
    with pytest.raises(readers.DatasetError, match=r"FlyingChairs_train_val\.txt: 2 entries of 1/2 for 3 samples"):
        readers.FlyingChairs(tmp_path)
    (tmp_path / "FlyingChairs_train_val.txt").write_bytes(b"1\n\xff\xfe\n1\n")  # not UTF-8 text
    with pytest.raises(readers.DatasetError, match=r"train_val\.txt: cannot read it \(UnicodeDecodeError\)"):
        readers.FlyingChairs(tmp_path)
    (tmp_path / "FlyingChairs_train_val.txt").unlink()
    with pytest.raises(readers.DatasetError, match=r"FlyingChairs_train_val\.txt: no such file"):
        readers.FlyingChairs(tmp_path)
    with pytest.raises(readers.DatasetError, match=r"nowhere[/\\]data: no such folder"):
        readers.FlyingChairs(tmp_path / "nowhere")


def test_pix2gestalt_four_folders_match_by_name(tmp_path):
    for k in ("7", "12"):
        write_png(tmp_path / "occlusion" / f"{k}_occlusion.png", rgb_array(int(k)))
        visible = np.zeros((6, 8, 3), np.uint8)
        visible[1:3, 2:5] = 255
        write_png(tmp_path / "visible_object_mask" / f"{k}_visible_mask.png", visible)
        whole_mask = np.zeros((6, 8, 3), np.uint8)
        whole_mask[1:5, 2:6] = 255
        write_png(tmp_path / "whole_mask" / f"{k}.png", whole_mask)  # matching names without a suffix work too
        write_png(tmp_path / "whole" / f"{k}_whole.png", rgb_array(100 + int(k)))
    ds = readers.Pix2Gestalt(tmp_path)
    assert len(ds) == 2
    item = ds[0]  # "12" sorts before "7"
    assert torch.equal(item["rgb"], as_unit(rgb_array(12)))
    assert torch.equal(item["alone"], as_unit(rgb_array(112))[None])
    assert item["ids"].dtype == torch.long and item["ids"].sum().item() == 6 and item["ids"][1, 2].item() == 1
    assert item["amodal"].shape == (1, 6, 8) and item["amodal"].sum().item() == 16
    (tmp_path / "whole" / "7_whole.png").unlink()
    with pytest.raises(readers.DatasetError, match=r"whole: no file for sample '7' \(1 of 2 missing\)"):
        readers.Pix2Gestalt(tmp_path)


def test_readers_are_deterministic_datasets_with_the_world_keys(tmp_path):
    _chairs(tmp_path)
    ds = readers.FlyingChairs(tmp_path)
    assert isinstance(ds, torch.utils.data.Dataset)
    a, b = ds[0], ds[0]
    assert a.keys() == {"rgb", "rgb2", "flow", "flow_valid"} and all(torch.equal(a[k], b[k]) for k in a)
    from minidp import world
    scene = world.World(1, resolution=16)[0]
    assert {k: v.dtype for k, v in a.items()} == {k: scene[k].dtype for k in a}


def test_real_configs_name_a_reader_and_only_known_data_keys():
    configs = sorted((Path(__file__).resolve().parent.parent / "configs" / "real").glob("*.yaml"))
    assert configs, "configs/real/*.yaml missing"
    for path in configs:
        cfg = yaml.safe_load(path.read_text())
        assert cfg["data"]["dataset"] in readers.DATASETS, path.name
        assert set(cfg["data"]) <= {"dataset", "root", "codec", "vae_weights", "task", "resolution", "num_classes",
                                    "seed", "train_size", "val_size", "val_offset", "workers", "latent_cache"}, path.name
