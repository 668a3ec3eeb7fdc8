"""Is the diffusion needed? End-to-end fine-tuning (E2E-FT) against the diffusion recipe (issue 23), paired on the
same validation scenes, 3 seeds, at stated training compute.

    python benchmarks/e2e_study.py                       # depth, flow and normals: train what is missing, report
    python benchmarks/e2e_study.py --tasks depth --seeds 0 1 2
    python benchmarks/e2e_study.py --report              # only the table of finished runs
    python benchmarks/e2e_study.py --scratch --runs runs/e2e_scratch --tasks depth   # as a fresh clone trains
    python benchmarks/e2e_study.py --pair runs/depth runs/e2e_depth    # tutorial 11's one-seed quickstart table

Rows, per task and seed s (runs/e2e/<task>/<row>_s<s>), every one from the same pre-trained start
(runs/e2e/pretrain, trained first if missing: python train.py configs/pretrain.yaml, with --extra):
    diffusion        python train.py configs/<task>.yaml                  its own evaluation (1 step x 5 members)
    diffusion_zeros  python sample.py <diffusion run> sample.noise=zeros sample.ensemble=1   (no training)
    e2e              python train.py configs/e2e/<task>.yaml              (the same steps and batch: equal compute)
    diffusion_continued  configs/<task>.yaml from the diffusion run's checkpoint for --continue-steps more steps at
                     the diffusion run's final LR, constant: the control for the next row (the same extra compute,
                     the diffusion objective)
    e2e_continued    the same continuation with configs/e2e/<task>.yaml (E2E-FT's main recipe: it continues
                     Marigold); compute = both runs
With --scratch every row starts from random weights instead (train.init_from=), as the quickstarts do on a fresh
clone. Each row is compared with its reference in AGAINST (`diffusion`; for `e2e_continued`, `diffusion_continued`,
the row of equal compute) of the same seed scene by scene (stats.paired_diff_ci), and over seeds by the Student-t
interval of the per-seed differences (stats.seed_interval); the verdict word is stats.verdict's.
Training compute is the run's train_macs (log.jsonl; a continued run adds its parent's; the shared pre-training is
stated once), inference compute the forward MACs per prediction: steps x members x MACs per sample.
Writes tutorials/results/e2e_study.json (python -m minidp.tables renders it) and tutorials/figures/e2e_study.png (each
difference with its interval over seeds and every seed's value); with --scratch, e2e_study_scratch.json / .png.
"""

import argparse
import json
import sys
from pathlib import Path

from common import ROOT, call, commit, entry, named_verdict, paired

from minidp import compare, config, stats, sweeps, viz

RUNS = ROOT / "runs" / "e2e"
RESULTS = ROOT / "tutorials" / "results" / "e2e_study.json"
FIGURES = ROOT / "tutorials" / "figures"
METRIC = {"depth": "absrel", "flow": "epe", "normals": "angle_mean"}  # lower is better for all three
ROWS = ("diffusion", "diffusion_zeros", "e2e", "diffusion_continued", "e2e_continued")
CONTINUED = ("diffusion_continued", "e2e_continued")  # trained on from the diffusion run: its compute is added
# what each row is compared with: the same model (zeros), the run it continues, or the row of equal training compute
AGAINST = {"diffusion_zeros": "diffusion", "e2e": "diffusion", "diffusion_continued": "diffusion",
           "e2e_continued": "diffusion_continued"}
COMMAND = "python benchmarks/e2e_study.py"


def e2e_schedule(task):
    """The diffusion row's overrides that put it on configs/e2e/<task>.yaml's length and decay: equal training compute
    by construction (configs/e2e/depth.yaml keeps the 3000 steps decaying 10x that the results were measured with,
    while configs/depth.yaml trains 2600 decaying 2x since 2026-12-04)."""
    train = config.load_config(ROOT / "configs" / "e2e" / f"{task}.yaml").train
    return [f"train.steps={train.steps}", f"train.lr_final={train.lr_final}"]


def row_dir(task, row, seed):
    if row == "diffusion_zeros":  # an evaluation of the diffusion run, kept beside it
        return RUNS / task / f"diffusion_s{seed}" / "zeros"
    return RUNS / task / f"{row}_s{seed}"


def finished(path):
    return (Path(path) / compare.SCENES_FILE).is_file()


def run_row(task, row, seed, extra, continue_steps, scratch=False):
    """Train or evaluate one row unless it has finished; its exit status."""
    out = row_dir(task, row, seed)
    if finished(out):
        return 0
    start = (["train.init_from="] if scratch else
             [f"train.init_from={RUNS / 'pretrain' / 'ckpt.pt'}", "train.init_optional=false"])
    common = [f"train.seed={seed}", *extra]
    if row == "diffusion":
        return call([sys.executable, "train.py", f"configs/{task}.yaml", *e2e_schedule(task), *start, *common,
                     f"train.out_dir={out}"])
    if row == "diffusion_zeros":
        return call([sys.executable, "sample.py", row_dir(task, "diffusion", seed), "sample.noise=zeros",
                     "sample.ensemble=1", "--out", out])
    if row == "e2e":
        return call([sys.executable, "train.py", f"configs/e2e/{task}.yaml", *start, *common, f"train.out_dir={out}"])
    parent = row_dir(task, "diffusion", seed)
    lr = json.loads((parent / "log.jsonl").read_text().splitlines()[-1])["lr"]  # where its decay ended
    cfg = f"configs/e2e/{task}.yaml" if row == "e2e_continued" else f"configs/{task}.yaml"
    return call([sys.executable, "train.py", cfg, f"train.init_from={parent / 'ckpt.pt'}",
                 *common, f"train.steps={continue_steps}", f"train.lr={lr:.3g}", "train.lr_schedule=constant",
                 "train.warmup_steps=0", f"train.out_dir={out}"])  # after --extra: its train.steps is not this


def train_macs(task, row, seed):
    """Training MACs of a row: its own log's last train_macs, plus the diffusion parent's for the rows built on it."""
    def last(path):
        return json.loads((path / "log.jsonl").read_text().splitlines()[-1])["train_macs"]

    own = 0 if row == "diffusion_zeros" else last(row_dir(task, row, seed))
    parent = last(row_dir(task, "diffusion", seed)) if row in ("diffusion_zeros", *CONTINUED) else 0
    return own + parent


def inference_macs(path):
    """Forward MACs per prediction: DDIM steps x members x the model's MACs per sample (its training log's header
    value is 3x that per training sample: forward + backward)."""
    e = json.loads((Path(path) / "eval.json").read_text())
    run = Path(path) if (Path(path) / "log.jsonl").is_file() else Path(path).parent
    first = json.loads((run / "log.jsonl").read_text().splitlines()[0])
    batch = config.load_config(run / "config.yaml", []).train.global_batch
    per_sample = first["train_macs"] / (3 * first["step"] * batch)
    return e["steps"] * e["ensemble"] * per_sample


def report(tasks, seeds, scratch=False):
    """Tabulate the finished rows into tutorials/results/e2e_study.json (e2e_study_scratch.json with --scratch)."""
    version, command = commit(), f"{COMMAND} --scratch" if scratch else COMMAND
    start = "every run from scratch" if scratch else "every run from one shared pre-trained start"
    runs = []
    for task in tasks:
        metric = METRIC[task]
        for row in ROWS:
            ref = AGAINST.get(row, row)
            values, diffs, done = [], [], []
            for s in seeds:
                a, b = row_dir(task, row, s), row_dir(task, ref, s)
                if not (finished(a) and finished(b)):
                    continue
                values.append(json.loads((a / "eval.json").read_text())[metric])
                if row != ref:
                    diffs.append(paired(a, b, metric)[0])
                done.append(s)
            if not done:
                print(f"{task} {row}: no finished seed")
                continue
            mean, half = stats.seed_interval(values)
            cells = {"task": task, "row": row, "seeds": str(len(done)),
                     "train": f"{train_macs(task, row, done[0]) / 1e12:.1f}",
                     "inference": f"{inference_macs(row_dir(task, row, done[0])) / 1e6:.0f}"}
            metrics = {"metric": entry(mean, None if half == float("inf") else (mean - half, mean + half))}
            if diffs:
                d, h = stats.seed_interval(diffs)
                if h == float("inf"):  # one seed: the paired interval over scenes
                    lo, hi = paired(row_dir(task, row, done[0]), row_dir(task, ref, done[0]), metric)[1:]
                else:
                    lo, hi = d - h, d + h
                metrics["diff"] = entry(d, (lo, hi))
                cells["against"] = ref
                cells["verdict"] = named_verdict(lo, hi, row, ref)
            runs.append({"name": f"{task} {row}", "seed": done, "overrides": None, "command": command,
                         "commit": version, "cells": cells, "metrics": metrics,
                         "per_seed": {metric: [round(v, 6) for v in values], "diff": [round(v, 6) for v in diffs]}})
            print(task, row, cells, {k: m["value"] for k, m in metrics.items()})
    name = "e2e_study_scratch" if scratch else "e2e_study"
    study = {"study": name, "description": "E2E-FT against the diffusion recipe",
             "evidence": f"1024 validation scenes, up to {len(seeds)} training seeds; {start}", "command": command,
             "columns": [{"head": "task", "cell": "task"}, {"head": "recipe", "cell": "row"},
                         {"head": "seeds", "cell": "seeds"}, {"head": "error (mean over seeds)", "metric": "metric"},
                         {"head": "against", "cell": "against"},
                         {"head": "difference", "metric": "diff"}, {"head": "verdict", "cell": "verdict"},
                         {"head": "training TMACs", "cell": "train"},
                         {"head": "MMACs per prediction", "cell": "inference"}],
             "runs": runs}
    if runs:
        sweeps.write_study(RESULTS.with_name(f"{name}.json"), study)
        figure(runs, FIGURES / f"{name}.png")
    return 0


def figure(runs, path):
    """One panel per task: each compared row's difference from its reference, the interval over seeds (bar) and
    every seed's paired difference (dots), in the task's own units; left of zero is better."""
    plt = viz.pyplot()
    compared = [r for r in runs if "diff" in r["metrics"]]
    if not compared:  # only diffusion rows have finished: nothing to draw
        return
    tasks = list(dict.fromkeys(r["cells"]["task"] for r in compared))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 2.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rows = [r for r in compared if r["cells"]["task"] == task]
        for y, r in enumerate(rows):
            d = r["metrics"]["diff"]
            lo, hi = d["ci"]
            ax.errorbar([d["value"]], [y], xerr=[[d["value"] - lo], [hi - d["value"]]], fmt="o", color="k", capsize=3)
            ax.scatter(r["per_seed"]["diff"], [y] * len(r["per_seed"]["diff"]), s=14, color="tab:orange", zorder=3)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks(range(len(rows)), [f"{r['cells']['row']}\n- {r['cells']['against']}" for r in rows], fontsize=7)
        ax.set_ylim(len(rows) - 0.5, -0.5)  # first row on top
        ax.set_xlabel(f"{METRIC[task]} difference (lower = better)", fontsize=8)
        ax.set_title(f"{task} ({rows[0]['cells']['seeds']} seeds)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def quickstart_pair(diffusion, e2e, task="depth"):
    """The one-seed table of tutorial 11: a diffusion quickstart run (its own evaluation, 1 step x 5 members), the
    same run evaluated from zeros with one member (sample.py, written to <run>/zeros if missing) and an e2e
    quickstart run, each against the first, paired; writes tutorials/results/e2e_quickstart.json."""
    diffusion, e2e, metric = Path(diffusion).resolve(), Path(e2e).resolve(), METRIC[task]
    zeros = diffusion / "zeros"
    if not finished(zeros) and call([sys.executable, "sample.py", diffusion, "sample.noise=zeros", "sample.ensemble=1",
                                     "--out", zeros]) != 0:
        return 1
    version = commit()
    runs = []
    for name, path, train_run, how in [("diffusion", diffusion, diffusion, "1 step x 5 members, gaussian noise"),
                                       ("diffusion_zeros", zeros, diffusion, "1 step x 1 member, zeros"),
                                       ("e2e", e2e, e2e, "1 step x 1 member, zeros")]:
        e = json.loads((path / "eval.json").read_text())
        last = json.loads((train_run / "log.jsonl").read_text().splitlines()[-1])
        cells = {"row": name, "inference": how, "train": f"{last['train_macs'] / 1e12:.1f}",
                 "macs": f"{inference_macs(path) / 1e6:.0f}"}
        metrics = {"metric": entry(e[metric], e[f"{metric}_ci"])}
        if name != "diffusion":
            d, lo, hi = paired(path, diffusion, metric)
            metrics["diff"] = entry(d, (lo, hi))
            cells["verdict"] = named_verdict(lo, hi, name, "diffusion")
        shown = [str(r.relative_to(ROOT) if r.is_relative_to(ROOT) else r) for r in (diffusion, e2e)]
        runs.append({"name": name, "seed": 0, "overrides": None, "cells": cells, "metrics": metrics, "commit": version,
                     "command": f"{COMMAND} --pair {' '.join(shown)}"})
        print(name, cells, {k: m["value"] for k, m in metrics.items()})
    study = {"study": "e2e_quickstart", "description": "the depth quickstart: diffusion against e2e, one seed",
             "evidence": "1024 validation scenes, one training seed", "command": runs[0]["command"],
             "columns": [{"head": "recipe", "cell": "row"}, {"head": "inference", "cell": "inference"},
                         {"head": f"{metric}", "metric": "metric"}, {"head": "minus diffusion", "metric": "diff"},
                         {"head": "verdict", "cell": "verdict"}, {"head": "training TMACs", "cell": "train"},
                         {"head": "MMACs per prediction", "cell": "macs"}],
             "runs": runs}
    RESULTS.with_name("e2e_quickstart.json").write_text(json.dumps(study, indent=1) + "\n")
    return 0


def main(argv=None):
    global RUNS
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--report", action="store_true", help="train nothing; tabulate the finished runs")
    p.add_argument("--tasks", nargs="+", default=list(METRIC), choices=list(METRIC))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--continue-steps", type=int, default=1000, help="e2e steps after the diffusion run")
    p.add_argument("--extra", nargs="*", default=[], help="overrides for every training run (e.g. a smaller model)")
    p.add_argument("--runs", type=Path, default=RUNS, help="where the runs go (default runs/e2e)")
    p.add_argument("--scratch", action="store_true",
                   help="every row from scratch, as a fresh clone's quickstart trains, instead of the shared "
                        "pre-trained start (no pretrain run)")
    p.add_argument("--pair", nargs=2, metavar=("DIFFUSION_RUN", "E2E_RUN"),
                   help="only tutorial 11's one-seed table from two finished depth quickstart runs")
    args = p.parse_args(argv)
    if args.pair:
        return quickstart_pair(*args.pair)
    RUNS = args.runs.resolve()
    pretrain = RUNS / "pretrain"
    if not args.report:
        needs_pretrain = not args.scratch and not (pretrain / "ckpt.pt").is_file()
        if needs_pretrain and call([sys.executable, "train.py", "configs/pretrain.yaml", *args.extra,
                                    f"train.out_dir={pretrain}"]) != 0:
            return 1
        for task in args.tasks:
            for seed in args.seeds:
                for row in ROWS:
                    if run_row(task, row, seed, args.extra, args.continue_steps, args.scratch) != 0:
                        print(f"error: {task} {row} seed {seed} failed; see above", file=sys.stderr)
                        return 1
    return report(args.tasks, args.seeds, args.scratch)


if __name__ == "__main__":
    sys.exit(main())
