"""Every rule of flwr_byz.aggregation against hand-computed cases and float64 references.

The references below are written from the papers' definitions with plain Python loops and
sorting in float64, independently of the vectorised implementation; the fast rules are
run on float32 inputs and compared with the references run on the same values in float64.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from rule_inputs import round_inputs
from flwr_byz.aggregation import (
    AggregationReport,
    ByzantineBoundError,
    REGISTRY,
    RULES,
    bulyan,
    centered_clipping,
    geometric_median,
    krum,
    krum_scores,
    mda,
    mean,
    meamed,
    median,
    multi_krum,
    pairwise_sq_distances,
    sign_majority_vote,
    trimmed_mean,
)
from flwr_byz.aggregation.bulyan import closest_to_median_mean

# --------------------------------------------------------------------------------------
# float64 naive references
# --------------------------------------------------------------------------------------


def _rows(X):
    return [[float(v) for v in row] for row in np.asarray(X, dtype=np.float64)]


def _median_of(values):
    s = sorted(values)
    k = len(s)
    return s[k // 2] if k % 2 else 0.5 * (s[k // 2 - 1] + s[k // 2])


def _sqdist(a, b):
    return sum((x - y) ** 2 for x, y in zip(a, b))


def ref_mean(X, w=None):
    rows = _rows(X)
    n, d = len(rows), len(rows[0])
    w = [1.0] * n if w is None else [float(v) for v in w]
    tot = sum(w)
    return np.array([sum(w[i] * rows[i][j] for i in range(n)) / tot for j in range(d)])


def ref_median(X):
    rows = _rows(X)
    return np.array([_median_of([r[j] for r in rows]) for j in range(len(rows[0]))])


def ref_trimmed_mean(X, f):
    rows = _rows(X)
    out = []
    for j in range(len(rows[0])):
        s = sorted(r[j] for r in rows)
        kept = s[f : len(s) - f]
        out.append(sum(kept) / len(kept))
    return np.array(out)


def ref_krum_scores(rows, f, indices=None):
    """Blanchard et al.: score(i) = sum of squared distances to its n - f - 2 nearest others.

    ``indices`` restricts the computation to a subset (Bulyan's shrinking set), whose size r
    then plays the role of n, with max(r - f - 2, 1) neighbours.
    """
    idx = list(range(len(rows))) if indices is None else list(indices)
    r = len(idx)
    k = max(r - f - 2, 1)
    scores = {}
    for i in idx:
        others = sorted(_sqdist(rows[i], rows[j]) for j in idx if j != i)
        scores[i] = sum(others[:k])
    return scores


def ref_krum(X, f):
    rows = _rows(X)
    scores = ref_krum_scores(rows, f)
    best = min(scores, key=lambda i: (scores[i], i))  # ties -> lower index
    return best, np.array(rows[best]), np.array([scores[i] for i in range(len(rows))])


def ref_multi_krum(X, f, m, w=None):
    rows = _rows(X)
    scores = ref_krum_scores(rows, f)  # computed once, on all n updates
    chosen = sorted(sorted(scores, key=lambda i: (scores[i], i))[:m])
    ww = [0.0] * len(rows)
    for i in chosen:
        ww[i] = 1.0 if w is None else float(w[i])
    return chosen, ref_mean(X, ww)


def ref_bulyan(X, f):
    """El Mhamdi et al. 2018, Algorithm 1 with Krum: iterated selection, then per-coordinate
    mean of the beta values closest to the median of the selected values."""
    rows = _rows(X)
    n, d = len(rows), len(rows[0])
    theta, beta = n - 2 * f, n - 4 * f
    remaining, selected = list(range(n)), []
    for _ in range(theta):
        scores = ref_krum_scores(rows, f, remaining)  # re-scored on the shrinking set
        pick = min(remaining, key=lambda i: (scores[i], i))
        selected.append(pick)
        remaining.remove(pick)
    out = []
    for j in range(d):
        vals = [rows[i][j] for i in selected]
        med = _median_of(vals)
        closest = sorted(vals, key=lambda v: (abs(v - med), v))[:beta]  # ties: the lower value
        out.append(sum(closest) / beta)
    return selected, np.array(out)


def objective(X, v, w=None):
    X = np.asarray(X, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    w = np.ones(len(X)) if w is None else np.asarray(w, dtype=np.float64)
    w = w / w.sum()
    return float(sum(w[i] * math.sqrt(_sqdist(X[i], v)) for i in range(len(X))))


def ref_weiszfeld(X, w=None, iters=20000, tol=1e-15):
    """Plain float64 Weiszfeld run to convergence (a point coinciding with an update is
    handled by Vardi-Zhang's rule of stopping there when it is optimal)."""
    X = np.asarray(X, dtype=np.float64)
    w = np.ones(len(X)) if w is None else np.asarray(w, dtype=np.float64)
    v = np.median(X, axis=0)
    for _ in range(iters):
        dist = np.sqrt(((X - v) ** 2).sum(axis=1))
        at = dist < 1e-300
        if at.any():
            # optimality at a data point x_k: |sum_{i != k} w_i (x_i - x_k)/|x_i - x_k|| <= w_k
            k = int(np.flatnonzero(at)[0])
            others = ~at
            g = (w[others, None] * (X[others] - v) / dist[others, None]).sum(axis=0)
            if np.linalg.norm(g) <= w[k]:
                return v
            dist = np.where(at, 1e-300, dist)
        new = (w[:, None] * X / dist[:, None]).sum(axis=0) / (w / dist).sum()
        if np.linalg.norm(new - v) <= tol * (1.0 + np.linalg.norm(v)):
            return new
        v = new
    return v


def ref_centered_clipping(X, tau, iterations, center=None):
    rows = _rows(X)
    n, d = len(rows), len(rows[0])
    v = [0.0] * d if center is None else [float(c) for c in center]
    for _ in range(iterations):
        step = [0.0] * d
        for x in rows:
            diff = [x[j] - v[j] for j in range(d)]
            norm = math.sqrt(sum(t * t for t in diff))
            s = 1.0 if norm == 0 else min(1.0, tau / norm)
            for j in range(d):
                step[j] += s * diff[j] / n
        v = [v[j] + step[j] for j in range(d)]
    return np.array(v)


def ref_sign_vote(X, lr):
    rows = _rows(X)
    out = []
    for j in range(len(rows[0])):
        total = sum((r[j] > 0) - (r[j] < 0) for r in rows)
        out.append(lr * ((total > 0) - (total < 0)))
    return np.array(out)


def random_updates(seed, n, d, scale=1.0, offset=0.0):
    rng = np.random.default_rng(seed)
    return (offset + scale * rng.standard_normal((n, d))).astype(np.float32)


CASES = [(seed, n, f, d) for seed, (n, f, d) in enumerate(
    [(7, 1, 3), (9, 2, 5), (11, 2, 8), (12, 2, 1), (15, 3, 6), (13, 2, 20), (10, 1, 2),
     (14, 3, 11), (8, 1, 4), (15, 2, 17), (11, 2, 2), (15, 3, 3)]
)]


def _same_choice(chosen, ref_scores, best):
    """Krum's pick must be the reference's, unless the two are tied up to float precision."""
    if chosen == best:
        return True
    return ref_scores[chosen] <= ref_scores[best] * (1 + 1e-6)


# --------------------------------------------------------------------------------------
# Hand-computed cases. Five clients in 2-D, client 4 an outlier:
#   x0 = (0, 0), x1 = (2, 1), x2 = (1, 3), x3 = (4, 2), x4 = (93, -51)
# Column sums are 100 and -45, so column means are the integers 20 and -9.
# --------------------------------------------------------------------------------------

X5 = np.array([[0, 0], [2, 1], [1, 3], [4, 2], [93, -51]], dtype=np.float32)


def test_mean_hand():
    np.testing.assert_allclose(mean(X5), [20.0, -9.0], rtol=1e-7)
    # weights (1, 2, 3, 4, 0): x = (0 + 4 + 3 + 16) / 10, y = (0 + 2 + 9 + 8) / 10
    np.testing.assert_allclose(mean(X5, weights=[1, 2, 3, 4, 0]), [2.3, 1.9], rtol=1e-6)


def test_median_hand():
    # x: 0 1 2 4 93 -> 2 ;  y: -51 0 1 2 3 -> 1
    np.testing.assert_array_equal(median(X5, f=2), [2.0, 1.0])
    # even n (drop client 4): x: 0 1 2 4 -> 1.5 ; y: 0 1 2 3 -> 1.5
    np.testing.assert_array_equal(median(X5[:4], f=1), [1.5, 1.5])


def test_trimmed_mean_hand():
    # f = 1: x: (1 + 2 + 4) / 3 ; y: (0 + 1 + 2) / 3
    np.testing.assert_allclose(trimmed_mean(X5, f=1), [7 / 3, 1.0], rtol=1e-6)
    # f = 2 keeps only the median
    np.testing.assert_array_equal(trimmed_mean(X5, f=2), [2.0, 1.0])
    # f = 0 is the mean
    np.testing.assert_allclose(trimmed_mean(X5, f=0), [20.0, -9.0], rtol=1e-7)


def test_krum_hand():
    # Squared distances: d01 = 5, d02 = 10, d03 = 20, d12 = 5, d13 = 5, d23 = 10,
    # d04 = 93^2 + 51^2 = 11250, d14 = 91^2 + 52^2 = 10985, d24 = 92^2 + 54^2 = 11380,
    # d34 = 89^2 + 53^2 = 10730.  f = 1, n - f - 2 = 2 neighbours:
    # s0 = 5 + 10 = 15, s1 = 5 + 5 = 10, s2 = 5 + 10 = 15, s3 = 5 + 10 = 15,
    # s4 = 10730 + 10985 = 21715.
    agg, rep = krum(X5, f=1, return_report=True)
    np.testing.assert_array_equal(agg, [2.0, 1.0])
    assert rep.selected == [1]
    np.testing.assert_allclose(rep.scores, [15, 10, 15, 15, 21715], rtol=1e-9)
    D = pairwise_sq_distances(X5)
    assert D[0, 4] == 11250 and D[2, 4] == 11380 and D[1, 3] == 5


def test_multi_krum_hand_and_ties():
    # m = 3: s1 = 10 first, then the tie s0 = s2 = s3 = 15 is broken by the lower index.
    agg, rep = multi_krum(X5, f=1, m=3, return_report=True)
    assert rep.selected == [0, 1, 2]
    np.testing.assert_allclose(agg, [(0 + 2 + 1) / 3, (0 + 1 + 3) / 3], rtol=1e-6)
    # default m = n - f = 4 drops only the outlier
    agg, rep = multi_krum(X5, f=1, return_report=True)
    assert rep.selected == [0, 1, 2, 3]
    np.testing.assert_allclose(agg, [7 / 4, 6 / 4], rtol=1e-6)
    # weights (1, 1, 2, 4, 100) on the selection {0, 1, 2, 3}: x = (2 + 2 + 16) / 8
    agg = multi_krum(X5, f=1, weights=[1, 1, 2, 4, 100])
    np.testing.assert_allclose(agg, [20 / 8, (1 + 6 + 8) / 8], rtol=1e-6)
    # m = 1 is Krum
    np.testing.assert_array_equal(multi_krum(X5, f=1, m=1), krum(X5, f=1))


def test_krum_tie_goes_to_lower_index():
    # Corners of a square, client 4 a copy of client 0. Squared distances: 4 between
    # adjacent corners, 8 across, 0 between the copies. With f = 1, two neighbours:
    # s0 = s4 = 0 + 4 (a tie), s1 = s2 = s3 = 4 + 4.
    X = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1], [1, 1]], dtype=np.float32)
    agg, rep = krum(X, f=1, return_report=True)
    assert rep.selected == [0]
    np.testing.assert_allclose(rep.scores, [4, 8, 8, 8, 4])
    _, rep = krum(X[::-1].copy(), f=1, return_report=True)
    assert rep.selected == [0]  # reversed: the copy of (1, 1) that is now first


# Seven clients in 2-D for Bulyan (f = 1, theta = 5, beta = 3), client 6 an outlier:
X7 = np.array([[0, -1], [1, 2], [2, 1], [3, 3], [5, 1], [0, 6], [50, 50]], dtype=np.float32)


def test_bulyan_hand():
    # Squared distances (honest): d01=10 d02=8 d03=25 d04=29 d05=49 d12=2 d13=5 d14=17
    # d15=17 d23=5 d24=9 d25=29 d34=8 d35=18 d45=50; to x6: 5101 4705 4705 4418 4426 4436.
    # Round 1, |R| = 7, 4 neighbours: s = 72 34 24 36 63 113 17985 -> pick 2
    # Round 2, |R| = 6, 3 neighbours: s0 = 64 s1 = 32 s3 = 31 s4 = 54 s5 = 84 -> pick 3
    # Round 3, |R| = 5, 2 neighbours: s0 = 39 s1 = 27 s4 = 46 s5 = 66 -> pick 1
    # Round 4, |R| = 4, max(4-1-2, 1) = 1 neighbour: s0 = s4 = 29 (tie) s5 = 49 -> pick 0
    # Round 5, |R| = 3, 1 neighbour: s4 = s5 = 50 (tie) -> pick 4
    # Selection {0, 1, 2, 3, 4}:  x = 0 1 2 3 5, median 2, 3 closest 1 2 3 -> 2
    #                             y = -1 2 1 3 1, median 1, 3 closest 1 1 2 -> 4/3
    agg, rep = bulyan(X7, f=1, return_report=True)
    assert rep.selected == [2, 3, 1, 0, 4]
    assert rep.details == {"theta": 5, "beta": 3}
    np.testing.assert_allclose(agg, [2.0, 4 / 3], rtol=1e-6)
    sel, ref = ref_bulyan(X7, 1)
    assert sel == [2, 3, 1, 0, 4]
    np.testing.assert_allclose(ref, [2.0, 4 / 3])


def test_geometric_median_hand():
    # (-1, 0), (1, 0), (0, 1), (0, -1), (0, 5): by symmetry x = 0; for -1 < y < 1 the
    # derivative of 2 sqrt(1 + y^2) + (1 - y) + (1 + y) + (5 - y) is 2y / sqrt(1 + y^2) - 1,
    # zero at y = 1 / sqrt(3). Objective (mean distance) = (sqrt(3) + 7) / 5.
    X = np.array([[-1, 0], [1, 0], [0, 1], [0, -1], [0, 5]], dtype=np.float32)
    v = geometric_median(X, f=2, ftol=1e-12, maxiter=10_000)
    np.testing.assert_allclose(v, [0.0, 1 / math.sqrt(3)], atol=2e-5)
    agg, rep = geometric_median(X, f=2, return_report=True)
    assert rep.details["objective"] == pytest.approx((math.sqrt(3) + 7) / 5, rel=1e-5)
    assert abs(float(agg[0])) < 1e-6
    np.testing.assert_allclose(rep.scores.sum(), 1.0)
    # collinear points: the geometric median is the 1-D median (2, 2)
    L = np.array([[0, 0], [1, 1], [2, 2], [3, 3], [100, 100]], dtype=np.float32)
    np.testing.assert_allclose(geometric_median(L, f=2, ftol=1e-12, maxiter=10_000), [2, 2], atol=1e-4)


def test_centered_clipping_hand():
    X = np.array([[3, 4], [0, 0], [6, 8]], dtype=np.float32)
    # centre 0, tau = 5: norms 5, 0, 10 -> factors 1, 1, 1/2 -> v1 = ((3,4) + (3,4)) / 3
    v1 = centered_clipping(X, f=1, tau=5.0, iterations=1)
    np.testing.assert_allclose(v1, [2.0, 8 / 3], rtol=1e-6)
    # second iteration from v1: offsets (1, 4/3) |5/3|, (-2, -8/3) |10/3|, (4, 16/3) |20/3|
    # -> factors 1, 1, 3/4 -> step ((1 - 2 + 3), (4/3 - 8/3 + 4)) / 3 = (2/3, 8/9)
    v2, rep = centered_clipping(X, f=1, tau=5.0, iterations=2, return_report=True)
    np.testing.assert_allclose(v2, [8 / 3, 32 / 9], rtol=1e-6)
    np.testing.assert_allclose(rep.scores, [1.0, 1.0, 0.75])
    assert rep.details["clipped"] == 1
    # around a given centre (6, 8): offsets (-3, -4), (-6, -8), 0 -> factors 1, 5/10, 1
    v = centered_clipping(X, f=1, tau=5.0, center=[6, 8])
    np.testing.assert_allclose(v, [6 + (-3 - 3) / 3, 8 + (-4 - 4) / 3], rtol=1e-6)
    # a huge radius gives the mean
    np.testing.assert_allclose(centered_clipping(X, tau=1e9), [3.0, 4.0], rtol=1e-6)


def test_sign_majority_vote_hand():
    X = np.array([[1, -2, 0, 3], [2, -1, 0, -3], [-1, 5, 0, -1]], dtype=np.float32)
    # signs: col0 + + - -> + ; col1 - - + -> - ; col2 0 0 0 -> 0 ; col3 + - - -> -
    agg, rep = sign_majority_vote(X, f=1, server_lr=0.1, return_report=True)
    np.testing.assert_array_equal(agg, np.float32([0.1, -0.1, 0.0, -0.1]))
    # agreement: client 0 wins cols 0, 1, 2 (0 = 0) ; client 1 wins 0, 1, 2, 3 ; client 2 wins 2, 3
    np.testing.assert_allclose(rep.scores, [3 / 4, 4 / 4, 2 / 4])
    # a 2-2 tie votes 0, and a zero update abstains
    T = np.array([[1, 1], [1, -1], [-1, 0], [-1, 0], [0, 0]], dtype=np.float32)
    np.testing.assert_array_equal(sign_majority_vote(T, f=2, server_lr=1.0), [0.0, 0.0])


# --------------------------------------------------------------------------------------
# Fast implementation vs float64 reference on random float32 inputs
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed,n,f,d", CASES)
def test_mean_vs_reference(seed, n, f, d):
    X = random_updates(seed, n, d, scale=3.0, offset=1.0)
    w = np.random.default_rng(seed + 100).integers(1, 50, n)
    np.testing.assert_allclose(mean(X), ref_mean(X), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mean(X, weights=w), ref_mean(X, w), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed,n,f,d", CASES)
def test_median_and_trimmed_mean_vs_reference(seed, n, f, d):
    X = random_updates(seed, n, d, scale=2.0, offset=-1.0)
    np.testing.assert_allclose(median(X, f=f), ref_median(X), rtol=1e-6, atol=1e-7)
    for t in range(0, (n - 1) // 2 + 1):
        np.testing.assert_allclose(trimmed_mean(X, f=t), ref_trimmed_mean(X, t), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed,n,f,d", CASES)
def test_krum_and_multi_krum_vs_reference(seed, n, f, d):
    X = random_updates(seed, n, d)
    best, ref_vec, ref_scores = ref_krum(X, f)
    agg, rep = krum(X, f=f, return_report=True)
    assert _same_choice(rep.selected[0], ref_scores, best)
    np.testing.assert_array_equal(agg, X[rep.selected[0]])
    np.testing.assert_allclose(rep.scores, ref_scores, rtol=1e-5)
    np.testing.assert_allclose(krum_scores(pairwise_sq_distances(X), f), ref_scores, rtol=1e-5)
    w = np.random.default_rng(seed).uniform(0.5, 2.0, n)
    for m in sorted({1, 2, n - f, n}):
        chosen, ref_agg = ref_multi_krum(X, f, m)
        agg, rep = multi_krum(X, f=f, m=m, return_report=True)
        assert rep.selected == chosen
        np.testing.assert_allclose(agg, ref_agg, rtol=1e-5, atol=1e-6)
        _, ref_w = ref_multi_krum(X, f, m, w)
        np.testing.assert_allclose(multi_krum(X, f=f, m=m, weights=w), ref_w, rtol=1e-5, atol=1e-6)


BULYAN_CASES = [(seed, n, f, d) for seed, (n, f, d) in enumerate(
    [(7, 1, 2), (8, 1, 3), (11, 2, 4), (12, 2, 1), (15, 3, 5), (13, 2, 9), (9, 1, 20),
     (15, 2, 7), (10, 1, 6), (14, 2, 3), (7, 0, 3), (15, 1, 2)]
)]


@pytest.mark.parametrize("seed,n,f,d", BULYAN_CASES)
def test_bulyan_vs_reference(seed, n, f, d):
    X = random_updates(seed + 1000, n, d)
    sel, ref = ref_bulyan(X, f)
    agg, rep = bulyan(X, f=f, return_report=True)
    assert rep.selected == sel
    np.testing.assert_allclose(agg, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("values,beta,expected", [
    ([4, 0, 3, 1, 2], 2, 1.5),           # median 2; 1 and 3 tie at distance 1: the lower wins
    ([10, 1, 0, 3], 2, 2.0),             # even: median 2, the two middle values
    ([5, 0, 100, 2, 4, 1, 3], 5, 3.0),   # beta > theta / 2 (the complement branch): 1..5
    ([2, 7, -1], 3, 8 / 3),              # beta = theta: the plain mean
    ([1, 1, 1, 2, 2, 3, 3], 3, 5 / 3),   # repeated values: both 2s, then the lower of 1 and 3
    ([0, 0, 1, 1.5, 2.5], 3, 5 / 6),     # median 1: 0.5 away are 1.5 and (not) 0: 1, 1.5, 0
    ([3, 1e20, 2, 1e20, 1e20, 2, 1e20, 1e20, 2], 1, 1e20),  # median 1e20 itself
    ([1e-3, 2e-3, 3e-3, 4e-3, 5e-3, 6e-3, 1e20], 6, 3.5e-3),  # complement branch: the outlier
    #   is left out and must not wash out the small values (no subtraction of it)
])
def test_closest_to_median_mean_hand(values, beta, expected):
    X = np.array(values, dtype=np.float32)[:, None] * np.ones((1, 3), dtype=np.float32)
    out = closest_to_median_mean(X, list(range(len(values))), beta)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_bulyan_vs_reference_on_repeated_values(seed):
    """Integer-valued updates and identical colluding copies (what ALIE sends): many exact
    ties around the median, where the beta nearest values are not the window whose farther
    end is nearest."""
    rng = np.random.default_rng(seed)
    n, f, d = 15, 3, 40
    X = rng.integers(-3, 4, (n, d)).astype(np.float32)
    X[:f] = X[f:].mean(axis=0) - 0.5 * X[f:].std(axis=0)  # f identical ALIE-like copies
    sel, ref = ref_bulyan(X, f)
    agg, rep = bulyan(X, f=f, return_report=True)
    assert rep.selected == sel
    np.testing.assert_allclose(agg, ref, rtol=1e-6, atol=1e-6)


def test_bulyan_selection_is_iterated_not_scored_once():
    """The reference distinguishes the paper's iterated Krum from a single scoring round,
    and the implementation follows the iterated one."""
    found = 0
    for seed in range(300):
        X = random_updates(seed, 7, 2)
        sel, ref = ref_bulyan(X, 1)
        scores = ref_krum_scores(_rows(X), 1)
        once = sorted(scores, key=lambda i: (scores[i], i))[:5]
        if sorted(once) != sorted(sel):
            found += 1
            agg, rep = bulyan(X, f=1, return_report=True)
            assert rep.selected == sel
            np.testing.assert_allclose(agg, ref, rtol=1e-5, atol=1e-6)
    assert found > 0


@pytest.mark.parametrize("seed,n,f,d", CASES)
def test_geometric_median_vs_reference(seed, n, f, d):
    X = random_updates(seed, n, d, scale=2.0, offset=0.5)
    w = np.random.default_rng(seed).uniform(0.2, 3.0, n)
    for weights in (None, w):
        ref = ref_weiszfeld(X, weights)
        best = objective(X, ref, weights)
        v = geometric_median(X, f=f, weights=weights)
        obj = objective(X, v, weights)
        # near-optimal, and never worse than any input point or the (weighted) mean
        assert obj <= best * (1 + 1e-5)
        for x in list(X) + [ref_mean(X, weights)]:
            assert obj <= objective(X, x, weights) * (1 + 1e-7)
        # run to convergence, the point itself agrees with the float64 Weiszfeld
        tight = geometric_median(X, f=f, weights=weights, ftol=1e-13, maxiter=5000)
        spread = np.sqrt(((X - X.mean(axis=0)) ** 2).sum(axis=1)).max()
        assert np.linalg.norm(tight - ref) <= 1e-5 * spread


@pytest.mark.parametrize("seed,n,f,d", CASES)
def test_centered_clipping_vs_reference(seed, n, f, d):
    X = random_updates(seed, n, d, scale=2.0, offset=1.0)
    center = np.random.default_rng(seed).standard_normal(d)
    typical = float(np.median(np.linalg.norm(X.astype(np.float64) - center, axis=1)))
    for tau, L, c in [(0.5 * typical, 1, center), (typical, 3, center), (0.3 * typical, 5, None), (1e6, 2, None)]:
        ref = ref_centered_clipping(X, tau, L, c)
        got = centered_clipping(X, f=f, tau=tau, iterations=L, center=c)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed,n,f,d", CASES)
def test_sign_majority_vote_vs_reference(seed, n, f, d):
    X = random_updates(seed, n, d)
    X[:, ::3] = np.round(X[:, ::3])  # some exact zeros (abstentions) and tied votes
    np.testing.assert_array_equal(sign_majority_vote(X, f=f, server_lr=0.01), ref_sign_vote(X, 0.01).astype(np.float32))


def test_float64_input_keeps_dtype_and_matches_reference():
    X = random_updates(5, 9, 4).astype(np.float64)
    assert median(X, f=2).dtype == np.float64
    np.testing.assert_allclose(trimmed_mean(X, f=2), ref_trimmed_mean(X, 2), rtol=1e-12)
    sel, ref = ref_bulyan(X, 1)
    np.testing.assert_allclose(bulyan(X, f=1), ref, rtol=1e-12)


# --------------------------------------------------------------------------------------
# Bounds and input validation
# --------------------------------------------------------------------------------------

BOUNDS = {
    "krum": lambda f: 2 * f + 3,
    "multi_krum": lambda f: 2 * f + 3,
    "bulyan": lambda f: 4 * f + 3,
    "median": lambda f: 2 * f + 1,
    "trimmed_mean": lambda f: 2 * f + 1,
    "geometric_median": lambda f: 2 * f + 1,
    "centered_clipping": lambda f: 2 * f + 1,
    "signsgd_majority": lambda f: 2 * f + 1,
    "meamed": lambda f: 2 * f + 1,  # Xie, Koyejo & Gupta 2018: a majority of correct values
    "mda": lambda f: 2 * f + 1,  # El Mhamdi et al. 2020: n > 2f
    "monna": lambda f: 2 * f + 1,  # Farhadkhani et al. 2023: n > 2f
    "smea": lambda f: 2 * f + 1,  # Allouah et al. 2023: n > 2f
    "caf": lambda f: 2 * f + 1,  # Allouah, Guerraoui & Stephan 2025: n > 2f (stops at n - 2f)
    "dnc": lambda f: 2 * f + 1,  # Shejwalkar & Houmansadr 2021: an honest majority
    "signguard": lambda f: 2 * f + 1,  # Xu et al. 2022: the honest majority is the largest cluster
    "clustering": lambda f: 2 * f + 1,  # Sattler et al. 2020: the larger cluster is honest
    "clipped_clustering": lambda f: 2 * f + 1,  # Li, Ngai & Voigt 2023: as Clustering
    "fltrust": lambda f: 1,  # Cao et al. 2021: any number of malicious clients (the root data is the anchor)
    "foolsgold": lambda f: 1,  # Fung et al. 2020: no bound on the number of sybils
    "flame": lambda f: 2 * f + 1,  # Nguyen et al. 2022: fewer than n / 2 malicious clients
}


@pytest.mark.parametrize("rule", sorted(BOUNDS))
@pytest.mark.parametrize("f", [0, 1, 2, 3])
def test_byzantine_bound(rule, f):
    fn = RULES[rule]
    need = BOUNDS[rule](f)
    X = random_updates(f, need, 3)
    extra = round_inputs(rule, X)
    out = fn(X, f=f, **extra)  # exactly at the bound: works
    assert out.shape == (3,) and np.all(np.isfinite(out))
    assert issubclass(ByzantineBoundError, ValueError)
    if need > 1:  # (n = 0 is an empty matrix, a plain ValueError)
        with pytest.raises(ByzantineBoundError, match=f"f={f}"):
            fn(X[:-1], f=f, **extra)
        with pytest.raises(ByzantineBoundError):
            fn(np.vstack([X[:-1]] * 1)[: max(need - 1 - f, 1)], f=f, **extra)


@pytest.mark.parametrize("rule", sorted(BOUNDS))
@pytest.mark.parametrize("f", ["1", 1.0, -1, True])
def test_f_that_is_not_a_count_is_refused_by_name(rule, f):
    with pytest.raises(ValueError, match=f"{rule}: f must be a non-negative integer"):
        RULES[rule](random_updates(0, 12, 3), f=f, **round_inputs(rule, np.zeros((1, 3))))


def test_geometric_median_converges_past_a_huge_finite_update():
    """A finite update at 3e19 (its float32 squares overflow) gets its true distance, so the
    Weiszfeld iteration converges instead of running to maxiter on inf objectives."""
    X = random_updates(5, 9, 6)
    X[0] = 3e19
    agg, rep = geometric_median(X, f=1, return_report=True)
    assert rep.details["iterations"] < 100 and np.isfinite(rep.details["objective"])
    assert np.abs(agg).max() < 10 * np.abs(X[1:]).max()


def test_mean_tolerates_no_byzantine_client():
    X = random_updates(0, 10, 3)
    with pytest.raises(ByzantineBoundError):
        mean(X, f=1)
    mean(X, f=0)
    for f in (0.0, False, "0"):
        with pytest.raises(ValueError, match="mean: f must be a non-negative integer"):
            mean(X, f=f)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_nonfinite_row_is_named(rule):
    fn = RULES[rule]
    X = random_updates(1, 11, 4)
    kwargs = {} if rule == "mean" else {"f": 1}
    kwargs.update(round_inputs(rule, X))
    for bad in (np.nan, np.inf, -np.inf):
        Y = X.copy()
        Y[7, 2] = bad
        with pytest.raises(ValueError, match="client 7"):
            fn(Y, **kwargs)
    Y = X.copy()
    Y[3, 0] = np.nan
    Y[9, 1] = np.inf
    with pytest.raises(ValueError, match="client 3"):  # the first bad row
        fn(Y, **kwargs)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_bad_shapes_and_params(rule):
    fn = RULES[rule]
    kwargs = {} if rule == "mean" else {"f": 0}
    inputs = round_inputs(rule, np.zeros((1, 3)))
    for bad in (np.zeros(5, np.float32), np.zeros((2, 3, 4), np.float32), np.zeros((0, 3), np.float32),
                np.zeros((3, 0), np.float32), np.zeros((5, 2), np.complex64), np.array([["a", "b"]] * 5)):
        with pytest.raises(ValueError):
            fn(bad, **kwargs, **inputs)
    X = random_updates(2, 9, 3)
    if rule != "mean":
        for f in (-1, 1.5, True, np.float64(2.0)):
            with pytest.raises(ValueError):
                fn(X, f=f, **inputs)
        with pytest.raises((TypeError, ValueError)):  # not a number at all
            fn(X, f="1", **inputs)
    # integer and list inputs are accepted (converted to float32)
    out = fn([[int(v) for v in row] for row in np.round(X * 10)], **kwargs, **inputs)
    assert out.dtype == np.float32


@pytest.mark.parametrize("rule", sorted(RULES))
def test_no_runtime_warnings_on_zero_duplicate_and_huge_rows(rule):
    X = random_updates(8, 11, 5)
    X[0] = 0.0  # at the centre of centered clipping, zero norm for clipping
    X[1] = X[2]  # a duplicate: zero distance
    X[3] = 1e30  # a huge (finite) Byzantine row: float32 products overflow
    kwargs = {} if rule == "mean" else {"f": 2}
    kwargs.update(round_inputs(rule, X))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = RULES[rule](X, **kwargs)
    assert np.all(np.isfinite(out))


def test_weights_validation():
    X = random_updates(3, 9, 3)
    for fn, kw in ((mean, {}), (multi_krum, {"f": 1}), (geometric_median, {"f": 1})):
        for w in ([1, 2, 3], [1] * 8 + [-1], [0] * 9, [np.nan] + [1] * 8):
            with pytest.raises(ValueError):
                fn(X, weights=w, **kw)


def test_rule_specific_parameter_checks():
    X = random_updates(4, 9, 3)
    for m in (0, 10):
        with pytest.raises(ValueError, match="m"):
            multi_krum(X, f=1, m=m)
    with pytest.raises(ValueError, match="tau"):
        centered_clipping(X, tau=0.0)
    with pytest.raises(ValueError, match="iterations"):
        centered_clipping(X, iterations=0)
    with pytest.raises(ValueError, match="center"):
        centered_clipping(X, center=np.zeros(4))
    with pytest.raises(ValueError, match="center"):
        centered_clipping(X, center=[np.nan, 0, 0])


# --------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------


def _is_scalar(v):
    return type(v) in (int, float)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_report_metrics_are_plain_scalars(rule):
    X = random_updates(6, 11, 4)
    kwargs = {} if rule == "mean" else {"f": 2}
    if "seed" in REGISTRY[rule].params:  # a randomised rule: the same draw for both calls
        kwargs["seed"] = 0
    kwargs.update(round_inputs(rule, X))
    agg, rep = RULES[rule](X, return_report=True, **kwargs)
    assert isinstance(rep, AggregationReport)
    assert rep.rule == rule and rep.n == 11 and rep.f == kwargs.get("f", 0)
    np.testing.assert_array_equal(agg, RULES[rule](X, **kwargs))
    metrics = rep.to_metrics()
    assert metrics["byz.n"] == 11
    for key, value in metrics.items():
        assert key.startswith("byz.")
        if isinstance(value, list):
            assert all(_is_scalar(v) for v in value), (key, value)
        else:
            assert _is_scalar(value), (key, type(value))


def test_report_to_metrics_converts_numpy_types():
    rep = AggregationReport(
        "x", np.int64(5), np.int32(1), selected=[np.int64(2), 3], scores=np.float32([[1.5, 2.0]]),
        dropped={np.int64(4): "nan"},
        details={"a": np.float32(0.5), "b": np.int16(3), "c": np.bool_(True), "d": True, "e": 2.5,
                 "skip": "text", "arr": np.zeros(3)},
    )
    m = rep.to_metrics(prefix="p/")
    assert m == {"p/n": 5, "p/f": 1, "p/selected": [2, 3], "p/scores": [1.5, 2.0], "p/dropped": [4],
                 "p/a": 0.5, "p/b": 3, "p/c": 1, "p/d": 1, "p/e": 2.5}
    for value in m.values():
        assert all(_is_scalar(v) for v in value) if isinstance(value, list) else _is_scalar(value)


# --------------------------------------------------------------------------------------
# Meamed and MDA (issue 13): written from the papers' definitions
# --------------------------------------------------------------------------------------


def ref_meamed(X, f):
    """Per coordinate: sort the values by distance to the median (ties: the lower value
    first), average the first n - f."""
    rows = _rows(X)
    n, d = len(rows), len(rows[0])
    out = []
    for j in range(d):
        col = [rows[i][j] for i in range(n)]
        med = _median_of(col)
        ranked = sorted(col, key=lambda v: (abs(v - med), v))
        out.append(sum(ranked[: n - f]) / (n - f))
    return np.array(out)


def ref_mda(X, f):
    """Every subset of n - f rows; the one of minimum diameter, ties broken by the
    within-subset distances sorted in decreasing order (lexicographically smallest)."""
    import itertools

    rows = _rows(X)
    n = len(rows)
    best, chosen = None, None
    for subset in itertools.combinations(range(n), n - f):
        key = sorted((_sqdist(rows[i], rows[j]) for i, j in itertools.combinations(subset, 2)), reverse=True)
        if best is None or key < best:
            best, chosen = key, subset
    d = len(rows[0])
    return np.array([sum(rows[i][j] for i in chosen) / len(chosen) for j in range(d)]), list(chosen)


def test_meamed_hand():
    # one coordinate, n = 5, f = 1: median 3; distances 2, 1, 0, 1, 97 -> keep 1, 2, 3, 4
    X = np.array([[1.0], [2.0], [3.0], [4.0], [100.0]], dtype=np.float32)
    np.testing.assert_allclose(meamed(X, f=1), [2.5])
    # f = 2: keep the 3 nearest: 2, 3, 4
    np.testing.assert_allclose(meamed(X, f=2), [3.0])
    # a tie at equal distance goes to the lower value: median 3 of [1, 3, 5] -> 1 and 5 tie
    T = np.array([[1.0], [3.0], [5.0]], dtype=np.float32)
    np.testing.assert_allclose(meamed(T, f=1), [2.0])
    # ByzFL's documented example: [[1,2,3],[4,5,6],[7,8,9]], f = 1 -> [2.5, 3.5, 4.5]
    B = np.array([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float32)
    np.testing.assert_allclose(meamed(B, f=1), [2.5, 3.5, 4.5])
    np.testing.assert_allclose(meamed(B, f=0), B.mean(axis=0))  # f = 0: the mean


def test_mda_hand():
    # Four points on a line at 0, 1, 2, 10 (one coordinate); f = 1: the subset {0, 1, 2} has
    # diameter 2, every subset with 10 at least 8.
    X = np.array([[0.0], [1.0], [2.0], [10.0]], dtype=np.float32)
    out, rep = mda(X, f=1, return_report=True)
    np.testing.assert_allclose(out, [1.0])
    assert rep.selected == [0, 1, 2] and rep.details["diameter"] == pytest.approx(2.0)
    # ByzFL's documented example: {0, 1} and {1, 2} tie completely (one distance each, equal);
    # the first in index order wins, as in ByzFL
    B = np.array([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float32)
    np.testing.assert_allclose(mda(B, f=1), [2.5, 3.5, 4.5])
    # P, Q set the diameter 4 of both {P, Q, R1} and {P, Q, R2} (every other subset is wider);
    # their other distances are 2.44 (R1) and 2.21 (R2): {P, Q, R2} is tighter, whatever the
    # order of the clients (ByzFL would keep {P, Q, R1}, the first in index order)
    P, Q, R1, R2, O = [0.0, 0.0], [2.0, 0.0], [1.0, 1.2], [1.0, -1.1], [50.0, 50.0]
    T = np.array([P, Q, R1, R2, O], dtype=np.float64)
    for order in ([0, 1, 2, 3, 4], [3, 2, 4, 1, 0]):
        out, rep = mda(T[order], f=2, return_report=True)
        np.testing.assert_allclose(out, [1.0, -1.1 / 3])
        assert sorted(np.array(order)[rep.selected].tolist()) == [0, 1, 3]
    # a colluding pair far away cannot win against three tight honest points
    C = np.array([[0.0, 0], [0.1, 0], [0, 0.1], [50, 50], [50, 50]], dtype=np.float32)
    assert mda(C, f=2, return_report=True)[1].selected == [0, 1, 2]


def test_mda_refuses_past_its_exact_limit():
    from flwr_byz.aggregation.mda import MAX_SUBSETS

    X = random_updates(0, 51, 3)
    assert math.comb(51, 12) > MAX_SUBSETS
    with pytest.raises(ValueError, match="C\\(51, 12\\)"):
        mda(X, f=12)


@pytest.mark.parametrize("seed,n,f,d", CASES)
def test_meamed_and_mda_vs_reference(seed, n, f, d):
    X = random_updates(seed, n, d, scale=2.0, offset=0.5)
    for t in range(0, (n - 1) // 2 + 1):
        np.testing.assert_allclose(meamed(X, f=t), ref_meamed(X, t), rtol=1e-5, atol=1e-6)
    if math.comb(n, f) <= 5000:
        expected, chosen = ref_mda(X, f)
        out, rep = mda(X, f=f, return_report=True)
        assert rep.selected == chosen
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
