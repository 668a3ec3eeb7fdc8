"""Contribution factors c_t^2: how much each denoising timestep matters for the final perception result.

ADDP (Pang, Xu & Wang; papers/003, Sec. 3.1 and Appendix A.2) argues that a perception model's final error
decomposes over timesteps with weights c_t^2 (its Eqn. 2), and trains by sampling t ~ Multinomial(c^2)
(its Algorithm B, minidp.schedules.MultinomialTimesteps). It gives two ways to get c_t^2:

1. From the diffusion formula (Sec. 3.1, after Eqn. 3): x0 = x_t / sqrt(a_t) - sqrt(1 - a_t) / sqrt(a_t) * eps,
   so the weight of eps_theta(x_t, t) in x0 is sqrt((1 - a_t) / a_t), and

       c_t^2 = ((1 - a_t) / a_t) / sum_i ((1 - a_i) / a_i),      a_t = alpha_bar_t.

2. From perception statistics (Algorithm A): run a trained model on N validation samples, record the metric
   Q of the clean prediction x0_hat at S intermediate steps, and ask how much of the final metric's variance
   across samples each step explains. With R^2_k the coefficient of determination of the least-squares fit

       Q_final = beta_0 + sum_{j <= k} beta_j Q_j      (the steps from the noisiest down to step k),

   step k gets c^2 = R^2_k - R^2_{k-1} (R^2 before any step = 0, the paper's dummy regressor Q_{T+1} = 0).
   Nested least squares can only fit better as regressors are added, so the increments are >= 0.

Both are then merged into groups of T / G consecutive timesteps (the paper: 10 groups of 100, "to avoid
variance of timesteps", A.2.1), floored ("we round up their probabilities to 1 %") and normalised. Index 0
is the least noisy group (timesteps 0..99), as in the release's vectors and in minidp's t convention.

Notable choices:
- Sign of the increment. Algorithm A's line 7 writes c_t^2 <- (R^2)_{t+1} - (R^2)_t, which is <= 0; the main
  text (Sec. 3.1) writes (R^2)_t - (R^2)_{t+1} and says it is non-negative. We follow the main text
  (REFERENCE.md §6) and clamp the increment at 0, which only ever removes float rounding (~1e-16).
- The last recorded step IS the final prediction (the DDIM chain ends with its x0_hat), so it is one of the
  regressors: the nested R^2 reaches 1 at the last step, and the increments sum to 1 before the floor.
- Saturation guard. With k regressors and N samples, least squares explains about k / (N - 1) of the
  variance by pure chance, and all of it once k + 1 >= N. perception_ct2 refuses tables with fewer than
  MIN_SAMPLES_PER_STEP = 10 samples per recorded step (N >= 10 S), which keeps the chance share of the
  S - 1 steps before the last under ~10 % in total (~1 / N per step, at or below the 1 % floor for N >= 100).
  The paper has S = 10 groups' worth of steps and N = 654 (depth) or 1000 (referring).
- The metric's direction does not matter: R^2 is unchanged when Q is negated (RMSE, lower is better, as the
  paper uses for depth, gives the same c^2 as -RMSE).
- Floor: every group ends at least at `floor` and the rest keep their proportions (the paper's "round up to
  1 %"). The release's integer vectors were rounded up first and then normalised, so their floored groups
  end a little under 1 % (depth: 1/106); the presets below keep the release's numbers as published.
- Groups: timestep t belongs to group t // (T / G). Groups that no recorded step falls into get 0 before the
  floor, so record at least one step per group (S = 10 trailing DDIM steps: 999, 899, ..., 99).

File formats (the CLI at the bottom):
    intermediates  {"timesteps": [S ints, noisiest first], "metric": "iou", "higher_is_better": true,
                    "Q": [S lists of N floats]}  (optional "T": 1000, "schedule": "linear" for the figure)
    weights        {"weights": [G floats summing to 1], "groups": G, "T": 1000, ...provenance...}

Shape legend: S recorded steps, N validation samples, G groups, T training timesteps.
"""

import json
import math
import sys
from pathlib import Path

import torch

from minidp import viz
from minidp.errors import ArgumentParser, one_line
from minidp.ddim import timesteps as ddim_timesteps
from minidp.schedules import SCHEDULES, NoiseSchedule

MIN_SAMPLES_PER_STEP = 10  # N >= 10 S: the chance R^2 of the nested fits stays small (docstring)
GROUPS = 10  # the paper's 10 groups of 100 timesteps (A.2.1); weights files for training have this length
DEFAULT_FLOOR = 0.01  # the paper's "round up their probabilities to 1 %" (A.2.1)

# ----------------------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------------------


def group_sums(values, t, T=1000, groups=10):
    """Sum values (K,) into G groups by their timesteps t (K,): group g holds t in [g T/G, (g+1) T/G)."""
    if not isinstance(groups, int) or groups < 1 or T % groups != 0:
        raise ValueError(f"groups={groups!r} must be a positive integer dividing T={T}")
    t = torch.as_tensor(t, dtype=torch.long)
    if t.numel() and (t.min() < 0 or t.max() >= T):
        raise ValueError(f"timesteps must lie in 0..{T - 1}, got {t.min().item()}..{t.max().item()}")
    out = torch.zeros(groups, dtype=torch.float64)
    return out.index_add_(0, t // (T // groups), torch.as_tensor(values, dtype=torch.float64))  # (G,)


def _read_json(path, what):
    """The value of a JSON file; ValueError naming `what` and the file if it cannot be read or parsed."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {what} {path}: {e}") from None


def apply_floor(weights, floor=DEFAULT_FLOOR):
    """Normalise non-negative weights (G,) so that every entry is >= floor and the others keep their ratios.

    Raising small groups to the floor takes mass from the rest, which may push another group under the floor;
    at most G rounds settle it. All-zero weights (nothing measured) become uniform."""
    w = torch.as_tensor(weights, dtype=torch.float64).clone()
    G = w.numel()
    if not 0 <= floor * G <= 1:
        raise ValueError(f"floor={floor} times {G} groups must lie in [0, 1]")
    if (w < 0).any() or not torch.isfinite(w).all():
        raise ValueError(f"weights must be finite and non-negative, got {w.tolist()}")
    if w.sum() == 0:
        return torch.full((G,), 1.0 / G, dtype=torch.float64)
    floored = torch.zeros(G, dtype=torch.bool)
    for _ in range(G):
        rest = w.masked_fill(floored, 0)
        out = rest / rest.sum() * (1 - floor * int(floored.sum())) if rest.sum() > 0 else rest  # float64 math
        out = out.masked_fill(floored, floor)
        newly = (out < floor) & ~floored
        if not newly.any():
            return out
        floored |= newly
    return out


# ----------------------------------------------------------------------------------------------------------
# c_t^2 from the diffusion formula (ADDP Sec. 3.1)
# ----------------------------------------------------------------------------------------------------------


def diffusion_ct2(alpha_bar, groups=10):
    """c_t^2 proportional to (1 - alpha_bar_t) / alpha_bar_t, summed into `groups` groups, normalised. (G,)

    alpha_bar: (T,) from a NoiseSchedule. No floor: the formula's smallest group (t < 100, linear schedule)
    already holds ~0.01 % and the paper plots it as is (its Fig. A)."""
    a = torch.as_tensor(alpha_bar, dtype=torch.float64)  # (T,)
    if (a <= 0).any():
        raise ValueError("alpha_bar reaches 0 (zero terminal SNR): (1 - a) / a is infinite there")
    T = a.numel()
    w = group_sums((1 - a) / a, torch.arange(T), T, groups)  # (G,)
    return w / w.sum()


# ----------------------------------------------------------------------------------------------------------
# c_t^2 from perception statistics (ADDP Algorithm A)
# ----------------------------------------------------------------------------------------------------------


def _r2(y, X):
    """R^2 of the least-squares fit y ~ [1, X]; y (N,), X (N, k) float64."""
    ones = torch.ones(y.numel(), 1, dtype=torch.float64)
    A = torch.cat([ones, X], dim=1)  # (N, k + 1)
    # gelsd (SVD) gives the minimum-norm solution when columns are collinear, e.g. a step whose metric is
    # constant over samples (IoU 0 everywhere at t = 999) or two identical steps
    beta = torch.linalg.lstsq(A, y[:, None], driver="gelsd").solution  # (k + 1, 1)
    residual = y - (A @ beta)[:, 0]
    centred = y - y.mean()
    return 1 - residual.dot(residual) / centred.dot(centred)


def _check_table(Q):
    Q = torch.as_tensor(Q, dtype=torch.float64)
    if Q.dim() != 2 or Q.shape[0] < 1 or Q.shape[1] < 2:
        raise ValueError(f"Q must be (S steps, N samples) with S >= 1 and N >= 2, got shape {tuple(Q.shape)}")
    if not torch.isfinite(Q).all():
        raise ValueError("Q holds non-finite metric values")
    if (Q[-1] == Q[-1, 0]).all():
        raise ValueError("the final metric (Q's last row) is the same for every sample: R^2 is undefined")
    return Q


def nested_r2(Q):
    """R^2_k of regressing the final metric Q[-1] (N,) on the steps Q[0..k], for k = 0..S-1. (S,)

    Q: (S, N), rows ordered from the noisiest step to the cleanest; the last row is the final metric."""
    Q = _check_table(Q)
    y = Q[-1]  # (N,) the final result, Q_{0,:} in the paper's notation
    return torch.stack([_r2(y, Q[: k + 1].T) for k in range(Q.shape[0])])  # (S,)


def perception_ct2(Q, timesteps=None, groups=10, floor=DEFAULT_FLOOR, T=1000):
    """ADDP's Algorithm A: grouped, floored, normalised c^2 (G,) from per-step metrics Q (S, N).

    timesteps (S,): the t of each row, strictly decreasing; default the S steps of a trailing DDIM chain
    (S = 10: 999, 899, ..., 99), which puts one step in each of 10 groups."""
    Q = _check_table(Q)
    S, N = Q.shape
    if N < MIN_SAMPLES_PER_STEP * S:
        raise ValueError(f"Q has N={N} samples for S={S} steps; need N >= {MIN_SAMPLES_PER_STEP} * S: with S "
                         f"regressors chance alone explains ~S/(N-1) of the final metric's variance")
    if timesteps is None:
        timesteps = ddim_timesteps(S, "trailing", T)
    t = torch.as_tensor(timesteps, dtype=torch.long).flatten()  # (S,)
    if t.numel() != S:
        raise ValueError(f"timesteps has {t.numel()} entries but Q has S={S} rows (one per recorded step)")
    if S > 1 and not (t[1:] < t[:-1]).all():
        raise ValueError(f"timesteps must be strictly decreasing (noisiest first), got {t.tolist()}")
    r2 = nested_r2(Q)  # (S,)
    # R^2 before any step is 0 (Algorithm A's dummy regressor); main-text sign, clamped (docstring)
    increments = torch.diff(r2, prepend=r2.new_zeros(1)).clamp_min(0)  # (S,)
    return apply_floor(group_sums(increments, t, T, groups), floor)


# ----------------------------------------------------------------------------------------------------------
# Loading weights: a weights.json or a preset
# ----------------------------------------------------------------------------------------------------------


def load_weights(path_or_preset, groups=10):
    """A (G,) float64 tensor of normalised group weights from a preset name or a weights.json file.

    Raises ValueError (one line, naming the problem) for an unknown preset, a missing or malformed file,
    a length other than `groups`, or negative / non-finite / all-zero entries."""
    name = str(path_or_preset)
    if name in PRESETS:
        w = PRESETS[name]
        source = f"preset {name!r}"
    else:
        path = Path(name)
        if not path.is_file():
            raise ValueError(f"{name!r} is neither a weights file nor a preset; valid presets: {', '.join(PRESETS)}")
        data = _read_json(name, "weights file")
        if not isinstance(data, dict) or "weights" not in data:
            raise ValueError(f"weights file {name} must be a JSON object with a 'weights' list")
        w = data["weights"]
        source = f"weights file {name}"
    if not isinstance(w, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in w):
        raise ValueError(f"{source}: 'weights' must be a list of numbers")
    if len(w) != groups:
        raise ValueError(f"{source} has {len(w)} weights, expected groups={groups}")
    if not all(math.isfinite(v) and v >= 0 for v in w) or sum(w) <= 0:
        raise ValueError(f"{source}: weights must be finite, non-negative and not all zero, got {w}")
    w = torch.tensor(w, dtype=torch.float64)
    return w / w.sum()


# ----------------------------------------------------------------------------------------------------------
# The CLI: python -m minidp.ct_estimation INTERMEDIATES -o weights.json [--groups 10]
# ----------------------------------------------------------------------------------------------------------


def read_intermediates(path):
    """(Q (S, N) float64, timesteps (S,) long, info dict) from an intermediates JSON file; ValueError if bad."""
    data = _read_json(path, "intermediates file")
    if not isinstance(data, dict) or "Q" not in data or "timesteps" not in data:
        raise ValueError(f"{path} has no per-step metrics: expected a JSON object with 'timesteps' and 'Q' "
                         "(one list of N per-sample metrics per recorded step)")
    Q, ts = data["Q"], data["timesteps"]
    if (not isinstance(Q, list) or not Q or not all(isinstance(row, list) for row in Q)
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for row in Q for v in row)):
        raise ValueError(f"{path}: 'Q' must be a non-empty list of lists of numbers (S steps x N samples)")
    if len({len(row) for row in Q}) != 1:
        raise ValueError(f"{path}: the rows of 'Q' have different lengths {sorted({len(row) for row in Q})}; "
                         "every step needs the metric of the same N samples")
    if not isinstance(ts, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in ts):
        raise ValueError(f"{path}: 'timesteps' must be a list of integers")
    if len(ts) != len(Q):
        raise ValueError(f"{path}: 'timesteps' has {len(ts)} entries but 'Q' has {len(Q)} rows")
    info = {"metric": str(data.get("metric", "metric")), "higher_is_better": data.get("higher_is_better"),
            "T": data.get("T", 1000), "schedule": data.get("schedule", "linear")}
    if not isinstance(info["T"], int) or info["T"] < 2:
        raise ValueError(f"{path}: 'T' must be an integer >= 2, got {info['T']!r}")
    if info["schedule"] not in SCHEDULES:
        raise ValueError(f"{path}: unknown 'schedule' {info['schedule']!r}; valid: {', '.join(SCHEDULES)}")
    return torch.tensor(Q, dtype=torch.float64), torch.tensor(ts, dtype=torch.long), info


def plot_weights(curves, path, T=1000):
    """ADDP's Fig. A: weight per timestep group for each named (G,) vector in `curves`, to a PNG."""
    G = len(next(iter(curves.values())))
    centres = [(g + 0.5) * T / G for g in range(G)]  # x axis: the middle timestep of each group
    curves = {name: (centres, w) for name, w in curves.items()}
    curves["uniform"] = (centres, [1.0 / G] * G)  # the paper's dashed line
    viz.plot_curves(curves, path, xlabel="timestep group (t = 0 least noisy)", ylabel="sampling weight c_t^2",
                    title="contribution factors (ADDP Fig. A)")


def main(argv=None):
    p = ArgumentParser(prog="python -m minidp.ct_estimation",
                       description="Estimate ADDP's contribution factors c_t^2 from per-step metrics.")
    p.add_argument("intermediates", help="JSON with 'timesteps' (S) and 'Q' (S lists of N metrics), noisiest first")
    p.add_argument("-o", "--out", required=True, help="where to write weights.json")
    p.add_argument("--groups", type=int, default=10, help="timestep groups (default 10, the paper's)")
    p.add_argument("--floor", type=float, default=DEFAULT_FLOOR, help="least weight of a group (default 0.01)")
    p.add_argument("--figure", help="PNG comparing with the diffusion formula and the release "
                                    "(default: next to --out, .png)")
    args = p.parse_args(argv)
    try:
        Q, ts, info = read_intermediates(args.intermediates)
        weights = perception_ct2(Q, ts, args.groups, args.floor, info["T"])
        diffusion = diffusion_ct2(NoiseSchedule(info["schedule"], info["T"]).alpha_bar, args.groups)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    record = {"weights": weights.tolist(), "groups": args.groups, "T": info["T"], "floor": args.floor,
              "metric": info["metric"], "higher_is_better": info["higher_is_better"], "timesteps": ts.tolist(),
              "r2": nested_r2(Q).tolist(), "samples": Q.shape[1], "source": str(args.intermediates)}
    curves = {f"perception ({info['metric']})": weights.tolist(),
              f"diffusion formula ({info['schedule']})": diffusion.tolist()}
    if args.groups == 10:  # the release's vectors exist for 10 groups only
        curves.update({name: load_weights(name).tolist() for name in PRESETS})
    figure = Path(args.figure) if args.figure else out.with_suffix(".png")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n")
        plot_weights(curves, figure, info["T"])
    except OSError as e:  # --out or --figure under a file, in a folder this user cannot write, a full disk
        print(f"error: cannot write {e.filename or out} ({e.strerror or one_line(e)}); check -o/--out and --figure",
              file=sys.stderr)
        return 2
    print("c_t^2 by group (t = 0 first): " + " ".join(f"{w:.3f}" for w in weights.tolist()))
    print(f"wrote {out} and {figure}")
    return 0


# ----------------------------------------------------------------------------------------------------------
# Presets: the ADDP release's estimated weights (REFERENCE.md §6), and one of minidp's; index 0 = timesteps 0..99
# ----------------------------------------------------------------------------------------------------------

PRESETS = {
    "depth_release": [1, 1, 3, 7, 13, 14, 8, 4, 22, 33],  # Marigold on NYUv2, RMSE (A.2.1); sums to 106
    "ris_release": [1, 1, 1, 1, 1, 1, 1, 2, 4, 95],  # InstructPix2Pix on RefCOCO, IoU; sums to 108
    # not a release: minidp's depth quickstart (one step from t = 999), chosen by paired comparisons on 1024
    # validation scenes against depth_release (tutorial 04); 86 % of training at t >= 800; sums to 100
    "depth_quick": [1, 1, 1, 1, 2, 2, 2, 4, 16, 70],
}

if __name__ == "__main__":
    sys.exit(main())
