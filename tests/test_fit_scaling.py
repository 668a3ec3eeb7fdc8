"""fit_scaling.py end to end: fits over folders of fake runs written here, bad input, and one micro sweep.

Independent references: run directories written by hand from a known law L = a * C^b (the fit must give a
and b back); train.py's own run directories for the sweep (which must produce them, skip them when finished,
and fit their logs).

Run: python -m pytest -q tests/test_fit_scaling.py
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fit_scaling  # noqa: E402
from helpers import run_child_forked  # noqa: E402
from minidp import sweeps  # noqa: E402

A, B = 0.23, -0.0098  # the scaling paper's pre-training law
# a micro sweep's common overrides: micro DiTs at 16 px on 16 scenes, batch 4, logging every step, evaluated on 2
MICRO = ("model.preset=micro, train.init_from=, data.resolution=16, data.train_size=16, data.val_size=2,\n"
         "         train.global_batch=4, train.log_every=1, sample.num_images=2, sample.batch=2, sample.ensemble=1")


def write_run(run, macs, loss=None, evaluation=None, extra=None):
    """A run directory as train.py / sample.py write it: log.jsonl records and optionally eval.json."""
    run.mkdir(parents=True)
    if macs is not None:
        loss = A * np.asarray(macs) ** B if loss is None else loss
        lines = [json.dumps({"step": i + 1, "loss": float(l), "train_macs": float(m)})
                 for i, (m, l) in enumerate(zip(macs, loss))]
        (run / "log.jsonl").write_text("\n".join(lines) + "\n")
    if evaluation is not None:
        (run / "eval.json").write_text(json.dumps(evaluation))
    if extra:
        (run / "sweep.json").write_text(json.dumps(extra))


def law_curves(folder, n_runs=4):
    """n_runs loss curves that lie above the law and touch it once each, like a model-size sweep. The smallest
    is logged from its compute-optimal point on and the largest up to it: the envelope keeps every point that no
    point with less compute beats (minidp/scaling.py), so the smallest run's warm-up, and the largest run's
    points past its optimum down to its lowest loss (0.26 % above the law here), would be on it."""
    for i, centre in enumerate(np.linspace(14, 18, n_runs)):
        c = 10 ** np.linspace(centre - (i > 0), centre + (i < n_runs - 1), 25)
        write_run(folder / f"run{i}", c, A * c ** B * (1 + 0.05 * np.log10(c / 10 ** centre) ** 2))


def test_fit_over_a_folder_recovers_the_law_and_names_skipped_runs(tmp_path, capsys):
    law_curves(tmp_path)
    (tmp_path / "no_log").mkdir()
    (tmp_path / "no_log" / "config.yaml").write_text("train: {steps: 1}\n")
    (tmp_path / "no_macs").mkdir()
    (tmp_path / "no_macs" / "log.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
    assert fit_scaling.main(["fit", str(tmp_path), "--smooth", "1"]) == 0
    err = capsys.readouterr().err
    assert "no_log: no log.jsonl" in err and "no_macs: log.jsonl has no train_macs" in err
    result = json.loads((tmp_path / "scaling_loss.json").read_text())
    assert result["a"] == pytest.approx(A, rel=0.01) and result["b"] == pytest.approx(B, rel=0.01)
    assert result["runs"] == ["run0", "run1", "run2", "run3"]
    assert (tmp_path / "scaling_loss.png").stat().st_size > 0


def test_eval_metrics_against_inference_macs(tmp_path, capsys):
    # a test-time sweep: eval.json per variant (steps x ensemble), forward MACs recorded by the sweep
    for steps in (1, 2, 5, 10, 20):
        c = steps * 3 * 1e9
        write_run(tmp_path / f"s{steps}", None, evaluation={"steps": steps, "ensemble": 3, "absrel": 0.4 * c ** -0.1,
                                                            "delta1": 1 - 2.0 * c ** -0.2},
                  extra={"forward_macs": 1e9})
    assert fit_scaling.main(["fit", str(tmp_path), "--x", "inference", "--y", "eval.absrel"]) == 0
    absrel = json.loads((tmp_path / "scaling_absrel.json").read_text())
    assert absrel["a"] == pytest.approx(0.4, rel=1e-6) and absrel["b"] == pytest.approx(-0.1, rel=1e-6)
    assert fit_scaling.main(["fit", str(tmp_path), "--x", "inference", "--y", "eval.delta1_err"]) == 0
    err = json.loads((tmp_path / "scaling_delta1_err.json").read_text())
    assert err["a"] == pytest.approx(2.0, rel=1e-6) and err["b"] == pytest.approx(-0.2, rel=1e-6)
    # delta1 itself rises with compute: no falling law fits it, and the error names the metric that does
    assert fit_scaling.main(["fit", str(tmp_path), "--x", "inference", "--y", "eval.delta1"]) == 2
    line = one_error_line(capsys)
    assert "eval.delta1 rises as the model improves" in line and "--y eval.delta1_err" in line


def test_parent_macs_are_added_to_a_fine_tunes_compute(tmp_path):
    # fine-tunes of differently pre-trained models: x = pre-training + fine-tuning MACs
    for i, pre in enumerate((1e15, 3e15, 1e16)):
        total = pre + 1e14
        write_run(tmp_path / f"ft{i}", [1e14], evaluation={"absrel": 0.5 * total ** -0.05}, extra={"parent_macs": pre})
    assert fit_scaling.main(["fit", str(tmp_path), "--y", "eval.absrel"]) == 0
    result = json.loads((tmp_path / "scaling_absrel.json").read_text())
    assert result["b"] == pytest.approx(-0.05, rel=1e-6)


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "Traceback" not in "\n".join(err)
    return err[-1]


def test_no_usable_run_is_one_line_and_status_2(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "log.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
    assert fit_scaling.main(["fit", str(tmp_path)]) == 2
    assert "no usable run among 2 directories" in one_error_line(capsys)


@pytest.mark.parametrize("args, message", [
    (["--y", "absrel"], "--y must be loss or eval.<key>"),
    (["--x", "inference"], "needs an evaluation metric"),
    (["--smooth", "4"], "positive odd"),
])
def test_bad_options_are_one_line_and_status_2(tmp_path, capsys, args, message):
    law_curves(tmp_path, n_runs=1)
    assert fit_scaling.main(["fit", str(tmp_path), *args]) == 2
    assert message in one_error_line(capsys)


def test_too_few_points_and_missing_folder_are_clear_errors(tmp_path, capsys):
    write_run(tmp_path / "r", [1e9, 1e10])
    assert fit_scaling.main(["fit", str(tmp_path)]) == 2
    assert "at least 3 points" in one_error_line(capsys)
    assert fit_scaling.main(["fit", str(tmp_path / "missing")]) == 2
    assert "not a directory" in one_error_line(capsys)


@pytest.mark.parametrize("body, message", [
    ("config: x.yaml\nout: o\nvariants: {{a: []}}\n", "config file not found"),
    ("config: {cfg}\nout: o\nvariants: {{a: [train.stepz=2]}}\n", "variant a: override 'train.stepz=2': unknown key"),
    ("config: {cfg}\nout: o\nvariants: {{a: []}}\nfit: {{y: [absrel]}}\n", "fit.y entries"),
    ("config: {cfg}\nout: o\nvarients: {{a: []}}\n", "unknown key 'varients'"),
    ("config: {cfg}\nout: o\nvariants: {{a: [], b: {{continues: a, overrides: [train.steps=9000]}}}}\n",
     "variant b: continues 'a' with train.lr_schedule = 'exp'"),  # depth.yaml's LR decays to its train.steps
    ("config: {cfg}\nout: o\ncommon: [train.lr_schedule=constant]\n"
     "variants: {{b: {{continues: a, overrides: [train.steps=9000]}}, a: []}}\n", "which comes after it"),
    ("config: {cfg}\nout: o\ncommon: [train.lr_schedule=constant]\n"
     "variants: {{a: [], b: {{continues: a}}}}\n", "it must be more"),
])
def test_bad_sweep_file_is_one_line_and_status_2_before_anything_runs(tmp_path, capsys, body, message):
    sweep = tmp_path / "s.yaml"
    sweep.write_text(body.format(cfg=ROOT / "configs" / "depth.yaml"))
    assert fit_scaling.main(["sweep", str(sweep)]) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "o").exists()


def test_micro_sweep_trains_each_variant_skips_finished_ones_and_fits(tmp_path, monkeypatch, capsys):
    # two micro DiTs at 16 px, 2 steps each (the children are train.py processes forked from this one: how a sweep
    # starts its children is tests/test_faults.py's sweep test)
    monkeypatch.setattr(fit_scaling, "run_child", run_child_forked)
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "micro.yaml"
    sweep.write_text(f"""
config: {ROOT / 'configs' / 'depth.yaml'}
out: {tmp_path / 'out'}
common: [{MICRO}, train.steps=2, train.warmup_steps=0]
variants:
  lr_hi: [train.lr=1e-3, train.lr_final=1e-4]
  lr_lo: [train.lr=1e-4, train.lr_final=1e-5]
fit: {{y: [loss]}}
""")
    assert fit_scaling.main(["sweep", str(sweep)]) == 0
    out = tmp_path / "out"
    for name in ("lr_hi", "lr_lo"):
        assert (out / name / "eval.json").is_file() and (out / name / "ckpt.pt").is_file()
    result = json.loads((out / "scaling_loss.json").read_text())
    assert result["n_points"] == 4 and result["runs"] == ["lr_hi", "lr_lo"]
    assert (out / "scaling_loss.png").is_file()
    capsys.readouterr()
    stamp = (out / "lr_hi" / "eval.json").stat().st_mtime
    time.sleep(0.01)
    assert fit_scaling.main(["sweep", str(sweep)]) == 0  # finished runs are skipped, the fit is redone
    assert "lr_hi: finished, skipped" in capsys.readouterr().out
    assert (out / "lr_hi" / "eval.json").stat().st_mtime == stamp


def test_a_continued_variant_equals_the_same_run_trained_from_scratch(tmp_path, monkeypatch):
    # `continues`: b = a's 2 steps resumed to 4; c = 4 steps from scratch. A constant LR after a warm-up that ends
    # within a's steps: every weight, EMA and logged loss of b must be c's (the sweep's claim that chaining is exact)
    monkeypatch.setattr(fit_scaling, "run_child", run_child_forked)
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "chain.yaml"
    sweep.write_text(f"""
config: {ROOT / 'configs' / 'depth.yaml'}
out: {tmp_path / 'out'}
common: [{MICRO}, train.warmup_steps=1, train.lr_schedule=constant]
variants:
  a: [train.steps=2]
  b: {{continues: a, overrides: [train.steps=4]}}
  c: [train.steps=4]
fit: {{y: [loss]}}
""")
    assert fit_scaling.main(["sweep", str(sweep)]) == 0
    out = tmp_path / "out"
    b, c = (torch.load(out / n / "ckpt.pt", weights_only=True) for n in ("b", "c"))
    assert b["step"] == c["step"] == 4
    for key in ("model", "ema"):
        assert b[key].keys() == c[key].keys()
        assert all(torch.equal(b[key][k], c[key][k]) for k in c[key]), key
    losses = [{r["step"]: r["loss"] for r in map(json.loads, (out / n / "log.jsonl").read_text().splitlines())
               if "loss" in r} for n in ("b", "c")]
    assert losses[0] == losses[1] and sorted(losses[0]) == [1, 2, 3, 4]  # a's steps 1-2 copied, 3-4 resumed
    a_lines = (out / "a" / "log.jsonl").read_text().splitlines()
    assert (out / "b" / "log.jsonl").read_text().splitlines()[:len(a_lines)] == a_lines  # copied (times too): not retrained
    a = torch.load(out / "a" / "ckpt.pt", weights_only=True)
    assert not all(torch.equal(a["model"][k], c["model"][k]) for k in c["model"])  # 2 more steps changed it


@pytest.mark.parametrize("sweep", sorted((ROOT / "configs" / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_sweep_file_is_valid(sweep):
    spec = fit_scaling.read_sweep(sweep)  # every variant's config resolved through config.py
    assert spec["variants"] and spec["fit"]["y"]


def test_sweep_table_lists_each_run_and_a_metric_of_equal_compute_is_a_warning_not_a_failure(tmp_path, capsys):
    # a schedule sweep: three runs of the same compute, so eval.absrel has no law, but the table has the numbers
    for name, absrel in (("linear", 0.16), ("cosine", 0.15), ("scaled", 0.155)):
        write_run(tmp_path / name, [1e12, 2e12], loss=[0.05, 0.04], evaluation={"absrel": absrel})
    groups = {n: [tmp_path / n] for n in ("linear", "cosine", "scaled")}
    sweeps.print_table(groups, "train", ["loss", "eval.absrel"], window=1)
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["cosine"].split()[1:3] == ["2.000e+12", "0.0400"] and "0.1500" in rows["cosine"]
    assert "0.1600" in rows["linear"]
    assert "1 seed" in rows["cosine"] and "better" not in rows["cosine"]  # one seed: no interval, no verdict
    with pytest.raises(fit_scaling.InputError, match="same compute"):
        sweeps.fit_and_draw(groups, "train", "eval.absrel", tmp_path)


def fake_train_py(calls):
    """A stand-in for the train.py child: writes the run directory from its overrides. Variant b's loss is
    0.005 above a's (each run adds noise of sd 0.0005); both evaluate to AbsRel 0.1 (noise sd 0.01)."""
    def run_child(argv, what):
        args = dict(a.split("=", 1) for a in argv[2:] if "=" in a)
        calls.append(args)
        run, seed = Path(args["train.out_dir"]), int(args.get("train.seed", 0))
        offset = 5 * (float(args["train.lr"]) - 1e-3)  # the variant: lr 1e-3 -> 0, lr 2e-3 -> 0.005
        g = np.random.default_rng([seed, round(offset * 1e3)])  # each run its own noise
        macs = 1e12 * np.arange(1, 6)
        write_run(run, macs, loss=(0.05 + offset) * (macs / 1e12) ** -0.1 + g.normal(0, 5e-4),
                  evaluation={"absrel": 0.1 + g.normal(0, 0.01) + 0.001 * offset})
    return run_child


def test_sweep_with_seeds_trains_each_seed_once_shows_intervals_and_verdicts_and_fits_the_means(
        tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(fit_scaling, "run_child", fake_train_py(calls))
    sweep = tmp_path / "seeds.yaml"
    sweep.write_text(f"""
config: {ROOT / 'configs' / 'depth.yaml'}
out: {tmp_path / 'out'}
seeds: 3
variants:
  a: [train.lr=1e-3, train.lr_final=1e-4]
  b: [train.lr=2e-3]
fit: {{y: [loss, eval.absrel]}}
""")
    assert fit_scaling.main(["sweep", str(sweep)]) == 0
    out = tmp_path / "out"
    assert sorted((c["train.out_dir"], c["train.seed"]) for c in calls) == sorted(
        (str(out / v / f"seed{k}"), str(k)) for v in "ab" for k in range(3))
    table = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("run "))
    row_a, row_b = table[header + 1], table[header + 2]
    assert row_a.split()[0] == "a" and row_b.split()[0] == "b"
    assert row_a.count("+-") == row_b.count("+-") == 2  # mean +- t-interval for the loss and the metric
    assert "a better" in row_b  # b's loss is 0.005 higher in every seed, the seed noise 0.0005
    assert "no difference detected" in row_b  # AbsRel differs by 1e-5, the seed noise is 0.01
    result = json.loads((out / "scaling_loss.json").read_text())
    assert result["runs"] == ["a", "b"] and result["n_points"] == 10  # one mean curve of 5 points per variant
    seeds_loss = [json.loads(line)["loss"] for k in range(3)
                  for line in (out / "a" / f"seed{k}" / "log.jsonl").read_text().splitlines()[:1]]
    first = min(loss for macs, loss in result["points_used"] if macs == 1e12)  # a's first point (unsmoothed)
    assert first == pytest.approx(np.mean(seeds_loss), rel=1e-12)
    calls.clear()
    assert fit_scaling.main(["sweep", str(sweep)]) == 0  # every seed finished: nothing is trained again
    assert calls == [] and capsys.readouterr().out.count("finished, skipped") == 6


@pytest.mark.parametrize("body, message", [("seeds: 0", "seeds must be a positive integer"),
                                           ("baseline: c", "baseline 'c' is not a variant")])
def test_bad_seeds_or_baseline_is_one_line_and_status_2(tmp_path, capsys, body, message):
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"config: {ROOT / 'configs' / 'depth.yaml'}\nout: o\nvariants: {{a: []}}\n{body}\n")
    assert fit_scaling.main(["sweep", str(sweep)]) == 2
    assert message in one_error_line(capsys)


def test_fit_over_a_sweep_with_seeds_takes_each_variant_as_the_mean_of_its_seeds(tmp_path):
    for i, centre in enumerate((14, 15, 16)):
        c = 10 ** np.linspace(centre, centre + 0.5, 5)
        for k, factor in enumerate((1.0, 1.02)):  # seed 1 is 2 % above seed 0: the mean is 1 % above the law
            write_run(tmp_path / f"v{i}" / f"seed{k}", c, A * c ** B * factor)
    assert fit_scaling.main(["fit", str(tmp_path), "--smooth", "1"]) == 0
    result = json.loads((tmp_path / "scaling_loss.json").read_text())
    assert result["runs"] == ["v0", "v1", "v2"] and result["n_points"] == 15
    assert result["a"] == pytest.approx(1.01 * A, rel=1e-9) and result["b"] == pytest.approx(B, rel=1e-9)


def test_a_variant_against_another_than_the_baseline_and_the_results_file(tmp_path, monkeypatch, capsys):
    # c and d are judged against b (their `against:`), b against the baseline a; --results writes the table's source
    monkeypatch.setattr(fit_scaling, "run_child", fake_train_py([]))
    monkeypatch.setattr(fit_scaling.tables, "RESULTS", tmp_path)
    monkeypatch.setattr(fit_scaling, "checkout_commit", lambda: "abc1234")  # what the runs are trained at
    sweep = tmp_path / "pairs.yaml"
    sweep.write_text(f"""# Pairs: a test
config: {ROOT / 'configs' / 'depth.yaml'}
out: {tmp_path / 'out'}
seeds: 3
variants:
  a: [train.lr=1e-3, train.lr_final=1e-4]
  b: [train.lr=2e-3]
  c: {{overrides: [train.lr=2e-3], against: b}}
  d: {{overrides: [train.lr=1e-3, train.lr_final=1e-4], against: b}}
fit: {{y: [loss]}}
""")
    assert fit_scaling.main(["sweep", str(sweep), "--results", "pairs"]) == 0
    printed = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in printed if line[:2] in ("a ", "b ", "c ", "d ")}
    assert "a better" in rows["b"] and "d better" in rows["d"] and "no difference detected" in rows["c"]
    study = json.loads((tmp_path / "pairs.json").read_text())
    assert study["description"] == "Pairs" and study["evidence"] == "3 training seeds, paired by seed"
    by_name = {run["name"]: run for run in study["runs"]}
    assert [by_name[n]["cells"]["against"] for n in "abcd"] == ["", "a", "b", "b"]
    assert by_name["d"]["cells"]["loss_verdict"] == "d better" and "loss_diff" not in by_name["a"]["metrics"]
    d = by_name["d"]["metrics"]["loss_diff"]  # d is a run for run (same seeds, same offset 0): minus b's 0.005
    assert d["value"] == pytest.approx(-0.005 * 5 ** -0.1, abs=1.5e-3) and d["ci"][1] < 0  # noise sd 4e-4
    assert by_name["c"]["metrics"]["loss_diff"]["value"] == 0  # c is b run for run
    assert "| d |" in fit_scaling.tables.render(study)
    assert {run["commit"] for run in study["runs"]} == {"abc1234"}
    # a run from before sweeps recorded their commit takes the checkout's that writes the results
    (tmp_path / "out" / "d" / "seed1" / "trained_at.txt").unlink()
    monkeypatch.setattr(fit_scaling, "checkout_commit", lambda: "def5678")
    assert fit_scaling.main(["sweep", str(sweep), "--results", "pairs"]) == 0
    rows = {run["name"]: run for run in json.loads((tmp_path / "pairs.json").read_text())["runs"]}
    assert rows["d"]["commit"] == "abc1234, def5678" and rows["c"]["commit"] == "abc1234"


def test_against_must_name_a_variant(tmp_path, capsys):
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"config: {ROOT / 'configs' / 'depth.yaml'}\nout: o\nvariants: {{a: [], b: {{against: z}}}}\n")
    assert fit_scaling.main(["sweep", str(sweep)]) == 2
    assert "variant b: against 'z' is not a variant" in one_error_line(capsys)


def test_the_results_file_holds_the_variants_the_fit_includes_and_a_parent_without_the_metric(tmp_path, monkeypatch):
    # a pre-train / fine-tune sweep: the pre-training parents evaluate no AbsRel; the table holds the fine-tunes only
    train_child = fake_train_py([])

    def run_child(argv, what):
        train_child(argv, what)
        out = Path(dict(a.split("=", 1) for a in argv[2:] if "=" in a)["train.out_dir"])
        if out.parent.name == "pre":
            (out / "eval.json").write_text(json.dumps({"class_loss": 0.3}))  # no absrel
    monkeypatch.setattr(fit_scaling, "run_child", run_child)
    monkeypatch.setattr(fit_scaling.tables, "RESULTS", tmp_path)
    monkeypatch.setattr(fit_scaling, "checkout_commit", lambda: "abc1234")
    sweep = tmp_path / "pre.yaml"
    sweep.write_text(f"""# Pre: a test
config: {ROOT / 'configs' / 'depth.yaml'}
out: {tmp_path / 'out'}
seeds: 2
baseline: ft_a
variants:
  pre: [train.lr=1e-3, train.lr_final=1e-4]
  ft_a: {{parent: pre, overrides: [train.lr=1e-3, train.lr_final=1e-4]}}
  ft_b: {{parent: pre, overrides: [train.lr=2e-3]}}
fit: {{y: [eval.absrel], include: [ft_*]}}
""")
    assert fit_scaling.main(["sweep", str(sweep), "--results", "pre"]) == 0
    study = json.loads((tmp_path / "pre.json").read_text())
    assert [run["name"] for run in study["runs"]] == ["ft_a", "ft_b"]
    assert [run["cells"]["against"] for run in study["runs"]] == ["", "ft_a"]
    absrel = {n: [json.loads((tmp_path / "out" / n / f"seed{k}" / "eval.json").read_text())["absrel"]
                  for k in range(2)] for n in ("ft_a", "ft_b")}
    assert study["runs"][1]["per_seed"]["absrel"] == pytest.approx(absrel["ft_b"], abs=1e-8)  # seed 0, seed 1
    diff = study["runs"][1]["metrics"]["absrel_diff"]["value"]  # ft_b - ft_a, paired seed by seed
    assert diff == pytest.approx(np.mean(np.subtract(absrel["ft_b"], absrel["ft_a"])), rel=1e-12)
