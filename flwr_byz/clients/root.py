"""FLTrust's server update: the global model trained on the server's small root dataset.

Cao et al. (NDSS 2021) give the server a clean root dataset of about 100 examples drawn
from the training distribution and train the global model on it each round with the
clients' own training settings; the result, minus the global model, is the trust anchor
g0 of :func:`flwr_byz.aggregation.fltrust`. :class:`RootUpdate` is the
``server_update_fn(arrays) -> arrays`` the strategies take (``server_update_fn=``), built
from arrays of examples, or from a dataset by name (the simulations and the Flower App:
``"root_size"`` in strategy-params).
"""

from __future__ import annotations

import numpy as np

# The partition id under which the server's own training draws its seeds (clients use 0..n-1).
SERVER_PARTITION = 2**31 - 1


def root_sample(num_examples: int, size: int, seed: int) -> np.ndarray:
    """Indices (sorted) of a uniform sample of ``size`` examples out of ``num_examples``
    drawn from ``seed``: the root dataset, from the training distribution as in the paper.
    ``ValueError`` unless 1 <= size <= num_examples."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 1 <= size <= num_examples:
        raise ValueError(f"the root dataset size must be an integer in [1, {num_examples}], got {size!r}")
    rng = np.random.default_rng([int(seed), SERVER_PARTITION])
    return np.sort(rng.choice(num_examples, size=int(size), replace=False))


class RootUpdate:
    """``fn(arrays) -> arrays``: the global model trained on the root dataset (FLTrust).

    Args:
        model: architecture name (:func:`flwr_byz.models.make_model`).
        x, y: the root dataset.
        input_shape, num_classes: of the dataset.
        lr, momentum, batch_size, local_epochs, local_steps: the clients' training settings
            (the paper trains the server like a client).
        seed: the k-th call trains with the seed of round k (partition ``SERVER_PARTITION``).
        device: torch device (default: CUDA when present).
    """

    def __init__(self, model: str, x, y, input_shape, num_classes: int, *, lr: float = 0.1, momentum: float = 0.0,
                 batch_size: int = 32, local_epochs: int = 1, local_steps: int = 0, seed: int = 0,
                 device: str | None = None):
        from .honest import TorchClient

        if len(x) == 0:
            raise ValueError("the root dataset is empty")
        self.client = TorchClient(model, x, y, input_shape, num_classes, SERVER_PARTITION, lr=lr, momentum=momentum,
                                  batch_size=batch_size, local_epochs=local_epochs,
                                  local_steps=local_steps or None, seed=seed, device=device)
        self.calls = 0

    def __call__(self, arrays) -> list[np.ndarray]:
        self.calls += 1
        weights, _, _ = self.client.honest_update([np.asarray(a) for a in arrays], {"server-round": self.calls})
        return weights

    @classmethod
    def from_dataset(cls, dataset: str, data_root: str | None, model: str, size: int = 100, *, seed: int = 0,
                     **training) -> "LazyRootUpdate":
        """The root dataset as ``size`` training examples of ``dataset`` (:func:`root_sample`
        with ``seed``), loaded on the first call (so a strategy can be built, and its
        arguments checked, before any data is loaded). ``training``: as the constructor."""
        return LazyRootUpdate(dataset, data_root, model, size, seed, training)


class LazyRootUpdate:
    """A :class:`RootUpdate` whose dataset is loaded at its first call."""

    def __init__(self, dataset, data_root, model, size, seed, training):
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"root_size must be a positive integer, got {size!r}")
        self.dataset, self.data_root, self.model, self.size, self.seed = dataset, data_root, model, int(size), int(seed)
        self.training = dict(training)
        self._fn: RootUpdate | None = None

    def __call__(self, arrays) -> list[np.ndarray]:
        if self._fn is None:
            from ..simulations.datasets import load_dataset

            data = load_dataset(self.dataset, self.data_root)
            idx = root_sample(len(data.y_train), self.size, self.seed)
            self._fn = RootUpdate(self.model, data.x_train[idx], data.y_train[idx], data.input_shape,
                                  data.num_classes, seed=self.seed, **self.training)
        return self._fn(arrays)
