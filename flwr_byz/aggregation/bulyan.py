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

from ._validate import as_update_matrix
from .distances import pairwise_sq_distances
from .kernels import closest_to_median_mean
from .krum import krum_scores
from .registry import check_bound, register_rule
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


@register_rule("bulyan", tensor_native=True, cost="O(n^2 d + d n log n)", bound=(4, 3), flower="Bulyan",
               paper="El Mhamdi, Guerraoui & Rouault, ICML 2018")
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
    check_bound("bulyan", n, f)
    theta = n - 2 * f
    beta = theta - 2 * f
    chosen = iterated_krum_selection(pairwise_sq_distances(X), f, theta)
    agg = closest_to_median_mean(X, chosen, beta)
    if return_report:
        return agg, AggregationReport(
            "bulyan", n, f, selected=chosen, details={"theta": theta, "beta": beta}
        )
    return agg
