"""The generalist without its confound (issue 22, item 5): one model for four tasks against four specialists trained
on the generalist's schedule, all from one pre-trained start, several seeds; and per-task timestep weights against
one shared vector.

    python benchmarks/generalist_study.py                      # train what is missing (3 seeds), report
    python benchmarks/generalist_study.py --steps 2000 --seeds 0 1 2
    python benchmarks/generalist_study.py --report             # only the table of finished runs
    python benchmarks/generalist_study.py --seeds 2 --rows generalist depth flow   # part of a seed (two processes)

Rows, per seed s (runs/generalist_study/<row>_s<s>, trained with train.seed = s), every one from the same
pre-trained start (runs/generalist_study/pretrain: python train.py configs/pretrain.yaml, trained first if missing):
    generalist   python train.py configs/generalist.yaml train.steps=S
    shared       the same, every task's t drawn from ONE vector: the average of the four tasks' c_t^2 (each summed to
                 1) weighted by data.tasks, i.e. the distribution of t the generalist's batches already have, with
                 the dependence on the task removed (ADDP's generalist trains with one averaged vector, its §A.2)
    <task>       python train.py configs/<task>.yaml on the generalist's schedule (`specialist_overrides`): as many
                 samples as the generalist gives the task (S x its share of data.tasks, in steps of the same batch),
                 the same peak and final LR, decay, warm-up, the task's loss and c_t^2 in the generalist
The old comparison (tutorial 07) set an 11,500-step generalist, LR decayed over 11,500 steps and EMA 0.999, against
2500-step specialists with their own recipes, with the generalist's start unrecorded; here only the model differs.
Every run takes one EMA decay, --ema (default 0.995: the specialists' value, a memory of ~200 steps; the
generalist's 0.999 would leave 0.999^n of the start in a specialist of n < 1000 steps).

Per task and seed: the generalist's metric against the specialist's (difference and ratio, generalist / specialist)
and the shared row's against the generalist's; over seeds, the Student-t interval of the per-seed values
(stats.seed_interval) and the verdict word of stats.verdict. Writes tutorials/results/generalist_study.json (python
-m minidp.tables renders it) and tutorials/figures/generalist_study.png: per task, the ratio of errors (AbsRel, EPE,
1 - mIoU, 1 - oIoU) generalist / specialist and shared / generalist, with its interval over seeds (below 1: the
first is better), the four tasks on one scale.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from common import ROOT, call, commit, entry, named_verdict

from minidp import compare, config, ct_estimation, recipe, stats, sweeps, viz

RUNS = ROOT / "runs" / "generalist_study"
RESULTS = ROOT / "tutorials" / "results" / "generalist_study.json"
FIGURE = ROOT / "tutorials" / "figures" / "generalist_study.png"
GENERALIST = ROOT / "configs" / "generalist.yaml"
METRIC = {"depth": "absrel", "flow": "epe", "amodal": "miou", "referring": "oiou"}  # each task's headline metric
COMMAND = "python benchmarks/generalist_study.py"


def finished(path):
    return (path / "eval.json").is_file()


def task_vectors(cfg):
    """{task: its c_t^2 in the generalist, summed to 1}: diffusion.task_timestep_weights[task], else the run's
    timestep_sampling (recipe.timestep_weights; uniform = equal weights)."""
    default = recipe.timestep_weights(cfg)
    out = {}
    for task in cfg.data.tasks:
        w = np.asarray(cfg.diffusion.task_timestep_weights.get(task) or default or [1.0] * ct_estimation.GROUPS,
                       dtype=np.float64)
        out[task] = w / w.sum()
    return out


def shared_vector(cfg):
    """One c_t^2 for every task: the tasks' vectors averaged with the mixture's weights (data.tasks), so that the
    generalist's batches draw t from the same distribution as before, whatever the task."""
    vectors, mix = task_vectors(cfg), cfg.data.tasks
    total = sum(mix.values())
    return sum(mix[t] / total * vectors[t] for t in vectors)


def specialist_steps(cfg, task, steps):
    """The specialist's steps: the generalist's samples of `task` (its share of data.tasks) at the same batch."""
    return max(1, round(steps * cfg.data.tasks[task] / sum(cfg.data.tasks.values())))


def specialist_overrides(cfg, task, steps, ema):
    """configs/<task>.yaml overrides that train it on the generalist's schedule for that task (module docstring)."""
    t = cfg.train
    weights = [round(float(x), 8) for x in task_vectors(cfg)[task]]
    return [f"train.steps={specialist_steps(cfg, task, steps)}", f"train.global_batch={t.global_batch}",
            f"train.lr={t.lr}", f"train.lr_final={t.lr_final}", f"train.lr_schedule={t.lr_schedule}",
            f"train.warmup_steps={t.warmup_steps}", f"train.ema_decay={ema}",
            f"train.loss={t.task_loss.get(task, t.loss)}", "diffusion.timestep_sampling=uniform",
            f"diffusion.timestep_weights={weights}"]


def shared_overrides(cfg):
    v = [round(float(x), 8) for x in shared_vector(cfg)]
    return ["diffusion.task_timestep_weights={" + ", ".join(f"{task}: {v}" for task in cfg.data.tasks) + "}"]


def row_command(cfg, row, seed, steps, ema, start):
    """The train.py command line of one row."""
    common = [f"train.seed={seed}", f"train.init_from={start}", "train.init_optional=false",
              f"train.out_dir={RUNS / f'{row}_s{seed}'}"]
    if row in ("generalist", "shared"):
        extra = shared_overrides(cfg) if row == "shared" else []
        return [sys.executable, "train.py", GENERALIST, f"train.steps={steps}", f"train.ema_decay={ema}", *extra,
                *common]
    return [sys.executable, "train.py", ROOT / "configs" / f"{row}.yaml",
            *specialist_overrides(cfg, row, steps, ema), *common]


def value(run, task):
    """The task's headline metric from a run's eval.json (a generalist's holds one section per task)."""
    e = json.loads((run / "eval.json").read_text())
    return float((e[task] if task in e and isinstance(e[task], dict) else e)[METRIC[task]])


def over_seeds(values):
    mean, half = stats.seed_interval(values)
    return mean, (None if not np.isfinite(half) else (mean - half, mean + half))


def compared(values, reference, name, against, metric):
    """(difference entry, ratio entry, verdict word, per-seed differences) of name - against over paired seeds; the
    ratio entry is None where a reference value is 0 (an untrained model's IoU: no ratio to take)."""
    diffs = list(np.subtract(values, reference))
    d, ci = over_seeds(diffs)
    ratio = None if not np.all(reference) else entry(*over_seeds(np.divide(values, reference)), digits=3)
    word = "1 seed" if ci is None else named_verdict(*ci, name, against, compare.better_direction(metric))
    return entry(d, ci), ratio, word, diffs


def error(task, values):
    """The task's headline metric as an error (lower is better): AbsRel and EPE as they are, 1 - an IoU."""
    values = np.asarray(values, dtype=np.float64)
    return values if compare.better_direction(METRIC[task]) == "lower" else 1 - values


def figure(points):
    """points {(task, comparison): per-seed error ratios}: one marker per task and comparison with its interval
    over seeds, a line at 1 (no difference)."""
    plt = viz.pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    comparisons = {"generalist / specialist": ("tab:blue", -0.12), "shared / generalist": ("tab:orange", 0.12)}
    tasks = list(dict.fromkeys(task for task, _ in points))
    for name, (colour, shift) in comparisons.items():
        xs, means, halves = [], [], []
        for i, task in enumerate(tasks):
            if (task, name) in points:
                mean, half = stats.seed_interval(points[task, name])
                xs.append(i + shift), means.append(mean), halves.append(half if np.isfinite(half) else 0)
        ax.errorbar(xs, means, yerr=halves, color=colour, marker="o", ls="none", capsize=3, label=name)
    ax.axhline(1, color="k", lw=0.8)
    ax.set_xticks(range(len(tasks)), [f"{t}\n({'1 - ' if compare.better_direction(METRIC[t]) != 'lower' else ''}"
                                      f"{METRIC[t]})" for t in tasks], fontsize=8)
    ax.set_ylabel("error ratio (below 1: better)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=110)
    plt.close(fig)


def report(cfg, seeds, steps):
    """Tabulate the finished rows into RESULTS: per task, the specialist, the generalist and the shared row."""
    version, runs, points = commit(), [], {}
    for task in cfg.data.tasks:
        metric = METRIC[task]
        done = [s for s in seeds if all(finished(RUNS / f"{row}_s{s}") for row in (task, "generalist", "shared"))]
        if not done:
            print(f"{task}: no seed with all three rows finished")
            continue
        vals = {row: [value(RUNS / f"{task if row == 'specialist' else row}_s{s}", task) for s in done]
                for row in ("specialist", "generalist", "shared")}
        errors = {row: error(task, v) for row, v in vals.items()}
        if np.all(errors["specialist"] > 0) and np.all(errors["generalist"] > 0):
            points[task, "generalist / specialist"] = errors["generalist"] / errors["specialist"]
            points[task, "shared / generalist"] = errors["shared"] / errors["generalist"]
        for row, against in (("specialist", None), ("generalist", "specialist"), ("shared", "generalist")):
            mean, ci = over_seeds(vals[row])
            cells = {"task": task, "row": row, "metric": metric, "seeds": str(len(done)), "against": against or ""}
            metrics = {"value": entry(mean, ci)}
            per_seed = {metric: [round(v, 6) for v in vals[row]]}
            if against:
                metrics["diff"], ratio, cells["verdict"], diffs = compared(vals[row], vals[against], row, against,
                                                                          metric)
                if ratio:
                    metrics["ratio"] = ratio
                per_seed["diff"] = [round(v, 6) for v in diffs]
            trained = sweeps.trained_at([RUNS / f"{task if row == 'specialist' else row}_s{s}" for s in done], version)
            runs.append({"name": f"{task} {row}", "seed": done, "overrides": None, "command": f"{COMMAND} --steps {steps}",
                         "commit": trained, "cells": cells, "metrics": metrics, "per_seed": per_seed})
            print(task, row, cells, {k: m["value"] for k, m in metrics.items()})
    study = {"study": "generalist_study", "description": "the generalist against specialists on its schedule",
             "evidence": f"1024 validation scenes, up to {len(seeds)} training seeds; the generalist {steps} steps, "
                         f"every run from one shared pre-trained start",
             "command": f"{COMMAND} --steps {steps}",
             "columns": [{"head": "task", "cell": "task"}, {"head": "row", "cell": "row"},
                         {"head": "metric", "cell": "metric"}, {"head": "seeds", "cell": "seeds"},
                         {"head": "mean over seeds", "metric": "value"}, {"head": "against", "cell": "against"},
                         {"head": "difference", "metric": "diff"}, {"head": "ratio", "metric": "ratio"},
                         {"head": "verdict", "cell": "verdict"}],
             "runs": runs}
    if runs:
        sweeps.write_study(RESULTS, study)
    if points:
        figure(points)
    return 0


def main(argv=None):
    global RUNS
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--report", action="store_true", help="train nothing; tabulate the finished runs")
    p.add_argument("--steps", type=int, default=3500, help="the generalist's steps (the quickstart's 3500)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--ema", type=float, default=0.995, help="every run's EMA decay")
    p.add_argument("--rows", nargs="+", metavar="ROW", help="train only these rows (generalist, shared or a task; "
                   "default all), e.g. to split one seed between two processes")
    p.add_argument("--runs", type=Path, default=RUNS, help="where the runs go (default runs/generalist_study)")
    args = p.parse_args(argv)
    RUNS = args.runs.resolve()
    cfg = config.load_config(GENERALIST)
    rows = ("generalist", "shared", *cfg.data.tasks)
    unknown = sorted(set(args.rows or ()) - set(rows))
    if unknown:
        p.error(f"unknown row(s) {', '.join(unknown)}; the rows are {', '.join(rows)}")
    if not args.report:
        pretrain = RUNS / "pretrain"
        if not (pretrain / "ckpt.pt").is_file() and call(
                [sys.executable, "train.py", "configs/pretrain.yaml", f"train.out_dir={pretrain}"]) != 0:
            return 1
        for seed in args.seeds:
            for row in rows:
                if (args.rows and row not in args.rows) or finished(RUNS / f"{row}_s{seed}"):
                    continue
                if call(row_command(cfg, row, seed, args.steps, args.ema, pretrain / "ckpt.pt")) != 0:
                    print(f"error: {row} seed {seed} failed; see above", file=sys.stderr)
                    return 1
                sweeps.mark_trained(RUNS / f"{row}_s{seed}", commit())
    return report(cfg, args.seeds, args.steps)


if __name__ == "__main__":
    sys.exit(main())
