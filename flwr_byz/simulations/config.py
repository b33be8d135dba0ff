"""One cell of an experiment grid: which data, model, strategy, attack, n and m."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields


@dataclass
class RunConfig:
    """Everything that defines one simulated run.

    ``local_steps > 0`` replaces local epochs by that many minibatch steps (1: each update
    is one stochastic gradient step, the papers' distributed-SGD setting); ``server_lr`` and
    ``server_momentum`` are the server's step on the aggregate (the ALIE paper uses 0.9).
    The first ``num_malicious`` partitions (ids 0..m-1) are the corrupted clients. ``f``, the
    number of Byzantine clients the strategy is told to tolerate, defaults to
    ``num_malicious``; ``strategy`` is a rule name of :data:`flwr_byz.aggregation.RULES`.
    ``attack_rounds``: the corrupted clients attack in rounds 1..attack_rounds and train
    honestly afterwards (a backdoor's durability: how long its ASR lasts once the poisoning
    stops, Neurotoxin's measure); None (default): every round.
    """

    strategy: str = "mean"
    attack: str = "none"
    num_clients: int = 20
    num_malicious: int = 0
    f: int | None = None
    rounds: int = 10
    dataset: str = "digits"
    data_root: str | None = None
    model: str = "mlp"
    partitioning: str = "iid"
    alpha: float = 0.5
    local_epochs: int = 1
    local_steps: int = 0
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.0
    server_lr: float = 1.0
    server_momentum: float = 0.0
    seed: int = 0
    strategy_params: dict = field(default_factory=dict)
    attack_params: dict = field(default_factory=dict)
    attack_rounds: int | None = None

    @property
    def tolerated(self) -> int:
        """f given to the strategy (0 for the plain mean, which tolerates none)."""
        if self.strategy in ("mean", "detox-mean"):
            return 0
        return self.num_malicious if self.f is None else int(self.f)

    @property
    def attacked(self) -> bool:
        return self.attack != "none" and self.num_malicious > 0

    def attacking(self, server_round: int) -> bool:
        """Whether the corrupted clients attack in ``server_round``."""
        return self.attacked and (self.attack_rounds is None or server_round <= self.attack_rounds)

    def cell_id(self) -> str:
        """Stable id of the cell: readable prefix plus a hash of every field."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str)
        digest = hashlib.sha1(blob.encode()).hexdigest()[:10]
        return f"{self.strategy}-{self.attack}-n{self.num_clients}-m{self.num_malicious}-{digest}"

    def data_key(self) -> tuple:
        """Cells with the same data key share one simulation (and one Ray start)."""
        return (self.dataset, self.data_root, self.model, self.num_clients, self.partitioning, self.alpha, self.seed)

    def to_dict(self) -> dict:
        """The fields, without ``attack_rounds`` when it is None (so the ids and result
        rows of cells made before it existed stay what they were)."""
        d = asdict(self)
        if d["attack_rounds"] is None:
            del d["attack_rounds"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown run settings {sorted(unknown)}; known: {sorted(names)}")
        return cls(**d)
