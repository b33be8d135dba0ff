"""The honest reference client: a PyTorch training loop behind Flower's NumPyClient.

Seeds: the data order and any randomness of round r on partition p come from
``(seed, r, p)``, so a client's update is a deterministic function of (global weights,
data, round). DETOX relies on that: when the round's config carries ``detox-shard`` and
``detox-seed``, the client trains on that shard with that seed instead, so every member
of a DETOX group computes a bit-identical update (see docs/detox.md for the contract).
Device: CUDA when present, CPU otherwise (``device=`` overrides).
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.client import NumPyClient
from torch import nn

from ..models import get_weights, make_model, set_weights


def pick_device(device: str | None = None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train_locally(model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int = 1, batch_size: int = 32,
                  lr: float = 0.1, momentum: float = 0.0, weight_decay: float = 0.0, seed: int = 0,
                  steps: int | None = None, device: torch.device | None = None, batch_fn=None,
                  loss_weight: float = 1.0, after_step=None) -> float:
    """Plain minibatch SGD on (x, y); returns the mean training loss of the last epoch.

    ``steps`` stops after that many minibatches (``steps=1``: the update is one stochastic
    gradient step, the distributed-SGD setting of the ALIE and DETOX papers). The data
    order is drawn from a torch generator seeded with ``seed``.

    Hooks, for the attacks that train (:mod:`flwr_byz.clients.backdoor`): ``batch_fn(xb, yb)
    -> (xb, yb)`` rewrites every NumPy minibatch before it reaches the model, the loss is
    scaled by ``loss_weight`` (the reported loss is not), and ``after_step()`` runs after
    every optimiser step.
    """
    device = device or pick_device()
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(int(seed) % (2**63))
    loss_fn = nn.CrossEntropyLoss()
    last, done = 0.0, 0
    epochs = int(epochs) if steps is None else int(steps)  # every epoch has at least one batch
    for _ in range(epochs):
        if steps is not None and done >= steps:
            break
        order = torch.randperm(len(x), generator=gen).numpy()
        total, count = 0.0, 0
        for start in range(0, len(x), batch_size):
            if steps is not None and done >= steps:
                break
            done += 1
            idx = order[start : start + batch_size]
            xb, yb = x[idx], y[idx]
            if batch_fn is not None:
                xb, yb = batch_fn(xb, yb)
            xb, yb = torch.as_tensor(xb).to(device), torch.as_tensor(yb).to(device)
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            (loss if loss_weight == 1.0 else loss * loss_weight).backward()
            opt.step()
            if after_step is not None:
                after_step()
            total, count = total + loss.item() * len(idx), count + len(idx)
        last = total / max(count, 1)
    return last


@torch.no_grad()
def evaluate_model(model: nn.Module, x: np.ndarray, y: np.ndarray, *, batch_size: int = 512,
                   device: torch.device | None = None) -> tuple[float, float]:
    """(mean cross-entropy loss, accuracy) of ``model`` on (x, y); ``ValueError`` when there
    is nothing to measure (no samples), rather than a loss of 0."""
    if len(x) == 0:
        raise ValueError("nothing to evaluate: the evaluation set is empty")
    device = device or pick_device()
    model.to(device).eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        xb = torch.as_tensor(x[start : start + batch_size]).to(device)
        yb = torch.as_tensor(y[start : start + batch_size]).to(device)
        out = model(xb)
        loss += loss_fn(out, yb).item()
        correct += (out.argmax(1) == yb).sum().item()
    return loss / len(x), correct / len(x)


def round_seed(seed: int, server_round: int, partition_id: int) -> int:
    """The seed of one client's training in one round."""
    return int(np.random.SeedSequence([int(seed), int(server_round), int(partition_id)]).generate_state(1)[0])


class TorchClient(NumPyClient):
    """Honest client: local SGD on its partition, reply = trained weights.

    Config keys read from each round's fit config (all optional): ``server-round``,
    ``local-epochs``, ``local-steps`` (> 0: that many minibatch steps instead of epochs),
    ``lr``, ``momentum``, ``batch-size``, and DETOX's ``detox-shard`` /
    ``detox-seed`` / ``detox-num-shards`` (train on that shard with that seed; see ``shard_fn``).

    Args:
        model: architecture name for :func:`~flwr_byz.simulations.models.make_model`.
        x, y: this client's training data.
        input_shape, num_classes: of the dataset.
        partition_id: this client's partition (reported in the metrics as ``partition-id``).
        shard_fn: ``(shard, num_shards) -> (x, y)``, the data of a DETOX shard; every member
            of a group must get the same arrays for the same arguments.

    Attribute ``data_transform``: ``None`` or ``(x, y) -> (x, y)`` applied to the round's
    training data (own partition or DETOX shard) before training; label flipping sets it.
    """

    def __init__(self, model: str, x, y, input_shape, num_classes: int, partition_id: int = 0, *,
                 lr: float = 0.1, momentum: float = 0.0, batch_size: int = 32, local_epochs: int = 1,
                 local_steps: int | None = None, seed: int = 0, device: str | None = None, eval_data=None, shard_fn=None):
        self.model_name, self.x, self.y = model, x, y
        self.input_shape, self.num_classes, self.partition_id = tuple(input_shape), num_classes, int(partition_id)
        self.lr, self.momentum, self.batch_size, self.local_epochs = lr, momentum, batch_size, local_epochs
        self.local_steps = local_steps
        self.seed, self.device = seed, pick_device(device)
        self.eval_data, self.shard_fn = eval_data, shard_fn
        self.data_transform = None  # (x, y) -> (x, y): a data-poisoning attack's hook
        self.model = make_model(model, self.input_shape, num_classes, seed=seed)

    def _round_seed(self, config, partition_id=None) -> int:
        """The seed of this client's (or partition ``partition_id``'s) training in the round."""
        pid = self.partition_id if partition_id is None else int(partition_id)
        return round_seed(self.seed, int(config.get("server-round", 0)), pid)

    def training_data(self, config, partition_id=None) -> tuple[np.ndarray, np.ndarray, int]:
        """``(x, y, seed)`` this client trains on in the round of ``config``: its own
        partition with its round seed, or, when the config carries DETOX's ``detox-shard``,
        the group's shard with the group's seed. A data-poisoning attack poisons exactly
        these (the same rule for honest training, label flipping and backdoor poisoning)."""
        seed = self._round_seed(config, partition_id)
        x, y = self.x, self.y
        if "detox-shard" in config:
            if self.shard_fn is None:
                raise ValueError("DETOX config received, but this client has no shard_fn")
            x, y = self.shard_fn(int(config["detox-shard"]), int(config.get("detox-num-shards", 1)))
            seed = int(config.get("detox-seed", seed))
        return x, y, seed

    def honest_update(self, parameters, config, x=None, y=None, partition_id=None) -> tuple[list, int, float]:
        """Train from ``parameters`` on (x, y) (default: :meth:`training_data`, passed through
        ``self.data_transform`` when set); returns (weights, n, loss)."""
        if x is None:
            x, y, seed = self.training_data(config, partition_id)
            if self.data_transform is not None:
                x, y = self.data_transform(x, y)
        else:
            seed = self._round_seed(config, partition_id)
        set_weights(self.model, parameters)
        loss = train_locally(
            self.model, x, y, epochs=int(config.get("local-epochs", self.local_epochs)),
            batch_size=int(config.get("batch-size", self.batch_size)), lr=float(config.get("lr", self.lr)),
            momentum=float(config.get("momentum", self.momentum)), seed=seed, device=self.device,
            steps=int(config["local-steps"]) if int(config.get("local-steps", 0) or 0) > 0 else self.local_steps,
        )
        return get_weights(self.model), len(x), loss

    def fit(self, parameters, config):
        weights, n, loss = self.honest_update(parameters, config)
        return weights, n, {"train_loss": float(loss), "partition-id": self.partition_id}

    def evaluate(self, parameters, config):
        x, y = self.eval_data if self.eval_data is not None else (self.x, self.y)
        if len(x) == 0:
            raise ValueError(f"client {self.partition_id}: nothing to evaluate (no evaluation data)")
        set_weights(self.model, parameters)
        loss, acc = evaluate_model(self.model, x, y, device=self.device)
        return float(loss), len(x), {"accuracy": float(acc)}
