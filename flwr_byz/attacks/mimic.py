"""Mimic: every corrupted client sends the same honest update, the one that most biases the
average towards the honest clients' main direction of disagreement.

Karimireddy, He & Jaggi, "Byzantine-Robust Learning on Heterogeneous Datasets via
Bucketing", ICLR 2022. The Byzantine workers copy one good worker i*; to maximise the
heterogeneity bias they take z, the top principal direction of the good workers' updates,
and i* = argmax_i <x_i, z> (the paper estimates z over a warm-up and then keeps i*). Here
z is computed exactly each round from the updates the attacker knows (the corrupted
clients' own honest updates in flwr-byz's clients: non-omniscient; pass the honest
clients' too for the paper's setting), and i* is the update with the largest projection
|<x_i - mean, z>| (z's sign is arbitrary). The update sent is an honest one, so no rule
that judges updates one by one can tell it apart; its harm is in the weight it gains.
No Flower import.
"""

from __future__ import annotations

import numpy as np

from . import _common
from .catalogue import register_attack


@register_attack("mimic", kind="model", colluding=True, params={},
                 knowledge="the corrupted clients' own honest updates (the paper: all good workers')",
                 paper="Karimireddy, He & Jaggi, ICLR 2022")
def mimic(known_updates) -> tuple[np.ndarray, int]:
    """``(update, i)``: the known update ``i`` farthest from their mean along their top
    principal direction (ties: the lower index), as float32.

    Args:
        known_updates: (m, d) honest updates the attacker knows (m >= 1; with m = 1 that
            update is sent).
    """
    from ..aggregation.distances import pairwise_sq_distances
    from ..aggregation.spectral import top_eigen

    X = _common.as_known_updates(known_updates, "mimic: known_updates")
    m = X.shape[0]
    if m == 1:
        return X[0].astype(np.float32), 0
    _, proj = top_eigen(pairwise_sq_distances(X), np.full(m, 1.0 / m))
    i = int(np.argmax(np.abs(proj)))  # the first of equal maxima
    return X[i].astype(np.float32), i
