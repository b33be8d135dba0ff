"""Where a rule's definition coincides with Flower's built-in, outputs match on the same
inputs; where it does not (Message-API Bulyan), a test shows the difference."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, MetricRecord, RecordDict
from flwr.server.strategy.aggregate import (
    aggregate_bulyan,
    aggregate_krum,
    aggregate_median,
    aggregate_trimmed_avg,
)
from flwr.serverapp.strategy.multikrum import select_multikrum

from flwr_byz.aggregation import bulyan, krum, median, multi_krum, trimmed_mean
from flwr_byz.aggregation.bulyan import iterated_krum_selection
from flwr_byz.aggregation.distances import pairwise_sq_distances

SHAPES = [(4, 3), (5,)]


def _clients(n, seed, spread=1.0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        out.append([rng.normal(0, spread, s).astype(np.float32) for s in SHAPES])
    return out, [int(k) for k in rng.integers(1, 50, n)]


def _flat(arrays):
    return np.concatenate([a.ravel() for a in arrays])


def _X(clients):
    return np.stack([_flat(c) for c in clients])


@pytest.mark.parametrize("seed", range(5))
def test_krum_matches_flower_legacy(seed):
    clients, counts = _clients(11, seed)
    ours = krum(_X(clients), f=3)
    theirs = aggregate_krum(list(zip(clients, counts)), num_malicious=3, to_keep=0)
    np.testing.assert_array_equal(ours, _flat(theirs))


@pytest.mark.parametrize("seed", range(5))
def test_multi_krum_matches_flower_legacy_and_message_api(seed):
    clients, counts = _clients(11, seed)
    ours = multi_krum(_X(clients), f=2, m=5, weights=counts)
    legacy = aggregate_krum(list(zip(clients, counts)), num_malicious=2, to_keep=5)
    np.testing.assert_allclose(ours, _flat(legacy), rtol=1e-5, atol=1e-6)
    contents = [RecordDict({"arrays": ArrayRecord(c), "metrics": MetricRecord({"num-examples": k})})
                for c, k in zip(clients, counts)]
    chosen = select_multikrum(contents, num_malicious_nodes=2, num_nodes_to_select=5)
    w = np.array([float(c["metrics"]["num-examples"]) for c in chosen])
    msg = sum(wi * _flat(c["arrays"].to_numpy_ndarrays()) for wi, c in zip(w / w.sum(), chosen))
    np.testing.assert_allclose(ours, msg, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [7, 8])
def test_median_matches_flower(n):
    clients, counts = _clients(n, n)
    np.testing.assert_allclose(median(_X(clients)), _flat(aggregate_median(list(zip(clients, counts)))), rtol=1e-6)


@pytest.mark.parametrize("n,beta", [(10, 0.2), (11, 0.1), (9, 0.3)])
def test_trimmed_mean_matches_flower(n, beta):
    clients, counts = _clients(n, 7)
    f = int(beta * n)
    theirs = aggregate_trimmed_avg(list(zip(clients, counts)), proportiontocut=beta)
    np.testing.assert_allclose(trimmed_mean(_X(clients), f=f), _flat(theirs), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_bulyan_matches_flower_legacy(seed):
    clients, counts = _clients(11, seed)
    theirs = aggregate_bulyan(list(zip(clients, counts)), num_malicious=2, aggregation_rule=aggregate_krum, to_keep=0)
    np.testing.assert_allclose(bulyan(_X(clients), f=2), _flat(theirs), rtol=1e-5, atol=1e-6)


def test_message_api_bulyan_selects_differently_from_the_paper():
    """Flower's Message-API Bulyan keeps the theta best of ONE Krum scoring; the paper
    re-applies Krum on the shrinking set. Some inputs make the two selections differ."""
    n, f = 11, 2
    theta = n - 2 * f
    for seed in range(200):
        clients, counts = _clients(n, seed)
        X = _X(clients)
        ours = set(iterated_krum_selection(pairwise_sq_distances(X), f, theta))
        contents = [RecordDict({"arrays": ArrayRecord(c), "metrics": MetricRecord({"num-examples": k})})
                    for c, k in zip(clients, counts)]
        picked = select_multikrum(contents, num_malicious_nodes=f, num_nodes_to_select=theta)
        theirs = {next(i for i, c in enumerate(contents) if c is p) for p in picked}
        if ours != theirs:
            assert len(ours) == len(theirs) == theta
            return
    pytest.fail("no input among 200 where single-scoring and iterated Krum selections differ")


def test_flowers_calling_conventions_are_accepted():
    """Drop-in: Flower's positional order and Flower-only arguments at their default values."""
    from flwr.server.strategy.aggregate import aggregate_krum, aggregate_median

    from flwr_byz import strategies as S
    from flwr_byz.strategies import legacy as L

    k = S.Krum(1.0, 1.0, 2, 2, 2, 1)  # Flower: (..., min_available_nodes, num_malicious_nodes)
    assert k.robust.aggregator.f == 1 and k.weighted_by_key == "num-examples" and k.min_available_nodes == 2
    m = S.MultiKrum(1.0, 1.0, 2, 2, 2, 1, 3)  # ..., num_malicious_nodes, num_nodes_to_select
    assert m.robust.aggregator.f == 1 and m.robust.aggregator.params["m"] == 3
    b = S.Bulyan(1.0, 1.0, 2, 2, 2, 2, selection_rule=None)
    assert b.robust.aggregator.f == 2
    lb = L.Bulyan(num_malicious_clients=1, to_keep=0, first_aggregation_rule=aggregate_krum)
    assert lb.robust.aggregator.rule == "bulyan"
    for bad, match in ((dict(to_keep=2), "to_keep=0"), (dict(first_aggregation_rule=aggregate_median), "aggregate_krum")):
        with pytest.raises(ValueError, match=match):
            L.Bulyan(num_malicious_clients=1, **bad)
    with pytest.raises(ValueError, match="selection_rule"):
        S.Bulyan(selection_rule=lambda records, n, f: records)
    with pytest.raises(TypeError, match="multiple values"):
        S.Krum(1.0, fraction_train=0.5)


def test_multikrum_defaults_follow_flower():
    from flwr.serverapp.strategy import MultiKrum as FlowerMultiKrum

    from flwr_byz import strategies as S

    flower_default = __import__("inspect").signature(FlowerMultiKrum).parameters["num_nodes_to_select"].default
    assert S.MultiKrum().robust.aggregator.params["m"] == flower_default == 1
    assert S.MultiKrum(num_nodes_to_select=None).robust.aggregator.params["m"] is None  # the paper's n - f


def test_flowers_own_krum_and_multikrum_unit_cases():
    """Flower's unit tests for its Message-API Krum and MultiKrum (our copies of their inputs
    and expected values): three replies, aggregate_train called without configure_train.
    Flower runs them with f = 1, where Krum's neighbour count n - f - 2 = 0 is clamped to 1;
    flwr-byz refuses f = 1 on 3 replies (n >= 2f + 3, the paper's bound: documented) and,
    with f = 0 (the same single neighbour), gives Flower's expected values."""
    from fuzz_replies import Spec, task_identity, to_message

    from flwr_byz import strategies as S

    task_identity()

    def replies(values):
        return [to_message(Spec(node=i + 1, arrays=[np.full(4, v)], names=["0"], weight=5))
                for i, v in enumerate(values)]

    def aggregated(strategy, values):
        out, _ = strategy.aggregate_train(1, replies(values))
        return None if out is None else out["0"].numpy()

    assert aggregated(S.Krum(num_malicious_nodes=1), [0.2, 0.7, 1.0]) is None  # 3 < 2f + 3 = 5
    np.testing.assert_allclose(aggregated(S.Krum(num_malicious_nodes=0), [0.2, 0.7, 1.0]), [0.7] * 4)
    np.testing.assert_allclose(aggregated(S.MultiKrum(num_malicious_nodes=0, num_nodes_to_select=2),
                                          [0.2, 0.5, 1.0]), [0.35] * 4)
