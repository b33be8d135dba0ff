"""Geometric median by the smoothed Weiszfeld algorithm (RFA).

Pillutla, Kakade & Harchaoui, "Robust Aggregation for Federated Learning", IEEE Trans.
Signal Processing 2022. The geometric median minimises sum_i alpha_i |v - x_i|; its
breakdown point is 1/2, so it tolerates f < n / 2 (n >= 2f + 1). The smoothed Weiszfeld
iteration is

    v <- sum_i beta_i x_i / sum_i beta_i,   beta_i = alpha_i / max(nu, |v - x_i|),

started at the coordinate-wise median and stopped when the objective improves by less
than ``ftol`` (relative) or after ``maxiter`` iterations. The smoothing nu keeps the weights
finite when v lands on an update.

The start matters for robustness: RFA starts at the mean, which f huge Byzantine updates
drag arbitrarily far; the objective is then dominated by their distances, its relative
decrease falls below ``ftol`` while v is still far from the honest updates, and the
iteration stops there (an output unbounded in the outliers' magnitude). The coordinate-wise
median lies within the honest range of every coordinate when f < n / 2, and Weiszfeld
steps never increase the objective, so the output stays near the honest updates.
"""

from __future__ import annotations

import numpy as np

from ._validate import CHUNK_COLUMNS, as_update_matrix, as_weights, check_f, raise_if_nonfinite
from .coordinate import coordinate_median
from .mean import weighted_mean
from .report import AggregationReport


def distances_to(X: np.ndarray, v: np.ndarray) -> np.ndarray:
    """|x_i - v| for every row, computed directly (no Gram trick), chunked.

    The differences are exact when x_i is within a factor two of v (Sterbenz), so nearly
    equal updates do not cancel; each chunk's sums of squares (positive terms: no
    cancellation either) run in X's precision and are accumulated across chunks in float64.
    A chunk whose float32 differences or squares overflow (entries beyond about 1e19) is
    redone in float64, so a huge but finite update gets its true, finite distance. Each
    row's distance depends on that row alone, never on the order of the rows.
    """
    n, d = X.shape
    sq = np.zeros(n)
    buf = np.empty((n, min(CHUNK_COLUMNS, d)), dtype=X.dtype)  # reused: no fresh pages per chunk
    with np.errstate(over="ignore", invalid="ignore"):
        for a in range(0, d, CHUNK_COLUMNS):
            block, centre = X[:, a : a + CHUNK_COLUMNS], v[a : a + CHUNK_COLUMNS]
            diff = buf[:, : block.shape[1]]
            np.subtract(block, centre, out=diff)
            part = np.einsum("ij,ij->i", diff, diff)
            if not np.isfinite(part).all():  # overflow, or a NaN / Inf in X (the caller checks)
                diff64 = block.astype(np.float64) - centre
                part = np.einsum("ij,ij->i", diff64, diff64)
            sq += part
    return np.sqrt(sq)


def geometric_median(
    updates,
    *,
    f: int = 0,
    weights=None,
    maxiter: int = 100,
    ftol: float = 1e-6,
    nu: float = 1e-6,
    return_report: bool = False,
):
    """Approximate (weighted) geometric median of the updates (n >= 2f + 1).

    Args:
        updates: (n, d) matrix of client updates.
        f: number of Byzantine clients to tolerate (only checked: n >= 2f + 1).
        weights: optional alpha_i (e.g. numbers of examples); uniform by default.
        maxiter: cap on Weiszfeld iterations.
        ftol: stop when the objective's relative decrease falls below it.
        nu: smoothing constant of the Weiszfeld weights.
        return_report: also return an :class:`AggregationReport` (final weights beta_i
            normalised to sum 1 in ``scores``; iterations and objective in ``details``).
    """
    X = as_update_matrix(updates, check_finite=False)  # a NaN / Inf row has a non-finite distance
    n = X.shape[0]
    check_f("geometric_median", n, f, a=2, b=1)
    alpha = as_weights(weights, n)
    alpha = np.full(n, 1.0 / n) if alpha is None else alpha / alpha.sum()
    v = coordinate_median(X)  # robust start (see the module docstring)
    dist = distances_to(X, v)
    if not np.isfinite(dist).all():
        raise_if_nonfinite(X)  # else a finite row too far for float32: its weight is 0
    objective = float(alpha @ dist)
    iterations = 0
    beta = alpha / np.maximum(nu, dist)
    for iterations in range(1, maxiter + 1):
        beta = alpha / np.maximum(nu, dist)
        v = weighted_mean(X, beta, float64=True)
        dist = distances_to(X, v)
        new_objective = float(alpha @ dist)
        converged = abs(objective - new_objective) <= ftol * max(new_objective, np.finfo(float).tiny)
        objective = new_objective
        if converged:
            break
    if return_report:
        return v, AggregationReport(
            "geometric_median", n, f, scores=beta / beta.sum(),
            details={"iterations": iterations, "objective": objective},
        )
    return v
