"""Centered clipping.

Karimireddy, He & Jaggi, "Learning from History for Byzantine Robust Optimization",
ICML 2021. Starting from a centre v_0 (the previous round's aggregate: the rule is meant to
be used with momentum / history), each of L iterations moves the centre by the average of
the updates' offsets clipped to radius tau:

    v_{l+1} = v_l + (1/n) sum_i (x_i - v_l) * min(1, tau / |x_i - v_l|).

Each Byzantine update moves the result by at most tau / n per iteration, whatever it sends;
the analysis assumes a minority of Byzantine clients, checked here as n >= 2f + 1.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg.blas import get_blas_funcs

from ._validate import as_update_matrix, raise_if_nonfinite
from .backend import as_like, is_tensor, to_numpy, zeros
from .distances import distances_to
from .mean import weighted_mean
from .registry import check_bound, register_rule
from .report import AggregationReport


@register_rule("centered_clipping", tensor_native=True, cost="O(L n d), L iterations", bound=(2, 1), aliases=("cclip",), stateful=True, translation_equivariant=False,
               paper="Karimireddy, He & Jaggi, ICML 2021")
def centered_clipping(
    updates,
    *,
    f: int = 0,
    tau: float = 10.0,
    iterations: int = 1,
    center=None,
    return_report: bool = False,
):
    """Centered clipping around ``center`` (zeros when None) with radius ``tau``.

    Args:
        updates: (n, d) matrix of client updates.
        f: number of Byzantine clients to tolerate (only checked: n >= 2f + 1).
        tau: clipping radius (> 0).
        iterations: L, the number of clipping iterations (the paper uses 1 with momentum).
        center: the starting point v_0, typically the previous round's aggregate.
        return_report: also return an :class:`AggregationReport` (last iteration's clipping
            factors in ``scores``; 1 means not clipped).
    """
    X = as_update_matrix(updates, check_finite=False)  # a NaN / Inf row has a non-finite distance
    n, d = X.shape
    check_bound("centered_clipping", n, f)
    if not tau > 0:
        raise ValueError(f"centered_clipping: tau must be > 0, got {tau}")
    if iterations < 1:
        raise ValueError(f"centered_clipping: iterations must be >= 1, got {iterations}")
    if center is None:
        v = zeros(X, d)
    else:  # finite in X's precision too (a float64 centre beyond 3e38 is not)
        v = as_like(as_like(center, X, np.float64).reshape(-1), X)
    if tuple(v.shape) != (d,) or not np.all(np.isfinite(to_numpy(v))):
        raise ValueError(f"centered_clipping: center must be a finite vector of length {d}")
    tensor = is_tensor(X)
    axpy = None if tensor else get_blas_funcs("axpy", (X,))
    scale = np.ones(n)
    for step in range(iterations):
        dist = distances_to(X, v)
        raise_if_nonfinite(X, dist)  # a finite row too far for float32 passes: clipped to nothing
        scale = tau / np.maximum(dist, tau)  # = min(1, tau / |x_i - v|), no division by 0
        if not scale.any():  # every row too far for float32 (distance inf): nothing moves v
            continue
        # v + (1/n) sum_i s_i (x_i - v)  =  (sum_i s_i / n) * mean_s(x) + (1 - mean(s)) v,
        # mean_s the s-weighted mean (one BLAS product), the rest in place
        moved = weighted_mean(X, scale)
        moved *= float(scale.sum() / n) if tensor else scale.sum() / n
        if step or center is not None:  # v = 0 before the first step without a centre
            moved = moved.add_(v, alpha=float(1.0 - scale.mean())) if tensor else axpy(v, moved, a=1.0 - scale.mean())
        v = moved
    agg = v
    if return_report:
        return agg, AggregationReport(
            "centered_clipping", n, f, scores=scale,
            details={"tau": float(tau), "iterations": int(iterations), "clipped": int((scale < 1).sum())},
        )
    return agg
