"""Test-time scaling on the depth quickstart model (the scaling paper's §4.3): DDIM steps and ensemble size, every
setting on the same 1024 validation scenes, each compared scene by scene with the quickstart's own setting.

    python benchmarks/quickstart_test_time.py runs/depth              # evaluate what is missing, then report
    python benchmarks/quickstart_test_time.py runs/depth --report

Each row is `python sample.py RUN sample.steps=N sample.ensemble=M [sample.ensemble_method=compile] --out
RUN/test_time/<row>` (the sampling noise seed is the same for every row: sample.seed 0), then its AbsRel and delta1
with 95 % intervals over scenes, and its AbsRel minus the quickstart setting's (1 step, 5 members, median) with the
paired interval and the verdict word (minidp/stats.py). Writes tutorials/results/quickstart_test_time.json for the
README's table (python -m minidp.tables).
"""

import argparse
import json
import sys
from pathlib import Path

from common import ROOT, call, commit, entry, named_verdict, paired

from minidp import compare

RESULTS = ROOT / "tutorials" / "results" / "quickstart_test_time.json"
REFERENCE = "s01_m05_median"  # the quickstart's own setting (configs/depth.yaml)
ROWS = {  # name: (steps, members, method)
    "s01_m01": (1, 1, "median"), "s02_m01": (2, 1, "median"), "s05_m01": (5, 1, "median"),
    "s10_m01": (10, 1, "median"), REFERENCE: (1, 5, "median"), "s01_m10_median": (1, 10, "median"),
    "s01_m10_compile": (1, 10, "compile"), "s05_m05_median": (5, 5, "median"),
}
LABEL = {"median": "median", "compile": "median compilation"}


def overrides(steps, members, method):
    return [f"sample.steps={steps}", f"sample.ensemble={members}", f"sample.ensemble_method={method}"]


def evaluate(run, name):
    out = Path(run) / "test_time" / name
    if (out / compare.SCENES_FILE).is_file():
        return 0
    return call([sys.executable, "sample.py", run, *overrides(*ROWS[name]), "--out", out])


def report(run):
    base = Path(run) / "test_time" / REFERENCE
    rows = []
    for name, (steps, members, method) in ROWS.items():
        out = Path(run) / "test_time" / name
        if not (out / compare.SCENES_FILE).is_file():
            print(f"{name}: not evaluated; skipped")
            continue
        e = json.loads((out / "eval.json").read_text())
        metrics = {k: entry(e[k], e[f"{k}_ci"]) for k in ("absrel", "delta1")}
        cells = {"steps": str(steps), "members": str(members), "method": LABEL[method] if members > 1 else "-"}
        if name != REFERENCE:
            d, lo, hi = paired(out, base, "absrel")
            metrics["diff"] = entry(d, (lo, hi))
            cells["verdict"] = named_verdict(lo, hi, "this setting", "1 x 5")
        else:
            cells["verdict"] = "(the quickstart's setting)"
        rows.append({"name": name, "overrides": overrides(steps, members, method), "seed": 0, "cells": cells,
                     "command": f"python benchmarks/quickstart_test_time.py {run}", "commit": commit(),
                     "metrics": metrics})
        print(name, {k: m["value"] for k, m in metrics.items()}, cells["verdict"])
    study = {"study": "quickstart_test_time", "description": "test-time scaling on the depth quickstart model",
             "evidence": "1024 validation scenes, one training seed",
             "command": "python benchmarks/quickstart_test_time.py RUN",
             "columns": [{"head": "DDIM steps", "cell": "steps"}, {"head": "ensemble", "cell": "members"},
                         {"head": "method", "cell": "method"}, {"head": "AbsRel", "metric": "absrel"},
                         {"head": "delta1", "metric": "delta1"}, {"head": "AbsRel minus 1 x 5", "metric": "diff"},
                         {"head": "verdict", "cell": "verdict"}],
             "runs": rows}
    RESULTS.write_text(json.dumps(study, indent=1) + "\n")
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a trained depth run (runs/depth)")
    p.add_argument("--report", action="store_true", help="evaluate nothing; tabulate what exists")
    args = p.parse_args(argv)
    if not args.report:
        for name in ROWS:
            if evaluate(args.run, name) != 0:
                print(f"error: {name} failed; see above", file=sys.stderr)
                return 1
    return report(args.run)


if __name__ == "__main__":
    sys.exit(main())
