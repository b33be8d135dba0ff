"""The attacks as ClientApp mods, for Message-API ClientApps.

    app = ClientApp(mods=[alie_mod(controlled=[0, 1, 2], num_clients=20)])

A mod wraps the ClientApp's own ``train`` function: it lets the honest code run, then
replaces the reply's arrays by the attack's, exactly as the NumPyClient wrappers of
:mod:`flwr_byz.clients.malicious` do (same attacks, same ``attack.*`` metrics). Only the
nodes whose ``partition-id`` (node config) is in ``controlled`` attack; the others pass
through untouched, so one ClientApp serves a whole simulated federation.

Colluding attacks (ALIE, IPM, Min-Max, Min-Sum) compute the honest updates of every
controlled partition through the same honest code: the mod calls the wrapped ClientApp
again with the node config's ``partition-id`` set to each controlled partition (see
:class:`~flwr_byz.clients.collusion.Collusion` for why this cannot deadlock).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MessageType, MetricRecord, RecordDict

from .collusion import Collusion
from .malicious import COLLUDING, MaliciousClient


def _arrays(reply: Message):
    record = next(iter(reply.content.array_records.values()))
    return [a.numpy() for a in record.values()]


class _ReplyClient:
    """The honest reply already computed, seen as a NumPyClient."""

    def __init__(self, reply: Message):
        self.reply = reply

    def fit(self, parameters, config):
        metrics = dict(next(iter(self.reply.content.metric_records.values()), {}))
        return _arrays(self.reply), int(metrics.get("num-examples", 1)), metrics


class _PartitionClient:
    """The wrapped ClientApp run as if this node held partition ``pid``."""

    def __init__(self, msg: Message, context: Context, call_next: Callable, pid: int):
        self.msg, self.context, self.call_next, self.pid = msg, context, call_next, pid

    def fit(self, parameters, config):
        ctx = Context(run_id=self.context.run_id, node_id=self.context.node_id,
                      node_config={**dict(self.context.node_config), "partition-id": self.pid},
                      state=RecordDict(), run_config=self.context.run_config)
        reply = self.call_next(self.msg, ctx)
        if reply.has_error():
            raise RuntimeError(f"honest train of partition {self.pid} failed: {reply.error.reason}")
        return _arrays(reply), 0, {}


def attack_mod(attack: str, *, controlled=None, store_dir=None, **params):
    """A mod mounting ``attack`` (a name of :data:`~flwr_byz.clients.malicious.ATTACKS`).

    Args:
        attack: the attack.
        controlled: partition ids the attacker controls (those nodes attack; colluding
            attacks use all of them). None: every node attacks, colluding alone.
        store_dir: where colluding nodes on one machine share the round's honest updates.
        **params: the attack's parameters (as for :class:`MaliciousClient`).
    """
    controlled = None if controlled is None else sorted(int(p) for p in controlled)

    def mod(msg: Message, context: Context, call_next: Callable) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, context)
        pid = int(context.node_config.get("partition-id", -1))
        if controlled is not None and pid not in controlled:
            return call_next(msg, context)
        reply = call_next(msg, context)
        if reply.has_error():
            return reply
        global_record = next(iter(msg.content.array_records.values()))
        names = list(global_record.keys())
        parameters = [a.numpy() for a in global_record.values()]
        config = dict(next(iter(msg.content.config_records.values()), {}))
        collusion = None
        if (params.get("inner") if attack == "weight_inflation" else attack) in COLLUDING and controlled:
            collusion = Collusion(controlled, lambda p: _PartitionClient(msg, context, call_next, p),
                                  store_dir=store_dir, label=f"mod:{attack}")
        weights, num_examples, metrics = MaliciousClient(_ReplyClient(reply), attack, collusion=collusion,
                                                         **params).fit(parameters, config)
        if "num-examples" in metrics:
            metrics["num-examples"] = num_examples  # what weight inflation claims
        array_key = next(iter(reply.content.array_records))
        metric_key = next(iter(reply.content.metric_records), "metrics")
        content = RecordDict({array_key: ArrayRecord(dict(zip(names, (Array(np.asarray(w)) for w in weights)))),
                              metric_key: MetricRecord({k: v for k, v in metrics.items()
                                                        if isinstance(v, (int, float))})})
        reply.content = content
        return reply

    return mod


def alie_mod(*, controlled, num_clients: int | None = None, z: float | None = None, store_dir=None):
    """ALIE (Baruch et al. 2019) by the controlled partitions; z defaults to z_max(n, m)."""
    return attack_mod("alie", controlled=controlled, store_dir=store_dir, z=z, num_clients=num_clients,
                      num_malicious=len(list(controlled)))


def sign_flip_mod(*, controlled=None, scale: float = 1.0):
    """The controlled nodes send their honest update reversed."""
    return attack_mod("sign_flip", controlled=controlled, scale=scale)


def constant_mod(*, controlled=None, c: float = -1.0):
    """The controlled nodes send the constant update c (DETOX's attack on signSGD)."""
    return attack_mod("constant", controlled=controlled, c=c)


def weight_inflation_mod(*, controlled=None, factor: float | None = 1e6, value: float | None = None,
                         inner: str = "none", **params):
    """The controlled nodes claim ``factor`` times their number of examples (or ``value``),
    with their honest update or the ``inner`` attack's (it composes with other mods too)."""
    return attack_mod("weight_inflation", controlled=controlled, inner=inner, weight_factor=factor,
                      weight_value=value, **params)


def garbage_mod(*, controlled=None, kind: str = "nan"):
    """The controlled nodes send malformed arrays (exercises the server's checks)."""
    return attack_mod("garbage", controlled=controlled, kind=kind)


def detox_mod(msg: Message, context: Context, call_next: Callable) -> Message:
    """DETOX's client contract for an ordinary Message-API ClientApp (docs/detox.md).

    ``ClientApp(train=..., mods=[detox_mod])``: when a train message carries DETOX's keys,
    the wrapped app runs as if this node held partition ``detox-shard`` of
    ``detox-num-shards`` (its ``node_config["partition-id"]`` / ``["num-partitions"]``, which
    is how Flower apps pick their data) with Python's, NumPy's and PyTorch's generators
    seeded by ``detox-seed``: every member of a group trains on the group's shard with the
    same seed, so honest members send bit-identical updates on the same hardware (use
    ``Detox(tolerance=...)`` across different hardware). Other messages pass through.
    """
    if msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, context)
    config = next(iter(msg.content.config_records.values()), {})
    if "detox-shard" not in config:
        return call_next(msg, context)
    from .detox import seed_generators

    seed_generators(int(config.get("detox-seed", 0)))
    node_config = {**dict(context.node_config), "partition-id": int(config["detox-shard"]),
                   "num-partitions": int(config.get("detox-num-shards", 1))}
    shard_context = Context(run_id=context.run_id, node_id=context.node_id, node_config=node_config,
                            state=context.state, run_config=context.run_config)
    return call_next(msg, shard_context)
