"""Evaluation against independent references: each task's evaluation writes its metrics, baseline and figure
(guidance itself: tests/test_sampling.py).

Run: pytest -q tests/test_evaluate.py     (a few seconds: untrained micro models)
"""

import json

import pytest
import torch

from helpers import referring_cfg
from minidp import dit, evaluate, tasks


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
