"""The ClientApp of the flwr-byz Flower App (Message API).

One ClientApp serves every SuperNode; a SuperNode's role comes from its node config, so a
malicious SuperNode is started by its flags alone:

    flower-supernode ... --node-config 'partition-id=0 num-partitions=6'
    flower-supernode ... --node-config 'partition-id=5 num-partitions=6 attack="alie" num-malicious=2
                                        rendezvous="127.0.0.1:7070" rendezvous-authkey-file="/path/key"'

Honest nodes train :class:`~flwr_byz.clients.honest.TorchClient` on their partition (built
by :func:`flwr_byz.simulations.runner.honest_client`, so deployment and simulation train
identically). A node whose node config has ``attack`` wraps it in
:class:`~flwr_byz.clients.malicious.MaliciousClient`, or, for the backdoor attacks
(``backdoor``, ``model_replacement``, ``alie_backdoor``), in the backdoor client that
``flwr-byz simulate`` uses (:func:`flwr_byz.simulations.runner.backdoor_client`, the same
trigger from ``attack-params``); colluding attacks (ALIE, IPM, Min-Max, Min-Sum, the ALIE
backdoor) meet the other corrupted nodes at a rendezvous (:mod:`flwr_byz.clients.rendezvous`)
when ``rendezvous`` is set, and otherwise use the node's own update only (with a warning).

Simulation (``flwr run .`` on a local simulation connection): the Simulation Engine gives
every node the same node config (only ``partition-id`` / ``num-partitions`` differ), so
the run config's ``attack`` / ``num-malicious`` / ``attack-params`` make partitions
0..m-1 malicious, exactly as ``flwr-byz simulate`` does
(:func:`flwr_byz.simulations.runner.scenario_fit`, file-based collusion on the machine).
A node config ``attack`` always wins over the run config's (``attack="none"`` forces an
honest node).
"""

from __future__ import annotations

import json
import logging

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from ..attacks.catalogue import ATTACK_SPECS, check_attack_params, colluding_attacks
from ..clients.malicious import MaliciousClient
from ..simulations import runner
from .settings import data_key, json_param, run_settings, train_config

LOG = logging.getLogger("flwr_byz.app")

app = ClientApp()

# Node-config keys that are not attack parameters.
_NODE_KEYS = {"attack", "attack-params"}


def _first(records, what: str):
    if not records:
        raise ValueError(f"the message carries no {what}")
    return next(iter(records.values()))


def _node(context: Context) -> tuple[int, int]:
    nc = context.node_config
    if nc.get("num-threads"):
        import torch

        torch.set_num_threads(int(nc["num-threads"]))
    if "partition-id" not in nc or "num-partitions" not in nc:
        raise ValueError("node config needs partition-id and num-partitions, e.g. "
                         "--node-config 'partition-id=0 num-partitions=5'")
    return int(nc["partition-id"]), int(nc["num-partitions"])


def node_attack(node_config) -> tuple[str, dict]:
    """(attack, parameters) chosen by the node config; ("none", {}) for an honest node.

    Parameters: every ``attack-<name>`` key (``attack-z=1.5``, ``attack-scale=2.0``) plus
    the JSON object ``attack-params``; ``num-malicious`` (the colluders, default 1) and
    ``num-clients`` (n, default ``num-partitions``) feed ALIE's z_max.
    """
    nc = dict(node_config)
    attack = str(nc.get("attack", "none"))
    if attack == "none":
        return "none", {}
    params = {k[len("attack-"):].replace("-", "_"): v for k, v in nc.items()
              if k.startswith("attack-") and k not in _NODE_KEYS}
    params.update(json_param(nc.get("attack-params", "{}"), "attack-params"))
    params.setdefault("num_malicious", int(nc.get("num-malicious", 1)))
    params.setdefault("num_clients", int(nc.get("num-clients", nc.get("num-partitions", 1))))
    check_attack_params([attack], params, "the node config's attack parameters")
    return attack, params


def _node_client(context: Context, key: tuple, pid: int, config: dict):
    """The NumPyClient this node runs: honest, or malicious by its node config."""
    from ..clients.rendezvous import CachedFit, RendezvousCollusion, read_authkey

    nc = context.node_config
    client = runner.honest_client(key, pid, config)
    if nc.get("device"):
        import torch

        client.device = torch.device(str(nc["device"]))
    attack, params = node_attack(nc)
    if attack == "none":
        return client, None
    collusion = None
    colluding = attack in colluding_attacks()
    if colluding and nc.get("rendezvous"):
        client = CachedFit(client)
        collusion = RendezvousCollusion(
            client, member=pid, expected=int(params["num_malicious"]), address=str(nc["rendezvous"]),
            authkey=read_authkey(nc.get("rendezvous-authkey-file") or None),
            timeout=float(nc.get("rendezvous-timeout", 60.0)), label=f"{context.run_id}|{attack}",
        )
    elif colluding:
        LOG.warning("node %s runs %s without a rendezvous: it only knows its own update", pid, attack)
    if attack in runner.BACKDOORS:
        data = runner.load_partitioned(key)[0]
        client = runner.backdoor_client(client, attack, params, data, collusion=collusion,
                                        num_clients=int(params["num_clients"]),
                                        num_malicious=int(params["num_malicious"]),
                                        server_lr=float(config.get("server-lr", 1.0)))
        return client, collusion
    if "rule" in ATTACK_SPECS[attack].params and params.get("rule") is None:
        # a rule-aware attack targets the run's strategy unless its node config names one
        from ..strategies.rule_classes import canonical_strategy

        params["rule"] = canonical_strategy(str(context.run_config.get("strategy", "mean"))).removeprefix("detox-")
    return MaliciousClient(client, attack, collusion=collusion, **params), collusion


def _reply_arrays(names, weights) -> ArrayRecord:
    return ArrayRecord(dict(zip(names, (Array(np.asarray(w)) for w in weights))))


def _metrics(values: dict) -> MetricRecord:
    return MetricRecord({k: (float(v) if isinstance(v, (float, np.floating)) else int(v))
                         for k, v in values.items()
                         if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)})


def _inputs(msg: Message, context: Context):
    """What both handlers start from: run settings, partition, n, data key, received arrays."""
    settings = run_settings(context.run_config)
    pid, n = _node(context)
    key = data_key(settings, n, str(context.node_config.get("data-root", "") or "") or None)
    return settings, pid, n, key, _first(msg.content.array_records, "ArrayRecord")


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Local training from the received arrays (honest, or the node's attack)."""
    settings, pid, n, key, record = _inputs(msg, context)
    names = list(record.keys())
    parameters = [a.numpy() for a in record.values()]
    received = dict(_first(msg.content.config_records, "ConfigRecord")) if msg.content.config_records else {}
    config = {**train_config(settings), **received}

    if "attack" not in context.node_config and settings["attack"] != "none" and int(settings["num-malicious"]) > 0:
        # Simulation scenario: partitions 0..m-1 attack (the runner's harness channel).
        scenario = {**config, "attack": settings["attack"], "num-malicious": int(settings["num-malicious"]),
                    "num-clients": n, "attack-params": json.dumps(json_param(settings["attack-params"],
                                                                             "attack-params")),
                    "cell": f"run-{context.run_id}"}
        weights, num_examples, metrics = runner.scenario_fit(key, pid, parameters, scenario)
    else:
        client, collusion = _node_client(context, key, pid, config)
        weights, num_examples, metrics = client.fit(parameters, config)
        metrics = dict(metrics or {})
        if collusion is not None and collusion.last:
            metrics["attack.colluders-heard"] = len(collusion.last.get("members", []))
            metrics["attack.rendezvous-complete"] = int(bool(collusion.last.get("complete")))
    metrics = {**dict(metrics or {}), "num-examples": int(num_examples), "partition-id": pid}
    content = RecordDict({"arrays": _reply_arrays(names, weights), "metrics": _metrics(metrics)})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received arrays on this node's partition (always honest)."""
    settings, pid, n, key, record = _inputs(msg, context)
    client = runner.honest_client(key, pid, train_config(settings))
    loss, num_examples, metrics = client.evaluate([a.numpy() for a in record.values()], {})
    content = RecordDict({"metrics": _metrics({"loss": loss, "num-examples": num_examples, **metrics})})
    return Message(content=content, reply_to=msg)
