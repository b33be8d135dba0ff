"""How corrupted clients share what they know, without ever waiting on each other.

Threat model: the attacker controls m clients and knows their data (it can compute their
honest updates), never the honest clients' updates or data. ALIE, IPM, Min-Max and Min-Sum
need statistics over the m corrupted clients' honest updates of the round.

Waiting for the other corrupted clients to report would deadlock in Flower's Simulation
Engine, where clients of a round may run one after another on a single actor. So the
corrupted client that runs first in a round computes the honest updates of *every*
partition the attacker controls (calling ``client_factory(pid).fit`` for each), and stores
them; the others read them. A file lock serialises that first computation, and no client
ever waits for another client to be *scheduled*, only for a computation that is already
running, so any pool size works. The store is a directory on the machine running the
clients (the Simulation Engine's actors, or several SuperNodes on one host).

The store key is a hash of the round's global weights, the round number and the attack's
label, so runs and rounds never mix.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from ..updates import ModelLayout


def weights_fingerprint(parameters, extra: str = "") -> str:
    """A short hash of a list of arrays (plus a label)."""
    h = hashlib.sha1(extra.encode())
    for a in parameters:
        a = np.ascontiguousarray(a)
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.view(np.uint8).reshape(-1).data)
    return h.hexdigest()[:20]


class Collusion:
    """The corrupted clients' shared knowledge of one round.

    Args:
        partition_ids: the partitions the attacker controls.
        client_factory: ``pid -> NumPyClient`` building the honest client of a partition
            (for instance the same function the ``client_fn`` uses).
        store_dir: where the round's honest updates are shared (default:
            ``$FLWR_BYZ_COLLUSION_DIR``, else a folder in the system's temp dir, per user;
            created with mode 0700). The simulation runner gives each run its own, removed
            at the end.
        label: distinguishes attacks that run at the same time on the same weights.
    """

    def __init__(self, partition_ids, client_factory: Callable, store_dir: str | os.PathLike | None = None,
                 label: str = ""):
        self.partition_ids = sorted(int(p) for p in partition_ids)
        self.client_factory = client_factory
        default = os.environ.get("FLWR_BYZ_COLLUSION_DIR") or Path(tempfile.gettempdir()) / f"flwr-byz-collusion-{os.getuid()}"
        self.store_dir = Path(store_dir or default)
        self.label = label

    def round_key(self, parameters, config) -> str:
        """The key of the round (its global weights and number, the label, the partitions):
        equal for every corrupted client of one attack in one round."""
        return weights_fingerprint(parameters, f"{dict(config).get('server-round', 0)}|{self.label}|{self.partition_ids}")

    def honest_updates(self, parameters, config) -> np.ndarray:
        """(m, d) float32 matrix: each controlled partition's honest update (weights - global)."""
        layout = ModelLayout.of(list(parameters))
        # Under DETOX each member is told to train on its group's shard; the attacker's
        # statistics come from the partitions it owns, so the group keys are dropped here.
        config = {k: v for k, v in dict(config).items() if not str(k).startswith("detox-")}
        key = self.round_key(parameters, config)
        self.store_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.store_dir / f"{key}.npy"
        with open(self.store_dir / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if path.exists():
                    return np.load(path)
                global_flat = layout.flatten(parameters)
                X = np.empty((len(self.partition_ids), layout.dim), dtype=np.float32)
                for row, pid in enumerate(self.partition_ids):
                    weights, _, _ = self.client_factory(pid).fit([np.copy(p) for p in parameters], dict(config))
                    layout.flatten(weights, out=X[row])
                    X[row] -= global_flat
                tmp = self.store_dir / f"{key}.{os.getpid()}.tmp.npy"
                np.save(tmp, X)
                tmp.replace(path)
                return X
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
