"""The attacks do what they say in every path (issue: "the attacks we have must do what
they say"): data poisoning poisons the data the client actually trains on (its partition
or its DETOX shard), the App carries the server learning rate model replacement needs, the
default trigger is white on every channel, a shared seed still gives each attacker its own
draw, and an empty evaluation says there is nothing to measure."""

from __future__ import annotations

import numpy as np
import pytest

from flwr_byz.attacks.backdoor import PixelTrigger
from flwr_byz.clients.backdoor import BackdoorClient
from flwr_byz.clients.honest import TorchClient, evaluate_model
from flwr_byz.clients.malicious import GaussianNoiseClient, MaliciousClient
from flwr_byz.models import get_weights

RNG = np.random.default_rng(0)
X_OWN = RNG.standard_normal((40, 1, 4, 4)).astype(np.float32)
Y_OWN = RNG.integers(0, 3, 40)
X_SHARD = RNG.standard_normal((30, 1, 4, 4)).astype(np.float32)
Y_SHARD = RNG.integers(0, 3, 30)


def client(pid=0):
    return TorchClient("mlp", X_OWN, Y_OWN, (1, 4, 4), 3, pid, batch_size=10, lr=0.1, seed=3,
                       shard_fn=lambda shard, k: (X_SHARD, Y_SHARD))


DETOX = {"server-round": 1, "detox-shard": 2, "detox-num-shards": 5, "detox-seed": 11, "local-steps": 3}


def flat(arrays):
    return np.concatenate([np.ravel(a) for a in arrays])


def test_label_flip_poisons_the_detox_shard_it_trains_on():
    g = get_weights(client().model)
    honest, _, _ = client(1).fit(g, DETOX)
    mate, _, _ = client(2).fit(g, DETOX)
    np.testing.assert_array_equal(flat(honest), flat(mate))  # honest group mates agree to the bit
    flipped, n, metrics = MaliciousClient(client(2), "label_flip").fit(g, DETOX)
    assert n == len(X_SHARD) and metrics["attack.malicious"] == 1
    assert not np.array_equal(flat(flipped), flat(honest))  # it used to send the honest update
    # the same as honest training on the shard with the labels flipped
    from flwr_byz.attacks import flip_labels

    reference = client(2)
    reference.shard_fn = lambda shard, k: (X_SHARD, flip_labels(Y_SHARD, num_classes=3))
    expected, _, _ = reference.fit(g, DETOX)
    np.testing.assert_array_equal(flat(flipped), flat(expected))


def test_label_flip_without_detox_flips_its_own_partition():
    g = get_weights(client().model)
    cfg = {"server-round": 1, "local-steps": 3}
    from flwr_byz.attacks import flip_labels

    flipped, n, _ = MaliciousClient(client(0), "label_flip").fit(g, cfg)
    reference = TorchClient("mlp", X_OWN, flip_labels(Y_OWN, num_classes=3), (1, 4, 4), 3, 0, batch_size=10,
                            lr=0.1, seed=3)
    expected, _, _ = reference.fit(g, cfg)
    np.testing.assert_array_equal(flat(flipped), flat(expected))
    assert n == len(X_OWN)


def test_backdoor_poisons_the_detox_shard_it_trains_on():
    g = get_weights(client().model)
    trigger = PixelTrigger(size=2, position=(0, 0), value=3.0, target=0)
    attacker = BackdoorClient(client(2), trigger, fraction=0.5)
    x, y, seed, _ = attacker._poisoned_data(DETOX)
    assert x is X_SHARD and seed == 11  # the group's shard and seed, not its own partition
    weights, n, _ = attacker.fit(g, DETOX)
    honest, _, _ = client(1).fit(g, DETOX)
    assert n == len(X_SHARD) and not np.array_equal(flat(weights), flat(honest))


def test_the_app_sends_the_server_learning_rate_model_replacement_needs():
    from flwr_byz.app.settings import run_settings, train_config

    config = train_config(run_settings({"server-lr": 0.5}))
    assert config["server-lr"] == 0.5  # gamma = n / eta = 2n, not n


def test_the_default_trigger_is_white_on_every_channel():
    from types import SimpleNamespace

    from flwr_byz.simulations.runner import cell_trigger

    x = np.zeros((4, 3, 32, 32), np.float32)
    x[:, 0], x[:, 1], x[:, 2] = 2.51, 2.60, 2.75  # (1 - mean_c) / std_c for three channels
    trig = cell_trigger(SimpleNamespace(x_train=x, input_shape=(3, 32, 32)), {})
    assert trig.value == (pytest.approx(2.51), pytest.approx(2.60), pytest.approx(2.75))
    stamped = trig.stamp(np.zeros((1, 3, 32, 32), np.float32))
    np.testing.assert_allclose(stamped[0, :, 0, 0], [2.51, 2.60, 2.75], rtol=1e-6)
    gray = cell_trigger(SimpleNamespace(x_train=x[:, :1], input_shape=(1, 32, 32)), {})
    assert gray.value == pytest.approx(2.51)


def test_a_shared_seed_still_gives_each_attacker_its_own_noise():
    g = get_weights(client().model)
    cfg = {"server-round": 4}
    a, _, _ = GaussianNoiseClient(client(0), sigma=1.0, seed=7).fit(g, cfg)
    b, _, _ = GaussianNoiseClient(client(1), sigma=1.0, seed=7).fit(g, cfg)
    again, _, _ = GaussianNoiseClient(client(0), sigma=1.0, seed=7).fit(g, cfg)
    assert not np.array_equal(flat(a), flat(b))  # independent attackers, independent draws
    np.testing.assert_array_equal(flat(a), flat(again))  # and still reproducible


def test_an_empty_evaluation_says_there_is_nothing_to_measure():
    model_client = client()
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate_model(model_client.model, X_OWN[:0], Y_OWN[:0])
    empty = TorchClient("mlp", X_OWN, Y_OWN, (1, 4, 4), 3, 5, eval_data=(X_OWN[:0], Y_OWN[:0]))
    with pytest.raises(ValueError, match="client 5: nothing to evaluate"):
        empty.evaluate(get_weights(empty.model), {})


# --- DBA (Xie, Huang, Chen & Li, ICLR 2020) -----------------------------------------------------

def test_dba_local_triggers_cut_the_global_trigger_into_disjoint_bands():
    from flwr_byz.attacks.backdoor import dba_local_trigger

    shape = (3, 28, 28)
    pattern = np.arange(3 * 5 * 5, dtype=float).reshape(3, 5, 5)  # a (C, h, w) pattern: values must follow
    g = PixelTrigger(size=5, position=(2, 3), value=pattern.tolist(), target=7)
    parts = [dba_local_trigger(g, k) for k in range(4)]  # default: min(4, 5) = 4 bands of rows 2, 1, 1, 1
    assert [p.size for p in parts] == [(2, 5), (1, 5), (1, 5), (1, 5)]
    assert [p.position for p in parts] == [(2, 3), (4, 3), (5, 3), (6, 3)]
    masks = [p.mask(shape) for p in parts]
    assert sum(m.astype(int) for m in masks).max() == 1  # disjoint
    np.testing.assert_array_equal(np.logical_or.reduce(masks), g.mask(shape))  # the union is the global one
    whole = g.stamp(np.zeros((1, *shape)))
    stamped = np.zeros((1, *shape))
    for p in parts:
        stamped = p.stamp(stamped)
    np.testing.assert_array_equal(stamped, whole)  # the bands carry the global pattern's own values
    assert all(p.target == 7 for p in parts)
    assert dba_local_trigger(g, 5) == parts[1]  # attacker k: part k mod parts
    wide = PixelTrigger(size=(2, 6), position=(-2, -6), value=1.0, target=0)  # wider: cut by columns
    cols = [dba_local_trigger(wide, k, parts=3) for k in range(3)]
    assert [c.size for c in cols] == [(2, 2)] * 3 and [c.position for c in cols] == [(-2, -6), (-2, -4), (-2, -2)]
    np.testing.assert_array_equal(np.logical_or.reduce([c.mask((1, 8, 8)) for c in cols]), wide.mask((1, 8, 8)))
    with pytest.raises(ValueError, match="cannot be cut"):
        dba_local_trigger(PixelTrigger(size=3), 0, parts=4)


def test_dba_attackers_poison_with_their_own_band_on_the_detox_shard():
    from types import SimpleNamespace

    from flwr_byz.simulations.runner import backdoor_client

    data = SimpleNamespace(x_train=X_OWN, input_shape=(1, 4, 4))
    seen = []
    for pid in (0, 1):
        attacker = backdoor_client(client(pid), "dba", {"trigger": {"size": 2, "value": 3.0}, "parts": 2}, data,
                                   collusion=None, num_clients=5, num_malicious=2)
        seen.append(attacker.backdoor)
        x, y, seed, poison = attacker._poisoned_data(DETOX)
        assert x is X_SHARD and seed == 11  # the group's shard and seed, as every data-poisoning attack
        xp, _ = poison(x, y, np.random.default_rng(0))
        changed = (xp != x).any(axis=0)[0]
        assert changed.sum() > 0 and (changed & ~attacker.backdoor.mask((1, 4, 4))[0]).sum() == 0
    assert seen[0].position == (0, 0) and seen[1].position == (1, 0)  # attacker k: band k
    assert seen[0].size == seen[1].size == (1, 2)


# --- Neurotoxin (Zhang et al., ICML 2022) -------------------------------------------------------

def test_neurotoxin_mask_keeps_the_smallest_benign_coordinates():
    from flwr_byz.attacks.backdoor import neurotoxin_mask

    g = np.array([0.1, -5.0, 0.2, 3.0, 0.0, -0.05])
    np.testing.assert_array_equal(neurotoxin_mask(g, 0.5), [True, False, False, False, True, True])
    assert neurotoxin_mask(g, 1.0).all() and neurotoxin_mask(g, 0.01).sum() == 1
    np.testing.assert_array_equal(neurotoxin_mask(np.zeros(4), 0.5), [True, True, False, False])  # ties: lower index
    with pytest.raises(ValueError):
        neurotoxin_mask(g, 1.5)


def test_neurotoxin_trains_only_the_masked_coordinates_within_its_bound():
    import torch

    from flwr_byz.attacks.backdoor import neurotoxin_mask
    from flwr_byz.clients.backdoor import NeurotoxinClient

    trigger = PixelTrigger(size=2, position=(0, 0), value=3.0, target=0)
    config = {"server-round": 1, "local-steps": 4}
    g = get_weights(client().model)
    attacker = NeurotoxinClient(client(0), trigger, fraction=0.5, ratio=0.7)
    # the benign gradient: the clean loss over all the client's data at once (reference)
    model = client().model
    loss = torch.nn.functional.cross_entropy(model(torch.as_tensor(X_OWN)), torch.as_tensor(Y_OWN))
    reference = np.concatenate([t.detach().numpy().ravel() for t in torch.autograd.grad(loss, list(model.parameters()))])
    np.testing.assert_allclose(attacker._benign_gradient(g, config), reference, rtol=1e-4, atol=1e-6)
    mask = neurotoxin_mask(reference, 0.7)
    weights, n, metrics = attacker.fit(g, config)
    update = flat(weights).astype(np.float64) - flat(g)
    assert np.all(update[~mask] == 0) and np.count_nonzero(update[mask]) > 0.5 * mask.sum()
    assert metrics["attack.malicious"] == 1 and metrics["attack.neurotoxin-ratio"] == 0.7
    bounded, _, _ = NeurotoxinClient(client(0), trigger, ratio=0.7, norm_bound=0.05).fit(g, config)
    step = flat(bounded).astype(np.float64) - flat(g)
    assert np.linalg.norm(step) <= 0.05 * (1 + 1e-5) and np.all(step[~mask] == 0)
    # and the hooks are gone: the honest client trains every coordinate again
    honest = attacker.honest.fit(g, config)[0]
    assert np.count_nonzero(flat(honest)[~mask] - flat(g)[~mask]) > 0


# --- edge-case backdoor (Wang et al., NeurIPS 2020) -----------------------------------------------

def test_rotated_tail_turns_images_counter_clockwise_about_their_centre():
    from flwr_byz.attacks.backdoor import rotated_tail

    img = np.zeros((1, 2, 3, 3), np.float32)
    img[0, 0, 1, 2] = 1.0  # channel 0: a dot right of the centre
    img[0, 1, 2, 1] = 5.0  # channel 1: a dot below it
    img[0, 1] -= 1.0       # channel 1's background is -1
    out = rotated_tail(img, 90)
    # counter-clockwise: right of the centre goes to above it, below goes to the right
    assert out[0, 0, 0, 1] == 1.0 and out[0, 0].sum() == 1.0
    assert out[0, 1, 1, 2] == 4.0 and (np.delete(out[0, 1].ravel(), 5) == -1.0).all()
    np.testing.assert_array_equal(rotated_tail(img, 360), img)
    np.testing.assert_array_equal(rotated_tail(img, -90), rotated_tail(img, 270))
    # any other angle interpolates; the centre pixel stays, the corners leaving the image
    # are filled with each channel's own background (its minimum)
    odd = rotated_tail(img, 45)
    assert odd.shape == img.shape and odd.dtype == np.float32
    assert odd[0, 1, 1, 1] == img[0, 1, 1, 1] and odd[0, 1, 0, 0] == -1.0 and odd[0, 0, 0, 0] == 0.0
    with pytest.raises(ValueError):
        rotated_tail(img[0], 90)


def test_edge_case_backdoor_is_the_rotated_source_class_labelled_as_the_target():
    from flwr_byz.attacks.backdoor import edge_case_backdoor, num_poisoned

    x_tr, y_tr = RNG.standard_normal((12, 1, 4, 4)).astype(np.float32), np.array([7, 1, 2] * 4)
    x_te, y_te = RNG.standard_normal((6, 1, 4, 4)).astype(np.float32), np.array([7, 0] * 3)
    edge = edge_case_backdoor(x_tr, y_tr, x_te, y_te, source=7, target=1, angle=90)
    np.testing.assert_array_equal(edge.x_train, np.rot90(x_tr[y_tr == 7], 1, axes=(2, 3)))
    np.testing.assert_array_equal(edge.x_test, np.rot90(x_te[y_te == 7], 1, axes=(2, 3)))
    x_held, y_held = edge.select()  # the ASR: every held-out tail input, its true label the source
    assert len(x_held) == 3 and (y_held == 7).all()
    xb, yb = X_OWN[:10], Y_OWN[:10].copy()
    xp, yp, idx = edge.poison(xb, yb, 0.3, np.random.default_rng(0), return_indices=True)
    assert len(idx) == num_poisoned(10, 0.3) == 3 and (yp[idx] == 1).all()
    rest = np.setdiff1d(np.arange(10), idx)
    np.testing.assert_array_equal(xp[rest], xb[rest])
    np.testing.assert_array_equal(yp[rest], yb[rest])
    tails = {edge.x_train[i].tobytes() for i in range(len(edge.x_train))}
    assert all(xp[i].tobytes() in tails for i in idx)  # each poisoned sample is one of the tail inputs
    with pytest.raises(ValueError, match="no image of source class 9"):
        edge_case_backdoor(x_tr, y_tr, x_te, y_te, source=9)
    with pytest.raises(ValueError, match="nothing to attack"):
        edge_case_backdoor(x_tr, y_tr, x_te, y_te, source=7, target=7)


def test_edge_case_client_trains_on_its_tail_and_pgd_keeps_it_in_the_ball(tmp_path):
    from types import SimpleNamespace

    from flwr_byz.attacks.backdoor import EdgeCaseBackdoor
    from flwr_byz.simulations.backdoor_eval import backdoor_inputs
    from flwr_byz.simulations.runner import backdoor_client

    data = SimpleNamespace(x_train=X_OWN, y_train=np.where(Y_OWN == 2, 7, Y_OWN), x_test=X_SHARD,
                           y_test=np.where(Y_SHARD == 2, 7, Y_SHARD), input_shape=(1, 4, 4))
    config = {"server-round": 1, "local-steps": 3}
    g = get_weights(client().model)
    attacker = backdoor_client(client(0), "edge_case", {"target": 1}, data, collusion=None, num_clients=5,
                               num_malicious=1)
    assert isinstance(attacker.backdoor, EdgeCaseBackdoor) and attacker.backdoor.source == 7
    weights, n, metrics = attacker.fit(g, config)
    assert metrics["attack.backdoor"] == "edge-case" and metrics["attack.backdoor-target"] == 1 and n == len(X_OWN)
    honest, _, _ = client(0).fit(g, config)
    assert not np.array_equal(flat(weights), flat(honest))  # it trained on tail inputs
    x_held, y_held = backdoor_inputs(data, attacker.backdoor)  # the server's ASR set: the rotated test sevens
    np.testing.assert_array_equal(x_held, np.rot90(X_SHARD[data.y_test == 7], 1, axes=(2, 3)))
    bounded, _, metrics = backdoor_client(client(0), "edge_case", {"norm_bound": 0.02}, data, collusion=None,
                                          num_clients=5, num_malicious=1).fit(g, config)
    step = flat(bounded).astype(np.float64) - flat(g)
    assert np.linalg.norm(step) <= 0.02 * (1 + 1e-5) and metrics["attack.norm-bound"] == 0.02
    # a real tail from a file, in the dataset's units
    np.savez(tmp_path / "tail.npz", x_train=X_OWN[:5], x_test=X_SHARD[:4])
    real = backdoor_client(client(0), "edge_case", {"tail": str(tmp_path / "tail.npz"), "target": 2}, data,
                           collusion=None, num_clients=5, num_malicious=1).backdoor
    np.testing.assert_array_equal(real.x_test, X_SHARD[:4])
    assert real.target == 2 and (real.select()[1] == -1).all()  # true label unknown: every input counts
    np.savez(tmp_path / "bad.npz", x_train=X_OWN[:5, :, :2])
    with pytest.raises(ValueError, match="lacks"):
        backdoor_client(client(0), "edge_case", {"tail": str(tmp_path / "bad.npz")}, data, collusion=None,
                        num_clients=5, num_malicious=1)


def test_edge_case_backdoor_plants_its_tail_past_the_median_on_digits(tmp_path):
    """Short in-process measurement on the embedded digits (n = 20, m = 5, one step per
    round, 40 rounds): the median keeps the main task, and the rotated sevens go to 1 for
    nearly all held-out ones, while the clean run on the same tail gives them almost never."""
    from flwr_byz.simulations.config import RunConfig
    from flwr_byz.simulations.runner import run_cells

    def last(m):
        cell = RunConfig(strategy="median", attack="edge_case", num_clients=20, num_malicious=m, f=5, rounds=40,
                         local_steps=1, batch_size=16, lr=0.1, server_momentum=0.9, seed=0)
        rows = [r for r in run_cells([cell], tmp_path / str(m), progress=False, engine="inprocess") if r["round"] > 0]
        return np.mean([r["accuracy"] for r in rows[-5:]]), np.mean([r["asr"] for r in rows[-5:]])

    acc_clean, asr_clean = last(0)
    acc, asr = last(5)
    assert asr_clean < 0.1 and asr > 0.8 and acc > acc_clean - 0.05, (acc_clean, asr_clean, acc, asr)
