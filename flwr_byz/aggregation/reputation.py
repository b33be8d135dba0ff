"""Client reputation across rounds: a layer over any rule that selects clients.

Each client id carries a beta reputation (Jøsang & Ismail, "The Beta Reputation System",
Bled eConference 2002): evidence counts a (kept) and b (not kept), forgotten at rate
``decay`` every round, and the score

    r = (a + 1) / (a + b + 2)

(0.5 for a client never seen). After each aggregated round a client the rule selected adds
1 to a, one it left out adds 1 to b; every other known client only forgets. Before the
next round, in ``mode="exclude"`` the clients whose score is below ``threshold`` do not
reach the rule at all (unless that would leave fewer replies than the rule's f bound
needs: then nobody is excluded that round); in ``mode="weight"`` each client's weight is
multiplied by its score (for rules that take weights). An excluded client gathers no new
evidence, so its record fades and it is readmitted once r climbs back over the threshold:
with ``decay=0.9`` and ``threshold=0.3`` after about four rounds out (a threshold >= 0.5
never readmits).

The evidence is the rule's selection (Multi-Krum's m, Bulyan's, the clustering rules',
FLAME's admitted set, FLTrust's and FoolsGold's positive weights); a rule that selects no
subset (median, trimmed mean, geometric median, ...) gives none, and the scores then stay
at 0.5. Identities are the server's (Flower node ids), not what a client claims; a Sybil
that registers a fresh node starts again at 0.5, which is what ``threshold`` < 0.5 allows.
No Flower import here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

MODES = ("exclude", "weight")


@dataclass
class Reputation:
    """Beta reputation per client id, with forgetting (see the module docstring).

    Attributes:
        decay: gamma in (0, 1]: the evidence is multiplied by gamma every round (1: never
            forgotten).
        threshold: in [0, 1): clients scoring below it are excluded (``mode="exclude"``).
        mode: ``"exclude"`` or ``"weight"``.
        evidence: client id -> [a, b] (the state; saved with the strategy's state).
    """

    decay: float = 0.9
    threshold: float = 0.3
    mode: str = "exclude"
    evidence: dict = field(default_factory=dict)

    def __post_init__(self):
        if not (isinstance(self.decay, (int, float)) and 0 < self.decay <= 1):
            raise ValueError(f"Reputation: decay must be in (0, 1], got {self.decay!r}")
        if not (isinstance(self.threshold, (int, float)) and 0 <= self.threshold < 1):
            raise ValueError(f"Reputation: threshold must be in [0, 1), got {self.threshold!r}")
        if self.mode not in MODES:
            raise ValueError(f"Reputation: mode must be one of {MODES}, got {self.mode!r}")

    def score(self, cid) -> float:
        """r = (a + 1) / (a + b + 2) of client ``cid`` (0.5 when never seen)."""
        a, b = self.evidence.get(cid, (0.0, 0.0))
        return (a + 1.0) / (a + b + 2.0)

    def split(self, ids: list, minimum: int) -> tuple[list, list]:
        """``(admitted, excluded)`` of the round's client ids, in their order: in
        ``"exclude"`` mode those scoring below the threshold are excluded, unless fewer than
        ``minimum`` would be left (then none is)."""
        if self.mode != "exclude":
            return list(ids), []
        admitted = [c for c in ids if self.score(c) >= self.threshold]
        if len(admitted) < minimum:
            return list(ids), []
        return admitted, [c for c in ids if self.score(c) < self.threshold]

    def weights(self, ids: list) -> list[float]:
        """The scores of ``ids`` (the multipliers of ``mode="weight"``)."""
        return [self.score(c) for c in ids]

    def observe(self, seen: list, kept: set) -> None:
        """One round's evidence: every known id forgets (times ``decay``); each id in
        ``seen`` (the clients the rule judged) adds 1 to a if in ``kept``, else to b."""
        for cid, (a, b) in self.evidence.items():
            self.evidence[cid] = [a * self.decay, b * self.decay]
        for cid in seen:
            a, b = self.evidence.get(cid, [0.0, 0.0])
            self.evidence[cid] = [a + 1.0, b] if cid in kept else [a, b + 1.0]

    def state(self) -> list:
        """The evidence as JSON-ready data: ``[[id, a, b], ...]``."""
        return [[cid, float(a), float(b)] for cid, (a, b) in self.evidence.items()]

    def load(self, state: list) -> None:
        """Restore :meth:`state`'s output (finite, non-negative counts only)."""
        evidence = {}
        for cid, a, b in state:
            if not (math.isfinite(a) and math.isfinite(b) and a >= 0 and b >= 0):
                raise ValueError(f"Reputation: bad evidence for client {cid!r}: {a!r}, {b!r}")
            evidence[cid] = [float(a), float(b)]
        self.evidence = evidence
