"""Backdoor clients: wrap an honest PyTorch NumPyClient and plant a trigger in the global model.

    client = BackdoorClient(honest_client, PixelTrigger(size=2, position=(0, 0), value=1.75, target=0))

Three attacks, each a :class:`flwr.client.NumPyClient` whose ``evaluate`` stays honest:

* :class:`BackdoorClient`: data poisoning. The client trains from the global model on its own
  data, with exactly ``round(fraction * B)`` samples of every local batch of size B replaced
  by backdoor samples (stamped and relabelled for a :class:`PixelTrigger`; the chosen
  samples, relabelled, for a :class:`SampleBackdoor`; tail inputs labelled as the target
  for an :class:`~flwr_byz.attacks.backdoor.EdgeCaseBackdoor`, Wang et al., NeurIPS 2020),
  and replies with the result, optionally projected after every step onto a ball around the
  global model (``norm_bound``: the edge-case paper's PGD attacker).
* :class:`ModelReplacementClient`: Bagdasaryan et al. (AISTATS 2020). The same poisoned
  training gives a backdoored model X; the client replies ``G + gamma (X - G)``, gamma =
  n / eta by default (n clients per round, eta the server learning rate, 1 for FedAvg).
* :class:`AlieBackdoorClient`: Baruch et al. (NeurIPS 2019), the backdoor variant of ALIE.
  From the corrupted clients' own honest updates (a
  :class:`~flwr_byz.clients.collusion.Collusion`) it takes mu and sigma; it trains on the
  backdoor objective starting from the ALIE point ``G + mu`` (``start="mu"``, as the
  authors' code does), optionally with the paper's distance term (``alpha < 1``, see
  below), then clips its update coordinate-wise into ``[mu - z sigma, mu + z sigma]``
  (:func:`flwr_byz.attacks.backdoor.alie_box_projection`).

The paper's objective for the ALIE backdoor is ``alpha * L_backdoor + (1 - alpha) *
sum_j ((w_j - a_j) / max(z sigma_j, 1e-5))^2`` with a = G + mu. Its curvature,
``2 (1 - alpha) / (z sigma_j)^2``, is huge where sigma_j is small, so plain SGD on the sum
diverges at ordinary learning rates; the distance term is applied here as its exact
proximal step after every SGD step on ``alpha * L_backdoor`` (``w_j <- (w_j + k_j a_j) / (1
+ k_j)``, ``k_j = 2 lr (1 - alpha) / max(z sigma_j, 1e-5)^2``), which minimises the same
objective and is stable for any sigma. ``alpha = 1`` (the default) drops the term: the box
projection alone keeps the update inside the range.

The honest client must expose what :class:`~flwr_byz.clients.honest.TorchClient` does:
``model`` (a torch module), its training data ``x`` / ``y`` and optionally ``lr``,
``momentum``, ``batch_size``, ``local_epochs``, ``local_steps``, ``seed``, ``partition_id``
and ``device``; the round's fit config overrides the hyper-parameters as it does for the
honest client (``lr``, ``momentum``, ``batch-size``, ``local-epochs``, ``local-steps``).
Under DETOX a backdoor client trains, poisoned, on its group's shard (what its honest client's
``training_data`` gives for the round's config), as every data-poisoning attack does.

Replies carry ``attack.*`` metrics: ``attack.malicious`` = 1, ``attack.backdoor`` ("pixel",
"sample" or "edge-case"), ``attack.backdoor-target``, ``attack.backdoor-fraction``, and per attack
``attack.gamma`` or ``attack.alie-z`` / ``attack.alie-alpha`` / ``attack.alie-clipped`` (the
share of coordinates the box projection moved).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from flwr.client import NumPyClient
from torch import nn

from .. import attacks
from ..attacks import _common
from ..attacks import backdoor as bd
from ..attacks.backdoor import EdgeCaseBackdoor, PixelTrigger, SampleBackdoor, alie_box, alie_box_projection, replacement_gamma
from ..models import get_weights, set_weights
from ..updates import ModelLayout, apply_update
from .honest import pick_device, round_seed, train_locally

LOG = logging.getLogger("flwr_byz.clients")

__all__ = ["AlieBackdoorClient", "BackdoorClient", "ModelReplacementClient", "NeurotoxinClient", "pgd_projection",
           "train_poisoned"]

_POISON_STREAM = 0xB4CD00  # separates the poisoning draws from the data order of the same seed


def train_poisoned(model: nn.Module, x: np.ndarray, y: np.ndarray, poison_fn, *, epochs: int = 1,
                   batch_size: int = 32, lr: float = 0.1, momentum: float = 0.0, weight_decay: float = 0.0,
                   seed: int = 0, steps: int | None = None, device: torch.device | None = None,
                   loss_weight: float = 1.0, prox=None, after_step=None) -> float:
    """Minibatch SGD where every batch goes through ``poison_fn(xb, yb, rng) -> (xb', yb')``.

    Same data order, batches and stopping rule as :func:`flwr_byz.clients.honest.train_locally`
    for the same seed (``steps``: stop after that many minibatches). ``rng`` is a NumPy
    Generator seeded from ``seed``. The loss is ``loss_weight * cross-entropy``; ``prox``,
    when given, is ``[(param, anchor, k), ...]`` and after every step applies
    ``param <- (param + k * anchor) / (1 + k)`` (the proximal step of
    ``sum k / (2 lr) * (param - anchor)^2``); ``after_step()`` runs after that (Neurotoxin's
    projection). Returns the mean cross-entropy of the last epoch.
    """
    device = device or pick_device()
    rng = np.random.default_rng([int(seed) % (2**63), _POISON_STREAM])
    prox = [(p, a.to(device), k.to(device)) for p, a, k in (prox or [])]

    @torch.no_grad()
    def steps_after():
        for p, a, k in prox:
            p.add_(k * a).div_(1.0 + k)
        if after_step is not None:
            after_step()

    return train_locally(model, x, y, epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                         weight_decay=weight_decay, seed=seed, steps=steps, device=device,
                         batch_fn=lambda xb, yb: poison_fn(xb, yb, rng), loss_weight=loss_weight,
                         after_step=steps_after if prox or after_step is not None else None)


def pgd_projection(model: nn.Module, bound: float):
    """``after_step`` for :func:`train_poisoned`: puts the model's parameters back onto the
    l2 ball of radius ``bound`` around where they are now (the global model, when called
    before training), all parameters together: the norm-bounded (PGD) attacker of Sun et al.
    (2019), Wang et al. (NeurIPS 2020) and Neurotoxin's code."""
    params = list(model.parameters())
    anchors = [p.detach().clone() for p in params]

    @torch.no_grad()
    def project():
        norm = torch.sqrt(sum(((p - a) ** 2).sum() for p, a in zip(params, anchors)))
        if float(norm) > bound:
            for p, a in zip(params, anchors):
                p.copy_(a + (p - a) * (bound / norm))

    return project


class _BackdoorBase(NumPyClient):
    """Shared plumbing: honest delegation, hyper-parameters, the poisoned training run."""

    kind = "backdoor"

    def __init__(self, honest: NumPyClient, backdoor, fraction: float):
        if not isinstance(backdoor, (PixelTrigger, SampleBackdoor, EdgeCaseBackdoor)):
            raise TypeError("backdoor must be a PixelTrigger, a SampleBackdoor or an EdgeCaseBackdoor, "
                            f"got {type(backdoor).__name__}")
        missing = [a for a in ("model", "x", "y") if not hasattr(honest, a)]
        if missing:
            raise TypeError(f"{type(self).__name__} needs an honest client exposing `model`, `x` and `y` "
                            f"(like TorchClient); missing {missing}")
        bd.num_poisoned(1, fraction)  # validates fraction in [0, 1]
        self.honest, self.backdoor, self.fraction = honest, backdoor, float(fraction)
        if isinstance(backdoor, SampleBackdoor):
            backdoor._idx(len(honest.y))  # the indices must be local positions in the client's data

    def get_parameters(self, config):
        return self.honest.get_parameters(config)

    def evaluate(self, parameters, config):
        return self.honest.evaluate(parameters, config)

    def _metrics(self) -> dict:
        h = self.honest
        b = self.backdoor
        kind = "pixel" if isinstance(b, PixelTrigger) else "sample" if isinstance(b, SampleBackdoor) else "edge-case"
        return {"attack.malicious": 1, "attack.backdoor": kind,
                "attack.backdoor-target": int(self.backdoor.target), "attack.backdoor-fraction": self.fraction,
                "partition-id": int(getattr(h, "partition_id", 0))}

    def _poisoned_data(self, config):
        """(x, y, seed, poison_fn) of the round: the data the client trains on (its
        partition, or its DETOX group's shard: ``training_data`` of a TorchClient-like
        client) and the per-batch poisoning. A :class:`SampleBackdoor`'s chosen samples are
        the client's own; on a shard they are mixed into the shard's batches."""
        h, b, fraction = self.honest, self.backdoor, self.fraction
        own_x, own_y = np.asarray(h.x), np.asarray(h.y)
        on_shard = hasattr(h, "training_data") and "detox-shard" in config
        if hasattr(h, "training_data"):
            x, y, seed = h.training_data(config)
            x, y = np.asarray(x), np.asarray(y)
        else:
            x, y = own_x, own_y
            seed = round_seed(int(getattr(h, "seed", 0)), int(config.get("server-round", 0)),
                              int(getattr(h, "partition_id", 0)))
        if isinstance(b, (PixelTrigger, EdgeCaseBackdoor)):
            return x, y, seed, lambda xb, yb, rng: b.poison(xb, yb, fraction, rng)
        if not on_shard:  # its own data: the chosen samples stay in it, relabelled
            y = b.relabel(y)
        return x, y, seed, lambda xb, yb, rng: b.poison(xb, yb, fraction, rng, source=(own_x, own_y))

    def _train(self, parameters, config, *, start=None, loss_weight: float = 1.0, prox_fn=None,
               norm_bound: float | None = None):
        """Train the honest client's model on the poisoned data from ``start`` (default: the
        global weights); returns (weights, loss, number of examples trained on). ``prox_fn(model,
        lr)`` builds ``prox``; ``norm_bound`` projects onto that ball around the starting
        weights after every step (:func:`pgd_projection`)."""
        h = self.honest
        lr = float(config.get("lr", getattr(h, "lr", 0.1)))
        steps_cfg = int(config.get("local-steps", 0) or 0)
        steps = steps_cfg if steps_cfg > 0 else getattr(h, "local_steps", None)
        x, y, seed, poison_fn = self._poisoned_data(config)
        model = h.model
        set_weights(model, parameters if start is None else start)
        device = getattr(h, "device", None) or pick_device()
        after_step = None if norm_bound is None else pgd_projection(model.to(device), norm_bound)
        loss = train_poisoned(
            model, x, y, poison_fn, epochs=int(config.get("local-epochs", getattr(h, "local_epochs", 1))),
            batch_size=int(config.get("batch-size", getattr(h, "batch_size", 32))), lr=lr,
            momentum=float(config.get("momentum", getattr(h, "momentum", 0.0))), seed=seed, steps=steps,
            device=device, loss_weight=loss_weight, prox=None if prox_fn is None else prox_fn(model, lr),
            after_step=after_step,
        )
        return get_weights(model), float(loss), len(x)


class BackdoorClient(_BackdoorBase):
    """Data-poisoning backdoor: trains with a ``fraction`` of every local batch poisoned
    (default 0.5) and replies with the resulting weights, unscaled.

    Args:
        honest: the TorchClient-like client to corrupt (its model and data are used).
        backdoor: a :class:`PixelTrigger`, a :class:`SampleBackdoor` (indices local to
            the client's data) or an :class:`EdgeCaseBackdoor` (tail inputs).
        fraction: share of each batch replaced by backdoor samples, in [0, 1].
        norm_bound: None, or the l2 radius (over all parameters) around the global model the
            weights are projected back onto after every step (:func:`pgd_projection`; the
            edge-case paper's PGD attacker, which stays inside a norm-bounding defense).
    """

    def __init__(self, honest, backdoor, fraction: float = 0.5, *, norm_bound: float | None = None):
        super().__init__(honest, backdoor, fraction)
        self.norm_bound = None if norm_bound is None else _common.check_finite_scalar(
            f"{type(self).__name__}: norm_bound", norm_bound, positive=True)

    def fit(self, parameters, config):
        weights, loss, trained_on = self._train([np.copy(p) for p in parameters], config, norm_bound=self.norm_bound)
        metrics = {**self._metrics(), "train_loss": loss}
        if self.norm_bound is not None:
            metrics["attack.norm-bound"] = self.norm_bound
        return weights, trained_on, metrics


class ModelReplacementClient(_BackdoorBase):
    """Model replacement (Bagdasaryan et al., AISTATS 2020): ``G + gamma (X - G)``.

    X is the model trained as :class:`BackdoorClient` does. gamma defaults to
    ``num_clients / server_lr`` (n / eta: FedAvg, eta = 1, over n clients gives the global
    model X when the other updates sum to about zero).

    Args:
        honest, backdoor, fraction: as for :class:`BackdoorClient`.
        gamma: the boost; when None, ``num_clients / server_lr``.
        num_clients: n, the number of clients aggregated per round.
        server_lr: eta, the server learning rate (1 for FedAvg).
    """

    def __init__(self, honest, backdoor, *, gamma: float | None = None, num_clients: int | None = None,
                 server_lr: float = 1.0, fraction: float = 0.5):
        super().__init__(honest, backdoor, fraction)
        if gamma is None:
            if num_clients is None:
                raise ValueError("ModelReplacementClient needs gamma, or num_clients (and server_lr) for n / eta")
            gamma = replacement_gamma(num_clients, server_lr)
        self.gamma = _common.check_finite_scalar("ModelReplacementClient: gamma", gamma)

    def fit(self, parameters, config):
        parameters = [np.copy(p) for p in parameters]
        weights, loss, trained_on = self._train(parameters, config)
        layout = ModelLayout.of(parameters)
        update = layout.flatten(weights).astype(np.float64) - layout.flatten(parameters).astype(np.float64)
        boosted = bd.model_replacement(update, self.gamma)
        metrics = {**self._metrics(), "train_loss": loss, "attack.gamma": self.gamma}
        return apply_update(layout, parameters, boosted), trained_on, metrics


class NeurotoxinClient(BackdoorClient):
    """Neurotoxin (Zhang et al., ICML 2022): the data-poisoning backdoor trained only on the
    coordinates honest training changes least, so that later honest rounds do not erase it.

    Each round: the gradient of the clean loss at the global model over the data the client
    trains on (its partition or DETOX shard, in its minibatches, averaged) is the benign
    gradient estimate, as in the authors' code; :func:`flwr_byz.attacks.backdoor.neurotoxin_mask`
    keeps the ``ratio`` share of coordinates (over all parameters together) where it is
    smallest; the poisoned training of :class:`BackdoorClient` then runs with every gradient
    multiplied by that mask, and with ``norm_bound`` the update is projected onto the ball of
    that radius around the global model after every step (the authors' PGD).

    Args:
        honest, backdoor, fraction: as for :class:`BackdoorClient`.
        ratio: the share of coordinates trained (the authors' 0.95).
        norm_bound: the radius of the PGD projection, or None.
    """

    def __init__(self, honest, backdoor, fraction: float = 0.5, *, ratio: float = 0.95,
                 norm_bound: float | None = None):
        super().__init__(honest, backdoor, fraction, norm_bound=norm_bound)
        bd.neurotoxin_mask(np.zeros(1), ratio)  # validates ratio
        self.ratio = float(ratio)

    def _benign_gradient(self, parameters, config) -> np.ndarray:
        """The clean loss's gradient at the global model, averaged over the round's data."""
        h = self.honest
        x, y, _, _ = self._poisoned_data(config)
        model = h.model
        set_weights(model, parameters)
        device = getattr(h, "device", None) or pick_device()
        model.to(device).train()
        model.zero_grad()
        loss_fn = nn.CrossEntropyLoss(reduction="sum")
        batch = int(config.get("batch-size", getattr(h, "batch_size", 32)))
        for a in range(0, len(x), batch):
            xb, yb = torch.as_tensor(x[a : a + batch]).to(device), torch.as_tensor(y[a : a + batch]).to(device)
            (loss_fn(model(xb), yb) / len(x)).backward()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
        out = np.concatenate([g.detach().cpu().numpy().ravel() for g in grads]).astype(np.float64)
        model.zero_grad()
        return out

    def fit(self, parameters, config):
        parameters = [np.copy(p) for p in parameters]
        mask = bd.neurotoxin_mask(self._benign_gradient(parameters, config), self.ratio)
        model = self.honest.model
        params = list(model.parameters())
        hooks, offset = [], 0
        for p in params:
            m = torch.as_tensor(mask[offset : offset + p.numel()].reshape(p.shape), dtype=p.dtype, device=p.device)
            hooks.append(p.register_hook(lambda g, m=m: g * m))
            offset += p.numel()
        try:
            weights, loss, trained_on = self._train(parameters, config, norm_bound=self.norm_bound)
        finally:
            for hook in hooks:
                hook.remove()
        metrics = {**self._metrics(), "train_loss": loss, "attack.neurotoxin-ratio": self.ratio}
        return weights, trained_on, metrics


class AlieBackdoorClient(_BackdoorBase):
    """The ALIE backdoor (Baruch et al., NeurIPS 2019): backdoor training, then the update
    clipped into ``[mu - z sigma, mu + z sigma]`` of the corrupted clients' honest updates.

    Args:
        honest, backdoor, fraction: as for :class:`BackdoorClient`.
        collusion: the corrupted clients' shared honest updates; without one the client's
            own honest update alone gives mu (sigma = 0: the update is the honest one, and a
            warning says so).
        z: box half-width in standard deviations; defaults to ``alie_z_max(num_clients,
            num_malicious)`` (num_malicious defaults to the collusion's size).
        alpha: weight of the backdoor loss; ``alpha < 1`` adds the paper's distance term
            ``(1 - alpha) sum ((w - a) / max(z sigma, 1e-5))^2`` to a = the ALIE point
            (applied as a proximal step, see the module docstring). In (0, 1].
        start: "mu" (default) starts the backdoor training from ``G + mu``, as the authors'
            code does; "global" from the global model.
    """

    def __init__(self, honest, backdoor, *, collusion=None, z: float | None = None, num_clients: int | None = None,
                 num_malicious: int | None = None, fraction: float = 0.5, alpha: float = 1.0, start: str = "mu"):
        super().__init__(honest, backdoor, fraction)
        if z is None and num_clients is None:
            raise ValueError("AlieBackdoorClient needs z, or num_clients (and num_malicious) to compute z_max")
        if z is not None:
            z = _common.check_finite_scalar("AlieBackdoorClient: z", z, nonnegative=True)
        alpha = _common.check_finite_scalar("AlieBackdoorClient: alpha", alpha, positive=True)
        if alpha > 1:
            raise ValueError(f"AlieBackdoorClient: alpha must lie in (0, 1], got {alpha}")
        if start not in ("mu", "global"):
            raise ValueError(f"AlieBackdoorClient: start must be 'mu' or 'global', got {start!r}")
        self.collusion, self.z, self.num_clients, self.num_malicious = collusion, z, num_clients, num_malicious
        self.alpha, self.start = alpha, start

    def _own_updates(self, parameters, config) -> np.ndarray:
        if self.collusion is not None:
            return self.collusion.honest_updates(parameters, config)
        LOG.warning("ALIE backdoor without a Collusion: sigma = 0, the honest update is sent unchanged")
        weights, _, _ = self.honest.fit([np.copy(p) for p in parameters], config)
        layout = ModelLayout.of(list(parameters))
        return (layout.flatten(weights) - layout.flatten(parameters))[None, :]

    def fit(self, parameters, config):
        parameters = [np.copy(p) for p in parameters]
        layout = ModelLayout.of(parameters)
        X = self._own_updates(parameters, config)
        z = self.z
        if z is None:
            m = int(self.num_malicious if self.num_malicious is not None else X.shape[0])
            z = attacks.alie_z_max(int(self.num_clients), m)
        mu, lo, hi = alie_box(X, z)
        start = apply_update(layout, parameters, mu.astype(np.float32)) if self.start == "mu" else None
        prox_fn = None
        if self.alpha < 1:
            anchor = layout.flatten(parameters).astype(np.float64) + mu
            scale = np.maximum(0.5 * (hi - lo), 1e-5)  # z sigma, floored as in the paper
            prox_fn = self._prox_builder(layout, anchor, scale)
        weights, loss, trained_on = self._train(parameters, config, start=start, loss_weight=self.alpha,
                                                prox_fn=prox_fn)
        update = layout.flatten(weights).astype(np.float64) - layout.flatten(parameters).astype(np.float64)
        projected, clipped = alie_box_projection(update, X, z, return_fraction=True)
        metrics = {**self._metrics(), "train_loss": loss, "attack.alie-z": float(z),
                   "attack.alie-alpha": self.alpha, "attack.alie-clipped": clipped}
        return apply_update(layout, parameters, projected), trained_on, metrics

    def _prox_builder(self, layout: ModelLayout, anchor: np.ndarray, scale: np.ndarray):
        alpha = self.alpha

        def build(model: nn.Module, lr: float):
            names = list(model.state_dict().keys())
            params = dict(model.named_parameters())
            out = []
            for name, lo, hi in zip(names, layout.offsets[:-1], layout.offsets[1:]):
                if name not in params:
                    continue  # buffers (BatchNorm statistics) have no gradient step to pair with
                p = params[name]
                a = torch.as_tensor(anchor[lo:hi].reshape(p.shape), dtype=p.dtype)
                k = torch.as_tensor((2.0 * lr * (1.0 - alpha) / scale[lo:hi] ** 2).reshape(p.shape), dtype=p.dtype)
                out.append((p, a, k))
            return out

        return build
