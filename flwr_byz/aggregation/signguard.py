"""SignGuard.

Xu, Huang, Zhang, Zhao & Wu, "SignGuard: Byzantine-robust Federated Learning through
Collaborative Malicious Gradient Filtering", ICDCS 2022. Two filters, and the updates that
pass both are clipped to the median norm and averaged:

1. norm filter: keep update i when L <= |x_i| / M <= R (M the median norm; L = 0.1,
   R = 3.0 as in the paper);
2. sign filter: on a random subset of the coordinates, each update's fractions of
   positive, zero and negative entries; MeanShift clustering of those features
   (scikit-learn, bandwidth estimated at quantile 0.5, bin seeding, outliers left
   unassigned, as in the authors' code); the largest cluster is kept.

Conventions of the peers: Blades clusters the sign fractions of *all* coordinates with
k-means (k = 2) and clips before the norm filter; FLPoison defaults to DBSCAN on a
contiguous block of 10% of the coordinates. Here the coordinates are a uniformly random
subset, drawn from ``seed``.
"""

from __future__ import annotations

import math

import numpy as np

from ._validate import CHUNK_COLUMNS, as_update_matrix, raise_if_nonfinite
from .distances import distances_to
from .mean import subset_mean
from .registry import check_bound, register_rule
from .report import AggregationReport


def sign_features(X: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(n, 3) fractions of positive, zero and negative entries of each row on ``cols``."""
    F = np.zeros((X.shape[0], 3))
    for a in range(0, cols.size, CHUNK_COLUMNS):
        block = X[:, cols[a : a + CHUNK_COLUMNS]]
        F[:, 0] += (block > 0).sum(axis=1)
        F[:, 2] += (block < 0).sum(axis=1)
    F[:, 1] = cols.size - F[:, 0] - F[:, 2]
    return F / cols.size


def largest_meanshift_cluster(F: np.ndarray) -> np.ndarray:
    """Indices (sorted) of the largest MeanShift cluster of the rows of F (ties: the denser
    cluster, which MeanShift numbers first). Rows left unassigned are never kept."""
    from sklearn.cluster import MeanShift, estimate_bandwidth

    n = F.shape[0]
    if n < 2 or np.all(F == F[0]):
        return np.arange(n)
    bandwidth = estimate_bandwidth(F, quantile=0.5)  # all rows: no sampling, order-free
    spread = float(np.abs(F - F.mean(axis=0)).max())
    bandwidth = max(float(bandwidth), 1e-6 * spread)  # 0 when most rows coincide
    labels = MeanShift(bandwidth=bandwidth, bin_seeding=True, cluster_all=False).fit_predict(F)
    counts = np.bincount(labels[labels >= 0], minlength=1)
    return np.flatnonzero(labels == int(np.argmax(counts)))


@register_rule("signguard", cost="O(n d), plus MeanShift on n points", bound=(2, 1), strategy="SignGuard", translation_equivariant=False,
               paper="Xu, Huang, Zhang, Zhao & Wu, ICDCS 2022")
def signguard(updates, *, f: int = 0, lower: float = 0.1, upper: float = 3.0, coordinate_fraction: float = 0.1,
              seed=None, return_report: bool = False):
    """SignGuard: the mean of the updates that pass the norm and the sign filter, each
    clipped to the median norm (n >= 2f + 1, the honest majority that makes the largest
    sign cluster honest; f is not otherwise used).

    Cost: one pass for the norms, one gather of ceil(coordinate_fraction d) columns, MeanShift
    on n points in 3-D, one weighted mean.

    Args:
        updates: (n, d) matrix of client updates.
        f: number of Byzantine clients to tolerate (only checked).
        lower, upper: the norm filter's bounds L and R, relative to the median norm
            (inclusive).
        coordinate_fraction: fraction of the coordinates whose signs are counted (at least
            one coordinate).
        seed: seed of the coordinate sample (``None``: fresh randomness; the strategies
            pass (seed, round) when the user gives a seed).
        return_report: also return an :class:`AggregationReport` (the kept updates; their
            clipping factors as ``scores``; each filter's kept count in ``details``).

    Should no update pass both filters, those passing the norm filter are averaged.
    """
    X = as_update_matrix(updates, check_finite=False)
    n, d = X.shape
    check_bound("signguard", n, f)
    if not 0 < float(coordinate_fraction) <= 1 or not 0 <= float(lower) <= float(upper):
        raise ValueError(f"signguard: need 0 < coordinate_fraction <= 1 and 0 <= lower <= upper, got "
                         f"{coordinate_fraction}, {lower}, {upper}")
    norms = distances_to(X, np.zeros(d, dtype=X.dtype))
    raise_if_nonfinite(X, norms)
    M = float(np.median(norms))
    by_norm = (norms >= lower * M) & (norms <= upper * M)
    size = max(1, math.ceil(float(coordinate_fraction) * d))
    cols = np.arange(d) if size >= d else np.sort(np.random.default_rng(seed).choice(d, size, replace=False))
    by_sign = np.zeros(n, dtype=bool)
    by_sign[largest_meanshift_cluster(sign_features(X, cols))] = True
    kept = by_norm & by_sign
    if not kept.any():
        kept = by_norm
    scale = np.where(norms > M, M / np.where(norms > 0, norms, 1.0), 1.0)
    agg = subset_mean(X, np.flatnonzero(kept), scale)  # the mean of the kept clipped updates
    if return_report:
        return agg, AggregationReport("signguard", n, f, selected=np.flatnonzero(kept).tolist(), scores=scale,
                                      details={"norm_filter_kept": int(by_norm.sum()),
                                               "sign_filter_kept": int(by_sign.sum())})
    return agg
