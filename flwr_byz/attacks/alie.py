"""ALIE: "A Little Is Enough".

Baruch, Baruch & Goldberg, "A Little Is Enough: Circumventing Defenses For Distributed
Learning", NeurIPS 2019 (Algorithm 1, the convergence-prevention attack). The m corrupted
clients compute, per coordinate j, the mean mu_j and standard deviation sigma_j of their
*own* honest updates and all send the same vector, shifted by z standard deviations from
mu. The shift is small enough that the malicious vector sits among the honest ones, so
median / trimmed mean / Krum / Bulyan keep it (or something close to it), while its
consistent bias on every coordinate accumulates round after round.

The attack is non-omniscient: :func:`alie_update` takes only the corrupted clients' own
updates. It has no argument through which the honest clients' updates could enter.

Sign convention (the one decision that is not in a formula)
----------------------------------------------------------
sigma_j >= 0, so ``mu - z * sigma`` moves *every* coordinate down by z sigma_j, whatever
the sign of mu_j: coordinate-wise it is not "opposite to the mean", it is a uniform
downward shift measured in standard deviations. The official implementation
(github.com/moranant/attacking_distributed_learning, ``malicious.DriftAttack``, as
reproduced by several public copies that cite it) computes ``mean - num_std * var**0.5``
over the corrupted workers' *gradients* (``np.var``: population variance) and its server
steps ``w <- w - lr * aggregate``. Updates in this project are weights minus global
weights, i.e. ``-lr * gradient`` for one plain SGD step, so mu_update = -lr mu_grad and
sigma_update = lr sigma_grad:

* ``sign=-1`` (default): ``mu - z sigma`` applied literally to the updates, the formula
  as written. It is the mirror image (x -> -x) of the official code's attack.
* ``sign=+1``: ``mu + z sigma``, exactly the official code's gradient-space attack carried
  over to update space (the global model is pushed the same way as in the paper's runs).

The rules of :mod:`flwr_byz.aggregation` are equivariant under x -> -x (centered
clipping too when its center is negated with the updates: zero by default), so both
choices bias the aggregate by the same amount, in opposite directions. Neither sign
depends on the data: the paper picks the shift's direction once, not per coordinate.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri

from . import _common
from .catalogue import register_attack

__all__ = ["alie_supporters", "alie_update", "alie_z_max"]


def alie_supporters(n: int, m: int) -> int:
    """The paper's s = floor(n / 2 + 1) - m: honest workers the attackers must win over.

    floor(n / 2 + 1) workers form a majority; the m corrupted ones need s more among the
    n - m honest ones. Validates integers with 0 < m < n.
    """
    n = _common.check_int("n", n, minimum=2)
    m = _common.check_int("m", m, minimum=1)
    if m >= n:
        raise ValueError(f"ALIE needs 0 < m < n corrupted clients, got m={m}, n={n}")
    return n // 2 + 1 - m


def alie_z_max(n: int, m: int) -> float:
    """z_max of Algorithm 1: the largest z with Phi(z) < (n - s) / n, s = floor(n/2 + 1) - m.

    Phi is the standard normal CDF; the supremum of {z : Phi(z) < p} is Phi^{-1}(p), which
    is what is returned (the value read off the paper's z-table, and what
    ``scipy.stats.norm.ppf((n - s) / n)`` gives). It is >= 0 for every valid (n, m):
    s <= n / 2 always, so (n - s) / n >= 1/2.

    Raises ``ValueError`` unless 0 < m < n, and when s <= 0: the m corrupted clients
    already form a majority (m >= floor(n/2) + 1), (n - s) / n >= 1 and z_max would be
    +inf. Such an attacker needs no ALIE; pass an explicit ``z`` to :func:`alie_update`.

    Note: Karimireddy et al.'s widely copied re-implementation (and the ``blades``
    library) use (n - m - s) / (n - m) instead, the fraction of *honest* workers; that is
    a different number and not the paper's formula.
    """
    s = alie_supporters(n, m)
    if s <= 0:
        raise ValueError(
            f"ALIE z_max is unbounded for n={n}, m={m}: s = floor(n/2 + 1) - m = {s} <= 0 means "
            "the corrupted clients already form a majority; pass an explicit z instead"
        )
    return float(ndtri((n - s) / n))


@register_attack("alie", kind="model", colluding=True, params={"z": None},
                 knowledge="the corrupted clients' own honest updates (their mean and std)",
                 paper="Baruch, Baruch & Goldberg, NeurIPS 2019")
def alie_update(own_updates, z: float | None = None, n: int | None = None, *, sign: int = -1) -> np.ndarray:
    """The single update every corrupted client sends: ``mu + sign * z * sigma`` (float32).

    mu and sigma are the per-coordinate mean and *population* standard deviation
    (ddof = 0, divide by m, as ``np.var(...) ** 0.5`` in the paper's code) of the m rows of
    ``own_updates``, accumulated in float64 over column chunks. With m = 1, sigma = 0 and
    the attack degenerates to the client's own honest update.

    Args:
        own_updates: (m, d) matrix of the corrupted clients' own honest updates (a 1-D
            array is one update). Never the honest clients' updates.
        z: number of standard deviations to shift; defaults to ``alie_z_max(n, m)`` with
            m = the number of rows of ``own_updates``. Takes precedence over ``n``.
        n: total number of clients in the round, used only when ``z`` is None.
        sign: -1 (default) for ``mu - z sigma``, +1 for ``mu + z sigma``; see the module
            docstring for why both exist and which one matches the official code.

    Returns:
        (d,) float32 array, the same for every corrupted client.
    """
    X = _common.as_known_updates(own_updates, "alie_update: own_updates", tensors=True)
    if sign not in (-1, 1) or isinstance(sign, bool):
        raise ValueError(f"alie_update: sign must be -1 or +1, got {sign!r}")
    if z is None:
        if n is None:
            raise ValueError("alie_update: give z, or n (the total number of clients) to use alie_z_max(n, m)")
        z = alie_z_max(n, X.shape[0])
    z = _common.check_finite_scalar("alie_update: z", z)
    mu, sigma = _common.mean_std(X, ddof=0)
    mu += (sign * z) * sigma
    return _common.as_float32(mu)
