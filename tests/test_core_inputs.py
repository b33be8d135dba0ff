"""Every rule leaves its input untouched, whatever the shape (a regression: an in-place
partition of a transposed view once reordered the caller's matrix when d = 1)."""

from __future__ import annotations

import numpy as np
import pytest

from rule_inputs import round_inputs
from flwr_byz.aggregation import RULES, RobustAggregator, nearest_neighbor_mixing, pairwise_sq_distances


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("d", [1, 3, 70_001])
def test_rules_do_not_modify_their_input(rule, d):
    X = np.random.default_rng(d).normal(size=(11, d)).astype(np.float32)
    X[0] *= 1e4  # far outlier: also exercises the median-centred distance pass
    before = X.copy()
    RobustAggregator(rule, f=0 if rule == "mean" else 2)(X, **round_inputs(rule, X))
    pairwise_sq_distances(X)
    nearest_neighbor_mixing(X, f=2)
    np.testing.assert_array_equal(X, before)
