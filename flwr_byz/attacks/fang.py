"""Fang et al.'s local model poisoning attacks on Krum and on the trimmed mean / median.

Fang, Cao, Jia & Gong, "Local Model Poisoning Attacks to Byzantine-Robust Federated
Learning", USENIX Security 2020. The attackers deviate the global model against s, the
sign of the direction in which the benign updates would move each parameter (here
s = sign of the mean of the benign updates the attacker knows; the paper's partial
knowledge uses the corrupted devices' own benign updates, its full knowledge all of them).
In flwr-byz the server aggregates updates (local model minus the global model), so the
paper's crafted local models are written as updates:

* **Trimmed mean / median** (:func:`fang_trimmed_mean`, Section 4.2): with u_max,j and
  u_min,j the largest and smallest known benign update of coordinate j and b > 1 (the
  paper's b = 2), each attacker sends, per coordinate, a value drawn uniformly from
  [u_max,j, b u_max,j] (u_max,j > 0) or [u_max,j / b, u_max,j] (u_max,j <= 0) where s_j = -1,
  and from [u_min,j / b, u_min,j] (u_min,j > 0) or [b u_min,j, u_min,j] (u_min,j <= 0) where
  s_j = 1: just beyond the benign extremes, on the side opposite to s_j. The paper uses the
  same attack against the median.
* **Krum** (:func:`fang_krum`, Section 4.1): the crafted update -lambda s (the global model
  moved by lambda against s), sent by every attacker (the paper's other c - 1 crafted
  models lie close to it; flwr-byz's colluders send the same vector), with the largest
  lambda, halved from the paper's upper bound down to a threshold of 1e-5, for which Krum
  selects a crafted update in the simulated round (the known benign updates plus crafted
  copies, see :func:`fang_krum`).

No Flower import.
"""

from __future__ import annotations

import math

import numpy as np

from . import _common
from .catalogue import register_attack


def _direction(X: np.ndarray) -> np.ndarray:
    """s: the sign of the mean of the known benign updates (0 where it is 0), float64."""
    mu, _ = _common.mean_std(X, ddof=0)
    return np.sign(mu)


@register_attack("fang_trimmed_mean", kind="model", colluding=True, params={"b": 2.0, "seed": None},
                 knowledge="the corrupted clients' own honest updates (the paper's partial knowledge)",
                 paper="Fang, Cao, Jia & Gong, USENIX Security 2020 (attack on trimmed mean / median)")
def fang_trimmed_mean(known_updates, *, b: float = 2.0, rng=None) -> np.ndarray:
    """One attacker's crafted update against the trimmed mean or the median.

    Args:
        known_updates: (k, d) benign updates the attacker knows (k >= 1).
        b: > 1, how far beyond the benign extremes the values may go (the paper's 2).
        rng: a Generator or seed for the uniform draws (each attacker its own).

    Returns the (d,) float32 update (coordinates where s_j = 0 get the mean, 0 change).
    """
    X = _common.as_known_updates(known_updates, "known_updates")
    b = _common.check_finite_scalar("fang_trimmed_mean: b", b, positive=True)
    if not b > 1:
        raise ValueError(f"fang_trimmed_mean: b must be > 1, got {b}")
    X64 = X.astype(np.float64)
    s = _direction(X)
    hi, lo = X64.max(axis=0), X64.min(axis=0)
    # s_j = -1: beyond the largest benign value; s_j = 1: beyond the smallest
    up = np.where(hi > 0, b * hi, hi / b)  # s_j = -1: [u_max, up], the far end above u_max
    down = np.where(lo > 0, lo / b, b * lo)  # s_j = 1: [down, u_min], the far end below u_min
    low = np.where(s < 0, hi, down)
    high = np.where(s < 0, up, lo)
    u = np.random.default_rng(rng).random(X.shape[1])
    out = low + u * (high - low)
    out[s == 0] = X64.mean(axis=0)[s == 0]
    return out.astype(np.float32)


def krum_lambda_bound(X: np.ndarray, f: int, n: int) -> float:
    """The paper's upper bound on lambda (Section 4.1, in update terms: the global model is
    the origin): 1 / ((n - 2f - 1) sqrt(d)) min_i sum of the n - f - 2 smallest distances
    from benign update i to the other benign ones, plus 1 / sqrt(d) max_i |x_i| (the
    distance from the global model)."""
    from ..aggregation.distances import pairwise_sq_distances

    k, d = X.shape
    D = np.sqrt(pairwise_sq_distances(X))
    np.fill_diagonal(D, np.inf)
    q = max(min(n - f - 2, k - 1), 1)
    sums = np.sort(D, axis=1)[:, :q].sum(axis=1) if k > 1 else np.zeros(1)
    norms = np.sqrt((X.astype(np.float64) ** 2).sum(axis=1))
    denom = max(n - 2 * f - 1, 1)
    return float(sums.min() / (denom * math.sqrt(d)) + norms.max() / math.sqrt(d))


@register_attack("fang_krum", kind="model", colluding=True, params={"threshold": 1e-5},
                 knowledge="the corrupted clients' own honest updates (the paper's partial knowledge) and f",
                 paper="Fang, Cao, Jia & Gong, USENIX Security 2020 (attack on Krum)")
def fang_krum(known_updates, *, f: int, threshold: float = 1e-5) -> tuple[np.ndarray, float]:
    """The crafted update -lambda s against Krum, and lambda.

    The simulated round is the known benign updates plus c copies of the crafted one, Krum
    at f = c, for the largest c <= f the k known updates allow (k + c >= 2c + 3; with
    partial knowledge k is the number of attackers, so c < f: as FLPoison's simulation,
    fewer crafted supporters than will really be sent). lambda starts at the paper's bound
    (:func:`krum_lambda_bound` of that round) and is halved until Krum selects a crafted
    update.

    Args:
        known_updates: (k, d) benign updates the attacker knows (fewer than 4 are repeated
            cyclically to 4 rows, the smallest round Krum accepts with one crafted copy).
        f: the number of crafted updates that will be sent (every attacker the same one).
        threshold: below this lambda the search gives up: the attack then sends the zero
            update (the global model unchanged) and lambda = 0.

    Returns ``(update, lambda)``: the (d,) float32 update and the lambda found.
    """
    from ..aggregation import krum

    X = _common.as_known_updates(known_updates, "known_updates")
    f = _common.check_int("f", f, minimum=1)
    threshold = _common.check_finite_scalar("fang_krum: threshold", threshold, positive=True)
    s = _direction(X)
    if X.shape[0] < 4:  # too few to simulate a Krum round: the known updates repeated to 4 rows
        X = X[np.arange(4) % X.shape[0]]
    k = X.shape[0]
    c = min(f, k - 3)
    lam = krum_lambda_bound(X, c, k + c)
    while lam >= threshold:
        crafted = (-lam * s).astype(X.dtype)
        _, report = krum(np.vstack([X, np.tile(crafted, (c, 1))]), f=c, return_report=True)
        if report.selected[0] >= k:
            return crafted.astype(np.float32), float(lam)
        lam /= 2
    return np.zeros(X.shape[1], np.float32), 0.0
