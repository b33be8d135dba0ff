"""Pre-aggregators (norm clipping, bucketing, nearest-neighbour mixing) and their composition
with the rules in RobustAggregator."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rule_inputs import round_inputs
from flwr_byz.aggregation import (
    REGISTRY,
    PRE_AGGREGATORS,
    RULES,
    ByzantineBoundError,
    PreAggregator,
    RobustAggregator,
    bucketing,
    clip_norms,
    geometric_median,
    krum,
    mean,
    median,
    minimum_clients,
    multi_krum,
    nearest_neighbor_mixing,
    trimmed_mean,
)


def random_updates(seed, n, d, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal((n, d))).astype(np.float32)


# --------------------------------------------------------------------------------------
# float64 references
# --------------------------------------------------------------------------------------


def ref_nnm(X, f):
    """Allouah et al. 2023: every row -> mean of its n - f nearest rows, itself included."""
    rows = np.asarray(X, dtype=np.float64).tolist()
    n, d = len(rows), len(rows[0])
    out = []
    for i in range(n):
        dist = [(sum((a - b) ** 2 for a, b in zip(rows[i], rows[j])), j) for j in range(n)]
        near = [j for _, j in sorted(dist)[: n - f]]  # ties -> lower index (self has 0)
        out.append([sum(rows[j][k] for j in near) / len(near) for k in range(d)])
    return np.array(out)


def ref_clip(X, c):
    out = []
    for row in np.asarray(X, dtype=np.float64).tolist():
        norm = math.sqrt(sum(v * v for v in row))
        s = 1.0 if norm <= c else c / norm
        out.append([v * s for v in row])
    return np.array(out)


# --------------------------------------------------------------------------------------
# Norm clipping
# --------------------------------------------------------------------------------------


def test_clip_norms_hand():
    X = np.array([[3, 4], [0, 1], [6, 8]], dtype=np.float32)
    # norms 5, 1, 10; default threshold = median norm = 5
    np.testing.assert_allclose(clip_norms(X), [[3, 4], [0, 1], [3, 4]], rtol=1e-6)
    np.testing.assert_allclose(clip_norms(X, threshold=2.0), [[1.2, 1.6], [0, 1], [1.2, 1.6]], rtol=1e-6)
    np.testing.assert_array_equal(clip_norms(X, threshold=100.0), X)
    np.testing.assert_array_equal(clip_norms(X, threshold=0.0), np.zeros_like(X))
    Z = np.zeros((3, 2), np.float32)
    np.testing.assert_array_equal(clip_norms(Z), Z)  # median norm 0: nothing to scale
    out = clip_norms(X)
    assert out.dtype == np.float32 and out is not X
    np.testing.assert_array_equal(X, [[3, 4], [0, 1], [6, 8]])  # input untouched


@pytest.mark.parametrize("seed", range(5))
def test_clip_norms_vs_reference(seed):
    X = random_updates(seed, 9, 7, scale=3.0)
    norms = np.linalg.norm(X.astype(np.float64), axis=1)
    for c in (None, 0.5 * norms.min(), float(np.median(norms)), 2 * norms.max()):
        ref = ref_clip(X, float(np.median(norms)) if c is None else c)
        out = clip_norms(X, threshold=c)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
        limit = float(np.median(norms)) if c is None else c
        assert np.all(np.linalg.norm(out.astype(np.float64), axis=1) <= limit * (1 + 1e-6))


# --------------------------------------------------------------------------------------
# Bucketing
# --------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, derandomize=True)
@given(n=st.integers(1, 15), s=st.integers(1, 16), seed=st.integers(0, 2**31), d=st.integers(1, 6))
def test_bucketing_partitions_and_averages(n, s, seed, d):
    X = random_updates(seed, n, d)
    w = np.random.default_rng(seed).uniform(0.5, 3.0, n)
    Xb, buckets, bw = bucketing(X, s=s, seed=seed, weights=w)
    assert Xb.shape == (math.ceil(n / s), d) and Xb.dtype == np.float32
    assert len(buckets) == Xb.shape[0]
    assert sorted(i for b in buckets for i in b) == list(range(n))  # each update exactly once
    assert all(1 <= len(b) <= s for b in buckets)
    assert sum(len(b) == s for b in buckets) >= len(buckets) - 1  # only the last may be short
    for b, idx in enumerate(buckets):
        assert idx == sorted(idx)
        np.testing.assert_allclose(Xb[b], X[idx].astype(np.float64).mean(axis=0), rtol=1e-5, atol=1e-6)
        assert bw[b] == pytest.approx(w[idx].sum())
    # reproducible with the same seed
    Xb2, buckets2, _ = bucketing(X, s=s, seed=seed)
    assert buckets2 == buckets
    np.testing.assert_array_equal(Xb2, Xb)


def test_bucketing_edge_cases():
    X = random_updates(0, 6, 3)
    Xb, buckets, bw = bucketing(X, s=1, seed=3)
    assert bw is None and sorted(b[0] for b in buckets) == list(range(6))
    np.testing.assert_array_equal(Xb, X[[b[0] for b in buckets]])
    Xb, buckets, _ = bucketing(X, s=10, seed=3)
    assert buckets == [list(range(6))]
    np.testing.assert_allclose(Xb[0], X.astype(np.float64).mean(axis=0), rtol=1e-6)
    shuffles = {tuple(map(tuple, bucketing(X, s=2, seed=k)[1])) for k in range(10)}
    assert len(shuffles) > 1  # the seed does shuffle
    for s in (0, -1):
        with pytest.raises(ValueError):
            bucketing(X, s=s)
    with pytest.raises(ValueError, match="client 2"):
        bucketing(np.where(np.arange(6)[:, None] == 2, np.nan, X), s=2)


# --------------------------------------------------------------------------------------
# Nearest-neighbour mixing
# --------------------------------------------------------------------------------------


def test_nnm_hand():
    X = np.array([[0], [1], [3], [10]], dtype=np.float32)
    # f = 1, each row -> mean of its 3 nearest (itself included):
    # 0 -> {0, 1, 3}; 1 -> {1, 0, 3}; 3 -> {3, 1, 0}; 10 -> {10, 3, 1}
    np.testing.assert_allclose(nearest_neighbor_mixing(X, f=1), [[4 / 3], [4 / 3], [4 / 3], [14 / 3]], rtol=1e-6)
    np.testing.assert_array_equal(nearest_neighbor_mixing(X, f=0), np.full((4, 1), 3.5, np.float32))
    np.testing.assert_array_equal(nearest_neighbor_mixing(X, f=3), X)  # only itself
    with pytest.raises(ByzantineBoundError):
        nearest_neighbor_mixing(X, f=4)
    # 2-D, with a duplicated row: row 0 = (0, 0), 1 = (0, 0), 2 = (1, 0), 3 = (5, 5); f = 2
    Y = np.array([[0, 0], [0, 0], [1, 0], [5, 5]], dtype=np.float32)
    # 0 -> {0, 1}; 1 -> {1, 0}; 2 -> {2, 0} (0 and 1 tie at 1: lower index); 3 -> {3, 2}
    np.testing.assert_allclose(nearest_neighbor_mixing(Y, f=2), [[0, 0], [0, 0], [0.5, 0], [3, 2.5]])


@pytest.mark.parametrize("seed,n,f,d", [(0, 5, 1, 3), (1, 9, 4, 2), (2, 12, 3, 8), (3, 15, 7, 1), (4, 7, 0, 5)])
def test_nnm_vs_reference(seed, n, f, d):
    X = random_updates(seed, n, d, scale=2.0)
    np.testing.assert_allclose(nearest_neighbor_mixing(X, f=f), ref_nnm(X, f), rtol=1e-5, atol=1e-6)


def test_nnm_then_rule_resists_outliers():
    """With f outliers far away, NNM's honest rows average only honest rows."""
    X = random_updates(5, 11, 4)
    X[[2, 7]] = 1e6
    mixed = nearest_neighbor_mixing(X, f=2)
    honest = [i for i in range(11) if i not in (2, 7)]
    assert np.abs(mixed[honest]).max() < 10
    out = trimmed_mean(mixed, f=2)
    H = X[honest]
    assert np.all(out >= H.min(axis=0)) and np.all(out <= H.max(axis=0))


# --------------------------------------------------------------------------------------
# RobustAggregator
# --------------------------------------------------------------------------------------


def test_plain_rules_match_the_functions():
    X = random_updates(10, 11, 5)
    for rule, fn in RULES.items():
        f = 0 if rule == "mean" else 2
        seeded = "seed" in REGISTRY[rule].params  # a randomised rule: RobustAggregator passes (seed, round)
        extra = round_inputs(rule, X)
        agg, rep = RobustAggregator(rule, f=f, **({"seed": 4} if seeded else {}))(X, server_round=3, **extra)
        kwargs = {} if rule == "mean" else {"f": f}
        np.testing.assert_array_equal(agg, fn(X, **kwargs, **extra, **({"seed": (4, 3)} if seeded else {})))
        assert rep.rule == rule and rep.f == f and "pre" not in rep.details
    agg, rep = RobustAggregator("multi_krum", f=2, m=3)(X)
    np.testing.assert_array_equal(agg, multi_krum(X, f=2, m=3))
    assert rep.details["m"] == 3 and len(rep.selected) == 3
    agg, _ = RobustAggregator("multi_krum", f=2, m=3)(X, m=5)  # call-time override
    np.testing.assert_array_equal(agg, multi_krum(X, f=2, m=5))


def test_weights_reach_the_rules_that_take_them():
    X = random_updates(11, 9, 3)
    w = np.arange(1, 10, dtype=float)
    np.testing.assert_array_equal(RobustAggregator("mean")(X, weights=w)[0], mean(X, weights=w))
    np.testing.assert_array_equal(RobustAggregator("multi_krum", f=1)(X, weights=w)[0], multi_krum(X, f=1, weights=w))
    np.testing.assert_array_equal(RobustAggregator("geometric_median", f=1)(X, weights=w)[0],
                                  geometric_median(X, f=1, weights=w))
    # rules without weights ignore them
    np.testing.assert_array_equal(RobustAggregator("krum", f=1)(X, weights=w)[0], krum(X, f=1))


def test_composition_equals_manual_pipeline():
    X = random_updates(12, 12, 6, scale=2.0)
    X[4] *= 50
    agg, rep = RobustAggregator("krum", f=1, pre=[PreAggregator("clip", threshold=3.0)])(X)
    np.testing.assert_array_equal(agg, krum(clip_norms(X, threshold=3.0), f=1))
    assert rep.details["pre"] == "clip"

    agg, rep = RobustAggregator("trimmed_mean", f=2, pre=[PreAggregator("nnm")])(X)
    np.testing.assert_array_equal(agg, trimmed_mean(nearest_neighbor_mixing(X, f=2), f=2))

    pre = [PreAggregator("clip"), PreAggregator("nnm")]
    agg, rep = RobustAggregator("geometric_median", f=2, pre=pre)(X)
    np.testing.assert_array_equal(agg, geometric_median(nearest_neighbor_mixing(clip_norms(X), f=2), f=2))
    assert rep.details["pre"] == "clip+nnm" and rep.n == 12

    # bucketing: a fresh shuffle per round, seeded by (seed, server_round)
    w = np.linspace(1, 2, 12)
    aggregator = RobustAggregator("mean", pre=[PreAggregator("bucketing", s=3, seed=7)])
    for rnd in (1, 2):
        Xb, _, wb = bucketing(X, s=3, seed=(7, rnd), weights=w)
        agg, rep = aggregator(X, weights=w, server_round=rnd)
        np.testing.assert_array_equal(agg, mean(Xb, weights=wb))
        assert rep.n == 4 and rep.details["pre"] == "bucketing"
    agg, rep = RobustAggregator("median", f=1, pre=[PreAggregator("bucketing", s=2, seed=0)])(X, server_round=5)
    np.testing.assert_array_equal(agg, RULES["median"](bucketing(X, s=2, seed=(0, 5))[0], f=1))
    assert rep.n == 6


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown rule"):
        RobustAggregator("fedavg")
    with pytest.raises(ValueError, match="unknown pre-aggregator"):
        PreAggregator("sparsify")
    assert set(PRE_AGGREGATORS) == {"clip", "bucketing", "nnm", "arc"}
    assert "bulyan" in repr(RobustAggregator("bulyan", f=1, pre=[PreAggregator("nnm")]))


EXPECTED_MINIMUM = {
    "krum": lambda f: 2 * f + 3, "multi_krum": lambda f: 2 * f + 3, "bulyan": lambda f: 4 * f + 3,
    "median": lambda f: 2 * f + 1, "trimmed_mean": lambda f: 2 * f + 1,
    "geometric_median": lambda f: 2 * f + 1, "centered_clipping": lambda f: 2 * f + 1,
    "signsgd_majority": lambda f: 2 * f + 1,
}


def test_minimum_clients_values():
    for rule, formula in EXPECTED_MINIMUM.items():
        for f in range(5):
            assert minimum_clients(rule, f) == formula(f)
            assert RobustAggregator(rule, f=f).minimum_clients() == formula(f)
    assert minimum_clients("mean", 0) == 1
    assert minimum_clients("mean", 1) > 10**9  # no n is enough
    with pytest.raises(ByzantineBoundError):
        RobustAggregator("mean", f=1)(random_updates(0, 50, 2))


PIPELINES = [
    [],
    [PreAggregator("clip")],
    [PreAggregator("nnm")],
    [PreAggregator("bucketing", s=2, seed=1)],
    [PreAggregator("bucketing", s=3, seed=1)],
    [PreAggregator("clip"), PreAggregator("bucketing", seed=2)],  # default s = 2
    [PreAggregator("bucketing", s=2, seed=1), PreAggregator("nnm"), PreAggregator("bucketing", s=3, seed=4)],
]


@pytest.mark.parametrize("pre", PIPELINES, ids=lambda p: "+".join(x.kind for x in p) or "none")
@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("f", [0, 1, 2])
def test_minimum_clients_is_exactly_the_smallest_working_n(rule, f, pre):
    """minimum_clients() replies work, one reply fewer raises ByzantineBoundError."""
    aggregator = RobustAggregator(rule, f=f, pre=pre)
    if rule == "mean" and f > 0:
        return
    need = aggregator.minimum_clients()
    X = random_updates(need, need, 3)
    agg, rep = aggregator(X, **round_inputs(rule, X))
    assert agg.shape == (3,) and np.all(np.isfinite(agg))
    if need > 1:
        with pytest.raises(ByzantineBoundError):
            aggregator(X[:-1], **round_inputs(rule, X))


# --- ARC (Allouah et al. 2024) ------------------------------------------------------------------

def _arc_reference(X, f):
    """From the definition, in float64 Python: k = floor(2 f (n - f) / n) largest norms
    (ties: the later row is the larger) clipped to the largest remaining norm."""
    rows = [[float(v) for v in r] for r in np.asarray(X, np.float64)]
    n = len(rows)
    norms = [math.sqrt(sum(v * v for v in r)) for r in rows]
    k = (2 * f * (n - f)) // n
    order = sorted(range(n), key=lambda i: (norms[i], i))
    if k == 0:
        return np.array(rows)
    c = norms[order[n - k - 1]]
    out = [list(r) for r in rows]
    for i in order[n - k:]:
        if norms[i] > c:
            out[i] = [v * c / norms[i] for v in rows[i]]
    return np.array(out)


def test_arc_hand():
    from flwr_byz.aggregation import adaptive_robust_clipping

    # ByzFL's documented example: n = 3, f = 1 -> k = floor(2 * 1 * 2 / 3) = 1: the row of
    # norm sqrt(194) is scaled to sqrt(77), the next norm.
    X = np.array([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]])
    out = adaptive_robust_clipping(X, f=1)
    np.testing.assert_allclose(out[:2], X[:2])
    np.testing.assert_allclose(out[2], X[2] * math.sqrt(77 / 194))
    np.testing.assert_allclose(adaptive_robust_clipping(X, f=0), X)  # k = 0
    # n = 10, f = 3: k = floor(2 * 3 * 7 / 10) = 4 rows clipped to the 6th largest norm
    Y = np.diag(np.arange(1.0, 11.0))
    out = adaptive_robust_clipping(Y, f=3)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), [1, 2, 3, 4, 5, 6, 6, 6, 6, 6])


@pytest.mark.parametrize("seed", range(6))
def test_arc_vs_reference_and_in_a_pipeline(seed):
    from flwr_byz.aggregation import adaptive_robust_clipping

    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(3, 15)), int(rng.integers(1, 30))
    X = (rng.standard_normal((n, d)) * rng.uniform(0.1, 100.0, (n, 1))).astype(np.float32)
    f = int(rng.integers(0, n // 2 + 1))
    np.testing.assert_allclose(adaptive_robust_clipping(X, f=f), _arc_reference(X, f), rtol=1e-5, atol=1e-6)
    if f >= 1 and n >= 2 * f + 1:
        agg, rep = RobustAggregator("median", f=f, pre=[PreAggregator("arc")])(X)
        np.testing.assert_allclose(agg, median(adaptive_robust_clipping(X, f=f), f=f))
        assert rep.details["pre"] == "arc"
