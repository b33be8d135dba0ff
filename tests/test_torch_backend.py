"""The core on torch tensors (flwr_byz.aggregation.backend): every rule, pre-aggregator and
DETOX's vote, given a tensor, returns a tensor on the same device that equals what the NumPy
path returns on the same values, within float rounding (float64 references for the
distance kernels). The CUDA cases run where a GPU is present."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flwr_byz.aggregation import REGISTRY, PreAggregator, RobustAggregator
from flwr_byz.aggregation.backend import is_tensor
from flwr_byz.aggregation.detox import detox
from flwr_byz.aggregation.distances import pairwise_sq_distances, sq_distances_to
from flwr_byz.aggregation.preaggregation import adaptive_robust_clipping, bucketing, clip_norms, nearest_neighbor_mixing

from rule_inputs import round_inputs

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
N, F, D = 15, 3, 700  # Bulyan's 4f + 3 = 15


def _inputs(kind: str, dtype) -> np.ndarray:
    rng = np.random.default_rng(7)
    if kind == "random":
        return rng.normal(size=(N, D)).astype(dtype)
    if kind == "alie":  # nearly equal rows far from 0, the attackers' rows a shade apart (z = 1)
        honest = 100.0 + 1e-4 * rng.normal(size=(N - F, D))
        bad = honest.mean(axis=0) - honest.std(axis=0)
        return np.vstack([honest, np.tile(bad, (F, 1))]).astype(dtype)
    if kind == "outliers":  # two huge but finite rows
        X = rng.normal(size=(N, D))
        X[[2, 9]] = 1e30 * rng.choice([-1.0, 1.0], size=(2, D))
        return X.astype(dtype)
    raise AssertionError(kind)


def _kwargs(rule: str, X: np.ndarray) -> dict:
    kwargs = {} if rule == "mean" else {"f": F}
    if "seed" in REGISTRY[rule].params:
        kwargs["seed"] = 0
    return {**kwargs, **round_inputs(rule, X)}


def _close(a: np.ndarray, b: np.ndarray, dtype) -> None:
    """Equal within the float rounding of the inputs' precision, relative to the values' scale."""
    scale = max(float(np.max(np.abs(a))), 1e-30)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert np.all(np.abs(a - b) <= tol * scale), float(np.max(np.abs(a - b)) / scale)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["random", "alie", "outliers"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rule", sorted(REGISTRY))
def test_every_rule_on_a_tensor_equals_the_numpy_path(rule, kind, dtype, device):
    X = _inputs(kind, dtype)
    kwargs = _kwargs(rule, X)
    try:
        expected, report = REGISTRY[rule].fn(X, return_report=True, **kwargs)
    except ValueError as err:  # e.g. a rule that refuses huge rows: the tensor path must refuse them too
        with pytest.raises(type(err)):
            REGISTRY[rule].fn(torch.from_numpy(X).to(device), **kwargs)
        return
    got, got_report = REGISTRY[rule].fn(torch.from_numpy(X).to(device), return_report=True, **kwargs)
    assert is_tensor(got) and got.device.type == device and got.dtype == torch.from_numpy(X).dtype
    assert tuple(got.shape) == (D,)
    if report.selected is not None:  # the same clients chosen
        assert sorted(got_report.selected) == sorted(report.selected)
    _close(np.asarray(expected, dtype=np.float64), got.cpu().numpy().astype(np.float64), dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["random", "alie", "outliers"])
def test_distances_on_a_tensor_match_a_float64_reference(kind, device):
    X = _inputs(kind, np.float32)
    X64 = X.astype(np.float64)
    ref = ((X64[:, None, :] - X64[None, :, :]) ** 2).sum(axis=2)
    D_t = pairwise_sq_distances(torch.from_numpy(X).to(device))
    assert isinstance(D_t, np.ndarray) and D_t.dtype == np.float64
    spread = max(float(ref.max()), 1e-300)
    assert np.max(np.abs(D_t - ref)) <= 1e-6 * spread
    # nearly equal rows keep their true small distances (no float32 cancellation)
    nonzero = ref > 0
    assert np.all(np.abs(D_t[nonzero] - ref[nonzero]) <= 1e-5 * ref[nonzero] + 1e-6 * spread * (kind == "outliers"))
    v = X64.mean(axis=0).astype(np.float32)  # the distances to a float32 point, as the rules ask them
    got_v = sq_distances_to(torch.from_numpy(X).to(device), torch.from_numpy(v).to(device))
    assert np.allclose(got_v, ((X64 - v.astype(np.float64)) ** 2).sum(axis=1), rtol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_pre_aggregators_on_a_tensor_equal_the_numpy_path(device):
    X = _inputs("random", np.float32)
    T = torch.from_numpy(X).to(device)
    for fn, kwargs in ((clip_norms, {}), (clip_norms, {"threshold": 3.0}), (adaptive_robust_clipping, {"f": F}),
                       (nearest_neighbor_mixing, {"f": F})):
        got = fn(T, **kwargs)
        assert is_tensor(got) and got.device.type == device
        _close(fn(X, **kwargs).astype(np.float64), got.cpu().numpy().astype(np.float64), np.float32)
    Xb, buckets, wb = bucketing(X, s=2, seed=3, weights=np.arange(N) + 1.0)
    Tb, buckets_t, wb_t = bucketing(T, s=2, seed=3, weights=torch.arange(N) + 1.0)
    assert buckets_t == buckets and np.array_equal(wb_t, wb)
    _close(Xb.astype(np.float64), Tb.cpu().numpy().astype(np.float64), np.float32)


@pytest.mark.parametrize("device", DEVICES)
def test_robust_aggregator_and_detox_on_tensors(device):
    X = _inputs("alie", np.float32)
    T = torch.from_numpy(X).to(device)
    agg = RobustAggregator("krum", f=2, pre=[PreAggregator("nnm"), PreAggregator("bucketing", s=1, seed=0)])
    a, rep = agg(X)
    b, rep_t = agg(T)
    assert is_tensor(b) and b.device.type == device and rep_t.selected == rep.selected
    _close(a.astype(np.float64), b.cpu().numpy().astype(np.float64), np.float32)
    # DETOX: 5 groups of 3, the first two groups' members identical, a Byzantine member in each
    rng = np.random.default_rng(1)
    G = np.repeat(rng.normal(size=(5, D)).astype(np.float32), 3, axis=0)
    G[[0, 4]] = rng.normal(size=(2, D)) * 50
    groups = [[3 * g, 3 * g + 1, 3 * g + 2] for g in range(5)]
    for kwargs in ({"a1": "median"}, {"a1": "multi_krum", "tolerance": 1e-6}, {"a1": "mean", "a0": "median", "a0_subsets": 1}):
        expected, r1 = detox(G, groups, f=1, return_report=True, **kwargs)
        got, r2 = detox(torch.from_numpy(G).to(device), groups, f=1, return_report=True, **kwargs)
        assert is_tensor(got) and got.device.type == device and r2.selected == r1.selected
        _close(expected.astype(np.float64), got.cpu().numpy().astype(np.float64), np.float32)


def test_tensor_inputs_are_validated_like_arrays():
    bad = torch.ones(4, 5)
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="client 2"):
        REGISTRY["median"].fn(bad, f=1)
    with pytest.raises(ValueError, match="client 2"):
        REGISTRY["dnc"].fn(bad, f=1)  # a rule computed on the host says the same
    with pytest.raises(ValueError, match="2-D"):
        REGISTRY["krum"].fn(torch.ones(5), f=1)
    half = torch.arange(12, dtype=torch.float16).reshape(4, 3)  # other dtypes become float32
    assert REGISTRY["median"].fn(half, f=1).dtype == torch.float32
    assert REGISTRY["mda"].fn(half, f=1).dtype == torch.float32
    ints = torch.arange(12).reshape(4, 3)
    assert torch.equal(REGISTRY["median"].fn(ints, f=1), torch.tensor([4.5, 5.5, 6.5]))


def test_centred_clipping_takes_a_tensor_centre():
    X = _inputs("random", np.float32)
    c = np.full(D, 0.1, dtype=np.float32)
    expected = REGISTRY["centered_clipping"].fn(X, f=F, tau=1.0, iterations=3, center=c)
    got = REGISTRY["centered_clipping"].fn(torch.from_numpy(X), f=F, tau=1.0, iterations=3, center=torch.from_numpy(c))
    _close(expected.astype(np.float64), got.numpy().astype(np.float64), np.float32)


def _round(rule: str, device, *, momentum: float = 0.9, **params):
    """Three rounds of RobustRound on 9 replies (two Byzantine) of a two-array model."""
    from flwr_byz.strategies.robust_round import RobustRound

    rr = RobustRound(RobustAggregator(rule, f=2, **params), server_momentum=momentum,
                     use_history_center=REGISTRY[rule].stateful)
    rr.device = device  # what device="cuda" sets; "cpu" here runs the torch path on the CPU
    rng = np.random.default_rng(5)
    g = [np.zeros((3, 4), np.float32), np.zeros(5, np.float64)]
    for server_round in (1, 2, 3):
        replies = [(c, [a + rng.normal(scale=0.1, size=a.shape).astype(a.dtype) for a in g], None) for c in range(7)]
        replies += [(7 + k, [a - 5.0 for a in g], None) for k in range(2)]
        g, _, _ = rr.run(server_round, g, None, replies, {})
    return g, rr.history


@pytest.mark.parametrize("rule", ["krum", "trimmed_mean", "geometric_median", "centered_clipping", "dnc"])
def test_a_strategy_round_on_the_torch_path_gives_the_numpy_model(rule):
    params = {"seed": 0} if "seed" in REGISTRY[rule].params else {}
    expected, h1 = _round(rule, None, **params)
    got, h2 = _round(rule, "cpu", **params)
    assert [h["selected"] for h in h2] == [h["selected"] for h in h1]
    for a, b in zip(expected, got):
        assert isinstance(b, np.ndarray) and b.dtype == a.dtype  # new global arrays: host, the model's dtypes
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_device_option_resolves_and_refuses_clearly():
    from flwr_byz.aggregation.backend import resolve_device
    from flwr_byz.strategies import Krum

    assert resolve_device("cpu") is None and resolve_device(None) is None
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else None)
    with pytest.raises(ValueError, match="'cpu', 'cuda'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            Krum(num_malicious_nodes=1, device="cuda")
    assert Krum(num_malicious_nodes=1, device="auto").robust.device == resolve_device("auto")


@pytest.mark.parametrize("device", DEVICES)
def test_attack_statistics_on_a_tensor_equal_the_numpy_path(device):
    from flwr_byz.attacks import alie_update, inner_product_manipulation
    from flwr_byz.attacks.minmax import min_max, min_sum

    own = _inputs("alie", np.float64)[: N - F].astype(np.float32)  # nearly equal updates far from 0
    T = torch.from_numpy(own).to(device)
    for fn, kwargs in ((alie_update, {"z": 1.0}), (inner_product_manipulation, {"epsilon": 0.5}),
                       (min_max, {"direction": "std"}), (min_max, {"direction": "unit_vec", "method": "exact"}),
                       (min_max, {"direction": "sign"}), (min_sum, {"direction": "std"})):
        expected, got = fn(own, **kwargs), fn(T, **kwargs)
        assert is_tensor(got) and got.device.type == device and got.dtype == torch.float32
        _close(expected.astype(np.float64), got.cpu().numpy().astype(np.float64), np.float32)
    # ALIE's shift against a float64 reference: mu - z sigma (population sigma), per coordinate
    X64 = own.astype(np.float64)
    ref = X64.mean(axis=0) - 1.0 * X64.std(axis=0)
    np.testing.assert_allclose(alie_update(T, z=1.0).cpu().numpy(), ref.astype(np.float32), rtol=0, atol=2e-5)
    _, gamma = min_max(own, direction="std", return_gamma=True)
    _, gamma_t = min_max(T, direction="std", return_gamma=True)
    assert gamma_t == pytest.approx(gamma, rel=1e-4)


@pytest.mark.parametrize("n, f", [(7, 1), (9, 1), (11, 2)])
def test_selection_rules_choose_the_same_clients_on_tensors_where_ties_decide(n, f):
    """Small n: Bulyan's last Krum calls score each row by its one nearest neighbour, so two
    mutual nearest neighbours tie exactly; the tie goes to the lower index on both paths (a
    device Gram matrix that is not exactly symmetric used to break it by rounding)."""
    for seed in range(40):
        X = np.random.default_rng(seed).standard_normal((n, 30)).astype(np.float32)
        for rule in ("krum", "multi_krum", "bulyan"):
            _, rep = REGISTRY[rule].fn(X, f=f, return_report=True)
            _, rep_t = REGISTRY[rule].fn(torch.from_numpy(X), f=f, return_report=True)
            assert rep_t.selected == rep.selected, (rule, seed)
    X = np.random.default_rng(0).standard_normal((9, 30)).astype(np.float32)
    X[::3] = X[0]  # duplicates: Krum's lowest score is shared by rows 0, 3, 6: row 0 wins
    assert REGISTRY["krum"].fn(X, f=1, return_report=True)[1].selected == [0]
    assert REGISTRY["krum"].fn(torch.from_numpy(X), f=1, return_report=True)[1].selected == [0]
    D = pairwise_sq_distances(torch.from_numpy(X))
    assert np.array_equal(D, D.T) and D[0, 3] == D[0, 6] == 0.0


def test_tensor_inputs_of_host_rules_and_lazy_views():
    X = _inputs("random", np.float32)
    T = torch.from_numpy(X)
    H = X * 2.0  # a per-client history
    expected = REGISTRY["foolsgold"].fn(X, client_history=H)
    for updates in (X, T):  # a tensor history on either path
        got = REGISTRY["foolsgold"].fn(updates, client_history=torch.from_numpy(H))
        np.testing.assert_array_equal(np.asarray(got), expected)
    negated = torch.complex(T, T).conj().imag  # a lazily negated float32 view: the values of -X
    assert negated.is_neg()
    for rule in ("mda", "median", "dnc"):
        kwargs = {"f": 2, **({"seed": 0} if "seed" in REGISTRY[rule].params else {})}
        np.testing.assert_allclose(REGISTRY[rule].fn(negated, **kwargs).numpy(), REGISTRY[rule].fn(-X, **kwargs))
    with pytest.raises(ValueError, match="real-valued"):
        REGISTRY["mda"].fn(torch.complex(T, T).conj(), f=2)
    with pytest.raises(ValueError, match="dense"):
        REGISTRY["mda"].fn(T.to_sparse(), f=2)
    with pytest.raises(ValueError, match="dense"):
        REGISTRY["median"].fn(T.to_sparse(), f=2)


def test_subnormal_updates_keep_their_distances():
    """Updates so small that their float32 squares underflow: the distances come from
    float64 (the NumPy path used to see every distance as 0, so Krum chose row 0)."""
    X = (np.random.default_rng(3).standard_normal((9, 30)) * 1e-40).astype(np.float32)
    X64 = X.astype(np.float64)
    ref = ((X64[:, None, :] - X64[None, :, :]) ** 2).sum(axis=2)
    for M in (X, torch.from_numpy(X)):
        np.testing.assert_allclose(pairwise_sq_distances(M), ref, rtol=1e-6, atol=0)
    scores = np.sort(ref + np.diag(np.full(9, np.inf)), axis=1)[:, : 9 - 1 - 2].sum(axis=1)
    assert REGISTRY["krum"].fn(X, f=1, return_report=True)[1].selected == [int(np.argmin(scores))]
