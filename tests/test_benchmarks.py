"""The benchmark scripts call the same functions as train.py; when a signature there changes, a benchmark that is
only run by hand breaks silently (bench_train's profiled step did, after recipe.loss lost its model argument).
These run each script's core on the micro model for a step or two."""

import importlib.util
import json
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


def test_steps_study_evaluates_each_setting_once_fits_the_exponent_and_tabulates(tmp_path, micro_run, monkeypatch):
    import shutil
    study = load_script("steps_study")
    ks = np.array([1, 2, 5, 10])
    assert study.exponent(ks, 0.3 * ks ** -0.5) == pytest.approx(-0.5)
    (tmp_path / "recipe_s0").mkdir()
    shutil.copy(micro_run / "ckpt.pt", tmp_path / "recipe_s0" / "ckpt.pt")
    monkeypatch.setattr(study, "RESULTS", tmp_path / "steps_study.json")
    monkeypatch.setattr(study, "FIGURE", tmp_path / "steps_study.png")
    args = ["--models", "recipe", "--seeds", "0", "1", "--steps", "1", "2", "--ensemble", "2", "--ensemble-steps", "1",
            "--num-images", "2", "--runs", str(tmp_path)]
    study.RUNS = tmp_path
    todo = [(sp, k, 1) for sp in ("leading", "trailing") for k in (1, 2)] + [("leading", 1, 2), ("trailing", 1, 2)]
    study.evaluate_run(tmp_path / "recipe_s0", todo, 2)
    evaluated = sorted(p.name for p in (tmp_path / "recipe_s0" / "steps").iterdir())
    assert evaluated == ["leading_001_m1", "leading_001_m2", "leading_002_m1", "trailing_001_m1", "trailing_001_m2",
                         "trailing_002_m1"]
    stamp = (tmp_path / "recipe_s0" / "steps" / "leading_002_m1" / "eval.json").stat().st_mtime_ns
    study.evaluate_run(tmp_path / "recipe_s0", todo, 2)  # finished: nothing is evaluated again
    assert (tmp_path / "recipe_s0" / "steps" / "leading_002_m1" / "eval.json").stat().st_mtime_ns == stamp
    shutil.copytree(tmp_path / "recipe_s0", tmp_path / "recipe_s1")  # a second "seed": the same numbers, interval 0
    assert study.main(["--report", *args]) == 0
    rows = {r["name"]: r for r in json.loads((tmp_path / "steps_study.json").read_text())["runs"]}
    assert set(rows) == {"recipe leading x1", "recipe leading x2", "recipe trailing x1", "recipe trailing x2"}
    one = rows["recipe trailing x1"]
    a, b = (json.loads((tmp_path / "recipe_s0" / "steps" / f"trailing_00{k}_m1" / "eval.json").read_text())["absrel"]
            for k in (1, 2))
    assert one["metrics"]["k1"]["value"] == pytest.approx(a, abs=1e-6)
    assert one["metrics"]["b"]["value"] == pytest.approx(np.log(b / a) / np.log(2), abs=1e-3)
    assert one["metrics"]["diff"]["value"] == pytest.approx(b - a, abs=1e-6)
    assert "b" not in rows["recipe trailing x2"]["metrics"]  # one step count: no exponent
    assert (tmp_path / "steps_study.png").stat().st_size > 1000
