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
distance. An entry is *unresolved* when it is not finite or far below the rounding error
bound of its two rows (and the rows are not exact duplicates). Unresolved entries are
recomputed, in this order, until none is left:

1. Each group of rows linked by unresolved entries gets a Gram matrix of its own, centred
   at its own mean; what that leaves unresolved splits into groups again (a few times).
   This covers what attacks send: a tight cluster of colluding updates far from the honest
   ones (the group is the cluster, whose own mean sits inside it; two such clusters on
   either side are two groups), and a huge update that drags the overall mean away from the
   honest majority (the group is the honest rows). A group of k rows costs (k / n)^2 of the
   first product.
2. The rows still involved get a Gram matrix centred at their coordinate-wise median,
   which stays within the range of the honest values whenever they are a majority (the case
   of float32 products that overflow for every pair).
3. Whatever is left is computed directly, |x_i - x_j|^2 from the differences (one pass over
   X per row involved, float64 where float32 overflows): exact up to the rounding of the sum.
   Only distances beyond float64's range come out as ``inf``.

On a torch tensor (:mod:`.backend`) the passes over X run on its device: the centred chunks'
products in X's precision without TF32, accumulated in float64, and the direct distances
from float64 differences; the small (n, n) matrices are NumPy arrays on the host.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from ._validate import raise_if_nonfinite
from .backend import as_like, chunk_width, exact_float32_products, is_tensor, row_index, rows_equal, to_numpy
from .kernels import coordinate_median

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
    if is_tensor(X):
        return _centred_gram_tensor(X, chunk_columns, robust, rows)
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


def _centred_gram_tensor(X, chunk_columns: int, robust: bool, rows=None) -> np.ndarray:
    """:func:`_centred_gram` on a tensor's device; returns the float64 NumPy matrix.

    Each centred chunk's product runs in X's precision without TF32 and is accumulated in
    float64, as on NumPy, and the sum is made exactly symmetric: a device GEMM need not give
    the (i, j) and (j, i) products the same rounding, and Krum's ties (broken by the lower
    client index) must not be decided by that rounding; bit-identical rows get identical
    Gram rows (:func:`_same_rows_same_products`). What the products still leave unresolved
    goes on to the later passes, as on NumPy."""
    idx = None if rows is None else row_index(X, rows)
    k = X.shape[0] if rows is None else len(rows)
    G = as_like(np.zeros((k, k)), X, np.float64)
    average = as_like(np.full(k, 1.0 / k), X)
    step = chunk_width(X, k, chunk_columns)
    with exact_float32_products():
        for a in range(0, X.shape[1], step):
            block = X[:, a : a + step] if idx is None else X[idx, a : a + step]
            centre = coordinate_median(block) if robust else average @ block
            centred = block - centre
            G += (centred @ centred.T).double()
    G = to_numpy(G)
    G = 0.5 * (G + G.T)
    _same_rows_same_products(X, G, np.arange(k) if rows is None else np.asarray(rows))
    return G


def _same_rows_same_products(X, G: np.ndarray, rows: np.ndarray) -> None:
    """Give bit-identical rows of X identical rows and columns of G (in place): a device
    GEMM may round their products apart by position, and then the Krum scores of identical
    updates (ALIE's colluders, copies) would differ by rounding instead of tying (ties go to
    the lower client index). Candidates are the pairs whose distance the products make
    tiny; each is checked against the first row of its class, bit for bit, on X's device."""
    sq = np.diag(G)
    with np.errstate(invalid="ignore"):
        near = np.abs(sq[:, None] + sq[None, :] - 2.0 * G) <= 1e-5 * (sq[:, None] + sq[None, :])
    rep = np.arange(len(rows))
    for j in range(len(rows)):
        for i in np.flatnonzero(near[j, :j]):
            if rep[i] == i and rows_equal(X, int(rows[i]), int(rows[j])):
                rep[j] = i
                break
    for j in np.flatnonzero(rep != np.arange(len(rows))):
        G[j, :] = G[rep[j], :]
        G[:, j] = G[:, rep[j]]
        G[j, j] = G[rep[j], rep[j]]


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
    return all(rows_equal(X, int(rows[i]), int(rows[rep[i]])) for i in np.flatnonzero(rep != np.arange(k)))


def _distances_from_gram(X: np.ndarray, G: np.ndarray, rows=None) -> tuple[np.ndarray, np.ndarray]:
    """(D, unresolved): D from the Gram matrix of ``X[rows]`` (of X when None), and the
    boolean matrix of the entries it does not resolve reliably."""
    rows = np.arange(G.shape[0]) if rows is None else rows
    sq = np.diag(G).copy()
    D = sq[:, None] + sq[None, :] - 2.0 * G
    off = ~np.eye(G.shape[0], dtype=bool)
    same = (G == sq[:, None]) & (G == sq[None, :]) & np.isfinite(G)  # centred rows bit-identical
    small = ~np.isfinite(D) | (D < _RESOLVED_FRACTION * (sq[:, None] + sq[None, :]))
    unresolved = small & ~same & off
    if not _duplicates_verified(X, same, rows):
        unresolved |= same & off
    D[np.isnan(D)] = np.inf  # inf - inf: the float32 product overflowed, the distance is huge
    np.maximum(D, 0.0, out=D)
    np.fill_diagonal(D, 0.0)
    return D, unresolved


# Columns per step of the row-by-row kernels (sq_distances_to here, the geometric median's
# weighted sums): a float32 slice of v (or of the partial sum) this long stays in the CPU
# caches while the rows stream past it.
ROW_STEP = 250_000


def distances_to(X: np.ndarray, v: np.ndarray) -> np.ndarray:
    """|x_i - v| for every row: the square root of :func:`sq_distances_to`."""
    return np.sqrt(sq_distances_to(X, v))


def sq_distances_to(X: np.ndarray, v: np.ndarray) -> np.ndarray:
    """|x_i - v|^2 (float64) for every row, computed directly (no Gram trick), row by row.

    The differences are exact when x_i is within a factor two of v (Sterbenz), so nearly
    equal updates do not cancel; each step's sum of squares (positive terms: no
    cancellation either) runs in X's precision (a BLAS dot) and the steps are accumulated
    in float64. A step whose float32 differences or squares overflow (entries beyond about
    1e19) is redone in float64, so a huge but finite update gets its true, finite distance.
    Each row's distance depends on that row alone, never on the other rows or their order.
    On a tensor X (``v`` a tensor or an array) the differences are taken in float64 on X's
    device, a chunk of columns for all rows at once; the result is a NumPy array.
    """
    if is_tensor(X):
        v64 = as_like(v, X, np.float64).reshape(-1)
        acc = as_like(np.zeros(X.shape[0]), X, np.float64)
        step = chunk_width(X, X.shape[0], ROW_STEP // 4)
        for a in range(0, X.shape[1], step):
            diff = X[:, a : a + step].double() - v64[a : a + step]
            acc += (diff * diff).sum(dim=1)
        return to_numpy(acc)
    n, d = X.shape
    sq = np.zeros(n)
    step = min(ROW_STEP, d)
    buf = np.empty(step, dtype=X.dtype)  # reused: no fresh pages per row
    with np.errstate(over="ignore", invalid="ignore"):
        for a in range(0, d, step):
            centre = v[a : a + step]
            diff = buf[: centre.shape[0]]
            for i in range(n):
                np.subtract(X[i, a : a + step], centre, out=diff)
                part = float(np.dot(diff, diff))
                if not math.isfinite(part) or (part == 0.0 and diff.any()):
                    # overflow, or a NaN / Inf in X (the caller checks); or squares that all
                    # underflow (subnormal differences): float64 has the range for both
                    diff64 = X[i, a : a + step].astype(np.float64) - centre
                    part = float(np.dot(diff64, diff64))
                sq[i] += part
    return sq


def _linked_groups(unresolved: np.ndarray) -> list[np.ndarray]:
    """The groups of rows linked by unresolved entries (connected components, each sorted)."""
    involved = np.flatnonzero(unresolved.any(axis=1))
    if involved.size == 0:
        return []
    _, label = connected_components(csr_matrix(unresolved[np.ix_(involved, involved)]), directed=False)
    return [involved[label == k] for k in range(label.max() + 1)]


def _refine(D: np.ndarray, unresolved: np.ndarray, X: np.ndarray, G: np.ndarray, rows: np.ndarray) -> None:
    """Take the entries of ``X[rows]`` that are unresolved from the Gram matrix G of those
    rows; they stay unresolved where G does not resolve them either (in place)."""
    sub = np.ix_(rows, rows)
    D_rows, still = _distances_from_gram(X, G, rows)
    todo = unresolved[sub]
    D[sub] = np.where(todo, D_rows, D[sub])
    unresolved[sub] = todo & still


# At most this many rounds of step 1 (each splits what the previous one left).
_MAX_SPLITS = 3


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
        tried = {tuple(range(n))}  # a group's own mean is the same as last time: no progress
        for _ in range(_MAX_SPLITS):
            groups = [g for g in _linked_groups(unresolved) if tuple(g) not in tried]
            if not groups:
                break
            for rows in groups:
                tried.add(tuple(rows))
                _refine(D, unresolved, X, _centred_gram(X, chunk_columns, False, rows), rows)
        rows = np.flatnonzero(unresolved.any(axis=1))
        if rows.size:
            _refine(D, unresolved, X, _centred_gram(X, chunk_columns, True, rows), rows)
        for i in np.flatnonzero(unresolved.any(axis=1)):
            todo = unresolved[i]
            if todo.any():
                direct = sq_distances_to(X, X[int(i)])
                D[i, todo] = D[todo, i] = direct[todo]
                unresolved[i, todo] = unresolved[todo, i] = False
    return D


def cosine_distances(X: np.ndarray, origin: np.ndarray | None = None, sq_norms: np.ndarray | None = None) -> np.ndarray:
    """(n, n) float64 matrix of cosine distances 1 - cos(w_i, w_j) between the points
    w_i = origin + x_i (the rows of X when ``origin`` is None; the clients' models when X
    holds their updates and ``origin`` the global model, as FLAME compares them).

    From the careful squared distances D (:func:`pairwise_sq_distances`: |w_i - w_j| =
    |x_i - x_j|) and the norms a_i = |w_i|: 1 - cos = (D_ij - (a_i - a_j)^2) / (2 a_i a_j),
    clipped to [0, 2]. With an origin g, a_i - a_j is taken as (a_i^2 - a_j^2) / (a_i + a_j)
    with a_i^2 = |g|^2 + 2 <g, x_i> + |x_i|^2 (float64 products), so models that differ by
    tiny updates keep their true tiny distances. No normalised copy of X is made, and
    nearly equal updates (what ALIE sends) get their true small distances instead of the
    rounding noise of 1 - x.y / (|x| |y|). A zero point is taken as orthogonal to every
    other point (distance 1; 0 to another zero point). ``sq_norms``: the |x_i|^2 when the
    caller has them (:func:`sq_distances_to` to zero), to save a pass over X.
    """
    D = pairwise_sq_distances(X)
    q = sq_distances_to(X, np.zeros(X.shape[1], dtype=X.dtype)) if sq_norms is None else sq_norms  # |x_i|^2
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        if origin is None:
            a = np.sqrt(q)
            gap = a[:, None] - a[None, :]
        else:
            from .kernels import row_dots

            g = np.asarray(origin, dtype=np.float64).reshape(-1)
            p = row_dots(X, g)
            sq = np.maximum(float(g @ g) + 2.0 * p + q, 0.0)
            a = np.sqrt(sq)
            gap = (2.0 * (p[:, None] - p[None, :]) + (q[:, None] - q[None, :])) / (a[:, None] + a[None, :])
        ab = a[:, None] * a[None, :]
        C = (D - gap**2) / (2.0 * ab)
    C = np.where(ab > 0, np.clip(C, 0.0, 2.0), np.where((a[:, None] == 0) & (a[None, :] == 0), 0.0, 1.0))
    # entries the identity cannot give (norms or distances beyond float64's range: only huge
    # updates): directly from the unit rows, each scaled by its largest entry first
    for i in np.unique(np.nonzero(~np.isfinite(C))[0]):
        ui = _unit_row(X, i, origin)
        for j in np.flatnonzero(~np.isfinite(C[i])):
            C[i, j] = C[j, i] = min(max(0.5 * float(np.sum((ui - _unit_row(X, j, origin)) ** 2)), 0.0), 2.0)
    np.fill_diagonal(C, 0.0)
    return C


def _unit_row(X: np.ndarray, i: int, origin=None) -> np.ndarray:
    """Row i of X (plus ``origin``) as a float64 unit vector (zeros for a zero row), safe
    for any finite row."""
    row = X[i].astype(np.float64)
    if origin is not None:
        row += np.asarray(origin, dtype=np.float64).reshape(-1)
    top = np.abs(row).max()
    if not top > 0:
        return np.zeros_like(row)
    row /= top
    return row / np.linalg.norm(row)
