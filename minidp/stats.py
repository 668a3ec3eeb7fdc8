"""Placeholder for the statistics module (another branch writes the real one): only `bootstrap_ci`, with the
signature the full module exports, so that minidp/protocol.py and its tests run on this branch.

The merge takes the other branch's file; nothing here should outlive it.
"""

import numpy as np


def bootstrap_ci(values, stat=np.mean, n_boot=2000, level=0.95, seed=0):
    """Percentile bootstrap interval (lo, hi) of stat(values) over the first axis; rows holding a NaN are dropped."""
    values = np.asarray(values, dtype=np.float64)
    rows = values.reshape(len(values), -1)  # (N, ...) -> (N, F)
    values = values[~np.isnan(rows).any(axis=1)]
    if len(values) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(values), size=(n_boot, len(values)))  # (n_boot, N) resampled rows
    boots = np.array([stat(values[p]) for p in picks])
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha])
    return float(lo), float(hi)
