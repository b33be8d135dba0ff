"""Rule-aware ("optimal") ALIE and IPM: the attack's scale searched against the rule in use.

ALIE sends mu - z sigma and IPM -epsilon mu (mu, sigma: the mean and standard deviation of
the honest updates the attacker knows). Their papers fix the scale (z_max, a small
epsilon); ByzFL's "optimal" variants (Allouah et al., AISTATS 2023, "Fixing by Mixing")
instead search the scale that maximises the harm *under the aggregation rule in use*:

    maximise over s:   | A(H + f copies of attack(s)) - mean(H) |

where A is the rule (with its f and parameters, after any pre-aggregators) and H the
honest updates. The search is a deterministic line search on s: an expansion phase from
``start`` (step ``delta``, doubled after each improvement) and a contraction phase (steps
of +-delta, delta multiplied by ``ratio`` after each failure), ``evals`` evaluations of A in
all. Cost: ``evals`` calls of the rule on an (n, d) matrix.

Knowledge: the attacker knows the rule, n and f (an adaptive, rule-aware attacker) and the
honest updates it is given. In the Flower clients that is the corrupted clients' *own*
honest updates (non-omniscient): H is then those m updates repeated to n - m rows, so that
the simulated round has the real round's proportion of honest and Byzantine rows; pass the
honest clients' updates too for ByzFL's omniscient setting. No Flower import.
"""

from __future__ import annotations

import numpy as np

from . import _common
from .alie import alie_update
from .catalogue import register_attack
from .classic import inner_product_manipulation

OBJECTIVE = "distance between the rule's output and the honest mean"


def _population(known: np.ndarray, n: int, f: int) -> np.ndarray:
    """The n - f honest rows of the simulated round: the known updates repeated cyclically
    (all of them, once, when they are already n - f or more)."""
    honest = n - f
    if known.shape[0] >= honest:
        return known
    return known[np.arange(honest) % known.shape[0]]


def line_search(objective, *, start: float, delta: float, evals: int, ratio: float) -> tuple[float, float]:
    """Maximise ``objective(s)`` with ``evals`` evaluations: expansion from ``start`` with
    step ``delta`` (doubled on each improvement), then contraction (try best +- delta;
    delta times ``ratio`` after a round without improvement). Returns (s, objective(s))."""
    best_s, best_y = start, objective(start)
    left = evals - 1
    while left > 0:
        y = objective(best_s + delta)
        left -= 1
        if y > best_y:
            best_s, best_y, delta = best_s + delta, y, 2 * delta
        else:
            delta *= ratio
            break
    while left > 0:
        improved = False
        for s in (best_s + delta, best_s - delta):
            if left == 0:
                break
            y = objective(s)
            left -= 1
            if y > best_y:
                best_s, best_y, improved = s, y, True
                break
        if not improved:
            delta *= ratio
    return best_s, best_y


def round_inputs(rule: str, H: np.ndarray, server_update=None) -> dict:
    """The per-round inputs ``rule`` cannot run without, as the attacker's simulated round
    stands them in (the optional ones, such as centered clipping's centre, keep the rule's
    default): FLTrust's ``server_update`` is the given (d,) g0, else the float64 mean of the
    (k, d) honest rows H. Raises ValueError when a given g0 is not d finite values."""
    from ..aggregation import REGISTRY

    inputs = {}
    if "server_update" in REGISTRY[rule].required_inputs:
        if server_update is None:
            inputs["server_update"] = H.astype(np.float64).mean(axis=0)
        else:
            g0 = np.asarray(server_update, dtype=np.float64).reshape(-1)
            if g0.shape != (H.shape[1],) or not np.isfinite(g0).all():
                raise ValueError(f"server_update must be {H.shape[1]} finite values, got shape {np.shape(server_update)}")
            inputs["server_update"] = g0
    return inputs


class SimulatedRound:
    """The attacker's simulated round, shared by the rule-aware searches (and AGR-tailored's):
    the rule (any name the registry resolves: ``"FLTrust"``, ``"multi-krum"``) with its f
    (0 for the plain mean, which tolerates none), parameters and pre-aggregators; the n - f
    honest rows H (:func:`_population` of the (k, d) known updates X); their float64 mean
    ``target``; and the per-round ``inputs`` of :func:`round_inputs`. Calling it with a (d,)
    malicious update gives ``(harm, report)``: the rule on H plus f copies of it, harm its
    output's distance from ``target``; ``(None, None)`` when the rule refuses the round (a
    bound it cannot meet: no information)."""

    def __init__(self, known_updates, *, rule: str, f: int, n: int | None, rule_params, pre, server_update):
        from ..aggregation import RobustAggregator
        from ..aggregation.registry import resolve_rule

        self.rule = resolve_rule(rule).name
        self.X = _common.as_known_updates(known_updates, "known_updates")
        self.f = _common.check_int("f", f, minimum=1)
        n = self.X.shape[0] + self.f if n is None else _common.check_int("n", n, minimum=self.f + 1)
        self.H = _population(self.X, n, self.f)
        self.target = self.H.astype(np.float64).mean(axis=0)
        self.aggregate = RobustAggregator(self.rule, f=0 if self.rule == "mean" else self.f, pre=list(pre or ()),
                                          **dict(rule_params or {}))
        self.inputs = round_inputs(self.rule, self.H, server_update)

    def __call__(self, byz: np.ndarray):
        rows = np.vstack([self.H, np.tile(byz, (self.f, 1))]).astype(self.H.dtype)
        try:
            out, report = self.aggregate(rows, **self.inputs)
        except ValueError:
            return None, None
        return float(np.linalg.norm(out.astype(np.float64) - self.target)), report


def _search(known_updates, make, *, rule: str, f: int, n: int | None, rule_params, pre, evals, start, delta,
            ratio, server_update):
    sim = SimulatedRound(known_updates, rule=rule, f=f, n=n, rule_params=rule_params, pre=pre,
                         server_update=server_update)
    evals = _common.check_int("evals", evals, minimum=1)
    ratio = _common.check_finite_scalar("ratio", ratio, positive=True)
    if not 0.5 < ratio < 1:
        raise ValueError(f"ratio must be in (0.5, 1), got {ratio}")

    def harm(s: float) -> float:
        y, _ = sim(make(sim.X, s))
        return -np.inf if y is None else y

    s, y = line_search(harm, start=float(start), delta=float(delta), evals=evals, ratio=ratio)
    return make(sim.X, s), s, y


@register_attack("alie_optimal", kind="model", colluding=True,
                 params={"rule": None, "evals": 20, "start": 0.0, "delta": 1.0},
                 knowledge="the rule in use, n, f and the corrupted clients' own honest updates (adaptive)",
                 paper="Baruch et al., NeurIPS 2019, scale searched as in Allouah et al., AISTATS 2023 (ByzFL)")
def optimal_alie(known_updates, *, rule: str, f: int, n: int | None = None, rule_params=None, pre=(),
                 evals: int = 20, start: float = 0.0, delta: float = 1.0, ratio: float = 0.8, server_update=None):
    """ALIE with the z that maximises the rule's distance from the honest mean.

    Args:
        known_updates: (m, d) honest updates the attacker knows (its own, or all honest).
        rule: the aggregation rule in use (a name of ``flwr_byz.aggregation.RULES``).
        f: the number of Byzantine updates sent (each a copy of the attack), f >= 1; also
            the rule's f.
        n: clients in the round (default: m + f, the known updates being all honest ones).
        rule_params, pre: the rule's parameters and pre-aggregators, as the server has them.
        evals, start, delta, ratio: the line search over z (see :func:`line_search`).
        server_update: (d,) FLTrust's g0 when the attacker knows it (default: the mean of
            the honest rows stands in, :func:`round_inputs`); other rules ignore it.

    Returns:
        ``(update, z, harm)``: the (d,) float32 update ``mu - z sigma``, the z found and the
        distance it achieves in the simulated round.
    """
    return _search(known_updates, lambda X, z: alie_update(X, z=z), rule=rule, f=f, n=n, rule_params=rule_params,
                   pre=pre, evals=evals, start=start, delta=delta, ratio=ratio, server_update=server_update)


@register_attack("ipm_optimal", kind="model", colluding=True,
                 params={"rule": None, "evals": 20, "start": 0.0, "delta": 1.0},
                 knowledge="the rule in use, n, f and the corrupted clients' own honest updates (adaptive)",
                 paper="Xie, Koyejo & Gupta, UAI 2019, scale searched as in Allouah et al., AISTATS 2023 (ByzFL)")
def optimal_ipm(known_updates, *, rule: str, f: int, n: int | None = None, rule_params=None, pre=(),
                evals: int = 20, start: float = 0.0, delta: float = 1.0, ratio: float = 0.8, server_update=None):
    """IPM with the epsilon that maximises the rule's distance from the honest mean (the
    search may also settle on a negative epsilon: the honest mean scaled up).

    Arguments and returns as :func:`optimal_alie`, with epsilon for z:
    ``(update, epsilon, harm)``, the update being ``-epsilon mu``.
    """
    return _search(known_updates, lambda X, e: (-e * X.astype(np.float64).mean(axis=0)).astype(np.float32)
                   if e < 0 else inner_product_manipulation(X, epsilon=e), rule=rule, f=f, n=n,
                   rule_params=rule_params, pre=pre, evals=evals, start=start, delta=delta, ratio=ratio,
                   server_update=server_update)
