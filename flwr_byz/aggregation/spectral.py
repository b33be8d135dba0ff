"""Rules that bound the spread of the averaged updates by the largest eigenvalue of their
covariance: SMEA and CAF.

- SMEA, smallest maximum eigenvalue averaging: Allouah, Guerraoui, Gupta, Pinot & Stephan,
  "On the Privacy-Robustness-Utility Trilemma in Distributed Learning", ICML 2023.
- CAF, the covariance-bound agnostic filter: Allouah, Guerraoui & Stephan, "Towards
  Trustworthy Federated Learning with Untrusted Participants", ICML 2025.

Both need the top eigenvalue of a (weighted) covariance of d-dimensional updates. Its
nonzero eigenvalues are those of an n x n matrix: with weights w (sum 1), mean
mu = sum_i w_i x_i and Y the rows x_i - mu, the covariance Y^T W Y has the eigenvalues of
W^(1/2) K W^(1/2), where K = Y Y^T is the centred Gram matrix. K follows from the pairwise
squared distances D alone (weighted double centring, the identity of classical
multidimensional scaling):

    K_ij = -1/2 (D_ij - r_i - r_j + s),   r_i = sum_k w_k D_ik,   s = sum_k w_k r_k.

So one careful distance matrix (:func:`~flwr_byz.aggregation.pairwise_sq_distances`, no
float32 cancellation on nearly equal updates) gives every eigenvalue exactly (LAPACK on an
n x n matrix), where ByzFL runs one power-method step from a random start.
"""

from __future__ import annotations

import math

import numpy as np

from ._validate import as_update_matrix
from .distances import pairwise_sq_distances
from .mda import MAX_SUBSETS, subset_batches
from .mean import subset_mean, weighted_mean
from .registry import check_bound, register_rule
from .report import AggregationReport


def centred_gram(D: np.ndarray, w: np.ndarray) -> np.ndarray:
    """K_ij = <x_i - mu, x_j - mu> with mu = sum_k w_k x_k, from squared distances D (n, n)
    and weights w (n,) summing to 1 (float64; see the module docstring)."""
    r = D @ w
    return -0.5 * (D - r[:, None] - r[None, :] + w @ r)


def scaled(D: np.ndarray) -> tuple[np.ndarray, float]:
    """(D / s, s) with every entry of D / s in [0, 1]: squared distances beyond float64's
    range (an update near 1e154) are capped first, so that the eigenproblems below see no
    inf and no overflow whatever a client sends. The eigenvalues of a matrix built from D
    scale with s, its eigenvectors do not."""
    D = np.nan_to_num(D, nan=0.0, posinf=np.finfo(np.float64).max / (16.0 * max(D.shape[0], 1) ** 2))
    top = float(D.max()) if D.size else 0.0
    return (D / top, top) if top > 0 else (D, 1.0)


def top_eigen(D: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray]:
    """(lambda_max, projections): the largest eigenvalue of the w-weighted covariance of the
    points behind D (w >= 0, summing to 1), and each weighted point's projection
    (x_i - mu) . v on the unit top eigenvector v (0 for the points of weight 0, which have
    no part in mu or the covariance; zeros everywhere when lambda_max is 0)."""
    on = np.flatnonzero(w > 0)
    Dw, scale = scaled(D[np.ix_(on, on)])
    K = centred_gram(Dw, w[on])
    root = np.sqrt(w[on])
    values, vectors = np.linalg.eigh(root[:, None] * K * root[None, :])
    lam, u = float(values[-1]), vectors[:, -1]
    proj = np.zeros(D.shape[0])
    if not lam > 0:
        return 0.0, proj
    # v = Y^T W^(1/2) u / sqrt(lam), so Y v = K W^(1/2) u / sqrt(lam)
    proj[on] = K @ (root * u) / math.sqrt(lam) * math.sqrt(scale)
    return lam * scale, proj


@register_rule("smea", cost="O(n^2 d + C(n, f) (n - f)^3)", bound=(2, 1), aliases=("smallest_maximum_eigenvalue_averaging",), strategy="SMEA",
               paper="Allouah, Guerraoui, Gupta, Pinot & Stephan, ICML 2023")
def smea(updates, *, f: int, return_report: bool = False):
    """SMEA: the mean of the n - f updates whose empirical covariance
    (1 / (n - f)) sum_{i in S} (x_i - mu_S)(x_i - mu_S)^T has the smallest largest
    eigenvalue (n >= 2f + 1).

    Exact: all C(n, f) subsets are scored, each by the eigenvalues of its (n - f) x (n - f)
    centred Gram matrix taken from one pairwise-distance matrix, O(n^2 d + C(n, f) (n - f)^3).
    Refuses with ``ValueError`` past :data:`~flwr_byz.aggregation.mda.MAX_SUBSETS` subsets
    (no silent approximation). Ties go to the first subset in lexicographic order of its
    indices (eigenvalues within a relative 1e-9 count as equal: equal covariances differ in
    their last bits with the order of their rows). ByzFL's ``SMEA`` estimates each eigenvalue with one power-method step from a
    random vector, so it agrees with this rule where that step is exact (d = 1).

    Args:
        updates: (n, d) matrix of client updates.
        f: number of Byzantine clients to tolerate.
        return_report: also return an :class:`AggregationReport` (selected indices; the
            smallest largest eigenvalue in ``details``).
    """
    X = as_update_matrix(updates, check_finite=False)  # the Gram matrix checks
    n = X.shape[0]
    check_bound("smea", n, f)
    total = math.comb(n, f)
    if total > MAX_SUBSETS:
        raise ValueError(f"smea: exact search over C({n}, {f}) = {total:.3g} subsets exceeds {MAX_SUBSETS:,}; "
                         f"use fewer clients per round, a smaller f, or another rule (caf approximates it)")
    D, unit = scaled(pairwise_sq_distances(X))  # in [0, 1]: no overflow; eigenvalues scale by unit
    k = n - f
    J = np.eye(k) - 1.0 / k  # centring matrix: K_S = -1/2 J D_S J
    floor = 1e-12 * float(D.max()) / k

    def slack(value: float) -> float:
        return 1e-9 * abs(value) + floor if np.isfinite(value) else 0.0

    best, selected = np.inf, np.arange(k)
    for batch in subset_batches(n, k, 512):
        DS = D[batch[:, :, None], batch[:, None, :]]
        size = DS.max(axis=(1, 2))[:, None, None]  # each subset scaled to [0, 1]: no overflow
        size = np.where(size > 0, size, 1.0)
        top = np.linalg.eigvalsh(-0.5 * J @ (DS / size) @ J)[:, -1] * size[:, 0, 0] / k
        # eigenvalues of equal covariances differ in their last bits with the order of the
        # rows: values within ``slack`` of the minimum tie, and the first subset wins
        i = int(np.argmax(top <= top.min() + slack(top.min())))
        if top[i] < best - slack(best):
            best, selected = float(top[i]), batch[i]
    agg = subset_mean(X, selected)
    if return_report:
        return agg, AggregationReport("smea", n, f, selected=selected.tolist(),
                                      details={"max_eigenvalue": max(best, 0.0) * unit})
    return agg


@register_rule("caf", cost="O(n^2 d + n^4)", bound=(2, 1), aliases=("covariance_bound_agnostic_filter",), strategy="CAF",
               paper="Allouah, Guerraoui & Stephan, ICML 2025")
def caf(updates, *, f: int, return_report: bool = False):
    """CAF, the covariance-bound agnostic filter (n >= 2f + 1).

    Starting from weights c_i = 1, while sum_i c_i > n - 2f: take the c-weighted mean mu_c
    and the top eigenpair (lambda, v) of the c-weighted covariance
    sum_i c_i (x_i - mu_c)(x_i - mu_c)^T / sum_i c_i, score tau_i = ((x_i - mu_c) . v)^2 and
    downweight c_i <- c_i (1 - tau_i / max_j tau_j). Returns the mu_c of the smallest lambda
    seen (the first on ties). A step with lambda = 0 (the weighted updates coincide) ends
    the loop with that mean.

    The max is taken over the updates that still carry weight. The algorithm as written
    (and ByzFL) takes it over all n: an update already at weight 0 has no say in mu_c or
    the covariance, but if it stays the farthest it keeps setting the scale, and the other
    weights then shrink by factors near 1 for as many steps as its distance allows (one
    update at 1e10 makes the loop practically endless: a denial of service). Over the
    weighted updates each step zeroes at least one weight, so at most n steps, each O(n^3)
    on the n x n Gram matrix after one O(n^2 d) distance matrix; the two agree whenever the
    farthest update is still weighted.

    ByzFL's ``CAF`` also takes (lambda, v) from one power-method step from a random vector
    (here: the exact top eigenpair).

    Args:
        updates: (n, d) matrix of client updates.
        f: number of Byzantine clients to tolerate.
        return_report: also return an :class:`AggregationReport` (the final weights of the
            chosen step as ``scores``; its eigenvalue and the number of steps in ``details``).
    """
    X = as_update_matrix(updates, check_finite=False)  # the Gram matrix checks
    n = X.shape[0]
    check_bound("caf", n, f)
    D = pairwise_sq_distances(X)
    c = np.ones(n)
    best, best_c, steps = np.inf, c, 0
    while c.sum() > n - 2 * f:
        steps += 1
        lam, proj = top_eigen(D, c / c.sum())
        if lam < best:
            best, best_c = lam, c.copy()
        tau = proj**2  # 0 for the updates at weight 0
        top = tau[c > 0].max()  # over the updates still weighted (see the docstring)
        if not top > 0:
            break
        c = np.maximum(c * (1.0 - tau / top), 0.0)
    agg = weighted_mean(X, best_c)
    if return_report:
        return agg, AggregationReport("caf", n, f, scores=best_c / best_c.sum(),
                                      details={"max_eigenvalue": 0.0 if best == np.inf else best, "steps": steps})
    return agg
