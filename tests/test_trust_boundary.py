"""The trust boundary: nothing a client reports besides its update can capture a defense,
stall a round or poison the model (issue 12).

First the handed cases, each against a value computed by hand or by an independent float64
reference; then the property-based fuzz harness (hypothesis) through both Flower APIs'
real aggregation for every rule, the pre-aggregators and DETOX.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flwr_byz.aggregation import REGISTRY, RULES, PreAggregator, RobustAggregator
from flwr_byz.strategies.robust_round import RobustRound
from flwr_byz.updates import ModelLayout, apply_update, policy_weights, read_weight, stack_updates

from fuzz_replies import (
    ARRAY_KINDS, GLOBAL_NAMES, INVALID_WEIGHTS_BOTH, INVALID_WEIGHTS_LEGACY, VALID_WEIGHTS, LogCapture, Spec,
    aggregate, global_arrays, honest_arrays, hostile, make_strategy, task_identity, weight_is_valid,
)

APIS = ["message", "legacy"]


@pytest.fixture(autouse=True)
def _identity():
    task_identity()


def _honest_specs(g, n, seed=0, weight=10, copies=1):
    """n honest replies; ``copies`` consecutive ones are identical (a DETOX group's members
    train on the same shard with the same seed)."""
    rng = np.random.default_rng(seed)
    arrays = [honest_arrays(rng, g) for _ in range(0, n, copies)]
    return [Spec(node=100 + i, arrays=arrays[i // copies], names=list(GLOBAL_NAMES), weight=weight, honest=True)
            for i in range(n)]


def _one_array_specs(values, weights, shape=(3,), dtype=np.float32):
    """Replies to a one-array model named 'w' (the global model is 0)."""
    return [Spec(node=1 + i, arrays=[np.full(shape, v, dtype=dtype)], names=["w"], weight=w)
            for i, (v, w) in enumerate(zip(values, weights))]


def _aggregate_one(strategy, api, specs, g=None, server_round=1):
    """aggregate() for a one-array model named 'w'."""
    from fuzz_replies import aggregate_one

    return aggregate_one(strategy, api, specs, g=g, server_round=server_round)


# --- 1. the weight policy ----------------------------------------------------------------------

@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("claim", [10**7, 10**12])
def test_a_huge_claimed_weight_does_not_capture_the_geometric_median(api, claim):
    # 6 honest updates near 1, one node at -100 claiming 10^7 or 10^12 examples.
    values = [0.9, 0.95, 1.0, 1.0, 1.05, 1.1, -100.0]
    weights = [10] * 6 + [claim]
    out = _aggregate_one(make_strategy(api, "geometric_median", 2), api, _one_array_specs(values, weights))
    # The unweighted geometric median of this input lies within the honest cluster.
    assert out is not None and np.all((out[0] > 0.9) & (out[0] < 1.1))
    # Under weighting="raw" (the reported weights at face value) the same node captures it:
    captured = _aggregate_one(make_strategy(api, "geometric_median", 2, weighting="raw"), api,
                              _one_array_specs(values, weights))
    assert captured is not None and np.allclose(captured[0], -100.0, atol=1e-3)


@pytest.mark.parametrize("api", APIS)
def test_capped_weighting_bounds_a_claim_at_cap_times_the_median(api):
    values = [0.9, 0.95, 1.0, 1.0, 1.05, 1.1, -100.0]
    honest = [10, 20, 10, 30, 10, 20]  # median of all seven claims: 20
    big = _aggregate_one(make_strategy(api, "geometric_median", 2, weighting="capped", weight_cap=2.0), api,
                         _one_array_specs(values, honest + [10**12]))
    at_cap = _aggregate_one(make_strategy(api, "geometric_median", 2, weighting="capped", weight_cap=2.0), api,
                            _one_array_specs(values, honest + [40]))
    np.testing.assert_array_equal(big[0], at_cap[0])  # 10^12 buys exactly what 2 x median (40) buys
    assert np.all((big[0] > 0.9) & (big[0] < 1.1))


def test_policy_weights_by_hand():
    assert policy_weights([1, 2, 3]) is None
    np.testing.assert_allclose(policy_weights([1, 2, 4], "raw"), [0.25, 0.5, 1.0])
    # median 2, cap 2 -> min(w, 4) = [1, 2, 4, 4, 2], over its maximum 4
    np.testing.assert_allclose(policy_weights([1, 2, 4, 1e300, 2], "capped", 2.0), [0.25, 0.5, 1.0, 1.0, 0.5])
    assert policy_weights([0, 0, 0], "raw") is None  # never 0 / 0
    assert policy_weights([0, 0, 5], "capped") is None  # median 0: uniform
    w = policy_weights([1.7e308, 1.7e308, 1.7e308], "raw")  # the sum overflows float64, the max does not
    np.testing.assert_array_equal(w, [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="unknown weighting"):
        policy_weights([1.0], "trusted")


@pytest.mark.parametrize("value", [True, "10", None, float("nan"), float("inf"), -5, -0.5, [1, 2], 10**400,
                                   np.array([1.0]), complex(1, 0)])
def test_read_weight_refuses(value):
    with pytest.raises(ValueError):
        read_weight(value)


@pytest.mark.parametrize("value, expected", [(0, 0.0), (3, 3.0), (2.5, 2.5), (np.int64(7), 7.0),
                                             (np.float32(1.5), 1.5), (10**30, 1e30)])
def test_read_weight_accepts(value, expected):
    assert read_weight(value) == expected


@pytest.mark.parametrize("api", APIS)
def test_multi_krum_selecting_zero_weight_replies_gives_a_finite_model(api):
    # Multi-Krum (f = 1, m = 2) selects the two nearly identical replies; both report 0 examples.
    values = [1.0, 1.0, 1.2, 1.5, 2.0]
    for weighting in (None, "raw"):
        s = make_strategy(api, "multi_krum", 1, rule_params={"m": 2}, weighting=weighting)
        out = _aggregate_one(s, api, _one_array_specs(values, [0, 0, 10, 10, 10]))
        np.testing.assert_allclose(out[0], 1.0)


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("bad", INVALID_WEIGHTS_BOTH[:4])
def test_an_invalid_weight_drops_that_reply_and_the_round_goes_on(api, bad):
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 100.0]
    s = make_strategy(api, "median", 1)
    with LogCapture() as logs:
        out = _aggregate_one(s, api, _one_array_specs(values, [10] * 5 + [bad]))
    np.testing.assert_array_equal(out[0], 3.0)  # the median of the five others
    entry = s.history[-1]
    assert entry["skipped"] is None and list(entry["dropped"]) == ["6"]
    assert any("client 6" in line and "number of examples" in line for line in logs.lines)


@pytest.mark.parametrize("bad", INVALID_WEIGHTS_LEGACY)
def test_legacy_num_examples_of_any_type_drops_only_that_reply(bad):
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 100.0]
    s = make_strategy("legacy", "median", 1)
    out = _aggregate_one(s, "legacy", _one_array_specs(values, [10] * 5 + [bad]))
    np.testing.assert_array_equal(out[0], 3.0)
    assert list(s.history[-1]["dropped"]) == ["6"]


@pytest.mark.parametrize("api", APIS)
def test_weights_whose_sum_overflows_float64_give_the_weighted_mean(api):
    # FedAvg's mean (raw weights by default): 1.5e308 + 1.5e308 overflows; the weights are
    # equal, so the weighted mean is the plain mean, 2.
    s = make_strategy(api, "mean", 0)
    out = _aggregate_one(s, api, _one_array_specs([1.0, 3.0], [1.5e308, 1.5e308]))
    np.testing.assert_allclose(out[0], 2.0)
    gm = make_strategy(api, "geometric_median", 1, weighting="raw")
    out = _aggregate_one(gm, api, _one_array_specs([1.0, 2.0, 3.0], [1.5e308] * 3))
    np.testing.assert_allclose(out[0], 2.0, atol=1e-5)


def test_mean_keeps_flowers_weighted_semantics():
    s = make_strategy("message", "mean", 0)
    out = _aggregate_one(s, "message", _one_array_specs([1.0, 4.0], [1, 2]))
    np.testing.assert_allclose(out[0], 3.0)  # (1 * 1 + 2 * 4) / 3


def test_constructor_refuses_a_bad_policy_or_f():
    with pytest.raises(ValueError, match="weighting"):
        make_strategy("message", "median", 1, weighting="trusted")
    with pytest.raises(ValueError, match="weight_cap"):
        make_strategy("legacy", "median", 1, weighting="capped", weight_cap=0.5)
    for f in (-1, 1.7, True):
        with pytest.raises(ValueError, match="f must be a non-negative integer"):
            make_strategy("message", "krum", f)


# --- 3. structure ------------------------------------------------------------------------------

@pytest.mark.parametrize("api", APIS)
def test_a_0d_model_aggregates_to_the_median_as_a_0d_array(api):
    # Flower's FedMedian gives array(4.) on this input.
    specs = [Spec(node=i + 1, arrays=[np.array(v)], names=["w"], weight=5) for i, v in enumerate([1.0, 4.0, 9.0])]
    out = _aggregate_one(make_strategy(api, "median", 1), api, specs, g=[np.array(0.0)])
    assert out[0].shape == () and out[0].dtype == np.float64 and out[0] == 4.0


def test_replies_listing_arrays_in_another_order_are_matched_by_name():
    g = global_arrays()
    specs = _honest_specs(g, 7)
    ordered = aggregate(make_strategy("message", "median", 1), "message", g, specs)
    for s in specs[::2]:
        s.arrays, s.names = s.arrays[::-1], s.names[::-1]
    shuffled_strategy = make_strategy("message", "median", 1)
    shuffled = aggregate(shuffled_strategy, "message", g, specs)
    assert shuffled_strategy.history[-1]["dropped"] == {}
    for a, b in zip(ordered, shuffled):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("api", APIS)
def test_a_float64_model_moves_below_float32_spacing(api):
    g = [np.full(4, 1.0)]
    step = 1e-12  # far below float32's spacing at 1 (1.2e-7)
    specs = _one_array_specs([1.0 + step] * 3, [1, 1, 1], shape=(4,), dtype=np.float64)
    out = _aggregate_one(make_strategy(api, "median", 1), api, specs, g=g)
    assert out[0].dtype == np.float64
    np.testing.assert_allclose(out[0] - 1.0, step, rtol=1e-3)


@pytest.mark.parametrize("api", APIS)
def test_an_int64_counter_comes_back_exact(api):
    big = 2**62 + 12_345  # not representable in float32 nor float64
    g = [np.array(big, dtype=np.int64)]
    specs = [Spec(node=i + 1, arrays=[np.array(big + 1, dtype=np.int64)], names=["w"], weight=1) for i in range(3)]
    out = _aggregate_one(make_strategy(api, "mean", 0), api, specs, g=g)
    assert out[0].dtype == np.int64 and int(out[0]) == big + 1


def test_float16_overflow_is_refused_and_the_model_kept():
    # float16's largest value is 65504: two replies at 60000 with a server step of 2 overflow.
    g = [np.zeros(2, np.float16)]
    specs = [Spec(node=i + 1, arrays=[np.full(2, 60000, np.float16)], names=["w"], weight=1) for i in range(3)]
    s = make_strategy("message", "median", 1, server_learning_rate=2.0)
    assert _aggregate_one(s, "message", specs, g=g) is None
    assert "not be finite" in s.history[-1]["skipped"]


def test_stack_updates_checks_and_reorders():
    g = global_arrays()
    layout = ModelLayout.of(g, GLOBAL_NAMES)
    rng = np.random.default_rng(0)
    good = honest_arrays(rng, g)
    replies = [("a", good, GLOBAL_NAMES), ("b", good[::-1], GLOBAL_NAMES[::-1]),
               ("c", good[:-1], GLOBAL_NAMES[:-1]), ("d", [np.float32(1)] * 5, GLOBAL_NAMES)]
    X, kept, dropped = stack_updates(layout, g, replies)
    assert kept == ["a", "b"] and set(dropped) == {"c", "d"} and X.dtype == np.float64
    np.testing.assert_array_equal(X[0], X[1])
    # row = reply - global, each array in its own precision
    def exact_difference(a, b):  # in Python numbers: ints exact, complex as (re, im) pairs
        d = np.array([complex(x) - complex(y) if np.iscomplexobj(a) else int(x) - int(y) if a.dtype.kind in "iub"
                      else float(x) - float(y) for x, y in zip(np.ravel(a), np.ravel(b))])
        return np.column_stack([d.real, d.imag]).ravel() if np.iscomplexobj(a) else d.astype(np.float64)

    expected = np.concatenate([exact_difference(a, b) for a, b in zip(good, g)])
    np.testing.assert_allclose(X[0], expected, rtol=1e-6)
    back = apply_update(layout, g, X[0])
    for a, b in zip(back, good):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b) if a.dtype.kind in "iub" else np.testing.assert_allclose(a, b, rtol=1e-6)


# --- 4. liveness -------------------------------------------------------------------------------

@pytest.mark.parametrize("api", APIS)
def test_multi_krum_m_above_the_usable_replies_is_clamped(api):
    values = [1.0, 1.1, 0.9, 1.05, 0.95, 50.0]
    s = make_strategy(api, "multi_krum", 1, rule_params={"m": 10})
    with LogCapture() as logs:
        out = _aggregate_one(s, api, _one_array_specs(values, [1] * 6))
    np.testing.assert_allclose(out[0], np.mean(values), rtol=1e-6)  # m = n = 6: every reply
    assert any("m=10" in line and "m=6" in line for line in logs.lines)


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_a_non_finite_server_step_skips_the_round_and_keeps_the_momentum(api, dtype):
    top = float(np.finfo(dtype).max)
    g = [np.zeros(3, dtype)]
    s = make_strategy(api, "median", 1, server_learning_rate=4.0, server_momentum=0.9)
    first = _aggregate_one(s, api, _one_array_specs([1.0, 1.0, 1.0], [1] * 3, dtype=dtype), g=g)
    np.testing.assert_allclose(first[0], 4.0)
    velocity = s.robust.velocity.copy()
    # Valid, finite replies near the dtype's limit: 4 x 0.6 max overflows.
    assert _aggregate_one(s, api, _one_array_specs([0.6 * top] * 3, [1] * 3, dtype=dtype), g=first,
                          server_round=2) is None
    assert "not be finite" in s.history[-1]["skipped"]
    np.testing.assert_array_equal(s.robust.velocity, velocity)  # momentum state not corrupted
    third = _aggregate_one(s, api, _one_array_specs([5.0] * 3, [1] * 3, dtype=dtype), g=first, server_round=3)
    # v = 0.9 v + (5 - 4) = 0.9 + 1 = 1.9; new = 4 + 4 x 1.9
    np.testing.assert_allclose(third[0], 4.0 + 4.0 * 1.9, rtol=1e-3)


def test_two_replies_under_one_id_are_both_dropped():
    rr = RobustRound(RobustAggregator("median", f=1))
    g = [np.zeros(2, np.float32)]
    replies = [(c, [np.full(2, v, np.float32)], None) for c, v in [("a", 1.0), ("b", 2.0), ("c", 3.0), ("d", 4.0),
                                                                     ("x", 100.0), ("x", 200.0)]]
    new, metrics, kept = rr.run(1, g, None, replies, {})
    assert "x" not in kept and "replies under one client id" in rr.history[-1]["dropped"]["x"]
    np.testing.assert_allclose(new[0], 2.5)


def test_legacy_failures_are_logged_with_the_client():
    g = [np.zeros(2, np.float32)]
    specs = _one_array_specs([1.0, 2.0, 3.0], [1] * 3, shape=(2,))
    specs.append(Spec(node=9, arrays=None, names=None, error="out of memory"))
    s = make_strategy("legacy", "median", 1)
    with LogCapture() as logs:
        _aggregate_one(s, "legacy", specs, g=g)
    assert any("client 9" in line and "out of memory" in line for line in logs.lines)


# --- 5. the fuzz harness -----------------------------------------------------------------------

CASES = (
    [(rule, 0 if rule == "mean" else 1, (), False) for rule in sorted(RULES)]
    + [("median", 1, (PreAggregator("bucketing", s=2, seed=0),), False),
       ("krum", 1, (PreAggregator("nnm"),), False),
       ("mean", 0, (PreAggregator("clip", threshold=1.0),), False),
       ("median", 1, (PreAggregator("arc"),), False),
       ("median", 1, (), True), ("multi_krum", 1, (), True)]
)
def case_ids(cases) -> list[str]:
    return [f"{'detox-' if d else ''}{r}{'+' + '+'.join(p.kind for p in pre) if pre else ''}" for r, _, pre, d in cases]


CASE_IDS = case_ids(CASES)
N_HONEST = 9  # enough for Bulyan at f = 1 (4f + 3 = 7) and for bucketing (s = 2)
EXAMPLES = int(os.environ.get("FLWR_BYZ_FUZZ_EXAMPLES", "12"))
COUNTS: dict = {}


def _hostile_specs(data, api, g):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    kinds = data.draw(st.lists(st.sampled_from(ARRAY_KINDS), min_size=0, max_size=6), label="kinds")
    invalid = INVALID_WEIGHTS_BOTH + (INVALID_WEIGHTS_LEGACY if api == "legacy" else [])
    specs = []
    for i, kind in enumerate(kinds):
        weight = data.draw(st.sampled_from(VALID_WEIGHTS + invalid), label="weight")
        spec = hostile(kind, 500 + i, g, rng, api, weight=weight)
        if not weight_is_valid(weight) and spec.error is None:
            spec.expect_drop = True
        specs.append(spec)
    if specs and data.draw(st.booleans(), label="duplicate"):
        dup = hostile("outlier", specs[0].node, g, rng, api)
        dup.expect_drop = True
        specs[0].expect_drop = True
        specs.append(dup)
    return specs


def _check_round(strategy, api, g, specs, out, logs, need, f):
    entry = strategy.history[-1] if strategy.history else None
    assert entry is not None, "every round leaves a history entry"
    if out is not None:
        assert len(out) == len(g)
        for a, ref in zip(out, g):
            a = np.asarray(a)
            assert a.shape == ref.shape and a.dtype == ref.dtype
            if a.dtype.kind == "f":
                assert np.isfinite(a).all(), "a non-finite global model"
    dropped = entry["dropped"]
    for s in specs:
        if s.expect_drop is True:
            assert str(s.node) in dropped, f"{s.kind} reply (weight {s.weight!r}) was not dropped"
            assert any(f"client {s.node}" in line for line in logs), f"{s.kind} drop not logged with the client"
        elif s.expect_drop is False and not s.honest:
            assert str(s.node) not in dropped, f"valid {s.kind} reply dropped: {dropped.get(str(s.node))}"
    honest_ok = sum(1 for s in specs if s.honest)
    hostile_kept = sum(1 for s in specs if not s.honest and str(s.node) not in dropped)
    if need is not None and honest_ok >= need and hostile_kept <= f:
        assert out is not None, f"a round within the f bound was skipped: {entry['skipped']}"
    COUNTS.setdefault(api, {"rounds": 0, "hostile": 0, "dropped": 0, "skipped": 0})
    c = COUNTS[api]
    c["rounds"] += 1
    c["hostile"] += len([s for s in specs if not s.honest])
    c["dropped"] += len(dropped)
    c["skipped"] += out is None
    if out is not None:
        c["within_bound"] = c.get("within_bound", 0) + int(need is not None and honest_ok >= need and hostile_kept <= f)
    else:
        why = entry["skipped"] or ""
        reason = ("beyond the f bound" if "usable replies" in why else "non-finite model" if "not be finite" in why
                  else "DETOX: no majority" if "majority" in why else why[:60])
        reasons = c.setdefault("skip_reasons", {})
        reasons[reason] = reasons.get(reason, 0) + 1
    kinds = COUNTS.setdefault("kinds", {})
    for s in specs:
        if not s.honest:
            kinds[s.kind] = kinds.get(s.kind, 0) + 1


def _weights_replaced(specs):
    """The same replies, with every valid reported weight replaced by another valid one."""
    out = []
    for s in specs:
        t = Spec(**{**s.__dict__})
        if weight_is_valid(s.weight):
            t.weight = 1 if s.weight != 1 else 10**9
        out.append(t)
    return out


def _detox_groups(honest, hostile, api):
    """Groups of 3: the honest triples (identical members), the first hostile reply in place
    of one member of the first triple (a 2-of-3 honest majority), the other hostile replies
    in groups of their own."""
    key = (lambda s: str(s.node)) if api == "legacy" else (lambda s: s.node)
    groups = [[key(s) for s in honest[i:i + 3]] for i in range(0, len(honest), 3)]
    if hostile:
        groups[0][2] = key(hostile[0])
    rest = [key(s) for s in hostile[1:]]
    return groups + [rest[i:i + 3] for i in range(0, len(rest), 3)]


def fuzz_one(rule, f, pre, detox, api, data, device=None):
    """One fuzzed round; ``device``: the strategy's torch device (``"cpu"`` runs the torch
    path on the CPU, as ``device="cuda"`` does on a GPU), then also checked against the NumPy
    path on the same replies."""
    g = global_arrays()
    honest = _honest_specs(g, N_HONEST, seed=data.draw(st.integers(0, 100), label="honest seed"),
                           copies=3 if detox else 1)
    hostile = _hostile_specs(data, api, g)
    specs = honest + hostile
    order = data.draw(st.permutations(range(len(specs))), label="order")
    specs = [specs[i] for i in order]
    strategy = make_strategy(api, rule, f, pre=pre, detox=detox)
    if device is not None:
        strategy.robust.device = device  # what device="cuda" sets
    groups = _detox_groups(honest, hostile, api) if detox else None
    with LogCapture() as logs:
        out = aggregate(strategy, api, g, specs, groups=groups)
    need = None if detox else strategy.robust.aggregator.minimum_clients()
    _check_round(strategy, api, g, specs, out, logs.lines, need, f)
    if device is not None:
        # the same replies on the NumPy path: the same drops, the same skip, the same model
        reference = make_strategy(api, rule, f, pre=pre, detox=detox)
        ref = aggregate(reference, api, g, specs, groups=groups)
        assert strategy.history[-1]["dropped"].keys() == reference.history[-1]["dropped"].keys()
        assert (out is None) == (ref is None), (strategy.history[-1]["skipped"], reference.history[-1]["skipped"])
        for a, b in zip(out or [], ref or []):
            a, b = np.asarray(a), np.asarray(b)
            assert a.dtype == b.dtype and a.shape == b.shape
            if a.dtype.kind in "fc":
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
            else:
                np.testing.assert_array_equal(a, b)
        return
    if detox and len(hostile) <= 1:
        # three honest groups win their votes: enough for A1 at f1 = f // 2 = 0
        assert out is not None, f"DETOX skipped a round its honest groups win: {strategy.history[-1]['skipped']}"
    if rule != "mean" and not detox:
        # The weight policy: no reported weight changes a robust rule's output, bit for bit.
        again = aggregate(make_strategy(api, rule, f, pre=pre), api, g, _weights_replaced(specs))
        assert (out is None) == (again is None)
        if out is not None:
            for a, b in zip(out, again):
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("rule, f, pre, detox", CASES, ids=CASE_IDS)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_fuzz_hostile_replies(rule, f, pre, detox, api, data):
    fuzz_one(rule, f, pre, detox, api, data)


# The torch path (a strategy's device="cuda"; here torch on the CPU): every tensor-native
# rule, a rule that runs on a host copy, a pre-aggregator and DETOX.
TORCH_CASES = ([(rule, 0 if rule == "mean" else 1, (), False) for rule in sorted(RULES)
                if REGISTRY[rule].tensor_native]
               + [("dnc", 1, (), False), ("signguard", 1, (), False), ("krum", 1, (PreAggregator("nnm"),), False),
                  ("median", 1, (), True)])


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("rule, f, pre, detox", TORCH_CASES,
                         ids=case_ids(TORCH_CASES))
@settings(max_examples=max(EXAMPLES // 2, 3), deadline=None, suppress_health_check=list(HealthCheck),
          derandomize=True)
@given(data=st.data())
def test_fuzz_hostile_replies_on_the_torch_path(rule, f, pre, detox, api, data):
    """The hostile replies through a strategy whose rule computes on a torch device: the
    harness's checks, and the NumPy path's drops, skip and model on the same replies."""
    pytest.importorskip("torch")
    fuzz_one(rule, f, pre, detox, api, data, device="cpu")


@pytest.mark.parametrize("api", APIS)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_fuzz_hostile_replies_with_crfl(api, data):
    """CRFL's parameter smoothing on top of a rule: the same hostile replies, and the
    clipped, perturbed model must still be finite, in its dtypes, never raise."""
    from flwr_byz.aggregation import ParameterSmoothing

    g = global_arrays()
    honest = _honest_specs(g, N_HONEST, seed=data.draw(st.integers(0, 100), label="honest seed"))
    specs = honest + _hostile_specs(data, api, g)
    specs = [specs[i] for i in data.draw(st.permutations(range(len(specs))), label="order")]
    strategy = make_strategy(api, "median", 1, parameter_smoothing=ParameterSmoothing(clip_norm=1.0, noise_std=0.01,
                                                                                      seed=0))
    with LogCapture() as logs:
        out = aggregate(strategy, api, g, specs)
    _check_round(strategy, api, g, specs, out, logs.lines, strategy.robust.aggregator.minimum_clients(), 1)


STATEFUL_CASES = ["foolsgold", "flame", "fltrust", "multi_krum+reputation", "median+reputation-weight"]


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("case", STATEFUL_CASES)
@settings(max_examples=max(EXAMPLES // 2, 3), deadline=None, suppress_health_check=list(HealthCheck),
          derandomize=True)
@given(data=st.data())
def test_fuzz_hostile_replies_over_rounds_with_state(case, api, data):
    """Per-client state (FoolsGold's sums, the reputation layer) and server knowledge
    (FLTrust's update, FLAME's model) over three rounds of the same hostile clients: every
    round checked as in the one-round harness, the state stays finite, never raises."""
    from flwr_byz.aggregation import Reputation

    rule, _, layer = case.partition("+")
    kwargs = {}
    if layer == "reputation":
        kwargs["reputation"] = Reputation(decay=0.9, threshold=0.3)
    elif layer == "reputation-weight":
        rule = "mean"
        kwargs.update(reputation=Reputation(mode="weight"), weighting="capped")
    f = 0 if rule in ("mean", "foolsgold", "fltrust") else 1
    g = global_arrays()
    honest = _honest_specs(g, N_HONEST, seed=data.draw(st.integers(0, 100), label="honest seed"))
    hostile = _hostile_specs(data, api, g)
    strategy = make_strategy(api, rule, f, **kwargs)
    for server_round in (1, 2, 3):
        specs = honest + hostile
        specs = [specs[i] for i in data.draw(st.permutations(range(len(specs))), label="order")]
        with LogCapture() as logs:
            out = aggregate(strategy, api, g, specs, server_round=server_round)
        _check_round(strategy, api, g, specs, out, logs.lines, strategy.robust.aggregator.minimum_clients(), f)
        for total in strategy.robust.client_sums.values():  # a huge sender cannot poison later rounds
            assert np.isfinite(total).all()
        if strategy.robust.reputation is not None:
            for cid, (a, b) in strategy.robust.reputation.evidence.items():
                assert 0 <= a and 0 <= b and math.isfinite(a + b)
        g = out if out is not None else g


@pytest.mark.parametrize("api", APIS)
def test_every_hostile_kind_is_exercised(api):
    # The harness's own completeness: every kind builds a reply in this API.
    g = global_arrays()
    rng = np.random.default_rng(0)
    for kind in ARRAY_KINDS:
        spec = hostile(kind, 1, g, rng, api)
        assert spec.expect_drop in (True, False, None)


@pytest.mark.slow
def test_fuzz_at_scale():
    """The recorded run (docs/RESULTS.md): at least 10,000 hostile replies through both APIs,
    every case; any escape or non-finite model fails it. Prints the counts as JSON."""
    import json

    COUNTS.clear()
    per_case = int(os.environ.get("FLWR_BYZ_FUZZ_SLOW_EXAMPLES", "300"))
    def case_runner(case, api):
        @settings(max_examples=per_case, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(data=st.data())
        def run(data):
            fuzz_one(*case, api, data)
        return run

    for api in APIS:
        for case in CASES:
            case_runner(case, api)()
    total = sum(COUNTS[api]["hostile"] for api in APIS)
    print("fuzz counts:", json.dumps({**COUNTS, "hostile_total": total, "escapes": 0, "non_finite_models": 0}))
    assert total >= 10_000


# --- found by breaking it (a review helper's hostile replies) --------------------------------

@pytest.mark.parametrize("api", APIS)
def test_detox_tolerance_vote_is_not_won_by_one_overflowing_member(api):
    # Group [1, 2, 3]: node 1 sends 1e300 (its norm overflows), nodes 2, 3 nearly agree.
    s = make_strategy(api, "median", 1, detox=True, tolerance=0.1)
    values = [1e300] + [1.0 + 1e-3 * i for i in range(2, 10)]
    specs = _one_array_specs(values, [10] * 9, shape=(4,), dtype=np.float64)
    ids = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    if api == "legacy":
        ids = [[str(i) for i in g] for g in ids]
    s._groups = ids
    import fuzz_replies

    saved, fuzz_replies.GLOBAL_NAMES = fuzz_replies.GLOBAL_NAMES, ["w"]
    try:
        out = aggregate(s, api, [np.zeros(4)], specs, groups=ids)
    finally:
        fuzz_replies.GLOBAL_NAMES = saved
    # group winners: mean(1.002, 1.003), mean(1.004..1.006), mean(1.007..1.009); their median
    np.testing.assert_allclose(out[0], 1.005, rtol=1e-12)


@pytest.mark.parametrize("api", APIS)
def test_bucketing_of_two_huge_replies_does_not_skip_a_round_within_the_bound(api):
    # 9 honest replies at 1, f = 2 hostile at 1e308 (float64): whichever bucket the two share,
    # the bucket's mean is finite and the round is aggregated.
    for rnd in range(1, 21):
        s = make_strategy(api, "median", 2, pre=(PreAggregator("bucketing", s=2, seed=0),))
        specs = _one_array_specs([1.0] * 9 + [1e308, 1e308], [1] * 11, shape=(2,), dtype=np.float64)
        out = _aggregate_one(s, api, specs, server_round=rnd)
        assert out is not None, s.history[-1]["skipped"]
        assert np.isfinite(out[0]).all()


@pytest.mark.parametrize("global_value, reply_value, expected", [
    (2**64 - 1, 2**64 - 1, 2**64 - 1),  # unchanged: no wrap to 0
    (2**63 + 1, 2**63 + 1, 2**63 + 1),  # beyond int64: exact
    (2**63 - 1, 2**63, 2**63),          # a step across int64's limit
])
def test_uint64_arrays_come_back_exact(global_value, reply_value, expected):
    g = [np.array([global_value], np.uint64)]
    specs = [Spec(node=i + 1, arrays=[np.array([reply_value], np.uint64)], names=["w"]) for i in range(3)]
    out = _aggregate_one(make_strategy("legacy", "median", 1), "legacy", specs, g=g)
    assert out[0].dtype == np.uint64 and int(out[0][0]) == expected


def test_integer_arrays_saturate_at_their_range():
    g = [np.array([120, -120], np.int8)]
    specs = [Spec(node=i + 1, arrays=[np.array([127, -128], np.int8)], names=["w"]) for i in range(3)]
    s = make_strategy("message", "mean", 0, server_learning_rate=3.0)  # 120 + 3 x 7 > 127
    out = _aggregate_one(s, "message", specs, g=g)
    np.testing.assert_array_equal(out[0], np.array([127, -128], np.int8))


@pytest.mark.parametrize("api", APIS)
def test_a_complex_model_keeps_both_parts_at_full_precision(api):
    g = [np.array([1 + 1j, -2 - 0.5j], np.complex128)]
    specs = [Spec(node=i + 1, arrays=[g[0] + (1e-12 + 4j)], names=["w"]) for i in range(3)]
    out = _aggregate_one(make_strategy(api, "median", 1), api, specs, g=g)
    assert out[0].dtype == np.complex128
    np.testing.assert_allclose(out[0] - g[0], 1e-12 + 4j, rtol=1e-9)


def test_per_client_facts_stay_per_client_and_are_not_averaged():
    from flwr.app import Array, ArrayRecord, Message, Metadata, MetricRecord, RecordDict
    import time

    s = make_strategy("message", "median", 1)
    s._current, s._sent, s._groups = ArrayRecord({"w": Array(np.zeros(2, np.float32))}), [], None
    replies = []
    for node in range(1, 6):
        md = Metadata(run_id=1, message_id=f"m{node}", src_node_id=node, dst_node_id=0, reply_to_message_id="",
                      group_id="", created_at=time.time(), ttl=100.0, message_type="train")
        metrics = {"num-examples": 10, "train-loss": float(node), "partition-id": node - 1,
                   "attack.malicious": int(node == 1)}
        replies.append(Message(content=RecordDict({"arrays": ArrayRecord({"w": Array(np.full(2, node, np.float32))}),
                                                   "metrics": MetricRecord(metrics)}), metadata=md))
    _, metrics = s.aggregate_train(1, replies)
    assert metrics["train-loss"] == pytest.approx(3.0)  # the weighted mean of 1..5
    assert "partition-id" not in metrics and "attack.malicious" not in metrics
    clients = s.history[-1]["clients"]
    assert clients["1"] == {"partition-id": 0, "attack.malicious": 1} and clients["5"]["partition-id"] == 4
    # legacy: the same for fit_metrics_aggregation_fn
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters

    from fuzz_replies import Proxy

    seen = []
    legacy_strategy = make_strategy("legacy", "median", 1, fit_metrics_aggregation_fn=lambda pairs: seen.extend(pairs) or {})
    legacy_strategy._current = [np.zeros(2, np.float32)]
    results = [(Proxy(str(i)), FitRes(Status(Code.OK, ""), ndarrays_to_parameters([np.full(2, i, np.float32)]), 10,
                                      {"train-loss": float(i), "partition-id": i, "attack.malicious": 0}))
               for i in range(1, 6)]
    legacy_strategy.aggregate_fit(1, results, [])
    assert all(set(m) == {"train-loss"} for _, m in seen) and len(seen) == 5


# --- checks before training --------------------------------------------------------------------

class _Grid:
    """The part of a Flower Grid that FedAvg.configure_train reads: connected node ids."""

    def __init__(self, n):
        self.nodes = list(range(1, n + 1))

    def get_node_ids(self):
        return self.nodes


class _ClientManager:
    """The part of a legacy ClientManager that configure_fit reads."""

    def __init__(self, n):
        from fuzz_replies import Proxy

        self.clients = [Proxy(str(i)) for i in range(n)]

    def num_available(self):
        return len(self.clients)

    def sample(self, num_clients, min_num_clients=None, criterion=None):
        return self.clients[:num_clients]


def test_strategies_refuse_a_first_round_that_can_never_meet_the_f_bound():
    from flwr.app import Array, ArrayRecord, ConfigRecord
    from flwr.common import ndarrays_to_parameters

    from flwr_byz import strategies as S
    from flwr_byz.strategies import legacy as L

    arrays = ArrayRecord({"w": Array(np.zeros(2, np.float32))})
    with pytest.raises(ValueError, match="krum needs at least 7 replies for f=2, but the first round samples 5 nodes"):
        S.Krum(num_malicious_nodes=2).configure_train(1, arrays, ConfigRecord(), _Grid(5))
    ok = S.Krum(num_malicious_nodes=2)
    assert len(list(ok.configure_train(1, arrays, ConfigRecord(), _Grid(7)))) == 7
    assert len(list(ok.configure_train(2, arrays, ConfigRecord(), _Grid(5)))) == 5  # later rounds: no raise
    with pytest.raises(ValueError, match="DETOX \\+ multi_krum needs 5 groups of 3 for f1=1, but the first round "
                                         "samples 12 nodes"):
        S.Detox(group_size=3, num_malicious_nodes=2, a1="multi_krum").configure_train(
            1, arrays, ConfigRecord(), _Grid(13))
    params = ndarrays_to_parameters([np.zeros(2, np.float32)])
    with pytest.raises(ValueError, match="bulyan needs at least 11 replies for f=2, but the first round samples 9"):
        L.Bulyan(num_malicious_clients=2).configure_fit(1, params, _ClientManager(9))
    assert len(L.FedTrimmedAvg(beta=0.2).configure_fit(1, params, _ClientManager(3))) == 3  # f follows n


@pytest.mark.parametrize("api", APIS)
def test_aggregate_without_configure_is_the_rule_on_the_replies(api):
    """Flower's own unit tests call aggregate_* directly: for a translation-equivariant rule
    the result is the rule applied to the replies themselves (here hand-checkable)."""
    from flwr_byz.aggregation import krum, median

    X = np.array([[1.0, 0], [1.1, 0.1], [0.9, -0.1], [1.0, 0.2], [1.05, 0.0], [50.0, 50.0]], dtype=np.float32)
    specs = [Spec(node=i + 1, arrays=[row], names=["w"]) for i, row in enumerate(X)]
    specs.append(Spec(node=99, arrays=[np.zeros(3, np.float32)], names=["w"]))  # another layout: dropped

    def run(strategy):
        import fuzz_replies

        saved, fuzz_replies.GLOBAL_NAMES = fuzz_replies.GLOBAL_NAMES, ["w"]
        try:
            if api == "message":
                strategy._sent = []
                out, _ = strategy.aggregate_train(1, [fuzz_replies.to_message(s) for s in specs])
                return None if out is None else out["w"].numpy()
            from flwr.common import parameters_to_ndarrays

            out, _ = strategy.aggregate_fit(1, [fuzz_replies.to_fitres(s) for s in specs], [])
            return None if out is None else parameters_to_ndarrays(out)[0]
        finally:
            fuzz_replies.GLOBAL_NAMES = saved

    np.testing.assert_array_equal(run(make_strategy(api, "krum", 1)), krum(X, f=1))
    np.testing.assert_array_equal(run(make_strategy(api, "median", 2)), median(X, f=2))
    # a rule that is not translation-equivariant, or a server step, needs the global model
    assert run(make_strategy(api, "centered_clipping", 1)) is None
    assert run(make_strategy(api, "median", 1, server_momentum=0.9)) is None
