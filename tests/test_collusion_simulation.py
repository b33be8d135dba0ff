"""ALIE collusion in Flower's Simulation Engine: with one actor (clients strictly one after
another) and with several, a round with m corrupted clients completes in bounded time and
all m send the identical ALIE vector."""

from __future__ import annotations

import time

import numpy as np
import pytest
from flwr.client import ClientApp, NumPyClient
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import Server, ServerApp, ServerConfig, SimpleClientManager
from flwr.server.compat import start_grid
from flwr.simulation import run_simulation

from flwr_byz.clients import AlieClient, Collusion
from flwr_byz.strategies.legacy import RobustFedAvg

N, M = 9, 3
SHAPES = [(6, 4), (4,)]


class Honest(NumPyClient):
    def __init__(self, pid):
        self.pid = pid

    def fit(self, parameters, config):
        rng = np.random.default_rng(1000 + self.pid)
        return [p + rng.normal(0, 1, p.shape).astype(np.float32) for p in parameters], 5, {"partition-id": self.pid}


class Capture(RobustFedAvg):
    def aggregate_fit(self, server_round, results, failures):
        self.seen = {int(res.metrics["partition-id"]): parameters_to_ndarrays(res.parameters) for _, res in results}
        self.failures = len(failures)
        return super().aggregate_fit(server_round, results, failures)


def _client_app(store):
    def client_fn(context):
        pid = int(context.node_config["partition-id"])
        if pid < M:
            return AlieClient(Honest(pid), collusion=Collusion(range(M), Honest, store_dir=store),
                              num_clients=N).to_client()
        return Honest(pid).to_client()

    return ClientApp(client_fn=client_fn)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("client_cpus", [2.0, 0.5], ids=["one-actor", "several-actors"])
def test_alie_round_completes_and_colluders_agree(tmp_path, client_cpus):
    initial = [np.zeros(s, np.float32) for s in SHAPES]
    strategy = Capture(rule="median", num_malicious_clients=M, min_fit_clients=N, min_available_clients=N,
                       fraction_evaluate=0.0, initial_parameters=ndarrays_to_parameters(initial))
    server_app = ServerApp()
    timing = {}

    @server_app.main()
    def main(grid, context):
        t0 = time.perf_counter()
        start_grid(grid=grid, server=Server(client_manager=SimpleClientManager(), strategy=strategy),
                   config=ServerConfig(num_rounds=1, round_timeout=150))
        timing["round"] = time.perf_counter() - t0

    run_simulation(server_app=server_app, client_app=_client_app(tmp_path), num_supernodes=N,
                   backend_config={"client_resources": {"num_cpus": client_cpus, "num_gpus": 0.0}})
    # A deadlock would leave replies missing at the round timeout (failures, unseen clients);
    # how fast a loaded machine runs the round is not what this test is about.
    assert timing["round"] < 150
    assert strategy.failures == 0 and sorted(strategy.seen) == list(range(N))
    vectors = [np.concatenate([a.ravel() for a in strategy.seen[p]]) for p in range(M)]
    assert all(np.array_equal(vectors[0], v) for v in vectors[1:])
    assert not np.array_equal(vectors[0], np.concatenate([a.ravel() for a in strategy.seen[M]]))
    assert strategy.history[-1]["skipped"] is None
