"""Input checks shared by every rule of the core: shape, dtype, finiteness, the f bound."""

from __future__ import annotations

import numpy as np
from array_api_compat import is_torch_array

# Columns processed at once by the chunked kernels: bounds the extra memory of every rule
# to about ``n * CHUNK_COLUMNS`` floats, independent of d. Deliberately not a power of two:
# strided passes over a power-of-two width alias in the CPU caches (a chunked partition at
# 65,536 columns ran 4x slower than at 60,000, at 16,384 thirty times slower).
CHUNK_COLUMNS = 60_000


class ByzantineBoundError(ValueError):
    """Raised when a rule cannot tolerate ``f`` Byzantine clients among ``n`` inputs."""


def as_update_matrix(updates, *, check_finite: bool = True) -> np.ndarray:
    """Return ``updates`` as a C-contiguous floating (n, d) matrix, checked.

    float32 and float64 inputs keep their dtype (float64 is what the reference tests use);
    any other real dtype is converted to float32. A torch tensor stays a tensor on its
    device (detached, contiguous; see :mod:`.backend`). Raises ``ValueError`` naming the first
    row that holds NaN or Inf. ``check_finite=False`` leaves that scan to the caller: the
    rules whose first pass over X propagates any NaN or Inf into a small result (the Gram
    matrix of the distance rules, the mean) check that result and only then scan X
    (:func:`raise_if_nonfinite`), which saves a pass over X on valid input.
    """
    if is_torch_array(updates):
        return _as_tensor_matrix(updates, check_finite)
    X = np.asarray(updates)
    if X.ndim != 2:
        raise ValueError(f"expected a 2-D (n, d) update matrix, got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"empty update matrix of shape {X.shape}")
    if X.dtype.kind == "c" or X.dtype.kind not in "fiub":
        raise ValueError(f"update matrix must be real-valued, got dtype {X.dtype}")
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float32)
    X = np.ascontiguousarray(X)
    if check_finite:
        raise_if_nonfinite(X)
    return X


def _as_tensor_matrix(updates, check_finite: bool):
    """:func:`as_update_matrix` for a torch tensor: the same checks and conversions, on the
    tensor's device."""
    import torch

    X = updates.detach()
    if X.layout != torch.strided:
        raise ValueError(f"update matrix must be a dense tensor, got layout {X.layout}")
    if X.ndim != 2:
        raise ValueError(f"expected a 2-D (n, d) update matrix, got shape {tuple(X.shape)}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"empty update matrix of shape {tuple(X.shape)}")
    if X.is_complex():
        raise ValueError(f"update matrix must be real-valued, got dtype {X.dtype}")
    if X.dtype not in (torch.float32, torch.float64):
        X = X.to(torch.float32)
    X = X.resolve_conj().resolve_neg().contiguous()  # a lazy negated view, materialised
    if check_finite:
        raise_if_nonfinite(X)
    return X


def raise_if_nonfinite(X: np.ndarray, result: np.ndarray | None = None) -> None:
    """Raise ``ValueError`` naming the first row of ``X`` that holds NaN or Inf.

    ``result``: a small array computed from every entry of X (a Gram matrix, a mean, the
    distances to a point), which any NaN or Inf in X reaches. X is then scanned only when
    ``result`` is not finite, so that valid input costs no extra pass over X (a finite X
    whose result overflowed is scanned and passes).
    """
    if result is not None:
        if is_torch_array(result):
            result = result.detach().cpu().numpy()
        if np.isfinite(result).all():
            return
    bad = nonfinite_rows(X)
    if bad.size:
        raise ValueError(f"update of client {int(bad[0])} holds NaN or Inf values")


def nonfinite_rows(X: np.ndarray) -> np.ndarray:
    """Indices of rows of ``X`` holding NaN or Inf (chunked, no (n, d) temporary)."""
    n, d = X.shape
    if is_torch_array(X):
        import torch

        ok = torch.ones(n, dtype=torch.bool, device=X.device)
        for a in range(0, d, CHUNK_COLUMNS):
            ok &= torch.isfinite(X[:, a : a + CHUNK_COLUMNS]).all(dim=1)
        return np.flatnonzero(~ok.cpu().numpy())
    ok = np.ones(n, dtype=bool)
    for a in range(0, d, CHUNK_COLUMNS):
        ok &= np.isfinite(X[:, a : a + CHUNK_COLUMNS]).all(axis=1)
    return np.flatnonzero(~ok)


def as_weights(weights, n: int) -> np.ndarray | None:
    """Validate optional per-client weights (e.g. numbers of examples).

    Returns None or (n,) float64 weights divided by their maximum, so that no later sum of
    them can overflow (the rules normalise anyway). Raises ``ValueError`` unless every
    weight is finite and >= 0 and at least one is positive.
    """
    if weights is None:
        return None
    if is_torch_array(weights):
        weights = weights.detach().cpu().numpy()
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape[0] != n:
        raise ValueError(f"got {w.shape[0]} weights for {n} updates")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or not w.max() > 0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    return w / w.max()


def check_f(rule: str, n: int, f: int, *, a: int | None = None, b: int | None = None, minimum=None,
            formula: str | None = None) -> None:
    """Raise unless f is a non-negative integer (``ValueError``) and n is at least the
    rule's minimum (``ByzantineBoundError``): ``minimum(f)`` when given, else ``a * f + b``;
    ``formula`` names the bound (by default "af + b"). The rules call it through
    :func:`flwr_byz.aggregation.registry.check_bound`, which reads their spec."""
    if not isinstance(f, (int, np.integer)) or isinstance(f, bool) or f < 0:
        raise ValueError(f"{rule}: f must be a non-negative integer, got {f!r}")
    minimum_n = int(minimum(int(f))) if minimum is not None else a * int(f) + b
    if n < minimum_n:
        formula = formula or f"{a if a != 1 else ''}f + {b}"
        raise ByzantineBoundError(
            f"{rule} needs n >= {formula} = {minimum_n} updates to tolerate f={f} "
            f"Byzantine clients, got n={n}"
        )
