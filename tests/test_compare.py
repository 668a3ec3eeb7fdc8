"""Spec for minidp/compare.py and `python sample.py compare RUN_A RUN_B [--metric k]`.

Independent references: hand-built eval.json / eval_scenes.npz pairs in the format the evaluation writes, whose
differences and verdicts are known by construction (run A is better on every scene by a fixed margin, the
baseline is shared), and a hand-computed oIoU.

Run: python -m pytest -q tests/test_compare.py
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minidp.compare import better_direction, compare_main, compare_runs
from minidp.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def write_run(run, sections, scenes, info=None):
    """A run directory as the evaluation writes it: eval.json (metric, metric_ci, n) and eval_scenes.npz.

    sections: {task or "": {metric: (n,) values or (num, den)}}; task "" is a single-task run."""
    run.mkdir(parents=True, exist_ok=True)
    arrays, report = {}, {}
    for task, metrics in sections.items():
        prefix = f"{task}/" if task else ""
        arrays[prefix + "scenes"] = np.asarray(scenes, dtype=np.int64)
        part = {}
        for k, v in metrics.items():
            if isinstance(v, tuple):
                arrays[f"{prefix}{k}:num"], arrays[f"{prefix}{k}:den"] = v
                part[k] = float(np.sum(v[0]) / np.sum(v[1]))
            else:
                arrays[prefix + k] = np.asarray(v, dtype=np.float64)
                part[k] = float(np.nanmean(v))
            part[f"{k}_ci"] = [part[k] - 0.01, part[k] + 0.01]  # not read by compare; present as in the format
        part["n"] = len(scenes)
        if task:
            report[task] = part
        else:
            report.update(part)
    report.update(info or {"steps": 1, "seconds": 1.0, "num_images": len(scenes)})
    (run / "eval.json").write_text(json.dumps(report))
    np.savez(run / "eval_scenes.npz", **arrays)
    return run


def depth_runs(tmp_path, n=256, margin=0.01):
    """Two depth runs on the same scenes: A's AbsRel is B's minus `margin` on every scene, plus small noise."""
    g = np.random.default_rng(0)
    scenes = np.arange(n)
    hard = g.uniform(0.05, 0.3, n)  # per-scene difficulty, shared by both runs
    prior = hard * 2.5
    b = {"absrel": hard, "delta1": 1 - hard, "prior_absrel": prior}
    a = {"absrel": hard - margin + g.normal(0, 0.002, n), "delta1": 1 - hard + margin, "prior_absrel": prior}
    return write_run(tmp_path / "a", {"": a}, scenes), write_run(tmp_path / "b", {"": b}, scenes)


def test_one_line_per_shared_metric_with_the_paired_verdict(tmp_path):
    a, b = depth_runs(tmp_path)
    lines = compare_runs(a, b)
    assert [line.split()[0] for line in lines] == ["absrel", "delta1", "prior_absrel"]
    absrel, delta1, prior = lines
    assert absrel.endswith("A better") and "lower is better" in absrel  # A's error is lower on every scene
    assert delta1.endswith("A better") and "higher is better" in delta1  # A's accuracy is higher
    assert "A-B +0.0000 [+0.0000, +0.0000]" in prior and prior.endswith("no difference detected")
    assert "A-B +0.0100" in delta1


def test_a_difference_inside_the_noise_is_no_difference_detected(tmp_path):
    g = np.random.default_rng(1)
    hard = g.uniform(0.05, 0.3, 64)
    a = write_run(tmp_path / "a", {"": {"absrel": hard + g.normal(0, 0.05, 64)}}, np.arange(64))
    b = write_run(tmp_path / "b", {"": {"absrel": hard + g.normal(0, 0.05, 64)}}, np.arange(64))
    assert compare_runs(a, b)[0].endswith("no difference detected")


def test_ratio_metric_is_compared_as_a_ratio_of_sums_and_nan_scenes_are_dropped(tmp_path):
    scenes = [3, 7, 9]
    # oIoU of A = (1 + 0 + 2) / (1 + 3 + 4) = 0.375; B = (1 + 1 + 2) / 8 = 0.5. mIoU's NaN scene is dropped.
    a = write_run(tmp_path / "a", {"": {"oiou": ([1.0, 0.0, 2.0], [1.0, 3.0, 4.0]), "miou": [0.5, np.nan, 0.7]}},
                  scenes)
    b = write_run(tmp_path / "b", {"": {"oiou": ([1.0, 1.0, 2.0], [1.0, 3.0, 4.0]), "miou": [0.5, 0.2, 0.7]}},
                  scenes)
    miou, oiou = compare_runs(a, b)
    assert "A 0.3750  B 0.5000  A-B -0.1250" in oiou
    assert "A 0.6000  B 0.6000" in miou and "2 scenes" in miou


def test_scenes_in_another_order_are_aligned(tmp_path):
    a, b = depth_runs(tmp_path, n=32)
    with np.load(b / "eval_scenes.npz") as npz:
        shuffled = {k: npz[k][::-1] for k in npz.files}
    np.savez(b / "eval_scenes.npz", **shuffled)
    delta1 = compare_runs(a, b)[1]
    assert delta1.startswith("delta1") and "A-B +0.0100" in delta1 and delta1.endswith("A better")


def test_a_generalist_is_compared_task_by_task_and_a_specialist_with_its_task(tmp_path):
    g = np.random.default_rng(2)
    scenes = np.arange(40)
    depth, flow = {"absrel": g.uniform(0.1, 0.2, 40)}, {"epe": g.uniform(0.3, 0.6, 40)}
    gen_a = write_run(tmp_path / "gen_a", {"depth": depth, "flow": flow}, scenes)
    gen_b = write_run(tmp_path / "gen_b", {"depth": {"absrel": depth["absrel"] + 0.02}, "flow": flow}, scenes)
    lines = compare_runs(gen_a, gen_b)
    assert [line.split()[0] for line in lines] == ["depth/absrel", "flow/epe"]
    assert lines[0].endswith("A better") and lines[1].endswith("no difference detected")
    flow_only = write_run(tmp_path / "flow", {"": {"epe": flow["epe"] + 0.1}}, scenes)
    (line,) = compare_runs(flow_only, gen_a)
    assert line.startswith("flow/epe") and line.endswith("B better")
    assert compare_runs(gen_a, gen_b, metric="epe")[0].startswith("flow/epe")


@pytest.mark.parametrize("metric, message", [
    ("miou", "metric 'miou': neither run has it (metrics: absrel, delta1, prior_absrel, rmse)"),
    ("rmse", "metric 'rmse': only A has it"),
])
def test_a_metric_not_in_both_runs_is_an_input_error(tmp_path, metric, message):
    a, b = depth_runs(tmp_path, n=16)
    with np.load(a / "eval_scenes.npz") as npz:
        np.savez(a / "eval_scenes.npz", rmse=np.ones(16), **{k: npz[k] for k in npz.files})
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compare_runs(a, b, metric=metric)


# ---- the command line ----------------------------------------------------------------------------------------


def sample_py(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "sample.py"), "compare", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=120)


def test_the_command_prints_one_line_per_metric(tmp_path):
    a, b = depth_runs(tmp_path, n=64)
    out = sample_py(a, b, "--metric", "absrel")
    assert out.returncode == 0, out.stderr
    (line,) = out.stdout.splitlines()
    assert line.startswith("absrel") and line.endswith("A better")


def test_bad_input_is_one_line_and_status_2(tmp_path, capsys):
    # in-process (sample.py's `compare` hands its arguments to compare_main): the command itself is the test above
    a, b = depth_runs(tmp_path, n=32)
    other = write_run(tmp_path / "other", {"": {"absrel": np.ones(32)}}, np.arange(100, 132))
    missing = tmp_path / "never_evaluated"
    missing.mkdir()
    cases = [((a, other), "evaluated on different scenes"),
             ((a, missing), f"{missing}: no eval_scenes.npz"),
             ((a, b, "--metric", "epe"), "neither run has it")]
    for args, message in cases:
        assert compare_main(list(map(str, args))) == 2, args
        out = capsys.readouterr()
        assert out.out == "" and len(out.err.splitlines()) == 1 and message in out.err, out.err


def test_metric_directions():
    assert better_direction("absrel") == "lower" and better_direction("depth/prior_delta1") == "higher"
    assert better_direction("oiou") == "higher" and better_direction("angle_median") == "lower"
