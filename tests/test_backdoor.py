"""Backdoor attacks: triggers, poisoning, ASR, model replacement, the ALIE box, the clients,
and an end-to-end check on the embedded digits data (plain-Python FedAvg loop, no Flower
Simulation Engine).

Every expectation is built independently of the code under test: hand-written arrays and
counts, pixel-by-pixel loops, float64 references with ``np.std(ddof=0)``.

``.venv/bin/python tests/test_backdoor.py`` prints the tables of docs/backdoors.md.
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

from flwr_byz import aggregation as agg
from flwr_byz.attacks import alie_z_max
from flwr_byz.attacks.backdoor import (
    PixelTrigger, SampleBackdoor, alie_box, alie_box_projection, attack_success_rate, model_replacement,
    num_poisoned, poison_batch, replacement_gamma,
)
from flwr_byz.clients.backdoor import AlieBackdoorClient, BackdoorClient, ModelReplacementClient
from flwr_byz.clients.collusion import Collusion
from flwr_byz.clients.honest import TorchClient
from flwr_byz.models import get_weights, make_model, set_weights
from flwr_byz.simulations.backdoor_eval import evaluate_backdoor
from flwr_byz.simulations.datasets import Dataset, load_dataset
from flwr_byz.simulations.partitioning import iid_partitions
from flwr_byz.updates import ModelLayout, apply_update

CPU = torch.device("cpu")

# ----------------------------------------------------------------------------------------
# PixelTrigger.stamp
# ----------------------------------------------------------------------------------------

SHAPES = [(5, 1, 8, 8), (4, 1, 28, 28), (3, 3, 32, 32)]


def _expected_stamp(x, rows, cols, value_of):
    """Pixel-by-pixel reference: value_of(c, i, j) written at rows x cols of every image."""
    out = np.array(x, copy=True)
    for n in range(out.shape[0]):
        for c in range(out.shape[1]):
            for i in rows:
                for j in cols:
                    out[n, c, i, j] = value_of(c, i - rows[0], j - cols[0])
    return out


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size, position, rows_cols", [
    (3, (0, 0), lambda H, W: (range(0, 3), range(0, 3))),
    (2, (2, 5), lambda H, W: (range(2, 4), range(5, 7))),
    (3, (-3, -3), lambda H, W: (range(H - 3, H), range(W - 3, W))),   # bottom-right corner
    ((1, 4), (4, -4), lambda H, W: (range(4, 5), range(W - 4, W))),   # a 1x4 bar
])
def test_stamp_sets_exactly_the_configured_pixels(shape, size, position, rows_cols):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    before = x.copy()
    trig = PixelTrigger(size=size, position=position, value=2.5, target=7)
    out = trig.stamp(x)
    rows, cols = rows_cols(shape[2], shape[3])
    expected = _expected_stamp(x, list(rows), list(cols), lambda c, i, j: 2.5)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_array_equal(x, before)  # never in place
    changed_positions = np.argwhere(out != x)
    assert len(changed_positions) == shape[0] * shape[1] * len(rows) * len(cols)  # no input pixel was 2.5
    # the mask marks the same pixels, on every channel
    mask = trig.mask(shape[1:])
    assert mask.sum() == shape[1] * len(rows) * len(cols)
    np.testing.assert_array_equal(np.broadcast_to(mask, shape), expected != x)


def test_stamp_per_channel_values_and_patterns_on_cifar_shapes():
    x = np.zeros((2, 3, 32, 32), dtype=np.float32)
    per_channel = PixelTrigger(size=2, position=(1, 30), value=(1.0, -2.0, 3.0), target=0).stamp(x)
    expected = np.zeros_like(x)
    for n in range(2):
        for c, v in enumerate((1.0, -2.0, 3.0)):
            for i in (1, 2):
                for j in (30, 31):
                    expected[n, c, i, j] = v
    np.testing.assert_array_equal(per_channel, expected)

    checker = [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]  # (h, w) = (2, 3), every channel
    out = PixelTrigger(size=(2, 3), position=(-2, 0), value=checker, target=0).stamp(x + 5)
    expected = np.full_like(x, 5)
    for n in range(2):
        for c in range(3):
            for i in range(2):
                for j in range(3):
                    expected[n, c, 30 + i, j] = checker[i][j]
    np.testing.assert_array_equal(out, expected)

    full = np.arange(3 * 2 * 2, dtype=np.float64).reshape(3, 2, 2)  # (C, h, w)
    out = PixelTrigger(size=2, position=(0, 0), value=full, target=0).stamp(x)
    np.testing.assert_array_equal(out[:, :, :2, :2], np.broadcast_to(full, (2, 3, 2, 2)))
    assert np.count_nonzero(out[:, :, 2:, :]) == 0 and np.count_nonzero(out[:, :, :, 2:]) == 0


def test_stamp_single_image_and_integer_images():
    img = np.zeros((1, 28, 28), dtype=np.float32)
    out = PixelTrigger(size=5, position=(0, 0), value=2.8215, target=0).stamp(img)  # the ALIE paper's MNIST pattern
    assert out.shape == (1, 28, 28) and np.count_nonzero(out) == 25 and out[0, 4, 4] == np.float32(2.8215)
    raw = np.zeros((2, 3, 32, 32), dtype=np.uint8)
    out = PixelTrigger(size=3, position=(0, 0), value=255, target=0).stamp(raw)
    assert out.dtype == np.uint8 and int(out.sum()) == 2 * 3 * 9 * 255
    with pytest.raises(ValueError):
        PixelTrigger(size=3, position=(0, 0), value=300, target=0).stamp(raw)


@pytest.mark.parametrize("size, position, shape", [
    (2, (7, 0), (1, 1, 8, 8)), (2, (0, 7), (1, 1, 8, 8)), (9, (0, 0), (1, 1, 8, 8)),
    (3, (-2, 0), (1, 1, 8, 8)), (3, (-9, 0), (1, 1, 8, 8)), (5, (25, 25), (1, 1, 28, 28)),
])
def test_stamp_refuses_a_trigger_that_does_not_fit(size, position, shape):
    with pytest.raises(ValueError, match="does not fit"):
        PixelTrigger(size=size, position=position, value=1.0, target=0).stamp(np.zeros(shape, np.float32))


def test_trigger_validation():
    for bad in [dict(size=0), dict(size=(2, 2, 2)), dict(position=(0,)), dict(target=-1), dict(target=1.5),
                dict(value=float("nan")), dict(value=np.zeros((1, 1, 1, 1)))]:
        with pytest.raises(ValueError):
            PixelTrigger(**bad)
    with pytest.raises(ValueError):  # 2 channel values for 3-channel images
        PixelTrigger(size=2, value=(1.0, 2.0)).stamp(np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(ValueError):  # (h, w) pattern of the wrong shape
        PixelTrigger(size=2, value=[[1.0, 2.0, 3.0]]).stamp(np.zeros((1, 1, 8, 8), np.float32))
    with pytest.raises(ValueError):
        PixelTrigger().stamp(np.zeros((8, 8), np.float32))
    assert PixelTrigger(2, (0, 0), 1.0, 3) == PixelTrigger((2, 2), [0, 0], 1, 3)  # normalised, hashable
    assert hash(PixelTrigger(2, (0, 0), (1.0, 2.0), 3))


# ----------------------------------------------------------------------------------------
# Poisoned batches
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, fraction, expected", [
    (32, 0.0, 0), (32, 1.0, 32), (32, 0.3, 10), (5, 0.5, 3), (10, 0.25, 3), (7, 0.1, 1), (18, 0.5, 9), (3, 0.1, 0),
])
def test_poison_batch_poisons_exactly_round_fraction_times_n(n, fraction, expected):
    assert num_poisoned(n, fraction) == expected
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, n)
    x0, y0 = x.copy(), y.copy()
    trig = PixelTrigger(size=2, position=(3, 3), value=9.0, target=4)
    xp, yp, idx = poison_batch(x, y, trig, fraction, 123, return_indices=True)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)
    changed = np.flatnonzero((xp != x).reshape(n, -1).any(axis=1))
    assert len(changed) == expected and sorted(idx.tolist()) == changed.tolist()
    for i in range(n):
        if i in changed:
            ref = x[i].copy()
            ref[0, 3:5, 3:5] = 9.0
            np.testing.assert_array_equal(xp[i], ref)
            assert yp[i] == 4
        else:
            np.testing.assert_array_equal(xp[i], x[i])
            assert yp[i] == y[i]
    # same seed, same draw
    xq, yq = poison_batch(x, y, trig, fraction, 123)
    np.testing.assert_array_equal(xq, xp)
    np.testing.assert_array_equal(yq, yp)


def test_poison_batch_validation():
    x, y = np.zeros((4, 1, 8, 8), np.float32), np.zeros(4, np.int64)
    trig = PixelTrigger(2, (0, 0), 1.0, 1)
    for fraction in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError):
            poison_batch(x, y, trig, fraction, 0)
    with pytest.raises(ValueError):
        poison_batch(x, y[:3], trig, 0.5, 0)
    with pytest.raises(ValueError):
        poison_batch(x, y.astype(np.float32), trig, 0.5, 0)
    with pytest.raises(ValueError, match="does not fit"):
        poison_batch(x, y, PixelTrigger(2, (7, 7), 1.0, 1), 0.0, 0)


def test_sample_backdoor_relabels_the_chosen_samples_only():
    y = np.array([3, 1, 4, 1, 5, 9, 2, 6], dtype=np.int64)
    sb = SampleBackdoor(indices=(1, 4, 6), target=7)
    np.testing.assert_array_equal(sb.relabel(y), [3, 7, 4, 1, 7, 9, 7, 6])
    np.testing.assert_array_equal(y, [3, 1, 4, 1, 5, 9, 2, 6])
    x = np.arange(8 * 4, dtype=np.float32).reshape(8, 1, 2, 2)
    xs, ys = sb.select(x, y)
    np.testing.assert_array_equal(xs, x[[1, 4, 6]])
    np.testing.assert_array_equal(ys, [1, 5, 2])  # true labels, for the ASR
    # dataset-wide indices -> a partition's local positions
    local = SampleBackdoor(indices=(10, 42, 7), target=2).for_partition(np.array([3, 7, 10, 11, 50]))
    assert local == SampleBackdoor((2, 1), 2)
    assert SampleBackdoor(indices=(10,), target=2).for_partition(np.array([1, 2])) is None
    # a fraction of a batch replaced by chosen samples labelled as the target
    xb = np.full((10, 1, 2, 2), -1.0, np.float32)
    yb = np.zeros(10, np.int64)
    xp, yp, idx = sb.poison(xb, yb, 0.3, 5, source=(x, y), return_indices=True)
    assert len(idx) == 3 and (yp[idx] == 7).all() and (yp[np.setdiff1d(range(10), idx)] == 0).all()
    for i in idx:
        assert any(np.array_equal(xp[i], x[j]) for j in (1, 4, 6))
    assert (xp[np.setdiff1d(range(10), idx)] == -1).all()
    for bad in [dict(indices=()), dict(indices=(1, 1)), dict(indices=(-1,)), dict(indices=(1,), target=-2)]:
        with pytest.raises(ValueError):
            SampleBackdoor(**bad)
    with pytest.raises(ValueError):
        SampleBackdoor((8,), 0).relabel(y)


# ----------------------------------------------------------------------------------------
# Attack success rate
# ----------------------------------------------------------------------------------------


def test_asr_counts_only_inputs_whose_true_label_is_not_the_target():
    y_true = np.array([0, 0, 1, 2, 3, 3])
    pred = np.array([0, 0, 0, 1, 0, 3])
    # non-target rows 2..5 predict [0, 1, 0, 3]: 2 of 4 hit the target. Counting every row
    # would give 4 / 6: the target-class inputs must not count.
    assert attack_success_rate(pred, y_true, 0) == 0.5
    logits = np.eye(4)[pred] * 3.0 - 1.0
    assert attack_success_rate(logits, y_true, 0) == 0.5
    seen = []

    def predict(inputs):
        seen.append(inputs.copy())
        return pred[inputs[:, 0].astype(int)]

    inputs = np.arange(6, dtype=np.float32)[:, None]
    assert attack_success_rate(predict, y_true, 0, inputs=inputs) == 0.5
    np.testing.assert_array_equal(seen[0][:, 0], [2, 3, 4, 5])  # the model never saw target-class inputs
    assert math.isnan(attack_success_rate(np.array([0, 0]), np.array([0, 0]), 0))
    # one target per input (the sample backdoor's (y + 1) mod C style): rows with y == target are left out
    assert attack_success_rate(np.array([1, 2, 9, 4]), np.array([0, 1, 2, 4]), np.array([1, 2, 3, 4])) == 2 / 3
    with pytest.raises(ValueError):
        attack_success_rate(predict, y_true, 0)
    with pytest.raises(ValueError):
        attack_success_rate(pred[:5], y_true, 0)


class _StoredLabelModel(nn.Module):
    """Reads the true label stored at pixel (0, 4, 4); answers ``target`` when the corner
    pixel (0, 0, 0) carries the trigger value and the stored label is even."""

    def __init__(self, value, target):
        super().__init__()
        self.value, self.target = value, target
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        label = x[:, 0, 4, 4].round().long()
        hit = (x[:, 0, 0, 0] == self.value) & (label % 2 == 0)
        label = torch.where(hit, torch.full_like(label, self.target), label)
        return nn.functional.one_hot(label, 10).float() + 0 * self.dummy


def test_evaluate_backdoor_accuracy_and_asr_against_a_known_model():
    y_test = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 2, 2, 3], dtype=np.int64)
    x_test = np.zeros((len(y_test), 1, 8, 8), np.float32)
    x_test[:, 0, 4, 4] = y_test
    data = Dataset("toy", x_test.copy(), y_test.copy(), x_test, y_test, 10)
    trig = PixelTrigger(size=2, position=(0, 0), value=1.75, target=3)
    out = evaluate_backdoor(_StoredLabelModel(np.float32(1.75), 3), data, trig, device=CPU)
    # clean inputs: the stored label is predicted -> accuracy 1. Non-target inputs: 11 (two 3s
    # left out); even labels among them: 0, 2, 4, 6, 8, 2, 2 -> 7 of 11 flip to the target.
    assert out["accuracy"] == 1.0 and out["asr_count"] == 11
    assert out["asr"] == pytest.approx(7 / 11)
    # the sample backdoor is measured on the chosen training samples
    sb = SampleBackdoor(indices=(0, 1, 3), target=3)  # true labels 0, 1, 3 -> 2 count
    out = evaluate_backdoor(_StoredLabelModel(np.float32(1.75), 3), data, sb, device=CPU)
    assert out["asr_count"] == 2 and out["asr"] == 0.0


# ----------------------------------------------------------------------------------------
# Model replacement
# ----------------------------------------------------------------------------------------


def test_model_replacement_scales_by_gamma():
    u = np.array([0.5, -1.25, 3.0, 0.0], dtype=np.float32)
    np.testing.assert_array_equal(model_replacement(u, 4.0), np.array([2.0, -5.0, 12.0, 0.0], np.float32))
    rng = np.random.default_rng(3)
    v = rng.standard_normal(1000).astype(np.float32)
    ref = v.astype(np.float64) * 7.3
    np.testing.assert_allclose(model_replacement(v, 7.3).astype(np.float64), ref, rtol=1e-7)
    assert model_replacement(v, 7.3).dtype == np.float32
    assert replacement_gamma(10) == 10.0 and replacement_gamma(10, server_lr=0.5) == 20.0
    # Bagdasaryan et al.'s point: FedAvg over n clients with server lr eta, the other updates
    # zero, the boosted update moves the global model by exactly the attacker's update.
    n, eta = 10, 0.5
    X = np.zeros((n, 4))
    X[0] = model_replacement(u, replacement_gamma(n, eta))
    np.testing.assert_allclose(eta * agg.mean(X), u, rtol=1e-7)
    for bad in [(u, float("inf")), (np.array([np.nan]), 1.0), (np.array(["a"]), 1.0)]:
        with pytest.raises(ValueError):
            model_replacement(*bad)
    for bad in [(0, 1.0), (10, 0.0), (10, -1.0)]:
        with pytest.raises(ValueError):
            replacement_gamma(*bad)


# ----------------------------------------------------------------------------------------
# The ALIE box
# ----------------------------------------------------------------------------------------


def test_alie_box_projection_hand_example():
    own = np.array([[0.0, 1.0, 2.0], [2.0, 1.0, -2.0]], dtype=np.float32)
    # mu = [1, 1, 0]; population sigma = [1, 0, 2]; z = 1.5: [-0.5, 2.5], [1, 1], [-3, 3]
    mu, lo, hi = alie_box(own, 1.5)
    np.testing.assert_array_equal(mu, [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(lo, [-0.5, 1.0, -3.0])
    np.testing.assert_array_equal(hi, [2.5, 1.0, 3.0])
    out, frac = alie_box_projection(np.array([3.0, 0.2, -1.0], np.float32), own, 1.5, return_fraction=True)
    np.testing.assert_array_equal(out, np.array([2.5, 1.0, -1.0], np.float32))
    assert out.dtype == np.float32 and frac == pytest.approx(2 / 3)


@pytest.mark.parametrize("m, d, z", [(2, 5000, 0.35), (5, 20000, 1.0), (12, 3000, 0.0), (1, 100, 2.0)])
def test_alie_box_projection_stays_inside_mu_pm_z_sigma(m, d, z):
    rng = np.random.default_rng(m * 7 + d)
    own = (rng.standard_normal((m, d)) * rng.uniform(1e-4, 1e-1, d) + 1e-3).astype(np.float32)
    update = (rng.standard_normal(d) * 0.2).astype(np.float32)
    X = own.astype(np.float64)
    mu, sigma = X.mean(axis=0), X.std(axis=0)  # float64, population std (ddof = 0)
    lo, hi = mu - z * sigma, mu + z * sigma
    out = alie_box_projection(update, own, z).astype(np.float64)
    # inside the box coordinate-wise, up to the one float32 ulp the bounds may need
    tol = np.spacing(np.maximum(np.abs(lo), np.abs(hi)).astype(np.float32)).astype(np.float64)
    assert (out >= lo - tol).all() and (out <= hi + tol).all()
    wide = (hi - lo) > 4 * tol
    assert (out[wide] >= lo[wide]).all() and (out[wide] <= hi[wide]).all()  # exactly, where a float32 fits
    inside = (update >= lo) & (update <= hi)
    np.testing.assert_array_equal(out[inside], update[inside].astype(np.float64))  # untouched inside
    np.testing.assert_allclose(out[~inside], np.clip(update.astype(np.float64), lo, hi)[~inside], rtol=1e-6, atol=1e-12)
    if z == 0 or m == 1:
        np.testing.assert_allclose(out, mu, rtol=1e-6, atol=1e-9)  # a zero-width box is its centre


def test_alie_box_validation():
    own = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError):
        alie_box(own, -1.0)
    with pytest.raises(ValueError):
        alie_box_projection(np.ones(5, np.float32), own, 1.0)
    with pytest.raises(ValueError):
        alie_box_projection(np.full(4, np.nan, np.float32), own, 1.0)
    with pytest.raises(ValueError):
        alie_box(np.full((3, 4), np.inf), 1.0)


def test_attack_math_imports_neither_flower_nor_torch():
    import subprocess
    from pathlib import Path

    code = ("import sys, flwr_byz.attacks.backdoor; "
            "print(any(k.split('.')[0] in ('flwr', 'torch') for k in sys.modules))")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------------------------------------
# Clients (real TorchClients on digits partitions)
# ----------------------------------------------------------------------------------------

TRIGGER = PixelTrigger(size=3, position=(0, 0), value=1.75, target=0)  # 1.75: digits' max after normalisation


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The models here are tiny: one intra-op thread is faster, and far faster on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _factory(data, parts, **kw):
    def make(pid):
        i = parts[pid]
        return TorchClient("mlp", data.x_train[i], data.y_train[i], data.input_shape, data.num_classes, pid,
                           seed=0, device="cpu", **kw)
    return make


def _flat64(arrays):
    return np.concatenate([np.asarray(a, np.float64).ravel() for a in arrays])


def test_backdoor_client_poisons_the_configured_share_of_every_batch(digits):
    parts = iid_partitions(len(digits.y_train), 27, seed=0)  # 50 examples: batches of 32 and 18
    make = _factory(digits, parts)
    batches = []

    class Spy(PixelTrigger):
        def poison(self, x, y, fraction, rng=None, **kw):
            xp, yp = super().poison(x, y, fraction, rng, **kw)
            stamped = (xp != x).reshape(len(x), -1).any(axis=1)
            batches.append((len(x), int(stamped.sum()), bool((yp[stamped] == self.target).all())))
            return xp, yp

    client = BackdoorClient(make(3), Spy(3, (0, 0), 1.75, 0), fraction=0.5)
    global_w = get_weights(make_model("mlp", digits.input_shape, 10, seed=0))
    weights, num, metrics = client.fit(global_w, {"server-round": 1, "local-epochs": 2})
    assert len(parts[3]) == 50
    assert batches == [(32, 16, True), (18, 9, True)] * 2
    assert num == 50 and metrics["attack.malicious"] == 1 and metrics["attack.backdoor"] == "pixel"
    assert metrics["attack.backdoor-fraction"] == 0.5 and metrics["attack.backdoor-target"] == 0
    assert client.evaluate(global_w, {}) == make(3).evaluate(global_w, {})  # evaluate stays honest


def test_backdoor_client_with_nothing_poisoned_is_the_honest_client(digits):
    parts = iid_partitions(len(digits.y_train), 10, seed=0)
    make = _factory(digits, parts, batch_size=16)
    global_w = get_weights(make_model("mlp", digits.input_shape, 10, seed=0))
    cfg = {"server-round": 4, "lr": 0.05}
    honest, _, _ = make(2).fit([np.copy(a) for a in global_w], cfg)
    clean, _, _ = BackdoorClient(make(2), TRIGGER, fraction=0.0).fit([np.copy(a) for a in global_w], cfg)
    np.testing.assert_allclose(_flat64(clean), _flat64(honest), rtol=0, atol=1e-6)  # same data order, same steps


def test_backdoor_clients_need_a_torch_client_with_data():
    class Bare:
        pass

    with pytest.raises(TypeError):
        BackdoorClient(Bare(), TRIGGER)
    with pytest.raises(TypeError):
        BackdoorClient(Bare(), "trigger")


def test_model_replacement_client_boosts_the_backdoored_update(digits):
    parts = iid_partitions(len(digits.y_train), 10, seed=0)
    make = _factory(digits, parts)
    g = get_weights(make_model("mlp", digits.input_shape, 10, seed=0))
    cfg = {"server-round": 2}
    x_model, _, _ = BackdoorClient(make(1), TRIGGER, fraction=0.5).fit([np.copy(a) for a in g], cfg)
    boosted, num, metrics = ModelReplacementClient(make(1), TRIGGER, num_clients=10, server_lr=0.5,
                                                   fraction=0.5).fit([np.copy(a) for a in g], cfg)
    gamma = 10 / 0.5
    assert metrics["attack.gamma"] == gamma and metrics["attack.malicious"] == 1
    expected = gamma * (_flat64(x_model) - _flat64(g))
    got = _flat64(boosted) - _flat64(g)
    tol = np.spacing(np.abs(_flat64(boosted)).astype(np.float32)).astype(np.float64) + 1e-7 * np.abs(expected)
    assert (np.abs(got - expected) <= tol).all()
    assert np.abs(expected).max() > 0.1  # non-vacuous: the boost is large
    explicit, _, m2 = ModelReplacementClient(make(1), TRIGGER, gamma=3.0).fit([np.copy(a) for a in g], cfg)
    np.testing.assert_allclose(_flat64(explicit) - _flat64(g), 3.0 * (_flat64(x_model) - _flat64(g)), atol=1e-6)
    assert m2["attack.gamma"] == 3.0
    with pytest.raises(ValueError):
        ModelReplacementClient(make(1), TRIGGER)


@pytest.mark.parametrize("z, alpha, start", [(None, 1.0, "mu"), (1.0, 1.0, "global"), (0.5, 0.999, "mu")])
def test_alie_backdoor_client_update_stays_in_the_box(digits, tmp_path, z, alpha, start):
    n, bad = 11, [0, 1, 2]
    parts = iid_partitions(len(digits.y_train), n, seed=0)
    make = _factory(digits, parts)
    g = get_weights(make_model("mlp", digits.input_shape, 10, seed=0))
    cfg = {"server-round": 3}
    collusion = Collusion(bad, make, store_dir=tmp_path)
    replies = [AlieBackdoorClient(make(p), TRIGGER, collusion=collusion, z=z, num_clients=n, alpha=alpha,
                                  start=start).fit([np.copy(a) for a in g], cfg) for p in bad]
    # independent statistics: the corrupted partitions' honest updates, float64, population std
    own = np.stack([_flat64(make(p).fit([np.copy(a) for a in g], cfg)[0]) - _flat64(g) for p in bad])
    zz = alie_z_max(n, len(bad)) if z is None else z
    mu, sigma = own.mean(axis=0), own.std(axis=0)
    lo, hi = mu - zz * sigma, mu + zz * sigma
    for p, (weights, num, metrics) in zip(bad, replies):
        assert num == len(parts[p])
        got = _flat64(weights) - _flat64(g)
        tol = np.spacing(np.abs(_flat64(weights)).astype(np.float32)).astype(np.float64) + 1e-7
        assert (got >= lo - tol).all() and (got <= hi + tol).all()
        assert metrics["attack.alie-z"] == pytest.approx(zz) and metrics["attack.malicious"] == 1
        assert 0.0 < metrics["attack.alie-clipped"] <= 1.0  # the projection was active


def test_alie_backdoor_without_collusion_sends_its_honest_update(digits, caplog):
    parts = iid_partitions(len(digits.y_train), 10, seed=0)
    make = _factory(digits, parts)
    g = get_weights(make_model("mlp", digits.input_shape, 10, seed=0))
    cfg = {"server-round": 1}
    honest, _, _ = make(0).fit([np.copy(a) for a in g], cfg)
    sent, _, _ = AlieBackdoorClient(make(0), TRIGGER, z=1.0).fit([np.copy(a) for a in g], cfg)
    np.testing.assert_allclose(_flat64(sent), _flat64(honest), atol=1e-6)  # sigma = 0: the box is one point
    assert "without a Collusion" in caplog.text
    with pytest.raises(ValueError):
        AlieBackdoorClient(make(0), TRIGGER)
    for bad in [dict(alpha=0.0), dict(alpha=1.5), dict(start="x"), dict(z=-1.0)]:
        with pytest.raises(ValueError):
            AlieBackdoorClient(make(0), TRIGGER, num_clients=10, **bad)


# ----------------------------------------------------------------------------------------
# End to end: a plain FedAvg loop on digits
# ----------------------------------------------------------------------------------------


def federated_run(data, rule: str, attack: str, *, n: int = 11, m: int = 2, f: int = 2, rounds: int = 12,
                  trigger=TRIGGER, fraction: float = 0.5, local_steps: int | None = None, lr: float = 0.1,
                  eval_every: int = 1, store_dir=None, attack_kw=None) -> list[dict]:
    """n clients on IID digits partitions, partitions 0..m-1 running ``attack``; every round
    the server aggregates the replies' updates (weights - global) with ``rule`` (``mean``:
    FedAvg weighted by examples; others with f) and evaluates accuracy and ASR."""
    parts = iid_partitions(len(data.y_train), n, seed=0)
    make = _factory(data, parts, lr=lr, local_steps=local_steps)
    kw = dict(attack_kw or {})
    clients = []
    for p in range(n):
        c = make(p)
        # a sample backdoor's indices are dataset-wide: each attacker gets the ones in its partition
        local = trigger.for_partition(parts[p]) if isinstance(trigger, SampleBackdoor) else trigger
        if p < m and attack == "backdoor":
            c = BackdoorClient(c, local, fraction=fraction, **kw)
        elif p < m and attack == "replacement":
            c = ModelReplacementClient(c, local, num_clients=n, fraction=fraction, **kw)
        elif p < m and attack == "alie":
            collusion = Collusion(range(m), make, store_dir=store_dir, label=f"{rule}-{time.time_ns()}")
            c = AlieBackdoorClient(c, local, collusion=collusion, num_clients=n, fraction=fraction, **kw)
        elif attack not in ("none", "backdoor", "replacement", "alie"):
            raise ValueError(attack)
        clients.append(c)
    model = make_model("mlp", data.input_shape, data.num_classes, seed=0)
    g = get_weights(model)
    layout = ModelLayout.of(g)
    history = []
    for r in range(1, rounds + 1):
        replies = [c.fit([np.copy(a) for a in g], {"server-round": r}) for c in clients]
        X = np.stack([layout.flatten(w) - layout.flatten(g) for w, _, _ in replies])
        if rule == "mean":
            update = agg.mean(X, weights=[k for _, k, _ in replies])
        else:
            update = getattr(agg, rule)(X, f=f)
        g = apply_update(layout, g, update)
        if r % eval_every == 0 or r == rounds:
            set_weights(model, g)
            history.append({"round": r, **evaluate_backdoor(model, data, trigger, device=CPU)})
    return history


def test_e2e_data_poisoning_backdoor_under_fedavg(digits, tmp_path):
    clean = federated_run(digits, "mean", "none")[-1]
    attacked = federated_run(digits, "mean", "backdoor")[-1]
    assert clean["asr"] <= 0.05  # the trigger alone does not make digits look like 0
    assert attacked["asr"] >= 0.8
    assert abs(attacked["accuracy"] - clean["accuracy"]) <= 0.05
    replaced = federated_run(digits, "mean", "replacement")[-1]
    assert replaced["asr"] >= 0.8 and abs(replaced["accuracy"] - clean["accuracy"]) <= 0.05


@pytest.mark.parametrize("rule", ["median", "krum", "bulyan"])
def test_e2e_robust_rules_against_the_data_poisoning_backdoor(digits, rule):
    out = federated_run(digits, rule, "backdoor")[-1]
    assert out["asr"] <= 0.5 and out["accuracy"] >= 0.8


# ----------------------------------------------------------------------------------------
# The tables of docs/backdoors.md
# ----------------------------------------------------------------------------------------

RULES = ("mean", "median", "krum", "bulyan")


def fedavg_table(data, store_dir=None, rounds: int = 15):
    """Setting A: n = 11, m = 2, f = 2, one local epoch per round, ``rounds`` rounds."""
    rows = []
    for rule in RULES:
        for attack in ("none", "backdoor", "replacement", "alie"):
            last = federated_run(data, rule, attack, rounds=rounds, store_dir=store_dir)[-1]
            rows.append((rule, attack, last["accuracy"], last["asr"]))
    return rows


def one_step_table(data, store_dir=None, rounds: int = 300):
    """Setting B (the ALIE paper's regime): n = 23, m = f = 5, one SGD step per round, z = 1."""
    rows = []
    for rule in RULES:
        for attack in ("none", "alie"):
            last = federated_run(data, rule, attack, n=23, m=5, f=5, rounds=rounds, local_steps=1,
                                 eval_every=rounds, store_dir=store_dir, attack_kw={"z": 1.0} if attack == "alie" else None)[-1]
            rows.append((rule, attack, last["accuracy"], last["asr"]))
    return rows


def sample_backdoor(data, n: int = 11, m: int = 2, per_client: int = 3, target: int = 0) -> SampleBackdoor:
    """The first ``per_client`` non-target training samples of each corrupted partition."""
    parts = iid_partitions(len(data.y_train), n, seed=0)
    chosen = [int(i) for p in range(m) for i in [j for j in parts[p] if data.y_train[j] != target][:per_client]]
    return SampleBackdoor(tuple(chosen), target)


def sample_table(data, store_dir=None, rounds: int = 15):
    """Setting C: setting A with the sample backdoor (3 chosen samples per attacker)."""
    sb = sample_backdoor(data)
    rows = []
    for rule in RULES:
        for attack in ("none", "backdoor", "replacement", "alie"):
            last = federated_run(data, rule, attack, rounds=rounds, trigger=sb, store_dir=store_dir)[-1]
            rows.append((rule, attack, last["accuracy"], last["asr"]))
    return rows


@pytest.mark.slow
def test_docs_tables(digits, tmp_path):
    rows = fedavg_table(digits, tmp_path)
    by = {(r, a): (acc, asr) for r, a, acc, asr in rows}
    assert by[("mean", "backdoor")][1] >= 0.8 and by[("mean", "replacement")][1] >= 0.8
    for rule in RULES[1:]:
        assert by[(rule, "backdoor")][1] <= 0.5 and by[(rule, "replacement")][1] <= 0.5
    rows = one_step_table(digits, tmp_path)
    by = {(r, a): (acc, asr) for r, a, acc, asr in rows}
    assert by[("median", "alie")][1] > by[("median", "none")][1] + 0.3


def _print_rows(title, rows):
    print(f"\n{title}\n\n| rule | attack | main accuracy | ASR |\n|---|---|---|---|")
    for rule, attack, acc, asr in rows:
        print(f"| {rule} | {attack} | {acc:.3f} | {asr:.3f} |")


if __name__ == "__main__":  # .venv/bin/python tests/test_backdoor.py [A][B][C]
    import tempfile

    torch.set_num_threads(1)
    which = sys.argv[1] if len(sys.argv) > 1 else "ABC"
    data = load_dataset("digits")
    with tempfile.TemporaryDirectory() as tmp:
        if "A" in which:
            t = time.perf_counter()
            _print_rows("Setting A (n=11, m=2, 15 rounds, 1 local epoch)", fedavg_table(data, tmp))
            print(f"\n({time.perf_counter() - t:.0f} s)")
        if "B" in which:
            t = time.perf_counter()
            _print_rows("Setting B (n=23, m=5, 300 rounds, 1 SGD step per round, z=1)", one_step_table(data, tmp))
            print(f"\n({time.perf_counter() - t:.0f} s)")
        if "C" in which:
            t = time.perf_counter()
            _print_rows("Setting C (setting A, sample backdoor)", sample_table(data, tmp))
            print(f"\n({time.perf_counter() - t:.0f} s)")
