"""DETOX's client contract for ordinary NumPyClients (legacy API; docs/detox.md).

A DETOX round's fit config carries ``detox-shard``, ``detox-num-shards`` and ``detox-seed``:
every member of a group must train on that shard with that seed, so that honest members send
bit-identical updates and the group's majority vote can see who differs. An ordinary
NumPyClient trains on its own partition and fails every such round (no group agrees).
:class:`DetoxClient` fixes that for any project whose clients are made per partition::

    def make_client(partition_id: int, num_partitions: int) -> NumPyClient: ...

    client = DetoxClient(make_client, partition_id, num_partitions)

It delegates to its own partition's client, except in a DETOX round, where it seeds Python's,
NumPy's and PyTorch's generators with ``detox-seed`` and trains the client of the group's
shard. The Message-API equivalent is :func:`flwr_byz.clients.mods.detox_mod`.
"""

from __future__ import annotations

import random
from typing import Callable

import numpy as np
from flwr.client import NumPyClient


def seed_generators(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's global generators with ``seed`` (DETOX's
    ``detox-seed``: the group's members draw the same batches)."""
    import torch

    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    torch.manual_seed(int(seed))


class DetoxClient(NumPyClient):
    """A NumPyClient that honours DETOX's fit config (see the module docstring).

    Args:
        make_client: ``(partition_id, num_partitions) -> NumPyClient``, the project's own
            client for a partition (called for the DETOX shard each DETOX round, and once
            for this client's partition).
        partition_id, num_partitions: this client's own partition.
    """

    def __init__(self, make_client: Callable[[int, int], NumPyClient], partition_id: int, num_partitions: int):
        if not callable(make_client):
            raise TypeError("DetoxClient needs make_client(partition_id, num_partitions) -> NumPyClient")
        self.make_client = make_client
        self.own = make_client(int(partition_id), int(num_partitions))

    def get_parameters(self, config):
        return self.own.get_parameters(config)

    def fit(self, parameters, config):
        if "detox-shard" not in config:
            return self.own.fit(parameters, config)
        shard, shards = int(config["detox-shard"]), int(config.get("detox-num-shards", 1))
        if not 0 <= shard < shards:
            raise ValueError(f"DETOX config names shard {shard} of {shards}")
        seed_generators(int(config.get("detox-seed", 0)))
        return self.make_client(shard, shards).fit(parameters, config)

    def evaluate(self, parameters, config):
        return self.own.evaluate(parameters, config)
