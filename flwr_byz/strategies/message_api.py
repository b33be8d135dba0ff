"""Robust strategies for Flower's Message API (``flwr.serverapp.strategy``).

Each class subclasses Flower's Message-API ``FedAvg`` and takes the same constructor
arguments (``fraction_train``, ``min_train_nodes``, ``weighted_by_key``, ...), plus the
rule's own, so swapping ``FedAvg(...)`` for ``Bulyan(num_malicious_nodes=3, ...)`` is the
only change a project needs. Sampling, evaluation and ``start(...)`` are Flower's; only
``aggregate_train`` changes: it aggregates the clients' *updates* (reply arrays minus the
arrays the round started from) with a rule of :mod:`flwr_byz.aggregation`, drops bad
replies with a log line, and adds the round's report (``byz.*`` keys) to the train metrics.
The full per-round reports, with node ids, are in ``strategy.history``.
"""

from __future__ import annotations

from collections.abc import Iterable
from logging import WARNING

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from .robust_round import RobustStrategyMixin, client_facts, without_client_facts
from .rule_classes import StrategyCatalogue, take_flower_arguments


class RobustFedAvg(RobustStrategyMixin, FedAvg):
    """FedAvg with its averaging replaced by any rule of the core.

    Args:
        *args, **kwargs: Flower's ``FedAvg`` arguments, unchanged.
        rule: a rule name of :data:`flwr_byz.aggregation.RULES` (``"mean"``, ``"krum"``, ...).
        num_malicious_nodes: f, the number of Byzantine nodes to tolerate.
        pre_aggregators: :class:`~flwr_byz.aggregation.PreAggregator` steps run before the rule.
        rule_params: the rule's own keyword arguments.
        server_learning_rate, server_momentum: server step and momentum on the aggregate
            (as in Flower's FedAvgM); defaults apply the aggregate unchanged.
        weighting: what the replies' ``weighted_by_key`` (number of examples) may do:
            ``"uniform"`` (default for every robust rule: each reply counts once, as the
            rule's f bound assumes), ``"capped"`` (weights clipped at ``weight_cap`` times
            the median reported weight) or ``"raw"`` (FedAvg's semantics, the default of
            ``rule="mean"``: one node can buy any influence). docs/strategies.md.
        weight_cap: c >= 1 of ``weighting="capped"``.
        parameter_smoothing: ``ParameterSmoothing(clip_norm=rho, noise_std=sigma, seed=...)``
            (CRFL, Xie et al., ICML 2021): every new global model is clipped to norm rho and
            perturbed with N(0, sigma^2) noise; composes with any rule.
        server_update_fn: ``fn(arrays) -> arrays``: the global model trained on the
            server's root dataset, called once per round (required by ``FLTrust``;
            :class:`flwr_byz.clients.root.RootUpdate` builds one from arrays of examples).
        reputation: a :class:`~flwr_byz.aggregation.Reputation` layer (per node id, across
            rounds) over the rule: clients it kept gain, others lose; low scores are
            excluded or down-weighted (docs/strategies.md).
        device: where the rule computes: ``"cpu"`` (NumPy, default), ``"cuda"`` /
            ``"cuda:N"`` or ``"auto"`` (a GPU when torch sees one); the replies are
            stacked on the host, copied to the device once, and the aggregate comes back
            (docs/deployment.md, GPU machines).

    ``save_state(path)`` / ``load_state(path)`` carry what the strategy keeps across rounds
    (per-node state included) into a resumed run.
    """

    def __init__(self, *args, rule: str = "mean", num_malicious_nodes: int = 0, pre_aggregators=(),
                 rule_params: dict | None = None, server_learning_rate: float = 1.0,
                 server_momentum: float = 0.0, weighting: str | None = None, weight_cap: float = 2.0,
                 parameter_smoothing=None, server_update_fn=None, reputation=None, device: str = "cpu", **kwargs):
        super().__init__(*args, **kwargs)
        self.num_malicious_nodes = num_malicious_nodes
        self._setup_robust(rule, num_malicious_nodes, pre_aggregators, rule_params,
                           server_learning_rate, server_momentum, weighting, weight_cap, parameter_smoothing,
                           server_update_fn=server_update_fn, reputation=reputation, device=device)
        self._sent: list[Message] = []

    def summary(self) -> None:
        log(20, "\t├──> flwr-byz: %r", self.robust.aggregator)
        super().summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._current = arrays
        self._sent = list(self._train_messages(server_round, arrays, config, grid))
        self._check_sample(len(self._sent), f_name="num_malicious_nodes",
                           size_names="fraction_train / min_train_nodes / min_available_nodes")
        return self._sent

    def _train_messages(self, server_round, arrays, config, grid) -> Iterable[Message]:
        return super().configure_train(server_round, arrays, config, grid)

    def _node_of(self, reply: Message) -> int:
        """The node a reply is about. An error reply made by the SuperLink (node gone,
        timeout) comes *from* the SuperLink; the message it answers names the node."""
        sent = {m.metadata.message_id: m.metadata.dst_node_id for m in self._sent}
        return sent.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)

    def _read_reply(self, msg: Message):
        """(arrays, names, reported weight, metrics) of a reply, or raise ValueError with the
        reason (the weight's value is checked by the round, :func:`flwr_byz.updates.read_weight`)."""
        content = msg.content
        if len(content.array_records) != 1:
            raise ValueError(f"expected exactly one ArrayRecord, got {len(content.array_records)}")
        if len(content.metric_records) != 1:
            raise ValueError(f"expected exactly one MetricRecord, got {len(content.metric_records)}")
        record = next(iter(content.array_records.values()))
        metrics = next(iter(content.metric_records.values()))
        if self.weighted_by_key not in metrics:
            raise ValueError(f"missing '{self.weighted_by_key}' in the reply's MetricRecord")
        return [a.numpy() for a in record.values()], list(record.keys()), metrics[self.weighted_by_key], metrics

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        entries, weights, extra, contents = [], {}, {}, {}
        for msg in replies:
            nid = self._node_of(msg)
            if msg.has_error():
                entries.append((nid, None, f"error reply: {msg.error.reason}"))
                continue
            try:
                arrays, names, weight, metrics = self._read_reply(msg)
            except Exception as err:
                entries.append((nid, None, str(err)))
                continue
            entries.append((nid, arrays, names))
            weights[nid] = weight
            contents[nid] = msg.content
            facts = client_facts(metrics)
            if facts:
                extra[nid] = facts
        if self._current is not None:
            global_arrays, current = [a.numpy() for a in self._current.values()], list(self._current.keys())
        else:
            global_arrays, current = self._zeros_from_replies(server_round, entries, [])
            if global_arrays is None:
                log(WARNING, "[flwr-byz] round %s: aggregate_train without configure_train: %s", server_round,
                    current)
                return None, None
        new_arrays, byz_metrics, kept = self.robust.run(
            server_round, global_arrays, current, entries, weights, extra, groups=self._groups,
        )
        metrics = MetricRecord()
        if kept:
            try:
                records = [RecordDict({"metrics": MetricRecord(without_client_facts(
                    next(iter(contents[c].metric_records.values()))))}) for c in kept]
                metrics = self.train_metrics_aggr_fn(records, self.weighted_by_key)
            except Exception as err:
                log(WARNING, "[flwr-byz] round %s: train metrics not aggregated (%s)", server_round, err)
        for key, value in byz_metrics.items():
            metrics[key] = value
        if new_arrays is None:
            return None, metrics
        return ArrayRecord(dict(zip(current, (Array(a) for a in new_arrays)))), metrics


class MultiKrum(RobustFedAvg):
    """Multi-Krum (Blanchard et al. 2017): the mean of the m updates with the best Krum
    scores; n >= 2f + 3.

    Same arguments and defaults as Flower's ``MultiKrum``: ``num_nodes_to_select=1`` (which is
    Krum) by default, as there; ``num_nodes_to_select=None`` is the paper's m = n - f. An m
    above the round's usable replies is clamped to n with a WARNING.
    """

    def __init__(self, *args, num_malicious_nodes: int = 0, num_nodes_to_select: int | None = 1,
                 pre_aggregators=(), **kwargs):
        if args:  # Flower's positional order: (..., min_available_nodes, num_malicious_nodes, num_nodes_to_select, ...)
            args, bound = take_flower_arguments("MultiKrum", "Message API", args, {})
            num_malicious_nodes = bound.pop("num_malicious_nodes", num_malicious_nodes)
            num_nodes_to_select = bound.pop("num_nodes_to_select", num_nodes_to_select)
            kwargs = {**bound, **kwargs}
        self.num_nodes_to_select = num_nodes_to_select
        super().__init__(*args, rule="multi_krum", num_malicious_nodes=num_malicious_nodes,
                         pre_aggregators=pre_aggregators, rule_params={"m": num_nodes_to_select}, **kwargs)


class FedTrimmedAvg(RobustFedAvg):
    """Coordinate-wise trimmed mean (Yin et al., ICML 2018); n >= 2f + 1.

    ``beta`` as in Flower's ``FedTrimmedAvg`` (int(beta * n) values cut on each side, chosen
    each round from the number of usable replies), or a fixed ``num_malicious_nodes``.
    """

    def __init__(self, *args, beta: float | None = 0.2, num_malicious_nodes: int | None = None,
                 pre_aggregators=(), **kwargs):
        if num_malicious_nodes is None:
            if beta is None or not 0 <= beta < 0.5:
                raise ValueError(f"FedTrimmedAvg: beta must be in [0, 0.5), got {beta}")
            self._trim_fraction = float(beta)
        self.beta = beta
        super().__init__(*args, rule="trimmed_mean", num_malicious_nodes=num_malicious_nodes or 0,
                         pre_aggregators=pre_aggregators, **kwargs)


class Detox(RobustFedAvg):
    """DETOX (Rajput et al., NeurIPS 2019) for the Message API.

    Each round the sampled nodes are split into random groups of ``group_size`` (odd,
    seeded by ``(seed, round)``, logged; the n mod r left over sit the round out). Each
    member's train config carries ``detox-group``, ``detox-shard``, ``detox-num-shards`` and
    ``detox-seed``: it must train on that shard with that seed (docs/detox.md). Aggregation:
    majority vote per group (exact, or ``tolerance`` mode), optional A0 (``a0="mean"`` or
    ``"median"`` over ``a0_subsets`` subsets of the winners), then A1 = ``a1`` with
    f1 = f // ((r + 1) // 2).
    """

    def __init__(self, *args, group_size: int = 3, num_malicious_nodes: int = 0, a1: str = "multi_krum",
                 a1_params: dict | None = None, a0: str | None = None, a0_subsets: int | None = None,
                 tolerance: float | None = None, seed: int = 0, pre_aggregators=(), **kwargs):
        super().__init__(*args, rule="mean", num_malicious_nodes=num_malicious_nodes, **kwargs)
        self._setup_detox(group_size=group_size, f=num_malicious_nodes, seed=seed, a1=a1, a1_params=a1_params,
                          a0=a0, a0_subsets=a0_subsets, tolerance=tolerance, pre=pre_aggregators)

    def _train_messages(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        from ..aggregation.detox import detox_assignment

        messages = sorted(super()._train_messages(server_round, arrays, config, grid),
                          key=lambda m: m.metadata.dst_node_id)
        nodes = [m.metadata.dst_node_id for m in messages]
        plan = detox_assignment(nodes, self.group_size, self.seed, server_round)
        self._groups = plan.groups
        out = []
        for node, extra in plan.configs.items():
            node_config = ConfigRecord({**dict(config), **extra})
            record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: node_config})
            out.append(Message(content=record, message_type=MessageType.TRAIN, dst_node_id=node))
        return out


# The plain rules: one class each, made from the rule's spec (flwr_byz.aggregation.registry).
strategy_class = StrategyCatalogue(globals(), RobustFedAvg, f_arg="num_malicious_nodes", api="Message API",
                                   positional=True)
Krum = strategy_class.make("krum")
Bulyan = strategy_class.make("bulyan")
FedMedian = strategy_class.make("median")
GeometricMedian = strategy_class.make("geometric_median")
CenteredClipping = strategy_class.make("centered_clipping")
SignSGDMajority = strategy_class.make("signsgd_majority")
Meamed = strategy_class.make("meamed")
MDA = strategy_class.make("mda")
MoNNA = strategy_class.make("monna")
SMEA = strategy_class.make("smea")
CAF = strategy_class.make("caf")
DnC = strategy_class.make("dnc")
SignGuard = strategy_class.make("signguard")
Clustering = strategy_class.make("clustering")
ClippedClustering = strategy_class.make("clipped_clustering")
FLTrust = strategy_class.make("fltrust")
FoolsGold = strategy_class.make("foolsgold")
FLAME = strategy_class.make("flame")
TrimmedMean = FedTrimmedAvg  # the rule's usual name
