"""Clustering rules: Clustering and ClippedClustering.

- Clustering: Sattler, Müller, Wiegand & Samek, "On the Byzantine Robustness of Clustered
  Federated Learning", ICASSP 2020: split the updates in two by agglomerative clustering
  of their cosine distances and average the larger cluster.
- ClippedClustering: Li, Ngai & Voigt, "An Experimental Study of Byzantine-Robust
  Aggregation Schemes in Federated Learning", IEEE Transactions on Big Data 2023 (the
  Blades benchmark): first clip every update to the median of all update norms seen so far
  (this round's included), then cluster as above and average the larger cluster of the
  clipped updates.

Both use scikit-learn's ``AgglomerativeClustering`` on a precomputed distance matrix
(:func:`~flwr_byz.aggregation.distances.cosine_distances`, accurate for nearly parallel
updates); the linkage is Blades' (complete for Clustering, average for ClippedClustering).
Neither uses f; n >= 2f + 1 is the honest majority that makes the larger cluster the honest
one.
"""

from __future__ import annotations

import numpy as np

from ._validate import as_update_matrix, raise_if_nonfinite
from .distances import cosine_distances, distances_to
from .mean import subset_mean
from .registry import check_bound, register_rule
from .report import AggregationReport

LINKAGES = ("complete", "average", "single")


def larger_cluster(D: np.ndarray, linkage: str) -> np.ndarray:
    """Indices (sorted) of the larger of the two clusters that agglomerative clustering with
    ``linkage`` makes of the points behind the distance matrix D. Equal sizes go to the
    tighter cluster (smaller mean distance within it), then to the one holding the lower
    index."""
    n = D.shape[0]
    if n < 2:
        return np.arange(n)
    if linkage not in LINKAGES:
        raise ValueError(f"linkage must be one of {LINKAGES}, got {linkage!r}")
    from sklearn.cluster import AgglomerativeClustering

    labels = AgglomerativeClustering(n_clusters=2, metric="precomputed", linkage=linkage).fit_predict(D)
    groups = [np.flatnonzero(labels == k) for k in (0, 1)]

    def key(g):
        spread = D[np.ix_(g, g)].sum() / max(len(g) * (len(g) - 1), 1)
        return (-len(g), spread, int(g[0]))

    return min(groups, key=key)


@register_rule("clustering", cost="O(n^2 d + n^3)", bound=(2, 1), translation_equivariant=False,
               paper="Sattler, Müller, Wiegand & Samek, ICASSP 2020")
def clustering(updates, *, f: int = 0, linkage: str = "complete", return_report: bool = False):
    """Clustering: the mean of the larger of two agglomerative clusters of the updates by
    cosine distance (n >= 2f + 1).

    Cosine distances see directions only: an update far larger than the honest ones but
    pointing their way can join the larger cluster and move the mean arbitrarily far (no
    magnitude bound; ClippedClustering clips first). Cost: one O(n^2 d) distance matrix,
    then scikit-learn's clustering on n points.

    Args:
        updates: (n, d) matrix of client updates.
        f: number of Byzantine clients to tolerate (only checked).
        linkage: ``"complete"`` (Blades' Clustering), ``"average"`` or ``"single"``.
        return_report: also return an :class:`AggregationReport` (the cluster kept).
    """
    X = as_update_matrix(updates, check_finite=False)  # the distances check
    n = X.shape[0]
    check_bound("clustering", n, f)
    selected = larger_cluster(cosine_distances(X), linkage)
    agg = subset_mean(X, selected)
    return (agg, AggregationReport("clustering", n, f, selected=selected.tolist())) if return_report else agg


@register_rule("clipped_clustering", cost="O(n^2 d + n^3 + R n), R rounds of history", bound=(2, 1), translation_equivariant=False, strategy="ClippedClustering",
               paper="Li, Ngai & Voigt, IEEE Transactions on Big Data 2023")
def clipped_clustering(updates, *, f: int = 0, linkage: str = "average", max_tau: float = 1e5, history=None,
                       return_report: bool = False):
    """ClippedClustering: clip every update to tau = min(median of all norms seen so far,
    ``max_tau``), then average the larger cosine-distance cluster of the clipped updates
    (n >= 2f + 1).

    Args:
        updates: (n, d) matrix of client updates.
        f: number of Byzantine clients to tolerate (only checked).
        linkage: ``"average"`` (Blades' default) or ``"single"`` / ``"complete"``.
        max_tau: upper limit of the clipping threshold.
        history: the norms of the updates of earlier rounds (1-D; the strategies keep them,
            one entry per update, before clipping); ``None`` or empty: this round only.
        return_report: also return an :class:`AggregationReport` (the cluster kept; this
            round's norms as ``details["norms"]``, for the next round's history, and tau).

    The history is the rule's state: a Byzantine client that sends huge updates every round
    moves the median by at most its share of the history, which stays under one half while
    the honest clients are a majority of every round.
    """
    X = as_update_matrix(updates, check_finite=False)
    n, d = X.shape
    check_bound("clipped_clustering", n, f)
    norms = distances_to(X, np.zeros(d, dtype=X.dtype))
    raise_if_nonfinite(X, norms)
    past = np.zeros(0) if history is None else np.asarray(history, dtype=np.float64).reshape(-1)
    past = past[np.isfinite(past)]
    tau = min(float(np.median(np.concatenate([past, norms]))), float(max_tau))
    scale = np.where(norms > tau, tau / np.where(norms > 0, norms, 1.0), 1.0)
    selected = larger_cluster(cosine_distances(X), linkage)  # clipping keeps every cosine
    agg = subset_mean(X, selected, scale)  # the mean of the clipped selected updates
    if return_report:
        return agg, AggregationReport("clipped_clustering", n, f, selected=selected.tolist(), scores=scale,
                                      details={"tau": tau, "norms": norms})
    return agg
