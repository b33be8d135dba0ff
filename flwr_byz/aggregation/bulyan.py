"""Bulyan.

El Mhamdi, Guerraoui & Rouault, "The Hidden Vulnerability of Distributed Learning in
Byzantium", ICML 2018, Algorithm 1 with Krum as the base rule A:

1. Selection: theta = n - 2f times, run Krum on the remaining set R and move its choice
   from R to the selection S (Krum is *re-applied* on the shrinking set, so scores change
   as updates leave R).
2. Aggregation: beta = theta - 2f; for every coordinate j, the output is the mean of the
   beta values of S closest to the median of S's values at j.

Needs n >= 4f + 3. Pairwise distances are computed once and re-used by every Krum call.

Flower's legacy ``flwr.server.strategy.Bulyan`` (``aggregate_bulyan`` with Krum) also
iterates Krum on the shrinking set, but recomputes all distances with a Python double loop
on every iteration (O(theta n^2 d) work); it selects the same set as this function (tested).
Flower's Message-API ``flwr.serverapp.strategy.Bulyan`` does *not* iterate: it scores all n
updates once and keeps the theta best of that single scoring, which can select a different
set than the paper's rule (tests/test_flower_parity.py shows such an input).
"""

from __future__ import annotations

import numpy as np

from ._validate import as_update_matrix, check_f, sorted_column_chunks
from .distances import pairwise_sq_distances
from .krum import krum_scores
from .report import AggregationReport


def iterated_krum_selection(D: np.ndarray, f: int, theta: int) -> list[int]:
    """Indices picked by theta successive Krum calls on the shrinking set (Bulyan step 1)."""
    remaining = list(range(D.shape[0]))
    chosen: list[int] = []
    for _ in range(theta):
        sub = D[np.ix_(remaining, remaining)]
        scores = krum_scores(sub, f)
        pick = remaining[int(np.argsort(scores, kind="stable")[0])]
        chosen.append(pick)
        remaining.remove(pick)
    return chosen


def _window_means(block: np.ndarray, lo: int, hi: int, beta: int) -> np.ndarray:
    """Per row of a row-sorted (c, theta) block, the mean of its ``beta`` values nearest the
    row's median, ties at equal distance going to the lower values.

    Those values are a window of beta consecutive sorted values. The leftmost candidate
    window ends at the lower middle position ``lo``; sliding it one step right swaps its
    lowest value for the next one above it, which pays exactly when the incoming value is
    strictly nearer the median than the outgoing one. That test holds for a prefix of the
    steps (the sum of the two values never decreases), so the window's start is the leftmost
    start plus the number of steps that pass. The window is then summed in float64 from its
    own values only (nothing is subtracted, so a huge value outside the window cannot drown
    the small ones inside it): the columns every candidate window holds in one slice, the
    others column by column where they fall inside the row's window.
    """
    theta = block.shape[1]
    med = 0.5 * (block[:, lo].astype(np.float64) + block[:, hi])
    i0, i1 = max(lo - beta + 1, 0), min(hi, theta - beta)  # first and last candidate starts
    start = np.full(block.shape[0], i0)
    for s in range(i0 + 1, i1 + 1):
        start += (block[:, s + beta - 1] - med) < (med - block[:, s - 1])
    core_lo, core_hi = i1, i0 + beta  # columns inside every candidate window
    if core_lo < core_hi:
        total = block[:, core_lo:core_hi].sum(axis=1, dtype=np.float64)
    else:
        total = np.zeros(block.shape[0])
    for j in range(i0, i1 + beta):
        if not core_lo <= j < core_hi:
            total += np.where((start <= j) & (j < start + beta), block[:, j], 0.0)
    return total / beta


def closest_to_median_mean(X: np.ndarray, rows, beta: int) -> np.ndarray:
    """Per coordinate, the mean of the beta values of X[rows] closest to their median
    (ties at equal distance: the lower values).

    Per column chunk, the selected rows are copied transposed (one contiguous row per
    coordinate) and each row is sorted (:func:`sorted_column_chunks`); :func:`_window_means` then
    finds and averages the window of the beta nearest values.
    """
    rows = np.sort(np.asarray(rows))
    theta = rows.size
    out = np.empty(X.shape[1], dtype=X.dtype)
    lo, hi = (theta - 1) // 2, theta // 2  # the middle positions (equal for odd theta)
    for a, block in sorted_column_chunks(X, rows):
        out[a : a + len(block)] = _window_means(block, lo, hi, beta)
    return out


def bulyan(updates, *, f: int, return_report: bool = False):
    """Bulyan over Krum (n >= 4f + 3), as defined by El Mhamdi et al. (2018).

    Args:
        updates: (n, d) matrix of client updates.
        f: number of Byzantine clients to tolerate.
        return_report: also return an :class:`AggregationReport` (the theta selected indices
            in selection order; ``details`` holds theta and beta).
    """
    X = as_update_matrix(updates, check_finite=False)  # the Gram matrix checks
    n = X.shape[0]
    check_f("bulyan", n, f, a=4, b=3)
    theta = n - 2 * f
    beta = theta - 2 * f
    chosen = iterated_krum_selection(pairwise_sq_distances(X), f, theta)
    agg = closest_to_median_mean(X, chosen, beta)
    if return_report:
        return agg, AggregationReport(
            "bulyan", n, f, selected=chosen, details={"theta": theta, "beta": beta}
        )
    return agg
