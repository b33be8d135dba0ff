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
from .backend import device_of, namespace, to_numpy
from .registry import check_bound, register_rule
from .report import AggregationReport


@register_rule("signsgd_majority", tensor_native=True, cost="O(n d)", bound=(2, 1), strategy="SignSGDMajority", coordinate_wise=True,
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
    xp = namespace(X)
    agg = xp.empty(d, dtype=X.dtype, device=device_of(X))
    agree = np.zeros(n)
    for a in range(0, d, CHUNK_COLUMNS):
        signs = xp.astype(xp.sign(X[:, a : a + CHUNK_COLUMNS]), xp.int8)
        vote = xp.sign(xp.sum(signs, axis=0, dtype=xp.int64))
        agg[a : a + CHUNK_COLUMNS] = xp.astype(vote, X.dtype) * server_lr
        if return_report:
            agree += to_numpy(xp.sum(xp.astype(signs == vote, xp.int64), axis=1))
    if return_report:
        return agg, AggregationReport(
            "signsgd_majority", n, f, scores=agree / d, details={"server_lr": float(server_lr)}
        )
    return agg
