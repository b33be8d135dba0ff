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

Each iteration reads X twice (the weighted sum, then the distances to it), both in X's
precision. The result does not depend on the order of the clients, to the bit: the
distances are computed row by row, the sums of weights and of the objective are exactly
rounded (``math.fsum``), and the weighted sum adds the rows in an order fixed by their
contents (weight, distance to the start, a random projection for ties), not by their
positions. A stopping test on an order-dependent rounding could otherwise end the
iteration one step earlier for one ordering of the same clients than for another.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.linalg.blas import get_blas_funcs

from ._validate import as_update_matrix, as_weights, check_f, raise_if_nonfinite
from .coordinate import coordinate_median
from .report import AggregationReport

# Columns per step of the row-by-row kernels below: a float32 slice of v (and of the partial
# sum) this long stays in the CPU caches while the rows stream past it.
ROW_STEP = 250_000


def distances_to(X: np.ndarray, v: np.ndarray) -> np.ndarray:
    """|x_i - v| for every row, computed directly (no Gram trick), row by row.

    The differences are exact when x_i is within a factor two of v (Sterbenz), so nearly
    equal updates do not cancel; each step's sum of squares (positive terms: no
    cancellation either) runs in X's precision (a BLAS dot) and the steps are accumulated
    in float64. A step whose float32 differences or squares overflow (entries beyond about
    1e19) is redone in float64, so a huge but finite update gets its true, finite distance.
    Each row's distance depends on that row alone, never on the other rows or their order.
    """
    n, d = X.shape
    sq = np.zeros(n)
    step = min(ROW_STEP, d)
    buf = np.empty(step, dtype=X.dtype)  # reused: no fresh pages per row
    with np.errstate(over="ignore", invalid="ignore"):
        for a in range(0, d, step):
            centre = v[a : a + step]
            diff = buf[: centre.shape[0]]
            for i in range(n):
                np.subtract(X[i, a : a + step], centre, out=diff)
                part = float(np.dot(diff, diff))
                if not math.isfinite(part):  # overflow, or a NaN / Inf in X (the caller checks)
                    diff64 = X[i, a : a + step].astype(np.float64) - centre
                    part = float(np.dot(diff64, diff64))
                sq[i] += part
    return np.sqrt(sq)


def _content_order(X: np.ndarray, alpha: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """A row order fixed by the rows' contents: by weight, then by distance to the start;
    rows tied on both by their projection on a fixed random direction. Rows tied on all
    three are, but for a measure-zero coincidence, identical rows of equal weight, whose
    order does not change a sum."""
    order = np.lexsort((dist, alpha))
    key = np.stack([alpha[order], dist[order]], axis=1)
    tied = np.zeros(len(order), dtype=bool)
    same_as_next = np.all(key[1:] == key[:-1], axis=1)
    tied[1:] |= same_as_next
    tied[:-1] |= same_as_next
    if not tied.any():
        return order
    direction = np.random.default_rng(0x5EED).standard_normal(X.shape[1]).astype(X.dtype)
    probe = np.zeros(len(order))
    probe[order[tied]] = [float(np.dot(X[i], direction)) for i in order[tied]]
    return np.lexsort((probe, dist, alpha))


def _weighted_sum(X: np.ndarray, w: np.ndarray, order: np.ndarray) -> np.ndarray:
    """sum_i w_i x_i in X's precision, adding the rows in ``order`` (BLAS axpy, in steps of
    columns so that the partial sum stays in cache): the same bits for the same set of
    (row, weight) pairs, whatever their positions in X."""
    n, d = X.shape
    axpy = get_blas_funcs("axpy", (X,))
    out = np.zeros(d, dtype=X.dtype)
    for a in range(0, d, ROW_STEP):
        acc = out[a : a + ROW_STEP]
        for i in order:
            acc = axpy(X[i, a : a + ROW_STEP], acc, a=w[i])
        out[a : a + ROW_STEP] = acc  # axpy updates acc in place; this is then a no-op copy
    return out


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
    alpha = np.ones(n) if alpha is None else alpha
    alpha = alpha / math.fsum(alpha)
    v = coordinate_median(X)  # robust start (see the module docstring)
    dist = distances_to(X, v)
    raise_if_nonfinite(X, dist)  # a finite row too far for float32 passes: its weight is 0
    order = _content_order(X, alpha, dist)
    objective = math.fsum(alpha * dist)
    iterations = 0
    beta = alpha / np.maximum(nu, dist)
    for iterations in range(1, maxiter + 1):
        beta = alpha / np.maximum(nu, dist)
        v = _weighted_sum(X, beta / math.fsum(beta), order)
        dist = distances_to(X, v)
        new_objective = math.fsum(alpha * dist)
        converged = abs(objective - new_objective) <= ftol * max(new_objective, np.finfo(float).tiny)
        objective = new_objective
        if converged:
            break
    if return_report:
        return v, AggregationReport(
            "geometric_median", n, f, scores=beta / math.fsum(beta),
            details={"iterations": iterations, "objective": objective},
        )
    return v
