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

The column mean is not robust, and a mean-centred float32 product cannot resolve every
distance. When the first pass shows unresolved entries (a non-finite distance, or one far
below the rounding error bound of its two rows that is not an exact duplicate), a second
pass recomputes the Gram matrix of just the rows involved, centred at *their* mean. Two
cases cover what attacks send: a tight cluster of colluding updates far from the honest
ones (the rows involved are the cluster, whose own mean sits inside it), and a huge
Byzantine update that drags the overall mean away from the honest majority (the rows
involved are the honest ones, whose own mean is theirs). That pass costs (k / n)^2 of the
first for k rows involved. If it still leaves entries unresolved, or every row is involved,
the Gram matrix of all rows is recomputed around the coordinate-wise median, which stays
within the range of the honest values whenever they are a majority. Distances that still
overflow are returned as ``inf``.
"""

from __future__ import annotations

import numpy as np

from ._validate import raise_if_nonfinite
from .coordinate import coordinate_median

# An off-diagonal entry below this fraction of |c_i|^2 + |c_j|^2 (c = centred rows) is not
# resolved reliably by a float32 Gram matrix; it triggers the later passes.
_RESOLVED_FRACTION = 1e-2

# Columns per Gram chunk: narrower than the coordinate rules' CHUNK_COLUMNS, so that a chunk
# read for its column mean is still in cache when it is centred and multiplied (measured at
# n = 51 and 101, d = 1e6: 7-9% faster than 60,000 columns). Not a power of two (see
# CHUNK_COLUMNS). More chunks also means that more of each dot product is summed in float64.
GRAM_COLUMNS = 7_500


def _centred_gram(X: np.ndarray, chunk_columns: int, robust: bool, rows=None) -> np.ndarray:
    """Gram matrix of the rows of X (of ``X[rows]`` when given), each chunk of columns
    centred at its column mean (at its coordinate-wise median when ``robust``)."""
    d = X.shape[1]
    k = X.shape[0] if rows is None else len(rows)
    G = np.zeros((k, k), dtype=np.float64)
    buf = np.empty((k, min(chunk_columns, d)), dtype=X.dtype)  # reused: no fresh pages per chunk
    average = np.full(k, 1.0 / k, dtype=X.dtype)
    for a in range(0, d, chunk_columns):
        block = X[:, a : a + chunk_columns]
        centred = buf[:, : block.shape[1]]
        if rows is not None:  # row by row: much faster than np.take on a strided block
            for j, r in enumerate(rows):
                centred[j] = block[r]
            block = centred
        # Any centre common to all rows leaves the distances unchanged; the column mean (one
        # matrix-vector product) keeps the centred norms of the order of the spread.
        centre = coordinate_median(block).astype(X.dtype) if robust else average @ block
        np.subtract(block, centre, out=centred)
        G += centred @ centred.T
    return G


def _duplicates_verified(X: np.ndarray, same: np.ndarray, rows: np.ndarray) -> bool:
    """True when the rows that look identical after centring are bit-identical in X.

    Centring around a far-away centre can round distinct rows to the same values, so an
    exact zero distance is only trusted once the raw rows compare equal (O(n d) at most).
    ``rows[i]`` is the row of X behind row i of ``same``.
    """
    k = same.shape[0]
    rep = np.argmax(same, axis=1)  # first row of each group of centred-identical rows
    if np.any(same != (rep[:, None] == rep[None, :])):
        return False
    return all(np.array_equal(X[rows[i]], X[rows[rep[i]]]) for i in np.flatnonzero(rep != np.arange(k)))


def _distances_from_gram(X: np.ndarray, G: np.ndarray, rows=None) -> tuple[np.ndarray, np.ndarray]:
    """(D, unresolved): D from the Gram matrix of ``X[rows]`` (of X when None), and the
    boolean matrix of the entries it does not resolve reliably."""
    rows = np.arange(G.shape[0]) if rows is None else rows
    sq = np.diag(G).copy()
    D = sq[:, None] + sq[None, :] - 2.0 * G
    off = ~np.eye(G.shape[0], dtype=bool)
    same = (G == sq[:, None]) & (G == sq[None, :])  # centred rows that are bit-identical
    small = ~np.isfinite(D) | (D < _RESOLVED_FRACTION * (sq[:, None] + sq[None, :]))
    unresolved = small & ~same & off
    if not _duplicates_verified(X, same, rows):
        unresolved |= same & off
    D[np.isnan(D)] = np.inf  # inf - inf: the float32 product overflowed, the distance is huge
    np.maximum(D, 0.0, out=D)
    np.fill_diagonal(D, 0.0)
    return D, unresolved


def pairwise_sq_distances(X: np.ndarray, chunk_columns: int = GRAM_COLUMNS) -> np.ndarray:
    """Return the symmetric (n, n) float64 matrix of squared distances between rows of X.

    Extra memory: one (n, chunk_columns) block plus O(n^2), whatever d is. A NaN or Inf
    anywhere in X reaches the first pass's Gram matrix (through the column mean), so X need
    not be scanned beforehand: a non-finite Gram matrix triggers the scan, which raises
    ``ValueError`` naming the client (a finite X whose products overflowed goes on to the
    later passes, see the module docstring).
    """
    n = X.shape[0]
    with np.errstate(over="ignore", invalid="ignore"):
        G = _centred_gram(X, chunk_columns, robust=False)
        raise_if_nonfinite(X, G)
        D, unresolved = _distances_from_gram(X, G)
        if not unresolved.any():
            return D
        rows = np.flatnonzero(unresolved.any(axis=1))
        if rows.size < n:  # second pass: the rows involved, centred at their own mean
            sub = np.ix_(rows, rows)
            D_rows, still = _distances_from_gram(X, _centred_gram(X, chunk_columns, False, rows), rows)
            if not still.any():
                D[sub] = np.where(unresolved[sub], D_rows, D[sub])
                return D
        D, _ = _distances_from_gram(X, _centred_gram(X, chunk_columns, robust=True))
    return D
