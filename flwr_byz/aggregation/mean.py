"""The (weighted) mean: FedAvg's rule, the non-robust baseline.

McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized
Data", AISTATS 2017. Tolerates no Byzantine client: a single arbitrary update moves the
mean arbitrarily far (breakdown point 0), so ``f`` must be 0.
"""

from __future__ import annotations

import numpy as np

from ._validate import as_update_matrix, as_weights, raise_if_nonfinite
from .backend import as_like, is_tensor, zeros
from .registry import NO_TOLERANCE, check_bound, register_rule
from .report import AggregationReport


def weighted_mean(X: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Mean of the rows of X (weighted by w when given): one BLAS matrix-vector product.

    The weights are normalised in float64, then the product runs in X's precision. Its
    rounding error per coordinate is at most about n * eps * sum_i w_i |x_i| (eps = 6e-8 in
    float32), and in practice a few eps: the accuracy of numpy's own ``X.mean(axis=0)``,
    well below the rounding of float32 inputs for the n of a federated round (the reference
    tests check it against a float64 mean). The rounding depends on the order of the rows;
    the geometric median, whose stopping test would notice, sums in an order of its own
    (see ``geometric_median``). On a tensor X the product runs on its device.
    """
    n = X.shape[0]
    w = np.full(n, 1.0 / n) if w is None else np.asarray(w, dtype=np.float64) / np.sum(w)
    if is_tensor(X):
        return as_like(w, X) @ X
    return w.astype(X.dtype) @ X


def subset_mean(X: np.ndarray, rows, scale=None) -> np.ndarray:
    """Mean of the rows ``rows`` of X, each first multiplied by ``scale[i]`` when given (a
    clipping factor): (1 / |rows|) sum_{i in rows} scale_i x_i, in X's dtype, from one
    :func:`weighted_mean` (no scaled copy of X). Zeros when every factor is 0. What the
    selection and filtering rules average once they know which updates they keep."""
    rows = np.asarray(rows, dtype=np.intp).reshape(-1)
    w = np.zeros(X.shape[0])
    w[rows] = 1.0 if scale is None else np.asarray(scale, dtype=np.float64)[rows]
    if scale is None:
        return weighted_mean(X, w)
    if not w.any():
        return zeros(X, X.shape[1])
    if is_tensor(X):
        return (weighted_mean(X, w).double() * float(w.sum() / rows.size)).to(X.dtype)
    return (weighted_mean(X, w) * (w.sum() / rows.size)).astype(X.dtype)


@register_rule("mean", tensor_native=True, cost="O(n d)", bound=lambda f: 1 if f == 0 else NO_TOLERANCE, flower="FedAvg",
               strategy="RobustFedAvg", aliases=("fedavg",), bound_text="(no tolerance: f must be 0)",
               paper="McMahan et al., AISTATS 2017")
def mean(updates, *, weights=None, f: int = 0, return_report: bool = False):
    """Coordinate-wise (weighted) mean of the n updates.

    Args:
        updates: (n, d) matrix of client updates.
        weights: optional per-client weights (FedAvg uses the numbers of examples).
        f: must be 0; the mean has no Byzantine tolerance.
        return_report: also return an :class:`AggregationReport`.
    """
    X = as_update_matrix(updates, check_finite=False)
    n = X.shape[0]
    check_bound("mean", n, f)
    w = as_weights(weights, n)
    agg = weighted_mean(X, w)
    raise_if_nonfinite(X, agg)  # 0 * Inf is NaN: a zero weight does not hide an Inf
    if return_report:
        return agg, AggregationReport("mean", n, f, selected=list(range(n)))
    return agg
