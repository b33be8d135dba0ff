"""Krum and Multi-Krum.

Blanchard, El Mhamdi, Guerraoui & Stainer, "Machine Learning with Adversaries: Byzantine
Tolerant Gradient Descent", NeurIPS 2017. The score of update i is the sum of its squared
distances to its n - f - 2 nearest other updates; Krum returns the update with the lowest
score, Multi-Krum the average of the m lowest-scoring ones. Both need n >= 2f + 3.
Ties are broken by the lower client index.
"""

from __future__ import annotations

import numpy as np

from ._validate import as_update_matrix, as_weights
from .backend import copy_row
from .distances import pairwise_sq_distances
from .mean import weighted_mean
from .registry import check_bound, register_rule
from .report import AggregationReport


def krum_scores(D: np.ndarray, f: int) -> np.ndarray:
    """Krum scores from a squared-distance matrix: sum over the n - f - 2 nearest others.

    The neighbour count is clamped to at least 1 (it reaches f - 1 < 1 only inside
    Bulyan's last iterations, where the shrinking set has fewer than 2f + 3 members).
    """
    n = D.shape[0]
    k = min(max(n - f - 2, 1), n - 1)
    if k <= 0:
        return np.zeros(n)
    others = D.copy()
    np.fill_diagonal(others, np.inf)
    nearest = np.partition(others, k - 1, axis=1)[:, :k]
    return nearest.sum(axis=1)


def _ranked(scores: np.ndarray) -> np.ndarray:
    return np.argsort(scores, kind="stable")


@register_rule("krum", tensor_native=True, cost="O(n^2 d)", bound=(2, 3), flower="Krum",
               paper="Blanchard, El Mhamdi, Guerraoui & Stainer, NeurIPS 2017")
def krum(updates, *, f: int, return_report: bool = False):
    """Krum: the single update with the lowest Krum score (n >= 2f + 3).

    Args:
        updates: (n, d) matrix of client updates.
        f: number of Byzantine clients to tolerate.
        return_report: also return an :class:`AggregationReport` (selected index, scores).
    """
    X = as_update_matrix(updates, check_finite=False)  # the Gram matrix checks
    n = X.shape[0]
    check_bound("krum", n, f)
    scores = krum_scores(pairwise_sq_distances(X), f)
    best = int(_ranked(scores)[0])
    agg = copy_row(X, best)
    if return_report:
        return agg, AggregationReport("krum", n, f, selected=[best], scores=scores)
    return agg


@register_rule("multi_krum", tensor_native=True, cost="O(n^2 d)", bound=(2, 3), flower="MultiKrum", strategy="MultiKrum",
               paper="Blanchard, El Mhamdi, Guerraoui & Stainer, NeurIPS 2017")
def multi_krum(updates, *, f: int, m: int | None = None, weights=None, return_report: bool = False):
    """Multi-Krum: the (weighted) average of the m updates with the lowest Krum scores.

    Scores are computed once on all n updates, as in Blanchard et al. and in Flower's own
    ``MultiKrum``. ``m`` defaults to n - f; m = 1 is Krum. Needs n >= 2f + 3.

    Args:
        updates: (n, d) matrix of client updates.
        f: number of Byzantine clients to tolerate.
        m: number of updates averaged (1 <= m <= n).
        weights: optional per-client weights for the average of the selected updates
            (Flower's MultiKrum weights them by their numbers of examples); when every
            selected update weighs 0 they are averaged equally.
        return_report: also return an :class:`AggregationReport` (selected indices, scores).
    """
    X = as_update_matrix(updates, check_finite=False)  # the Gram matrix checks
    n = X.shape[0]
    check_bound("multi_krum", n, f)
    m = n - f if m is None else int(m)
    if not 1 <= m <= n:
        raise ValueError(f"multi_krum: m must be in [1, n={n}], got {m}")
    w = as_weights(weights, n)
    scores = krum_scores(pairwise_sq_distances(X), f)
    chosen = np.sort(_ranked(scores)[:m])
    mask = np.zeros(n)
    mask[chosen] = 1.0
    if w is not None and (mask * w).sum() > 0:
        mask = mask * w  # else the selected updates all weigh 0: they count equally, never 0 / 0
    agg = weighted_mean(X, mask)  # no copy of the selection
    if return_report:
        return agg, AggregationReport("multi_krum", n, f, selected=chosen.tolist(), scores=scores, details={"m": m})
    return agg
