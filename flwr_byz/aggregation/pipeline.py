"""Rules by name, and pre-aggregators composed with a rule into one callable.

This is the one object the Flower adapters hold: ``RobustAggregator("bulyan", f=3)`` is a
callable ``(X, weights=None) -> (aggregate, report)`` as sketched in the design notes.
The rules are those declared in :mod:`flwr_byz.aggregation.registry` (``RULES`` is a live
view of it); importing this module imports every rule module, which registers them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import numpy as np

from .preaggregation import adaptive_robust_clipping, bucketing, clip_norms, nearest_neighbor_mixing
from .registry import REGISTRY, RULES, minimum_clients
from .report import AggregationReport

# The modules that declare the built-in rules (importing one registers its rules).
RULE_MODULES = ("mean", "coordinate", "krum", "bulyan", "geometric_median", "centered_clipping", "signsgd", "mda", "monna", "spectral", "dnc",
                "signguard", "clustering", "fltrust", "foolsgold", "flame")
for _module in RULE_MODULES:
    importlib.import_module(f".{_module}", __package__)

PRE_AGGREGATORS = ("clip", "bucketing", "nnm", "arc")


@dataclass
class PreAggregator:
    """One pre-aggregation step: ``kind`` in {"clip", "bucketing", "nnm", "arc"} plus its options.

    ``PreAggregator("clip", threshold=5.0)``, ``PreAggregator("bucketing", s=2, seed=0)``,
    ``PreAggregator("nnm")``, ``PreAggregator("arc")`` (NNM and ARC use the aggregator's f).
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
        if self.kind == "arc":
            return adaptive_robust_clipping(X, f=f), weights
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
        if rule not in REGISTRY:
            raise ValueError(f"unknown rule {rule!r}; choose from {sorted(REGISTRY)}")
        if isinstance(f, bool) or not isinstance(f, (int, np.integer)) or f < 0:
            raise ValueError(f"{rule}: f must be a non-negative integer, got {f!r}")
        unknown = sorted(set(params) - set(REGISTRY[rule].params))
        if unknown:
            raise ValueError(f"{rule}: unknown parameter(s) {unknown}; its parameters: "
                             f"{', '.join(f'{k}={v!r}' for k, v in REGISTRY[rule].params.items()) or 'none'}")
        self.rule, self.f, self.pre, self.params = rule, int(f), list(pre), dict(params)
        self._fn = REGISTRY[rule].fn
        self._takes_weights = REGISTRY[rule].weighted

    def minimum_clients(self) -> int:
        """Smallest number of replies for which the rule (after bucketing) still holds."""
        need = minimum_clients(self.rule, self.f)
        for p in reversed(self.pre):  # what each step needs of its input, from the rule back
            if p.kind == "bucketing":
                # n updates make ceil(n / s) buckets, and ceil(n / s) >= need <=> n >= (need - 1) s + 1
                need = (need - 1) * int(p.options.get("s", 2)) + 1
            elif p.kind == "nnm":
                need = max(need, self.f + 1)
            elif p.kind == "arc":
                need = max(need, 2 * self.f, 1)
        return need

    def __call__(self, X, weights=None, *, server_round: int = 0, **call_params):
        """Aggregate; returns ``(aggregate, AggregationReport)``."""
        for p in self.pre:
            X, weights = p.apply(X, weights, self.f, server_round)
        kwargs = dict(self.params)
        if self.rule != "mean" or self.f:
            kwargs["f"] = self.f
        if kwargs.get("seed") is not None:  # a rule's own randomness: fresh per round, reproducible
            kwargs["seed"] = (int(kwargs["seed"]), int(server_round))
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
            report.details["notes"] = report.details.get("notes", []) + notes
        return agg, report

    def __repr__(self) -> str:
        pre = f", pre={[p.kind for p in self.pre]}" if self.pre else ""
        return f"RobustAggregator({self.rule!r}, f={self.f}{pre}, {self.params})"


__all__ = ["RULES", "PreAggregator", "RobustAggregator", "AggregationReport", "minimum_clients"]
