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


# --- every colluding attack of the catalogue, in one Simulation-Engine round ------------------

GROUP = 3  # corrupted clients per attack


def _torch_client(pid):
    from flwr_byz.clients.honest import TorchClient

    rng = np.random.default_rng(pid)
    x = rng.standard_normal((24, 1, 4, 4)).astype(np.float32)
    return TorchClient("mlp", x, rng.integers(0, 3, 24), (1, 4, 4), 3, pid, batch_size=8, lr=0.1, seed=pid,
                       local_steps=2)


def _colluding_app(store, attacks, n):
    from flwr_byz.attacks.backdoor import PixelTrigger
    from flwr_byz.clients import AlieBackdoorClient, MaliciousClient

    def client_fn(context):
        pid = int(context.node_config["partition-id"])
        k = pid // GROUP
        if k >= len(attacks):
            return _torch_client(pid).to_client()
        attack, members = attacks[k], range(k * GROUP, (k + 1) * GROUP)
        collusion = Collusion(members, _torch_client, store_dir=store / attack, label=attack)
        if attack == "alie_backdoor":
            return AlieBackdoorClient(_torch_client(pid), PixelTrigger(2, (0, 0), 3.0, target=0), collusion=collusion,
                                      num_clients=n).to_client()
        return MaliciousClient(_torch_client(pid), attack, collusion=collusion, num_clients=n, num_malicious=GROUP,
                               rule="median").to_client()

    return ClientApp(client_fn=client_fn)


@pytest.mark.timeout(300)
def test_every_colluding_attack_completes_a_simulation_engine_round(tmp_path):
    """Each colluding attack of the catalogue (model poisoning and the ALIE backdoor) has its
    own group of corrupted clients, all in one federation run by several Ray actors: the
    round completes with every reply, no colluder waits forever on another, and the groups
    whose attack sends one vector for all its members send it identically."""
    from flwr_byz.attacks.catalogue import colluding_attacks
    from flwr_byz.models import get_weights

    attacks = sorted(colluding_attacks())
    n = GROUP * len(attacks) + 3
    initial = get_weights(_torch_client(0).model)
    strategy = Capture(rule="median", num_malicious_clients=GROUP, min_fit_clients=n, min_available_clients=n,
                       fraction_evaluate=0.0, initial_parameters=ndarrays_to_parameters(initial))
    server_app = ServerApp()

    @server_app.main()
    def main(grid, context):
        start_grid(grid=grid, server=Server(client_manager=SimpleClientManager(), strategy=strategy),
                   config=ServerConfig(num_rounds=1, round_timeout=240))

    run_simulation(server_app=server_app, client_app=_colluding_app(tmp_path, attacks, n), num_supernodes=n,
                   backend_config={"client_resources": {"num_cpus": 0.5, "num_gpus": 0.0}})
    assert strategy.failures == 0 and sorted(strategy.seen) == list(range(n))
    flat = {p: np.concatenate([a.ravel() for a in strategy.seen[p]]) for p in strategy.seen}
    honest = flat[n - 1]
    one_vector = {"alie", "alie_optimal", "ipm", "ipm_optimal", "min_max", "min_sum", "mimic", "agr_tailored"}
    for k, attack in enumerate(attacks):
        members = [flat[p] for p in range(k * GROUP, (k + 1) * GROUP)]
        assert all(np.isfinite(v).all() for v in members), attack
        if attack in one_vector:
            assert all(np.array_equal(members[0], v) for v in members[1:]), attack
        if attack != "fang_krum":  # Fang's Krum attack may find no lambda Krum accepts and send 0
            assert not np.array_equal(members[0], honest), attack
    assert strategy.history[-1]["skipped"] is None
