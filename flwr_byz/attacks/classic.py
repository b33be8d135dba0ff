"""The classic model-poisoning attacks, as functions of what the attacker knows.

* Sign flipping: each corrupted client sends ``-scale`` times its own honest update, a
  standard baseline (Allen-Zhu et al., "Byzantine-Resilient Non-Convex Stochastic
  Gradient Descent", ICLR 2021; the "bit flipping" of Karimireddy, He & Jaggi,
  "Learning from History for Byzantine Robust Optimization", ICML 2021).
* Gaussian noise: each corrupted client sends N(0, sigma^2) noise (Blanchard et al.,
  NeurIPS 2017, "Gaussian Byzantine" workers).
* Inner-product manipulation: Xie, Koyejo & Gupta, "Fall of Empires: Breaking Byzantine-
  tolerant SGD by Inner Product Manipulation", UAI 2019; every corrupted client sends
  ``-epsilon`` times the mean of the correct updates, so the aggregate's inner product
  with the true descent direction becomes negative.
* Constant update: every entry equal to c (default -1), the attack DETOX (Rajput et al.,
  NeurIPS 2019) uses against signSGD's majority vote.
* Garbage: malformed replies (NaN, Inf, wrong shape, wrong dtype) that exercise the
  servers' input checks.

Every numeric attack returns float32 (the wire format of the updates).
"""

from __future__ import annotations

import numpy as np

from . import _common
from .catalogue import register_attack

__all__ = [
    "GARBAGE_KINDS", "constant_update", "garbage_updates", "gaussian_noise",
    "inner_product_manipulation", "sign_flipping",
]

GARBAGE_KINDS = ("nan", "inf", "wrong_shape", "wrong_dtype")


@register_attack("sign_flip", kind="model", knowledge="its own honest update", paper="classic")
def sign_flipping(own_updates, scale: float = 1.0) -> np.ndarray:
    """Each corrupted client sends ``-scale * x_i``, its own honest update reversed.

    Args:
        own_updates: (m, d) matrix (or one (d,) update) of the corrupted clients' own
            honest updates.
        scale: non-negative factor (1 = pure sign flip).

    Returns:
        float32 array of the shape of ``own_updates``: row i is what client i sends.
    """
    scale = _common.check_finite_scalar("sign_flipping: scale", scale, nonnegative=True)
    one_d = np.ndim(own_updates) == 1
    X = _common.as_known_updates(own_updates, "sign_flipping: own_updates")
    out = np.empty(X.shape, dtype=np.float32)
    for a in range(0, X.shape[1], _common.CHUNK_COLUMNS):
        out[:, a : a + _common.CHUNK_COLUMNS] = -scale * X[:, a : a + _common.CHUNK_COLUMNS].astype(np.float64)
    return out[0] if one_d else out


@register_attack("gaussian", kind="model", knowledge="none", paper="classic")
def gaussian_noise(shape, *, sigma: float = 1.0, seed=None) -> np.ndarray:
    """Updates of i.i.d. N(0, sigma^2) entries, drawn from a seeded NumPy ``Generator``.

    The draw is ``rng.standard_normal(shape, dtype=np.float32) * float32(sigma)`` with
    ``rng = np.random.default_rng(seed)``, so equal seeds give equal updates.

    Args:
        shape: d for one update, or (m, d) for one per corrupted client.
        sigma: standard deviation (>= 0).
        seed: None, an int / SeedSequence, or a ``np.random.Generator`` used as is.

    Returns:
        float32 array of the given shape.
    """
    sigma = _common.check_finite_scalar("gaussian_noise: sigma", sigma, nonnegative=True)
    shape = tuple(np.atleast_1d(np.asarray(shape)).tolist())
    if len(shape) not in (1, 2):
        raise ValueError(f"gaussian_noise: shape must be d or (m, d), got {shape}")
    for s in shape:
        _common.check_int("gaussian_noise: shape entry", s, minimum=1)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    out = rng.standard_normal(shape, dtype=np.float32)
    out *= np.float32(sigma)
    return out


@register_attack("ipm", kind="model", colluding=True,
                 knowledge="the corrupted clients' own honest updates (omniscient in the paper)",
                 paper="Xie, Koyejo & Gupta, UAI 2019")
def inner_product_manipulation(known_updates, epsilon: float = 0.1) -> np.ndarray:
    """Xie et al. (UAI 2019): every corrupted client sends ``-epsilon * mean(known_updates)``.

    In the paper the attacker is omniscient: the mean is over all *correct* workers'
    gradients. Here it is over whatever honest updates the attacker knows: pass the
    corrupted clients' own honest updates (non-omniscient use, the default threat model
    of this project) or, to reproduce the paper's omniscient setting, the honest clients'
    updates as well. The paper uses a small epsilon (0.1, the default) against Krum and
    a large one against coordinate-wise rules.

    Args:
        known_updates: (m, d) matrix of honest updates known to the attacker.
        epsilon: non-negative magnitude of the reversed mean.

    Returns:
        (d,) float32 array, the same for every corrupted client.
    """
    epsilon = _common.check_finite_scalar("inner_product_manipulation: epsilon", epsilon, nonnegative=True)
    X = _common.as_known_updates(known_updates, "inner_product_manipulation: known_updates", tensors=True)
    mu, _ = _common.mean_std(X, ddof=0)
    return _common.as_float32(-epsilon * mu)


@register_attack("constant", kind="model", knowledge="none",
                 paper="DETOX's attack on signSGD, Rajput et al., NeurIPS 2019")
def constant_update(d: int, c: float = -1.0) -> np.ndarray:
    """The update with every one of its d entries equal to c (DETOX's attack on signSGD).

    Against a majority vote of signs, c = -1 votes "down" on every coordinate.

    Returns:
        (d,) float32 array filled with c.
    """
    d = _common.check_int("constant_update: d", d, minimum=1)
    c = _common.check_finite_scalar("constant_update: c", c)
    return np.full(d, c, dtype=np.float32)


@register_attack("garbage", kind="malformed", knowledge="none", params={"kind": "nan"},
                 paper="exercises the server's input checks")
def garbage_updates(kind: str, d: int, num_clients: int = 1, *, seed=0) -> list[np.ndarray]:
    """Malformed updates for exercising input checks: a list of ``num_clients`` arrays.

    kinds:
        ``"nan"``: float32 (d,) of standard-normal entries with one NaN at a random index
            (a single bad value among finite ones is the hard case for a check);
        ``"inf"``: the same with one +Inf (even clients) or -Inf (odd clients);
        ``"wrong_shape"``: float32 of shape (d + 1,);
        ``"wrong_dtype"``: complex64 of shape (d,) (right shape, not a real dtype; the
            core rejects it, while integer dtypes would be silently converted).

    Args:
        kind: one of :data:`GARBAGE_KINDS`.
        d: the expected update length.
        num_clients: how many arrays to return.
        seed: seed of the values and of the positions of the bad entries.
    """
    if kind not in GARBAGE_KINDS:
        raise ValueError(f"garbage_updates: kind must be one of {GARBAGE_KINDS}, got {kind!r}")
    d = _common.check_int("garbage_updates: d", d, minimum=1)
    num_clients = _common.check_int("garbage_updates: num_clients", num_clients, minimum=1)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(num_clients):
        if kind == "wrong_shape":
            out.append(rng.standard_normal(d + 1, dtype=np.float32))
        elif kind == "wrong_dtype":
            out.append(rng.standard_normal(d, dtype=np.float32).astype(np.complex64))
        else:
            x = rng.standard_normal(d, dtype=np.float32)
            bad = np.nan if kind == "nan" else (np.inf if i % 2 == 0 else -np.inf)
            x[rng.integers(d)] = bad
            out.append(x)
    return out
