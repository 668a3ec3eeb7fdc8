"""The depth quickstart's recipe against the one it replaced (issue 25): 3 seeds, 1024 validation scenes, paired.

    python benchmarks/depth_recipe.py              # train what is missing (one run at a time), then report
    python benchmarks/depth_recipe.py --report     # only the table of finished runs
    python benchmarks/depth_recipe.py --pilots     # also the one-seed 2200-step runs that led to the recipe

Rows (python train.py configs/depth.yaml <overrides> train.seed=<s> train.out_dir=runs/depth_recipe/<row>_s<s>):
    previous   the recipe to 2026-12-02: 4000 steps, lr 2e-3 -> 2e-4, EMA 0.999, depth_release   128K samples
    quick      2026-12-03 to 12-04: 3000 steps, lr 4e-3 -> 4e-4, EMA 0.998, depth_quick        96K samples
    fast       quick in 2600 steps with the LR decayed 2x (4e-3 -> 2e-3; pilot I3's change)     83K samples
Each row's overrides spell its whole recipe, so the rows stay what they were whatever configs/depth.yaml becomes.
Pilots (seed 0, 70K samples: 2200 steps of 32, EMA 0.998, each a change against the row named in its table row):
    D  depth_quick weights, lr 2e-3;  E  D with lr 4e-3;  F1  E with lr 8e-3;  F2  E with depth_release;
    G1  E with the weights [0 x 8, 1, 9] (95 % of training at t >= 900);  H  E at batch 16;  I1  E with L1;
    I2 / I3 / I4  E decaying to lr 4e-5 / 2e-3 / not at all;  J  I3 at batch 16
A seed changes the initial weights, every batch's scenes, t and noise; the validation scenes stay the same, so each
seed's two runs are compared scene by scene (stats.paired_diff_ci). The verdict over seeds is the Student-t
interval of the per-seed paired differences (stats.seed_interval): training noise and scene noise together.
Writes tutorials/results/depth_recipe.json (python -m minidp.tables renders it into tutorial 04 and the README).
A finished run (its eval_scenes.npz exists) is not trained again.
"""

import argparse
import json
import sys

from common import ROOT, call, commit, entry, named_verdict, paired

from minidp import compare, stats, sweeps

RUNS = ROOT / "runs" / "depth_recipe"
RESULTS = ROOT / "tutorials" / "results" / "depth_recipe.json"
PREVIOUS = ["diffusion.timestep_sampling=depth_release", "train.steps=4000", "train.lr=2e-3", "train.lr_final=2e-4",
            "train.ema_decay=0.999"]
QUICK = ["diffusion.timestep_sampling=depth_quick", "train.steps=3000", "train.lr=4e-3", "train.lr_final=4e-4",
         "train.ema_decay=0.998"]
FAST = ["diffusion.timestep_sampling=depth_quick", "train.steps=2600", "train.lr=4e-3", "train.lr_final=2e-3",
        "train.ema_decay=0.998"]
ROWS = {"previous": ("4000 steps, lr 2e-3 -> 2e-4, EMA 0.999, depth_release (to 2026-12-02)", PREVIOUS, "128K"),
        "quick": ("3000 steps, lr 4e-3 -> 4e-4, EMA 0.998, depth_quick (2026-12-03)", QUICK, "96K"),
        "fast": ("2600 steps, lr 4e-3 -> 2e-3, EMA 0.998, depth_quick (2026-12-04)", FAST, "83K")}
# Each pair the table compares, (A, B): A - B per seed and over the seeds, with its verdict.
PAIRS = [("quick", "previous"), ("fast", "previous"), ("fast", "quick")]
# The pilots change the quick recipe (configs/depth.yaml when they ran), spelled out like the rows.
PILOT = QUICK + ["train.steps=2200"]
PILOT_B16 = QUICK + ["train.steps=4400", "train.global_batch=16"]
PILOT_64K = QUICK + ["train.steps=4000", "train.global_batch=16", "train.lr_final=2e-3", "train.warmup_steps=200",
             "train.ema_decay=0.999"]
PILOTS = {"D": ("2200 steps, lr 2e-3, depth_quick", PILOT + ["train.lr=2e-3", "train.lr_final=2e-4"], "70K"),
          "E": ("D with lr 4e-3", PILOT, "70K"),
          "F1": ("E with lr 8e-3", PILOT + ["train.lr=8e-3", "train.lr_final=8e-4"], "70K"),
          "F2": ("E with depth_release", PILOT + ["diffusion.timestep_sampling=depth_release"], "70K"),
          "G1": ("E with weights [0 x 8, 1, 9]", PILOT + ["diffusion.timestep_sampling=uniform",
                                                          "diffusion.timestep_weights=[0,0,0,0,0,0,0,0,1,9]"], "70K"),
          # 2026-12-03, second round (the quick recipe at 2200 steps, E, is the reference)
          "H": ("E at batch 16 (4400 steps), EMA 0.999", PILOT_B16 + ["train.ema_decay=0.999"], "70K"),
          "I1": ("E with L1 loss", PILOT + ["train.loss=l1"], "70K"),
          "I2": ("E decaying to lr 4e-5 (100x)", PILOT + ["train.lr_final=4e-5"], "70K"),
          "I3": ("E decaying to lr 2e-3 (2x)", PILOT + ["train.lr_final=2e-3"], "70K"),
          "I4": ("E at a constant lr 4e-3", PILOT + ["train.lr_final=4e-3"], "70K"),
          "J": ("I3 at batch 16 (4400 steps), EMA 0.999", PILOT_B16 + ["train.ema_decay=0.999", "train.lr_final=2e-3",
                                                                     "train.warmup_steps=200"], "70K"),
          # 2026-12-03, third round: 64K samples (4000 steps of 16), what fits 8 minutes at ~150 samples/s
          "K": ("J at 64K samples (4000 steps)", PILOT_64K, "64K")}
COMMAND = "python benchmarks/depth_recipe.py"
# The commit each run trained before this script recorded it (in the run's trained_at.txt) was trained at.
TRAINED_AT = {"previous": "a1f8511", "quick": "a1f8511", "D": "a1f8511", "E": "a1f8511", "F1": "a1f8511",
              "F2": "a1f8511", "G1": "a1f8511", "H": "51d6225", "I1": "b2e3ab5", "I2": "b2e3ab5", "I3": "b2e3ab5",
              "I4": "b2e3ab5", "J": "b2e3ab5"}
PILOT_AGAINST = {"D": None, "E": "D", "F1": "E", "F2": "E", "G1": "E", "H": "E", "I1": "E", "I2": "E", "I3": "E",
                 "I4": "E", "J": "I3", "K": "J"}


def train(row, overrides, seed):
    out = RUNS / f"{row}_s{seed}"
    if (out / compare.SCENES_FILE).is_file():
        return 0
    status = call([sys.executable, "train.py", "configs/depth.yaml", *overrides, f"train.seed={seed}",
                   f"train.out_dir={out}"])
    if status == 0:
        sweeps.mark_trained(out, commit())
    return status


def trained_at(row, run):
    """The commit `run` of `row` was trained at: its trained_at.txt, or TRAINED_AT for the runs from before it."""
    path = run / sweeps.TRAINED_AT
    return path.read_text().strip() if path.is_file() else TRAINED_AT[row]


def absrel(run):
    """(value, [lo, hi]) of the run's AbsRel with its interval over scenes, from eval.json."""
    e = json.loads((run / "eval.json").read_text())
    return e["absrel"], e.get("absrel_ci")


def report(seeds, pilots):
    runs, diffs, done = [], {pair: [] for pair in PAIRS}, []
    for s in seeds:
        row_runs = {r: RUNS / f"{r}_s{s}" for r in ROWS}
        if not all((run / compare.SCENES_FILE).is_file() for run in row_runs.values()):
            print(f"seed {s}: not every row finished; skipped")
            continue
        done.append(s)
        cells, metrics = {"seed": str(s)}, {r: entry(*absrel(run)) for r, run in row_runs.items()}
        for a, b in PAIRS:
            d, lo, hi = paired(row_runs[a], row_runs[b], "absrel")
            diffs[a, b].append(d)
            cells[f"{a}-{b}"] = named_verdict(lo, hi, a, b)
            metrics[f"{a}-{b}"] = entry(d, (lo, hi))
        runs.append({"name": f"seed {s}", "seed": s, "command": COMMAND,
                     "commit": trained_at("fast", row_runs["fast"]),
                     "overrides": {r: o + [f"train.seed={s}"] for r, (_, o, _) in ROWS.items()},
                     "cells": cells, "metrics": metrics})
    if len(done) >= 2:
        cells, metrics = {"seed": f"mean of {len(done)} (t interval)"}, {}
        for r in ROWS:
            m, h = stats.seed_interval([absrel(RUNS / f"{r}_s{s}")[0] for s in done])
            metrics[r] = entry(m, (m - h, m + h))
        for a, b in PAIRS:
            m, h = stats.seed_interval(diffs[a, b])
            cells[f"{a}-{b}"] = named_verdict(m - h, m + h, a, b)
            metrics[f"{a}-{b}"] = entry(m, (m - h, m + h))
        runs.append({"name": "over seeds", "seed": done, "overrides": None, "command": COMMAND,
                     "commit": trained_at("fast", RUNS / f"fast_s{done[0]}"), "cells": cells, "metrics": metrics})
    pilot_rows = []
    for name, (what, _, samples) in PILOTS.items() if pilots else ():
        run = RUNS / f"{name}_s0"
        if not (run / compare.SCENES_FILE).is_file():
            continue
        row = {"name": name, "seed": 0, "overrides": PILOTS[name][1] + ["train.seed=0"],
               "command": COMMAND + " --pilots", "commit": trained_at(name, run),
               "cells": {"pilot": name, "what": what, "samples": samples},
               "metrics": {"absrel": entry(*absrel(run))}}
        if (against := PILOT_AGAINST[name]) and (RUNS / f"{against}_s0" / compare.SCENES_FILE).is_file():
            d, lo, hi = paired(run, RUNS / f"{against}_s0", "absrel")
            row["cells"] |= {"against": against, "verdict": named_verdict(lo, hi, name, against)}
            row["metrics"]["diff"] = entry(d, (lo, hi))
        pilot_rows.append(row)
    study = {"study": "depth_recipe", "description": "the depth quickstart's recipes, paired",
             "evidence": f"1024 validation scenes, {len(done)} training seeds",
             "command": COMMAND,
             "columns": [{"head": "seed", "cell": "seed"}]
             + [{"head": f"{r}: {what}", "metric": r} for r, (what, _, _) in ROWS.items()]
             + [c for a, b in PAIRS for c in ({"head": f"{a} - {b}", "metric": f"{a}-{b}"},
                                              {"head": "verdict", "cell": f"{a}-{b}"})],
             "runs": runs}
    sweeps.write_study(RESULTS, study)
    if pilot_rows:
        pilot_study = {"study": "depth_recipe_pilots", "evidence": "1024 validation scenes, one training seed",
                       "command": COMMAND + " --pilots",
                       "columns": [{"head": "run", "cell": "pilot"}, {"head": "change", "cell": "what"},
                                   {"head": "samples", "cell": "samples"}, {"head": "AbsRel", "metric": "absrel"},
                                   {"head": "against", "cell": "against"}, {"head": "difference", "metric": "diff"},
                                   {"head": "verdict", "cell": "verdict"}],
                       "runs": pilot_rows}
        RESULTS.with_name("depth_recipe_pilots.json").write_text(json.dumps(pilot_study, indent=1) + "\n")
    for r in runs + pilot_rows:
        print(r["name"], {k: m["value"] for k, m in r["metrics"].items()}, r["cells"].get("verdict", ""))
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--report", action="store_true", help="train nothing; tabulate the finished runs")
    p.add_argument("--pilots", action="store_true", help="also the one-seed 2200-step pilots")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args(argv)
    if not args.report:
        todo = [(r, o, s) for s in args.seeds for r, (_, o, _) in ROWS.items()]
        todo += [(r, o, 0) for r, (_, o, _) in PILOTS.items()] if args.pilots else []
        for row, overrides, seed in todo:
            if train(row, overrides, seed) != 0:
                print(f"error: {row} seed {seed} failed; see its log above", file=sys.stderr)
                return 1
    return report(args.seeds, args.pilots)


if __name__ == "__main__":
    sys.exit(main())
