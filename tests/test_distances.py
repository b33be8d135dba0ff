"""pairwise_sq_distances against a float64 direct computation, on the inputs that break the
naive float32 Gram trick: ALIE-like updates (a large common base, tiny perturbations and
bit-identical Byzantine copies), with and without a huge outlier."""

from __future__ import annotations

import numpy as np
import pytest

from flwr_byz.aggregation import krum, multi_krum, pairwise_sq_distances

REL_TOL = 1e-4  # required relative agreement on the distances between distinct rows
ZERO_TOL = 1e-12  # identical rows: exactly 0, or below this fraction of a typical distance


def direct_sq_distances(X):
    """sum_k (x_ik - x_jk)^2 computed directly in float64 (no Gram identity)."""
    X64 = np.asarray(X, dtype=np.float64)
    n = X64.shape[0]
    R = np.empty((n, n))
    for i in range(n):
        diff = X64 - X64[i]
        R[i] = np.einsum("ij,ij->i", diff, diff)
    return R


def naive_gram_sq_distances(X):
    """The Gram trick |x|^2 + |y|^2 - 2 x.y on raw float32 rows (no centring)."""
    X = np.asarray(X, dtype=np.float32)
    sq = np.einsum("ij,ij->i", X, X)
    D = sq[:, None] + sq[None, :] - np.float32(2) * (X @ X.T)
    return np.maximum(D, 0).astype(np.float64)


def errors(D, R, rows=None):
    """(max relative error over distinct pairs, max |D| over identical pairs / typical)."""
    n = R.shape[0]
    mask = np.ones((n, n), dtype=bool) if rows is None else np.zeros((n, n), dtype=bool)
    if rows is not None:
        mask[np.ix_(rows, rows)] = True
    np.fill_diagonal(mask, False)
    distinct = mask & (R > 0)
    identical = mask & (R == 0)
    typical = np.median(R[distinct])
    rel = np.max(np.abs(D[distinct] - R[distinct]) / R[distinct])
    zero = np.max(np.abs(D[identical])) / typical if identical.any() else 0.0
    return rel, zero


def alie_like(seed=0, d=100_000, n_honest=10, n_byz=5, z=1.0):
    """Honest: base + 1e-4 noise with |base| ~ 1. Byzantine: n_byz bit-identical copies of
    mean - z * std of the honest rows (ALIE, Baruch et al. 2019), and a duplicated honest row."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.5, 1.5, d) * rng.choice([-1.0, 1.0], d)
    honest = (base + 1e-4 * rng.standard_normal((n_honest, d))).astype(np.float32)
    h64 = honest.astype(np.float64)
    alie = (h64.mean(axis=0) - z * h64.std(axis=0)).astype(np.float32)
    X = np.vstack([honest, np.tile(alie, (n_byz, 1)), honest[3:4]])
    return X, list(range(n_honest))


@pytest.fixture(scope="module")
def alie_input():
    X, honest = alie_like()
    return X, honest, direct_sq_distances(X)


def test_alie_input_matches_direct_float64(alie_input):
    X, _, R = alie_input
    assert X.shape[1] > 65536  # more than one column chunk
    D = pairwise_sq_distances(X)
    assert D.dtype == np.float64 and D.shape == (16, 16)
    rel, zero = errors(D, R)
    assert rel <= REL_TOL
    assert zero <= ZERO_TOL
    # the Byzantine copies and the duplicated honest row are at distance exactly 0
    assert np.all(D[10:15, 10:15] == 0.0) and D[3, 15] == 0.0 and D[15, 3] == 0.0
    np.testing.assert_array_equal(D, D.T)
    np.testing.assert_array_equal(np.diag(D), 0.0)


def test_naive_float32_gram_trick_fails_the_same_check(alie_input):
    """The check above is not vacuous: the uncentred float32 Gram trick misses it by far."""
    X, _, R = alie_input
    rel, zero = errors(naive_gram_sq_distances(X), R)
    assert rel > 100 * REL_TOL  # (observed: errors of the order of the distances themselves)


def test_small_chunks_agree(alie_input):
    X, _, R = alie_input
    Xs = np.ascontiguousarray(X[:, :3000])
    Rs = direct_sq_distances(Xs)
    for chunk in (1, 7, 1000, 4096):
        rel, zero = errors(pairwise_sq_distances(Xs, chunk_columns=chunk), Rs)
        assert rel <= REL_TOL and zero <= ZERO_TOL


@pytest.mark.parametrize("magnitude", [1e3, 1e6, 1e12, 1e30])
def test_honest_distances_survive_a_huge_outlier(alie_input, magnitude):
    """One Byzantine row far away must not wreck the precision of the other distances (a
    column mean dragged by it would), nor turn them into NaN when float32 products overflow."""
    X, honest, _ = alie_input
    X = X.copy()
    X[12] = magnitude * np.random.default_rng(1).standard_normal(X.shape[1]).astype(np.float32)
    R = direct_sq_distances(X)
    D = pairwise_sq_distances(X)
    assert not np.isnan(D).any()
    others = [i for i in range(X.shape[0]) if i != 12]
    rel, zero = errors(D, R, rows=others)
    assert rel <= REL_TOL and zero <= ZERO_TOL
    # distances to the outlier: accurate too (computed directly, in float64, where the float32
    # products overflow)
    far = D[12, others]
    assert np.all(np.abs(far - R[12, others]) <= 1e-4 * R[12, others])
    # Krum and Multi-Krum never pick the outlier
    _, rep = krum(X, f=5, return_report=True)
    assert rep.selected[0] != 12
    _, rep = multi_krum(X, f=5, return_report=True)
    assert 12 not in rep.selected


def test_hand_computed():
    X = np.array([[0, 0, 0], [1, 2, 2], [3, 0, 4], [1, 2, 2]], dtype=np.float32)
    # |x1|^2 = 9, |x2|^2 = 25, |x1 - x2|^2 = 4 + 4 + 4 = 12, x3 = x1
    expected = [[0, 9, 25, 9], [9, 0, 12, 0], [25, 12, 0, 12], [9, 0, 12, 0]]
    np.testing.assert_allclose(pairwise_sq_distances(X), expected, rtol=1e-6, atol=0)
    np.testing.assert_allclose(pairwise_sq_distances(X.astype(np.float64)), expected, rtol=1e-14)
    assert pairwise_sq_distances(X[:1]).tolist() == [[0.0]]


@pytest.mark.parametrize("seed", range(6))
def test_random_inputs_and_translation(seed):
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(2, 20)), int(rng.integers(1, 300))
    X = (rng.standard_normal((n, d)) * rng.uniform(0.01, 10)).astype(np.float32)
    R = direct_sq_distances(X)
    rel, _ = errors(pairwise_sq_distances(X), R)
    assert rel <= 1e-5
    # far from the origin: the same relative accuracy on the (shifted, float32) data
    Y = (X + np.float32(1e3) * rng.standard_normal(d).astype(np.float32)).astype(np.float32)
    rel, _ = errors(pairwise_sq_distances(Y), direct_sq_distances(Y))
    assert rel <= REL_TOL
    X64 = X.astype(np.float64)
    rel, _ = errors(pairwise_sq_distances(X64), direct_sq_distances(X64))
    assert rel <= 1e-12


def _record_gram_passes(monkeypatch):
    """Wrap distances._centred_gram: returns the list of (robust, rows) of each pass taken."""
    from flwr_byz.aggregation import distances

    calls, original = [], distances._centred_gram

    def spy(X, chunk_columns, robust, rows=None):
        calls.append((robust, None if rows is None else sorted(np.asarray(rows).tolist())))
        return original(X, chunk_columns, robust, rows)

    monkeypatch.setattr(distances, "_centred_gram", spy)
    return calls


def test_tight_colluding_cluster_is_resolved_by_a_pass_over_its_own_rows(monkeypatch):
    """f colluding updates far from the honest ones and within 1e-3 of each other: the
    mean-centred product cannot resolve their mutual distances; the second pass, over just
    those rows and centred at their own mean, does (no median-centred pass over all rows)."""
    rng = np.random.default_rng(3)
    n, f, d = 15, 4, 70_000
    g = rng.standard_normal(d)
    X = rng.standard_normal((n, d)) + g
    X[n - f :] = -3 * g + 1e-3 * rng.standard_normal((f, d))
    X = X.astype(np.float32)
    R = direct_sq_distances(X)
    calls = _record_gram_passes(monkeypatch)
    D = pairwise_sq_distances(X)
    assert calls == [(False, None), (False, list(range(n - f, n)))]
    rel, zero = errors(D, R)
    assert rel <= REL_TOL and zero == 0.0
    np.testing.assert_array_equal(D, D.T)


def test_second_pass_over_the_honest_rows_when_an_outlier_drags_the_mean(monkeypatch):
    """A huge (but not overflowing) outlier drags the column mean away from the honest rows,
    whose mutual distances the first pass then cannot resolve: the second pass covers them
    (centred at their own mean) and leaves the distances to the outlier from the first."""
    X, honest = alie_like(seed=2, d=70_000)
    X[12] = 1e6 * np.random.default_rng(4).standard_normal(X.shape[1]).astype(np.float32)
    R = direct_sq_distances(X)
    calls = _record_gram_passes(monkeypatch)
    D = pairwise_sq_distances(X)
    assert len(calls) == 2 and calls[1][0] is False and 12 not in calls[1][1]
    rel, zero = errors(D, R)
    assert rel <= REL_TOL and zero <= ZERO_TOL


def test_median_pass_when_every_row_is_unresolved(monkeypatch):
    """Float32 products overflow for every pair (the mean is dragged beyond 1e19): no subset
    helps, and the median-centred pass over all rows recovers the honest distances."""
    X, honest = alie_like(seed=5, d=70_000)
    X[12] = 1e30 * np.random.default_rng(6).standard_normal(X.shape[1]).astype(np.float32)
    calls = _record_gram_passes(monkeypatch)
    D = pairwise_sq_distances(X)
    assert calls == [(False, None), (True, list(range(X.shape[0])))]
    others = [i for i in range(X.shape[0]) if i != 12]
    rel, zero = errors(D, direct_sq_distances(X), rows=others)
    assert rel <= REL_TOL and zero <= ZERO_TOL


def test_two_tight_clusters_on_either_side_are_two_groups(monkeypatch):
    """Two colluding clusters, far apart on either side of the honest rows: their mutual
    distances are unresolved in the first pass, and the rows involved form two groups (no
    unresolved entry links them), each centred at its own mean."""
    rng = np.random.default_rng(0)
    g = rng.standard_normal(70_000)
    honest = rng.standard_normal((9, g.size)) + g
    A = 30 * g + 1e-3 * rng.standard_normal((3, g.size))
    B = -30 * g + 1e-3 * rng.standard_normal((3, g.size))
    X = np.vstack([honest, A, B]).astype(np.float32)
    calls = _record_gram_passes(monkeypatch)
    D = pairwise_sq_distances(X)
    assert calls == [(False, None), (False, [9, 10, 11]), (False, [12, 13, 14])]
    rel, zero = errors(D, direct_sq_distances(X))
    assert rel <= REL_TOL and zero == 0.0


def test_groups_split_again_when_their_own_mean_is_not_enough(monkeypatch):
    """Honest rows (spread 1e-4), a group of three 1e3 away (spread 1) and a huge outlier:
    in the first pass the honest rows and the group are linked by unresolved entries (the
    outlier drags the mean 1e5 away); centred at their joint mean, the honest-to-group
    distances resolve but each block does not, and each block is then its own group."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 1.5, 70_000)
    honest = base + 1e-4 * rng.standard_normal((9, base.size))
    group = base + 1e3 + rng.standard_normal((3, base.size))
    outlier = 1e6 * rng.standard_normal((1, base.size))
    X = np.vstack([honest, group, outlier]).astype(np.float32)
    calls = _record_gram_passes(monkeypatch)
    D = pairwise_sq_distances(X)
    assert calls == [(False, None), (False, list(range(12))), (False, list(range(9))), (False, [9, 10, 11])]
    rel, zero = errors(D, direct_sq_distances(X))
    assert rel <= REL_TOL and zero <= ZERO_TOL


def test_what_no_gram_matrix_resolves_is_computed_directly():
    """Bit-identical huge rows (float32 products overflow whatever the centre): distance
    exactly 0, not inf; their distances to the other rows are finite and accurate."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((9, 64)).astype(np.float32)
    X[7] = 3e38 * rng.choice([-1.0, 1.0], 64).astype(np.float32)
    X[8] = X[7]
    D = pairwise_sq_distances(X)
    assert D[7, 8] == 0.0 and D[8, 7] == 0.0
    R = direct_sq_distances(X)
    assert np.all(np.isfinite(D))
    np.testing.assert_allclose(D, R, rtol=1e-5)
