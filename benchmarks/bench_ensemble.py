"""Median compilation: minidp's torch LBFGS (autograd) against Marigold's way, scipy BFGS with finite differences.

Both minimise the same objective (minidp/ensemble.py's, written again here in numpy float64) from the same
start (each member's min/max mapped to [0, 1]) with Marigold's newest settings (max_iter 50, tol 1e-6), on
M = 10 members of one 128 x 128 depth map; each member is a random affine map of the truth plus 1 % noise.
Reported: wall time of each fit, the speed ratio, both final costs and how far each merged map is from the
truth (RMSE after min-max normalisation). Two extra runs show why minidp's objective divides the pairwise
term by the merged map's range: the same BFGS on Marigold's bare objective in float64 collapses the members
(cost -> regularizer, merged map -> noise), and in float32, as Marigold runs it, it barely leaves the start.

Why it is faster: exact autograd gradients instead of 2M + 1 cost evaluations per gradient, and a cost whose
pairwise term comes from the members' covariance (computed once per evaluation by one matmul) instead of
M(M-1)/2 passes over the pixels.

Run: python benchmarks/bench_ensemble.py          (CPU, about 10-20 s; headline figures are the last 3 lines)
"""

import itertools
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without `pip install -e .`
from minidp.ensemble import compilation_cost, compilation_fit, compilation_init, ensemble_median

try:
    import scipy.optimize
except ImportError:  # the benchmark's reference needs scipy; minidp itself does not
    scipy = None

NUM_MEMBERS, SIZE, NOISE, REGULARIZER = 10, 128, 0.01, 0.02
MAX_ITER, TOL = 50, 1e-6  # Marigold's newest defaults, used by both optimisers


def make_members(seed=0):
    """Truth (1, H, W) and members (M, 1, H, W) = s_i * (truth + noise) + t_i, s_i in [0.5, 2.5]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")
    truth = (1 + yy + 0.3 * torch.sin(5 * xx) + 0.2 * (xx - 0.5) ** 2)[None]
    scale = 0.5 + 2 * torch.rand(NUM_MEMBERS, 1, 1, 1, generator=g)
    shift = torch.randn(NUM_MEMBERS, 1, 1, 1, generator=g)
    noise = NOISE * torch.randn(NUM_MEMBERS, 1, SIZE, SIZE, generator=g)
    return truth, scale * (truth + noise) + shift


def numpy_cost(params, x, scale_invariant=True, dtype=np.float64):
    """The objective for one image, x (M, P); params = [s_1..s_M, t_1..t_M]. scale_invariant=False is Marigold's."""
    m = x.shape[0]
    s, t = params[:m, None].astype(dtype), params[m:, None].astype(dtype)
    aligned = s * x.astype(dtype) + t  # (M, P)
    merged = np.partition(aligned, (m - 1) // 2, axis=0)[(m - 1) // 2]  # lower median, as torch.median
    pairwise = sum(np.sqrt(np.mean((aligned[i] - aligned[j]) ** 2)) for i, j in itertools.combinations(range(m), 2))
    lo, hi = merged.min(), merged.max()
    if scale_invariant:
        pairwise = pairwise / max(hi - lo, 1e-6)
    return float(pairwise + REGULARIZER * (abs(0 - lo) + abs(1 - hi)))


def merged_rmse(members, scale, shift, truth):
    """RMSE between the min-max-normalised median of the aligned members and the normalised truth."""
    aligned = scale[:, :, None, None] * members + shift[:, :, None, None]
    merged = ensemble_median(aligned)
    norm = lambda d: (d - d.min()) / (d.max() - d.min())  # noqa: E731
    return (norm(merged) - norm(truth)).square().mean().sqrt().item()


def scipy_fit(x, start, **cost_kwargs):
    """Marigold's solver: scipy BFGS, gradients by finite differences (2M + 1 cost evaluations each)."""
    tic = time.perf_counter()
    res = scipy.optimize.minimize(
        lambda p: numpy_cost(p, x, **cost_kwargs), start, method="BFGS", tol=TOL, options={"maxiter": MAX_ITER}
    )
    return res, time.perf_counter() - tic


def as_params(res, m):
    p = torch.from_numpy(res.x).float()
    return p[:m, None], p[m:, None]  # (M, 1) each, as minidp's (M, B) with B = 1


def main():
    # One thread, like scipy's BFGS loop, so the ratio compares the algorithms, not core counts (and is not
    # at the mercy of OpenMP wake-ups on a busy machine, which cost milliseconds per op).
    torch.set_num_threads(1)
    truth, members = make_members()
    m = NUM_MEMBERS
    print(f"problem: {m} members of a {SIZE}x{SIZE} map, noise {NOISE}, regularizer {REGULARIZER}, "
          f"max_iter {MAX_ITER}, tol {TOL}, torch {torch.__version__}, 1 thread")

    compilation_fit(members[:, :, :8, :8])  # warm-up: the first torch.optim use imports torch._dynamo (~2 s)
    tic = time.perf_counter()
    scale, shift = compilation_fit(members, max_iter=MAX_ITER, tol=TOL)
    torch_time = time.perf_counter() - tic
    x = members[:, 0].flatten(1).double().numpy()  # (M, P)
    torch_cost = numpy_cost(torch.cat([scale[:, 0], shift[:, 0]]).double().numpy(), x)
    s0, t0 = compilation_init(members)
    start = torch.cat([s0[:, 0], t0[:, 0]]).double().numpy()
    minidp_start = compilation_cost(members, s0, t0).item()  # cross-check of the numpy copy of the objective
    print(f"start: cost {numpy_cost(start, x):.5f} (minidp's compilation_cost: {minidp_start:.5f}), "
          f"merged RMSE {merged_rmse(members, s0, t0, truth):.5f}")
    print(f"torch LBFGS: {torch_time:.3f} s, cost {torch_cost:.5f}, "
          f"merged RMSE {merged_rmse(members, scale, shift, truth):.5f}")

    if scipy is None:
        print("scipy is not installed: skipping the BFGS reference (pip install scipy to run it)")
        return

    res, scipy_time = scipy_fit(x, start)
    print(f"scipy BFGS (finite differences, float64): {scipy_time:.3f} s, {res.nit} iterations, {res.nfev} cost "
          f"evaluations, cost {res.fun:.5f}, merged RMSE {merged_rmse(members, *as_params(res, m), truth):.5f}")

    # Marigold's bare objective (no division by range): a real optimiser finds the collapsed minimum.
    bare, _ = scipy_fit(x, start, scale_invariant=False)
    s_bare, t_bare = as_params(bare, m)
    spread = (s_bare[:, :, None, None] * members + t_bare[:, :, None, None]).std().item()
    print(f"Marigold's bare objective, scipy BFGS float64: cost {numpy_cost(start, x, False):.5f} -> {bare.fun:.5f} "
          f"(regularizer {REGULARIZER}), aligned members' std {spread:.2e}, "
          f"merged RMSE {merged_rmse(members, s_bare, t_bare, truth):.5f}")
    # ... and in float32, as Marigold evaluates it: 1.5e-8 finite-difference steps are below float32 resolution.
    bare32, _ = scipy_fit(x, start, scale_invariant=False, dtype=np.float32)
    print(f"Marigold's bare objective, scipy BFGS float32 (as released): {bare32.nit} iterations, cost "
          f"{numpy_cost(start, x, False, np.float32):.5f} -> {bare32.fun:.5f}, largest parameter change "
          f"{np.abs(bare32.x - start).max():.2e}")

    print(f"median_compilation_speedup: {scipy_time / torch_time:.2f}")
    print(f"median_compilation_cost: {torch_cost:.5f}")
    print(f"scipy_bfgs_cost: {res.fun:.5f}")


if __name__ == "__main__":
    main()
