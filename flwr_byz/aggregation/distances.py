"""Pairwise squared Euclidean distances between the rows of an (n, d) update matrix.

The Gram-matrix identity ``|x - y|^2 = |x|^2 + |y|^2 - 2 x.y`` is what makes the distance
rules fast (one matrix product), but applied to raw float32 updates it cancels
catastrophically when updates are nearly equal, which is exactly what the ALIE attack sends.
We apply it to *centred* data instead: every column is shifted by its mean (distances are
translation invariant), so the norms entering the identity are of the order of the spread
of the updates, not of their magnitude. By Sterbenz' lemma the subtraction is exact for
entries within a factor two of the column mean, and each chunk's float32 Gram matrix is
accumulated in float64, so the result agrees with a float64 direct computation to about
1e-6 relative to the squared spread (tests/test_distances.py checks it on ALIE-like input).

The column mean is not robust: a single huge Byzantine update drags it far from the honest
updates, and then the honest distances drown in rounding error (or the float32 product
overflows to inf / NaN). When the first pass shows such an entry (a non-finite distance, or
one far below the rounding error bound of its two rows that is not an exact duplicate),
the Gram matrix is recomputed around the coordinate-wise median, which stays within the
range of the honest values whenever they are a majority. Distances that still overflow
are returned as ``inf``.
"""

from __future__ import annotations

import numpy as np

from ._validate import CHUNK_COLUMNS, raise_if_nonfinite
from .coordinate import coordinate_median

# An off-diagonal entry below this fraction of |c_i|^2 + |c_j|^2 (c = centred rows) is not
# resolved reliably by a float32 Gram matrix; it triggers the median-centred second pass.
_RESOLVED_FRACTION = 1e-2


def _centred_gram(X: np.ndarray, chunk_columns: int, robust: bool) -> np.ndarray:
    n, d = X.shape
    G = np.zeros((n, n), dtype=np.float64)
    buf = np.empty((n, min(chunk_columns, d)), dtype=X.dtype)  # reused: no fresh pages per chunk
    average = np.full(n, 1.0 / n, dtype=X.dtype)
    for a in range(0, d, chunk_columns):
        block = X[:, a : a + chunk_columns]
        centred = buf[:, : block.shape[1]]
        # Any centre common to all rows leaves the distances unchanged; the column mean (one
        # matrix-vector product) keeps the centred norms of the order of the spread.
        centre = coordinate_median(block).astype(X.dtype) if robust else average @ block
        np.subtract(block, centre, out=centred)
        G += centred @ centred.T
    return G


def _duplicates_verified(X: np.ndarray, same: np.ndarray) -> bool:
    """True when the rows that look identical after centring are bit-identical in X.

    Centring around a far-away centre can round distinct rows to the same values, so an
    exact zero distance is only trusted once the raw rows compare equal (O(n d) at most).
    """
    n = X.shape[0]
    rep = np.argmax(same, axis=1)  # first row of each group of centred-identical rows
    if np.any(same != (rep[:, None] == rep[None, :])):
        return False
    return all(np.array_equal(X[i], X[rep[i]]) for i in np.flatnonzero(rep != np.arange(n)))


def _distances_from_gram(X: np.ndarray, G: np.ndarray) -> tuple[np.ndarray, bool]:
    """(D, unreliable): D from the Gram matrix; unreliable when some entry is not resolved."""
    sq = np.diag(G).copy()
    D = sq[:, None] + sq[None, :] - 2.0 * G
    off = ~np.eye(G.shape[0], dtype=bool)
    same = (G == sq[:, None]) & (G == sq[None, :])  # centred rows that are bit-identical
    small = ~np.isfinite(D) | (D < _RESOLVED_FRACTION * (sq[:, None] + sq[None, :]))
    unreliable = bool(np.any(small & ~same & off)) or not _duplicates_verified(X, same)
    D[np.isnan(D)] = np.inf  # inf - inf: the float32 product overflowed, the distance is huge
    np.maximum(D, 0.0, out=D)
    np.fill_diagonal(D, 0.0)
    return D, unreliable


def pairwise_sq_distances(X: np.ndarray, chunk_columns: int = CHUNK_COLUMNS) -> np.ndarray:
    """Return the symmetric (n, n) float64 matrix of squared distances between rows of X.

    Extra memory: one (n, chunk_columns) block plus O(n^2), whatever d is. A NaN or Inf
    anywhere in X reaches the first pass's Gram matrix (through the column mean), so X need
    not be scanned beforehand: a non-finite Gram matrix triggers the scan, which raises
    ``ValueError`` naming the client (a finite X whose products overflowed goes on to the
    median-centred pass).
    """
    with np.errstate(over="ignore", invalid="ignore"):
        G = _centred_gram(X, chunk_columns, robust=False)
        if not np.isfinite(G).all():
            raise_if_nonfinite(X)
        D, unreliable = _distances_from_gram(X, G)
        if unreliable:
            D, _ = _distances_from_gram(X, _centred_gram(X, chunk_columns, robust=True))
    return D
