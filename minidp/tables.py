"""Tables that cannot rot: every measured table in README.md and tutorials/*.md is generated from a results file.

    python -m minidp.tables           # rewrite every table between its markers from tutorials/results/*.json
    python -m minidp.tables --check   # exit 1 naming each table whose markdown differs from its results file

A table sits between two marker comments in the markdown:

    <!-- table:sweep_ddim_steps -->
    | steps | 1 | 2 | ... |          (generated: never edit by hand, edit the results file and re-run)
    <!-- /table -->

and tutorials/results/<study>.json holds what was measured:

    {"study": "sweep_ddim_steps",
     "evidence": "32 validation scenes, one training seed",       # what each number rests on
     "columns": [{"head": "steps", "cell": "steps"}, {"head": "AbsRel", "metric": "absrel", "digits": 4}],
     "transpose": true,                                          # optional: one column per run
     "runs": [{"name": "steps_001", "overrides": ["sample.steps=1"], "seed": 0,
               "command": "python fit_scaling.py sweep configs/sweeps/ddim_steps.yaml", "commit": "08a7897",
               "cells": {"steps": "1"}, "metrics": {"absrel": {"value": 0.1544, "ci": null}}}]}

A metric with an interval renders as `0.1544 [0.1501, 0.1590]` (ci: 95 % over scenes, or over seeds when the run
is a mean over seeds); `ci: null` means the study predates intervals, and then the table's last line says so,
with the study's `evidence` (a study of speeds, which no verdict rests on, has evidence null and no such line).
A study's `caveat` (minidp/sweeps.py seed_caveat: seeds trained before train.seed reached the batches) is printed
in italics under its table.
Everything that is not one number per cell (a wall time, "0.814 / 0.631", a benchmark's headline) is a `cell`:
transcribed text, kept in the results file so that the table still has one source.

Notable choices
- One generic renderer and hand-written column lists, not one function per table: a study is data, and a new
  study is a new JSON file and a marker pair, never new code.
- `digits` is per column, and per value where a transcribed table mixed precisions ("0.786" beside "0.7235"),
  so that regenerating today's tables reproduces the numbers exactly as they were measured and printed.
- A run records its overrides, seed, command and commit so that anyone can re-run it; for the transcribed
  studies `commit` is the commit that first wrote the number, and `overrides` is null where the table did not
  say them.
"""

import json
import re
import sys
from pathlib import Path

from minidp.errors import ArgumentParser

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "tutorials" / "results"
MARKDOWN = [ROOT / "README.md", *sorted((ROOT / "tutorials").glob("*.md"))]
BLOCK = re.compile(r"(<!-- table:([\w-]+) -->\n)(.*?)(<!-- /table -->)", re.S)


# ----------------------------------------------------------------------------------------------------------
# Rendering one study


def format_metric(entry, digits):
    """'0.1544' or '0.1544 [0.1501, 0.1590]' from {"value", "ci", optional "digits"}; '' for a missing value.
    A value measured over a few seeds without an interval ("seeds": each seed's value, "half_range": half their
    range) reads '0.401 +- 0.029 (0.430, 0.372)', as ADDP's ablation tables were printed."""
    if entry is None or entry.get("value") is None:
        return "" if entry is None else entry.get("text", "")  # "-": not measured for this run
    d = entry.get("digits", digits)
    text = f"{entry['value']:.{d}f}"
    if entry.get("seeds"):
        text += f" +- {entry['half_range']:.{d}f} (" + ", ".join(f"{v:.{d}f}" for v in entry["seeds"]) + ")"
    if entry.get("ci"):
        lo, hi = entry["ci"]
        text += f" [{lo:.{d}f}, {hi:.{d}f}]"
    return text


def cell(run, column):
    """A cell's text: a transcribed cell, or one metric, or several joined by ' / ' (oIoU / mIoU); `note` names a
    cell appended in parentheses ('1.212 (zero flow)')."""
    if "cell" in column:
        return str(run.get("cells", {}).get(column["cell"], ""))
    keys = column["metric"] if isinstance(column["metric"], list) else [column["metric"]]
    metrics = run.get("metrics", {})
    text = " / ".join(format_metric(metrics.get(k), column.get("digits", 4)) for k in keys if k in metrics)
    note = run.get("cells", {}).get(column.get("note"), "")
    return f"{text} ({note})" if text and note else text


def has_intervals(study):
    return any(m and m.get("ci") for run in study["runs"] for m in run.get("metrics", {}).values())


def render(study):
    """The markdown table of a study (one row per run, or one column per run when transposed), plus the one
    line that says so when none of its numbers has an interval."""
    columns, runs = study["columns"], study["runs"]
    if study.get("transpose"):
        rows = [[c["head"]] + [cell(r, c) for r in runs] for c in columns]
    else:
        rows = [[c["head"] for c in columns]] + [[cell(r, c) for c in columns] for r in runs]
    def line(row):
        return "|" + "|".join(f" {c} " if c else " " for c in row) + "|"

    lines = [line(rows[0]), "|" + "---|" * len(rows[0])] + [line(row) for row in rows[1:]]
    if not has_intervals(study) and study.get("evidence"):
        lines += ["", f"*No intervals: measured before minidp recorded them ({study['evidence']}); a difference in "
                      f"this table is not a verdict until the study is re-run.*"]
    if study.get("caveat"):
        lines += ["", f"*{study['caveat']}*"]
    return "\n".join(lines) + "\n"


def load(name, results=RESULTS):
    path = results / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no results file {path} for the table '{name}'")
    return json.loads(path.read_text())


# ----------------------------------------------------------------------------------------------------------
# Markdown files


def regenerate(text, results=RESULTS):
    """The markdown text with every marked table regenerated; returns (text, [names of the tables])."""
    names = []

    def replace(match):
        names.append(match.group(2))
        return match.group(1) + render(load(match.group(2), results)) + match.group(4)

    return BLOCK.sub(replace, text), names


def main(argv=None):
    p = ArgumentParser(prog="python -m minidp.tables", description="Regenerate the tables (see the docstring).")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs from its results")
    args = p.parse_args(argv)
    stale = []
    for path in MARKDOWN:
        text = path.read_text()
        new, names = regenerate(text)
        if new != text:
            stale.append(path.relative_to(ROOT))
            if not args.check:
                path.write_text(new)
        if names:
            print(f"{path.relative_to(ROOT)}: {', '.join(names)}")
    if stale:
        print(("stale: " if args.check else "rewritten: ") + ", ".join(map(str, stale)), file=sys.stderr)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
