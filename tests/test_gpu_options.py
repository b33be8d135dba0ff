"""GPU machines without a GPU: ``--client-gpus`` reaches Flower's backend config, the
default shares the GPUs torch sees, and ``--server-device`` reaches the strategy."""

from __future__ import annotations

import pytest
import torch

from flwr_byz.simulations import runner
from flwr_byz.simulations.cli import main
from flwr_byz.simulations.config import RunConfig


def test_client_resources_by_hand(monkeypatch):
    assert runner.client_resources(1.0, 0.25) == {"num_cpus": 1.0, "num_gpus": 0.25}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runner.client_resources(2.0) == {"num_cpus": 2.0, "num_gpus": 0.0}
    # two GPUs, 16 cores, one core per client: 16 clients at once share the two GPUs
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 16)
    assert runner.client_resources(1.0) == {"num_cpus": 1.0, "num_gpus": 0.125}
    assert runner.client_resources(4.0)["num_gpus"] == 0.5
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="fraction"):
            runner.client_resources(1.0, bad)


def test_client_gpus_reach_the_simulation_engines_backend_config(monkeypatch, tmp_path):
    import flwr.simulation

    seen = []
    monkeypatch.setattr(flwr.simulation, "run_simulation", lambda **kwargs: seen.append(kwargs["backend_config"]))
    import flwr_byz.simulations.reaper as reaper

    monkeypatch.setattr(reaper, "start_reaper", lambda: None)
    cell = RunConfig(num_clients=4, rounds=1)
    runner.run_cells([cell], tmp_path, progress=False, client_gpus=0.5)
    assert seen == [{"client_resources": {"num_cpus": 1.0, "num_gpus": 0.5}}]
    seen.clear()
    code = main(["simulate", "--strategies", "mean", "--attacks", "none", "--num-clients", "4", "--num-malicious",
                 "0", "--rounds", "1", "--client-gpus", "0.25", "--no-progress", "--out", str(tmp_path / "cli")])
    assert seen == [{"client_resources": {"num_cpus": 1.0, "num_gpus": 0.25}}] and code in (0, 1)


def test_server_device_reaches_the_strategy(monkeypatch):
    cell = RunConfig(num_clients=5, rounds=1, strategy="krum", num_malicious=1)
    assert runner.make_strategy(cell).robust.device is None  # the NumPy path
    assert runner.make_strategy(cell, "auto").robust.device == ("cuda" if torch.cuda.is_available() else None)
    assert runner.make_strategy(cell, "auto").robust.aggregator.rule == "krum"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            runner.make_strategy(cell, "cuda")
        with pytest.raises(SystemExit):
            main(["simulate", "--rounds", "1", "--server-device", "cuda"])


def test_the_apps_run_config_device_reaches_the_strategy():
    from flwr_byz.app.settings import build_strategy, run_settings
    from flwr_byz.strategies.legacy import Bulyan as LegacyBulyan

    auto = "cuda" if torch.cuda.is_available() else None
    assert build_strategy(run_settings({})).robust.device is None
    assert build_strategy(run_settings({"device": "auto", "strategy": "detox", "f": 1})).robust.device == auto
    assert LegacyBulyan(num_malicious_clients=1, device="auto").robust.device == auto
    with pytest.raises(ValueError, match="device must be"):
        build_strategy(run_settings({"device": "gpu0"}))


def test_client_resources_refuse_what_ray_would():
    for cpus, gpus, match in ((0, 0.5, "CPUs"), (-1, 0, "CPUs"), (float("nan"), 0, "CPUs"), (1, True, "number"),
                              (1, "abc", "number"), (1, 1.5, "whole")):
        with pytest.raises(ValueError, match=match):
            runner.client_resources(cpus, gpus)
    assert runner.client_resources(1, 2)["num_gpus"] == 2.0
