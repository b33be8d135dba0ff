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


# --- Flower's own unit cases for its robust strategies, ported as expectations for flwr-byz ---
# The inputs and expected values below are copied from Flower's test files (adap/flower,
# framework/py/flwr/...; the oldest Bulyan case from src/py/flwr/...); the test code is ours.
# Where a case lies outside a bound or convention that docs/strategies.md documents as
# different from Flower's, the assertion is flwr-byz's documented behaviour and says why.


def _message_replies(arrays, weights):
    """One Message-API reply per (array, weight), one array named "0" (as Flower's
    ``ArrayRecord([array])`` names it), from nodes 1, 2, ..."""
    from fuzz_replies import Spec, task_identity, to_message

    task_identity()
    return [to_message(Spec(node=i + 1, arrays=[np.asarray(a)], names=["0"], weight=w))
            for i, (a, w) in enumerate(zip(arrays, weights))]


def _fit_results(arrays, weights):
    """Legacy ``[(proxy, FitRes)]``, one array per reply, clients "1", "2", ..."""
    from fuzz_replies import Spec, to_fitres

    return [to_fitres(Spec(node=i + 1, arrays=[np.asarray(a)], names=None, weight=w))
            for i, (a, w) in enumerate(zip(arrays, weights))]


def _aggregate(api, strategy, arrays, weights):
    """The strategy's real aggregation of one round, called as Flower's tests call it (no
    configure_* before it); the new array, or None for a skipped round."""
    from flwr.common import parameters_to_ndarrays

    if api == "message":
        out, _ = strategy.aggregate_train(1, _message_replies(arrays, weights))
        return None if out is None else out["0"].numpy()
    out, _ = strategy.aggregate_fit(1, _fit_results(arrays, weights), [])
    return None if out is None else parameters_to_ndarrays(out)[0]


def _aggregate_configured_legacy(strategy, initial, arrays, weights):
    """Legacy round run as Flower's server runs it: ``initial_parameters`` -> configure_fit
    (which gives flwr-byz the global model: it then aggregates the updates reply - global)
    -> aggregate_fit. ``initial`` is the model Flower's test passes as initial_parameters."""
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.client_manager import SimpleClientManager
    from fuzz_replies import Proxy

    manager = SimpleClientManager()
    for i in range(len(arrays)):
        manager.register(Proxy(str(i + 1)))
    strategy.initial_parameters = ndarrays_to_parameters([np.asarray(initial)])
    parameters = strategy.initialize_parameters(manager)
    sampled = strategy.configure_fit(1, parameters, manager)
    assert sorted(p.cid for p, _ in sampled) == [str(i + 1) for i in range(len(arrays))]
    out, _ = strategy.aggregate_fit(1, _fit_results(arrays, weights), [])
    return None if out is None else parameters_to_ndarrays(out)[0]


def test_flowers_message_api_fedmedian_unit_case():
    """Flower framework/py/flwr/serverapp/strategy/fedmedian_test.py, test_aggregate_fit:
    three replies (num-examples 5, 2, 9), FedMedian() -> 0.5 in every coordinate. Inside
    flwr-byz's bound (n = 3 >= 2f + 1 with f = 0): Flower's expected values."""
    from flwr_byz import strategies as S

    arrays = [np.array([1.0, 0.2, 0.5, 1.0]), np.array([0.2, 0.5, 1.0, 0.2]), np.array([0.5, 1.0, 0.2, 0.5])]
    out = _aggregate("message", S.FedMedian(), arrays, [5, 2, 9])
    np.testing.assert_allclose(out, [0.5, 0.5, 0.5, 0.5])
    assert out.dtype == np.float64
    np.testing.assert_allclose(median(np.stack(arrays)), [0.5] * 4)  # the core rule, same facts


@pytest.mark.parametrize("configured", [False, True])
def test_flowers_legacy_fedmedian_unit_case(configured):
    """Flower framework/py/flwr/server/strategy/fedmedian_test.py, test_aggregate_fit:
    initial_parameters 0.1, three float32 replies 0.2, 1.0, 0.5 (5 examples each) ->
    0.5. Flower's test calls aggregate_fit directly; ``configured`` also runs the round
    through configure_fit, where flwr-byz takes the median of the updates (reply - 0.1) and
    adds it back to 0.1: the same model (the median is translation equivariant)."""
    from flwr_byz.strategies import legacy as L

    arrays = [np.full(4, v, dtype=np.float32) for v in (0.2, 1.0, 0.5)]
    if configured:
        out = _aggregate_configured_legacy(L.FedMedian(), np.full(4, 0.1, np.float32), arrays, [5, 5, 5])
    else:
        out = _aggregate("legacy", L.FedMedian(), arrays, [5, 5, 5])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.full(4, 0.5, np.float32), rtol=1e-6)


@pytest.mark.parametrize("api", ["message", "legacy"])
def test_flowers_fedtrimmedavg_unit_cases(api):
    """Flower framework/py/flwr/serverapp/strategy/fedtrimmedavg_test.py:
    test_aggregate_fit (beta = 0.25, four replies with num-examples 1, 5, 2, 9 -> 0.5
    everywhere) and test_aggregate_fit_with_scalar_weights (beta = 0.25, 0-d arrays 0.5,
    1.0, 2.0, 100.0 -> 0-d 1.5). int(0.25 * 4) = 1 value cut per side, n = 4 >= 2f + 1:
    inside flwr-byz's bound, so Flower's expected values. Flower has no legacy
    FedTrimmedAvg test; the same facts are run through flwr-byz's legacy class too."""
    from flwr_byz import strategies as S
    from flwr_byz.strategies import legacy as L

    make = (lambda: S.FedTrimmedAvg(beta=0.25)) if api == "message" else (lambda: L.FedTrimmedAvg(beta=0.25))
    arrays = [np.array([0.5, 0.5, 0.5, 0.5]), np.array([1.0, 0.2, 0.5, 1.0]),
              np.array([0.2, 0.5, 1.0, 0.2]), np.array([0.5, 1.0, 0.2, 0.5])]
    np.testing.assert_allclose(_aggregate(api, make(), arrays, [1, 5, 2, 9]), [0.5, 0.5, 0.5, 0.5])
    np.testing.assert_allclose(trimmed_mean(np.stack(arrays), f=1), [0.5] * 4)  # the core rule

    scalars = [np.array(0.5), np.array(1.0), np.array(2.0), np.array(100.0)]
    out = _aggregate(api, make(), scalars, [1, 1, 1, 1])
    assert out.shape == ()  # the 0-d array stays 0-d
    np.testing.assert_allclose(out, 1.5)


@pytest.mark.parametrize("api", ["message", "legacy", "legacy-configured"])
def test_flowers_bulyan_aggregate_fit_unit_case(api):
    """Flower framework/py/flwr/server/strategy/bulyan_test.py, test_aggregate_fit:
    Bulyan(num_malicious_clients=0, to_keep=0), initial_parameters 0.1, six float32
    replies 0.2, 0.5, 0.7, 12.0, 0.1, 0.1 (5 examples each) -> their mean,
    (0.2 + 0.5 + 0.7 + 12.0 + 0.1 + 0.1) / 6, everywhere. With f = 0, theta = n = 6 and
    beta = 6: every update is selected and every value averaged, in Flower and in the
    paper alike; n = 6 >= 4f + 3. Flower's Message-API Bulyan has no aggregate_train
    test; the same facts are run through flwr-byz's Message-API class too."""
    from flwr_byz import strategies as S
    from flwr_byz.strategies import legacy as L

    arrays = [np.full(4, v, dtype=np.float32) for v in (0.2, 0.5, 0.7, 12.0, 0.1, 0.1)]
    expected = np.full(4, (0.2 + 0.5 + 0.7 + 12.0 + 0.1 + 0.1) / 6, dtype=np.float32)
    if api == "message":
        out = _aggregate(api, S.Bulyan(num_malicious_nodes=0), arrays, [5] * 6)
    elif api == "legacy":
        out = _aggregate(api, L.Bulyan(num_malicious_clients=0, to_keep=0), arrays, [5] * 6)
    else:
        out = _aggregate_configured_legacy(L.Bulyan(num_malicious_clients=0, to_keep=0),
                                           np.full(4, 0.1, np.float32), arrays, [5] * 6)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_allclose(bulyan(np.stack(arrays), f=0), expected, rtol=1e-6)  # the core rule


@pytest.mark.parametrize("api", ["message", "legacy"])
def test_flowers_oldest_bulyan_case_is_below_the_bound(api):
    """Flower src/py/flwr/server/strategy/bulyan_test.py (the src/ layout), test_aggregate_fit:
    Bulyan(num_malicious_clients=1) on four replies 0.2, 0.5, 0.7, 12.0, expected 0.2.
    n = 4 < 4f + 3 = 7: outside Bulyan's bound (docs/strategies.md: Bulyan needs
    n >= 4f + 3; Flower's current Bulyan enforces the same bound, which that old test
    predates). flwr-byz skips the round: aggregate returns None, the global model is kept."""
    from flwr_byz import strategies as S
    from flwr_byz.strategies import legacy as L

    arrays = [np.full(4, v, dtype=np.float32) for v in (0.2, 0.5, 0.7, 12.0)]
    strategy = S.Bulyan(num_malicious_nodes=1) if api == "message" else L.Bulyan(num_malicious_clients=1)
    assert _aggregate(api, strategy, arrays, [5] * 4) is None
    assert strategy.history[-1]["skipped"]


def test_flowers_legacy_krum_and_multikrum_unit_cases():
    """Flower framework/py/flwr/server/strategy/krum_test.py, test_aggregate_fit
    (Krum(num_malicious_clients=1), replies 0.2, 0.7, 1.0 -> 0.7) and
    framework/py/flwr/server/strategy/multikrum_test.py, test_aggregate_fit
    (Krum(num_malicious_clients=1, num_clients_to_keep=2), replies 0.2, 0.5, 1.0 -> 0.35),
    float32, 5 examples each. f = 1 on 3 replies is below Krum's bound n >= 2f + 3 = 5
    (docs/strategies.md; Flower clamps the neighbour count n - f - 2 = 0 to 1): flwr-byz
    skips the round. With f = 0 (the same single neighbour) flwr-byz gives Flower's values."""
    from flwr_byz.strategies import legacy as L

    krum_in = [np.full(4, v, dtype=np.float32) for v in (0.2, 0.7, 1.0)]
    multi_in = [np.full(4, v, dtype=np.float32) for v in (0.2, 0.5, 1.0)]
    assert _aggregate("legacy", L.Krum(num_malicious_clients=1), krum_in, [5] * 3) is None
    assert _aggregate("legacy", L.Krum(num_malicious_clients=1, num_clients_to_keep=2), multi_in, [5] * 3) is None
    np.testing.assert_allclose(_aggregate("legacy", L.Krum(num_malicious_clients=0), krum_in, [5] * 3),
                               np.full(4, 0.7, np.float32), rtol=1e-6)
    np.testing.assert_allclose(
        _aggregate("legacy", L.Krum(num_malicious_clients=0, num_clients_to_keep=2), multi_in, [5] * 3),
        np.full(4, 0.35, np.float32), rtol=1e-6)


# Bulyan's aggregation step: flwr-byz's kernel takes, per coordinate, the mean of the beta
# values closest to the *median* of the selected values (the paper's reference, and the one
# both of Flower's Bulyan classes pass to their helper). Flower's helper unit tests call the
# helper with an arbitrary reference: where that reference agrees with the median (or beta
# covers every value), Flower's expected values are asserted; where it does not, the value
# closest to the median (the paper's) is.

def _closest_to_median(weights, beta):
    """flwr-byz's Bulyan aggregation step on per-client lists of arrays (coordinate-wise,
    so the arrays are flattened into columns and reshaped back)."""
    from flwr_byz.aggregation.kernels import closest_to_median_mean

    X = np.stack([_flat(w) for w in weights])
    flat = closest_to_median_mean(X, None, beta)
    out, start = [], 0
    for a in weights[0]:
        out.append(flat[start : start + a.size].reshape(a.shape))
        start += a.size
    return out


def test_flowers_message_api_bulyan_helper_cases_where_the_reference_is_the_median():
    """Flower framework/py/flwr/serverapp/strategy/bulyan_test.py (cases of
    aggregate_n_closest_weights whose reference is the coordinate-wise median, or whose
    beta takes every value): test_single_layer_single_value (1.0, 2.0, 0.5, beta 2 ->
    0.75), test_multiple_layers (-> [1.0, 2.0] and [[0.05, 1.0]]), test_beta_equals_all
    (beta 3 -> the mean), test_nontrivial_shapes (-> the mean of the two near arrays),
    test_identical_weights (three [5, 5] -> [5, 5], whatever the reference [42, -1])."""
    out = _closest_to_median([[np.array([1.0])], [np.array([2.0])], [np.array([0.5])]], 2)
    np.testing.assert_allclose(out[0], [0.75])

    layers = [[np.array([1.1, 2.1]), np.array([[0.2, 1.2]])],
              [np.array([0.9, 1.9]), np.array([[-0.1, 0.8]])],
              [np.array([5.0, 5.0]), np.array([[10.0, 10.0]])]]
    out = _closest_to_median(layers, 2)
    np.testing.assert_allclose(out[0], [1.0, 2.0])
    np.testing.assert_allclose(out[1], [[0.05, 1.0]])
    assert out[1].shape == (1, 2)

    every = [[np.array([1.0, 2.0])], [np.array([-1.0, 0.0])], [np.array([3.0, 4.0])]]
    np.testing.assert_allclose(_closest_to_median(every, 3)[0], [1.0, 2.0])

    square = [[np.array([[1.1, 2.1], [2.9, 3.9]])], [np.array([[10.0, 10.0], [10.0, 10.0]])],
              [np.array([[0.9, 1.9], [3.1, 4.1]])]]
    np.testing.assert_allclose(_closest_to_median(square, 2)[0], (square[0][0] + square[2][0]) / 2)

    same = [[np.array([5.0, 5.0])]] * 3
    np.testing.assert_allclose(_closest_to_median(same, 2)[0], [5.0, 5.0])


def test_flowers_bulyan_helper_cases_with_another_reference_give_the_papers_value():
    """Flower framework/py/flwr/serverapp/strategy/bulyan_test.py, test_beta_equals_one
    (reference 0.0; 1.0, -0.5, 10.0; beta 1 -> Flower -0.5) and
    framework/py/flwr/server/strategy/aggregate_test.py, test_aggregate_n_closest_weights_mean
    (reference [1, 2], [[1, 2], [3, 4]]; four clients; beta 2 -> Flower [1.05, 2.05],
    [[0.95, 2.05], [3.05, 4.05]]). Both helper tests use a reference that is not the median
    of the values; Bulyan (El Mhamdi et al. 2018, flwr-byz, and both of Flower's Bulyan
    classes, which pass the median) measures closeness to the median, so flwr-byz's step
    gives the paper's values: the value nearest the median 1.0 is 1.0 itself, and around
    the medians 1.15, 2.15 / 1.05, 2.15, 3.15, 4.05 the two nearest values average to the
    median. Flower's own helper, given the median as reference, agrees."""
    from flwr.server.strategy.aggregate import _aggregate_n_closest_weights
    from flwr.serverapp.strategy.bulyan import aggregate_n_closest_weights

    three = [[np.array([1.0])], [np.array([-0.5])], [np.array([10.0])]]
    np.testing.assert_allclose(_closest_to_median(three, 1)[0], [1.0])
    np.testing.assert_allclose(aggregate_n_closest_weights([np.array([1.0])], three, beta=1)[0], [1.0])

    four = [[np.array([1.0, 2.0]), np.array([[1.0, 2.0], [3.0, 4.0]])],
            [np.array([1.1, 2.1]), np.array([[1.1, 2.1], [3.1, 4.1]])],
            [np.array([1.2, 2.2]), np.array([[1.2, 2.2], [3.2, 4.2]])],
            [np.array([1.3, 2.3]), np.array([[0.9, 2.5], [3.4, 3.8]])]]
    ours = _closest_to_median(four, 2)
    np.testing.assert_allclose(ours[0], [1.15, 2.15])
    np.testing.assert_allclose(ours[1], [[1.05, 2.15], [3.15, 4.05]])  # 4.05: Flower's value too
    medians = [np.median(np.stack(layer), axis=0) for layer in zip(*four)]
    theirs = _aggregate_n_closest_weights(medians, [(w, 0) for w in four], beta_closest=2)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b)


def test_flowers_bulyan_helper_invalid_beta_case_is_the_rules_bound():
    """Flower framework/py/flwr/serverapp/strategy/bulyan_test.py, test_invalid_beta_too_large:
    beta = 3 for two weight arrays raises ValueError. flwr-byz's Bulyan takes no beta: it is
    n - 4f, never above n; what it refuses is too few updates for f, n < 4f + 3, with
    ByzantineBoundError (a ValueError). Two updates are too few even for f = 0."""
    from flwr_byz.aggregation import ByzantineBoundError

    with pytest.raises(ValueError):
        bulyan(np.array([[1.0], [2.0]]), f=0)
    with pytest.raises(ByzantineBoundError):
        bulyan(np.array([[1.0], [2.0]]), f=0)
