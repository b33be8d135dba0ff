"""The rules of the defense catalogue (MoNNA, SMEA, CAF, DnC, SignGuard, Clustering,
ClippedClustering) against hand-computed cases and float64 references written from the
papers' definitions, independently of the implementation: covariances as d x d matrices,
singular vectors by SVD, clusters by SciPy's hierarchical clustering.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from flwr_byz.aggregation import (
    RobustAggregator,
    caf,
    clipped_clustering,
    clustering,
    dnc,
    monna,
    signguard,
    smea,
)
from flwr_byz.aggregation.signguard import sign_features


def updates(seed, n, d, scale=1.0, offset=0.0):
    rng = np.random.default_rng(seed)
    return (offset + scale * rng.standard_normal((n, d))).astype(np.float32)


CASES = [(0, 7, 1, 3), (1, 9, 2, 5), (2, 11, 3, 8), (3, 12, 2, 1), (4, 10, 3, 6), (5, 13, 2, 20)]


def covariance(X, w=None):
    """The (w-weighted) covariance as a d x d matrix, centred at the (weighted) mean."""
    X = np.asarray(X, dtype=np.float64)
    w = np.ones(len(X)) if w is None else np.asarray(w, dtype=np.float64)
    mu = (w[:, None] * X).sum(axis=0) / w.sum()
    Y = X - mu
    return (w[:, None] * Y).T @ Y / w.sum(), mu


# --------------------------------------------------------------------------------------
# MoNNA
# --------------------------------------------------------------------------------------


def ref_monna(X, f, pivot):
    X = np.asarray(X, dtype=np.float64)
    dist = [math.fsum((a - b) ** 2 for a, b in zip(row, pivot)) for row in X]
    order = sorted(range(len(X)), key=lambda i: (dist[i], i))[: len(X) - f]
    return X[sorted(order)].mean(axis=0), sorted(order)


def test_monna_hand():
    # pivot 0 on a line: the n - f = 3 nearest of {1, -2, 3, 10, -20} are 1, -2, 3
    X = np.array([[1.0], [-2.0], [3.0], [10.0], [-20.0]], dtype=np.float32)
    out, rep = monna(X, f=2, return_report=True)
    assert rep.selected == [0, 1, 2]
    np.testing.assert_allclose(out, [2.0 / 3.0], rtol=1e-6)
    # the pivot is a trusted vector: around 9 the nearest are 10, 3, 1
    np.testing.assert_allclose(monna(X, f=2, center=[9.0]), [14.0 / 3.0], rtol=1e-6)
    # ByzFL's idx convention: the pivot is update idx, itself among the averaged
    np.testing.assert_allclose(monna(X, f=2, idx=3), [14.0 / 3.0], rtol=1e-6)
    with pytest.raises(ValueError, match="idx"):
        monna(X, f=2, idx=5)


@pytest.mark.parametrize("seed,n,f,d", CASES)
def test_monna_vs_reference(seed, n, f, d):
    X = updates(seed, n, d, scale=2.0, offset=0.5)
    pivot = np.random.default_rng(seed + 100).standard_normal(d).astype(np.float32)
    expected, chosen = ref_monna(X, f, pivot)
    out, rep = monna(X, f=f, center=pivot, return_report=True)
    assert rep.selected == chosen
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------
# SMEA
# --------------------------------------------------------------------------------------


def ref_smea(X, f):
    """Every subset of n - f rows; the smallest top eigenvalue of its d x d covariance."""
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    scored = []
    for subset in itertools.combinations(range(n), n - f):
        C, _ = covariance(X[list(subset)])
        scored.append((np.linalg.eigvalsh(C)[-1], subset))
    best = min(scored)[0]
    return best, [s for value, s in scored if value <= best * (1 + 1e-9) + 1e-15]


def test_smea_hand():
    # four points at 0, 1, 2, 10 (f = 1): {0, 1, 2} has variance 2/3, any set with 10 more
    X = np.array([[0.0], [1.0], [2.0], [10.0]], dtype=np.float32)
    out, rep = smea(X, f=1, return_report=True)
    assert rep.selected == [0, 1, 2]
    np.testing.assert_allclose(out, [1.0])
    assert rep.details["max_eigenvalue"] == pytest.approx(2.0 / 3.0)
    # ByzFL's documented example: {0, 1} and {1, 2} tie; the first in index order wins
    B = np.array([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float32)
    np.testing.assert_allclose(smea(B, f=1), [2.5, 3.5, 4.5])
    # a wide but thin honest cloud beats a tight pair with one far point: the top
    # eigenvalue, not the diameter, decides
    C = np.array([[0, 0], [1, 0], [2, 0], [3, 0], [1.5, 3]], dtype=np.float64)
    assert smea(C, f=1, return_report=True)[1].selected == [0, 1, 2, 3]


@pytest.mark.parametrize("seed,n,f,d", CASES)
def test_smea_vs_reference(seed, n, f, d):
    if math.comb(n, f) > 400:
        pytest.skip("reference too slow")
    X = updates(seed, n, d, scale=2.0, offset=0.5)
    best, chosen = ref_smea(X, f)
    out, rep = smea(X, f=f, return_report=True)
    assert tuple(rep.selected) in chosen
    assert rep.details["max_eigenvalue"] == pytest.approx(best, rel=1e-5)
    np.testing.assert_allclose(out, X[rep.selected].astype(np.float64).mean(axis=0), rtol=1e-5, atol=1e-6)


def test_smea_refuses_past_its_exact_limit():
    with pytest.raises(ValueError, match=r"C\(51, 12\)"):
        smea(updates(0, 51, 3), f=12)


# --------------------------------------------------------------------------------------
# CAF
# --------------------------------------------------------------------------------------


def ref_caf(X, f):
    """Allouah, Guerraoui & Stephan's filter with the d x d covariance and a full eigh; the
    max of tau over the updates still weighted (see ``caf``'s docstring)."""
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    c = np.ones(n)
    best, best_mu = math.inf, X.mean(axis=0)
    while c.sum() > n - 2 * f:
        C, mu = covariance(X, c)
        values, vectors = np.linalg.eigh(C)
        if values[-1] < best:
            best, best_mu = values[-1], mu
        tau = ((X - mu) @ vectors[:, -1]) ** 2
        top = max(t for t, w in zip(tau, c) if w > 0)
        if top <= 0:
            break
        c = np.maximum(c * (1 - tau / top), 0)
    return best_mu, best


def test_caf_hand():
    # 1-D: {0, 1, 2, 100}, f = 1 (stop once the weights sum to n - 2f = 2 or less).
    # Step 1: mean 25.75, variance 1838.1875; the outlier has the largest projection 74.25^2,
    # its weight becomes 0, the others 1 - 25.75^2/74.25^2, 1 - 24.75^2/74.25^2,
    # 1 - 23.75^2/74.25^2 (sum 2.666). Step 2: the weighted mean m of {0, 1, 2} and its
    # variance (< 1, the smallest so far); point 0 is now the farthest weighted one, its
    # weight becomes 0 and the sum drops below 2: the answer is m.
    X = np.array([[0.0], [1.0], [2.0], [100.0]], dtype=np.float32)
    out, rep = caf(X, f=1, return_report=True)
    c = 1 - np.array([25.75, 24.75, 23.75]) ** 2 / 74.25**2
    m = (c * [0, 1, 2]).sum() / c.sum()
    variance = (c * (np.array([0, 1, 2]) - m) ** 2).sum() / c.sum()
    np.testing.assert_allclose(out, [m], rtol=1e-6)
    assert rep.details["steps"] == 2 and rep.details["max_eigenvalue"] == pytest.approx(variance)
    np.testing.assert_allclose(rep.scores, np.append(c, 0) / c.sum())
    # f = 0: no filtering at all, the plain mean (ByzFL returns None here)
    np.testing.assert_allclose(caf(X, f=0), [25.75])


def test_caf_ends_in_at_most_n_steps_against_a_huge_update():
    X = np.vstack([updates(1, 10, 5), np.full((1, 5), 1e10, np.float32)])
    out, rep = caf(X, f=1, return_report=True)
    assert rep.details["steps"] <= 11 and np.abs(out).max() < 10


@pytest.mark.parametrize("seed,n,f,d", CASES)
def test_caf_vs_reference(seed, n, f, d):
    X = updates(seed, n, d, scale=2.0, offset=0.5)
    X[:f] += 6.0  # f shifted rows for the filter to find
    expected, best = ref_caf(X, f)
    out, rep = caf(X, f=f, return_report=True)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert rep.details["max_eigenvalue"] == pytest.approx(best, rel=1e-5)


def test_spectral_rules_see_through_near_identical_updates():
    # ALIE-like input: spread 1e-4 around 100 in float32; the eigenvalues come from careful
    # distances, not from a float32 covariance that cancels
    rng = np.random.default_rng(3)
    base = rng.standard_normal(2000) * 100
    X = (base + 1e-4 * rng.standard_normal((9, 2000))).astype(np.float32)
    X64 = X.astype(np.float64)
    for fn in (smea, caf):
        _, rep = fn(X, f=2, return_report=True)
        if fn is smea:
            C, _ = covariance(X64[rep.selected])
        else:
            C, _ = covariance(X64, rep.scores)
        assert rep.details["max_eigenvalue"] == pytest.approx(np.linalg.eigvalsh(C)[-1], rel=1e-3)


# --------------------------------------------------------------------------------------
# DnC
# --------------------------------------------------------------------------------------


def ref_dnc(X, f, columns, filter_frac=1.0):
    """Shejwalkar & Houmansadr's Algorithm: per iteration (its sampled columns), scores from
    the top right singular vector of the centred sample, keep the n - floor(c f) lowest;
    average the rows every iteration kept."""
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    good = set(range(n))
    for cols in columns:
        S = X[:, cols]
        Y = S - S.mean(axis=0)
        v = np.linalg.svd(Y, full_matrices=False)[2][0]
        scores = (Y @ v) ** 2
        good &= set(sorted(range(n), key=lambda i: (scores[i], i))[: n - int(filter_frac * f)])
    return X[sorted(good)].mean(axis=0), sorted(good)


def test_dnc_hand():
    # honest points spread along no particular direction, two colluders far along x: the top
    # singular vector is x, the colluders have the largest projections and go
    X = np.array([[0, 0], [1, 0.5], [-1, 0.2], [0.3, -1], [-0.2, 0.9], [9, 0], [9, 0]], dtype=np.float32)
    out, rep = dnc(X, f=2, return_report=True)
    assert rep.selected == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(out, X[:5].astype(np.float64).mean(axis=0), rtol=1e-6)


def test_dnc_scores_around_the_mean_of_all_updates():
    # The paper's centring is the mean of all n updates: two far outliers drag it to 333.2, so
    # the honest zeros score (333.2)^2 and the nearer outlier only (28.8)^2. DnC removes the
    # two highest scores, 1304 and one honest zero (ties keep the lower index), and keeps
    # 362: a weakness of the algorithm at small n, kept as the paper defines it.
    X = np.array([[0.0], [0.0], [0.0], [362.0], [1304.0]])
    out, rep = dnc(X, f=2, return_report=True)
    assert rep.selected == [0, 1, 3]
    np.testing.assert_allclose(out, [362.0 / 3])
    np.testing.assert_allclose(rep.scores, (X[:, 0] - X.mean()) ** 2)


@pytest.mark.parametrize("seed,n,f,d", CASES)
def test_dnc_vs_reference(seed, n, f, d):
    X = updates(seed, n, d, scale=2.0, offset=0.5)
    # all coordinates (d <= sub_dim): one filtering, as every iteration sees the same
    expected, chosen = ref_dnc(X, f, [np.arange(d)])
    out, rep = dnc(X, f=f, return_report=True)
    assert rep.selected == chosen
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    # sampled coordinates: the same draws as the rule's (numpy's generator from the seed)
    if d >= 4:
        sub, iters = d // 2, 3
        rng = np.random.default_rng(seed)
        columns = [np.sort(rng.choice(d, size=sub, replace=False)) for _ in range(iters)]
        expected, chosen = ref_dnc(X, f, columns, filter_frac=0.5)
        out, rep = dnc(X, f=f, sub_dim=sub, num_iters=iters, filter_frac=0.5, seed=seed, return_report=True)
        if chosen:
            assert rep.selected == chosen
            np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------
# SignGuard
# --------------------------------------------------------------------------------------


def test_signguard_hand():
    # six honest updates with mostly positive entries and norms 1..2; one sign-flipped copy
    # of an honest update (its norm passes, its signs do not); one update 10x the median
    # norm (its signs pass, its norm does not)
    rng = np.random.default_rng(0)
    H = np.abs(rng.standard_normal((6, 40))) + 0.05
    H /= np.linalg.norm(H, axis=1, keepdims=True)
    H *= np.linspace(1.0, 2.0, 6)[:, None]
    X = np.vstack([H, -H[2], 10 * H[0]]).astype(np.float64)
    out, rep = signguard(X, f=2, coordinate_fraction=1.0, return_report=True)
    assert rep.selected == [0, 1, 2, 3, 4, 5]
    norms = np.linalg.norm(X, axis=1)
    M = np.median(norms)
    clipped = H * np.minimum(1.0, M / norms[:6])[:, None]
    np.testing.assert_allclose(out, clipped.mean(axis=0), rtol=1e-9)
    assert rep.details["norm_filter_kept"] == 7 and rep.details["sign_filter_kept"] == 7


def test_sign_features_count_signs():
    X = np.array([[1.0, -2.0, 0.0, 3.0], [0.0, 0.0, -1.0, -1.0]], dtype=np.float32)
    np.testing.assert_allclose(sign_features(X, np.arange(4)), [[0.5, 0.25, 0.25], [0.0, 0.5, 0.5]])
    np.testing.assert_allclose(sign_features(X, np.array([0, 2])), [[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])


def test_signguard_samples_coordinates_from_its_seed():
    X = updates(4, 9, 400)
    a = RobustAggregator("signguard", f=2, seed=7)
    assert np.array_equal(a(X, server_round=3)[0], a(X, server_round=3)[0])
    assert np.array_equal(signguard(X, f=2, seed=(7, 3)), a(X, server_round=3)[0])


# --------------------------------------------------------------------------------------
# Clustering and ClippedClustering
# --------------------------------------------------------------------------------------


def ref_larger_cluster(X, method):
    """SciPy's hierarchical clustering of 1 - cos into two clusters; the larger one."""
    X = np.asarray(X, dtype=np.float64)
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    D = np.clip(1 - U @ U.T, 0, None)
    np.fill_diagonal(D, 0)
    labels = fcluster(linkage(squareform(D, checks=False), method=method), 2, criterion="maxclust")
    groups = [np.flatnonzero(labels == k) for k in (1, 2)]
    assert len(groups[0]) != len(groups[1])
    return max(groups, key=len).tolist()


def test_clustering_hand():
    # five updates around direction (1, 1), two around (-1, 0.2): the larger cluster wins
    X = np.array([[1, 1], [1.1, 0.9], [0.9, 1.2], [2, 2.1], [0.5, 0.45], [-1, 0.2], [-3, 0.5]], dtype=np.float32)
    out, rep = clustering(X, f=2, return_report=True)
    assert rep.selected == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(out, X[:5].astype(np.float64).mean(axis=0), rtol=1e-6)


@pytest.mark.parametrize("seed,n,f,d", [c for c in CASES if c[3] > 1])
@pytest.mark.parametrize("method", ["complete", "average", "single"])
def test_clustering_vs_scipy(seed, n, f, d, method):
    X = updates(seed, n, d, scale=1.0, offset=0.3)
    X[:f] = -X[:f] * 3  # f flipped updates
    try:
        expected = ref_larger_cluster(X, method)
    except AssertionError:
        pytest.skip("two clusters of equal size")
    _, rep = clustering(X, f=f, linkage=method, return_report=True)
    assert rep.selected == expected


def test_clipped_clustering_hand_and_history():
    # norms 1, 2, 3, 4 and a far colluding pair at norm 100 pointing the other way
    X = np.array([[1, 0], [0, 2], [3, 0], [0, 4], [-100, 0], [-100, 0]], dtype=np.float64)
    out, rep = clipped_clustering(X, f=2, return_report=True)
    tau = np.median([1, 2, 3, 4, 100, 100])  # 3.5
    assert rep.details["tau"] == pytest.approx(tau) and rep.selected == [0, 1, 2, 3]
    np.testing.assert_allclose(out, [(1 + 3) / 4, (2 + 3.5) / 4])  # [0, 4] clipped to 3.5
    # with a history of small norms the threshold drops: median of {0.5 x 10, this round}
    out, rep = clipped_clustering(X, f=2, history=np.full(10, 0.5), return_report=True)
    assert rep.details["tau"] == pytest.approx(0.5)
    np.testing.assert_allclose(out, [0.25, 0.25])
    np.testing.assert_allclose(rep.details["norms"], [1, 2, 3, 4, 100, 100])


def test_clipped_clustering_threshold_is_capped():
    X = np.array([[1e7, 0], [0, 2e7], [3e7, 0]], dtype=np.float64)
    _, rep = clipped_clustering(X, f=1, return_report=True)
    assert rep.details["tau"] == 1e5


# --------------------------------------------------------------------------------------
# Both Flower APIs: the strategy class of each rule aggregates what the core rule does,
# and the stateful ones carry their state from round to round
# --------------------------------------------------------------------------------------

CATALOGUE = ["monna", "smea", "caf", "dnc", "signguard", "clustering", "clipped_clustering"]
APIS = ["message", "legacy"]


def _round(strategy, api, values, server_round, g=None):
    from fuzz_replies import one_array_round

    return one_array_round(strategy, api, values, server_round, g)


def _strategy(api, name, f, **kwargs):
    from fuzz_replies import strategy_of

    return strategy_of(api, name, f, **kwargs)


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("name", CATALOGUE)
def test_catalogue_strategies_in_both_apis(api, name):
    from fuzz_replies import task_identity

    task_identity()
    V = updates(11, 9, 6, offset=0.2)
    V[:2] = -4 * V[:2]  # two flipped, larger updates
    kwargs = {"seed": 3} if name in ("dnc", "signguard") else {}
    s = _strategy(api, name, 2, **kwargs)
    out = _round(s, api, V, 1)
    core_kwargs = {"seed": (3, 1)} if kwargs else {}
    expected = RobustAggregator(name, f=2)(V, **core_kwargs)[0]
    np.testing.assert_allclose(out[0], expected, rtol=1e-5, atol=1e-6)  # global 0 + aggregate
    # the reported numbers of examples buy nothing (uniform weighting)
    assert not np.allclose(out[0], V.astype(np.float64).mean(axis=0))


@pytest.mark.parametrize("api", APIS)
def test_monna_pivots_on_the_previous_aggregate(api):
    from fuzz_replies import task_identity

    task_identity()
    s = _strategy(api, "monna", 1)
    first = np.array([[1.0], [2.0], [3.0], [40.0]], dtype=np.float32)
    g1 = _round(s, api, first, 1)  # pivot 0: the three of smallest norm, mean 2
    np.testing.assert_allclose(g1[0], [2.0])
    second = np.array([[0.0], [1.5], [2.5], [3.0]], dtype=np.float32)
    g2 = _round(s, api, second, 2, g=[np.asarray(g1[0], np.float32)])  # pivot 2: {1.5, 2.5, 3}
    np.testing.assert_allclose(g2[0], g1[0] + (1.5 + 2.5 + 3.0) / 3, rtol=1e-6)


@pytest.mark.parametrize("api", APIS)
def test_clipped_clustering_keeps_the_norm_history_across_rounds(api):
    from fuzz_replies import task_identity

    task_identity()
    s = _strategy(api, "clipped_clustering", 1)
    small = np.array([[0.1, 0], [0, 0.1], [0.1, 0.1], [0.05, 0.1]], dtype=np.float32)
    _round(s, api, small, 1)
    big = 10 * np.array([[1, 0], [0, 2], [3, 0], [0, 4]], dtype=np.float32)
    out = _round(s, api, big, 2)
    norms = np.concatenate([np.linalg.norm(small, axis=1), np.linalg.norm(big, axis=1)])
    expected = clipped_clustering(big, f=1, history=np.linalg.norm(small, axis=1))
    np.testing.assert_allclose(out[0], expected, rtol=1e-5)
    assert np.linalg.norm(out[0]) <= np.median(norms) + 1e-6  # clipped to the history's median


def test_cosine_distances_resolve_near_identical_updates():
    # ALIE-like float32 input: 1 - cos is ~1e-12 here, below float32's rounding of cos itself
    from flwr_byz.aggregation.distances import cosine_distances

    rng = np.random.default_rng(8)
    base = rng.standard_normal(3000) * 100
    X = (base + 1e-4 * rng.standard_normal((6, 3000))).astype(np.float32)
    X64 = X.astype(np.float64)
    U = X64 / np.linalg.norm(X64, axis=1, keepdims=True)
    expected = 0.5 * ((U[:, None, :] - U[None, :, :]) ** 2).sum(axis=-1)
    got = cosine_distances(X)
    off = ~np.eye(6, dtype=bool)
    np.testing.assert_allclose(got[off], expected[off], rtol=1e-2)
    # zero rows: orthogonal to the others, at distance 0 from each other
    Z = np.vstack([np.zeros((2, 3)), np.eye(3)[:1]])
    np.testing.assert_allclose(cosine_distances(Z), [[0, 0, 1], [0, 0, 1], [1, 1, 0]])


@pytest.mark.parametrize("name", CATALOGUE)
@pytest.mark.parametrize("magnitude", [1e30, 1e200, 1e307])
def test_catalogue_rules_shrug_off_updates_at_the_edge_of_float64(name, magnitude):
    # f = 2 updates whose squared norms overflow float64: the eigenproblems, the cosine
    # distances and the norms must stay finite, and the honest majority must win
    from flwr_byz.aggregation import RULES

    H = updates(5, 9, 6, offset=0.3).astype(np.float64)
    X = np.vstack([H, np.full((2, 6), magnitude), -np.full((1, 6), magnitude)[:, :]])[:11]
    kwargs = {"seed": 0} if name in ("dnc", "signguard") else {}
    out = RULES[name](X, f=2, **kwargs)
    assert np.isfinite(out).all()
    if name == "clustering":
        return  # directions only: two huge updates along the honest mean's direction can join
        # the larger cluster (the weakness ClippedClustering's clipping removes)
    assert np.linalg.norm(out) <= np.linalg.norm(H, axis=1).max() + 1e-9, name
