"""Pre-aggregators: transforms of the (n, d) update matrix that compose with any rule.

- :func:`clip_norms`: scale every update to norm at most ``threshold`` (by default the
  median norm of the round, an adaptive choice that honest majorities fix). With a fixed
  threshold M this is the norm bounding of Sun, Kairouz, Suresh & McMahan, "Can You Really
  Backdoor Federated Learning?", 2019 (applied to updates: norm-difference clipping).
- :func:`adaptive_robust_clipping` (ARC): Allouah, Guerraoui, Gupta, Jellouli, Rizk &
  Stephan, "The Vital Role of Gradient Clipping in Byzantine-Resilient Distributed
  Learning", 2024. The k = floor(2 (f / n) (n - f)) updates of largest norm are scaled to
  the largest norm among the others; n stays n.
- :func:`bucketing`: Karimireddy, He & Jaggi, "Byzantine-Robust Learning on Heterogeneous
  Datasets via Bucketing", ICLR 2022. Shuffle, split into ceil(n / s) buckets of at most s
  updates, average each bucket. The rule then sees ceil(n / s) inputs of which at most f
  are contaminated, so its own f bound is checked on the bucketed count.
- :func:`nearest_neighbor_mixing`: Allouah, Farhadkhani, Guerraoui, Gupta, Pinot &
  Stephan, "Fixing by Mixing: A Recipe for Optimal Byzantine ML under Heterogeneity",
  AISTATS 2023. Replace every update by the average of its n - f nearest updates
  (itself included); n stays n.

Each takes a NumPy array or a torch tensor and returns the same kind, on the same device
(:mod:`.backend`).
"""

from __future__ import annotations

import numpy as np

from ._validate import as_update_matrix, check_f
from .backend import as_like, chunk_width, device_of, exact_float32_products, is_tensor, namespace, row_index, to_numpy, zeros
from .distances import distances_to, pairwise_sq_distances


def clip_norms(updates, *, threshold: float | None = None) -> np.ndarray:
    """Return a copy of the updates with every row scaled to norm <= threshold.

    ``threshold=None`` uses the median of the rows' norms.
    """
    X = as_update_matrix(updates)
    norms = distances_to(X, zeros(X, X.shape[1]))
    c = float(np.median(norms)) if threshold is None else float(threshold)
    if not c > 0:
        return (X.clone() if is_tensor(X) else X.copy()) if threshold is None else namespace(X).zeros_like(X)
    scale = c / np.maximum(norms, c)  # = min(1, c / |x_i|), no division by 0
    return X * as_like(scale[:, None], X)


def adaptive_robust_clipping(updates, *, f: int) -> np.ndarray:
    """ARC: a copy of the updates whose k = floor(2 (f / n) (n - f)) largest-norm rows are
    scaled to the norm of the largest remaining row (n >= 1; f <= n / 2 keeps k < n).

    Ties in norm are ordered by row index (stable sort: the later rows count as larger, as
    in ByzFL's ``ARC``). Norms are computed directly (float64 accumulation).

    Args:
        updates: (n, d) matrix of client updates.
        f: number of Byzantine clients to tolerate.
    """
    X = as_update_matrix(updates)
    n = X.shape[0]
    check_f("adaptive_robust_clipping", n, f, a=2, b=0, formula="2f")
    k = int(2 * f * (n - f) // n)  # floor(2 (f / n) (n - f)), exact in integers
    out = X.clone() if is_tensor(X) else X.copy()
    if k == 0:
        return out
    norms = distances_to(X, zeros(X, X.shape[1]))
    order = np.argsort(norms, kind="stable")
    threshold = norms[order[n - k - 1]]
    for i in order[n - k:]:
        if norms[i] > threshold:
            out[int(i)] *= as_like(threshold / norms[i], X)
    return out


def bucketing(updates, *, s: int = 2, seed: int | None = None, weights=None):
    """Average random buckets of at most ``s`` updates.

    Returns ``(X_bucketed, buckets, bucket_weights)`` where ``buckets`` lists the original
    indices in each bucket and ``bucket_weights`` sums ``weights`` per bucket (None when no
    weights were given).
    """
    X = as_update_matrix(updates)
    n = X.shape[0]
    if s < 1:
        raise ValueError(f"bucketing: bucket size s must be >= 1, got {s}")
    perm = np.random.default_rng(seed).permutation(n)
    buckets = [perm[i : i + s] for i in range(0, n, s)]
    xp = namespace(X)
    out = xp.empty((len(buckets), X.shape[1]), dtype=X.dtype, device=device_of(X))
    for b, idx in enumerate(buckets):  # divided first: no overflow
        out[b] = xp.sum(xp.astype(X[row_index(X, idx)], xp.float64) / len(idx), axis=0)
    w = None if weights is None else np.asarray(to_numpy(weights), float)
    bw = None if w is None else np.array([w[idx].sum() for idx in buckets])
    return out, [sorted(int(i) for i in idx) for idx in buckets], bw


def nearest_neighbor_mixing(updates, *, f: int) -> np.ndarray:
    """NNM: each update becomes the mean of its n - f nearest updates, itself included."""
    X = as_update_matrix(updates)
    n, d = X.shape
    check_f("nearest_neighbor_mixing", n, f, a=1, b=1)
    D = pairwise_sq_distances(X)
    k = n - f
    order = np.argsort(D + np.diag(np.full(n, -1.0)), axis=1, kind="stable")[:, :k]  # self first
    M = np.zeros((n, n), dtype=np.float64)
    np.put_along_axis(M, order, 1.0 / k, axis=1)
    M = as_like(M, X)
    out = namespace(X).empty_like(X)
    step = chunk_width(X, n)
    with exact_float32_products():  # no TF32 on a CUDA tensor
        for a in range(0, d, step):
            out[:, a : a + step] = M @ X[:, a : a + step]
    return out
