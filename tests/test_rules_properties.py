"""Hypothesis property tests of the rules: permutation invariance, translation equivariance
and the breakdown bound under f arbitrary (huge) Byzantine updates.

Inputs are drawn as random normal float32 matrices from a drawn seed (so values, and the
distances between rows, are distinct almost surely: no ties), with n <= 15 and d <= 20.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rule_inputs import round_inputs
from flwr_byz.aggregation import (
    REGISTRY,
    RULES,
    bulyan,
    geometric_median,
    minimum_clients,
    multi_krum,
    nearest_neighbor_mixing,
)

FAST = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

ALL_RULES = sorted(RULES)


@st.composite
def problems(draw, rule, min_f=0, max_n=15, max_d=20, untied=False):
    """(X, f, rng) with n in [minimum_clients(rule, f), max_n].

    ``untied=True`` avoids the configurations where Krum scores with a single neighbour
    (n - f - 2 = 1, or Bulyan's last Krum calls with max(r - f - 2, 1) = 1 when f is 1 or
    2): there the two mutually nearest updates always have the same score, a tie that
    no input can avoid and that the rule breaks by client index.
    """
    if rule == "mean":
        f = 0
    else:
        fs = [f for f in range(min_f, 8) if minimum_clients(rule, f) <= max_n]
        if untied and rule == "bulyan":
            fs = [f for f in fs if f not in (1, 2)]
        f = draw(st.sampled_from(fs))
    low = max(minimum_clients(rule, f), 2)
    if untied and rule in ("krum", "multi_krum"):
        low = max(low, f + 4)
    n = draw(st.integers(low, max_n))
    d = draw(st.integers(1, max_d))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([1e-3, 1.0, 50.0]))
    rng = np.random.default_rng(seed)
    X = (scale * rng.standard_normal((n, d))).astype(np.float32)
    return X, f, rng


def _kwargs(rule, f):
    """f, and a fixed seed for a randomised rule (the same coordinate draws on both inputs)."""
    kwargs = {} if rule == "mean" else {"f": f}
    if "seed" in REGISTRY[rule].params:
        kwargs["seed"] = 0
    return kwargs


def _scale(X):
    return float(np.abs(X).max()) + 1e-30


# --------------------------------------------------------------------------------------
# Permutation invariance
# --------------------------------------------------------------------------------------


@FAST
@given(data=st.data(), rule=st.sampled_from(ALL_RULES))
def test_permutation_invariance(data, rule):
    X, f, rng = data.draw(problems(rule, untied=True))
    n = X.shape[0]
    perm = rng.permutation(n)
    kwargs = _kwargs(rule, f)
    if rule == "centered_clipping":
        kwargs.update(tau=float(np.median(np.linalg.norm(X, axis=1))), iterations=3)
    if rule == "signsgd_majority":
        kwargs.update(server_lr=0.5)
    kwargs.update(round_inputs(rule, X))  # FLTrust's server update: the same for both orders
    out, rep = RULES[rule](X, return_report=True, **kwargs)
    out_p, rep_p = RULES[rule](X[perm], return_report=True, **kwargs)
    tol = 1e-5 * _scale(X)
    if rule in ("krum", "multi_krum", "bulyan"):
        # the same clients are selected (indices mapped back through the permutation)
        assert sorted(perm[rep_p.selected].tolist()) == sorted(rep.selected)
    if rule in ("krum", "signsgd_majority", "median", "geometric_median"):
        np.testing.assert_array_equal(out_p, out)  # to the bit (see geometric_median's docstring)
    else:
        np.testing.assert_allclose(out_p, out, rtol=1e-5, atol=tol)


@FAST
@given(data=st.data())
def test_weighted_rules_permute_with_their_weights(data):
    X, f, rng = data.draw(problems("multi_krum", untied=True))
    n = X.shape[0]
    w = rng.uniform(0.1, 5.0, n)
    perm = rng.permutation(n)
    tol = 1e-5 * _scale(X)
    for fn, kw in ((RULES["mean"], {}), (multi_krum, {"f": f})):
        np.testing.assert_allclose(fn(X[perm], weights=w[perm], **kw), fn(X, weights=w, **kw),
                                   rtol=1e-5, atol=tol)
    np.testing.assert_array_equal(geometric_median(X[perm], f=f, weights=w[perm]), geometric_median(X, f=f, weights=w))


def test_geometric_median_is_order_independent_to_the_bit_with_ties():
    """Distinct rows tied on weight and on distance to the start (rows one ulp apart in a
    few coordinates often round to the same distance; so do huge rows) and bit-identical
    copies (ALIE's) leave the result, and the stopping iteration, independent of the order
    of the rows: swapping the tied rows gives the same bits."""
    from flwr_byz.aggregation.coordinate import coordinate_median
    from flwr_byz.aggregation.distances import distances_to

    tied_distinct = 0
    for seed in range(150):
        rng = np.random.default_rng(seed)
        X = rng.standard_normal((9, 64)).astype(np.float32)
        X[1] = X[0]
        for k in rng.choice(64, 3, replace=False):  # row 1: row 0 moved by one ulp in 3 places
            X[1, k] = np.nextafter(X[0, k], np.float32(np.inf))
        X[2] = X[3] = X[0] + np.float32(0.25)  # identical copies
        if seed % 3 == 0:  # two huge rows whose distances round alike
            X[7] = 3e38 * rng.choice([-1.0, 1.0], 64).astype(np.float32)
            X[8] = -X[7]
        dist = distances_to(X, coordinate_median(X))
        tied_distinct += int(dist[0] == dist[1]) + int(dist[7] == dist[8])
        out, rep = geometric_median(X, f=4, ftol=1e-7, return_report=True)
        for swap in ([1, 0], [8, 7], [3, 2]):
            perm = np.arange(9)
            perm[[swap[1], swap[0]]] = swap
            out_p, rep_p = geometric_median(X[perm], f=4, ftol=1e-7, return_report=True)
            np.testing.assert_array_equal(out_p, out)
            assert rep_p.details == rep.details
    assert tied_distinct >= 20  # the ties this test is about did occur


@FAST
@given(data=st.data())
def test_nearest_neighbor_mixing_is_permutation_equivariant(data):
    X, f, rng = data.draw(problems("median"))
    perm = rng.permutation(X.shape[0])
    np.testing.assert_allclose(nearest_neighbor_mixing(X[perm], f=f), nearest_neighbor_mixing(X, f=f)[perm],
                               rtol=1e-5, atol=1e-5 * _scale(X))


# --------------------------------------------------------------------------------------
# Translation equivariance: rule(X + c) == rule(X) + c
# --------------------------------------------------------------------------------------

# From the specs' flags (centered clipping clips around a fixed centre; signSGD's signs are not
# shift-equivariant); every rule flagged equivariant must pass.
EQUIVARIANT = sorted(n for n, spec in REGISTRY.items() if spec.translation_equivariant)


@FAST
@given(data=st.data(), rule=st.sampled_from(EQUIVARIANT))
def test_translation_equivariance(data, rule):
    X, f, rng = data.draw(problems(rule))
    shift = data.draw(st.sampled_from([1.0, 10.0, 100.0]))
    c = (shift * rng.standard_normal(X.shape[1])).astype(np.float32)
    Y = X + c  # float32: the shifted input itself carries a rounding of ~eps * |c|
    kwargs = _kwargs(rule, f)
    if rule == "geometric_median":
        kwargs.update(ftol=1e-10, maxiter=1000)  # compare the points, not stopping times
    out, rep = RULES[rule](X, return_report=True, **kwargs)
    out_y, rep_y = RULES[rule](Y, return_report=True, **kwargs)
    if rule in ("krum", "multi_krum", "bulyan", "mda"):
        assert rep_y.selected == rep.selected
    if rule == "krum":
        np.testing.assert_array_equal(out_y, Y[rep.selected[0]])
    spread = _scale(X - X.mean(axis=0))
    tol = 1e-6 * float(np.abs(c).max()) + 1e-5 * spread
    if rule == "geometric_median":
        tol += 1e-3 * spread
    np.testing.assert_allclose(out_y, out.astype(np.float64) + c, rtol=0, atol=tol)


# --------------------------------------------------------------------------------------
# Breakdown: f of the n rows replaced by huge arbitrary Byzantine updates
# --------------------------------------------------------------------------------------


@st.composite
def attacked(draw, rule):
    """(X, f, honest index list): f >= 1 rows at random positions replaced by outliers."""
    X, f, rng = draw(problems(rule, min_f=1))
    n, d = X.shape
    magnitude = 10.0 ** draw(st.integers(3, 30))
    kind = draw(st.sampled_from(["independent", "colluding", "one-coordinate", "mixed"]))
    if kind == "independent":
        B = magnitude * rng.standard_normal((f, d))
    elif kind == "colluding":  # f bit-identical copies
        B = np.tile(magnitude * rng.standard_normal(d), (f, 1))
    elif kind == "one-coordinate":  # honest-looking except for one huge coordinate
        B = X[rng.integers(0, n, f)].astype(np.float64)
        B[np.arange(f), rng.integers(0, d, f)] = magnitude * rng.choice([-1, 1], f)
    else:
        B = magnitude * rng.standard_normal((f, d)) * 10.0 ** rng.integers(-3, 1, (f, 1))
    byz = rng.choice(n, f, replace=False)
    X = X.copy()
    X[byz] = B.astype(np.float32)
    honest = sorted(set(range(n)) - set(byz.tolist()))
    return X, f, honest


@FAST
@given(data=st.data(), rule=st.sampled_from(["median", "trimmed_mean", "bulyan"]))
def test_coordinate_wise_output_stays_in_the_honest_range(data, rule):
    X, f, honest = data.draw(attacked(rule))
    H = X[honest]
    out = RULES[rule](X, f=f)
    assert np.all(out >= H.min(axis=0)) and np.all(out <= H.max(axis=0))


@FAST
@given(data=st.data(), rule=st.sampled_from(["krum", "multi_krum"]))
def test_krum_selects_only_honest_rows(data, rule):
    X, f, honest = data.draw(attacked(rule))
    kwargs = {"f": f}
    if rule == "multi_krum":
        kwargs["m"] = data.draw(st.integers(1, len(honest)))
    out, rep = RULES[rule](X, return_report=True, **kwargs)
    assert set(rep.selected) <= set(honest)
    if rule == "krum":
        np.testing.assert_array_equal(out, X[rep.selected[0]])
    else:
        np.testing.assert_allclose(out, X[rep.selected].mean(axis=0, dtype=np.float64),
                                   rtol=1e-5, atol=1e-5 * _scale(X[honest]))


def _weiszfeld64(H, iters=5000):
    v = np.median(H, axis=0)
    for _ in range(iters):
        dist = np.maximum(np.linalg.norm(H - v, axis=1), 1e-12)
        new = (H / dist[:, None]).sum(axis=0) / (1.0 / dist).sum()
        if np.linalg.norm(new - v) <= 1e-13 * (1.0 + np.linalg.norm(v)):
            return new
        v = new
    return v


@FAST
@given(data=st.data())
def test_geometric_median_stays_near_the_honest_points(data):
    """Bound: with h = n - f honest points, any g and r = max_{i honest} |x_i - g|, the
    geometric median z of all n points satisfies |z - g| <= 2 h r / (h - f).
    (Honest terms: |z - x_i| >= |z - g| - r; Byzantine terms: |z - x_j| >= |g - x_j| - |z - g|;
    and sum_i |z - x_i| <= sum_i |g - x_i| <= h r + sum_j |g - x_j|.)  We take g = the honest
    points' own geometric median (float64 Weiszfeld) and check the computed z against it,
    whatever the outliers' magnitude (up to 1e30)."""
    X, f, honest = data.draw(attacked("geometric_median"))
    H = X[honest].astype(np.float64)
    h = len(honest)
    g = _weiszfeld64(H)
    r = float(np.linalg.norm(H - g, axis=1).max())
    z = geometric_median(X, f=f).astype(np.float64)
    bound = 2.0 * h * r / (h - f)
    assert np.linalg.norm(z - g) <= bound * (1 + 1e-4) + 1e-6 * _scale(H)


@pytest.mark.xfail(strict=True, reason=(
    "Bulyan's last Krum calls score with max(r - f - 2, 1) = 1 neighbour when f is 1 or 2; "
    "the two mutually nearest remaining updates then tie and the lower client index wins, "
    "so the selected set (and the output) depends on the clients' order"))
def test_bulyan_permutation_invariance_with_one_neighbour_krum_calls():
    for seed in range(10):
        X = np.random.default_rng(seed).standard_normal((7, 3)).astype(np.float32)
        np.testing.assert_allclose(bulyan(X[::-1].copy(), f=1), bulyan(X, f=1), rtol=1e-5)


# The catalogue's filtering rules keep no Byzantine update that is far from the honest ones:
# with f arbitrary outliers (independent, colluding, one huge coordinate, mixed) the output
# is no longer than the longest honest update. (Clustering is left out: it compares
# directions only, docs/strategies.md; and DnC: its scores are taken around the mean of all
# updates, which two far outliers drag so far that the honest updates score as high as the
# nearer outlier: with n = 5, f = 2 in one dimension, {0, 0, 0, 362, 1304} keeps 362, as the
# paper's algorithm does; a hand case in tests/test_rules_reference_catalogue.py.)
FILTERS = ["monna", "smea", "caf", "signguard", "clipped_clustering", "mda"]


@FAST
@given(data=st.data(), rule=st.sampled_from(FILTERS))
def test_filtering_rules_stay_within_the_honest_norms(data, rule):
    X, f, honest = data.draw(attacked(rule))
    kwargs = {"seed": 0} if rule in ("dnc", "signguard") else {}
    out = RULES[rule](X, f=f, **kwargs)
    H = X[honest].astype(np.float64)
    assert np.isfinite(out).all()
    assert np.linalg.norm(out) <= np.linalg.norm(H, axis=1).max() * (1 + 1e-5) + 1e-6
