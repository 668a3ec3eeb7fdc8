"""Evaluation against independent references: each task's evaluation writes its metrics, baseline and figure
(guidance itself: tests/test_sampling.py).

Run: pytest -q tests/test_evaluate.py     (a few seconds: untrained micro models)
"""

import json

import numpy
import pytest
import torch

from helpers import referring_cfg
from minidp import data, dit, evaluate, sampling, tasks
from minidp.config import DataConfig
from minidp.tasks import base


@pytest.mark.parametrize("task, keys", [("flow", ("epe", "prior_epe")), ("amodal", ("miou", "prior_miou")),
                                        ("referring", ("oiou", "miou", "prior_oiou", "prior_miou"))])
def test_each_task_writes_its_metrics_baseline_and_figure(task, keys, tmp_path):
    cfg = referring_cfg(ensemble=2)
    cfg.data.task = task
    groups = tasks.get(task).cond_images + 1
    torch.manual_seed(0)
    model = dit.make_multitask(dit.widen_input(dit.build_dit("micro", input_size=16, in_channels=3, num_classes=10,
                                                             learn_sigma=False), groups), 1)
    if task == "referring":
        model = dit.add_text(model, len(tasks.VOCAB))
    result = evaluate.evaluate(model, cfg, tmp_path, "cpu")
    assert json.loads((tmp_path / "eval.json").read_text()) == result  # floats survive JSON exactly
    assert all(0 <= result[k] < float("inf") for k in keys)
    assert (tmp_path / "figures" / f"{task}_grid.png").stat().st_size > 0
    # every metric with its interval over scenes, and the per-scene values behind it (compare.py reads them)
    assert all(result[f"{k}_ci"][0] <= result[k] <= result[f"{k}_ci"][1] for k in keys)
    assert result["n"] == cfg.sample.num_images
    with numpy.load(tmp_path / "eval_scenes.npz") as npz:
        assert npz["scenes"].tolist() == list(range(cfg.data.val_offset, cfg.data.val_offset + result["n"]))
        for k in keys:
            if k.endswith("oiou"):
                assert numpy.sum(npz[k + ":num"]) / numpy.sum(npz[k + ":den"]) == pytest.approx(result[k])
            else:
                assert numpy.nanmean(npz[k]) == pytest.approx(result[k], rel=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Known answers: a perfect prediction, a hand-computed baseline, a prediction and truth that must not be swapped
# ----------------------------------------------------------------------------------------------------------

def batch_of(task, n=4, resolution=16):
    return data.make_batch(DataConfig(task=task, resolution=resolution), list(range(n)))


def test_a_perfect_prediction_scores_perfectly_on_every_task():
    depth = batch_of("depth")
    assert tasks.get("depth").scores(depth["depth"] * 3 + 1, depth, None)["absrel"].max() < 1e-6  # affine: aligned
    flow = batch_of("flow")
    assert tasks.get("flow").scores(flow["flow"], flow, None)["epe"].nan_to_num(0).max() == 0
    for name in ("amodal", "referring"):
        b = batch_of(name)
        scores = tasks.get(name).scores({"mask": b["gt_mask"], "plain": b["gt_mask"]}, b, None)
        assert (scores["miou"] == 1).all()
    ref = tasks.get("referring")
    assert base.summarize(ref.scores({"mask": b["gt_mask"]}, b, None), ref.ratio_metrics)["oiou"] == 1


def test_absrel_divides_by_the_truth_not_the_prediction():
    # prediction and truth swapped would give mean |p - g| / p: the hand value below tells the two apart
    b = batch_of("depth", n=2)
    gt, valid = b["depth"], b["valid"]
    pred = gt**2  # not affine in gt: alignment cannot make it exact
    got = tasks.get("depth").scores(pred, b, None)["absrel"]
    for i in range(2):
        p, g = pred[i][valid[i]].double(), gt[i][valid[i]].double()
        A = torch.stack([p, torch.ones_like(p)], 1)
        s, t = torch.linalg.lstsq(A, g[:, None]).solution[:, 0]  # Marigold's lstsq([pred, 1], gt), by hand
        aligned = (s * p + t).clamp_min(1e-5)
        assert got[i].item() == pytest.approx(((aligned - g).abs() / g).mean().item(), rel=1e-4)
        assert got[i].item() != pytest.approx(((aligned - g).abs() / aligned).mean().item(), rel=1e-2)


def test_evaluation_of_the_true_targets_gives_iou_1_and_prior_epe_is_the_mean_flow_by_hand(tmp_path, monkeypatch):
    # the sampler replaced by the truth: evaluate's loop, the task's merge, read-back, scores and summary must give
    # the perfect answer, and the zero-flow baseline the mean |flow| over each scene's valid pixels, averaged
    # the model_fn stands for its batch's latents, and DDIM returns them: one member, the true target
    monkeypatch.setattr(sampling, "conditioned_fn", lambda model, cfg, k, latents, repeat=1: latents["target"])
    monkeypatch.setattr(sampling, "generate", lambda target, cfg, shape, gen, device, **kw: target)
    for name in ("amodal", "referring", "flow"):
        cfg = referring_cfg(ensemble=1)
        cfg.data.task = name
        model = dit.make_multitask(dit.widen_input(dit.build_dit("micro", input_size=16, in_channels=3, num_classes=10,
                                                                 learn_sigma=False), tasks.get(name).cond_images + 1), 1)
        result = evaluate.evaluate(model, cfg, tmp_path / name, "cpu")
        if name == "flow":
            b = data.make_batch(cfg.data, range(cfg.data.val_offset, cfg.data.val_offset + cfg.sample.num_images))
            per_scene = [b["flow"][i].norm(dim=0)[b["flow_valid"][i]].mean().item()
                         for i in range(len(b["flow"])) if b["flow_valid"][i].any()]
            assert result["prior_epe"] == pytest.approx(sum(per_scene) / len(per_scene), rel=1e-5)
        else:
            assert result["miou"] == 1 and result.get("oiou", 1) == 1
