"""sample.py end to end on micro runs: the report's keys, the figures, reproducibility, and bad input.

Run: pytest -q tests/test_sample.py     (trains two micro runs of a few steps first: ~20 s)
"""

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import sample  # noqa: E402
import train  # noqa: E402
from minidp import checkpoint, evaluate, tasks  # noqa: E402

COMMON = ["model.preset=micro", "train.init_from=", "data.resolution=16", "data.train_size=64", "train.steps=3",
          "train.global_batch=4", "train.log_every=1", "sample.steps=2", "sample.batch=4"]


def micro_run(out, config, *extra):
    assert train.main([str(ROOT / "configs" / config), *COMMON, *extra, f"train.out_dir={out}"]) == 0
    return out


@pytest.fixture(scope="module")
def depth_run(tmp_path_factory):
    return micro_run(tmp_path_factory.mktemp("depth"), "depth.yaml", "sample.num_images=4")


@pytest.fixture(scope="module")
def class_run(tmp_path_factory):
    return micro_run(tmp_path_factory.mktemp("class"), "pretrain.yaml", "sample.num_images=10")


@pytest.fixture(scope="module")
def referring_run(tmp_path_factory):
    return micro_run(tmp_path_factory.mktemp("referring"), "referring.yaml", "sample.num_images=4", "sample.ensemble=2")


def test_referring_report_figure_and_a_users_expression(referring_run, capsys):
    report = json.loads((referring_run / "eval.json").read_text())
    for key in ("oiou", "miou", "prior_oiou", "prior_miou"):
        assert 0 <= report[key] <= 1, key
    assert (report["image_guidance"], report["text_guidance"]) == (1.5, 3.0)  # ADDP's scales by default
    assert (referring_run / "figures" / "referring_grid.png").stat().st_size > 0
    assert sample.main([str(referring_run), "--expression", "the red sphere", "--scene", "1"]) == 0
    assert (referring_run / "figures" / "expression_scene1.png").stat().st_size > 0
    capsys.readouterr()
    assert sample.main([str(referring_run), "--expression", "the teal sphere"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "'teal'" in err


def test_depth_report_has_metrics_and_the_prior_baseline(depth_run):
    report = json.loads((depth_run / "eval.json").read_text())
    for key in ("absrel", "delta1", "delta2", "delta3", "rmse", "prior_absrel", "prior_delta1"):
        assert key in report and 0 <= report[key] < float("inf"), key
    assert (depth_run / "figures" / "depth_grid.png").stat().st_size > 0
    assert (depth_run / "figures" / "denoising_progression.png").stat().st_size > 0


def test_sample_cli_reproduces_the_training_report(depth_run, tmp_path):
    # the same checkpoint, config and seeds: sample.py must print the numbers train.py wrote
    assert sample.main([str(depth_run), "--out", str(tmp_path)]) == 0
    a = json.loads((depth_run / "eval.json").read_text())
    b = json.loads((tmp_path / "eval.json").read_text())
    assert a["absrel"] == pytest.approx(b["absrel"], rel=1e-5) and a["delta1"] == pytest.approx(b["delta1"], rel=1e-5)


def test_sample_overrides_change_the_test_time_compute(depth_run, tmp_path, monkeypatch):
    # count the sampler's model calls: N steps of M members x the batch, not the echo of the config in eval.json
    calls = []
    real = checkpoint.model_from_checkpoint

    def counted(*args, **kwargs):
        model = real(*args, **kwargs)
        model.register_forward_pre_hook(lambda module, inputs: calls.append(len(inputs[0])))
        return model

    monkeypatch.setattr(checkpoint, "model_from_checkpoint", counted)
    assert sample.main([str(depth_run), "--out", str(tmp_path / "default")]) == 0
    default_calls, calls[:] = list(calls), []
    assert sample.main([str(depth_run), "sample.steps=3", "sample.ensemble=3", "sample.ensemble_method=compile",
                        "sample.schedule=cosine", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "eval.json").read_text())
    assert (report["steps"], report["ensemble"], report["ensemble_method"], report["schedule"]) == (
        3, 3, "compile", "cosine")
    # 4 validation scenes in one batch of 4: the evaluation chain is steps calls of members x 4 samples (then the
    # progression figure's 51 single-scene calls)
    assert calls.count(3 * 4) == 3 and default_calls.count(5 * 4) == 2  # depth.yaml: 5 members; COMMON: 2 steps
    assert calls.count(1) == default_calls.count(1) == 51
    default = json.loads((tmp_path / "default" / "eval.json").read_text())
    assert report["absrel"] != default["absrel"]  # the metric follows the compute that ran


def test_mean_depth_prior_is_the_mean_of_training_depths():
    from minidp import world
    from minidp.config import DataConfig
    from minidp.config import Config

    cfg = Config()
    cfg.data = DataConfig(task="depth", resolution=16, train_size=5)
    s = world.render(range(512), resolution=16)  # the prior's 512 training scenes (train_size does not cap the world)
    expected = (s["depth"] * s["valid"]).sum(0) / s["valid"].sum(0).clamp_min(1)
    ev = evaluate.Evaluation(None, cfg, 0, tasks.get("depth"), None, "cpu", 0, None)
    assert torch.allclose(tasks.get("depth").prior(ev), expected)


def test_class_report_and_figure(class_run):
    report = json.loads((class_run / "eval.json").read_text())
    assert 0 <= report["class_accuracy"] <= 1 and report["chance"] == pytest.approx(0.1)
    lo, hi = report["class_accuracy_ci"]
    assert lo <= report["class_accuracy"] <= hi and report["n"] == report["num_samples"]
    # the classifier itself must work on real images, or class_accuracy would mean nothing
    assert report["real_class_accuracy"] > 0.5
    assert (class_run / "figures" / "class_samples.png").stat().st_size > 0


def test_sample_cli_bad_input(tmp_path, capsys):
    bad = tmp_path / "ckpt.pt"
    bad.write_bytes(b"\x00" * 10)
    assert sample.main([str(bad)]) == 2
    assert "is not a readable" in capsys.readouterr().err
    assert sample.main([str(tmp_path / "missing")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_sample_cli_rejects_unknown_override(depth_run, capsys):
    assert sample.main([str(depth_run), "sample.stepz=3"]) == 2
    assert "did you mean 'sample.steps'" in capsys.readouterr().err


def test_evaluating_a_checkpoint_on_a_task_it_was_not_trained_on_is_one_line(depth_run, capsys):
    assert sample.main([str(depth_run), "data.task=flow"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "trained on depth, not 'flow'" in err
