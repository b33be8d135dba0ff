"""The per-round inputs a rule cannot run without, for the tests that call every rule.

FLTrust needs the server's own update each round (``server_update``). The generic tests
give it the coordinate-wise median of the finite rows: independent of the rows' order (the
permutation tests), inside the honest rows' range (the breakdown tests), and finite when a
test plants a NaN row (so the rule, not the input, names the client).
"""

from __future__ import annotations

import numpy as np

from flwr_byz.aggregation import REGISTRY


def round_inputs(rule: str, X) -> dict:
    """``{"server_update": ...}`` for a rule that requires it, else ``{}``."""
    if "server_update" not in REGISTRY[rule].required_inputs:
        return {}
    X = np.asarray(X, dtype=np.float64)
    finite = X[np.isfinite(X).all(axis=1)] if X.ndim == 2 else X
    if X.ndim != 2 or finite.shape[0] == 0:
        return {"server_update": np.zeros(X.shape[-1] if X.ndim else 1)}
    return {"server_update": np.median(finite, axis=0)}
