"""FLAME: clustering, adaptive clipping and noise against backdoors.

Nguyen et al., "FLAME: Taming Backdoors in Federated Learning", USENIX Security 2022
(Algorithm 1). With W_i = G + x_i the clients' models (G the global model):

1. HDBSCAN on the cosine distances c_ij = 1 - cos(W_i, W_j), with min_cluster_size
   n/2 + 1 (integer division), min_samples 1 and a single cluster allowed: the models in
   the cluster are admitted, the outliers are not (scikit-learn's ``HDBSCAN``, the same
   labelling as the ``hdbscan`` package of the paper's code). With one cluster allowed,
   HDBSCAN labels as noise every model that leaves the cluster before it dissolves (drops
   under min_cluster_size), so FLAME often admits little more than half the models, and
   the admitted ones are the most alike;
2. S_t = the median of the update norms e_i = |x_i| over all n clients;
3. every admitted update is clipped to norm S_t: x_i min(1, S_t / e_i);
4. the aggregate is the mean of the clipped admitted updates, plus Gaussian noise
   N(0, sigma^2 I) with sigma = lambda S_t (the paper's noise level factor lambda: 0.001
   for image classification).

The noise is drawn from ``seed`` (the strategies pass ``(seed, round)``); ``seed=None``
draws fresh noise. Needs n >= 2f + 1 (the benign majority that makes the cluster the
benign one). No Flower import here.
"""

from __future__ import annotations

import numpy as np

from ._validate import as_update_matrix, raise_if_nonfinite
from .distances import cosine_distances, sq_distances_to
from .mean import subset_mean
from .registry import check_bound, register_rule
from .report import AggregationReport


def admitted_cluster(C: np.ndarray) -> np.ndarray:
    """FLAME's admitted set: the indices (sorted) that scikit-learn's HDBSCAN puts in a
    cluster of the precomputed distances C with min_cluster_size = n // 2 + 1, min_samples
    = 1 and ``allow_single_cluster`` (at most one cluster can be that large); every index
    when n < 3 (no cluster of that size can be told from noise)."""
    n = C.shape[0]
    if n < 3:
        return np.arange(n)
    from sklearn.cluster import HDBSCAN

    labels = HDBSCAN(min_cluster_size=n // 2 + 1, min_samples=1, metric="precomputed",
                     allow_single_cluster=True, copy=True).fit_predict(C)
    return np.flatnonzero(labels >= 0)


@register_rule("flame", cost="O(n^2 d + n^2 log n)", bound=(2, 1), translation_equivariant=False,
               strategy="FLAME", paper="Nguyen et al., USENIX Security 2022")
def flame(updates, *, f: int = 0, global_model=None, noise_lambda: float = 0.001, seed=None,
          return_report: bool = False):
    """FLAME: the mean of the median-norm-clipped updates of the models HDBSCAN clusters
    together, plus Gaussian noise of std ``noise_lambda`` x the median norm (n >= 2f + 1).

    Args:
        updates: (n, d) matrix of client updates.
        f: number of Byzantine clients to tolerate (only checked).
        global_model: (d,) the global model G the updates start from (the strategies pass
            it): the cosine distances are those of the models G + x_i, as in the paper.
            ``None``: those of the updates themselves.
        noise_lambda: lambda >= 0; sigma = lambda x S_t (0: no noise).
        seed: seed of the noise (int or tuple); ``None``: fresh noise.
        return_report: also return an :class:`AggregationReport`: the admitted set as
            ``selected``, the clipping factors as ``scores``, S_t and sigma in ``details``.

    Returns the (d,) aggregate in X's dtype (the noise alone when nothing is admitted).
    """
    X = as_update_matrix(updates, check_finite=False)
    n, d = X.shape
    check_bound("flame", n, f)
    if not (np.isfinite(noise_lambda) and noise_lambda >= 0):
        raise ValueError(f"flame: noise_lambda must be a finite number >= 0, got {noise_lambda!r}")
    if global_model is not None and np.shape(global_model) != (d,):
        raise ValueError(f"flame: global_model must have shape ({d},), got {np.shape(global_model)}")
    sq = sq_distances_to(X, np.zeros(d, dtype=X.dtype))
    raise_if_nonfinite(X, sq)
    norms = np.sqrt(sq)
    admitted = admitted_cluster(cosine_distances(X, global_model, sq_norms=sq))
    s_t = float(np.median(norms))
    scale = np.where(norms > s_t, s_t / np.where(norms > 0, norms, 1.0), 1.0)
    agg = subset_mean(X, admitted, scale) if admitted.size else np.zeros(d, dtype=X.dtype)
    sigma = float(noise_lambda) * s_t
    if sigma > 0:
        rng = np.random.default_rng(seed)
        agg = (agg.astype(np.float64) + rng.normal(0.0, sigma, d)).astype(X.dtype)
    if return_report:
        return agg, AggregationReport("flame", n, f, selected=admitted.tolist(), scores=scale,
                                      details={"clip_norm": s_t, "noise_std": sigma})
    return agg
