"""The (weighted) mean: FedAvg's rule, the non-robust baseline.

McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized
Data", AISTATS 2017. Tolerates no Byzantine client: a single arbitrary update moves the
mean arbitrarily far (breakdown point 0), so ``f`` must be 0.
"""

from __future__ import annotations

import numpy as np

from ._validate import CHUNK_COLUMNS, as_update_matrix, as_weights, check_f
from .report import AggregationReport


def weighted_mean(X: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Mean of the rows of X (weighted by w when given), accumulated in float64.

    Float32 accumulation would lose the relative accuracy of a mean that is small next to
    its terms (nearly cancelling updates); ``einsum`` with a float64 accumulator keeps it at
    a fifth of the cost of converting column chunks to float64 (benchmarks/README.md).
    """
    n, d = X.shape
    w = np.full(n, 1.0 / n) if w is None else np.asarray(w, dtype=np.float64) / np.sum(w)
    out = np.empty(d, dtype=X.dtype)
    for a in range(0, d, CHUNK_COLUMNS):
        out[a : a + CHUNK_COLUMNS] = np.einsum("i,ij->j", w, X[:, a : a + CHUNK_COLUMNS], dtype=np.float64)
    return out


def mean(updates, *, weights=None, f: int = 0, return_report: bool = False):
    """Coordinate-wise (weighted) mean of the n updates.

    Args:
        updates: (n, d) matrix of client updates.
        weights: optional per-client weights (FedAvg uses the numbers of examples).
        f: must be 0; the mean has no Byzantine tolerance.
        return_report: also return an :class:`AggregationReport`.
    """
    X = as_update_matrix(updates)
    n = X.shape[0]
    if f != 0:
        check_f("mean", n, f, minimum_n=n + 1, formula="(no tolerance: f must be 0)")
    w = as_weights(weights, n)
    agg = weighted_mean(X, w)
    if return_report:
        return agg, AggregationReport("mean", n, f, selected=list(range(n)))
    return agg
