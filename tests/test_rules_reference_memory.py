"""Defenses with server knowledge or memory (FLTrust, FoolsGold, FLAME) and the reputation
layer, against hand-computed cases and float64 references written from the papers'
algorithms (plain loops, independent of the vectorised code), then through the strategies
of both Flower APIs: state across rounds and across a resume (save_state / load_state).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from flwr_byz.aggregation import Reputation, RobustAggregator, flame, fltrust, foolsgold
from flwr_byz.aggregation.distances import cosine_distances

APIS = ["message", "legacy"]


def updates(seed, n, d, scale=1.0, offset=0.0):
    rng = np.random.default_rng(seed)
    return (offset + scale * rng.standard_normal((n, d))).astype(np.float32)


# --------------------------------------------------------------------------------------
# FLTrust (Cao et al., NDSS 2021, Algorithm 2)
# --------------------------------------------------------------------------------------


def _fltrust64(X, g0):
    """TS_i = ReLU(cos(g_i, g0)); g_i' = |g0| / |g_i| g_i; sum TS_i g_i' / sum TS_i."""
    X, g0 = np.asarray(X, np.float64), np.asarray(g0, np.float64)
    n0 = math.sqrt(sum(v * v for v in g0))
    num, total = np.zeros_like(g0), 0.0
    for x in X:
        nx = math.sqrt(sum(v * v for v in x))
        ts = max(sum(a * b for a, b in zip(x, g0)) / (nx * n0), 0.0) if nx > 0 and n0 > 0 else 0.0
        if ts > 0:
            num += ts * (n0 / nx) * x
            total += ts
    return num / total if total > 0 else num


def test_fltrust_hand_case():
    # g0 = (1, 0): (2, 0) has cos 1, (0, 3) cos 0, (-1, 0) cos -1, (1, 1) cos 1/sqrt(2)
    X = np.array([[2, 0], [0, 3], [-1, 0], [1, 1]], dtype=np.float32)
    agg, rep = fltrust(X, server_update=np.array([1.0, 0.0]), return_report=True)
    s = 1 / math.sqrt(2)
    expected = (np.array([1.0, 0.0]) + s * np.array([s, s])) / (1 + s)  # (0.8787, 0.2929)
    np.testing.assert_allclose(agg, expected, rtol=1e-6)
    np.testing.assert_allclose(rep.scores, [1.0, 0.0, 0.0, s], atol=1e-7)
    assert rep.selected == [0, 3]


@pytest.mark.parametrize("seed", range(6))
def test_fltrust_matches_the_float64_reference(seed):
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(3, 12)), int(rng.integers(1, 30))
    X = updates(seed, n, d, offset=0.3)
    X[: n // 3] *= -5  # flipped, larger
    g0 = rng.standard_normal(d) * 0.1 + 0.3
    np.testing.assert_allclose(fltrust(X, server_update=g0), _fltrust64(X, g0), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("magnitude", [1.0, 1e10, 1e30])
def test_fltrust_output_is_never_longer_than_the_server_update(magnitude):
    # whatever the clients send (any number of them, any size), |g| <= |g0|, and scaling a
    # client's update changes nothing (its magnitude is normalised away)
    X = updates(3, 9, 20)
    X[:6] = magnitude * updates(4, 6, 20)  # a malicious majority
    g0 = updates(5, 1, 20)[0].astype(np.float64)
    out = fltrust(X, server_update=g0)
    assert np.linalg.norm(out) <= np.linalg.norm(g0) * (1 + 1e-6)
    Y = X.copy()
    Y[7] *= 1000.0
    np.testing.assert_allclose(fltrust(Y, server_update=g0), out, rtol=1e-5, atol=1e-7)


def test_fltrust_keeps_the_model_when_nobody_agrees_with_the_server():
    X = np.array([[-1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    agg, rep = fltrust(X, server_update=[1.0, 0.0], return_report=True)
    np.testing.assert_array_equal(agg, [0.0, 0.0])
    assert rep.selected == [] and rep.details["notes"]
    np.testing.assert_array_equal(fltrust(X, server_update=[0.0, 0.0]), [0.0, 0.0])  # a zero anchor
    with pytest.raises(ValueError, match="server update"):
        fltrust(X, server_update=[1.0, np.nan])
    with pytest.raises(ValueError, match="length 2"):
        fltrust(X, server_update=[1.0, 0.0, 0.0])


# --------------------------------------------------------------------------------------
# FoolsGold (Fung, Yoon & Beschastnikh, RAID 2020, Algorithm 1)
# --------------------------------------------------------------------------------------


def _foolsgold_weights64(H, kappa=1.0):
    """Algorithm 1 as loops: cs with a zero diagonal, pardoning, 1 - max, rescaling, logit."""
    H = np.asarray(H, np.float64)
    n = len(H)
    norms = [math.sqrt(sum(v * v for v in h)) for h in H]
    cs = [[0.0 if i == j or norms[i] == 0 or norms[j] == 0 else
           sum(a * b for a, b in zip(H[i], H[j])) / (norms[i] * norms[j]) for j in range(n)] for i in range(n)]
    v = [max(row) for row in cs]
    for i in range(n):
        for j in range(n):
            if i != j and v[i] < v[j]:
                cs[i][j] *= v[i] / v[j]
    alpha = [min(max(1.0 - max(row), 0.0), 1.0) for row in cs]
    top = max(alpha)
    if top == 0:
        return np.zeros(n)
    out = []
    for a in alpha:
        a = a / top
        a = 0.99 if a == 1.0 else a
        w = kappa * (math.log(a / (1 - a)) + 0.5) if a > 0 else -math.inf
        out.append(min(max(w, 0.0), 1.0))
    return np.array(out)


def test_foolsgold_gives_a_sybil_pair_no_weight():
    # three honest clients with orthogonal histories, two sybils with the same one
    H = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 3]]
    agg, rep = foolsgold(H, return_report=True)
    np.testing.assert_array_equal(rep.scores, [1, 1, 1, 0, 0])
    np.testing.assert_allclose(agg, [1 / 3, 1 / 3, 1 / 3, 0], rtol=1e-6)
    assert rep.selected == [0, 1, 2]
    # the paper's plain sum (normalize=False)
    np.testing.assert_allclose(foolsgold(H, normalize=False), [1, 1, 1, 0], rtol=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_foolsgold_matches_the_float64_reference(seed):
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(3, 10)), int(rng.integers(2, 20))
    X = updates(seed, n, d, offset=0.2)
    H = X + updates(seed + 50, n, d, offset=0.2)  # an earlier round's sums
    H[1] = H[0] * 1.5 + 0.01  # a near-sybil of client 0
    alpha = _foolsgold_weights64(H)
    agg, rep = foolsgold(X, client_history=H, return_report=True)
    np.testing.assert_allclose(rep.scores, alpha, atol=1e-6)
    expected = (alpha[:, None] * X.astype(np.float64)).sum(axis=0) / alpha.sum() if alpha.any() else np.zeros(d)
    np.testing.assert_allclose(agg, expected, rtol=1e-5, atol=1e-6)


def test_foolsgold_pardons_an_honest_client_that_resembles_a_sybil():
    # client 2 has cosine c = 0.7 with the sybil pair (0, 1). Unpardoned, its weight would be
    # logit(1 - 0.7) < 0 -> 0; pardoning scales its similarity by v_2 / v_sybil = 0.7, so
    # alpha_2 = 1 - 0.49 = 0.51 and it keeps ln(0.51 / 0.49) + 0.5 = 0.54
    c = 0.7
    H = np.array([[1, 0, 0], [1, 0, 0], [c, math.sqrt(1 - c * c), 0], [0, 0, 1]], dtype=np.float64)
    w = foolsgold(H, return_report=True)[1].scores
    np.testing.assert_allclose(w, _foolsgold_weights64(H), atol=1e-9)
    np.testing.assert_allclose(w, [0, 0, math.log(0.51 / 0.49) + 0.5, 1], atol=1e-9)
    assert math.log(0.3 / 0.7) + 0.5 < 0  # what it would get without pardoning


# --------------------------------------------------------------------------------------
# FLAME (Nguyen et al., USENIX Security 2022, Algorithm 1)
# --------------------------------------------------------------------------------------


def _flame_case():
    """Seven models around a global model G: five benign updates along one direction, in
    two tight groups (2 and 3) a little apart, and two backdoor updates along another.

    HDBSCAN with min_cluster_size n // 2 + 1 = 4 and one cluster allowed admits the models
    that stay in the cluster until it dissolves: here the benign cluster splits into groups
    of 2 and 3, both under 4, so all five dissolve together and are admitted (a benign model
    that left the cluster earlier, alone, would be labelled noise)."""
    rng = np.random.default_rng(2)
    G = rng.standard_normal(40)
    benign = np.array([1.0] * 20 + [0.0] * 20) * 0.1
    shift = np.zeros(40)
    shift[20:25] = 0.01
    backdoor = np.array([0.0] * 20 + [1.0] * 20) * 0.3
    X = np.vstack([benign + shift + 0.0005 * rng.standard_normal(40) for _ in range(2)]
                  + [benign - shift + 0.0005 * rng.standard_normal(40) for _ in range(3)]
                  + [backdoor + 0.0005 * rng.standard_normal(40) for _ in range(2)])
    return X.astype(np.float32), G.astype(np.float32)


def test_flame_admits_only_models_that_stay_until_the_cluster_dissolves():
    # one benign model leaves the benign cluster alone, before it dissolves: noise
    X, G = _flame_case()
    X[4] += np.float32(0.1) * np.eye(40, dtype=np.float32)[0]
    assert flame(X, f=2, global_model=G, noise_lambda=0.0, return_report=True)[1].selected == [0, 1, 2, 3]


def test_flame_admits_the_benign_cluster_and_clips_to_the_median_norm():
    X, G = _flame_case()
    agg, rep = flame(X, f=2, global_model=G, noise_lambda=0.0, return_report=True)
    assert rep.selected == [0, 1, 2, 3, 4]
    X64 = X.astype(np.float64)
    norms = np.linalg.norm(X64, axis=1)
    s_t = np.median(norms)
    clipped = [x * min(1.0, s_t / e) for x, e in zip(X64[:5], norms[:5])]
    np.testing.assert_allclose(agg, np.mean(clipped, axis=0), rtol=1e-5, atol=1e-7)
    assert rep.details["clip_norm"] == pytest.approx(s_t, rel=1e-6)
    assert rep.details["noise_std"] == 0.0


def test_flame_noise_is_lambda_times_the_median_norm():
    rng = np.random.default_rng(0)
    X = (0.1 + 0.01 * rng.standard_normal((5, 200_000))).astype(np.float32)
    clean = flame(X, f=1, noise_lambda=0.0)
    noisy, rep = flame(X, f=1, noise_lambda=0.01, seed=(3, 1), return_report=True)
    sigma = 0.01 * np.median(np.linalg.norm(X.astype(np.float64), axis=1))
    assert rep.details["noise_std"] == pytest.approx(sigma, rel=1e-6)
    assert np.std(noisy.astype(np.float64) - clean) == pytest.approx(sigma, rel=0.02)
    np.testing.assert_array_equal(noisy, flame(X, f=1, noise_lambda=0.01, seed=(3, 1)))  # seeded


def test_model_cosine_distances_resolve_nearly_equal_models():
    # FLAME compares the models G + x_i: with a large G and ALIE-like updates, 1 - cos is
    # ~1e-10, far below float32's rounding of the models themselves
    rng = np.random.default_rng(8)
    G = rng.standard_normal(3000) * 10
    X = (0.01 + 1e-4 * rng.standard_normal((6, 3000))).astype(np.float32)
    W = G + X.astype(np.float64)
    U = W / np.linalg.norm(W, axis=1, keepdims=True)
    expected = 0.5 * ((U[:, None, :] - U[None, :, :]) ** 2).sum(axis=-1)
    got = cosine_distances(X, G)
    off = ~np.eye(6, dtype=bool)
    np.testing.assert_allclose(got[off], expected[off], rtol=1e-3)


# --------------------------------------------------------------------------------------
# Reputation (beta reputation with forgetting)
# --------------------------------------------------------------------------------------


def test_reputation_scores_exclusion_and_readmission():
    rep = Reputation(decay=0.9, threshold=0.3)
    assert rep.score("new") == 0.5
    rep.observe(["a", "b"], kept={"a"})
    assert rep.score("a") == pytest.approx(2 / 3) and rep.score("b") == pytest.approx(1 / 3)
    rep.observe(["a", "b"], kept={"a"})  # b: evidence against = 0.9 + 1 = 1.9 -> 1 / 3.9
    assert rep.score("b") == pytest.approx(1 / 3.9)
    assert rep.split(["a", "b", "c"], minimum=1) == (["a", "c"], ["b"])
    assert rep.split(["a", "b", "c"], minimum=3) == (["a", "b", "c"], [])  # never below the bound
    rounds_out = 0
    while rep.split(["a", "b"], minimum=1)[1]:  # out: no new evidence, the record fades
        rep.observe(["a"], kept={"a"})
        rounds_out += 1
    # 1.9 * 0.9^k <= 1 / 0.3 - 2 first at k = 4
    assert rounds_out == 4
    with pytest.raises(ValueError):
        Reputation(decay=0.0)
    with pytest.raises(ValueError):
        Reputation(threshold=1.0)
    with pytest.raises(ValueError):
        Reputation(mode="ban")


# --------------------------------------------------------------------------------------
# Through the strategies of both APIs: inputs, state across rounds and across a resume
# --------------------------------------------------------------------------------------


def _round(strategy, api, values, server_round, g=None):
    from fuzz_replies import one_array_round

    return one_array_round(strategy, api, values, server_round, g)


def _strategy(api, name, f, **kwargs):
    from fuzz_replies import strategy_of

    return strategy_of(api, name, f, **kwargs)


@pytest.fixture(autouse=True)
def _identity():
    from fuzz_replies import task_identity

    task_identity()


@pytest.mark.parametrize("api", APIS)
def test_fltrust_strategy_trains_the_server_update_each_round(api):
    calls = []
    step = np.array([0.3, -0.1, 0.2], dtype=np.float32)

    def server_update_fn(arrays):
        calls.append([a.copy() for a in arrays])
        return [arrays[0] + step]

    s = _strategy(api, "fltrust", 0, server_update_fn=server_update_fn)
    V = updates(1, 6, 3, offset=0.2)
    g = [np.array([1.0, 2.0, 3.0], np.float32)]
    out = _round(s, api, V, 1, g=g)
    np.testing.assert_allclose(out[0], g[0] + fltrust(V, server_update=step), rtol=1e-6)
    np.testing.assert_array_equal(calls[0][0], g[0])  # called on the round's global model
    assert "server_update_time_s" in s.history[-1]
    with pytest.raises(ValueError, match="server_update_fn"):
        _strategy(api, "fltrust", 0)


@pytest.mark.parametrize("api", APIS)
def test_fltrust_strategy_survives_a_failing_server_update(api):
    def broken(arrays):
        return [np.full_like(arrays[0], np.nan)]

    s = _strategy(api, "fltrust", 0, server_update_fn=broken)
    assert _round(s, api, updates(1, 5, 3), 1) is None
    assert "server update failed" in s.history[-1]["skipped"]


@pytest.mark.parametrize("api", APIS)
def test_flame_strategy_compares_models(api):
    X, G = _flame_case()
    s = _strategy(api, "flame", 2, seed=5)
    out = _round(s, api, X, 3, g=[G])
    expected = flame(X, f=2, global_model=G, seed=(5, 3))
    np.testing.assert_allclose(out[0], G + expected, rtol=1e-5, atol=1e-6)
    assert s.history[-1]["selected"] == ["1", "2", "3", "4", "5"]


@pytest.mark.parametrize("api", APIS)
def test_foolsgold_strategy_keeps_histories_across_rounds_and_a_resume(api, tmp_path):
    # round 1: clients 5 and 6 send the same update; round 2 they differ, but their sums
    # (the histories) stay alike, so FoolsGold still tells them apart
    r1 = updates(3, 6, 8, offset=0.1)
    r1[5] = r1[4] = np.eye(8, dtype=np.float32)[7] * 2
    r2 = updates(4, 6, 8, offset=0.1)
    r2[4] += np.eye(8, dtype=np.float32)[7]
    r2[5] += np.eye(8, dtype=np.float32)[7]
    s = _strategy(api, "foolsgold", 0)
    g1 = _round(s, api, r1, 1)
    np.testing.assert_allclose(g1[0], foolsgold(r1), rtol=1e-5, atol=1e-7)
    s.save_state(tmp_path / "state.npz")
    g2 = _round(s, api, r2, 2, g=g1)
    with_history = foolsgold(r2, client_history=r1 + r2)
    np.testing.assert_allclose(g2[0] - g1[0], with_history, rtol=1e-4, atol=1e-6)
    assert not np.allclose(with_history, foolsgold(r2), atol=1e-4)  # the history matters
    # a fresh strategy resumed from round 1's state continues identically
    resumed = _strategy(api, "foolsgold", 0)
    resumed.load_state(tmp_path / "state.npz")
    np.testing.assert_array_equal(_round(resumed, api, r2, 2, g=g1)[0], g2[0])
    assert [e["round"] for e in resumed.history] == [1, 2]
    with pytest.raises(ValueError, match="foolsgold"):
        _strategy(api, "median", 1).load_state(tmp_path / "state.npz")


@pytest.mark.parametrize("api", APIS)
def test_reputation_excludes_a_persistent_outlier_and_survives_a_resume(api, tmp_path):
    honest = updates(7, 6, 4, scale=0.05, offset=0.2)
    attacker = np.full((1, 4), -3.0, np.float32)
    V = np.vstack([honest, attacker])  # node 7 is the attacker
    m = {"num_nodes_to_select": None} if api == "message" else {}  # the paper's m = n - f
    s = _strategy(api, "multi_krum", 1, reputation=Reputation(decay=0.9, threshold=0.3), **m)
    g = [np.zeros(4, np.float32)]
    for rnd in (1, 2):
        g = _round(s, api, V, rnd, g=g)
        assert "excluded" not in s.history[-1]  # 1/3, then 1/3.9 < 0.3: out from round 3
    s.save_state(tmp_path / "rep.npz")
    key = "7"
    assert s.history[-1]["reputation"][key] == pytest.approx(1 / 3)
    g3 = _round(s, api, V, 3, g=g)
    assert s.history[-1]["excluded"] == [key]
    assert s.history[-1]["reputation"][key] == pytest.approx(1 / 3.9)
    # with the attacker out, Multi-Krum (m = n - f) runs on the six honest replies
    np.testing.assert_allclose(g3[0] - g[0], RobustAggregator("multi_krum", f=1, m=None)(honest)[0], rtol=1e-5)
    fresh = _strategy(api, "multi_krum", 1, reputation=Reputation(), **m)
    fresh.load_state(tmp_path / "rep.npz")
    _round(fresh, api, V, 3, g=g)
    assert fresh.history[-1]["excluded"] == [key]


def test_reputation_weight_mode_needs_a_rule_that_takes_weights():
    with pytest.raises(ValueError, match="weights"):
        _strategy("message", "median", 1, reputation=Reputation(mode="weight"))
    s = _strategy("message", "mean", 0, reputation=Reputation(mode="weight"))
    assert s.robust.reputation.mode == "weight"


def test_client_history_rules_refuse_bucketing():
    from flwr_byz.aggregation import PreAggregator

    with pytest.raises(ValueError, match="bucketing"):
        _strategy("message", "foolsgold", 0, pre_aggregators=[PreAggregator("bucketing", s=2)])


# --------------------------------------------------------------------------------------
# The server's root dataset (simulations and the Flower App)
# --------------------------------------------------------------------------------------


def test_root_sample_and_root_update():
    from flwr_byz.clients.root import RootUpdate, root_sample
    from flwr_byz.models import get_weights, make_model
    from flwr_byz.simulations.datasets import load_dataset

    idx = root_sample(1000, 100, seed=3)
    assert len(idx) == len(set(idx.tolist())) == 100 and idx.max() < 1000
    np.testing.assert_array_equal(idx, root_sample(1000, 100, seed=3))
    for bad in (0, 1001, 2.5, True):
        with pytest.raises(ValueError):
            root_sample(1000, bad, seed=0)
    data = load_dataset("digits", None)
    idx = root_sample(len(data.y_train), 100, seed=0)
    fn = RootUpdate("mlp", data.x_train[idx], data.y_train[idx], data.input_shape, data.num_classes, seed=0)
    w0 = get_weights(make_model("mlp", data.input_shape, data.num_classes, seed=0))
    trained = fn([w.copy() for w in w0])
    assert [a.shape for a in trained] == [a.shape for a in w0]
    assert any(not np.array_equal(a, b) for a, b in zip(trained, w0))  # it trained
    again = RootUpdate("mlp", data.x_train[idx], data.y_train[idx], data.input_shape, data.num_classes, seed=0)
    for a, b in zip(again([w.copy() for w in w0]), trained):  # deterministic per call number
        np.testing.assert_array_equal(a, b)


def test_root_size_belongs_to_fltrust():
    from flwr_byz.strategies.options import server_update_for, split_strategy_params

    _, options = split_strategy_params({"root_size": 50})
    with pytest.raises(ValueError, match="root_size"):
        server_update_for("median", dict(options), dataset="digits", data_root=None, model="mlp", seed=0, training={})
    server_update_for("fltrust", options, dataset="digits", data_root=None, model="mlp", seed=0, training={})
    assert callable(options["server_update_fn"]) and "root_size" not in options
    _, options = split_strategy_params({"reputation": {"decay": 0.8}})
    assert options["reputation"].decay == 0.8
    with pytest.raises(ValueError, match="reputation"):
        split_strategy_params({"reputation": {"forget": 1}})


def test_the_round_log_names_the_selected_partitions():
    """Node ids say nothing about data: the INFO line also gives the partitions the selected
    clients reported (simulation), when every one of them reported it."""
    from fuzz_replies import LogCapture

    s = _strategy("message", "multi_krum", 1, num_nodes_to_select=3)
    V = updates(2, 6, 4, offset=0.1)
    with LogCapture() as logs:
        _round(s, "message", V, 1)
    line = next(l for l in logs.lines if "aggregated" in l)
    # fuzz_replies' node k reports partition-id k
    assert f"(partitions {sorted(int(c) for c in s.history[-1]['selected'])})" in line


def test_detox_refuses_an_a1_that_needs_client_or_server_inputs():
    """A1 sees only the groups' winners: FLTrust (the server's update) and FoolsGold (each
    client's history) cannot run there, and say so at construction instead of skipping
    every round."""
    from flwr_byz import strategies as S
    from flwr_byz.aggregation.detox import DetoxAggregator

    for a1 in ("fltrust", "foolsgold"):
        with pytest.raises(ValueError, match=f"DETOX cannot run {a1} as A1"):
            S.Detox(group_size=3, a1=a1)
    assert DetoxAggregator(group_size=3, a1="flame").options["a1"] == "flame"  # its global model is optional



def test_the_cli_refuses_detox_with_such_an_a1_before_running(capsys):
    from flwr_byz.simulations.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--strategies", "detox-fltrust", "--attacks", "none", "--no-progress"])
    assert exc.value.code == 2 and "DETOX cannot run fltrust as A1" in capsys.readouterr().err
