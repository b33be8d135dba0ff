"""Minimum-diameter averaging (MDA).

El Mhamdi, Guerraoui, Guirguis, Hoang & Rouault, "Genuinely Distributed Byzantine Machine
Learning", PODC 2020: among all subsets S of n - f updates, take one of minimum diameter
max_{i, j in S} |x_i - x_j|, and return its average. Needs n >= 2f + 1.

Exact: every subset of n - f updates is visited, C(n, f) of them, each scored from one
pairwise-distance matrix in O((n - f)^2) (vectorised over batches of subsets); the distances are computed once, directly from the differences (n passes over X, O(n^2 d)), so equal diameters tie
exactly and nearly equal updates do not cancel.
Past :data:`MAX_SUBSETS` subsets the rule refuses with a clear error rather than run for
hours (C(51, 12) is about 1.6e11); no approximation is substituted silently.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ._validate import as_update_matrix, raise_if_nonfinite
from .distances import sq_distances_to
from .mean import subset_mean
from .registry import check_bound, register_rule
from .report import AggregationReport

MAX_SUBSETS = 200_000


def subset_batches(n: int, k: int, size: int):
    """All subsets of k of range(n), in lexicographic order, as (<= size, k) index arrays
    (the exact subset searches score a batch at a time, vectorised)."""
    subsets = itertools.combinations(range(n), k)
    while True:
        batch = np.array(list(itertools.islice(subsets, size)), dtype=np.intp).reshape(-1, k)
        if not batch.size:
            return
        yield batch


@register_rule("mda", cost="O(n^2 d + C(n, f) (n - f)^2)", bound=(2, 1), aliases=("minimum_diameter_averaging",), strategy="MDA",
               paper="El Mhamdi, Guerraoui, Guirguis, Hoang & Rouault, PODC 2020")
def mda(updates, *, f: int, return_report: bool = False):
    """Minimum-diameter averaging: the mean of the n - f updates of smallest diameter.

    Subsets of equal diameter are common (one pair sets the diameter of every subset that
    holds it); among them the rule keeps the one whose within-subset distances, sorted in
    decreasing order, are lexicographically smallest, so that the choice does not depend
    on the order of the clients (ByzFL's ``MDA`` keeps the first subset in index order). Raises ``ValueError`` when C(n, f) > :data:`MAX_SUBSETS` (exact
    search only).

    Args:
        updates: (n, d) matrix of client updates.
        f: number of Byzantine clients to tolerate (n >= 2f + 1).
        return_report: also return an :class:`AggregationReport` (selected indices; the
            diameter in ``details``).
    """
    X = as_update_matrix(updates, check_finite=False)  # the distances check
    n = X.shape[0]
    check_bound("mda", n, f)
    subsets = math.comb(n, f)
    if subsets > MAX_SUBSETS:
        raise ValueError(f"mda: exact minimum-diameter search over C({n}, {f}) = {subsets:.3g} subsets exceeds "
                         f"{MAX_SUBSETS:,}; use fewer clients per round, a smaller f, or another rule")
    D = np.stack([sq_distances_to(X, X[i]) for i in range(n)])  # direct: equal diameters tie exactly
    raise_if_nonfinite(X, D)
    k = n - f
    upper = np.triu_indices(k, 1)
    best, tied = np.inf, []
    for batch in subset_batches(n, k, 1024):
        diameters = D[batch[:, :, None], batch[:, None, :]].max(axis=(1, 2))
        low = diameters.min()
        if low < best:
            best, tied = low, []
        if low == best:
            tied.append(batch[diameters == low])
    tied = np.concatenate(tied)
    # Ties are generic (one pair sets a diameter, so subsets sharing it tie); the tie-break
    # compares the subsets' within-distances sorted in decreasing order, lexicographically
    # (no arithmetic, so it does not depend on the order of the clients).
    within = D[tied[:, :, None], tied[:, None, :]][:, upper[0], upper[1]]
    within = -np.sort(-within, axis=1)
    selected = tied[np.lexsort(within.T[::-1])[0]] if len(tied) > 1 else tied[0]
    agg = subset_mean(X, selected)
    if return_report:
        return agg, AggregationReport("mda", n, f, selected=selected.tolist(),
                                      details={"diameter": float(np.sqrt(best))})
    return agg
