"""The Flower App's pieces in-process: pyproject tables, run-config defaults, strategy by
name, node-config roles, and the ClientApp's train handler (honest, node-config attack,
run-config simulation scenario)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tomli
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from flwr_byz import strategies
from flwr_byz.app import client_app
from flwr_byz.app.settings import RUN_DEFAULTS, build_strategy, run_settings
from flwr_byz.models import get_weights, make_model

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_declares_the_app_and_its_defaults():
    from flwr.common.config import validate_config

    config = tomli.loads((ROOT / "pyproject.toml").read_text())
    valid, errors, _ = validate_config(config, check_module=True, project_dir=ROOT)
    assert valid, errors
    assert config["tool"]["flwr"]["app"]["config"] == RUN_DEFAULTS
    assert "federations" not in config["tool"]["flwr"]  # flwr run would rewrite pyproject.toml


@pytest.mark.parametrize("name, cls", [
    ("MultiKrum", strategies.MultiKrum), ("multi-krum", strategies.MultiKrum), ("multi_krum", strategies.MultiKrum),
    ("Bulyan", strategies.Bulyan), ("krum", strategies.Krum), ("FedMedian", strategies.FedMedian),
    ("geometric-median", strategies.GeometricMedian), ("Detox", strategies.Detox),
    ("FedAvg", strategies.RobustFedAvg), ("centered_clipping", strategies.CenteredClipping),
])
def test_strategy_by_name(name, cls):
    strategy = build_strategy(run_settings({"strategy": name, "f": 1, "min-nodes": 7}))
    assert type(strategy) is cls
    assert strategy.min_available_nodes == 7 and strategy.min_train_nodes == 7
    expected_f = 0 if name == "FedAvg" else 1
    assert strategy.num_malicious_nodes == expected_f


def test_fltrust_foolsgold_flame_and_reputation_from_the_run_config():
    """FLTrust's root dataset (``root_size`` training examples of the run's dataset, loaded
    at the first round, the clients' training settings), FoolsGold, FLAME and the
    reputation layer, all by name and strategy-params."""
    from flwr_byz.clients.root import LazyRootUpdate

    s = build_strategy(run_settings({"strategy": "FLTrust", "f": 0, "lr": 0.05, "strategy-params": '{"root_size": 64}'}))
    assert type(s) is strategies.FLTrust
    fn = s.robust.server_update_fn
    assert isinstance(fn, LazyRootUpdate) and fn.size == 64 and fn.training["lr"] == 0.05
    assert type(build_strategy(run_settings({"strategy": "fltrust", "f": 0}))).__name__ == "FLTrust"  # default 100
    assert build_strategy(run_settings({"strategy": "fltrust", "f": 0})).robust.server_update_fn.size == 100
    assert type(build_strategy(run_settings({"strategy": "foolsgold", "f": 0}))) is strategies.FoolsGold
    flame = build_strategy(run_settings({"strategy": "flame", "f": 1, "seed": 4}))
    assert type(flame) is strategies.FLAME and flame.robust.aggregator.params["seed"] == 4  # reproducible noise
    r = build_strategy(run_settings({"strategy": "multi-krum", "f": 1,
                                     "strategy-params": '{"reputation": {"threshold": 0.2}}'}))
    assert r.robust.reputation.threshold == 0.2
    with pytest.raises(ValueError, match="root_size"):
        build_strategy(run_settings({"strategy": "median", "f": 1, "strategy-params": '{"root_size": 10}'}))


def test_strategy_params_and_errors():
    params = '{"num_nodes_to_select": 3, "pre": [{"kind": "bucketing", "s": 2}]}'
    s = build_strategy(run_settings({"strategy": "multi-krum", "f": 2, "strategy-params": params}))
    assert s.num_nodes_to_select == 3 and s.robust.aggregator.pre[0].kind == "bucketing"
    t = build_strategy(run_settings({"strategy": "FedTrimmedAvg", "strategy-params": '{"beta": 0.1}'}))
    assert t.beta == 0.1
    assert build_strategy(run_settings({"strategy": "detox", "strategy-params": '{"group_size": 5}'})).group_size == 5
    with pytest.raises(ValueError, match="unknown strategy"):
        build_strategy(run_settings({"strategy": "best-rule"}))
    with pytest.raises(ValueError, match="JSON object"):
        build_strategy(run_settings({"strategy-params": "[1, 2]"}))


def test_node_attack_from_node_config():
    assert client_app.node_attack({"partition-id": 0, "num-partitions": 6}) == ("none", {})
    attack, params = client_app.node_attack({"partition-id": 0, "num-partitions": 6, "attack": "alie", "attack-z": 1.5,
                                             "num-malicious": 2, "rendezvous": "127.0.0.1:1"})
    assert attack == "alie" and params == {"z": 1.5, "num_malicious": 2, "num_clients": 6}
    attack, params = client_app.node_attack({"num-partitions": 4, "attack": "sign_flip",
                                             "attack-params": '{"scale": 3.0}'})
    assert params["scale"] == 3.0


@pytest.fixture
def task_identity():
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 7, 1, 1
    yield
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None


def _train(node_config, run_config=None):
    model = make_model("mlp", (1, 8, 8), 10, seed=0)
    names = list(model.state_dict().keys())
    weights = get_weights(model)
    record = ArrayRecord(dict(zip(names, (Array(w) for w in weights))))
    msg = Message(content=RecordDict({"arrays": record, "config": ConfigRecord({"server-round": 1})}),
                  message_type=MessageType.TRAIN, dst_node_id=1)
    ctx = Context(run_id=7, node_id=1, node_config=node_config, state=RecordDict(),
                  run_config=run_settings({"local-steps": 2, **(run_config or {})}))
    reply = client_app.app(msg, ctx)
    assert not reply.has_error(), reply.error
    out = reply.content.array_records["arrays"]
    assert list(out.keys()) == names
    delta = np.concatenate([(a.numpy() - w).ravel() for a, w in zip(out.values(), weights)])
    return delta, dict(reply.content.metric_records["metrics"])


def test_client_app_honest_and_node_config_attack(task_identity):
    honest, metrics = _train({"partition-id": 1, "num-partitions": 4})
    assert metrics["partition-id"] == 1 and metrics["num-examples"] > 0 and "attack.malicious" not in metrics
    assert np.abs(honest).sum() > 0
    flipped, metrics = _train({"partition-id": 1, "num-partitions": 4, "attack": "sign_flip", "attack-scale": 2.0})
    assert metrics["attack.malicious"] == 1
    np.testing.assert_allclose(flipped, -2.0 * honest, rtol=1e-4, atol=1e-6)


def test_client_app_simulation_scenario_from_run_config(task_identity):
    scenario = {"attack": "sign_flip", "num-malicious": 1}
    bad, metrics = _train({"partition-id": 0, "num-partitions": 4}, scenario)
    assert metrics["attack.malicious"] == 1
    good, metrics = _train({"partition-id": 1, "num-partitions": 4}, scenario)
    assert "attack.malicious" not in metrics
    # a node config attack="none" wins over the run config's scenario
    _, metrics = _train({"partition-id": 0, "num-partitions": 4, "attack": "none"}, scenario)
    assert "attack.malicious" not in metrics


def test_client_app_needs_its_partition(task_identity):
    model = make_model("mlp", (1, 8, 8), 10)
    record = ArrayRecord(dict(zip(model.state_dict().keys(), (Array(w) for w in get_weights(model)))))
    msg = Message(content=RecordDict({"arrays": record, "config": ConfigRecord({})}),
                  message_type=MessageType.TRAIN, dst_node_id=1)
    ctx = Context(run_id=7, node_id=1, node_config={}, state=RecordDict(), run_config=run_settings({}))
    with pytest.raises(ValueError, match="partition-id"):
        client_app.train(msg, ctx)


def test_client_app_node_config_backdoors(task_identity):
    """Backdoor SuperNodes from their node config alone: the same attacker classes and
    trigger as `flwr-byz simulate` (runner.backdoor_client)."""
    honest, _ = _train({"partition-id": 1, "num-partitions": 4})
    target = 7
    node = {"partition-id": 1, "num-partitions": 4, "attack": "backdoor", "attack-fraction": 0.5,
            "attack-params": '{"trigger": {"target": %d}}' % target}
    poisoned, metrics = _train(node)
    assert metrics["attack.malicious"] == 1 and metrics["attack.backdoor-target"] == target
    assert metrics["attack.backdoor-fraction"] == 0.5
    assert not np.allclose(poisoned, honest)  # trained on relabelled, stamped inputs
    # model replacement: the backdoor update scaled by gamma = n / server_lr (n = num-partitions)
    replaced, metrics = _train({**node, "attack": "model_replacement"})
    assert metrics["attack.gamma"] == 4.0
    np.testing.assert_allclose(replaced, 4.0 * poisoned, rtol=1e-4, atol=1e-6)
    # the ALIE backdoor without a rendezvous only knows its own update (sigma = 0): the
    # projection box is a point, and the node sends its own honest update
    alie, metrics = _train({**node, "attack": "alie_backdoor", "attack-z": 1.0})
    assert metrics["attack.alie-z"] == 1.0 and metrics["attack.malicious"] == 1
    np.testing.assert_allclose(alie, honest, rtol=1e-5, atol=1e-7)


def test_server_evaluation_reports_the_backdoor_asr(tmp_path):
    """The ServerApp's evaluate_fn: accuracy and loss always; the ASR (on triggered test
    inputs whose true label is not the target) when the run config's attack is a backdoor,
    with the trigger the attacking nodes build from the same attack-params."""
    from flwr_byz.app import server_app
    from flwr_byz.simulations import runner
    from flwr_byz.simulations.backdoor_eval import backdoor_inputs, predict
    from flwr_byz.simulations.datasets import load_dataset

    data = load_dataset("digits")
    model = make_model("mlp", data.input_shape, data.num_classes, seed=0)
    arrays = ArrayRecord(dict(zip(model.state_dict().keys(), (Array(w) for w in get_weights(model)))))

    class Strategy:
        history: list = []

    # target: the label the (untrained) model gives most stamped inputs, so the ASR is not 0
    stamped, _ = backdoor_inputs(data, runner.cell_trigger(data, {"trigger": {"size": 2}}))
    target = int(np.bincount(predict(model, stamped)).argmax())
    spec = {"target": target, "size": 2}
    for attack, params in (("none", "{}"), ("backdoor", json.dumps({"trigger": spec}))):
        settings = run_settings({"attack": attack, "attack-params": params, "num-malicious": 0})
        writer = runner.ResultsWriter(tmp_path / attack)
        evaluate = server_app.RoundEvaluation(settings, 7, data, model, Strategy(), writer)
        metrics = dict(evaluate(0, arrays))
        row = json.loads(writer.path.read_text().splitlines()[0])
        assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["loss"] > 0
        if attack == "none":
            assert evaluate.trigger is None and "asr" not in metrics and "asr" not in row
            continue
        trigger = evaluate.trigger
        assert trigger.target == target and trigger.size == (2, 2)
        assert trigger == runner.cell_trigger(data, {"trigger": spec})
        x_bd, y_true = backdoor_inputs(data, trigger)
        np.testing.assert_array_equal(y_true, data.y_test)
        assert np.all(x_bd[:, :, :2, :2] == trigger.value)  # stamped top-left 2x2
        non_target = y_true != target
        expected = float(np.mean(predict(model, x_bd[non_target]) == target))
        assert expected > 0
        assert metrics["asr"] == pytest.approx(expected)
        assert row["asr"] == pytest.approx(expected) and row["round"] == 0 and row["cfg_attack"] == "backdoor"


@pytest.mark.parametrize("name", ["mean", "geometric_median", "GeometricMedian", "multi-krum"])
def test_the_weight_policy_from_strategy_params(name):
    s = build_strategy(run_settings({"strategy": name, "f": 1,
                                     "strategy-params": '{"weighting": "capped", "weight_cap": 3.0}'}))
    assert s.robust.weighting == "capped" and s.robust.weight_cap == 3.0
    assert "weighting" not in s.robust.aggregator.params  # the strategy's option, not the rule's
    default = build_strategy(run_settings({"strategy": name, "f": 1}))
    assert default.robust.weighting == ("raw" if name == "mean" else "uniform")


def test_relative_results_dir_never_depends_on_the_superlinks_directory(tmp_path, monkeypatch):
    from flwr_byz.app.server_app import results_path

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLWR_BYZ_RESULTS_ROOT", raising=False)
    from pathlib import Path

    assert results_path("results/app") == Path.home() / "flwr-byz" / "results" / "app"
    monkeypatch.setenv("FLWR_BYZ_RESULTS_ROOT", str(tmp_path / "root"))
    assert results_path("results/app") == tmp_path / "root" / "results" / "app"
    assert results_path(str(tmp_path / "abs")) == tmp_path / "abs"


@pytest.mark.parametrize("overrides, match", [
    ({"f": 1.7}, "f must be a non-negative integer"),
    ({"f": -1}, "f must be a non-negative integer"),
    ({"f": True}, "f must be a non-negative integer"),
    ({"server-lr": float("nan")}, "must be finite"),
    ({"strategy": "krumm"}, "unknown strategy 'krumm'"),
])
def test_bad_run_config_values_are_refused_when_the_strategy_is_built(overrides, match):
    with pytest.raises(ValueError, match=match):
        build_strategy(run_settings({"strategy": "median", "f": 1, **overrides}))
