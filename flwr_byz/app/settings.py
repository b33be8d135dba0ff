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

from ..aggregation import RULES, PreAggregator

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
}

# Keys of the round's train config (sent by the server; read by TorchClient.honest_update).
TRAIN_KEYS = ("local-epochs", "local-steps", "batch-size", "lr", "momentum", "seed")

# Strategy names (case, "-" and "_" ignored) -> (class name in flwr_byz.strategies, rule name).
STRATEGIES = {
    "fedavg": ("RobustFedAvg", "mean"), "mean": ("RobustFedAvg", "mean"),
    "krum": ("Krum", "krum"),
    "multikrum": ("MultiKrum", "multi_krum"),
    "bulyan": ("Bulyan", "bulyan"),
    "median": ("FedMedian", "median"), "fedmedian": ("FedMedian", "median"),
    "trimmedmean": ("FedTrimmedAvg", "trimmed_mean"), "fedtrimmedavg": ("FedTrimmedAvg", "trimmed_mean"),
    "geometricmedian": ("GeometricMedian", "geometric_median"),
    "centeredclipping": ("CenteredClipping", "centered_clipping"),
    "signsgdmajority": ("SignSGDMajority", "signsgd_majority"),
    "detox": ("Detox", None),
}


def run_settings(run_config) -> dict[str, Any]:
    """The run config with every key present (defaults filled in)."""
    out = dict(RUN_DEFAULTS)
    out.update({k: v for k, v in dict(run_config or {}).items()})
    return out


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


def strategy_name(name: str) -> str:
    return str(name).lower().replace("-", "").replace("_", "")


def build_strategy(settings: dict):
    """The flwr_byz Message-API strategy named by the run config's ``strategy``.

    ``strategy`` is a class of :mod:`flwr_byz.strategies` (``MultiKrum``, ``Bulyan``,
    ``Detox``, ...) or a rule of :data:`flwr_byz.aggregation.RULES` (``multi_krum``,
    ``bulyan``, ...); case, ``-`` and ``_`` do not matter. ``f`` is the number of
    Byzantine nodes it tolerates; ``strategy-params`` (a JSON object) adds the class's own
    arguments (``num_nodes_to_select``, ``group_size``, ``beta``, ...), optionally
    ``"pre": [{"kind": "bucketing", "s": 2}, ...]`` pre-aggregators and the weight policy
    (``"weighting"``, ``"weight_cap"``).
    """
    from .. import strategies

    params = json_param(settings["strategy-params"], "strategy-params")
    pre = [PreAggregator(p.pop("kind"), **p) for p in (dict(x) for x in params.pop("pre", []))]
    policy = {k: params.pop(k) for k in ("weighting", "weight_cap") if k in params}  # the strategy's, not the rule's
    f = int(settings["f"])
    min_nodes = int(settings["min-nodes"])
    common = dict(
        fraction_train=float(settings["fraction-train"]), fraction_evaluate=float(settings["fraction-evaluate"]),
        min_train_nodes=min_nodes, min_evaluate_nodes=min_nodes, min_available_nodes=min_nodes,
        server_learning_rate=float(settings["server-lr"]), server_momentum=float(settings["server-momentum"]),
        pre_aggregators=pre, **policy,
    )
    key = strategy_name(settings["strategy"])
    if key in STRATEGIES:
        cls_name, rule = STRATEGIES[key]
    elif str(settings["strategy"]) in RULES:
        cls_name, rule = "RobustFedAvg", str(settings["strategy"])
    else:
        known = sorted({v[0] for v in STRATEGIES.values()} | set(RULES))
        raise ValueError(f"unknown strategy {settings['strategy']!r}; choose from {known}")
    cls = getattr(strategies, cls_name)
    if cls_name == "RobustFedAvg":
        return cls(rule=rule, num_malicious_nodes=0 if rule == "mean" else f, rule_params=params, **common)
    if cls_name == "FedTrimmedAvg":
        if "beta" in params:
            return cls(**params, **common)
        return cls(beta=None, num_malicious_nodes=f, **params, **common)
    return cls(num_malicious_nodes=f, **params, **common)
