"""Every quickstart as a new user runs it: a fresh clone, `torchrun train.py configs/<name>.yaml`, timed end to end,
one at a time; then each task's metric against its baseline and its bar (issue 9), with the samples/s it saw.

    python benchmarks/quickstarts.py                      # clone HEAD to a temporary folder, run them all, report
    python benchmarks/quickstarts.py --only depth flow    # a subset
    python benchmarks/quickstarts.py --report DIR         # only the table, from a clone where they ran

The clone has no runs/ folder, so every quickstart starts from scratch unless it says otherwise (the configs that
can start from runs/pretrain do so only when it exists). Wall time is the whole command: start-up, rendering the
world, training and the evaluation on 1,024 validation scenes. The clone's quickstart_times.json records
{name: seconds}; the report writes tutorials/results/tasks_quickstart.json (README table, python -m minidp.tables),
replacing the rows of the quickstarts it ran and keeping the others (each row says its commit).
The machine's speed changes by the hour (the README says how much): read a time with the samples/s beside it.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import ROOT, commit

from minidp import compare, stats

RESULTS = ROOT / "tutorials" / "results" / "tasks_quickstart.json"
ORDER = ["depth", "flow", "amodal", "referring", "generalist"]
LIMIT = {"depth": 480, "flow": 600, "amodal": 600, "referring": 600, "generalist": 900}  # issue 25, seconds
# the bars of issue 9 (and the depth quickstart's baseline), as (metric, baseline, bar text, passes(model, prior))
BARS = {
    "depth": ("absrel", "prior_absrel", "the training set's mean depth map", "AbsRel", None),
    "flow": ("epe", "prior_epe", "zero flow", "EPE (px)", ("<= 0.5 x baseline", lambda m, p: m <= 0.5 * p)),
    "amodal": ("miou", "prior_miou", "the visible part as the whole", "mIoU",
               (">= baseline + 0.05", lambda m, p: m >= p + 0.05)),
    "referring": ("oiou", "prior_oiou", "the largest object", "oIoU",
                  (">= baseline + 0.15", lambda m, p: m >= p + 0.15)),
}


def run_all(clone, names):
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    times_file = clone / "quickstart_times.json"
    times = {}
    for name in names:
        start = time.time()
        print(f"$ torchrun train.py configs/{name}.yaml   (in {clone})", flush=True)
        with open(clone / f"quickstart_{name}.log", "w") as log:
            status = subprocess.run(["torchrun", "train.py", f"configs/{name}.yaml"], cwd=clone, stdout=log,
                                    stderr=subprocess.STDOUT).returncode
        times[name] = round(time.time() - start, 1)
        print(f"  {times[name]:.0f} s, exit {status}", flush=True)
        times_file.write_text(json.dumps(times, indent=1) + "\n")
        if status != 0:
            return 1
    return 0


def rates(run):
    """(lowest, highest) samples/s of the run's log records."""
    values = [json.loads(line)["samples_per_s"] for line in (run / "log.jsonl").read_text().splitlines()]
    return min(values), max(values)


def clock(seconds):
    return f"{int(seconds) // 60}m{int(seconds) % 60:02d}s"


def task_rows(name, run, seconds, commit):
    """One row per task of a run (a generalist has four)."""
    e = json.loads((run / "eval.json").read_text())
    scenes = compare.read_scenes(run)  # section "" for a single-task run, one per task for a generalist
    sections = {name: e} if "" in scenes else e
    lo, hi = rates(run)
    rows = []
    for task, values in sections.items():
        metric, prior, baseline, label, bar = BARS[task]
        per = scenes["" if "" in scenes else task]
        stat = stats.ratio_of_sums if per[metric].ndim == 2 else np.mean
        d, dlo, dhi = stats.paired_diff_ci(per[metric], per[prior], stat=stat)
        passes = bar[1](values[metric], values[prior]) if bar else None
        first = task == next(iter(sections))  # the run's time goes on its first row
        cells = {"quickstart": name, "task": task, "metric": label, "baseline": baseline,
                 "bar": "-" if bar is None else f"{bar[0]}: {'passes' if passes else 'fails'}",
                 "wall_time": f"{clock(seconds)} ({lo:.0f}-{hi:.0f} samples/s)" if first else "",
                 "within": (f"{'yes' if seconds <= LIMIT[name] else 'no'} ({clock(LIMIT[name])})") if first else ""}
        rows.append({"name": f"{name}/{task}", "seed": 0, "overrides": [], "commit": commit,
                     "command": f"torchrun train.py configs/{name}.yaml",
                     "cells": cells,
                     "metrics": {"model": {"value": round(values[metric], 6),
                                           "ci": [round(c, 6) for c in values[f"{metric}_ci"]]},
                                 "prior": {"value": round(values[prior], 6),
                                           "ci": [round(c, 6) for c in values[f"{prior}_ci"]]},
                                 "diff": {"value": round(d, 6), "ci": [round(dlo, 6), round(dhi, 6)]}}})
    return rows


def report(clone, names):
    times = json.loads((clone / "quickstart_times.json").read_text())
    version = commit(clone)
    rows = []
    for name in names:
        run = clone / "runs" / name
        if name not in times or not (run / "eval.json").is_file():
            print(f"{name}: not run in {clone}; skipped")
            continue
        rows += task_rows(name, run, times[name], version)
    if RESULTS.is_file():  # the quickstarts not re-run keep their rows (each row has its own commit)
        kept = [r for r in json.loads(RESULTS.read_text())["runs"] if r["cells"]["quickstart"] not in names]
        rows = sorted(kept + rows, key=lambda r: ORDER.index(r["cells"]["quickstart"]))
    study = {"study": "tasks_quickstart", "description": "every quickstart from a fresh clone, timed",
             "evidence": "1024 validation scenes, one training seed", "command": "python benchmarks/quickstarts.py",
             "columns": [{"head": "quickstart", "cell": "quickstart"}, {"head": "task", "cell": "task"},
                         {"head": "metric", "cell": "metric"}, {"head": "model", "metric": "model"},
                         {"head": "baseline", "metric": "prior", "note": "baseline"},
                         {"head": "model - baseline", "metric": "diff"}, {"head": "bar", "cell": "bar"},
                         {"head": "wall time (samples/s)", "cell": "wall_time"},
                         {"head": "within its limit", "cell": "within"}],
             "runs": rows}
    RESULTS.write_text(json.dumps(study, indent=1) + "\n")
    for r in rows:
        print(r["name"], r["cells"], {k: m["value"] for k, m in r["metrics"].items()})
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", default=ORDER, choices=ORDER)
    p.add_argument("--report", type=Path, metavar="CLONE", help="tabulate the runs of an earlier clone")
    args = p.parse_args(argv)
    if args.report:
        return report(args.report.resolve(), args.only)
    clone = Path(tempfile.mkdtemp(prefix="minidp_quickstarts_")) / "minidp"
    if run_all(clone, args.only) != 0:
        print(f"error: a quickstart failed; its log is in {clone}", file=sys.stderr)
        return 1
    return report(clone, args.only)


if __name__ == "__main__":
    sys.exit(main())
