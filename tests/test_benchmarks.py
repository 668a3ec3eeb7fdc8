"""The benchmark scripts call the same functions as train.py; when a signature there changes, a benchmark that is
only run by hand breaks silently (bench_train's profiled step did, after recipe.loss lost its model argument).
These run each script's core on the micro model for a step or two."""

import importlib.util
import sys

import numpy as np

import pytest

from helpers import MICRO, ROOT
from minidp import config


def load_script(name):
    """benchmarks/<name>.py as a module; benchmarks/ goes on sys.path, as running the script puts it (common.py)."""
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("objective", ["diffusion", "e2e"])
def test_bench_train_profiles_every_phase_of_the_step(objective):
    bench = load_script("bench_train")
    cfg = config.load_config(ROOT / "configs" / "depth.yaml",
                             [*MICRO, f"train.objective={objective}", "train.augment=0", "sample.ensemble=1"])
    wall, phases, kinds, model = bench.profile_step(cfg, steps=2, warmup=1)
    ran = {"plan", "batch", "forward", "loss", "backward", "optimizer", "ema"}
    assert wall > 0 and all(phases.get(p, 0.0) > 0 for p in ran), phases
    assert sum(kinds.values()) > 0
    shapes = bench.matmul_shapes(cfg, model)
    assert shapes and all(len(s) == 4 and min(s) > 0 for s in shapes)


def test_member_spread_correlation_is_pearsons_with_an_interval_around_it():
    spread = load_script("member_spread")
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    y = 0.6 * x + rng.normal(size=200)
    r, lo, hi = spread.correlation_ci(x, y, n_boot=400)
    assert r == pytest.approx(np.sum((x - x.mean()) * (y - y.mean())) / (199 * x.std(ddof=1) * y.std(ddof=1)))
    assert lo < r < hi and 0.3 < r < 0.7
    r0, lo0, hi0 = spread.correlation_ci(x, rng.normal(size=200), n_boot=400)
    assert lo0 < 0 < hi0  # independent draws: the interval holds zero


def test_e2e_study_compares_each_row_with_its_reference_and_draws_only_compared_rows(tmp_path):
    study = load_script("e2e_study")
    # every row but the reference itself has a reference that is also a row, and the continuation's is its control
    assert set(study.AGAINST) == set(study.ROWS) - {"diffusion"} and set(study.AGAINST.values()) <= set(study.ROWS)
    assert study.AGAINST["e2e_continued"] == "diffusion_continued"

    def run(task, row, diff=None):
        metrics = {"metric": {"value": 0.1, "ci": [0.09, 0.11]}}
        if diff is not None:
            metrics["diff"] = {"value": diff, "ci": [diff - 0.01, diff + 0.01]}
        return {"cells": {"task": task, "row": row, "seeds": "2", "against": study.AGAINST.get(row, row)},
                "metrics": metrics, "per_seed": {"diff": [] if diff is None else [diff - 0.005, diff + 0.005]}}

    path = tmp_path / "study.png"
    study.figure([run("depth", "diffusion")], path)
    assert not path.exists()  # nothing compared yet: no figure
    study.figure([run("depth", "diffusion"), run("depth", "e2e", -0.02), run("flow", "e2e", 0.01)], path)
    assert path.stat().st_size > 1000
