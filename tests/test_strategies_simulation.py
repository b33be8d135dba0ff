"""Every strategy, two rounds in Flower's Simulation Engine, in each Flower API.

One ``run_simulation`` per API (Ray starts once for each); inside its ServerApp every
strategy runs two rounds on the same Grid. Clients move the weights by a known step, so
the aggregate is checkable: every honest client sends global + 1 (plus a small,
client-specific wiggle), so after two rounds every robust rule must have moved the
weights by about +2.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.client import ClientApp, NumPyClient
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import Server, ServerApp, ServerConfig, SimpleClientManager
from flwr.server.compat import start_grid
from flwr.simulation import run_simulation

from flwr_byz import strategies as msg_strategies
from flwr_byz.strategies import legacy

SHAPES = [(3, 4), (4,)]
N_NODES = 7
F = 1


def _step(arrays, partition: int, config=None):
    """Honest step; under DETOX the group's shard replaces the partition (same data, same seed)."""
    if config and "detox-shard" in config:
        partition = 1000 + int(config["detox-shard"])
    rng = np.random.default_rng(partition)
    return [a + np.float32(1.0) + rng.normal(0, 0.01, a.shape).astype(np.float32) for a in arrays]


def _message_strategies():
    common = dict(min_train_nodes=N_NODES, min_available_nodes=N_NODES, fraction_evaluate=0.0)
    return {
        "RobustFedAvg": msg_strategies.RobustFedAvg(**common),
        "Krum": msg_strategies.Krum(num_malicious_nodes=F, **common),
        "MultiKrum": msg_strategies.MultiKrum(num_malicious_nodes=F, num_nodes_to_select=3, **common),
        "Bulyan": msg_strategies.Bulyan(num_malicious_nodes=F, **common),
        "FedMedian": msg_strategies.FedMedian(num_malicious_nodes=F, **common),
        "FedTrimmedAvg": msg_strategies.FedTrimmedAvg(beta=0.2, **common),
        "GeometricMedian": msg_strategies.GeometricMedian(num_malicious_nodes=F, **common),
        "CenteredClipping": msg_strategies.CenteredClipping(num_malicious_nodes=F, tau=100.0, **common),
        "SignSGDMajority": msg_strategies.SignSGDMajority(num_malicious_nodes=F, server_lr=1.0, **common),
        "Detox": msg_strategies.Detox(group_size=3, num_malicious_nodes=F, a1="median", **common),
    }


def _legacy_strategies(initial):
    common = dict(min_fit_clients=N_NODES, min_available_clients=N_NODES, fraction_evaluate=0.0,
                  initial_parameters=ndarrays_to_parameters(initial))
    return {
        "RobustFedAvg": legacy.RobustFedAvg(**common),
        "Krum": legacy.Krum(num_malicious_clients=F, **common),
        "MultiKrum": legacy.MultiKrum(num_malicious_clients=F, num_clients_to_keep=3, **common),
        "Bulyan": legacy.Bulyan(num_malicious_clients=F, **common),
        "FedMedian": legacy.FedMedian(num_malicious_clients=F, **common),
        "FedTrimmedAvg": legacy.FedTrimmedAvg(beta=0.2, **common),
        "GeometricMedian": legacy.GeometricMedian(num_malicious_clients=F, **common),
        "CenteredClipping": legacy.CenteredClipping(num_malicious_clients=F, tau=100.0, **common),
        "SignSGDMajority": legacy.SignSGDMajority(num_malicious_clients=F, server_lr=1.0, **common),
        "Detox": legacy.Detox(group_size=3, num_malicious_clients=F, a1="median", **common),
    }


def _initial():
    return [np.zeros(s, dtype=np.float32) for s in SHAPES]


def _check(results):
    assert set(results) == set(_message_strategies())
    for name, (final, history) in results.items():
        assert len(history) == 2, name
        # DETOX: 7 nodes make 2 groups of 3, the 7th sits the round out; both groups win the vote
        expected_kept = 6 if name == "Detox" else N_NODES
        assert all(h["skipped"] is None and len(h["kept"]) == expected_kept for h in history), name
        if name == "Detox":
            assert all(len(h["groups"]) == 2 and h["details"]["groups_won"] == 2 for h in history)
        for a in final:
            np.testing.assert_allclose(a, 2.0, atol=0.05, err_msg=name)


@pytest.mark.timeout(240)
def test_message_api_strategies_two_rounds():
    client = ClientApp()

    @client.train()
    def train(msg: Message, context: Context):
        arrays = msg.content["arrays"].to_numpy_ndarrays()
        new = _step(arrays, int(context.node_config["partition-id"]), msg.content["config"])
        return Message(RecordDict({"arrays": ArrayRecord(new),
                                   "metrics": MetricRecord({"num-examples": 10, "train_loss": 0.5})}),
                       reply_to=msg)

    results = {}
    server = ServerApp()

    @server.main()
    def main(grid, context):
        for name, strategy in _message_strategies().items():
            out = strategy.start(grid=grid, initial_arrays=ArrayRecord(_initial()), num_rounds=2)
            results[name] = (out.arrays.to_numpy_ndarrays(), strategy.history)
            assert "byz.kept" in out.train_metrics_clientapp[2]

    run_simulation(server_app=server, client_app=client, num_supernodes=N_NODES)
    _check(results)


class _StepClient(NumPyClient):
    def __init__(self, partition):
        self.partition = partition

    def fit(self, parameters, config):
        return _step(parameters, self.partition, config), 10, {"train_loss": 0.5}


@pytest.mark.timeout(240)
def test_legacy_api_strategies_two_rounds():
    client = ClientApp(client_fn=lambda context: _StepClient(int(context.node_config["partition-id"])).to_client())
    results = {}
    server = ServerApp()

    @server.main()
    def main(grid, context):
        for name, strategy in _legacy_strategies(_initial()).items():
            fl_server = Server(client_manager=SimpleClientManager(), strategy=strategy)
            hist = start_grid(grid=grid, server=fl_server, config=ServerConfig(num_rounds=2))
            results[name] = (parameters_to_ndarrays(fl_server.parameters), strategy.history)
            assert [r for r, _ in hist.metrics_distributed_fit["byz.kept"]] == [1, 2]

    run_simulation(server_app=server, client_app=client, num_supernodes=N_NODES)
    _check(results)
