"""Coordinate-wise rules: median and trimmed mean.

Yin, Chen, Ramchandran & Bartlett, "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates", ICML 2018. Both act on every coordinate independently; both sort
column chunks along contiguous rows of a transposed copy (memory bounded by the chunk; see
``sorted_column_chunks`` for why a sort rather than a partition).
"""

from __future__ import annotations

import numpy as np

from ._validate import as_update_matrix, check_f, sorted_column_chunks
from .report import AggregationReport


def coordinate_median(X: np.ndarray) -> np.ndarray:
    """Coordinate-wise median of the rows of an already validated matrix (chunked)."""
    n, d = X.shape
    out = np.empty(d, dtype=X.dtype)
    lo, hi = (n - 1) // 2, n // 2
    for a, part in sorted_column_chunks(X):
        if lo == hi:
            out[a : a + len(part)] = part[:, hi]
        else:  # even n: the mean of the two middle values
            out[a : a + len(part)] = 0.5 * (part[:, lo].astype(np.float64) + part[:, hi])
    return out


def median(updates, *, f: int = 0, return_report: bool = False):
    """Coordinate-wise median.

    Each output coordinate is the median of the n clients' values for it (the mean of the
    two middle values when n is even). Tolerates f < n / 2 arbitrary updates: with
    ``n >= 2f + 1`` every output coordinate lies within the range of the honest values.

    Args:
        updates: (n, d) matrix of client updates.
        f: number of Byzantine clients to tolerate (only checked: n >= 2f + 1).
        return_report: also return an :class:`AggregationReport`.
    """
    X = as_update_matrix(updates)
    n = X.shape[0]
    check_f("median", n, f, a=2, b=1)
    agg = coordinate_median(X)
    return (agg, AggregationReport("median", n, f)) if return_report else agg


def trimmed_mean(updates, *, f: int, return_report: bool = False):
    """Coordinate-wise trimmed mean: drop the f largest and f smallest values, average the rest.

    Yin et al. (2018), beta-trimmed mean with beta = f / n. Needs n >= 2f + 1 so that at
    least one value survives; every output coordinate then lies within the range of the
    honest values. Same as Flower's ``FedTrimmedAvg(beta=f / n)`` (checked in the tests).

    Args:
        updates: (n, d) matrix of client updates.
        f: number of values trimmed on each side of every coordinate.
        return_report: also return an :class:`AggregationReport`.
    """
    X = as_update_matrix(updates)
    n, d = X.shape
    check_f("trimmed_mean", n, f, a=2, b=1)
    if f == 0:
        agg = X.mean(axis=0, dtype=np.float64).astype(X.dtype)
    else:
        agg = np.empty(d, dtype=X.dtype)
        for a, part in sorted_column_chunks(X):
            agg[a : a + len(part)] = part[:, f : n - f].mean(axis=1, dtype=np.float64)
    return (agg, AggregationReport("trimmed_mean", n, f, details={"trimmed_per_side": f})) if return_report else agg
