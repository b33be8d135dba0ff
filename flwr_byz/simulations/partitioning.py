"""Splitting a dataset's training set among clients: IID or Dirichlet(alpha) over labels.

The same two schemes as flwr-datasets' ``IidPartitioner`` and ``DirichletPartitioner``
(per-class Dirichlet proportions, redrawn until every client has ``min_size`` examples),
written in NumPy on index arrays so the embedded datasets need no Hugging Face dataset.
"""

from __future__ import annotations

import numpy as np


def iid_partitions(num_examples: int, num_partitions: int, seed: int = 0) -> list[np.ndarray]:
    """Shuffle, then cut into ``num_partitions`` nearly equal parts."""
    if num_partitions < 1 or num_partitions > num_examples:
        raise ValueError(f"cannot split {num_examples} examples into {num_partitions} partitions")
    perm = np.random.default_rng(seed).permutation(num_examples)
    return [np.sort(p) for p in np.array_split(perm, num_partitions)]


def dirichlet_partitions(labels: np.ndarray, num_partitions: int, alpha: float, seed: int = 0,
                         min_size: int = 1, max_tries: int = 100) -> list[np.ndarray]:
    """Per class, split its examples among clients with proportions ~ Dirichlet(alpha).

    Redrawn (up to ``max_tries``) until every client holds at least ``min_size`` examples,
    as flwr-datasets' DirichletPartitioner does.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        parts: list[list[int]] = [[] for _ in range(num_partitions)]
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(num_partitions, alpha))) * len(idx)).astype(int)[:-1]
            for p, chunk in enumerate(np.split(idx, cuts)):
                parts[p].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise ValueError(f"could not draw a Dirichlet({alpha}) split with >= {min_size} examples per client")


def partition(labels: np.ndarray, num_partitions: int, scheme: str = "iid", alpha: float = 0.5,
              seed: int = 0) -> list[np.ndarray]:
    """Indices of each client's examples under ``scheme`` in {"iid", "dirichlet"}."""
    if scheme == "iid":
        return iid_partitions(len(labels), num_partitions, seed)
    if scheme == "dirichlet":
        return dirichlet_partitions(labels, num_partitions, alpha, seed)
    raise ValueError(f"unknown partitioning {scheme!r}; choose 'iid' or 'dirichlet'")
