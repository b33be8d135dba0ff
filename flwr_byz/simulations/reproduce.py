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
- ``alie-sensitivity``: the ALIE authors' supplementary experiments: last-20 accuracy of the
  trimmed mean, Krum and Bulyan (f = m) under ALIE at the one-step setting of ``alie-mnist``,
  against the number of corrupted clients m (n = 51, z = z_max(n, m)), against the shift z
  (n = 51, m = 12) and against the total n (m = (n - 3) // 4, the most Bulyan tolerates,
  19-23% of n; z = z_max(n, m)), with each defense's no-attack run at n = 51 as the
  reference; Bulyan is left out where n < 4m + 3 (m = 16, 20).
  Without ``--data-root``: the same grid on digits (batch 16). ``flwr-byz plot`` draws it
  (``sensitivity.png``).
- ``matrix``: every registered rule against every attack of the catalogue (and no attack),
  at the ALIE authors' setting on MNIST (n = 51, m = 12, one step per round, 300 rounds)
  or, without ``--data-root``, on the embedded digits (n = 20, m = 5, batch 16, 100
  rounds); a rule whose f bound the setting cannot meet, or whose exact search is refused
  at that n and m (MDA, SMEA), is left out and named. ``flwr-byz plot`` draws it as a
  heatmap (``matrix.png``).
"""

from __future__ import annotations

from dataclasses import replace

from ..attacks import alie_z_max
from .config import RunConfig

EXPERIMENTS = ("alie-mnist", "alie-cifar10", "alie-sensitivity", "detox", "matrix")

# alie-sensitivity's axes (the base point n = 51, m = 12 is on all three)
SENSITIVITY_DEFENSES = ("trimmed_mean", "krum", "bulyan")
SENSITIVITY_M = (4, 8, 12, 16, 20)
SENSITIVITY_Z = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0)
SENSITIVITY_N = (21, 31, 41, 51, 61)  # with m = (n - 3) // 4: Bulyan's bound, 12 at n = 51

# The exact subset searches (MDA, SMEA) refuse more than this many subsets C(n, f).
_MAX_SUBSETS = 200_000


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


def _alie_sensitivity(dataset: str, rounds: int, data_root: str | None) -> list[RunConfig]:
    from ..aggregation import minimum_clients

    n0, m0 = 51, 12
    base = RunConfig(dataset=dataset, data_root=data_root, model="mlp", num_clients=n0, rounds=rounds,
                     local_steps=1, batch_size=16 if dataset == "digits" else 83, lr=0.1, server_momentum=0.9)
    points = {(n0, m, alie_z_max(n0, m)) for m in SENSITIVITY_M}
    points |= {(n0, m0, z) for z in SENSITIVITY_Z}
    points |= {(n, (n - 3) // 4, alie_z_max(n, (n - 3) // 4)) for n in SENSITIVITY_N}
    cells = []
    for strategy in SENSITIVITY_DEFENSES:
        cells.append(replace(base, strategy=strategy, f=m0))
        for n, m, z in sorted(points):
            if minimum_clients(strategy, m) <= n:
                cells.append(replace(base, strategy=strategy, f=m, num_clients=n, attack="alie", num_malicious=m,
                                     attack_params={"z": round(float(z), 4)}))
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


def matrix_rules(n: int, m: int) -> tuple[list[str], dict[str, str]]:
    """The rules of the matrix at n clients with f = m, and those left out with why."""
    import math

    from ..aggregation import REGISTRY, minimum_clients

    rules, left_out = [], {}
    for name in REGISTRY:
        f = 0 if name == "mean" else m
        if minimum_clients(name, f) > n:
            left_out[name] = f"needs n >= {minimum_clients(name, f)} for f = {f}"
        elif name in ("mda", "smea") and math.comb(n, f) > _MAX_SUBSETS:
            left_out[name] = f"exact search over C({n}, {f}) = {math.comb(n, f):.2g} subsets is refused"
        else:
            rules.append(name)
    return rules, left_out


def _matrix(data_root: str | None, rounds: int | None) -> list[RunConfig]:
    from ..attacks import ATTACK_SPECS

    if data_root:
        n, m = 51, 12
        base = RunConfig(dataset="mnist", data_root=data_root, model="mlp", num_clients=n, rounds=rounds or 300,
                         local_steps=1, batch_size=83, lr=0.1, server_momentum=0.9)
    else:
        n, m = 20, 5
        base = RunConfig(dataset="digits", model="mlp", num_clients=n, rounds=rounds or 100, local_steps=1,
                         batch_size=16, lr=0.1, server_momentum=0.9)
    rules, _ = matrix_rules(n, m)
    cells = []
    for rule in rules:
        for attack in ("none", *sorted(ATTACK_SPECS)):
            cells.append(replace(base, strategy=rule, f=m, attack=attack, num_malicious=0 if attack == "none" else m))
    return cells


def experiment(name: str, *, rounds: int | None = None, data_root: str | None = None) -> list[RunConfig]:
    """The cells of experiment ``name`` (``rounds`` overrides the paper's number of rounds)."""
    if name == "alie-mnist":
        return _alie("mnist", "mlp", rounds or 300, data_root)
    if name == "alie-cifar10":
        return _alie("cifar10", "cnn", rounds or 2000, data_root)
    if name == "alie-sensitivity":
        return _alie_sensitivity("mnist" if data_root else "digits", rounds or 300, data_root)
    if name == "detox":
        return _detox("mnist" if data_root else "digits", rounds or (200 if data_root else 300), data_root)
    if name == "matrix":
        return _matrix(data_root, rounds)
    raise ValueError(f"unknown experiment {name!r}; choose from {EXPERIMENTS}")
