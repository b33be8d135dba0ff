"""The papers' experiments as named grids: ``flwr-byz reproduce NAME``.

Each experiment lists its cells exactly (dataset, model, n, m, hyper-parameters); ``scale``
shrinks rounds (and n where noted) for a quick look. docs/RESULTS.md has the commands, the
numbers measured here and the papers' numbers.

- ``alie-mnist``: Baruch et al. (NeurIPS 2019), MNIST, the paper's MLP, the settings of the
  authors' code (n = 51, 24% corrupted: m = 12, batch 83, lr 0.1, server momentum 0.9,
  one gradient step per round, f = m for the defenses), no defense / trimmed mean / Krum /
  Bulyan, without attack, with ALIE at the paper's z_max and at the code's default z = 1.5,
  and with sign flipping by the same m clients (the paper's contrast).
- ``alie-cifar10``: the same on CIFAR-10 with the CNN (for GPU machines).
- ``detox``: Rajput et al. (NeurIPS 2019): DETOX (r = 3) + Multi-Krum / Bulyan vs the plain
  rules under ALIE (at z_max and at z = 1.5, the ALIE authors' code default), and DETOX +
  signSGD vs signSGD under the constant (-1) attack; n = 45, m = 5 on MNIST (the DETOX
  paper's 45 workers), n = 21 on digits (Multi-Krum only: Bulyan needs n >= 4f + 3).
"""

from __future__ import annotations

from dataclasses import replace

from ..attacks import alie_z_max
from .config import RunConfig

EXPERIMENTS = ("alie-mnist", "alie-cifar10", "detox")


def _alie(dataset: str, model: str, rounds: int, data_root: str | None) -> list[RunConfig]:
    n, m = 51, 12
    base = RunConfig(dataset=dataset, data_root=data_root, model=model, num_clients=n, rounds=rounds,
                     local_steps=1, batch_size=83, lr=0.1, server_momentum=0.9)
    cells = []
    for strategy in ("mean", "trimmed_mean", "krum", "bulyan"):
        cells.append(replace(base, strategy=strategy, f=m))
        for z in (alie_z_max(n, m), 1.5):
            cells.append(replace(base, strategy=strategy, f=m, attack="alie", num_malicious=m,
                                 attack_params={"z": round(float(z), 4)}))
        cells.append(replace(base, strategy=strategy, f=m, attack="sign_flip", num_malicious=m))
    return cells


def _detox(dataset: str, rounds: int, data_root: str | None) -> list[RunConfig]:
    n = 45 if dataset != "digits" else 21  # the DETOX paper's 45 workers; 7 groups of 3 on digits
    m = 5
    base = RunConfig(dataset=dataset, data_root=data_root, model="mlp", num_clients=n, rounds=rounds,
                     local_steps=1, batch_size=16 if dataset == "digits" else 32, lr=0.1, server_momentum=0.9)
    # Bulyan needs n >= 4f + 3 (23 clients, and 11 groups for DETOX's f1 = 2): MNIST only
    rules = ("multi_krum", "bulyan") if dataset != "digits" else ("multi_krum",)
    cells = []
    for rule in rules:
        for strategy in (rule, f"detox-{rule}"):
            cells.append(replace(base, strategy=strategy, f=m))
            for z in (alie_z_max(n, m), 1.5):
                cells.append(replace(base, strategy=strategy, f=m, attack="alie", num_malicious=m,
                                     attack_params={"z": round(float(z), 4)}))
    sign = replace(base, server_momentum=0.0)
    for strategy, params in (("signsgd_majority", {"server_lr": 0.01}),
                             ("detox-signsgd_majority", {"a1_params": {"server_lr": 0.01}})):
        for attack in ("none", "constant"):
            cells.append(replace(sign, strategy=strategy, f=m, strategy_params=params, attack=attack,
                                 num_malicious=m if attack != "none" else 0))
    return cells


def experiment(name: str, *, rounds: int | None = None, data_root: str | None = None) -> list[RunConfig]:
    """The cells of experiment ``name`` (``rounds`` overrides the paper's number of rounds)."""
    if name == "alie-mnist":
        return _alie("mnist", "mlp", rounds or 300, data_root)
    if name == "alie-cifar10":
        return _alie("cifar10", "cnn", rounds or 2000, data_root)
    if name == "detox":
        return _detox("mnist" if data_root else "digits", rounds or (200 if data_root else 300), data_root)
    raise ValueError(f"unknown experiment {name!r}; choose from {EXPERIMENTS}")
