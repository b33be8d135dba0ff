"""Min-Max and Min-Sum, the AGR-agnostic attacks of Shejwalkar & Houmansadr.

Shejwalkar & Houmansadr, "Manipulating the Byzantine: Optimizing Model Poisoning Attacks
and Defenses for Federated Learning", NDSS 2021, Section IV-C. From the honest updates
x_1..x_k it knows, the attacker takes their mean mu and a perturbation direction p:

* ``"unit_vec"``: p = -mu / ||mu||   (inverse unit vector of the mean),
* ``"std"``:      p = -std(x)       (per-coordinate sample std, ddof = 1, as the authors'
  code's ``torch.std``; needs k >= 2),
* ``"sign"``:     p = -sign(mu),

and sends ``mu + gamma * p`` (every corrupted client the same vector) with the largest
gamma >= 0 such that

* Min-Max: max_i ||mu + gamma p - x_i|| <= max_{i,j} ||x_i - x_j||  (the malicious update
  is no farther from any known update than the two farthest known updates are);
* Min-Sum: sum_i ||mu + gamma p - x_i||^2 <= max_j sum_i ||x_j - x_i||^2  (its sum of
  squared distances is no larger than the largest one of a known update).

``bound="min"`` for Min-Sum uses min_j instead of max_j on the right-hand side: that is
what the authors' public code computes (``min_score = torch.min(scores)``), a more
conservative attack than the paper's formula.

Both left-hand sides are convex in gamma and hold at gamma = 0 (the mean is within the
known updates' diameter, and its sum of squared distances is half their average), so the
feasible gammas form an interval [0, gamma*] and the search is well posed.

``method="halving"`` (default) is the paper's Algorithm (their code: gamma_init = 10,
tau = 1e-5): start at gamma_init, step by halves up on success and down on failure until
the last success is within tau of the last try. It cannot exceed 2 * gamma_init (the
search cap). ``method="exact"`` solves the same constraint in closed form: every squared
distance is the quadratic c_i + 2 gamma b_i + gamma^2 ||p||^2 with c_i = ||mu - x_i||^2 and
b_i = p . (mu - x_i), so gamma* is the smallest over i of the largest roots of
c_i + 2 gamma b_i + gamma^2 ||p||^2 = max_{i,j} ||x_i - x_j||^2 (Min-Max), or the largest
root of their sum set equal to the bound (Min-Sum); there is no cap and no tolerance
(the root is nudged down by an ulp if rounding put it just outside the constraint).

The AGR-tailored attack (:func:`agr_tailored`, the paper's Section IV-B) sends the same
``mu + gamma p`` but chooses gamma against the aggregation rule in use: the largest gamma
for which the rule still selects the malicious updates (Krum, Multi-Krum, Bulyan), or the
gamma that maximises the distance of the rule's output from the honest mean (trimmed mean,
median and every other rule), with the same halving search.

Only the (k, k) Gram matrix of the centred known updates and k dot products are needed;
they are accumulated in float64 over column chunks, so the extra memory is about
k * CHUNK_COLUMNS floats besides the (d,) vectors mu and p.
"""

from __future__ import annotations

import math

import numpy as np

from ..aggregation.backend import namespace, to_numpy
from . import _common
from .catalogue import register_attack

__all__ = ["DIRECTIONS", "agr_tailored", "min_max", "min_sum"]

DIRECTIONS = ("unit_vec", "std", "sign")
METHODS = ("halving", "exact")


class _Geometry:
    """mu, p and the quadratic coefficients of the squared distances, in float64."""

    def __init__(self, X: np.ndarray, direction: str, who: str):
        if direction not in DIRECTIONS:
            raise ValueError(f"{who}: direction must be one of {DIRECTIONS}, got {direction!r}")
        k, d = X.shape
        xp = namespace(X)  # mu, p and X's chunks on X's device; G, b, D float64 on the host
        if direction == "std":
            if k < 2:
                raise ValueError(f"{who}: direction='std' needs at least 2 known updates, got {k}")
            mu, sigma = _common.mean_std(X, ddof=1)
            p = -sigma
        else:
            mu, _ = _common.mean_std(X, ddof=0)
            if direction == "sign":
                p = -xp.sign(mu)
            else:
                norm = math.sqrt(float(mu @ mu))
                if norm == 0.0:
                    raise ValueError(f"{who}: direction='unit_vec' is undefined when the known updates' mean is 0")
                p = -mu / norm
        G = np.zeros((k, k), dtype=np.float64)
        b = np.zeros(k, dtype=np.float64)
        step = _common.CHUNK_COLUMNS
        for a in range(0, d, step):
            Y = xp.astype(X[:, a : a + step], xp.float64)
            Y -= mu[a : a + step]  # rows: x_i - mu
            G += to_numpy(Y @ Y.T)
            b -= to_numpy(Y @ p[a : a + step])  # p . (mu - x_i)
        c = np.diag(G).copy()  # ||x_i - mu||^2
        D = c[:, None] + c[None, :] - 2.0 * G
        np.maximum(D, 0.0, out=D)
        np.fill_diagonal(D, 0.0)
        self.mu, self.p, self.k = mu, p, k
        self.P = float(p @ p)  # ||p||^2
        self.c, self.b, self.D = c, b, D

    def sq_distances(self, gamma: float) -> np.ndarray:
        """||mu + gamma p - x_i||^2 for every known update i."""
        return self.c + 2.0 * gamma * self.b + gamma * gamma * self.P

    def update(self, gamma: float) -> np.ndarray:
        out = self.p * gamma
        out += self.mu
        return _common.as_float32(out)


def _largest_root(a: float, half_b: float, c0: float) -> float:
    """Largest root of a g^2 + 2 half_b g - c0 = 0 with a > 0, c0 >= 0 (it is >= 0)."""
    disc = np.sqrt(half_b * half_b + a * c0)
    if half_b <= 0:
        return (disc - half_b) / a
    return c0 / (half_b + disc) if c0 > 0 else 0.0


def _search(ok, exact_root, method: str, gamma_init: float, tau: float) -> float:
    if method == "halving":
        gamma, step, succ = gamma_init, gamma_init, 0.0
        while abs(succ - gamma) > tau:
            if ok(gamma):
                succ = gamma
                gamma += step / 2
            else:
                gamma -= step / 2
            step /= 2
        return succ
    gamma = max(exact_root(), 0.0)
    while gamma > 0.0 and not ok(gamma):  # undo a last-ulp overshoot of the closed form
        gamma = float(np.nextafter(gamma, 0.0))
    return gamma


def _check_search(who: str, method: str, gamma_init, tau) -> tuple[float, float]:
    if method not in METHODS:
        raise ValueError(f"{who}: method must be one of {METHODS}, got {method!r}")
    gamma_init = _common.check_finite_scalar(f"{who}: gamma_init", gamma_init, positive=True)
    tau = _common.check_finite_scalar(f"{who}: tau", tau, positive=True)
    return gamma_init, tau


@register_attack("min_max", kind="model", colluding=True, params={"direction": "unit_vec"},
                 knowledge="the corrupted clients' own honest updates (omniscient in the paper)",
                 paper="Shejwalkar & Houmansadr, NDSS 2021")
def min_max(known_updates, *, direction: str = "unit_vec", method: str = "halving",
            gamma_init: float = 10.0, tau: float = 1e-5, return_gamma: bool = False):
    """Min-Max: ``mu + gamma p`` with the largest gamma keeping it within the known diameter.

    Constraint: max_i ||mu + gamma p - x_i|| <= max_{i,j} ||x_i - x_j|| over the known
    updates x_i. A zero direction (p = 0: all known updates equal, or a mean with no
    nonzero sign) leaves nothing to search: the mean is returned with gamma = 0.

    Args:
        known_updates: (k, d) honest updates the attacker knows: the corrupted clients'
            own ones (the paper's partial-knowledge setting), or all honest updates (its
            full-knowledge, omniscient setting).
        direction: ``"unit_vec"``, ``"std"`` or ``"sign"`` (see the module docstring).
        method: ``"halving"`` (the paper's search, capped at 2 * gamma_init) or ``"exact"``.
        gamma_init: the halving search's initial gamma.
        tau: the halving search's stopping tolerance on gamma.
        return_gamma: also return the gamma found.

    Returns:
        The (d,) float32 update every corrupted client sends, or ``(update, gamma)``.
    """
    who = "min_max"
    gamma_init, tau = _check_search(who, method, gamma_init, tau)
    X = _common.as_known_updates(known_updates, f"{who}: known_updates", tensors=True)
    geo = _Geometry(X, direction, who)
    if geo.P == 0.0:
        gamma = 0.0
    else:
        radius2 = float(geo.D.max())

        def ok(g):
            return bool(geo.sq_distances(g).max() <= radius2)

        def exact_root():
            slack = np.maximum(radius2 - geo.c, 0.0)
            return min(_largest_root(geo.P, float(bi), float(si)) for bi, si in zip(geo.b, slack))

        gamma = _search(ok, exact_root, method, gamma_init, tau)
    update = geo.update(gamma)
    return (update, float(gamma)) if return_gamma else update


@register_attack("min_sum", kind="model", colluding=True, params={"direction": "unit_vec"},
                 knowledge="the corrupted clients' own honest updates (omniscient in the paper)",
                 paper="Shejwalkar & Houmansadr, NDSS 2021")
def min_sum(known_updates, *, direction: str = "unit_vec", bound: str = "max", method: str = "halving",
            gamma_init: float = 10.0, tau: float = 1e-5, return_gamma: bool = False):
    """Min-Sum: ``mu + gamma p`` with the largest gamma keeping its sum of squared distances low.

    Constraint: sum_i ||mu + gamma p - x_i||^2 <= max_j sum_i ||x_j - x_i||^2 over the known
    updates (``bound="max"``, the paper's formula) or <= min_j ... (``bound="min"``, the
    authors' code). Because sum_i (mu - x_i) = 0 the left-hand side is
    sum_i ||mu - x_i||^2 + k gamma^2 ||p||^2, so gamma* ||p|| = max_j ||x_j - mu|| (resp.
    min_j): the malicious update lies as far from the mean as the farthest (resp. nearest)
    known update. A zero direction returns the mean with gamma = 0.

    Args: as :func:`min_max`, plus ``bound`` (``"max"`` or ``"min"``).

    Returns:
        The (d,) float32 update every corrupted client sends, or ``(update, gamma)``.
    """
    who = "min_sum"
    if bound not in ("max", "min"):
        raise ValueError(f"{who}: bound must be 'max' (paper) or 'min' (authors' code), got {bound!r}")
    gamma_init, tau = _check_search(who, method, gamma_init, tau)
    X = _common.as_known_updates(known_updates, f"{who}: known_updates", tensors=True)
    geo = _Geometry(X, direction, who)
    if geo.P == 0.0:
        gamma = 0.0
    else:
        scores = geo.D.sum(axis=1)
        limit = float(scores.max() if bound == "max" else scores.min())
        c_sum, b_sum = float(geo.c.sum()), float(geo.b.sum())

        def ok(g):
            return bool(c_sum + 2.0 * g * b_sum + geo.k * g * g * geo.P <= limit)

        def exact_root():
            return _largest_root(geo.k * geo.P, b_sum, max(limit - c_sum, 0.0))

        gamma = _search(ok, exact_root, method, gamma_init, tau)
    update = geo.update(gamma)
    return (update, float(gamma)) if return_gamma else update


# Rules whose AGR-tailored attack asks "are the malicious updates selected?" (the paper's
# Krum, Multi-Krum and Bulyan attacks); every other rule: "does the deviation grow?".
SELECTION_RULES = ("krum", "multi_krum", "bulyan")


@register_attack("agr_tailored", kind="model", colluding=True, params={"rule": None, "direction": "std"},
                 knowledge="the rule in use, n, f and the corrupted clients' own honest updates (adaptive)",
                 paper="Shejwalkar & Houmansadr, NDSS 2021 (AGR-tailored attacks)")
def agr_tailored(known_updates, *, rule: str, f: int, n: int | None = None, direction: str = "std",
                 rule_params=None, pre=(), gamma_init: float = 10.0, tau: float = 1e-5, server_update=None):
    """The AGR-tailored attack: ``mu + gamma p`` with gamma searched against the rule.

    The simulated round is the known honest updates (repeated to n - f rows when they are
    fewer, as the rule-aware attacks of :mod:`flwr_byz.attacks.optimal` do) plus f copies of
    the malicious update. The paper's halving search (gamma_init, steps halved until within
    ``tau``) counts a gamma as a success when:

    * Krum: the update Krum selects is a malicious one;
    * Multi-Krum, Bulyan: every malicious update is in the selected set;
    * any other rule (trimmed mean, median, ...): the rule's output moves farther from the
      honest mean than at the last success (gamma = 0 to start).

    Args:
        known_updates: (k, d) honest updates the attacker knows (its own, or all honest).
        rule: the aggregation rule in use (a name of ``flwr_byz.aggregation.RULES``).
        f: the number of malicious updates sent (each a copy), f >= 1; also the rule's f.
        n: clients in the round (default k + f).
        direction: ``"std"`` (the paper's tailored experiments), ``"unit_vec"`` or ``"sign"``.
        rule_params, pre: the rule's parameters and pre-aggregators, as the server has them.
        gamma_init, tau: the search (the authors' code: 10 and 1e-5).
        server_update: (d,) FLTrust's g0 when the attacker knows it (default: the mean of the
            honest rows stands in, :func:`flwr_byz.attacks.optimal.round_inputs`).

    Returns ``(update, gamma, harm)``: the (d,) float32 update, the gamma found (0 when no
    gamma succeeds: the mean itself) and the distance of the rule's output from the honest
    mean in the simulated round at that gamma.
    """
    from .optimal import SimulatedRound

    sim = SimulatedRound(known_updates, rule=rule, f=f, n=n, rule_params=rule_params, pre=pre,
                         server_update=server_update)
    rule, aggregate = sim.rule, sim.aggregate  # the registry's name, for the criteria below
    gamma_init, tau = _check_search("agr_tailored", "halving", gamma_init, tau)
    geo = _Geometry(sim.X, direction, "agr_tailored")
    malicious = set(range(sim.H.shape[0], sim.H.shape[0] + sim.f))

    def run(gamma: float):
        return sim(geo.update(gamma))

    base, _ = run(0.0)
    state = {"harm": -np.inf if base is None else base}

    def ok(gamma: float) -> bool:
        harm, report = run(gamma)
        if harm is None:
            return False
        if rule in SELECTION_RULES and not aggregate.pre:
            chosen = set(report.selected or [])
            success = bool(chosen & malicious) if rule == "krum" else malicious <= chosen
        else:
            success = harm > state["harm"]
        if success:
            state["harm"] = harm
        return success

    gamma = _search(ok, None, "halving", gamma_init, tau)
    harm, _ = run(gamma)
    return geo.update(gamma), float(gamma), float(harm if harm is not None else 0.0)
