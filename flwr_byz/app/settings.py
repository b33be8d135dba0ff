"""Run config and node config of the flwr-byz Flower App: defaults, parsing, strategy by name.

Run config (``[tool.flwr.app.config]`` in pyproject.toml, overridden with
``flwr run . <connection> --run-config 'key=value ...'``) is the experiment, the same for
every node; node config (``flower-supernode --node-config '...'``) is one SuperNode's own
business: its data partition and, for a corrupted node, its attack. docs/deployment.md
lists every key.
"""

from __future__ import annotations

import json
from typing import Any


RUN_DEFAULTS: dict[str, Any] = {
    "num-rounds": 3,
    "dataset": "digits",
    "data-root": "",
    "model": "mlp",
    "partitioning": "iid",
    "alpha": 0.5,
    "seed": 0,
    "strategy": "multi-krum",
    "f": 1,
    "strategy-params": "{}",
    "fraction-train": 1.0,
    "fraction-evaluate": 0.0,
    "min-nodes": 5,
    "round-timeout": 600.0,
    "local-epochs": 1,
    "local-steps": 0,
    "batch-size": 32,
    "lr": 0.1,
    "momentum": 0.0,
    "server-lr": 1.0,
    "server-momentum": 0.0,
    "attack": "none",
    "num-malicious": 0,
    "attack-params": "{}",
    "results-dir": "results/app",
    "device": "cpu",
}

# Keys of the round's train config (sent by the server; read by TorchClient.honest_update).
TRAIN_KEYS = ("local-epochs", "local-steps", "batch-size", "lr", "momentum", "seed", "server-lr")
# server-lr: model replacement's gamma = n / eta needs the server's eta

def run_settings(run_config) -> dict[str, Any]:
    """The run config with every key present (defaults filled in)."""
    out = dict(RUN_DEFAULTS)
    out.update({k: v for k, v in dict(run_config or {}).items()})
    return out


def check_attack_settings(settings: dict) -> None:
    """The run config's ``attack`` and ``attack-params`` checked before anything is loaded:
    ``ValueError`` for an unknown attack or a parameter no attack of it reads."""
    from ..attacks.catalogue import check_attack, check_attack_params

    attack = str(settings["attack"])
    check_attack(attack)
    check_attack_params([attack], json_param(settings["attack-params"], "attack-params"))


def json_param(value, name: str) -> dict:
    """A JSON-object config value (``"{}"`` when empty)."""
    if isinstance(value, dict):
        return dict(value)
    text = str(value or "").strip() or "{}"
    try:
        out = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{name} must be a JSON object, got {text!r}: {err}") from err
    if not isinstance(out, dict):
        raise ValueError(f"{name} must be a JSON object, got {text!r}")
    return out


def data_key(settings: dict, num_partitions: int, data_root: str | None = None) -> tuple:
    """The data key of :func:`flwr_byz.simulations.runner.load_partitioned`."""
    root = data_root if data_root else (str(settings["data-root"]) or None)
    return (str(settings["dataset"]), root, str(settings["model"]), int(num_partitions),
            str(settings["partitioning"]), float(settings["alpha"]), int(settings["seed"]))


def train_config(settings: dict) -> dict:
    return {k: settings[k] for k in TRAIN_KEYS}


def build_strategy(settings: dict):
    """The flwr_byz Message-API strategy named by the run config's ``strategy``.

    ``strategy`` is resolved by :func:`resolve_strategy`: a class of
    :mod:`flwr_byz.strategies` (``MultiKrum``, ``Bulyan``, ``Detox``, ...), a rule of
    :data:`flwr_byz.aggregation.RULES` (``multi_krum``, ``bulyan``, ...), Flower's name or
    an alias; case, ``-`` and ``_`` do not matter. ``f`` is the number of
    Byzantine nodes it tolerates; ``strategy-params`` (a JSON object) adds the class's own
    arguments (``num_nodes_to_select``, ``group_size``, ``beta``, ...), optionally
    ``"pre": [{"kind": "bucketing", "s": 2}, ...]`` pre-aggregators, CRFL's
    ``"crfl": {"clip_norm": 10, "noise_std": 0.01}`` and the weight policy (``"weighting"``,
    ``"weight_cap"``), the reputation layer (``"reputation": {"decay": 0.9, "threshold":
    0.3}``) and FLTrust's root dataset (``"root_size": 100`` training examples of the run's
    dataset, the server's own): :func:`flwr_byz.strategies.options.split_strategy_params`.
    ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"``): where the rule computes.
    """
    from .. import strategies
    from ..strategies.options import server_update_for, split_strategy_params
    from ..strategies.rule_classes import resolve_strategy

    params, options = split_strategy_params(json_param(settings["strategy-params"], "strategy-params"))
    f = settings["f"]
    if isinstance(f, bool) or not isinstance(f, (int, float)) or f != int(f) or f < 0:
        raise ValueError(f"run config f must be a non-negative integer, got {f!r}")
    f = int(f)
    min_nodes = int(settings["min-nodes"])
    common = dict(
        fraction_train=float(settings["fraction-train"]), fraction_evaluate=float(settings["fraction-evaluate"]),
        min_train_nodes=min_nodes, min_evaluate_nodes=min_nodes, min_available_nodes=min_nodes,
        server_learning_rate=float(settings["server-lr"]), server_momentum=float(settings["server-momentum"]),
        device=str(settings["device"]),
    )
    cls = resolve_strategy(settings["strategy"], strategies)
    spec = getattr(cls, "rule_spec", None)
    server_update_for(spec.name if spec is not None else "", options, dataset=str(settings["dataset"]),
                      data_root=str(settings["data-root"]) or None, model=str(settings["model"]),
                      seed=int(settings["seed"]),
                      training=dict(lr=float(settings["lr"]), momentum=float(settings["momentum"]),
                                    batch_size=int(settings["batch-size"]),
                                    local_epochs=int(settings["local-epochs"]),
                                    local_steps=int(settings["local-steps"])))
    common.update(options)
    if spec is not None and "seed" in spec.params and params.get("seed") is None:
        params["seed"] = int(settings["seed"])  # DnC, SignGuard: reproducible draws per (seed, round)
    if cls is strategies.RobustFedAvg:
        return cls(rule="mean", num_malicious_nodes=0, rule_params=params, **common)
    if cls is strategies.MultiKrum:
        params.setdefault("num_nodes_to_select", None)  # the App's default: the paper's m = n - f
    if cls is strategies.FedTrimmedAvg:
        if "beta" in params:
            return cls(**params, **common)
        return cls(beta=None, num_malicious_nodes=f, **params, **common)
    return cls(num_malicious_nodes=f, **params, **common)
