"""signSGD with majority vote.

Bernstein, Zhao, Azizzadenesheli & Anandkumar, "signSGD with Majority Vote is
Communication Efficient and Fault Tolerant", ICLR 2019. Every client sends the sign of its
update; the server returns ``server_lr * sign(sum_i sign(x_i))`` (0 where the vote ties).
A coordinate's vote can only be flipped by Byzantine clients when they outnumber the honest
margin, so the rule needs an honest majority: n >= 2f + 1.
"""

from __future__ import annotations

import numpy as np

from ._validate import CHUNK_COLUMNS, as_update_matrix
from .registry import check_bound, register_rule
from .report import AggregationReport


@register_rule("signsgd_majority", cost="O(n d)", bound=(2, 1), strategy="SignSGDMajority", coordinate_wise=True,
               translation_equivariant=False, paper="Bernstein, Zhao, Azizzadenesheli & Anandkumar, ICLR 2019")
def sign_majority_vote(updates, *, f: int = 0, server_lr: float = 1e-3, return_report: bool = False):
    """Majority vote of the clients' signs, scaled by the server step size.

    Args:
        updates: (n, d) matrix of client updates (only their signs are used).
        f: number of Byzantine clients to tolerate (only checked: n >= 2f + 1).
        server_lr: the server's step size; the aggregate has entries in {-lr, 0, +lr}.
        return_report: also return an :class:`AggregationReport`; ``scores`` holds each
            client's agreement with the vote (fraction of coordinates where its sign wins).
    """
    X = as_update_matrix(updates)
    n, d = X.shape
    check_bound("signsgd_majority", n, f)
    agg = np.empty(d, dtype=X.dtype)
    agree = np.zeros(n)
    for a in range(0, d, CHUNK_COLUMNS):
        signs = np.sign(X[:, a : a + CHUNK_COLUMNS]).astype(np.int8)
        vote = np.sign(signs.sum(axis=0, dtype=np.int64))
        agg[a : a + CHUNK_COLUMNS] = server_lr * vote
        if return_report:
            agree += (signs == vote).sum(axis=1)
    if return_report:
        return agg, AggregationReport(
            "signsgd_majority", n, f, scores=agree / d, details={"server_lr": float(server_lr)}
        )
    return agg
