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


def test_generalist_study_trains_specialists_on_the_generalists_schedule_and_tabulates_paired_seeds(
        tmp_path, monkeypatch):
    import torch
    from minidp import ct_estimation, recipe
    study = load_script("generalist_study")
    gcfg = config.load_config(study.GENERALIST)
    mix = dict(gcfg.data.tasks)
    # every specialist: the generalist's batch, LR, decay, warm-up and its samples of the task (S x share)
    steps = {task: study.specialist_steps(gcfg, task, 3500) for task in mix}
    assert steps == {"depth": 1217, "flow": 761, "amodal": 761, "referring": 761}  # 3500 x 4 / 11.5 = 1217.4
    for task in mix:
        s = config.load_config(ROOT / "configs" / f"{task}.yaml", study.specialist_overrides(gcfg, task, 3500, 0.995))
        for key in ("global_batch", "lr", "lr_final", "lr_schedule", "warmup_steps"):
            assert getattr(s.train, key) == getattr(gcfg.train, key), (task, key)
        assert s.train.ema_decay == 0.995 and s.train.loss == ("l1" if task == "amodal" else "mse")
        written = ct_estimation.PRESETS["depth_release"] if task == "depth" else \
            gcfg.diffusion.task_timestep_weights[task]  # the generalist's c_t^2 for the task, as written
        w = np.asarray(recipe.timestep_weights(s))
        assert w / w.sum() == pytest.approx(np.asarray(written) / sum(written), abs=1e-8)
    # the shared vector is the distribution of t the generalist's batches already draw, over all tasks
    shared = study.shared_vector(gcfg)
    g = config.load_config(study.GENERALIST, ["train.global_batch=512"])
    t = torch.cat([recipe.batch_plan(g, step, (1, 1, 1), False, True)["t"] for step in range(40)])
    drawn = np.bincount((t // 100).numpy(), minlength=10) / t.numel()  # 20480 draws: sd <= 0.0033 per group
    assert drawn == pytest.approx(shared, abs=0.015) and shared.sum() == pytest.approx(1)
    sc = config.load_config(study.GENERALIST, study.shared_overrides(gcfg))
    assert all(np.allclose(sc.diffusion.task_timestep_weights[task], shared, atol=1e-8) for task in mix)
    # the report: per task, generalist - specialist and shared - generalist, paired by seed
    monkeypatch.setattr(study, "RUNS", tmp_path)
    monkeypatch.setattr(study, "RESULTS", tmp_path / "generalist_study.json")
    monkeypatch.setattr(study, "FIGURE", tmp_path / "generalist_study.png")
    spec = {"depth": [0.10, 0.11, 0.12], "flow": [1.0, 1.1, 1.2], "amodal": [0.70, 0.72, 0.74],
            "referring": [0.60, 0.61, 0.62]}
    for s in range(3):
        general, shared_run = {}, {}
        for task, values in spec.items():
            run = tmp_path / f"{task}_s{s}"
            run.mkdir()
            (run / "eval.json").write_text(json.dumps({study.METRIC[task]: values[s], "steps": 1}))
            sign = 1 if task in ("depth", "flow") else -1  # the generalist 10 % worse than its specialist, by seed
            general[task] = {study.METRIC[task]: values[s] * (1 + sign * 0.1) + 0.001 * s}
            shared_run[task] = {study.METRIC[task]: general[task][study.METRIC[task]] + (0.002, -0.002, 0)[s]}
        for name, e in (("generalist", general), ("shared", shared_run)):
            (tmp_path / f"{name}_s{s}").mkdir()
            (tmp_path / f"{name}_s{s}" / "eval.json").write_text(json.dumps(e))
    assert study.report(gcfg, [0, 1, 2], 3500) == 0
    rows = {r["name"]: r for r in json.loads((tmp_path / "generalist_study.json").read_text())["runs"]}
    depth = rows["depth generalist"]
    expected = np.subtract([v * 1.1 + 0.001 * s for s, v in enumerate(spec["depth"])], spec["depth"])
    assert depth["metrics"]["diff"]["value"] == pytest.approx(expected.mean(), abs=1e-6)
    assert depth["cells"]["verdict"] == "specialist better"  # AbsRel: lower is better
    assert rows["amodal generalist"]["cells"]["verdict"] == "specialist better"  # mIoU: higher is better
    assert rows["amodal generalist"]["metrics"]["ratio"]["value"] < 1 < depth["metrics"]["ratio"]["value"]
    assert rows["flow shared"]["cells"]["verdict"] == "no difference detected"  # +0.002, -0.002, 0 over seeds
    assert rows["referring specialist"]["metrics"]["value"]["value"] == pytest.approx(0.61)
    assert study.compared([0.1, 0.2], [0.0, 0.1], "a", "b", "oiou")[1] is None  # IoU 0: no ratio, no crash
    assert (tmp_path / "generalist_study.png").stat().st_size > 1000
    with pytest.raises(SystemExit) as stop:  # --rows splits a seed between processes; a row that is not one stops
        study.main(["--report", "--rows", "depth", "flw"])
    assert stop.value.code == 2
    # the figure's errors: 1 - IoU for the IoU tasks (the generalist's amodal mIoU 10 % lower: its error higher)
    assert study.error("amodal", [0.7]) == pytest.approx([0.3]) and study.error("depth", [0.1]) == pytest.approx([0.1])


def test_depth_recipe_rows_spell_their_recipes_and_the_report_pairs_every_seed(tmp_path, monkeypatch):
    study = load_script("depth_recipe")
    # each row is the recipe its label names, whatever configs/depth.yaml holds; the last row is depth.yaml as it is
    named = {"previous": (4000, 2e-3, 2e-4, 0.999, "depth_release"), "quick": (3000, 4e-3, 4e-4, 0.998, "depth_quick"),
             "fast": (2600, 4e-3, 2e-3, 0.998, "depth_quick")}
    for row, (_, overrides, _) in study.ROWS.items():
        c = config.load_config(ROOT / "configs" / "depth.yaml", overrides)
        got = (c.train.steps, c.train.lr, c.train.lr_final, c.train.ema_decay, c.diffusion.timestep_sampling)
        assert got == named[row], row
    c = config.load_config(ROOT / "configs" / "depth.yaml")
    assert (c.train.steps, c.train.lr, c.train.lr_final, c.train.ema_decay, c.diffusion.timestep_sampling) == \
        named["fast"]
    # fake evaluated runs: row r on seed s scores base[r] + shift[s] on every scene plus a scene's own difficulty
    monkeypatch.setattr(study, "RUNS", tmp_path)
    monkeypatch.setattr(study, "RESULTS", tmp_path / "depth_recipe.json")
    rng = np.random.default_rng(0)
    scenes, hard = np.arange(50), rng.uniform(0.05, 0.15, 50)
    base, shift = {"previous": 0.100, "quick": 0.098, "fast": 0.097}, [0.0, 0.002, -0.001]
    for row in study.ROWS:
        for s in range(3):
            run = tmp_path / f"{row}_s{s}"
            run.mkdir()
            absrel = hard + base[row] + shift[s] + rng.normal(0, 1e-4, 50)
            np.savez(run / "eval_scenes.npz", scenes=scenes[::-1], absrel=absrel[::-1])  # any scene order
            (run / "eval.json").write_text(json.dumps({"absrel": float(absrel.mean()), "absrel_ci": [0, 1]}))
            (run / "trained_at.txt").write_text("abc1234\n")
    assert study.report([0, 1, 2], pilots=False) == 0
    rows = json.loads((tmp_path / "depth_recipe.json").read_text())["runs"]
    assert [r["name"] for r in rows] == ["seed 0", "seed 1", "seed 2", "over seeds"]
    for a, b in study.PAIRS:  # each pair's difference is base[a] - base[b] on every seed, decided on the scenes
        for r in rows[:3]:
            assert r["metrics"][f"{a}-{b}"]["value"] == pytest.approx(base[a] - base[b], abs=1e-4)
            assert r["cells"][f"{a}-{b}"] == f"{a} better"
        over = rows[3]["metrics"][f"{a}-{b}"]
        assert over["value"] == pytest.approx(np.mean([r["metrics"][f"{a}-{b}"]["value"] for r in rows[:3]]),
                                              abs=1e-6)
    # over seeds, the rows' own means carry the seed shifts, whose spread the t interval holds
    lo, hi = rows[3]["metrics"]["fast"]["ci"]
    assert lo < base["fast"] + np.mean(shift) + hard.mean() < hi and hi - lo > 0.002


@pytest.mark.parametrize("task", ["depth", "flow", "normals"])
def test_e2e_study_trains_the_diffusion_row_on_the_e2e_rows_schedule(task):
    # equal training compute, whatever configs/<task>.yaml becomes: the same steps, batch, LR schedule and EMA
    study = load_script("e2e_study")
    diffusion = config.load_config(ROOT / "configs" / f"{task}.yaml", study.e2e_schedule(task))
    e2e = config.load_config(ROOT / "configs" / "e2e" / f"{task}.yaml")
    for key in ("steps", "global_batch", "lr", "lr_final", "lr_schedule", "warmup_steps", "ema_decay"):
        assert getattr(diffusion.train, key) == getattr(e2e.train, key), key
    assert e2e.train.objective == "e2e" and diffusion.train.objective == "diffusion"
