"""Evaluation's pieces against independent references: two-scale guidance reduces to the fully conditioned
prediction at s_I = s_D = 1, the guided batch holds the three predictions InstructPix2Pix combines, and each
task's evaluation writes its metrics, baseline and figure.

Run: pytest -q tests/test_evaluate.py     (a few seconds: untrained micro models)
"""

import json

import pytest
import torch

from minidp import data, dit, evaluate, sampling, tasks
from minidp.config import Config


def text_model(seed=0):
    torch.manual_seed(seed)
    model = dit.build_dit("micro", input_size=16, in_channels=3, num_classes=10, learn_sigma=False)
    model = dit.add_text(dit.make_multitask(dit.widen_input(model, 2), 1), len(tasks.VOCAB))
    with torch.no_grad():  # leave adaLN-Zero's zeros behind, so every path changes the output
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def referring_cfg(**sample):
    cfg = Config()
    cfg.data.task, cfg.data.resolution = "referring", 16
    cfg.diffusion.prediction = "x0"
    cfg.sample.steps, cfg.sample.num_images, cfg.sample.batch, cfg.sample.ensemble = 1, 4, 4, 1
    for k, v in sample.items():
        setattr(cfg.sample, k, v)
    return cfg


def test_two_scale_guidance_with_unit_scales_is_the_fully_conditioned_prediction():
    model, cfg = text_model(), referring_cfg(image_guidance=1.0, text_guidance=1.0)
    batch = data.make_batch(cfg.data, [0, 1, 2])
    x_t, t = torch.randn(3, 3, 16, 16), torch.full((3,), 500)
    guided = sampling.conditioned_fn(model, cfg, batch)(x_t, t)
    y = torch.full((3,), dit.task_label(model, 0))
    plain = model(torch.cat([batch["cond"][0], x_t], 1), t, y, task=torch.zeros(3, dtype=torch.long),
                  tokens=batch["tokens"])
    assert torch.allclose(guided, plain, atol=1e-5)


def test_two_scale_guidance_combines_null_image_and_null_text_predictions():
    model, cfg = text_model(), referring_cfg(image_guidance=1.5, text_guidance=3.0)
    batch = data.make_batch(cfg.data, [0, 1])
    x_t, t = torch.randn(2, 3, 16, 16), torch.full((2,), 999)
    y, task = torch.full((2,), dit.task_label(model, 0)), torch.zeros(2, dtype=torch.long)
    rgb, null_text = batch["cond"][0], torch.zeros_like(batch["tokens"])
    e_none = model(torch.cat([torch.zeros_like(rgb), x_t], 1), t, y, task=task, tokens=null_text)
    e_img = model(torch.cat([rgb, x_t], 1), t, y, task=task, tokens=null_text)
    e_all = model(torch.cat([rgb, x_t], 1), t, y, task=task, tokens=batch["tokens"])
    expected = e_none + 1.5 * (e_img - e_none) + 3.0 * (e_all - e_img)  # InstructPix2Pix Eqn. 3, by hand
    assert torch.allclose(sampling.conditioned_fn(model, cfg, batch)(x_t, t), expected, atol=1e-5)
    assert not torch.allclose(e_all, e_img, atol=1e-4)  # the text path is live, so the test can fail


@pytest.mark.parametrize("task, keys", [("flow", ("epe", "prior_epe")), ("amodal", ("miou", "prior_miou")),
                                        ("referring", ("oiou", "miou", "prior_oiou", "prior_miou"))])
def test_each_task_writes_its_metrics_baseline_and_figure(task, keys, tmp_path):
    cfg = referring_cfg(ensemble=2)
    cfg.data.task = task
    groups = tasks.num_cond_images(task) + 1
    torch.manual_seed(0)
    model = dit.make_multitask(dit.widen_input(dit.build_dit("micro", input_size=16, in_channels=3, num_classes=10,
                                                             learn_sigma=False), groups), 1)
    if task == "referring":
        model = dit.add_text(model, len(tasks.VOCAB))
    result = evaluate.evaluate(model, cfg, tmp_path, "cpu")
    assert json.loads((tmp_path / "eval.json").read_text()) == pytest.approx(result)
    assert all(0 <= result[k] < float("inf") for k in keys)
    assert (tmp_path / "figures" / f"{task}_grid.png").stat().st_size > 0
