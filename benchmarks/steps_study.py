"""Fig. 8 tested instead of explained (issue 22, item 3): is the paper's "more DDIM steps help" a property of the
model or of the sampler's timestep spacing? Depth models trained with eps-, v- and x0-prediction at uniform t (the
paper's setting) and with minidp's recipe, each sampled with 1 .. many DDIM steps under leading and trailing
spacing, ensembles of 1 and 5, on the 1024 validation scenes, 3 training seeds.

    python benchmarks/steps_study.py                        # train and evaluate what is missing, then report
    python benchmarks/steps_study.py --report               # only the table and figure of finished evaluations
    python benchmarks/steps_study.py --extra train.steps=1000 --steps 1 2 5 10 25    # what the tutorial ran

Models, per seed s (runs/steps_study/<model>_s<s>, each from scratch: python train.py configs/depth.yaml
train.init_from= train.lr_final=4e-4 <overrides> <--extra> train.seed=s):
    eps     diffusion.prediction=eps diffusion.timestep_sampling=uniform   (DiT's objective; the paper's setting)
    v       diffusion.prediction=v   diffusion.timestep_sampling=uniform   (Marigold's objective)
    x0      diffusion.prediction=x0  diffusion.timestep_sampling=uniform
    recipe  configs/depth.yaml as it is (x0, ADDP-style weights with most training at t >= 800), its LR decaying 10x
Each model is evaluated in this process (the checkpoint's EMA weights, loaded once) for every spacing in
--spacings and steps in --steps with one member, and for --ensemble-steps with --ensemble members (the median);
an evaluation goes to <run>/steps/<spacing>_<steps>_m<members>. Per model, spacing and members, over seeds (Student-t, stats.seed_interval):
    - AbsRel at each step count, mean [95 %];
    - the exponent b of a power law AbsRel = a * steps^b fitted per seed by least squares in log-log: b < 0 with
      its interval below zero is the paper's power law; an interval holding zero: no trend detected;
    - AbsRel at the most steps minus at one step, paired scene by scene per seed, and its verdict.
Writes tutorials/results/steps_study.json (python -m minidp.tables renders it into tutorial 09) and
tutorials/figures/steps_study.png (AbsRel against steps, log-log, one panel per spacing). Resumable: a finished
evaluation (its eval_scenes.npz) or training run is not redone.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from common import ROOT, call, commit, entry, named_verdict, paired

from minidp import checkpoint, compare, config, data, evaluate, stats, sweeps, viz
from minidp.errors import choose_device

RUNS = ROOT / "runs" / "steps_study"
RESULTS = ROOT / "tutorials" / "results" / "steps_study.json"
FIGURE = ROOT / "tutorials" / "figures" / "steps_study.png"
MODELS = {"eps": ["diffusion.prediction=eps", "diffusion.timestep_sampling=uniform"],
          "v": ["diffusion.prediction=v", "diffusion.timestep_sampling=uniform"],
          "x0": ["diffusion.prediction=x0", "diffusion.timestep_sampling=uniform"],
          "recipe": []}
# pinned: configs/depth.yaml's LR decay to 2026-12-04 (10x; it now decays 2x), with which the study was measured
PINNED = ["train.lr_final=4e-4"]
COMMAND = "python benchmarks/steps_study.py"


def finished(path):
    return (Path(path) / compare.SCENES_FILE).is_file()


def settings(args):
    """Every (spacing, steps, members) the study evaluates."""
    return [(sp, k, 1) for sp in args.spacings for k in args.steps] + \
        [(sp, k, args.ensemble) for sp in args.spacings for k in args.ensemble_steps]


def eval_dir(run, spacing, steps, members):
    return run / "steps" / f"{spacing}_{steps:03d}_m{members}"


def train(model, seed, extra):
    out = RUNS / f"{model}_s{seed}"
    if finished(out):
        return 0
    status = call([sys.executable, "train.py", "configs/depth.yaml", "train.init_from=", *PINNED, *MODELS[model],
                   *extra, f"train.seed={seed}", f"train.out_dir={out}"])
    if status == 0:
        sweeps.mark_trained(out, commit())
    return status


def evaluate_run(run, todo, num_images):
    """Evaluate the checkpoint of `run` at every (spacing, steps, members) in `todo` that has not finished."""
    todo = [s for s in todo if not finished(eval_dir(run, *s))]
    if not todo:
        return
    path = run / "ckpt.pt"
    ckpt = checkpoint.load_checkpoint(path, "steps_study.py")
    cfg = config.config_from_dict(ckpt["config"], source=str(path))
    model = checkpoint.model_from_checkpoint(ckpt, path, weights="ema")
    device = choose_device(cfg.train.device)
    model, codec = model.to(device).eval(), data.make_codec(cfg.data, device)
    for spacing, steps, members in todo:
        c = config.apply_overrides(cfg, [f"sample.spacing={spacing}", f"sample.steps={steps}",
                                         f"sample.ensemble={members}", f"sample.num_images={num_images}"])
        config.validate(c)
        out, start = eval_dir(run, spacing, steps, members), time.time()
        out.mkdir(parents=True, exist_ok=True)
        r = evaluate.evaluate(model, c, out, device, codec=codec)
        print(f"{run.name} {spacing} {steps} steps x {members}: AbsRel {r['absrel']:.4f} "
              f"({time.time() - start:.0f} s)", flush=True)


def trained_at(model, seeds):
    """The commit(s) the model's seeds were trained at (train() records each run's, sweeps.mark_trained)."""
    return sweeps.trained_at([RUNS / f"{model}_s{s}" for s in seeds], None)


def absrel(path):
    return json.loads((Path(path) / "eval.json").read_text())["absrel"]


def exponent(steps, values):
    """b of values = a * steps^b, least squares in log-log."""
    return float(np.polyfit(np.log(steps), np.log(values), 1)[0])


def trend(ci):
    """The word for an exponent's interval over seeds (None: one seed, no interval)."""
    if ci is None:
        return "one seed"
    lo, hi = ci
    return "falls with steps" if hi < 0 else "rises with steps" if lo > 0 else "no trend detected"


def interval(values):
    """entry() of a mean over seeds with its Student-t interval (none for one seed)."""
    mean, half = stats.seed_interval(values)
    return entry(mean, None if not np.isfinite(half) else (mean - half, mean + half))


def report(args):
    runs, curves = [], {}
    columns = sorted(set(args.steps) | set(args.ensemble_steps))
    for model in args.models:
        for spacing in args.spacings:
            for members in sorted({1, args.ensemble} if args.ensemble_steps else {1}):
                ks = args.steps if members == 1 else args.ensemble_steps
                seeds = [s for s in args.seeds if all(finished(eval_dir(RUNS / f"{model}_s{s}", spacing, k, members))
                                                      for k in ks)]
                if not seeds:
                    print(f"{model} {spacing} x{members}: no seed finished every step count; skipped")
                    continue
                table = np.array([[absrel(eval_dir(RUNS / f"{model}_s{s}", spacing, k, members)) for k in ks]
                                  for s in seeds])  # (seeds, steps)
                metrics = {f"k{k}": interval(table[:, j]) for j, k in enumerate(ks)}
                cells = {"model": model, "spacing": spacing, "members": str(members), "seeds": str(len(seeds))}
                per_seed = {"absrel": table.round(6).tolist()}
                if len(ks) > 1:
                    b = [exponent(ks, row) for row in table]
                    diffs = [paired(eval_dir(RUNS / f"{model}_s{s}", spacing, ks[-1], members),
                                    eval_dir(RUNS / f"{model}_s{s}", spacing, ks[0], members), "absrel")
                             for s in seeds]
                    metrics["b"] = interval(b)
                    metrics["diff"] = interval([d for d, _, _ in diffs])
                    if len(seeds) == 1:  # one seed: the difference's interval over scenes
                        metrics["diff"]["ci"] = [round(float(x), 6) for x in diffs[0][1:]]
                    cells["trend"] = trend(metrics["b"]["ci"])
                    lo, hi = metrics["diff"]["ci"]
                    cells["verdict"] = named_verdict(lo, hi, f"{ks[-1]} steps", f"{ks[0]} step")
                    per_seed |= {"b": [round(x, 4) for x in b], "diff": [round(float(d[0]), 6) for d in diffs]}
                curves[(model, spacing, members)] = (ks, table)
                runs.append({"name": f"{model} {spacing} x{members}", "seed": seeds, "command": COMMAND,
                             "overrides": MODELS[model] + list(args.extra), "commit": trained_at(model, seeds),
                             "cells": cells,
                             "metrics": metrics, "per_seed": per_seed})
                print(runs[-1]["name"], cells, {k: m["value"] for k, m in metrics.items()})
    if not runs:
        return 1
    study = {"study": "steps_study", "description": "Fig. 8: DDIM steps under leading and trailing spacing",
             "evidence": f"1024 validation scenes, up to {len(args.seeds)} training seeds (mean and Student-t interval "
                         f"over seeds); models trained with {' '.join(args.extra) or 'configs/depth.yaml'}",
             "command": f"{COMMAND} {' '.join(['--extra', *args.extra] if args.extra else [])}".strip(),
             "columns": [{"head": "model", "cell": "model"}, {"head": "spacing", "cell": "spacing"},
                         {"head": "members", "cell": "members"}, {"head": "seeds", "cell": "seeds"}]
             + [{"head": f"{k} step{'s' if k > 1 else ''}", "metric": f"k{k}"} for k in columns]
             + [{"head": "exponent b", "metric": "b", "digits": 3}, {"head": "trend", "cell": "trend"},
                {"head": "most - 1 step", "metric": "diff"}, {"head": "verdict", "cell": "verdict"}],
             "runs": runs}
    sweeps.write_study(RESULTS, study)
    figure(curves, args)
    return 0


def figure(curves, args):
    """AbsRel against DDIM steps (log-log), one panel per spacing, one line per model (one member: solid, with the
    interval over seeds; args.ensemble members: squares)."""
    plt = viz.pyplot()
    fig, axes = plt.subplots(1, len(args.spacings), figsize=(4.6 * len(args.spacings), 3.9), squeeze=False,
                             sharey=True)
    colours = dict(zip(MODELS, ["tab:red", "tab:blue", "tab:green", "k"]))
    for ax, spacing in zip(axes[0], args.spacings):
        for (model, sp, members), (ks, table) in curves.items():
            if sp != spacing:
                continue
            mean = table.mean(0)
            half = [stats.seed_interval(col)[1] if len(col) > 1 else 0 for col in table.T]
            if members == 1:
                ax.errorbar(ks, mean, yerr=half, color=colours[model], marker="o", ms=3, capsize=2, label=model)
            else:
                ax.errorbar(ks, mean, yerr=half, color=colours[model], marker="s", ms=5, ls="none", capsize=2,
                            mfc="none", label=f"{model}, {members} members")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("DDIM steps")
        ax.set_title(f"{spacing} spacing", fontsize=9)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("AbsRel (lower = better)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7)  # below the panels, over no curve
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=110)
    plt.close(fig)


def main(argv=None):
    global RUNS
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--report", action="store_true", help="train and evaluate nothing; tabulate what finished")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--spacings", nargs="+", default=["leading", "trailing"], choices=["leading", "trailing"])
    p.add_argument("--steps", type=int, nargs="+", default=[1, 2, 5, 10, 25, 50, 100])
    p.add_argument("--ensemble", type=int, default=5, help="members of the ensemble rows (the median)")
    p.add_argument("--ensemble-steps", type=int, nargs="*", default=[1, 10], help="step counts of the ensemble rows")
    p.add_argument("--num-images", type=int, default=1024)
    p.add_argument("--extra", nargs="*", default=[], help="overrides for every training run (e.g. train.steps=1000)")
    p.add_argument("--runs", type=Path, default=RUNS, help="where the runs go (default runs/steps_study)")
    args = p.parse_args(argv)
    args.steps, args.ensemble_steps = sorted(set(args.steps)), sorted(set(args.ensemble_steps))
    RUNS = args.runs.resolve()
    if not args.report:
        for seed in args.seeds:
            for model in args.models:
                if train(model, seed, args.extra) != 0:
                    print(f"error: {model} seed {seed} failed to train; see above", file=sys.stderr)
                    return 1
                evaluate_run(RUNS / f"{model}_s{seed}", settings(args), args.num_images)
    return report(args)


if __name__ == "__main__":
    sys.exit(main())
