"""The per-round report every rule can return next to its aggregate."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class AggregationReport:
    """What a rule did with the n updates it was given.

    Attributes:
        rule: name of the rule (``"krum"``, ``"bulyan"``, ...).
        n: number of updates the rule saw (after any pre-aggregation).
        f: number of Byzantine clients the rule was asked to tolerate.
        selected: indices of the updates the rule trusted (for selection rules such as Krum,
            Multi-Krum and Bulyan's selection phase); ``None`` for coordinate-wise rules,
            which keep a different subset per coordinate.
        scores: per-update scores where the rule computes some (Krum scores, geometric
            median weights, clipping factors); lower is better for Krum.
        dropped: updates removed *before* the rule ran, by index, with the reason.
        details: rule-specific numbers (iterations, clip radius, ...).
    """

    rule: str
    n: int
    f: int
    selected: list[int] | None = None
    scores: np.ndarray | None = None
    dropped: dict[int, str] = field(default_factory=dict)
    details: dict = field(default_factory=dict)

    def to_metrics(self, prefix: str = "byz.") -> dict:
        """Flatten into scalars and lists of scalars, as Flower's MetricRecord accepts."""
        out: dict = {f"{prefix}n": int(self.n), f"{prefix}f": int(self.f)}
        if self.selected is not None:
            out[f"{prefix}selected"] = [int(i) for i in self.selected]
        if self.scores is not None:
            out[f"{prefix}scores"] = [float(s) for s in np.asarray(self.scores).ravel()]
        if self.dropped:
            out[f"{prefix}dropped"] = [int(i) for i in self.dropped]
        for key, value in self.details.items():
            if isinstance(value, (bool, np.bool_)):
                out[f"{prefix}{key}"] = int(value)
            elif isinstance(value, (int, float, np.integer, np.floating)):
                out[f"{prefix}{key}"] = value.item() if hasattr(value, "item") else value
        return out
