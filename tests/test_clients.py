"""Malicious clients: what they send, checked against float64 references computed from
the corrupted clients' own honest updates only; collusion without deadlock."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.client import NumPyClient

from flwr_byz.aggregation import RobustAggregator
from flwr_byz.attacks import alie_forecast, alie_z_max
from flwr_byz.clients import AlieClient, Collusion, GarbageClient, MaliciousClient, SignFlipClient
from flwr_byz.strategies.robust_round import RobustRound

SHAPES = [(3, 5), (5,)]
CALLS: list[int] = []


class StepClient(NumPyClient):
    """Deterministic stand-in for training: weights + a partition-specific step."""

    def __init__(self, pid: int):
        self.pid = pid

    def fit(self, parameters, config):
        CALLS.append(self.pid)
        rng = np.random.default_rng(100 + self.pid)
        return [p + rng.normal(0.1, 1.0, p.shape).astype(np.float32) for p in parameters], 10, {"partition-id": self.pid}


def _global():
    return [np.full(s, 3.0, dtype=np.float32) for s in SHAPES]


def _flat(arrays):
    return np.concatenate([np.asarray(a, np.float64).ravel() for a in arrays])


def _honest_update64(pid):
    g = _global()
    return _flat(StepClient(pid).fit(g, {})[0]) - _flat(g)


def test_alie_clients_send_mu_minus_z_sigma_of_their_own_updates(tmp_path):
    n, bad = 20, [0, 1, 2, 3, 4]
    CALLS.clear()
    collusion = Collusion(bad, StepClient, store_dir=tmp_path)
    replies = [AlieClient(StepClient(p), collusion=collusion, num_clients=n).fit(_global(), {"server-round": 1})
               for p in bad]
    # the honest updates of the corrupted partitions were computed once, by the first client
    assert sorted(CALLS[: len(bad) + 1]) == sorted(bad + [0])
    assert len(CALLS) == 2 * len(bad)  # + each client's own honest fit
    own = np.stack([_honest_update64(p) for p in bad])
    z = alie_z_max(n, len(bad))
    expected = own.mean(axis=0) - z * own.std(axis=0)  # population std, float64
    for weights, num, metrics in replies:
        np.testing.assert_allclose(_flat(weights) - _flat(_global()), expected, rtol=1e-5, atol=1e-5)
        assert num == 10 and metrics["attack.alie-z"] == pytest.approx(z)
        fc = alie_forecast(own)
        assert metrics["attack.forecast-z1"] == pytest.approx(fc[1.0])
    first = _flat(replies[0][0])
    assert all(np.array_equal(first, _flat(r[0])) for r in replies)


def test_the_colluders_common_vector_is_computed_once_per_round(tmp_path, monkeypatch):
    from flwr_byz import attacks

    calls = []
    real = attacks.alie_update
    monkeypatch.setattr(attacks, "alie_update", lambda X, **kw: calls.append(len(X)) or real(X, **kw))
    bad = [0, 1, 2, 3]

    def round_of(store, server_round):
        collusion = Collusion(bad, StepClient, store_dir=store)
        return [_flat(AlieClient(StepClient(p), collusion=collusion, num_clients=12).fit(
            _global(), {"server-round": server_round})[0]) for p in bad]

    first = round_of(tmp_path / "a", 1)
    assert calls == [4]  # four colluders, one ALIE computation
    assert all(np.array_equal(first[0], v) for v in first[1:])
    round_of(tmp_path / "a", 2)  # another round
    round_of(tmp_path / "b", 1)  # another run's store: nothing shared across runs
    assert calls == [4, 4, 4]
    # the shared vector is the one each colluder would compute alone (from the pooled updates)
    own = np.stack([_honest_update64(p) for p in bad])
    z = alie_z_max(12, len(bad))
    np.testing.assert_allclose(first[0] - _flat(_global()), own.mean(axis=0) - z * own.std(axis=0), rtol=1e-5,
                               atol=1e-5)


class DataStepClient(StepClient):
    """A StepClient that says what it would train on, as TorchClient does."""

    partition_id = property(lambda self: self.pid)

    def training_data(self, config, partition_id=None):
        return np.zeros((10 + self.pid, 2)), np.zeros(10 + self.pid), 0


def test_colluders_that_say_their_data_do_not_train_for_a_shared_vector(tmp_path):
    """A colluding attack with one common vector does not need the client's own trained
    weights (the collusion trained its partition): only the collusion trains, the vector
    is the same, and each reply keeps the number of examples of its own data."""
    bad = [0, 1, 2, 3]
    CALLS.clear()
    collusion = Collusion(bad, StepClient, store_dir=tmp_path / "a")
    replies = [AlieClient(DataStepClient(p), collusion=collusion, num_clients=12).fit(_global(), {"server-round": 1})
               for p in bad]
    assert sorted(CALLS) == bad  # the collusion's pass only
    own = np.stack([_honest_update64(p) for p in bad])
    z = alie_z_max(12, len(bad))
    for p, (weights, num, metrics) in zip(bad, replies):
        np.testing.assert_allclose(_flat(weights) - _flat(_global()), own.mean(axis=0) - z * own.std(axis=0),
                                   rtol=1e-5, atol=1e-5)
        assert num == 10 + p and metrics["partition-id"] == p and metrics["attack.malicious"] == 1
    # bit-identical to what a client that trains first sends
    plain = AlieClient(StepClient(0), collusion=Collusion(bad, StepClient, store_dir=tmp_path / "b"),
                       num_clients=12).fit(_global(), {"server-round": 1})
    assert np.array_equal(_flat(plain[0]), _flat(replies[0][0]))


def test_alie_update_ignores_the_honest_clients(tmp_path):
    a = AlieClient(StepClient(0), collusion=Collusion([0, 1, 2], StepClient, store_dir=tmp_path), z=1.0)
    b = AlieClient(StepClient(0), collusion=Collusion([0, 1, 2], StepClient, store_dir=tmp_path / "b"), z=1.0)
    # same corrupted set, whatever the honest clients 3.. do: same vector
    np.testing.assert_array_equal(_flat(a.fit(_global(), {})[0]), _flat(b.fit(_global(), {})[0]))


def test_sign_flip_reverses_the_own_update():
    weights, _, metrics = SignFlipClient(StepClient(7)).fit(_global(), {})
    np.testing.assert_allclose(_flat(weights) - _flat(_global()), -_honest_update64(7), rtol=1e-6, atol=1e-6)
    assert metrics["attack.malicious"] == 1


@pytest.mark.parametrize("kind", ["nan", "inf", "wrong_shape", "wrong_dtype", "missing"])
def test_garbage_is_dropped_by_the_server_with_a_reason(kind):
    rr = RobustRound(RobustAggregator("median", f=1))
    g = _global()
    replies = [(f"c{p}", StepClient(p).fit(g, {})[0], None) for p in range(4)]
    replies.append(("evil", GarbageClient(StepClient(9), kind=kind).fit(g, {})[0], None))
    new, metrics, kept = rr.run(1, g, None, replies, {})
    assert new is not None and "evil" not in kept and metrics["byz.dropped"] == 1
    assert "evil" in rr.history[-1]["dropped"] and rr.history[-1]["dropped"]["evil"]


def test_round_is_skipped_below_the_bound_and_global_model_kept():
    rr = RobustRound(RobustAggregator("bulyan", f=1))  # needs 7
    g = _global()
    replies = [(p, StepClient(p).fit(g, {})[0], None) for p in range(6)]
    new, metrics, kept = rr.run(3, g, None, replies, {})
    assert new is None and metrics["byz.skipped"] == 1 and "needs at least 7" in rr.history[-1]["skipped"]


def test_unknown_attack_is_refused():
    with pytest.raises(ValueError, match="unknown attack"):
        MaliciousClient(StepClient(0), "teleport")


@pytest.fixture
def task_identity(monkeypatch):
    """Messages built outside a Flower run need the run id Flower would set."""
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1, raising=False)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1, raising=False)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1, raising=False)


def _message(global_arrays, server_round=1):
    from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

    return Message(content=RecordDict({"arrays": ArrayRecord(global_arrays),
                                       "config": ConfigRecord({"server-round": server_round})}),
                   dst_node_id=1, message_type=MessageType.TRAIN)


def _context(pid):
    from flwr.app import Context, RecordDict

    return Context(run_id=1, node_id=100 + pid, node_config={"partition-id": pid}, state=RecordDict(), run_config={})


def _mod_app(mods):
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp(mods=mods)

    @app.train()
    def train(msg, context):
        arrays = msg.content["arrays"].to_numpy_ndarrays()
        new, n, metrics = StepClient(int(context.node_config["partition-id"])).fit(arrays, {})
        return Message(RecordDict({"arrays": ArrayRecord(new), "metrics": MetricRecord({"num-examples": n})}),
                       reply_to=msg)

    return app


def test_alie_mod_matches_the_numpy_client_wrapper(tmp_path, task_identity):
    from flwr_byz.clients.mods import alie_mod

    bad, n = [0, 1, 2], 10
    app = _mod_app([alie_mod(controlled=bad, num_clients=n, store_dir=tmp_path / "mod")])
    wrapper = AlieClient(StepClient(0), collusion=Collusion(bad, StepClient, store_dir=tmp_path / "np"),
                         num_clients=n)
    expected = _flat(wrapper.fit(_global(), {"server-round": 1})[0])
    for pid in bad:
        reply = app(_message(_global()), _context(pid))
        got = _flat(reply.content["arrays"].to_numpy_ndarrays())
        np.testing.assert_array_equal(got, expected)
        assert reply.content["metrics"]["attack.malicious"] == 1
    # an honest partition passes through untouched
    honest = app(_message(_global()), _context(5))
    np.testing.assert_array_equal(_flat(honest.content["arrays"].to_numpy_ndarrays()),
                                  _flat(StepClient(5).fit(_global(), {})[0]))


def test_sign_flip_mod_reverses_the_update(task_identity):
    from flwr_byz.clients.mods import sign_flip_mod

    reply = _mod_app([sign_flip_mod(controlled=[4])])(_message(_global()), _context(4))
    got = _flat(reply.content["arrays"].to_numpy_ndarrays()) - _flat(_global())
    np.testing.assert_allclose(got, -_honest_update64(4), rtol=1e-6, atol=1e-6)


def test_server_momentum_and_learning_rate_follow_fedavgm():
    """v <- beta v + aggregate; w <- w + lr v (Flower's FedAvgM semantics), checked by hand."""
    rr = RobustRound(RobustAggregator("mean"), server_learning_rate=0.5, server_momentum=0.9)
    g = [np.zeros(3, np.float32)]
    w1 = rr.run(1, g, None, [("a", [np.full(3, 2.0, np.float32)], None)], {})[0]
    np.testing.assert_allclose(w1[0], 0.5 * 2.0)  # v = 2
    w2 = rr.run(2, w1, None, [("a", [w1[0] + 1.0], None)], {})[0]
    np.testing.assert_allclose(w2[0], 1.0 + 0.5 * (0.9 * 2.0 + 1.0))  # v = 2.8


def test_local_steps_take_exactly_that_many_sgd_steps():
    import torch

    from flwr_byz.clients.honest import TorchClient, train_locally
    from flwr_byz.models import get_weights

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 1, 2, 2)).astype(np.float32), rng.integers(0, 3, 40)
    client = TorchClient("mlp", x, y, (1, 2, 2), 3, 0, batch_size=8, lr=0.1)
    w0 = get_weights(client.model)
    one, _, _ = client.honest_update(w0, {"local-steps": 1, "server-round": 1})
    # reference: one plain SGD step on the first minibatch of the same seeded order
    from flwr_byz.clients.honest import round_seed
    from flwr_byz.models import make_model, set_weights

    ref = make_model("mlp", (1, 2, 2), 3)
    set_weights(ref, w0)
    order = torch.randperm(40, generator=torch.Generator().manual_seed(round_seed(0, 1, 0) % (2**63)))[:8]
    loss = torch.nn.functional.cross_entropy(ref(torch.as_tensor(x[order])), torch.as_tensor(y[order]))
    loss.backward()
    expected = [p.detach().numpy() - 0.1 * p.grad.numpy() for p in ref.parameters()]
    for got, exp in zip(one, expected):
        np.testing.assert_allclose(got, exp, rtol=1e-5, atol=1e-6)
    assert train_locally(ref, x, y, steps=3, batch_size=8) > 0


# --- weight inflation ------------------------------------------------------------------------

def test_inflate_num_examples_by_hand():
    from flwr_byz.attacks import inflate_num_examples

    assert inflate_num_examples(10) == 10_000_000  # default factor 10^6
    assert inflate_num_examples(10, factor=2.5) == 25
    assert inflate_num_examples(0, factor=1e3) == 1000  # no data still claims weight
    assert inflate_num_examples(10, value=7) == 7
    assert inflate_num_examples(3, factor=1e30) == 2**63 - 1  # what an int64 field can carry
    for bad in (dict(factor=-1.0), dict(factor=float("inf")), dict(value=float("nan")), dict(factor=True)):
        with pytest.raises(ValueError):
            inflate_num_examples(10, **bad)


def test_weight_inflation_wraps_any_client_and_keeps_its_update():
    from flwr_byz.clients import WeightInflationClient

    honest = StepClient(3).fit(_global(), {})
    weights, num, metrics = WeightInflationClient(SignFlipClient(StepClient(3)), factor=1e4).fit(_global(), {})
    np.testing.assert_allclose(_flat(weights) - _flat(_global()), -(_flat(honest[0]) - _flat(_global())),
                               rtol=1e-6, atol=1e-6)  # the inner attack's update, unchanged
    assert num == 10 * 10_000 and metrics["attack.weight-claimed"] == num and metrics["attack.weight-true"] == 10
    # the catalogue name: sign-flipped update (default inner) with 10^6 x the count
    w2, n2, _ = MaliciousClient(StepClient(3), "weight_inflation").fit(_global(), {})
    np.testing.assert_array_equal(_flat(w2), _flat(weights))
    assert n2 == 10_000_000
    # weight_factor on any other attack
    _, n3, m3 = MaliciousClient(StepClient(3), "gaussian", sigma=1.0, seed=0, weight_value=123).fit(_global(), {})
    assert n3 == 123 and m3["attack.malicious"] == 1
    with pytest.raises(ValueError, match="inner attack"):
        MaliciousClient(StepClient(3), "weight_inflation", inner="teleport")


def test_weight_inflation_mod_rewrites_num_examples(task_identity):
    from flwr_byz.clients.mods import sign_flip_mod, weight_inflation_mod

    app = _mod_app([weight_inflation_mod(controlled=[2], factor=100.0)])
    reply = app(_message(_global()), _context(2))
    assert reply.content["metrics"]["num-examples"] == 1000
    np.testing.assert_array_equal(_flat(reply.content["arrays"].to_numpy_ndarrays()),
                                  _flat(StepClient(2).fit(_global(), {})[0]))  # honest update
    assert _mod_app([weight_inflation_mod(controlled=[2])])(_message(_global()), _context(5)) \
        .content["metrics"]["num-examples"] == 10  # not controlled: untouched
    # composes with another mod: sign flip + inflated weight
    both = _mod_app([weight_inflation_mod(controlled=[2], factor=100.0), sign_flip_mod(controlled=[2])])
    reply = both(_message(_global()), _context(2))
    assert reply.content["metrics"]["num-examples"] == 1000
    got = _flat(reply.content["arrays"].to_numpy_ndarrays()) - _flat(_global())
    np.testing.assert_allclose(got, -_honest_update64(2), rtol=1e-6, atol=1e-6)


def test_weight_inflation_captures_raw_weighting_but_not_the_default():
    """The policy, tested as an attacker uses it: 2 of 9 clients sign-flip with 10^6 x weight."""
    from flwr_byz.clients import WeightInflationClient

    g = _global()
    replies, sizes = [], {}
    for p in range(9):
        client = WeightInflationClient(SignFlipClient(StepClient(p)), factor=1e6) if p < 2 else StepClient(p)
        w, n, _ = client.fit(g, {})
        replies.append((p, w, None))
        sizes[p] = n
    honest_mean = np.mean([_honest_update64(p) for p in range(2, 9)], axis=0)
    out = {}
    for weighting in ("uniform", "raw"):
        rr = RobustRound(RobustAggregator("geometric_median", f=2), weighting=weighting)
        new = rr.run(1, g, None, replies, sizes)[0]
        out[weighting] = _flat(new) - _flat(g)
    # raw: the attackers hold 2 x 10^7 of 2 x 10^7 + 70 examples, so the weighted geometric
    # median lies (up to the honest clients' 3.5e-6 share) on the segment between their two
    # flipped updates, where every point minimises the two-point objective
    a, b = -_honest_update64(0), -_honest_update64(1)
    t = np.clip(np.dot(out["raw"] - a, b - a) / np.dot(b - a, b - a), 0.0, 1.0)
    assert np.linalg.norm(out["raw"] - (a + t * (b - a))) < 1e-2 * np.linalg.norm(a)
    # uniform: the honest side wins (positive alignment with the honest mean)
    assert np.dot(out["uniform"], honest_mean) > 0.5 * np.dot(honest_mean, honest_mean)
