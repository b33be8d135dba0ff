"""The ALIE forecast: how many coordinates can a shift of z standard deviations turn over?

The premise of ALIE (Baruch, Baruch & Goldberg, NeurIPS 2019) is that, per coordinate,
the spread of the honest values is large compared with their mean: moving z sigma_j away
from mu_j stays inside the crowd, yet when |mu_j| < z sigma_j the shifted value
mu_j -/+ z sigma_j can have the opposite sign of mu_j, i.e. the coordinate's descent
direction can be reversed. :func:`alie_forecast` measures that fraction from what the
attacker knows (its own clients' honest updates), before mounting the attack.
"""

from __future__ import annotations

import numpy as np

from . import _common

__all__ = ["alie_forecast"]


def alie_forecast(own_updates, zs=(0.5, 1.0, 2.0)) -> dict[float, float]:
    """Fraction of coordinates j with ``|mu_j| < z * sigma_j``, for each z in ``zs``.

    mu and sigma are computed exactly as in :func:`~flwr_byz.attacks.alie.alie_update`
    (float64, population standard deviation, ddof = 0) over the corrupted clients' own
    honest updates. The inequality is strict, so a coordinate with mu_j = sigma_j = 0
    (e.g. a frozen parameter) never counts.

    Args:
        own_updates: (m, d) matrix of the corrupted clients' own honest updates.
        zs: non-negative finite numbers of standard deviations.

    Returns:
        ``{float(z): fraction}`` with fractions in [0, 1], in the order of ``zs``.
    """
    X = _common.as_known_updates(own_updates, "alie_forecast: own_updates")
    zs = list(np.atleast_1d(np.asarray(zs, dtype=object)).tolist())
    if not zs:
        raise ValueError("alie_forecast: zs is empty")
    zs = [_common.check_finite_scalar("alie_forecast: z", z, nonnegative=True) for z in zs]
    mu, sigma = _common.mean_std(X, ddof=0)
    np.abs(mu, out=mu)
    d = X.shape[1]
    return {z: float(np.count_nonzero(mu < z * sigma)) / d for z in zs}
