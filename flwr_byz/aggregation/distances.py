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
"""

from __future__ import annotations

import numpy as np

from ._validate import CHUNK_COLUMNS


def pairwise_sq_distances(X: np.ndarray, chunk_columns: int = CHUNK_COLUMNS) -> np.ndarray:
    """Return the symmetric (n, n) float64 matrix of squared distances between rows of X.

    Extra memory: one (n, chunk_columns) block plus O(n^2), whatever d is.
    """
    n, d = X.shape
    G = np.zeros((n, n), dtype=np.float64)
    for a in range(0, d, chunk_columns):
        block = X[:, a : a + chunk_columns]
        centred = block - block.mean(axis=0, dtype=np.float64).astype(X.dtype)
        G += centred @ centred.T
    sq = np.diag(G).copy()
    D = sq[:, None] + sq[None, :] - 2.0 * G
    np.maximum(D, 0.0, out=D)
    np.fill_diagonal(D, 0.0)
    return D
