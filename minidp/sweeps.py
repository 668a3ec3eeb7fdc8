"""A sweep and its runs: the sweep file read and checked, each variant's run folders (one per seed), their points
and final values, the verdict of a variant against the baseline over seeds, the sweep's printed table
(print_table) and its power law fitted, written and drawn (fit_and_draw).

fit_scaling.py runs sweeps (child processes, the lock, resuming); what it reads, decides and draws about a sweep's
runs is here, so a test or a notebook can use it without the script. A sweep file:

    kind: train | test_time        config: the base YAML (relative to the sweep file)     out: the runs' folder
    common: [overrides for every run]   variants: {name: [overrides] or {overrides, parent, parent_key, ...}}
    fit: {x: train | inference, y: [loss | eval.<key>], include: [glob]}   seeds: k   baseline: <variant>

A variant given as a mapping may also name `against: <variant>`, the run its verdict is taken against instead of
the baseline (two pairs of equal compute in one sweep: configs/sweeps/moe_equal_active.yaml), or
`continues: <variant>`: its run starts as a copy of that earlier variant's finished run (checkpoint and log) and
train.py resumes it to this variant's train.steps, so 250, 500 and 1000 pre-training steps cost 1000 steps, not
1750. Resuming is exact and nothing but the LR depends on train.steps, so with a constant LR the continued run is
the run trained from scratch (a test holds them equal); the sweep file is refused otherwise.
With seeds: k every variant's runs are <out>/<variant>/seed<j>, trained with train.seed = j.
`results_study` turns a finished sweep into a results file of minidp/tables.py (`fit_scaling.py sweep --results`).
"""

import fnmatch
import json
import math
import re
import subprocess
from pathlib import Path

import numpy as np

from minidp import config as cfglib
from minidp import files, scaling, stats, viz
from minidp.compare import better_direction
from minidp.errors import InputError

TRAINED_AT = "trained_at.txt"  # a finished run's commit (fit_scaling.py and the benchmarks/ studies write it)
SEED_DIR = re.compile(r"seed\d+")  # a variant trained with several seeds keeps them in <variant>/seed<k>


def find_runs(paths):
    """{name: [run directories]}: each path that is a run, else each sub-directory of it (sorted); a directory
    whose sub-directories are seed<k> runs (a sweep with seeds) is one entry holding all of them."""
    groups = {}
    for p in map(Path, paths):
        if not p.is_dir():
            raise InputError(f"not a directory: {p}")
        for run in [p] if is_run(p) else sorted(d for d in p.iterdir() if d.is_dir()):
            seeds = sorted(d for d in run.iterdir() if d.is_dir() and SEED_DIR.fullmatch(d.name))
            groups[run.name] = seeds if seeds and not is_run(run) else [run]
    return groups


def is_run(path):
    return any((path / f).exists() for f in ("log.jsonl", "eval.json", "config.yaml"))


def variant_points(runs, x, y, window):
    """(xs, ys) of one variant: its run's points, or the mean over its seeds' runs (the same steps, so the same
    compute; ValueError if their logs differ in length, e.g. one seed is unfinished)."""
    points = [scaling.run_points(run, x, y, window) for run in runs]
    if len({xs.size for xs, _ in points}) > 1:
        raise ValueError(f"its {len(runs)} seeds logged different numbers of points (unfinished?)")
    return np.mean([xs for xs, _ in points], axis=0), np.mean([ys for _, ys in points], axis=0)


def read_sweep(path):
    """The sweep file as a dict, every variant's config checked through config.py before anything runs."""
    path = Path(path)
    try:
        spec = cfglib.read_mapping(path, "sweep file")
    except cfglib.ConfigError as e:
        raise InputError(str(e)) from None
    valid = ("kind", "config", "out", "common", "variants", "fit", "seeds", "baseline")
    unknown = set(spec) - set(valid)
    if unknown:
        raise InputError(f"{path}: unknown key '{sorted(unknown)[0]}' (valid: {', '.join(valid)})")
    for key in ("config", "out", "variants"):
        if key not in spec:
            raise InputError(f"{path}: missing '{key}'")
    if spec.setdefault("kind", "train") not in ("train", "test_time"):
        raise InputError(f"{path}: kind must be train or test_time, got {spec['kind']!r}")
    spec["config"] = str(path.parent / spec["config"])
    spec["common"] = list(spec.get("common") or [])
    fit = spec.setdefault("fit", {}) or {}
    spec["fit"] = {"x": fit.get("x", "train"), "y": list(fit.get("y", ["loss"])), "include": fit.get("include", ["*"])}
    if spec["fit"]["x"] not in ("train", "inference"):
        raise InputError(f"{path}: fit.x must be train or inference, got {spec['fit']['x']!r}")
    bad_y = [y for y in spec["fit"]["y"] if not isinstance(y, str) or not (y == "loss" or y.startswith("eval."))]
    if bad_y:
        raise InputError(f"{path}: fit.y entries must be loss or eval.<key>, got {bad_y[0]!r}")
    if not isinstance(spec["variants"], dict) or not spec["variants"]:
        raise InputError(f"{path}: variants must be a non-empty mapping of name -> overrides")
    spec.setdefault("seeds", 1)
    if not isinstance(spec["seeds"], int) or isinstance(spec["seeds"], bool) or spec["seeds"] < 1:
        raise InputError(f"{path}: seeds must be a positive integer, got {spec['seeds']!r}")
    spec.setdefault("baseline", next(iter(spec["variants"])))
    if spec["baseline"] not in spec["variants"]:
        raise InputError(f"{path}: baseline {spec['baseline']!r} is not a variant")
    for name, v in list(spec["variants"].items()):
        v = {"overrides": v} if isinstance(v, list) else (v or {})
        if not isinstance(v, dict) or set(v) - {"overrides", "parent", "parent_key", "against", "continues"}:
            raise InputError(f"{path}: variant {name}: a list of overrides or {{overrides, parent, parent_key, "
                             f"against, continues}}")
        for key in ("parent", "against", "continues"):
            if v.get(key) is not None and v[key] not in spec["variants"]:
                raise InputError(f"{path}: variant {name}: {key} {v[key]!r} is not a variant")
        spec["variants"][name] = v
        try:
            cfg = cfglib.load_config(spec["config"], spec["common"] + list(v.get("overrides") or []))
        except cfglib.ConfigError as e:
            raise InputError(f"{path}: variant {name}: {e}") from None
        if v.get("continues") is not None:
            check_continues(path, spec, name, cfg)
    return spec


def check_continues(path, spec, name, cfg):
    """A variant that continues another must come after it in the file (the sweep trains in order), train the same
    run for more steps, and use a constant LR: an LR decaying to train.steps would differ from the first step on."""
    source = spec["variants"][name]["continues"]
    if spec["kind"] != "train":
        raise InputError(f"{path}: variant {name}: continues is for kind: train (a test_time variant trains nothing)")
    if list(spec["variants"]).index(source) > list(spec["variants"]).index(name):
        raise InputError(f"{path}: variant {name}: continues {source!r}, which comes after it; list {source} first")
    if cfg.train.lr_schedule != "constant":
        raise InputError(f"{path}: variant {name}: continues {source!r} with train.lr_schedule = "
                         f"{cfg.train.lr_schedule!r}; only a constant LR makes the continued run equal to one trained "
                         f"from scratch")
    first = cfglib.load_config(spec["config"], spec["common"] + list(spec["variants"][source].get("overrides") or []))
    if cfg.train.steps <= first.train.steps:
        raise InputError(f"{path}: variant {name}: train.steps = {cfg.train.steps} continues {source!r}'s "
                         f"{first.train.steps}; it must be more")


def seed_dirs(out, name, seeds):
    """[(run directory, train.seed override)] of a variant: out/name with the config's seed for one seed,
    out/name/seed<k> with train.seed=k for k = 0..seeds-1 otherwise."""
    if seeds == 1:
        return [(out / name, [])]
    return [(out / name / f"seed{k}", [f"train.seed={k}"]) for k in range(seeds)]


def final_values(runs, x, y, window=5):
    """(compute, [each seed's final y]) of a variant: the last point of each run (the loss smoothed)."""
    points = [scaling.run_points(run, x, y, window) for run in runs]
    return float(points[0][0][-1]), [float(ys[-1]) for _, ys in points]


def direction(y):
    """'lower' or 'higher': which values of a sweep's y are better (a loss and an <k>_err are errors)."""
    return "lower" if y == "loss" or y.endswith("_err") else better_direction(y.removeprefix("eval."))


def seed_verdict(values, reference, better):
    """The verdict word of variant (A) - baseline (B) over seeds: a t-interval of the per-seed differences (seed k
    of both was trained with train.seed = k, so each seed's difference is paired)."""
    if len(values) != len(reference):
        return "-"
    diff, half = stats.seed_interval(np.subtract(values, reference))
    if not math.isfinite(half):
        return "1 seed"  # no interval over seeds: no verdict either way
    return stats.verdict(diff - half, diff + half, better)


def included(spec):
    """The variants the fit and the results table take (fit.include's globs), in the sweep file's order."""
    return [n for n in spec["variants"] if any(fnmatch.fnmatch(n, g) for g in spec["fit"]["include"])]


def reference_of(spec, name):
    """The variant whose seeds `name`'s verdict pairs with: its `against:`, else the sweep's baseline."""
    return spec["variants"][name].get("against") or spec["baseline"]


def verdict_words(word, name, reference):
    """seed_verdict's word with the two variants named: 'tiny better' instead of 'B better'."""
    return {"A better": f"{name} better", "B better": f"{reference} better"}.get(word, word)


def checkout_commit(where=None):
    """The short commit of the checkout `where` (default: the one this file is in, the code a run started now trains
    with), or None outside git."""
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=where or Path(__file__).resolve().parent,
                         capture_output=True, text=True)
    return git.stdout.strip() or None


def mark_trained(run, commit):
    """Record in a finished run the commit it was trained at (TRAINED_AT; nothing outside git)."""
    if commit:
        (Path(run) / TRAINED_AT).write_text(commit + "\n")


def trained_at(runs, default):
    """The commits `runs` were trained at (their TRAINED_AT files, ', '-joined), `default` for runs without one."""
    commits = sorted({(run / TRAINED_AT).read_text().strip() if (run / TRAINED_AT).is_file() else default
                      for run in runs} - {None})
    return ", ".join(commits) or None


SEED_FIX = "b94e18f"  # the commit from which train.seed changes a run's batches, noise and timesteps


def predates_seed_fix(commit, where=None):
    """True when git knows `commit` and it does not contain SEED_FIX (a run trained there drew seed 0's batches,
    noise and timesteps whatever its train.seed); False when it does, or when git cannot tell (no repository, an
    unknown commit)."""
    git = subprocess.run(["git", "merge-base", "--is-ancestor", SEED_FIX, commit],
                         cwd=where or Path(__file__).resolve().parent, capture_output=True, text=True)
    return git.returncode == 1


def seed_caveat(study, where=None):
    """The line a results file's table ends with when its seeds were not what they claim: a study with runs over
    several training seeds, any of them trained before SEED_FIX; None otherwise. Writers store it as the study's
    "caveat" (minidp/tables.py prints it under the table)."""
    commits = sorted({c for run in study["runs"] if isinstance(run.get("seed"), list) and len(run["seed"]) > 1
                      for c in re.split(r"[,\s]+", str(run.get("commit") or "")) if c})
    old = [c for c in commits if predates_seed_fix(c, where)]
    if not old:
        return None
    return (f"Seeds differ only in initial weights: trained at {', '.join(old)}, before {SEED_FIX}, when train.seed "
            f"did not reach the batches, noise or timesteps; runs started from one checkpoint with no new layers "
            f"are one run repeated. The intervals are the spread over initialisations.")


def write_study(path, study):
    """Write a results file (minidp/tables.py), atomically, with its "caveat" (seed_caveat) set when it has one:
    every writer of tutorials/results/*.json goes through here, so none can forget the caveat."""
    caveat = seed_caveat(study)
    if caveat:
        study["caveat"] = caveat
    files.write_text(path, json.dumps(study, indent=1) + "\n")


def results_study(spec, study, description, command, commit, window=5):
    """A results file (minidp/tables.py) of a finished sweep: one row per variant with its final compute and, per
    y, the mean over seeds with its 95 % t-interval, the variant it is compared against, the per-seed paired
    difference from it with its t-interval, and the verdict, and each seed's value (per_seed: a later question, such
    as a pair the file did not name, can then be paired from the file alone); each row's commit is its runs'
    (trained_at; `commit` for runs that did not record one). Raises ValueError for an unfinished run."""
    out, x, ys, seeds = Path(spec["out"]), spec["fit"]["x"], spec["fit"]["y"], spec["seeds"]
    names = included(spec)  # e.g. only the fine-tunes of a pre-training sweep: its parents have no eval
    needed = dict.fromkeys(names + [reference_of(spec, name) for name in names])
    runs_of = {name: [run for run, _ in seed_dirs(out, name, seeds)] for name in needed}
    finals = {(name, y): final_values(runs, x, y, window) for name, runs in runs_of.items() for y in ys}
    columns = [{"head": "variant", "cell": "variant"}, {"head": f"{x} MACs", "cell": "macs"},
               {"head": "against", "cell": "against"}]
    for y in ys:
        key = y.removeprefix("eval.")
        columns += [{"head": key, "metric": key}, {"head": f"{key} difference", "metric": f"{key}_diff"},
                    {"head": "verdict", "cell": f"{key}_verdict"}]

    def entry(values):
        mean, half = stats.seed_interval(values)
        return {"value": mean, "ci": [mean - half, mean + half] if math.isfinite(half) else None}

    rows = []
    for name in names:
        v, reference = spec["variants"][name], reference_of(spec, name)
        cells, metrics = {"variant": name, "macs": f"{finals[name, ys[0]][0]:.3g}",
                          "against": "" if name == reference else reference}, {}
        for y in ys:
            key, values = y.removeprefix("eval."), finals[name, y][1]
            metrics[key] = entry(values)
            if name != reference:
                metrics[f"{key}_diff"] = entry(np.subtract(values, finals[reference, y][1]))
                word = seed_verdict(values, finals[reference, y][1], direction(y))
                cells[f"{key}_verdict"] = verdict_words(word, name, reference)
        overrides = spec["common"] + list(v.get("overrides") or [])
        per_seed = {y.removeprefix("eval."): [round(value, 8) for value in finals[name, y][1]] for y in ys}
        rows.append({"name": name, "seed": list(range(seeds)), "overrides": overrides, "command": command,
                     "commit": trained_at(runs_of[name], commit), "cells": cells, "metrics": metrics,
                     "per_seed": per_seed})
    images = cfglib.load_config(spec["config"], spec["common"]).sample.num_images
    evidence = f"{seeds} training seed{'s' if seeds > 1 else ''}, paired by seed" + (
        f"; evaluations on {images} validation scenes" if any(y.startswith("eval.") for y in ys) else "")
    return {"study": study, "description": description, "evidence": evidence, "command": command,
            "columns": columns, "runs": rows}


# ----------------------------------------------------------------------------------------------------------
# A sweep's table and law (fit_scaling.py prints and draws them)


def print_table(groups, x, ys, window=5, against=None):
    """One line per variant: its final compute and, per y, its final value (the loss smoothed): the mean +- the
    95 % t-interval over its seeds, and the verdict of variant - its reference (against[name]; the first variant by
    default), the sweep's numbers whether or not a power law fits them."""
    against = against or dict.fromkeys(groups, next(iter(groups)))
    finals = {}
    for name, runs in groups.items():
        for y in ys:
            try:
                finals[name, y] = final_values(runs, x, y, window)
            except (ValueError, OSError):
                pass
    head = "".join(f" {y.removeprefix('eval.'):>21} {'verdict':>22}" for y in ys)
    print(f"{'run':<16} {x + ' MACs':>14}{head}", flush=True)
    for name in groups:
        cells, c = [], None
        for y in ys:
            if (name, y) not in finals:
                cells.append(f" {'-':>21} {'-':>22}")
                continue
            c = finals[name, y][0] if c is None else c
            mean, half = stats.seed_interval(finals[name, y][1])
            value = f"{mean:.4f}" + (f" +- {half:.4f}" if math.isfinite(half) else "")
            ref = against.get(name, name)
            word = "-" if name == ref or (ref, y) not in finals else \
                verdict_words(seed_verdict(finals[name, y][1], finals[ref, y][1], direction(y)), name, ref)
            cells.append(f" {value:>21} {word:>22}")
        print(f"{name:<16} {(f'{c:.3e}' if c is not None else '-'):>14}" + "".join(cells), flush=True)


def fit_and_draw(groups, x, y, out, window=5, n_max=1, max_iter=20):
    """Collect each variant's points (the mean over its seeds), fit, write scaling_<y>.json and .png into `out`;
    groups: {variant: [run directories]}. Returns the result dict."""
    if x == "inference" and y == "loss":
        raise InputError("--x inference needs an evaluation metric (--y eval.<key>), not the training loss")
    if direction(y) == "higher":  # mIoU, delta1: they rise towards 1, and a falling power law fits what is left
        raise InputError(f"{y} rises as the model improves; a power law in compute is fitted to an error: "
                         f"--y {y}_err (1 - {y.removeprefix('eval.')})")
    curves = {}
    for name, runs in groups.items():
        where = runs[0] if len(runs) == 1 else runs[0].parent
        try:
            xs, ys = variant_points(runs, x, y, window)
        except ValueError as e:
            files.warning(f"skipping {where}: {e}")
            continue
        if xs.size == 0 or np.any(xs <= 0) or np.any(ys <= 0):
            files.warning(f"skipping {where}: no positive ({x} MACs, {y}) point")
            continue
        curves[name] = (xs, ys)
    if not curves:
        raise InputError(f"no usable run among {len(groups)} director{'y' if len(groups) == 1 else 'ies'} for {y}")
    C, L = (np.concatenate(parts) for parts in zip(*curves.values()))  # every variant's points, (n,) each
    try:
        fit = scaling.fit_power_law(C, L, n_max=n_max, max_iter=max_iter)
    except ValueError as e:
        raise InputError(f"cannot fit {y}: {e}") from None
    name = y.removeprefix("eval.")
    law = scaling.format_law(fit["a"], fit["b"])
    result = {"x": x, "y": y, "a": fit["a"], "b": fit["b"], "r2": fit["r2"], "law": law,
              "iterations": fit["iterations"], "points_used": [[C[i], L[i]] for i in fit["used"]],
              "hull": [[C[i], L[i]] for i in fit["hull"]], "runs": sorted(curves), "n_points": int(C.size)}
    out.mkdir(parents=True, exist_ok=True)
    files.write_text(out / f"scaling_{name}.json", json.dumps(result, indent=2) + "\n")  # atomic
    line = np.array([C.min(), C.max()])
    plotted = {**curves, "envelope": (C[fit["hull"]], L[fit["hull"]]),
               f"{law} (R^2 {fit['r2']:.3f})": (line, scaling.power_law(line, fit["a"], fit["b"]))}
    viz.plot_curves(plotted, out / f"scaling_{name}.png", xlabel=f"{x} compute (MACs)", ylabel=name,
                    logx=True, logy=True)
    print(f"{name}: {law} | R^2 {fit['r2']:.4f} | {len(fit['used'])} of {C.size} points from {len(curves)} runs"
          f" | {fit['iterations']} fits -> {out / f'scaling_{name}.json'}", flush=True)
    return result
