"""MoNNA: the mean of the n - f nearest neighbours of a trusted vector.

Farhadkhani, Guerraoui, Gupta, Hoang, Pinot & Stephan, "Robust Collaborative Learning with
Linear Gradient Overhead", ICML 2023. In the paper's peer-to-peer setting every honest node
averages the n - f vectors nearest to its own (itself included). A Flower server has no
vector of its own that it trusts, so the strategies use the server's own previous aggregate
update as the pivot (zeros in the first round: the n - f updates of smallest norm), as
centered clipping does; ``idx`` gives ByzFL's convention (the pivot is update ``idx``,
a client the caller trusts).
"""

from __future__ import annotations

import numpy as np

from ._validate import as_update_matrix, raise_if_nonfinite
from .distances import sq_distances_to
from .mean import subset_mean
from .registry import check_bound, register_rule
from .report import AggregationReport


@register_rule("monna", cost="O(n d)", bound=(2, 1), strategy="MoNNA", stateful=True, translation_equivariant=False,
               paper="Farhadkhani, Guerraoui, Gupta, Hoang, Pinot & Stephan, ICML 2023")
def monna(updates, *, f: int, center=None, idx: int | None = None, return_report: bool = False):
    """MoNNA: the mean of the n - f updates nearest to a trusted pivot (n >= 2f + 1).

    With an honest pivot, every Byzantine update that is averaged is no farther from the
    pivot than some honest update left out, which bounds its influence.

    Args:
        updates: (n, d) matrix of client updates.
        f: number of Byzantine clients to tolerate; n - f updates are averaged.
        center: the pivot, a trusted vector of length d (zeros when None; the strategies
            pass the previous round's aggregate update).
        idx: take update ``idx`` as the pivot instead (ByzFL's ``MoNNA(f, idx)``; it is
            then among the n - f averaged).
        return_report: also return an :class:`AggregationReport` (selected indices, the
            squared distances to the pivot as ``scores``).

    Distances to the pivot are computed directly from the differences (float64 sums), so
    nearly equal updates are ranked by their true distances; ties go to the lower index.
    """
    X = as_update_matrix(updates, check_finite=False)  # the distances check
    n, d = X.shape
    check_bound("monna", n, f)
    if idx is not None:
        if isinstance(idx, bool) or not isinstance(idx, (int, np.integer)) or not 0 <= idx < n:
            raise ValueError(f"monna: idx must be an integer in [0, {n}), got {idx!r}")
        pivot = X[int(idx)]
    elif center is None:
        pivot = np.zeros(d, dtype=X.dtype)
    else:
        pivot = np.asarray(center, dtype=np.float64).reshape(-1)
        if pivot.shape != (d,) or not np.isfinite(pivot).all():
            raise ValueError(f"monna: center must be a finite vector of length {d}")
        pivot = pivot.astype(X.dtype)
    sq = sq_distances_to(X, pivot)
    raise_if_nonfinite(X, sq)
    selected = np.sort(np.argsort(sq, kind="stable")[: n - f])
    agg = subset_mean(X, selected)
    if return_report:
        return agg, AggregationReport("monna", n, f, selected=selected.tolist(), scores=sq)
    return agg
