"""FoolsGold: learning rates from the similarity of the clients' histories.

Fung, Yoon & Beschastnikh, "The Limitations of Federated Learning in Sybil Settings", RAID
2020 (Algorithm 1; first as "Mitigating Sybils in Federated Learning Poisoning", 2018).
Sybils pushing one poisoning goal send updates that stay similar round after round, while
honest clients with different data do not. The server keeps each client's history H_i (the
sum of all its updates so far, this round's included) and:

1. cs_ij = cos(H_i, H_j) for i != j (cs_ii = 0, as in the authors' code), v_i = max_j cs_ij;
2. pardoning: cs_ij <- cs_ij * v_i / v_j when v_i < v_j (an honest client that merely
   resembles a sybil is not punished for the sybil's similarity);
3. alpha_i = 1 - max_j cs_ij, clipped to [0, 1], divided by its maximum (a value of 1
   becomes 0.99);
4. the logit: alpha_i <- kappa (ln(alpha_i / (1 - alpha_i)) + 0.5), clipped to [0, 1];
5. the aggregate is sum_i alpha_i x_i.

FoolsGold assumes the honest clients' data differ (non-IID), so that their histories do
not look alike. On IID data the honest histories are alike and get weights near 0, while a
lone attacker unlike everyone (a sign flipper) keeps weight 1 and can steer the model
(docs/RESULTS.md shows it); it is a defense against colluding sybils, not a general
Byzantine rule.

Step 5 is the paper's for FedSGD gradients. On FedAvg-style model updates flwr-byz divides
by sum_i alpha_i by default (``normalize=True``: a weighted mean, so n clients do not make
an n-times larger step); ``normalize=False`` is the paper's sum. The optional
feature-importance weighting of the paper's output layer is not applied (the paper's
experiments show it matters for its softmax models only).
"""

from __future__ import annotations

import numpy as np

from ._validate import as_update_matrix, raise_if_nonfinite
from .distances import cosine_distances
from .mean import weighted_mean
from .registry import check_bound, register_rule
from .report import AggregationReport


def foolsgold_weights(cs: np.ndarray, kappa: float = 1.0) -> np.ndarray:
    """FoolsGold's per-client weights alpha (float64, in [0, 1]) from the (n, n) cosine
    similarities of the histories (steps 1 to 4 of the module docstring; the diagonal is
    ignored)."""
    cs = np.array(cs, dtype=np.float64)
    n = cs.shape[0]
    np.fill_diagonal(cs, 0.0)
    v = cs.max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        pardon = np.where(v[:, None] < v[None, :], v[:, None] / v[None, :], 1.0)
    pardon[~np.isfinite(pardon)] = 1.0
    cs = cs * np.where(np.eye(n, dtype=bool), 1.0, pardon)
    alpha = np.clip(1.0 - cs.max(axis=1), 0.0, 1.0)
    top = alpha.max()
    if not top > 0:  # every history has a perfect twin: nobody gets weight
        return np.zeros(n)
    alpha = alpha / top
    alpha[alpha == 1.0] = 0.99
    with np.errstate(divide="ignore"):
        logit = kappa * (np.log(alpha / (1.0 - alpha)) + 0.5)
    return np.clip(np.nan_to_num(logit, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)


@register_rule("foolsgold", cost="O(n^2 d) + d floats per client kept", bound=(0, 1),
               translation_equivariant=False, strategy="FoolsGold",
               bound_text="1 (any f: sybils are told apart by their similarity)",
               paper="Fung, Yoon & Beschastnikh, RAID 2020")
def foolsgold(updates, *, f: int = 0, client_history=None, kappa: float = 1.0, normalize: bool = True,
              return_report: bool = False):
    """FoolsGold: updates weighted by how unlike every other client's history each client's
    history is (any n >= 1; f is only checked).

    Args:
        updates: (n, d) matrix of this round's client updates.
        f: number of Byzantine clients (FoolsGold assumes no bound; only checked).
        client_history: (n, d) row i = client i's history H_i, the sum of all its updates
            including this round's (the strategies keep it per client id); ``None``: this
            round's updates only (the first round).
        kappa: the logit's confidence (the paper's kappa; 1 in the authors' code).
        normalize: divide by the sum of the weights (default, for model updates); False
            is the paper's plain sum sum_i alpha_i x_i.
        return_report: also return an :class:`AggregationReport` (the weights alpha as
            ``scores``, the clients with a positive weight as ``selected``).

    Returns the (d,) aggregate (zeros when every weight is 0). ``ValueError`` when the
    history's shape is not X's.
    """
    X = as_update_matrix(updates, check_finite=False)
    n, d = X.shape
    check_bound("foolsgold", n, f)
    if not np.isfinite(kappa) or kappa <= 0:
        raise ValueError(f"foolsgold: kappa must be a finite number > 0, got {kappa!r}")
    H = X if client_history is None else as_update_matrix(client_history, check_finite=False)
    if H.shape != X.shape:
        raise ValueError(f"foolsgold: client_history has shape {H.shape}, the updates {X.shape}")
    cs = 1.0 - cosine_distances(H) if n > 1 else np.zeros((1, 1))
    alpha = foolsgold_weights(cs, kappa)
    if alpha.any():
        agg = weighted_mean(X, alpha)
        if not normalize:
            agg = (agg * alpha.sum()).astype(X.dtype)
    else:
        agg = np.zeros(d, dtype=X.dtype)
    raise_if_nonfinite(X, agg)
    if return_report:
        return agg, AggregationReport("foolsgold", n, f, selected=np.flatnonzero(alpha > 0).tolist(), scores=alpha)
    return agg
