"""The paper's benchmarks (minidp/protocol.py): the alignment equals numpy's least squares; sample.py --benchmark writes
eval_<benchmark>.json and benchmarks.md; bad input is one line and exit status 2. The layouts themselves (reading
each benchmark back exactly, its crops and valid masks) are tests/test_benchmark_sets.py's.

Independent references: PNGs are written byte by byte (tests/test_readers.write_png), and the alignment is
np.linalg.lstsq on [pred, 1].

Run: pytest -q tests/test_protocol.py     (builds random-weight micro runs in-process, no training: ~30 s)
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_benchmark_sets import nyu_tree, write_list
from test_readers import rgb_array, write_png, write_ppm

from minidp import checkpoint, config, data, protocol, readers, tasks
from minidp.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import sample  # noqa: E402


# ----------------------------------------------------------------------------------------------------------
# Alignment and scores
# ----------------------------------------------------------------------------------------------------------

def hand_lstsq(pred, target, valid):
    A = np.stack([pred[valid], np.ones(valid.sum())], axis=1)  # [pred, 1], Marigold's design matrix
    (s, t), *_ = np.linalg.lstsq(A, target[valid], rcond=None)
    return s, t


def test_alignment_equals_a_hand_least_squares_in_depth_disparity_and_at_reduced_resolution():
    rng = np.random.default_rng(0)
    pred, gt = rng.random((8, 12)), rng.uniform(1, 10, (8, 12))
    valid = rng.random((8, 12)) > 0.25
    s, t = hand_lstsq(pred, gt, valid)
    out = protocol.align(torch.from_numpy(pred), torch.from_numpy(gt), torch.from_numpy(valid))
    assert np.allclose(out.numpy(), s * pred + t, atol=1e-10)
    # disparity: fit to 1 / gt over valid pixels with pred > 0, floor the disparity at 1e-3, invert
    pred_d = pred - 0.1  # some pixels <= 0 sit out of the fit
    keep = valid & (pred_d > 0)
    s, t = hand_lstsq(pred_d, 1 / gt, keep)
    out = protocol.align(torch.from_numpy(pred_d), torch.from_numpy(gt), torch.from_numpy(valid), space="disparity")
    assert np.allclose(out.numpy(), 1 / np.maximum(s * pred_d + t, 1e-3), atol=1e-10)
    # --alignment_max_res 6 on 8 x 12: nearest downsizing by 1/2 keeps every second row and column
    s, t = hand_lstsq(pred[::2, ::2], gt[::2, ::2], valid[::2, ::2])
    out = protocol.align(torch.from_numpy(pred), torch.from_numpy(gt), torch.from_numpy(valid), max_res=6)
    assert np.allclose(out.numpy(), s * pred + t, atol=1e-10)


def test_depth_score_clips_to_the_range_and_averages_over_valid_pixels():
    bench = protocol.BENCHMARKS["nyuv2"]
    gt = torch.tensor([[1.0, 2.0], [4.0, 8.0]], dtype=torch.float64)
    frame = {"depth": gt, "valid": torch.tensor([[True, True], [True, False]])}
    # a prediction at R = 2 equal to 2 * gt - 1 aligns to gt exactly (s = 1/2, t = 1/2)
    result = protocol.score_depth((2 * gt - 1).float(), frame, bench)
    assert result["absrel"] == pytest.approx(0.0, abs=1e-6) and result["delta1"] == 1.0
    # a flat prediction aligns to the valid mean 7/3: AbsRel = mean(|7/3 - d| / d) over 1, 2, 4
    result = protocol.score_depth(torch.full((2, 2), 0.5), frame, bench)
    assert result["absrel"] == pytest.approx(np.mean([4 / 3, 1 / 6, 5 / 12]), rel=1e-6)
    assert result["delta1"] == pytest.approx(1 / 3)  # only 2 m is within 1.25x of 7/3


def test_flow_score_rescales_displacements_with_the_image_and_counts_every_pixel():
    frame = {"flow": torch.stack([torch.full((8, 12), 3.0), torch.full((8, 12), -2.0)])}
    # the model at R = 4 saw the frame 3x narrower and 2x shorter: (1, -1) px there is (3, -2) px here
    merged = torch.stack([torch.full((4, 4), 1.0), torch.full((4, 4), -1.0)])
    assert protocol.score_flow(merged, frame, None)["epe"] == pytest.approx(0.0, abs=1e-6)
    assert protocol.score_flow(torch.zeros(2, 4, 4), frame, None)["epe"] == pytest.approx(np.sqrt(13))


# ----------------------------------------------------------------------------------------------------------
# sample.py --benchmark on random-weight micro runs built in-process
# ----------------------------------------------------------------------------------------------------------

def make_run(out, config_name, *extra):
    """A run directory holding a checkpoint of the config's model at initialisation (no training step)."""
    cfg = config.load_config(ROOT / "configs" / config_name, [
        "model.preset=micro", "train.init_from=", "data.resolution=16", "sample.steps=2", "sample.batch=2",
        f"train.out_dir={out}", *extra])
    codec = data.make_codec(cfg.data)
    torch.manual_seed(0)
    model, _ = checkpoint.initial_model(cfg, codec)
    state = model.state_dict()
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.save_checkpoint(out / "ckpt.pt", {"model": state, "ema": state, "step": 0,
                                                 "config": config.to_dict(cfg), "model_config": dict(model.config),
                                                 "tasks": [task.name for task in tasks.run_tasks(cfg)]})
    return out


@pytest.fixture(scope="module")
def depth_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("depth_run"), "depth.yaml")


def test_benchmark_writes_the_json_with_intervals_and_the_table(depth_run, tmp_path, capsys):
    nyu_tree(tmp_path / "data", n=3)
    out = tmp_path / "out"
    argv = [str(depth_run), "--benchmark", "nyuv2", "--root", str(tmp_path / "data"), "--out", str(out)]
    assert sample.main(argv) == 0
    report = json.loads((out / "eval_nyuv2.json").read_text())
    assert report["n"] == 3 and report["official_n"] == 654 and report["depth_range"] == [1e-3, 10.0]
    assert 0 < report["absrel"] < 1  # a random model on a slanted floor: wrong, but aligned and clipped
    for key in ("absrel", "delta1", "delta2", "delta3", "rmse"):
        lo, hi = report[f"{key}_ci"]
        assert lo <= report[key] <= hi, key
    per_frame = np.load(out / "eval_nyuv2_frames.npz")
    assert per_frame["absrel"].shape == (3,) and per_frame["absrel"].mean() == pytest.approx(report["absrel"])
    table = (out / "benchmarks.md").read_text()
    assert "| Method | Hypersim AbsRel ↓ | Hypersim δ1 ↑ | ETH3D AbsRel ↓" in table
    assert f"{100 * report['absrel']:.1f} [" in table and "| Marigold (scaling paper, Table 3) | 13.5 | 87.5 |" in table
    assert "NYUv2 3 of 654" in table
    assert "benchmark nyuv2 | absrel " in capsys.readouterr().out


def test_flow_and_amodal_benchmarks_run_on_their_readers_layouts(tmp_path):
    chairs = tmp_path / "data" / "FlyingChairs_release"
    for k in (1, 2):
        for name in ("img1", "img2"):
            write_ppm(chairs / "data" / f"{k:05d}_{name}.ppm", rgb_array(k, 6, 8))
        readers.write_flo(chairs / "data" / f"{k:05d}_flow.flo", torch.ones(2, 6, 8))
    (chairs / "FlyingChairs_train_val.txt").write_text("1\n2\n")
    flow_run = make_run(tmp_path / "flow_run", "flow.yaml")
    assert sample.main([str(flow_run), "--benchmark", "all", "--root", str(tmp_path / "data")]) == 0
    report = json.loads((flow_run / "eval_flyingchairs_val.json").read_text())
    assert report["n"] == 1 and report["epe"] >= 0 and "Table 4" in (flow_run / "benchmarks.md").read_text()

    gestalt = tmp_path / "data" / "pix2gestalt"
    for k in range(3):
        write_png(gestalt / "occlusion" / f"{k}_occlusion.png", rgb_array(k, 6, 8))
        mask = np.zeros((6, 8), np.uint8)
        mask[1:4, 2:6] = 255
        write_png(gestalt / "visible_object_mask" / f"{k}_visible_mask.png", mask)
        write_png(gestalt / "whole_mask" / f"{k}_whole_mask.png", mask)
        write_png(gestalt / "whole" / f"{k}_whole.png", rgb_array(10 + k, 6, 8))
    amodal_run = make_run(tmp_path / "amodal_run", "amodal.yaml")
    assert sample.main([str(amodal_run), "--benchmark", "pix2gestalt_val", "--root", str(tmp_path / "data")]) == 0
    report = json.loads((amodal_run / "eval_pix2gestalt_val.json").read_text())
    assert report["n"] == 1 and 0 <= report["miou"] <= 1  # floor(0.99 * 3) = 2 train, 1 held out


# ----------------------------------------------------------------------------------------------------------
# Bad input: one line, exit status 2
# ----------------------------------------------------------------------------------------------------------

def run_sample(capsys, *argv):
    try:
        code = sample.main([str(a) for a in argv])
    except SystemExit as e:  # the argument parser's own errors
        code = e.code
    err = capsys.readouterr().err.strip()
    return code, err


def test_bad_benchmark_input_is_one_line_and_exit_status_2(depth_run, tmp_path, capsys):
    out = ["--out", tmp_path / "out"]
    code, err = run_sample(capsys, depth_run, "--benchmark", "nyuv2", "--root", tmp_path / "empty", *out)
    assert code == 2 and "\n" not in err and "nyu_labeled_extracted.tar: no such archive or folder" in err

    nyu_tree(tmp_path / "small", n=1, size=(6, 8))  # a layout that does not match: not NYUv2's 480 x 640 frames
    code, err = run_sample(capsys, depth_run, "--benchmark", "nyuv2", "--root", tmp_path / "small", *out)
    assert code == 2 and "\n" not in err and "is not NYUv2's 480 x 640" in err

    write_list(tmp_path / "small", "nyuv2", ["test/kitchen_0004/rgb_0001.png test/kitchen_0004/depth_0001.png x",
                                            "test/kitchen_0004/rgb_0009.png test/kitchen_0004/depth_0009.png x"])
    code, err = run_sample(capsys, depth_run, "--benchmark", "nyuv2", "--root", tmp_path / "small", *out)
    assert code == 2 and "\n" not in err and "line 2 names test/kitchen_0004/rgb_0009.png, which" in err

    (tmp_path / "small" / protocol.BENCHMARKS["nyuv2"].split).unlink()
    code, err = run_sample(capsys, depth_run, "--benchmark", "nyuv2", "--root", tmp_path / "small", *out)
    assert code == 2 and "no frame list; copy prs-eth/Marigold's data_split/ folder" in err

    code, err = run_sample(capsys, depth_run, "--benchmark", "flyingchairs_val", "--root", tmp_path, *out)
    assert code == 2 and "\n" not in err
    assert "--benchmark flyingchairs_val measures flow; this run was trained on depth" in err

    assert protocol.benchmark_names("all", ["depth"])[:3] == ["hypersim_val", "eth3d", "nyuv2"]
    with pytest.raises(InputError, match=r"--benchmark all: no benchmark measures class"):
        protocol.benchmark_names("all", ["class"])

    code, err = run_sample(capsys, depth_run, "--benchmark", "nyu", "--root", tmp_path)
    assert code == 2 and err.startswith("error: argument --benchmark: invalid choice")
    code, err = run_sample(capsys, depth_run, "--benchmark", "nyuv2")
    assert code == 2 and "--benchmark and --root go together" in err
    assert not (tmp_path / "out" / "eval_nyuv2.json").exists()


# ----------------------------------------------------------------------------------------------------------
# The paper's pipeline: a released DiT checkpoint (bare weights) -> train.init_from -> a depth fine-tune
# ----------------------------------------------------------------------------------------------------------

def test_a_released_dit_state_dict_starts_a_depth_fine_tune_widened(tmp_path):
    """train.py's initial_model on a bare DiT state dict (DiT-XL-2-256x256.pt's format), at micro size."""
    from minidp import dit

    torch.manual_seed(0)
    released = dit.build_dit("micro", input_size=16, in_channels=3, num_classes=10, learn_sigma=True)
    torch.save(released.state_dict(), tmp_path / "DiT-micro-16.pt")  # what facebookresearch/DiT publishes: a state dict
    cfg = config.load_config(ROOT / "configs" / "depth.yaml", [
        "model.preset=micro", "model.learn_sigma=true", "data.resolution=16",
        f"train.init_from={tmp_path / 'DiT-micro-16.pt'}"])
    model, source = checkpoint.initial_model(cfg, data.make_codec(cfg.data))
    assert source.startswith("fine-tuning the released micro weights")
    # Marigold's widening: the patch embedding sees [rgb, x_t], each half of the weights / 2; the rest is copied
    w = released.x_embedder.proj.weight
    assert torch.equal(model.x_embedder.embedders[0].proj.weight, torch.cat([w, w], dim=1) / 2)
    assert torch.equal(model.blocks[0].attn.qkv.weight, released.blocks[0].attn.qkv.weight)
    bad = config.load_config(ROOT / "configs" / "depth.yaml", [
        "model.preset=micro", "data.resolution=16", f"train.init_from={tmp_path / 'DiT-micro-16.pt'}"])  # no sigma
    with pytest.raises(Exception, match=r"train.init_from: .*DiT-micro-16.pt: state dict does not match"):
        checkpoint.initial_model(bad, data.make_codec(bad.data))
