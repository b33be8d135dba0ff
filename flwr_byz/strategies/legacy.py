"""Robust strategies for Flower's legacy strategy API (``flwr.server.strategy``).

For projects built on ``ServerApp(server_fn=...)`` / ``ServerAppComponents`` and
NumPyClients. Each class subclasses legacy ``flwr.server.strategy.FedAvg`` and accepts its
keyword arguments (``fraction_fit``, ``min_fit_clients``, ``initial_parameters``,
``fit_metrics_aggregation_fn``, ...) with the names of Flower's own legacy robust
strategies (``num_malicious_clients``, ``num_clients_to_keep``, ``beta``). Only
``aggregate_fit`` changes; see :mod:`flwr_byz.strategies.message_api` for what it does.
"""

from __future__ import annotations

from logging import WARNING

from flwr.common import FitRes, Parameters, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.logger import log
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg

from .robust_round import RobustStrategyMixin, client_facts, without_client_facts
from .rule_classes import StrategyCatalogue


class RobustFedAvg(RobustStrategyMixin, FedAvg):
    """Legacy FedAvg with its averaging replaced by any rule of the core.

    Args:
        rule: a rule name of :data:`flwr_byz.aggregation.RULES`.
        num_malicious_clients: f, the number of Byzantine clients to tolerate.
        pre_aggregators: :class:`~flwr_byz.aggregation.PreAggregator` steps run before the rule.
        rule_params: the rule's own keyword arguments.
        server_learning_rate, server_momentum: server step and momentum on the aggregate
            (as in Flower's FedAvgM); defaults apply the aggregate unchanged.
        weighting, weight_cap: the weight policy for ``FitRes.num_examples`` (``"uniform"``
            by default for every robust rule, ``"raw"`` for ``rule="mean"``; see
            :class:`flwr_byz.strategies.RobustFedAvg` and docs/strategies.md).
        parameter_smoothing: CRFL's clip-and-perturb step on every new global model
            (:class:`flwr_byz.aggregation.ParameterSmoothing`), or None.
        server_update_fn, reputation: FLTrust's server update and the reputation layer
            (per ``ClientProxy.cid``), as in :class:`flwr_byz.strategies.RobustFedAvg`.
        device: ``"cpu"`` (NumPy), ``"cuda"`` / ``"cuda:N"`` or ``"auto"``: where the rule
            computes, as in :class:`flwr_byz.strategies.RobustFedAvg`.
        **kwargs: legacy ``FedAvg`` arguments, unchanged.
    """

    def __init__(self, *, rule: str = "mean", num_malicious_clients: int = 0, pre_aggregators=(),
                 rule_params: dict | None = None, server_learning_rate: float = 1.0,
                 server_momentum: float = 0.0, weighting: str | None = None, weight_cap: float = 2.0,
                 parameter_smoothing=None, server_update_fn=None, reputation=None, device: str = "cpu", **kwargs):
        super().__init__(**kwargs)
        self.num_malicious_clients = num_malicious_clients
        self._setup_robust(rule, num_malicious_clients, pre_aggregators, rule_params,
                           server_learning_rate, server_momentum, weighting, weight_cap, parameter_smoothing,
                           server_update_fn=server_update_fn, reputation=reputation, device=device)

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager):
        self._current = parameters_to_ndarrays(parameters)
        pairs = super().configure_fit(server_round, parameters, client_manager)
        self._check_sample(len(pairs), f_name="num_malicious_clients",
                           size_names="fraction_fit / min_fit_clients / min_available_clients")
        return pairs

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures):
        failed = []  # (cid, None, reason): dropped, and logged with the client, by the round
        for failure in failures or []:
            if isinstance(failure, tuple) and len(failure) == 2:
                proxy, res = failure
                status = getattr(res, "status", None)
                failed.append((getattr(proxy, "cid", None), None,
                               f"client failed ({getattr(status, 'message', status)})"))
            else:
                log(WARNING, "[flwr-byz] round %s: a client failed (%s: %s)", server_round,
                    type(failure).__name__, failure)
        if not results:
            log(WARNING, "[flwr-byz] round %s skipped: no results (%d failures)", server_round, len(failures or []))
            return None, {}
        if not self.accept_failures and failures:
            log(WARNING, "[flwr-byz] round %s skipped: %d failures and accept_failures=False", server_round,
                len(failures))
            return None, {}
        entries, weights, extra, by_id = list(failed), {}, {}, {}
        for proxy, res in results:
            cid = getattr(proxy, "cid", None)
            try:
                arrays = parameters_to_ndarrays(res.parameters)
            except Exception as err:
                entries.append((cid, None, f"unreadable parameters ({type(err).__name__}: {err})"))
                continue
            entries.append((cid, arrays, None))
            weights[cid] = getattr(res, "num_examples", None)
            by_id[cid] = res
            facts = client_facts(getattr(res, "metrics", None))
            if facts:
                extra[cid] = facts
        global_arrays = self._current
        if global_arrays is None:
            global_arrays, reason = self._zeros_from_replies(server_round, entries, None)
            if global_arrays is None:
                log(WARNING, "[flwr-byz] round %s: aggregate_fit without configure_fit: %s", server_round, reason)
                return None, {}
        new_arrays, byz_metrics, kept = self.robust.run(server_round, global_arrays, None, entries, weights, extra,
                                                        groups=self._groups)
        metrics = {}
        if self.fit_metrics_aggregation_fn and kept:
            try:
                metrics = dict(self.fit_metrics_aggregation_fn(
                    [(by_id[c].num_examples, without_client_facts(by_id[c].metrics)) for c in kept]))
            except Exception as err:
                log(WARNING, "[flwr-byz] round %s: fit metrics not aggregated (%s)", server_round, err)
        metrics.update(byz_metrics)
        if new_arrays is None:
            return None, metrics
        return ndarrays_to_parameters(new_arrays), metrics


class Krum(RobustFedAvg):
    """Krum, or Multi-Krum with ``num_clients_to_keep > 0`` (Blanchard et al. 2017); n >= 2f + 3.

    Same arguments as Flower's legacy ``Krum``.
    """

    def __init__(self, *, num_malicious_clients: int = 0, num_clients_to_keep: int = 0, pre_aggregators=(),
                 **kwargs):
        self.num_clients_to_keep = num_clients_to_keep
        rule, params = ("multi_krum", {"m": num_clients_to_keep}) if num_clients_to_keep > 0 else ("krum", {})
        super().__init__(rule=rule, num_malicious_clients=num_malicious_clients, pre_aggregators=pre_aggregators,
                         rule_params=params, **kwargs)


class MultiKrum(RobustFedAvg):
    """Multi-Krum: mean of the m best Krum scores (m = n - f by default); n >= 2f + 3."""

    def __init__(self, *, num_malicious_clients: int = 0, num_clients_to_keep: int | None = None,
                 pre_aggregators=(), **kwargs):
        self.num_clients_to_keep = num_clients_to_keep
        super().__init__(rule="multi_krum", num_malicious_clients=num_malicious_clients,
                         pre_aggregators=pre_aggregators, rule_params={"m": num_clients_to_keep}, **kwargs)


class FedTrimmedAvg(RobustFedAvg):
    """Coordinate-wise trimmed mean (Yin et al. 2018), int(beta * n) cut per side; n >= 2f + 1."""

    def __init__(self, *, beta: float | None = 0.2, num_malicious_clients: int | None = None,
                 pre_aggregators=(), **kwargs):
        if num_malicious_clients is None:
            if beta is None or not 0 <= beta < 0.5:
                raise ValueError(f"FedTrimmedAvg: beta must be in [0, 0.5), got {beta}")
            self._trim_fraction = float(beta)
        self.beta = beta
        super().__init__(rule="trimmed_mean", num_malicious_clients=num_malicious_clients or 0,
                         pre_aggregators=pre_aggregators, **kwargs)


class Detox(RobustFedAvg):
    """DETOX (Rajput et al., NeurIPS 2019) for the legacy API.

    Each round the sampled clients are split into random groups of ``group_size`` (odd,
    seeded by ``(seed, round)``, logged; the n mod r left over sit the round out). Every
    member of group g gets ``detox-group`` = g, ``detox-shard`` = g, ``detox-num-shards``
    and ``detox-seed`` in its fit config and must train on that shard with that seed (the
    contract in docs/detox.md; :class:`flwr_byz.clients.honest.TorchClient` honours it).
    Aggregation: majority vote per group (exact, or ``tolerance`` mode), optional A0, then
    A1 = ``a1`` with f1 = f // ((r + 1) // 2).
    """

    def __init__(self, *, group_size: int = 3, num_malicious_clients: int = 0, a1: str = "multi_krum",
                 a1_params: dict | None = None, a0: str | None = None, a0_subsets: int | None = None,
                 tolerance: float | None = None, seed: int = 0, pre_aggregators=(), **kwargs):
        super().__init__(rule="mean", num_malicious_clients=num_malicious_clients, **kwargs)
        self._setup_detox(group_size=group_size, f=num_malicious_clients, seed=seed, a1=a1, a1_params=a1_params,
                          a0=a0, a0_subsets=a0_subsets, tolerance=tolerance, pre=pre_aggregators)

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager):
        from flwr.common import FitIns

        from ..aggregation.detox import detox_assignment

        pairs = super().configure_fit(server_round, parameters, client_manager)
        instructions = {proxy.cid: (proxy, ins) for proxy, ins in pairs}
        plan = detox_assignment(sorted(instructions), self.group_size, self.seed, server_round)
        self._groups = plan.groups
        if not plan.groups:
            log(WARNING, "[flwr-byz] DETOX round %s: %d clients sampled, fewer than r=%d", server_round,
                len(instructions), self.group_size)
        out = []
        for cid, extra in plan.configs.items():
            proxy, ins = instructions[cid]
            out.append((proxy, FitIns(ins.parameters, {**ins.config, **extra})))
        return out


# The plain rules: one class each, made from the rule's spec (flwr_byz.aggregation.registry).
strategy_class = StrategyCatalogue(globals(), RobustFedAvg, f_arg="num_malicious_clients", api="legacy API",
                                   positional=False)
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
