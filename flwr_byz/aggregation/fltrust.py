"""FLTrust: trust bootstrapped from the server's own update on a small root dataset.

Cao, Fang, Liu & Gong, "FLTrust: Byzantine-robust Federated Learning via Trust
Bootstrapping", NDSS 2021 (Algorithm 2). Each round the server trains the global model on
its root dataset (about 100 clean examples) like a client, giving the server update g0.
Every client update g_i gets the trust score

    TS_i = ReLU(cos(g_i, g0)),

its magnitude is normalised to the server's, g_i' = (|g0| / |g_i|) g_i, and the aggregate is

    g = sum_i TS_i g_i' / sum_j TS_j.

Its norm is at most |g0| whatever the clients send, and a client whose update points away
from the server's gets no weight, for any number of malicious clients (the paper's claim
rests on the root dataset being clean and representative). No Flower import here; the
strategies obtain g0 from a user callable (``server_update_fn``, docs/strategies.md).
"""

from __future__ import annotations

import numpy as np

from ._validate import as_update_matrix, raise_if_nonfinite
from .distances import distances_to
from .kernels import row_dots
from .mean import weighted_mean
from .registry import check_bound, register_rule
from .report import AggregationReport


def trust_scores(X: np.ndarray, server_update: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """``(TS, norms, |g0|)``: FLTrust's trust scores ReLU(cos(x_i, g0)) (float64; 0 for a
    zero update or a zero g0), the update norms and the server update's norm."""
    g0 = np.asarray(server_update, dtype=np.float64).reshape(-1)
    norms = distances_to(X, np.zeros(X.shape[1], dtype=X.dtype))
    g0_norm = float(np.linalg.norm(g0))
    dots = row_dots(X, g0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        cos = dots / (norms * g0_norm)
    ts = np.where((norms > 0) & (g0_norm > 0) & np.isfinite(cos), np.maximum(cos, 0.0), 0.0)
    return np.minimum(ts, 1.0), norms, g0_norm


@register_rule("fltrust", cost="O(n d) + the server's training", bound=(0, 1), translation_equivariant=False,
               strategy="FLTrust", bound_text="1 (any f: the root dataset is the anchor)",
               paper="Cao, Fang, Liu & Gong, NDSS 2021")
def fltrust(updates, *, server_update, f: int = 0, return_report: bool = False):
    """FLTrust: the trust-weighted mean of the client updates rescaled to the server
    update's norm (any n >= 1; f is only checked).

    Args:
        updates: (n, d) matrix of client updates.
        server_update: (d,) the server's own update g0 this round (the global model trained
            on the root dataset, minus the global model).
        f: number of Byzantine clients (FLTrust needs no bound on it; only checked).
        return_report: also return an :class:`AggregationReport`: the trust scores as
            ``scores``, the clients with a positive score as ``selected``.

    Returns the (d,) aggregate in X's dtype; zeros (the model is kept) when no client has a
    positive trust score or g0 is zero. ``ValueError`` when g0 is not finite or its length
    is not d.
    """
    X = as_update_matrix(updates, check_finite=False)
    n, d = X.shape
    check_bound("fltrust", n, f)
    g0 = np.asarray(server_update, dtype=np.float64).reshape(-1)
    if g0.shape[0] != d or not np.isfinite(g0).all():
        raise ValueError(f"fltrust: the server update must be a finite vector of length {d}, got shape "
                         f"{np.shape(server_update)}")
    ts, norms, g0_norm = trust_scores(X, g0)
    raise_if_nonfinite(X, norms)
    total = ts.sum()
    notes = []
    if total > 0:
        coef = ts / total * np.where(norms > 0, g0_norm / np.where(norms > 0, norms, 1.0), 0.0)
        agg = (weighted_mean(X, coef) * coef.sum()).astype(X.dtype)
    else:
        agg = np.zeros(d, dtype=X.dtype)
        notes.append("fltrust: no client update has a positive cosine with the server update; the model is kept")
    if not return_report:
        return agg
    report = AggregationReport("fltrust", n, f, selected=np.flatnonzero(ts > 0).tolist(), scores=ts,
                               details={"server_update_norm": g0_norm})
    if notes:
        report.details["notes"] = notes
    return agg, report
