"""Compute scaling laws: the convex-hull power-law fit, loss-curve smoothing, and reading runs' logs.

The scaling paper (Ravishankar et al., 2024, supplementary §1; REFERENCE.md §8) fits every law in its
figures the same way. Given points (C_i, L_i), compute C in MACs and L a loss or an error:

    L(C) = a * C^b,   a > 0                                                       (supp. Eqn. 1)

1. take the lower convex hull of all points in log-log space, from the least compute to the lowest loss (the
   compute-optimal envelope);
2. fit a and b to the hull points;
3. add every point that lies below the fitted curve to the fitted set, and refit;
4. repeat 3 until fewer than n_max new points lie below, or max_iter fits have been made.

The paper's pre-training law is L = 0.23 * C^-0.0098. No code for the fit was ever released.

Notable choices
- The fit is least squares on (log C, log L): log L = log a + b log C is a straight line, so the fit is closed
  form, a = exp(intercept) is positive by construction (the paper's "non-negativity constraints"), and every
  point weighs by its relative error, which is what a log-log plot shows. The paper's wording ("initialised
  with reasonable guesses") suggests an iterative solver in linear space; that would weigh the large
  losses of small-compute points most and can stop at a local optimum.
- The envelope stops at the lowest point. The lower hull proper continues to the point of most compute, and
  where that point's loss is higher than a point to its left (it is dominated: more compute, higher loss) the
  hull's last edge rises. Fitting it tilts the law, and the refit then adds points that lie below the tilted
  line but above the true law: on 60 points over six decades, on or up to 5 % above 0.23 C^-0.0098, the whole
  hull gave 0.2256 C^-0.00906 (b off by 8 %); the envelope gives the law back within 1 % (tests/test_scaling.py).
- Step 3's "recompute the hull": the lower hull of all points already lies below every point, so the hull of
  (hull + added points) is the same hull. What changes the fit is the larger set, so the set we fit is the
  hull points plus every point found below a previous fit. "Below" means below by more than 1e-9 in log L,
  so points lying on the curve (to float precision) are not counted; points already in the set are not
  counted again, so each iteration strictly grows the set and the loop ends after at most n fits.
- R^2 is reported in log space on the points used, the quantity the fit minimises.
- Smoothing of training-loss curves: a centred moving average of log L over `window` log records, the
  window shrinking symmetrically at the ends. The lower hull picks the lowest points, so on a raw noisy
  curve it selects the luckiest downward fluctuations and biases a (and b) low; averaging removes them. It is
  centred because a causal EMA (TensorBoard's) lags: each smoothed loss would be paired with more compute
  than it took, shifting every curve to the right. A symmetric window leaves a straight line (the ideal
  power law in log-log) exactly unchanged, even at the ends. train.py already averages the loss over each
  log interval, so a small window (5 records) is enough.
- Reading a log: train.py appends to log.jsonl and a resumed run re-logs the steps after its checkpoint, so
  records are keyed by step and the last record of a step wins. Lines that are not JSON (a line cut off
  by a kill) are skipped and counted, with one warning per file.

Letter legend: n points, C compute in MACs, L loss or error.
"""

import json
import math
from pathlib import Path

import numpy as np

from minidp import config, files

BELOW_TOL = 1e-9  # in log L: a point must be this far below the curve to count as below


# ----------------------------------------------------------------------------------------------------------
# Small helpers


def _check_points(C, L):
    """C, L as float64 arrays of equal length n >= 3, finite and positive; else ValueError saying which."""
    C = np.asarray(C, dtype=np.float64).ravel()
    L = np.asarray(L, dtype=np.float64).ravel()
    if C.shape != L.shape:
        raise ValueError(f"C and L must have the same length, got {C.size} and {L.size}")
    if C.size < 3:
        raise ValueError(f"a power-law fit needs at least 3 points, got {C.size}")
    for name, v in (("C", C), ("L", L)):
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name} has a non-finite value ({v[~np.isfinite(v)][0]})")
        if np.any(v <= 0):
            raise ValueError(f"{name} must be positive for a log-log fit; got {v[v <= 0][0]:g}")
    if np.unique(C).size < 2:
        raise ValueError("all points have the same compute C; a power law needs at least two distinct C")
    return C, L


def lower_hull(x, y):
    """Indices of the lower convex hull of points (x, y), left to right (Andrew's monotone chain).

    Points are sorted by x (ties: lowest y first, and only that one can be on a lower hull); a point is
    dropped while it does not make a strict left turn with the last two kept, so collinear points are dropped.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    order = np.lexsort((y, x))  # by x, then y
    hull = []
    for i in order:
        if hull and x[hull[-1]] == x[i]:
            continue  # same x, higher y: above the point already kept
        while len(hull) >= 2:
            o, a = hull[-2], hull[-1]
            cross = (x[a] - x[o]) * (y[i] - y[o]) - (y[a] - y[o]) * (x[i] - x[o])
            if cross > 0:  # o -> a -> i turns left: a stays on the lower hull
                break
            hull.pop()
        hull.append(int(i))
    return np.array(hull, dtype=np.int64)


def envelope(x, y):
    """The non-dominated lower hull, left to right: the lower convex hull from the least compute up to its
    lowest point. Beyond it the hull rises to points with more compute AND a higher loss than a point to their
    left; those are not compute-optimal and would tilt the fit (module docstring)."""
    hull = lower_hull(x, y)
    return hull[:int(np.argmin(y[hull])) + 1]


def fit_line(x, y):
    """Least-squares y = c0 + c1 x; returns (c0, c1)."""
    A = np.stack([np.ones_like(x), x], axis=1)  # (n, 2)
    (c0, c1), *_ = np.linalg.lstsq(A, y, rcond=None)
    return float(c0), float(c1)


def r_squared(y, y_fit):
    ss_res = float(np.sum((y - y_fit) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0


# ----------------------------------------------------------------------------------------------------------
# The fit


def fit_power_law(C, L, n_max=1, max_iter=20):
    """Fit L = a * C^b to the lower envelope of the points, iteratively (module docstring, steps 1-4).

    n_max: stop when fewer than n_max new points lie below the fitted curve (1: only when none does).
    max_iter: the most fits made. Returns a dict: a, b, r2 (log space, on the points used), iterations
    (fits made), used (indices into the input, sorted), hull (the envelope's indices, left to right).
    """
    if n_max < 1 or max_iter < 1:
        raise ValueError(f"n_max and max_iter must be at least 1, got {n_max} and {max_iter}")
    C, L = _check_points(C, L)
    x, y = np.log(C), np.log(L)
    hull = envelope(x, y)
    if hull.size < 2:
        raise ValueError("the point of least compute has the lowest loss: the loss does not fall with compute, "
                         "so there is no envelope to fit")
    used = np.zeros(C.size, dtype=bool)
    used[hull] = True
    for iteration in range(1, max_iter + 1):
        log_a, b = fit_line(x[used], y[used])
        below = ~used & (y < log_a + b * x - BELOW_TOL)
        if below.sum() < n_max:
            break
        if iteration < max_iter:
            used |= below
    idx = np.flatnonzero(used)
    return {"a": math.exp(log_a), "b": b, "r2": r_squared(y[idx], log_a + b * x[idx]),
            "iterations": iteration, "used": idx.tolist(), "hull": hull.tolist()}


def power_law(C, a, b):
    return a * np.asarray(C, dtype=np.float64) ** b


def format_law(a, b):
    """'L = 0.23 * C^-0.0098' with three significant digits."""
    return f"L = {a:.3g} * C^{b:.3g}"


# ----------------------------------------------------------------------------------------------------------
# Smoothing a training-loss curve


def smooth_log(values, window=5):
    """Centred moving average of log(values) over `window` (odd) entries, returned as values again.

    The window shrinks symmetrically near the ends (entry i averages i - h .. i + h with h <= min(i, n-1-i)),
    so a geometric sequence (a power law sampled at evenly spaced log C) comes back unchanged.
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd number, got {window}")
    v = np.asarray(values, dtype=np.float64)
    if np.any(v <= 0):
        raise ValueError("smoothing is done in log space; values must be positive")
    logv = np.log(v)
    n = v.size
    out = np.empty(n)
    for i in range(n):
        h = min(window // 2, i, n - 1 - i)
        out[i] = logv[i - h:i + h + 1].mean()
    return np.exp(out)


# ----------------------------------------------------------------------------------------------------------
# Reading runs


def read_log(path):
    """log.jsonl -> (records sorted by step, the last record of each step kept; number of unreadable lines)."""
    by_step, bad = {}, 0
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or "step" not in record:
            bad += 1
            continue
        by_step[record["step"]] = record  # a resumed run re-logs steps after its checkpoint: keep the latest
    if bad:
        files.warn_once(f"{path}: skipped {bad} line(s) that are not whole JSON records (cut off by a crash?)")
    return [by_step[s] for s in sorted(by_step)], bad


def loss_curve(records, window=5):
    """(cumulative training MACs, smoothed loss) arrays from log records; records without either are skipped."""
    pts = [(r["train_macs"], r["loss"]) for r in records
           if isinstance(r.get("train_macs"), (int, float)) and isinstance(r.get("loss"), (int, float))
           and r["train_macs"] > 0 and r["loss"] > 0]
    if not pts:
        return np.zeros(0), np.zeros(0)
    macs, loss = (np.array(v, dtype=np.float64) for v in zip(*pts))
    return macs, smooth_log(loss, window)


def forward_macs_from_log(records, global_batch):
    """Forward MACs per sample from train.py's bookkeeping, train_macs = 3 x forward MACs x step x global
    batch (forward + backward = 3 forwards); None if no record has train_macs."""
    last = [r for r in records if isinstance(r.get("train_macs"), (int, float)) and r.get("step", 0) > 0]
    return last[-1]["train_macs"] / (3 * last[-1]["step"] * global_batch) if last else None


def metric_value(evaluation, key):
    """eval.json value `key`; '<k>_err' is 1 - <k> for accuracies (the paper's 'delta1 error' = 1 - delta1)."""
    if key in evaluation:
        return float(evaluation[key])
    if key.endswith("_err") and key[:-4] in evaluation:
        return 1.0 - float(evaluation[key[:-4]])
    raise KeyError(key)


def inference_macs(evaluation, forward_macs):
    """Test-time compute per image: DDIM steps x ensemble members x forward MACs (the paper's Figs. 8-10)."""
    return int(evaluation.get("steps", 1)) * int(evaluation.get("ensemble", 1)) * forward_macs


# ----------------------------------------------------------------------------------------------------------
# A run directory -> points (log.jsonl, eval.json, sweep.json and config.yaml as train.py / sample.py write them)
# ----------------------------------------------------------------------------------------------------------

def read_json(path):
    """A JSON object from a run's file; ValueError (naming the file) if unreadable or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path.name} is unreadable ({type(e).__name__})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path.name} is not a JSON object")
    return value


def run_log(run):
    """The records of run/log.jsonl; ValueError if there is none or none has train_macs."""
    if not (run / "log.jsonl").is_file():
        raise ValueError("no log.jsonl")
    records, _ = read_log(run / "log.jsonl")
    if not any(isinstance(r.get("train_macs"), (int, float)) for r in records):
        raise ValueError("log.jsonl has no train_macs")
    return records


def forward_macs(run, evaluation):
    """Forward MACs per sample: eval.json's forward_macs, else sweep.json's, else derived from the run's log."""
    for source in (evaluation, read_json(run / "sweep.json") if (run / "sweep.json").is_file() else {}):
        if isinstance(source.get("forward_macs"), (int, float)):
            return float(source["forward_macs"])
    if not (run / "config.yaml").is_file():
        raise ValueError("no forward_macs and no config.yaml to derive it from")
    try:
        batch = config.load_config(run / "config.yaml").train.global_batch
    except config.ConfigError as e:
        raise ValueError(str(e)) from None
    return forward_macs_from_log(run_log(run), batch)


def run_points(run, x, y, window):
    """(xs, ys) arrays of one run, or ValueError saying why the run cannot be used."""
    parent = float(read_json(run / "sweep.json").get("parent_macs", 0.0)) if (run / "sweep.json").is_file() else 0.0
    if y == "loss":
        macs, loss = loss_curve(run_log(run), window)
        return macs + parent, loss
    if not (run / "eval.json").is_file():
        raise ValueError("no eval.json (unfinished?)")
    evaluation = read_json(run / "eval.json")
    try:
        value = metric_value(evaluation, y.removeprefix("eval."))
    except KeyError:
        raise ValueError(f"eval.json has no {y.removeprefix('eval.')}") from None
    if x == "inference":
        c = inference_macs(evaluation, forward_macs(run, evaluation))
    else:
        c = final_macs(run) + parent
    return np.array([c], dtype=np.float64), np.array([value])


def final_macs(run):
    """The cumulative training MACs a run had reached at its last log record."""
    return max(r["train_macs"] for r in run_log(run) if isinstance(r.get("train_macs"), (int, float)))
