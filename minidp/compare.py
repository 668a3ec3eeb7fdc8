"""Compare two evaluated runs scene by scene: `python sample.py compare RUN_A RUN_B [--metric absrel]`.

Each run directory holds eval_scenes.npz, written by the evaluation next to eval.json:

    scenes           int64 (n,)  the validation scene indices
    <k>              float (n,)  metric k per scene; the run's k is their nanmean (NaN: scene not counted)
    <k>:num, <k>:den float (n,)  a ratio metric (oIoU): the run's k is sum(num) / sum(den)

A generalist prefixes every key with its task ("depth/scenes", "depth/absrel"). For every metric both runs
have, one line: both values, the paired difference A - B with its 95 % bootstrap interval (minidp.stats) and the
verdict word. `prior_*` baselines are compared like any metric: on the same scenes their difference is exactly 0,
which shows at a glance that the two evaluations saw the same data.

Notable choices
- Paired, never two independent intervals: both runs see the same scenes, whose difficulty varies far more than
  the runs differ (per-scene IoU has a standard deviation of ~0.2), and pairing cancels it (stats.py).
- Runs evaluated on different scenes are refused rather than compared unpaired: an unpaired comparison of two
  1,024-scene evaluations is several times less sensitive, and silently being so is worse than an error.
  The same scenes in another order are aligned.
- A single-task run against a generalist compares with the generalist's section that has exactly the same
  metric names (depth's absrel..., flow's epe); two sections that match equally are an error naming both.
- Bad input (a missing or unreadable file, different scenes, a metric neither run has) is an InputError: one
  line on stderr and exit status 2.
"""

import sys
from pathlib import Path

import numpy as np

from minidp import stats
from minidp.errors import ArgumentParser, InputError, one_line

SCENES_FILE = "eval_scenes.npz"
# metrics where a larger value is better; every other metric (absrel, rmse, epe, angle_*) is an error
HIGHER_IS_BETTER = {"delta1", "delta2", "delta3", "miou", "oiou", "class_accuracy", "within_11_25",
                    "within_22_5", "within_30", "plain_miou", "plain_oiou"}


def better_direction(metric):
    """'higher' or 'lower' for a metric name, with or without its task prefix and prior_."""
    name = metric.rsplit("/", 1)[-1].removeprefix("prior_")
    return "higher" if name in HIGHER_IS_BETTER else "lower"


# ----------------------------------------------------------------------------------------------------------
# Reading eval_scenes.npz


def read_scenes(run):
    """{section: {"scenes": (n,), metric: (n,) or (n, 2) num/den columns}}; section "" for a single-task run."""
    path = Path(run) / SCENES_FILE
    if not path.is_file():
        raise InputError(f"{run}: no {SCENES_FILE} (evaluate it with sample.py first)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as e:  # a truncated or foreign file
        raise InputError(f"{path}: unreadable ({one_line(e)})") from None
    sections = {}
    for key, value in arrays.items():
        section, _, name = key.rpartition("/")
        metric, _, part = name.partition(":")
        entry = sections.setdefault(section, {})
        if part:  # a ratio metric's numerator or denominator
            entry.setdefault(metric, {})[part] = value
        else:
            entry[metric] = value
    for section, entry in sections.items():
        where = f"{path}" + (f" [{section}]" if section else "")
        if "scenes" not in entry:
            raise InputError(f"{where}: no scenes array")
        n = len(entry["scenes"])
        for metric, value in list(entry.items()):
            if isinstance(value, dict):
                if set(value) != {"num", "den"}:
                    raise InputError(f"{where}: ratio metric {metric} needs both {metric}:num and {metric}:den")
                value = entry[metric] = stats.ratio_columns(value["num"], value["den"])  # (n, 2)
            if value.ndim not in (1, 2) or len(value) != n:
                raise InputError(f"{where}: {metric} has shape {value.shape}, expected ({n},) like scenes")
    return sections


def match_sections(a, b, name_a, name_b):
    """[(label, section of A, section of B)] for the tasks both runs evaluated."""
    if ("" in a) == ("" in b):
        shared = sorted(set(a) & set(b))
        if not shared:
            raise InputError(f"{name_a} and {name_b} share no task "
                             f"(A: {', '.join(sorted(a))}; B: {', '.join(sorted(b))})")
        return [(s, a[s], b[s]) for s in shared]
    single, multi, single_is_a = (a[""], b, True) if "" in a else (b[""], a, False)
    names = set(single) - {"scenes"}
    found = [s for s in sorted(multi) if set(multi[s]) - {"scenes"} == names]
    if len(found) != 1:
        raise InputError(f"cannot tell which task of the generalist the single-task run is: "
                         f"{'none' if not found else ' and '.join(found)} of its tasks has its metrics")
    pair = (single, multi[found[0]]) if single_is_a else (multi[found[0]], single)
    return [(found[0], *pair)]


def aligned(sa, sb, label):
    """(order of A, order of B) that put both runs' scenes in the same order; InputError if the sets differ."""
    scenes_a, scenes_b = np.asarray(sa["scenes"]), np.asarray(sb["scenes"])
    if len(np.unique(scenes_a)) != len(scenes_a) or len(np.unique(scenes_b)) != len(scenes_b):
        raise InputError(f"{label or 'the runs'}: a scene index appears twice in {SCENES_FILE}")
    if set(scenes_a.tolist()) != set(scenes_b.tolist()):
        only_a, only_b = np.setdiff1d(scenes_a, scenes_b).size, np.setdiff1d(scenes_b, scenes_a).size
        raise InputError(f"the runs were evaluated on different scenes{f' for {label}' if label else ''} "
                         f"(A: {scenes_a.size}, B: {scenes_b.size}; {only_a} only in A, {only_b} only in B); "
                         "evaluate both on the same data.val_size and data.val_offset")
    return np.argsort(scenes_a, kind="stable"), np.argsort(scenes_b, kind="stable")


# ----------------------------------------------------------------------------------------------------------
# The comparison


def compare_runs(run_a, run_b, metric=None, n_boot=2000, seed=0):
    """One line per metric both runs have (or only `metric`): A, B, A - B [95 % CI], verdict."""
    a, b = read_scenes(run_a), read_scenes(run_b)
    lines, missing, known = [], [], set()
    for label, sa, sb in match_sections(a, b, run_a, run_b):
        order_a, order_b = aligned(sa, sb, label)
        names = sorted((set(sa) & set(sb)) - {"scenes"})
        if metric is not None:
            names = [metric] if metric in names else []
            has = "A" if metric in sa else "B" if metric in sb else None
            where = f" in {label}" if label else ""
            if not names:
                missing.append(f"only {has} has it{where}" if has else f"neither run has it{where}")
            known |= (set(sa) | set(sb)) - {"scenes"}
        for name in names:
            va, vb = sa[name][order_a], sb[name][order_b]
            if va.shape != vb.shape:  # e.g. oiou per scene in one file and as num/den in the other
                raise InputError(f"{name}: stored as shape {va.shape} in A and {vb.shape} in B")
            stat = stats.ratio_of_sums if va.ndim == 2 else np.mean
            keep = stats.valid_rows(va, vb)  # the scenes both count (paired_diff_ci drops the same ones)
            if not keep.any():
                lines.append(f"{(label + '/' if label else '') + name:<22} no scene is valid in both runs")
                continue
            diff, lo, hi = stats.paired_diff_ci(va, vb, stat=stat, n_boot=n_boot, seed=seed)
            word = stats.verdict(lo, hi, better_direction(name))
            lines.append(f"{(label + '/' if label else '') + name:<22} A {stat(va[keep], axis=0):.4f}  "
                         f"B {stat(vb[keep], axis=0):.4f}  A-B {diff:+.4f} [{lo:+.4f}, {hi:+.4f}]  "
                         f"({better_direction(name)} is better; {int(keep.sum())} scenes)  {word}")
    if metric is not None and not lines:
        raise InputError(f"metric {metric!r}: {'; '.join(missing)} (metrics: {', '.join(sorted(known))})")
    if not lines:
        raise InputError(f"{run_a} and {run_b} share no metric")
    return lines


def compare_main(argv):
    """`sample.py compare RUN_A RUN_B [--metric k]`: the lines of compare_runs; bad input is status 2."""
    p = ArgumentParser(prog="sample.py compare",
                       description="Compare two evaluated runs on the same scenes (paired bootstrap, 95 %).")
    p.add_argument("run_a", help="a run directory holding eval_scenes.npz")
    p.add_argument("run_b", help="another, evaluated on the same scenes")
    p.add_argument("--metric", help="compare only this metric (e.g. absrel)")
    args = p.parse_args(argv)
    try:
        lines = compare_runs(args.run_a, args.run_b, args.metric)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0
