"""Agreement with ByzFL (LPD-EPFL's library) on shared inputs, for every rule and
pre-aggregator both libraries implement. ByzFL is in the ``dev`` extra; without it these
tests are skipped.

Convention differences (each documented in the rule's docstring and docs/strategies.md):
- MDA: among subsets of equal diameter ByzFL keeps the first in index order, flwr-byz the
  tightest (order-independent); they agree when the minimum is unique (f = 1 on random
  data) and always have the same diameter.
- SMEA and CAF: ByzFL estimates each top eigenvalue with one power-method step from a
  random vector; flwr-byz computes it exactly. They agree where that step is exact (d = 1).
  CAF is not compared: from its second step on, ByzFL's weight update divides by the
  largest score of *all* updates, an update already at weight 0 included (flwr-byz: of
  the weighted ones, see ``caf``), and its loop only ends once the sum of the weights falls
  to n - 2f, which takes a second step on every input tried.
- MoNNA: ByzFL's pivot is update ``idx``; flwr-byz's ``idx`` argument is the same.
- Krum and Multi-Krum: ByzFL scores each update by its n - f - 1 nearest others, the paper
  (and flwr-byz) by n - f - 2, so ByzFL's ``Krum(f)`` is flwr-byz's ``krum(f=f - 1)``;
  ByzFL's Multi-Krum averages the n - f best (flwr-byz: ``m``, default 1 as Flower).
"""

from __future__ import annotations

import numpy as np
import pytest

byzfl = pytest.importorskip("byzfl")

from flwr_byz.aggregation import (  # noqa: E402
    adaptive_robust_clipping,
    krum,
    mda,
    meamed,
    median,
    monna,
    multi_krum,
    nearest_neighbor_mixing,
    smea,
    trimmed_mean,
)
from flwr_byz.aggregation.distances import sq_distances_to  # noqa: E402

SEEDS = range(6)


def inputs(seed, n=11, d=7):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    X[: 2] += 5 * rng.standard_normal(d)  # two outliers
    return X


def same(ours, theirs):
    np.testing.assert_allclose(np.asarray(ours, np.float64), np.asarray(theirs, np.float64), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("f", [1, 2, 3])
def test_coordinate_and_distance_rules_agree(seed, f):
    X = inputs(seed)
    n = len(X)
    same(median(X, f=f), byzfl.Median()(X))
    same(trimmed_mean(X, f=f), byzfl.TrMean(f)(X))
    same(meamed(X, f=f), byzfl.Meamed(f)(X))
    # ByzFL scores with the n - f - 1 nearest others, the paper with n - f - 2: ByzFL's f is
    # flwr-byz's f + 1 for the score (Multi-Krum still averages ByzFL's n - f best)
    same(krum(X, f=f - 1), byzfl.Krum(f)(X))
    same(multi_krum(X, f=f - 1, m=n - f), byzfl.MultiKrum(f)(X))
    for idx in (0, 4):
        same(monna(X, f=f, idx=idx), byzfl.MoNNA(f, idx)(X))
    same(nearest_neighbor_mixing(X, f=f), byzfl.NNM(f)(X))
    same(adaptive_robust_clipping(X, f=f), byzfl.ARC(f)(X))


def _diameter(X, mean_of_subset):
    """The diameter of the subset whose mean is given (found among all subsets)."""
    import itertools

    n = len(X)
    for k in range(n, 0, -1):
        for s in itertools.combinations(range(n), k):
            if np.allclose(X[list(s)].mean(axis=0), mean_of_subset, rtol=1e-12, atol=1e-12):
                return max(sq_distances_to(X[list(s)], X[i]).max() for i in s), k
    raise AssertionError("no subset has this mean")


@pytest.mark.parametrize("seed", SEEDS)
def test_mda_agrees(seed):
    X = inputs(seed, n=9, d=4)
    same(mda(X, f=1), byzfl.MDA(1)(X))  # unique minimum
    ours, rep = mda(X, f=3, return_report=True)
    theirs = np.asarray(byzfl.MDA(3)(X))
    diameter, k = _diameter(X, theirs)
    assert k == 6 and diameter == pytest.approx(rep.details["diameter"] ** 2, rel=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("f", [1, 2, 3])
def test_smea_agrees_in_one_dimension(seed, f):
    X = inputs(seed, n=9, d=1)
    same(smea(X, f=f), byzfl.SMEA(f)(X))
