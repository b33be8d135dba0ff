"""Splitting a dataset's training set among clients with flwr-datasets' partitioners.

IID: flwr-datasets' ``IidPartitioner`` on the training set shuffled with ``seed`` (as
``FederatedDataset`` shuffles before partitioning). Dirichlet(alpha): its
``DirichletPartitioner`` over the labels (per-class Dirichlet proportions, redrawn until every
client holds ``min_size`` examples). Both run on a small Hugging Face dataset of
(example index, label) built from the label array, so every dataset of
:mod:`flwr_byz.simulations.datasets` (digits and the torchvision ones included) is split by
the same code, and each partition comes back as the sorted indices of its examples.
"""

from __future__ import annotations

import warnings

import numpy as np


def _index_dataset(labels: np.ndarray):
    from datasets import Dataset as HFDataset

    return HFDataset.from_dict({"index": np.arange(len(labels), dtype=np.int64), "label": np.asarray(labels)})


def _indices(partitioner, num_partitions: int) -> list[np.ndarray]:
    # a slice in NumPy format reads the column at once; a Dataset's column (a lazy Column in
    # datasets >= 4) would be read row by row: 60,000 rows took 13 s for MNIST
    return [np.sort(np.asarray(partitioner.load_partition(i).with_format("numpy")[:]["index"], dtype=np.int64))
            for i in range(num_partitions)]


def iid_partitions(num_examples: int, num_partitions: int, seed: int = 0) -> list[np.ndarray]:
    """Shuffle with ``seed``, then cut into ``num_partitions`` nearly equal parts."""
    from flwr_datasets.partitioner import IidPartitioner

    if num_partitions < 1 or num_partitions > num_examples:
        raise ValueError(f"cannot split {num_examples} examples into {num_partitions} partitions")
    partitioner = IidPartitioner(num_partitions=num_partitions)
    partitioner.dataset = _index_dataset(np.zeros(num_examples, dtype=np.int64)).shuffle(seed=seed)
    return _indices(partitioner, num_partitions)


def dirichlet_partitions(labels: np.ndarray, num_partitions: int, alpha: float, seed: int = 0,
                         min_size: int = 1, max_tries: int = 10) -> list[np.ndarray]:
    """Per class, split its examples among clients with proportions ~ Dirichlet(alpha).

    flwr-datasets' ``DirichletPartitioner`` (no self-balancing), which redraws until every
    client holds at least ``min_size`` examples but gives up after 10 redraws; small alpha
    with many clients can need more, so up to ``max_tries`` partitioners run, seeded
    ``seed``, ``seed + 1``, ... (the first success is kept: with ``seed`` whenever it works).
    """
    from flwr_datasets.partitioner import DirichletPartitioner

    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    dataset = _index_dataset(labels)
    for attempt in range(max_tries):
        partitioner = DirichletPartitioner(num_partitions=num_partitions, partition_by="label", alpha=float(alpha),
                                           min_partition_size=min_size, self_balancing=False, shuffle=True,
                                           seed=seed + attempt)
        partitioner.dataset = dataset
        try:
            with warnings.catch_warnings():  # its per-redraw warning: the error below says it all
                warnings.simplefilter("ignore", UserWarning)
                return _indices(partitioner, num_partitions)
        except ValueError:
            continue
    raise ValueError(f"could not draw a Dirichlet({alpha}) split of {len(labels)} examples into "
                     f"{num_partitions} parts of at least {min_size} (tried seeds {seed}..{seed + max_tries - 1})")


def partition(labels: np.ndarray, num_partitions: int, scheme: str = "iid", alpha: float = 0.5,
              seed: int = 0) -> list[np.ndarray]:
    """Indices of each client's examples under ``scheme`` in {"iid", "dirichlet"}."""
    if scheme == "iid":
        return iid_partitions(len(labels), num_partitions, seed)
    if scheme == "dirichlet":
        return dirichlet_partitions(labels, num_partitions, alpha, seed)
    raise ValueError(f"unknown partitioning {scheme!r}; choose 'iid' or 'dirichlet'")
