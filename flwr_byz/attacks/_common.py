"""Input checks and chunked float64 statistics shared by the attacks.

Every attack takes what the attacker legitimately has: a matrix of updates (one row per
client, update = client weights - global weights) that it knows. The statistics below are
accumulated in float64 column chunk by column chunk, so their extra memory is about
``m * CHUNK_COLUMNS`` floats whatever d is (the (d,) outputs aside).

ALIE, IPM, Min-Max and Min-Sum take a torch tensor too and compute on its device (their
statistics in float64 there), returning a float32 tensor on that device; the other attacks
compute on a host copy (:func:`as_known_updates` with ``tensors=False``).
"""

from __future__ import annotations

import numbers

import numpy as np

from ..aggregation._validate import CHUNK_COLUMNS, as_update_matrix
from ..aggregation.backend import is_tensor, to_numpy

__all__ = ["CHUNK_COLUMNS", "as_known_updates", "check_finite_scalar", "check_int", "mean_std"]


def as_known_updates(updates, what: str = "own_updates", *, min_rows: int = 1, tensors: bool = False) -> np.ndarray:
    """Validate an (m, d) matrix of updates known to the attacker (see ``as_update_matrix``).

    A 1-D array is taken as a single update (m = 1). Raises ``ValueError`` on a wrong
    shape, a non-real dtype, NaN/Inf, or fewer than ``min_rows`` rows. A torch tensor stays
    one (on its device) when ``tensors``, else it is copied to a NumPy array.
    """
    X = updates if tensors and is_tensor(updates) else np.asarray(to_numpy(updates))
    if X.ndim == 1:
        X = X[None, :]
    try:
        X = as_update_matrix(X)
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from None
    if X.shape[0] < min_rows:
        raise ValueError(f"{what}: needs at least {min_rows} updates, got {X.shape[0]}")
    return X


def check_int(name: str, value, *, minimum: int | None = None) -> int:
    """Return ``value`` as an int, refusing bools, floats and values below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_finite_scalar(name: str, value, *, nonnegative: bool = False, positive: bool = False) -> float:
    """Return ``value`` as a finite float (optionally >= 0 or > 0), else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if nonnegative and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def mean_std(X: np.ndarray, *, ddof: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-coordinate mean and standard deviation of the rows of X, both float64 (d,).

    Two passes per column chunk (mean, then the mean of squared deviations): no
    cancellation of ``E[x^2] - E[x]^2``. ``ddof=0`` is the population standard deviation
    (divide by m), ``ddof=1`` the sample one (divide by m - 1, needs m >= 2).
    """
    m, d = X.shape
    if m - ddof <= 0:
        raise ValueError(f"a standard deviation with ddof={ddof} needs more than {ddof} updates, got {m}")
    if is_tensor(X):  # the same two passes on X's device; float64 (d,) tensors there
        import torch

        mu = torch.empty(d, dtype=torch.float64, device=X.device)
        sigma = torch.empty(d, dtype=torch.float64, device=X.device)
        for a in range(0, d, CHUNK_COLUMNS):
            block = X[:, a : a + CHUNK_COLUMNS].double()
            mu[a : a + CHUNK_COLUMNS] = mu_b = block.mean(dim=0)
            sigma[a : a + CHUNK_COLUMNS] = torch.sqrt(((block - mu_b) ** 2).sum(dim=0) / (m - ddof))
        return mu, sigma
    mu = np.empty(d, dtype=np.float64)
    sigma = np.empty(d, dtype=np.float64)
    for a in range(0, d, CHUNK_COLUMNS):
        block = X[:, a : a + CHUNK_COLUMNS].astype(np.float64)
        mu_b = block.mean(axis=0)
        block -= mu_b
        np.square(block, out=block)
        mu[a : a + CHUNK_COLUMNS] = mu_b
        sigma[a : a + CHUNK_COLUMNS] = np.sqrt(block.sum(axis=0) / (m - ddof))
    return mu, sigma


def as_float32(v):
    """A float64 result as the float32 update the attackers send (tensor or array)."""
    return v.float() if is_tensor(v) else v.astype(np.float32)
