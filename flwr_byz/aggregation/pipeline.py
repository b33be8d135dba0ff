"""Rules by name, and pre-aggregators composed with a rule into one callable.

This is the one object the Flower adapters hold: ``RobustAggregator("bulyan", f=3)`` is a
callable ``(X, weights=None) -> (aggregate, report)`` as sketched in the design notes.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .bulyan import bulyan
from .centered_clipping import centered_clipping
from .coordinate import median, trimmed_mean
from .geometric_median import geometric_median
from .krum import krum, multi_krum
from .mean import mean
from .preaggregation import bucketing, clip_norms, nearest_neighbor_mixing
from .report import AggregationReport
from .signsgd import sign_majority_vote

RULES: dict[str, Callable] = {
    "mean": mean,
    "median": median,
    "trimmed_mean": trimmed_mean,
    "krum": krum,
    "multi_krum": multi_krum,
    "bulyan": bulyan,
    "geometric_median": geometric_median,
    "centered_clipping": centered_clipping,
    "signsgd_majority": sign_majority_vote,
}

PRE_AGGREGATORS = ("clip", "bucketing", "nnm")


def minimum_clients(rule: str, f: int) -> int:
    """Smallest n for which ``rule`` tolerates ``f`` Byzantine clients."""
    return {
        "mean": 1 if f == 0 else np.iinfo(np.int64).max,
        "krum": 2 * f + 3,
        "multi_krum": 2 * f + 3,
        "bulyan": 4 * f + 3,
    }.get(rule, 2 * f + 1)


@dataclass
class PreAggregator:
    """One pre-aggregation step: ``kind`` in {"clip", "bucketing", "nnm"} plus its options.

    ``PreAggregator("clip", threshold=5.0)``, ``PreAggregator("bucketing", s=2, seed=0)``,
    ``PreAggregator("nnm")`` (NNM uses the aggregator's f).
    """

    kind: str
    options: dict = field(default_factory=dict)

    def __init__(self, kind: str, **options):
        if kind not in PRE_AGGREGATORS:
            raise ValueError(f"unknown pre-aggregator {kind!r}; choose from {PRE_AGGREGATORS}")
        self.kind, self.options = kind, options

    def apply(self, X, weights, f: int, server_round: int = 0):
        if self.kind == "clip":
            return clip_norms(X, **self.options), weights
        if self.kind == "nnm":
            return nearest_neighbor_mixing(X, f=f), weights
        opts = dict(self.options)
        seed = opts.pop("seed", None)
        seed = None if seed is None else (int(seed), int(server_round))  # fresh shuffle per round
        Xb, _, wb = bucketing(X, seed=seed, weights=weights, **opts)
        return Xb, wb


class RobustAggregator:
    """A rule of the core, optionally preceded by pre-aggregators.

    Args:
        rule: a name from :data:`RULES`.
        f: number of Byzantine clients to tolerate (passed to the rule and to NNM).
        pre: pre-aggregators applied in order before the rule.
        **params: the rule's own keyword arguments (``m`` for Multi-Krum, ``tau`` ...).
    """

    def __init__(self, rule: str, *, f: int = 0, pre=(), **params):
        if rule not in RULES:
            raise ValueError(f"unknown rule {rule!r}; choose from {sorted(RULES)}")
        if isinstance(f, bool) or not isinstance(f, (int, np.integer)) or f < 0:
            raise ValueError(f"{rule}: f must be a non-negative integer, got {f!r}")
        self.rule, self.f, self.pre, self.params = rule, int(f), list(pre), dict(params)
        self._fn = RULES[rule]
        self._takes_weights = "weights" in inspect.signature(self._fn).parameters

    def minimum_clients(self) -> int:
        """Smallest number of replies for which the rule (after bucketing) still holds."""
        need = minimum_clients(self.rule, self.f)
        for p in reversed(self.pre):
            if p.kind == "bucketing":
                # n updates make ceil(n / s) buckets, and ceil(n / s) >= need <=> n >= (need - 1) s + 1
                need = (need - 1) * int(p.options.get("s", 2)) + 1
        return need

    def __call__(self, X, weights=None, *, server_round: int = 0, **call_params):
        """Aggregate; returns ``(aggregate, AggregationReport)``."""
        for p in self.pre:
            X, weights = p.apply(X, weights, self.f, server_round)
        kwargs = dict(self.params)
        if self.rule != "mean" or self.f:
            kwargs["f"] = self.f
        kwargs.update(call_params)  # per-round values (f of FedTrimmedAvg's beta, cclip's centre)
        if self._takes_weights and weights is not None:
            kwargs["weights"] = weights
        notes = []
        n = np.shape(X)[0]
        if kwargs.get("m") is not None and int(kwargs["m"]) > n:  # Flower keeps the best min(m, n)
            notes.append(f"{self.rule}: m={kwargs['m']} is more than the {n} usable updates; m={n} this round")
            kwargs["m"] = n
        agg, report = self._fn(X, return_report=True, **kwargs)
        if self.pre:
            report.details["pre"] = "+".join(p.kind for p in self.pre)
        if notes:
            report.details["notes"] = notes
        return agg, report

    def __repr__(self) -> str:
        pre = f", pre={[p.kind for p in self.pre]}" if self.pre else ""
        return f"RobustAggregator({self.rule!r}, f={self.f}{pre}, {self.params})"


__all__ = ["RULES", "PreAggregator", "RobustAggregator", "AggregationReport", "minimum_clients"]
