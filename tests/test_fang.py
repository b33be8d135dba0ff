"""Fang et al.'s attacks (USENIX Security 2020) against a reference written from the paper:
the crafted values' intervals per coordinate, the Krum lambda bound by hand, and the
search's result checked by running Krum."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flwr_byz.aggregation import krum, trimmed_mean
from flwr_byz.attacks import fang_krum, fang_trimmed_mean
from flwr_byz.attacks.fang import krum_lambda_bound


def _intervals64(X, b):
    """Per coordinate, the paper's interval (in update terms), from plain loops."""
    X = np.asarray(X, np.float64)
    out = []
    for j in range(X.shape[1]):
        col = list(X[:, j])
        mean, hi, lo = sum(col) / len(col), max(col), min(col)
        if mean < 0:  # s_j = -1: beyond the largest benign value
            out.append((hi, b * hi) if hi > 0 else (hi, hi / b))
        elif mean > 0:  # s_j = 1: beyond the smallest
            out.append((lo / b, lo) if lo > 0 else (b * lo, lo))
        else:
            out.append((mean, mean))
    return out


def test_fang_trimmed_mean_hand_case():
    X = np.array([[1.0, -1.0, 0.5, -2.0], [3.0, -2.0, 1.5, 4.0]], np.float32)
    # means 2, -1.5, 1, 1: s = (1, -1, 1, 1); intervals [0.5, 1], [-1, -0.5], [0.25, 0.5], [-4, -2]
    assert _intervals64(X, 2.0) == [(0.5, 1.0), (-1.0, -0.5), (0.25, 0.5), (-4.0, -2.0)]
    for seed in range(20):
        u = fang_trimmed_mean(X, rng=seed)
        for v, (a, c) in zip(u, _intervals64(X, 2.0)):
            assert min(a, c) - 1e-6 <= v <= max(a, c) + 1e-6


def test_fang_trimmed_mean_draws_are_per_attacker_and_reproducible():
    rng = np.random.default_rng(0)
    X = (0.1 + rng.standard_normal((6, 200))).astype(np.float32)
    a, b = fang_trimmed_mean(X, rng=(1, 5, 0)), fang_trimmed_mean(X, rng=(1, 5, 1))
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, fang_trimmed_mean(X, rng=(1, 5, 0)))
    for v, (lo, hi) in zip(a, _intervals64(X, 2.0)):
        assert min(lo, hi) - 1e-6 <= v <= max(lo, hi) + 1e-6
    with pytest.raises(ValueError, match="b must be > 1"):
        fang_trimmed_mean(X, b=1.0)


def test_fang_trimmed_mean_pushes_the_trimmed_mean_against_the_benign_direction():
    rng = np.random.default_rng(1)
    H = (0.2 + rng.standard_normal((15, 300))).astype(np.float32)
    f = 5
    crafted = np.stack([fang_trimmed_mean(H[:f], rng=i) for i in range(f)])  # partial knowledge: own updates
    s = np.sign(H[:f].astype(np.float64).mean(axis=0))
    shift = trimmed_mean(np.vstack([H, crafted]), f=f).astype(np.float64) - trimmed_mean(
        np.vstack([H, H[:f]]), f=f)  # against the same round with the attackers honest
    assert np.mean(np.sign(shift) == -s) > 0.9


def test_krum_lambda_bound_by_hand():
    # 1-D, k = 4 benign updates 0, 1, 3, 6; c = 1 crafted: n = 5, n - f - 2 = 2 neighbours
    X = np.array([[0.0], [1.0], [3.0], [6.0]], np.float32)
    # sums of the 2 smallest distances: 0: 1 + 3 = 4; 1: 1 + 2 = 3; 3: 2 + 3 = 5; 6: 3 + 5 = 8
    # bound = min / ((n - 2f - 1) sqrt(d)) + max |x_i| / sqrt(d) = 3 / 2 + 6
    assert krum_lambda_bound(X, 1, 5) == pytest.approx(7.5)


def test_fang_krum_gets_its_crafted_update_selected_with_the_largest_halved_lambda():
    rng = np.random.default_rng(2)
    X = (0.02 + 0.05 * rng.standard_normal((10, 60))).astype(np.float32)
    update, lam = fang_krum(X, f=10)
    s = np.sign(X.astype(np.float64).mean(axis=0))
    np.testing.assert_allclose(update, -lam * s, rtol=1e-6)
    c = 10 - 3  # the largest c with k + c >= 2c + 3
    bound = krum_lambda_bound(X, c, 10 + c)
    assert 0 < lam <= bound
    k = round(math.log2(bound / lam))
    assert lam == pytest.approx(bound / 2**k)  # halved from the bound

    def selected(l):
        rows = np.vstack([X, np.tile((-l * s).astype(np.float32), (c, 1))])
        _, rep = krum(rows, f=c, return_report=True)
        return rep.selected[0] >= 10

    assert selected(lam) and (k == 0 or not selected(2 * lam))
    # two attackers know two updates: the simulated round repeats them to 4 rows (c = 1)
    two, lam2 = fang_krum(X[:2], f=2)
    assert lam2 == pytest.approx(fang_krum(X[[0, 1, 0, 1]], f=1)[1])


def test_fang_clients_collude(tmp_path):
    from test_clients import StepClient, _global

    from flwr_byz.clients import Collusion, MaliciousClient

    coll = Collusion(range(5), StepClient, store_dir=tmp_path)
    krum_replies = [MaliciousClient(StepClient(p), "fang_krum", collusion=coll, num_clients=12,
                                    num_malicious=5).fit(_global(), {"server-round": 1}) for p in range(5)]
    flat = [np.concatenate([a.ravel() for a in r[0]]) for r in krum_replies]
    assert all(np.array_equal(flat[0], v) for v in flat[1:]) and "attack.scale" in krum_replies[0][2]
    def client(p):
        c = StepClient(p)
        c.partition_id = p  # what TorchClient has: each attacker's draw is seeded by it
        return c

    trm = [MaliciousClient(client(p), "fang_trimmed_mean", collusion=coll, num_clients=12, num_malicious=5,
                           seed=3).fit(_global(), {"server-round": 1}) for p in range(2)]
    assert not np.array_equal(np.concatenate([a.ravel() for a in trm[0][0]]),
                              np.concatenate([a.ravel() for a in trm[1][0]]))  # independent draws
