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
contents (weight, distance to the start, then the rows' bytes for ties), not by their
positions. A stopping test on an order-dependent rounding could otherwise end the
iteration one step earlier for one ordering of the same clients than for another.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
from scipy.linalg.blas import get_blas_funcs

from ._validate import as_update_matrix, as_weights, raise_if_nonfinite
from .backend import is_tensor, rows_equal, to_numpy
from .kernels import coordinate_median
from .distances import ROW_STEP, distances_to
from .registry import check_bound, register_rule
from .report import AggregationReport


def _content_order(X: np.ndarray, alpha: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """A row order fixed by the rows' contents, not their positions: by weight, then by
    distance to the start; rows tied on both by content (see :func:`_by_content`)."""
    order = np.lexsort((dist, alpha))
    out, i, n = [], 0, len(order)
    while i < n:
        j = i + 1
        while j < n and alpha[order[j]] == alpha[order[i]] and dist[order[j]] == dist[order[i]]:
            j += 1
        out.extend(order[i:j] if j == i + 1 else _by_content(X, order[i:j]))
        i = j
    return np.asarray(out, dtype=np.intp)


def _by_content(X: np.ndarray, rows) -> list:
    """``rows`` (of equal weight) grouped into classes of bit-identical rows, compared in
    full, and the classes ordered by a BLAKE2 digest of their bytes. Within a class the order
    is positional, and harmless: swapping two identical terms of equal weight does not change
    a sum. (Distinct rows tied on weight and distance are not rare: one ulp apart in a few
    coordinates, or huge rows whose distances round alike.)"""
    classes: list[list[int]] = []
    for r in rows:
        for members in classes:
            if rows_equal(X, members[0], int(r)):
                members.append(int(r))
                break
        else:
            classes.append([int(r)])
    if len(classes) > 1:
        classes.sort(key=lambda members: hashlib.blake2b(memoryview(to_numpy(X[members[0]])),
                                                         digest_size=16).digest())
    return [r for members in classes for r in members]


def _weighted_sum(X: np.ndarray, w: np.ndarray, order: np.ndarray) -> np.ndarray:
    """sum_i w_i x_i in X's precision, adding the rows in ``order`` (BLAS axpy, in steps of
    columns so that the partial sum stays in cache): the same bits for the same set of
    (row, weight) pairs, whatever their positions in X. On a tensor X: one in-place
    ``add_`` per row on its device, in the same order."""
    if is_tensor(X):
        import torch

        out = torch.zeros(X.shape[1], dtype=X.dtype, device=X.device)
        for i in order:
            out.add_(X[int(i)], alpha=float(w[i]))
        return out
    axpy = get_blas_funcs("axpy", (X,))
    out = np.zeros(X.shape[1], dtype=X.dtype)
    for a in range(0, X.shape[1], ROW_STEP):
        acc = out[a : a + ROW_STEP]
        for i in order:
            acc = axpy(X[i, a : a + ROW_STEP], acc, a=w[i])
        out[a : a + ROW_STEP] = acc  # axpy updates acc in place; this is then a no-op copy
    return out


def _objective(alpha: np.ndarray, dist: np.ndarray) -> float:
    """sum_i alpha_i |v - x_i|, exactly rounded (order-independent). A row too far for the
    floats (distance inf; possible only for float64 input beyond ~1e154) has weight 0 in the
    iteration and is left out here, so that the stopping test compares finite numbers."""
    finite = np.isfinite(dist)
    return math.fsum(alpha[finite] * dist[finite])


@register_rule("geometric_median", tensor_native=True, cost="O(T n d), T Weiszfeld steps", bound=(2, 1), aliases=("rfa",),
               paper="Pillutla, Kakade & Harchaoui, IEEE Trans. Signal Processing 2022 (RFA)")
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
    check_bound("geometric_median", n, f)
    alpha = as_weights(weights, n)
    alpha = np.ones(n) if alpha is None else alpha
    alpha = alpha / math.fsum(alpha)
    v = coordinate_median(X)  # robust start (see the module docstring)
    dist = distances_to(X, v)
    raise_if_nonfinite(X, dist)  # a finite row too far for float32 passes: its weight is 0
    order = _content_order(X, alpha, dist)
    objective = _objective(alpha, dist)
    iterations = 0
    beta = alpha / np.maximum(nu, dist)
    for iterations in range(1, maxiter + 1):
        beta = alpha / np.maximum(nu, dist)
        v = _weighted_sum(X, beta / math.fsum(beta), order)
        dist = distances_to(X, v)
        new_objective = _objective(alpha, dist)
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
