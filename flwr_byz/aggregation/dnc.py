"""DnC, divide-and-conquer.

Shejwalkar & Houmansadr, "Manipulating the Byzantine: Optimizing Model Poisoning Attacks and
Defenses for Federated Learning", NDSS 2021. Each of ``num_iters`` iterations samples
``sub_dim`` coordinates at random, centres the sampled updates at their mean, scores every
update by its squared projection on the top right singular vector of the centred matrix,
and keeps the n - floor(filter_frac * f) lowest scores; the updates kept by every iteration
(the intersection, as in Blades and FLPoison; Blades' first release took the union) are
averaged.

The top singular direction comes from the n x n centred Gram matrix of the sampled
columns (:func:`~flwr_byz.aggregation.spectral.top_eigen`), built from the pairwise
distances of the sampled columns, so nearly equal updates do not cancel and huge ones do not
overflow.
"""

from __future__ import annotations

import numpy as np

from ._validate import as_update_matrix
from .distances import pairwise_sq_distances
from .mean import subset_mean
from .registry import check_bound, register_rule
from .report import AggregationReport
from .spectral import top_eigen


@register_rule("dnc", cost="O(iters n^2 b + n d), b = sub_dim", bound=(2, 1), strategy="DnC", aliases=("divide_and_conquer",),
               paper="Shejwalkar & Houmansadr, NDSS 2021")
def dnc(updates, *, f: int, sub_dim: int = 10_000, num_iters: int = 5, filter_frac: float = 1.0,
        seed=None, return_report: bool = False):
    """DnC: the mean of the updates that no iteration's spectral filter removed.

    Needs an honest majority (n >= 2f + 1, the paper's threat model) and
    n - floor(filter_frac * f) >= 1. Cost per iteration: a gather of n x sub_dim values, an
    O(n^2 sub_dim) Gram matrix and an n x n eigenproblem; then one mean over d.

    Args:
        updates: (n, d) matrix of client updates.
        f: number of Byzantine clients to tolerate.
        sub_dim: coordinates sampled per iteration (b in the paper; all d when d <= sub_dim,
            and the iterations then coincide).
        num_iters: iterations (niters; 5 as in Blades and FLPoison).
        filter_frac: c in the paper: each iteration removes floor(c f) updates.
        seed: seed of the coordinate sampling (``None``: fresh randomness; the strategies
            pass (seed, round) when the user gives a seed).
        return_report: also return an :class:`AggregationReport` (the kept indices; the last
            iteration's scores).

    Ties in score keep the lower client index. Should the iterations' kept sets have no
    update in common, the last iteration's set is averaged.
    """
    X = as_update_matrix(updates, check_finite=False)  # the Gram matrix checks
    n, d = X.shape
    check_bound("dnc", n, f)
    if int(num_iters) < 1 or int(sub_dim) < 1 or not 0 <= float(filter_frac):
        raise ValueError(f"dnc: need num_iters >= 1, sub_dim >= 1 and filter_frac >= 0, got "
                         f"{num_iters}, {sub_dim}, {filter_frac}")
    removed = int(np.floor(float(filter_frac) * f))
    if removed >= n:
        raise ValueError(f"dnc: filter_frac * f = {removed} would remove all {n} updates")
    rng = np.random.default_rng(seed)
    kept = np.ones(n, dtype=bool)
    w = np.full(n, 1.0 / n)
    scores = np.zeros(n)
    for _ in range(int(num_iters)):
        if d <= sub_dim:
            D = pairwise_sq_distances(X)
        else:
            cols = np.sort(rng.choice(d, size=int(sub_dim), replace=False))
            D = pairwise_sq_distances(np.ascontiguousarray(X[:, cols]))
        scores = top_eigen(D, w)[1] ** 2  # ((x_i - mu) . v)^2
        good = np.argsort(scores, kind="stable")[: n - removed]
        mask = np.zeros(n, dtype=bool)
        mask[good] = True
        kept &= mask
        if d <= sub_dim:
            break  # the same coordinates every iteration: the same set
    selected = np.flatnonzero(kept)
    if selected.size == 0:
        selected = np.sort(good)
    agg = subset_mean(X, selected)
    if return_report:
        return agg, AggregationReport("dnc", n, f, selected=selected.tolist(), scores=scores,
                                      details={"removed_per_iteration": removed})
    return agg
