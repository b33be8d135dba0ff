"""Malicious clients: wrap any honest NumPyClient and turn it into an attacker in one line.

    client = AlieClient(honest_client, collusion=Collusion(bad_ids, make_honest_client))

Every class here is a :class:`flwr.client.NumPyClient` whose ``fit`` runs the honest
client, replaces the reply's weights by the attack's (global weights + malicious update),
and keeps the honest number of examples. The attack's parameters, and for ALIE the
attacker's forecast (:func:`flwr_byz.attacks.alie_forecast`), go into the reply's metrics
under ``attack.*`` keys. ``evaluate`` stays honest.

Attacks that need statistics over all corrupted clients of the round (ALIE, IPM, Min-Max,
Min-Sum) take a :class:`~flwr_byz.clients.collusion.Collusion`; without one, the client
uses its own honest update only (for ALIE that means sigma = 0: the update is sent
unchanged, and a warning says so). The corrupted clients of one process and round send one
common vector, computed by the first of them (see ``SHARED_VECTOR``).
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict

import numpy as np
from flwr.client import NumPyClient

from .. import attacks
from ..attacks.catalogue import ATTACK_SPECS, attack_names, colluding_attacks
from ..updates import ModelLayout, apply_update

LOG = logging.getLogger("flwr_byz.clients")
# Read from the attack catalogue (flwr_byz.attacks.catalogue): what a MaliciousClient mounts
# (the backdoors have their own clients, flwr_byz.clients.backdoor), and which attacks pool
# the corrupted clients' honest updates.
ATTACKS = attack_names("model", "data", "malformed", "weight")
COLLUDING = tuple(a for a in colluding_attacks() if a in ATTACKS)
# Colluding attacks whose vector is a function of the round's pooled updates and the attack's
# parameters alone: every corrupted client sends the same one, so it is computed once per
# process and round (a rule-aware search runs the rule some 20 times: 1 to 2 s per client
# at MNIST size, n = 51). An attack declaring a ``seed`` draws per client (Fang's trimmed-mean
# attack) and is not shared.
SHARED_VECTOR = tuple(a for a in COLLUDING if "seed" not in ATTACK_SPECS[a].params)
_ROUND_VECTORS: OrderedDict = OrderedDict()  # (store, round key, attack, params) -> (update, metrics)


class MaliciousClient(NumPyClient):
    """An honest client plus an attack on its replies.

    Args:
        honest: the NumPyClient to corrupt.
        attack: one of :data:`ATTACKS`.
        collusion: shared knowledge of the corrupted clients (colluding attacks).
        **params: the attack's own parameters (``z``, ``num_clients``, ``scale``, ``sigma``,
            ``epsilon``, ``c``, ``kind``, ``seed``...). With any attack, ``weight_factor``
            or ``weight_value`` also inflate the reported number of examples
            (:func:`flwr_byz.attacks.inflate_num_examples`). ``attack="weight_inflation"``
            is ``inner`` (default ``"sign_flip"``; ``"none"``: the honest update) with
            ``weight_factor`` defaulting to 10^6.
    """

    def __init__(self, honest: NumPyClient, attack: str, *, collusion=None, **params):
        if attack not in ATTACKS:
            raise ValueError(f"unknown attack {attack!r}; choose from {ATTACKS}")
        params = dict(params)
        self.weight_factor, self.weight_value = params.pop("weight_factor", None), params.pop("weight_value", None)
        if attack == "weight_inflation":
            attack = params.pop("inner", "sign_flip")
            inner = ("none",) + tuple(a for a in ATTACKS if a != "weight_inflation")
            if attack not in inner:
                raise ValueError(f"weight_inflation: unknown inner attack {attack!r}; choose from {inner}")
            if self.weight_value is None and self.weight_factor is None:
                self.weight_factor = 1e6
        self.honest, self.attack, self.collusion, self.params = honest, attack, collusion, params

    def get_parameters(self, config):
        return self.honest.get_parameters(config)

    def evaluate(self, parameters, config):
        return self.honest.evaluate(parameters, config)

    def _known_updates(self, parameters, config, own_weights) -> np.ndarray:
        if self.collusion is not None:
            return self.collusion.honest_updates(parameters, config)
        if self.attack == "alie":
            LOG.warning("ALIE without a Collusion: sigma = 0, the honest update is sent unchanged")
        layout = ModelLayout.of(list(parameters))
        return (layout.flatten(own_weights) - layout.flatten(parameters))[None, :]

    def fit(self, parameters, config):
        weights, num_examples, metrics = self._fit_update(parameters, config)
        if self.weight_factor is None and self.weight_value is None:
            return weights, num_examples, metrics
        factor = 1e6 if self.weight_factor is None else self.weight_factor
        claim = attacks.inflate_num_examples(num_examples, factor=factor, value=self.weight_value)
        return weights, claim, {**metrics, "attack.malicious": 1, "attack.weight-claimed": claim,
                                "attack.weight-true": num_examples}

    def _fit_update(self, parameters, config):
        """(weights, true number of examples, metrics) of the update attack."""
        if self.attack == "label_flip":
            return self._fit_label_flip(parameters, config)
        if self._shares_vector() and hasattr(self.honest, "training_data"):
            weights, num_examples, metrics = self._untrained_reply(config)
        else:
            weights, num_examples, metrics = self.honest.fit([np.copy(p) for p in parameters], config)
        if self.attack == "none":
            return weights, num_examples, dict(metrics or {})
        metrics = dict(metrics or {})
        if self.attack == "garbage":
            kind = self.params.get("kind", "nan")
            return self._garbage(parameters, kind), num_examples, {**metrics, "attack.garbage": 1}
        layout = ModelLayout.of(list(parameters))
        p = self.params
        if self._shares_vector():
            update, extra = self._round_vector(parameters, config)
            metrics.update(extra)
        elif self.attack in COLLUDING:
            update, extra = self._colluding_update(self._known_updates(parameters, config, weights), config)
            metrics.update(extra)
        else:
            own = layout.flatten(weights) - layout.flatten(parameters)
            if self.attack == "sign_flip":
                update = attacks.sign_flipping(own, scale=float(p.get("scale", 1.0)))
            elif self.attack == "gaussian":
                seed = p.get("seed")  # reproducible, and still one independent draw per client
                pid = int(getattr(self.honest, "partition_id", 0))
                seed = None if seed is None else (int(seed), int(config.get("server-round", 0)), pid)
                update = attacks.gaussian_noise((layout.dim,), sigma=float(p.get("sigma", 1.0)), seed=seed)
            else:  # constant
                update = attacks.constant_update(layout.dim, c=float(p.get("c", -1.0)))
        metrics["attack.malicious"] = 1
        return apply_update(layout, parameters, np.asarray(update, dtype=np.float32)), num_examples, metrics

    def _shares_vector(self) -> bool:
        return self.attack in SHARED_VECTOR and hasattr(self.collusion, "round_key")

    def _round_vector(self, parameters, config) -> tuple[np.ndarray, dict]:
        """The round's common vector of a ``SHARED_VECTOR`` attack and its metrics, computed by
        the first corrupted client of this process that asks (from the collusion's pooled
        updates, which include this client's own)."""
        # keyed like the collusion's own store (its folder and round key), plus the attack
        key = (str(self.collusion.store_dir), self.collusion.round_key(parameters, config), self.attack,
               json.dumps(self.params, sort_keys=True, default=repr))
        if key not in _ROUND_VECTORS:
            _ROUND_VECTORS[key] = self._colluding_update(self.collusion.honest_updates(parameters, config), config)
            while len(_ROUND_VECTORS) > 2:  # the round's vector (d floats each: 44 MB at ResNet-18 size)
                _ROUND_VECTORS.popitem(last=False)
        return _ROUND_VECTORS[key]

    def _untrained_reply(self, config) -> tuple[None, int, dict]:
        """What a ``SHARED_VECTOR`` attacker keeps of its honest reply when its client says what
        it would train on (``training_data(config) -> (x, y, seed)``, as TorchClient does): the
        number of examples of that data and its partition id, without training. The common
        vector does not use the client's own trained weights (the collusion already trained its
        partition): 12 of 63 trainings per round saved at n = 51, m = 12."""
        metrics = {}
        if hasattr(self.honest, "partition_id"):
            metrics["partition-id"] = int(self.honest.partition_id)
        return None, len(self.honest.training_data(config)[0]), metrics

    def _colluding_update(self, X, config) -> tuple[np.ndarray, dict]:
        """(float32 update, the attack's own metrics) of a colluding attack on the pooled
        updates ``X``."""
        p, metrics = self.params, {}
        if self.attack == "alie":
            n = p.get("num_clients")
            z = p.get("z")
            if z is None:
                z = attacks.alie_z_max(int(n), int(p.get("num_malicious", X.shape[0])))
            update = attacks.alie_update(X, z=float(z))
            metrics["attack.alie-z"] = float(z)
            for zz, frac in attacks.alie_forecast(X).items():
                metrics[f"attack.forecast-z{zz:g}"] = float(frac)
        elif self.attack == "ipm":
            update = attacks.inner_product_manipulation(X, epsilon=float(p.get("epsilon", 0.1)))
        elif self.attack == "mimic":
            update, chosen = attacks.mimic(X)
            metrics["attack.mimicked"] = int(chosen)
        elif self.attack in ("alie_optimal", "ipm_optimal"):
            if not p.get("rule"):
                raise ValueError(f"{self.attack} needs the server's rule: attack parameter 'rule'")
            search = attacks.optimal_alie if self.attack == "alie_optimal" else attacks.optimal_ipm
            update, scale, harm = search(
                X, rule=str(p["rule"]), f=int(p.get("num_malicious", X.shape[0])),
                n=int(p["num_clients"]) if p.get("num_clients") else None, rule_params=p.get("rule_params"),
                **{k: p[k] for k in ("evals", "start", "delta", "ratio") if k in p})
            metrics["attack.scale"], metrics["attack.harm"] = float(scale), float(harm)
        elif self.attack == "agr_tailored":
            if not p.get("rule"):
                raise ValueError("agr_tailored needs the server's rule: attack parameter 'rule'")
            update, gamma, harm = attacks.agr_tailored(
                X, rule=str(p["rule"]), f=int(p.get("num_malicious", X.shape[0])),
                n=int(p["num_clients"]) if p.get("num_clients") else None, rule_params=p.get("rule_params"),
                **{k: p[k] for k in ("direction", "gamma_init", "tau") if k in p})
            metrics["attack.scale"], metrics["attack.harm"] = float(gamma), float(harm)
        elif self.attack == "fang_trimmed_mean":  # each attacker its own draw, reproducible per (seed, round)
            seed = p.get("seed")
            pid = int(getattr(self.honest, "partition_id", 0))
            seed = None if seed is None else (int(seed), int(config.get("server-round", 0)), pid)
            update = attacks.fang_trimmed_mean(X, b=float(p.get("b", 2.0)), rng=seed)
        elif self.attack == "fang_krum":
            update, lam = attacks.fang_krum(X, f=int(p.get("num_malicious", X.shape[0])),
                                            threshold=float(p.get("threshold", 1e-5)))
            metrics["attack.scale"] = float(lam)
        elif self.attack == "min_max":
            update = attacks.min_max(X, direction=p.get("direction", "unit_vec"))
        else:
            update = attacks.min_sum(X, direction=p.get("direction", "unit_vec"))
        return np.asarray(update, dtype=np.float32), metrics

    def _fit_label_flip(self, parameters, config):
        """Train with flipped labels on whatever data the client trains on this round: its
        partition, or its DETOX group's shard (a TorchClient-like client with the
        ``data_transform`` hook); other clients get their ``.y`` flipped for the call."""
        h = self.honest
        num_classes = getattr(h, "num_classes", None)
        if hasattr(h, "data_transform"):
            h.data_transform = lambda x, y: (x, attacks.flip_labels(y, num_classes=num_classes))
            try:
                weights, n, metrics = h.fit(parameters, config)
            finally:
                h.data_transform = None
            return weights, n, {**(metrics or {}), "attack.malicious": 1}
        if not hasattr(h, "y"):
            raise TypeError("label flipping needs an honest client exposing its labels as `.y` "
                            "(or a `data_transform` hook, as TorchClient has)")
        clean = h.y
        h.y = attacks.flip_labels(clean, num_classes=num_classes)
        try:
            weights, n, metrics = h.fit(parameters, config)
        finally:
            h.y = clean
        return weights, n, {**(metrics or {}), "attack.malicious": 1}

    def _garbage(self, parameters, kind: str):
        out = [np.copy(p) for p in parameters]
        if kind == "nan":
            out[0] = np.full_like(out[0], np.nan)
        elif kind == "inf":
            out[-1] = np.full_like(out[-1], np.inf)
        elif kind == "wrong_shape":
            out[0] = np.zeros(np.asarray(out[0]).size + 1, dtype=np.asarray(out[0]).dtype)
        elif kind == "wrong_dtype":
            out[0] = np.asarray(out[0]).astype(np.float64)
        elif kind == "missing":
            out = out[:-1]
        else:
            raise ValueError(f"unknown garbage kind {kind!r}")
        return out


class AlieClient(MaliciousClient):
    """ALIE (Baruch et al., NeurIPS 2019): all corrupted clients send mu - z * sigma of their
    own honest updates; z defaults to the paper's z_max(n = num_clients, m = num_malicious)."""

    def __init__(self, honest, *, collusion=None, z: float | None = None, num_clients: int | None = None,
                 num_malicious: int | None = None):
        if z is None and num_clients is None:
            raise ValueError("AlieClient needs z, or num_clients (and num_malicious) to compute z_max")
        params = {"z": z, "num_clients": num_clients}
        if num_malicious is not None:
            params["num_malicious"] = num_malicious
        super().__init__(honest, "alie", collusion=collusion, **params)


class SignFlipClient(MaliciousClient):
    """Sends its own honest update reversed (times ``scale``)."""

    def __init__(self, honest, *, scale: float = 1.0):
        super().__init__(honest, "sign_flip", scale=scale)


class GaussianNoiseClient(MaliciousClient):
    """Sends N(0, sigma^2) noise as its update."""

    def __init__(self, honest, *, sigma: float = 1.0, seed: int | None = None):
        super().__init__(honest, "gaussian", sigma=sigma, seed=seed)


class IpmClient(MaliciousClient):
    """Inner-product manipulation (Xie et al., UAI 2019): -epsilon * mean of known updates."""

    def __init__(self, honest, *, collusion=None, epsilon: float = 0.1):
        super().__init__(honest, "ipm", collusion=collusion, epsilon=epsilon)


class MinMaxClient(MaliciousClient):
    """Min-Max (Shejwalkar & Houmansadr, NDSS 2021)."""

    def __init__(self, honest, *, collusion=None, direction: str = "unit_vec"):
        super().__init__(honest, "min_max", collusion=collusion, direction=direction)


class MinSumClient(MaliciousClient):
    """Min-Sum (Shejwalkar & Houmansadr, NDSS 2021)."""

    def __init__(self, honest, *, collusion=None, direction: str = "unit_vec"):
        super().__init__(honest, "min_sum", collusion=collusion, direction=direction)


class ConstantClient(MaliciousClient):
    """Sends the constant update c (default -1 everywhere: DETOX's attack on signSGD)."""

    def __init__(self, honest, *, c: float = -1.0):
        super().__init__(honest, "constant", c=c)


class LabelFlipClient(MaliciousClient):
    """Trains honestly on flipped labels (y -> C - 1 - y)."""

    def __init__(self, honest):
        super().__init__(honest, "label_flip")


class WeightInflationClient(MaliciousClient):
    """Any client (honest or already malicious) that claims ``factor`` times its number of
    examples, or ``value`` examples: ``WeightInflationClient(AlieClient(...), factor=1e6)``."""

    def __init__(self, client, *, factor: float | None = 1e6, value: float | None = None):
        super().__init__(client, "weight_inflation", inner="none", weight_factor=factor, weight_value=value)


class GarbageClient(MaliciousClient):
    """Sends malformed weights: kind in {"nan", "inf", "wrong_shape", "wrong_dtype", "missing"}."""

    def __init__(self, honest, *, kind: str = "nan"):
        super().__init__(honest, "garbage", kind=kind)
