"""Shared kernels of the rules: sorted column chunks, the coordinate-wise median, the mean
of the values closest to the median. Any rule may import them (they import nothing but the
chunk size and the backend seam), so a coordinate-wise rule never needs another rule's
module. Each takes a NumPy array or a torch tensor (:mod:`.backend`): the length-d results
stay on X's backend and device, the per-row ones are float64 NumPy arrays.
"""

from __future__ import annotations

import numpy as np

from ._validate import CHUNK_COLUMNS
from .backend import as_like, chunk_width, device_of, is_tensor, namespace, row_index, to_numpy


def sorted_column_chunks(X: np.ndarray, rows=None):
    """Yield ``(a, block)`` for each chunk of columns ``a : a + CHUNK_COLUMNS`` of ``X``
    (of ``X[rows]`` when ``rows`` is given): ``block`` is the chunk's (c, n) transpose with
    each row sorted, in one buffer reused from chunk to chunk (use it before the next one).

    Sorting along contiguous rows of a transposed copy is much faster than any operation
    along axis 0; and at the row lengths of a federated round (tens to hundreds of clients)
    numpy's vectorised sort (numpy >= 2) is as fast as a single ``np.partition``, so the
    coordinate rules take every order statistic they need from one sort. On a tensor each
    chunk is a fresh sorted (c, n) tensor on X's device (wider chunks on CUDA).
    """
    if is_tensor(X):
        import torch

        idx = None if rows is None else row_index(X, rows)
        k = X.shape[0] if rows is None else len(rows)
        step = chunk_width(X, k)
        for a in range(0, X.shape[1], step):
            chunk = X[:, a : a + step] if idx is None else X[idx, a : a + step]
            yield a, torch.sort(chunk.T, dim=1).values
        return
    n, d = (X.shape[0] if rows is None else len(rows)), X.shape[1]
    buf = np.empty((min(CHUNK_COLUMNS, d), n), dtype=X.dtype)  # no fresh pages per chunk
    for a in range(0, d, CHUNK_COLUMNS):
        chunk = X[:, a : a + CHUNK_COLUMNS] if rows is None else X[rows, a : a + CHUNK_COLUMNS]
        block = buf[: chunk.shape[1]]
        np.copyto(block, chunk.T)
        block.sort(axis=1)
        yield a, block


def coordinate_median(X: np.ndarray) -> np.ndarray:
    """Coordinate-wise median of the rows of an already validated matrix (chunked)."""
    xp = namespace(X)
    n, d = X.shape
    out = xp.empty(d, dtype=X.dtype, device=device_of(X))
    lo, hi = (n - 1) // 2, n // 2
    for a, part in sorted_column_chunks(X):
        c = part.shape[0]
        if lo == hi:
            out[a : a + c] = part[:, hi]
        else:  # even n: the mean of the two middle values
            out[a : a + c] = 0.5 * (xp.astype(part[:, lo], xp.float64) + part[:, hi])
    return out



def _window_means(block: np.ndarray, lo: int, hi: int, beta: int) -> np.ndarray:
    """Per row of a row-sorted (c, theta) block, the mean of its ``beta`` values nearest the
    row's median, ties at equal distance going to the lower values.

    Those values are a window of beta consecutive sorted values. The leftmost candidate
    window ends at the lower middle position ``lo``; sliding it one step right swaps its
    lowest value for the next one above it, which pays exactly when the incoming value is
    strictly nearer the median than the outgoing one. That test holds for a prefix of the
    steps (the sum of the two values never decreases), so the window's start is the leftmost
    start plus the number of steps that pass. The window is then summed in float64 from its
    own values only (nothing is subtracted, so a huge value outside the window cannot drown
    the small ones inside it): the columns every candidate window holds in one slice, the
    others column by column where they fall inside the row's window.
    """
    xp, dev = namespace(block), device_of(block)
    theta = block.shape[1]
    med = 0.5 * (xp.astype(block[:, lo], xp.float64) + block[:, hi])
    i0, i1 = max(lo - beta + 1, 0), min(hi, theta - beta)  # first and last candidate starts
    start = xp.full(block.shape[0], i0, dtype=xp.int64, device=dev)
    for s in range(i0 + 1, i1 + 1):
        start += xp.astype((block[:, s + beta - 1] - med) < (med - block[:, s - 1]), xp.int64)
    core_lo, core_hi = i1, i0 + beta  # columns inside every candidate window
    if core_lo < core_hi:
        total = xp.sum(block[:, core_lo:core_hi], axis=1, dtype=xp.float64)
    else:
        total = xp.zeros(block.shape[0], dtype=xp.float64, device=dev)
    for j in range(i0, i1 + beta):
        if not core_lo <= j < core_hi:
            inside = (start <= j) & (j < start + beta)
            total += xp.where(inside, xp.astype(block[:, j], xp.float64), xp.zeros_like(total))
    return total / beta


def closest_to_median_mean(X: np.ndarray, rows, beta: int) -> np.ndarray:
    """Per coordinate, the mean of the beta values of X[rows] (of all of X when ``rows`` is
    None) closest to their median (ties at equal distance: the lower values).

    Per column chunk, the selected rows are copied transposed (one contiguous row per
    coordinate) and each row is sorted (:func:`sorted_column_chunks`); :func:`_window_means` then
    finds and averages the window of the beta nearest values.
    """
    rows = None if rows is None else np.sort(np.asarray(rows))
    theta = X.shape[0] if rows is None else rows.size
    out = namespace(X).empty(X.shape[1], dtype=X.dtype, device=device_of(X))
    lo, hi = (theta - 1) // 2, theta // 2  # the middle positions (equal for odd theta)
    for a, block in sorted_column_chunks(X, rows):
        out[a : a + len(block)] = _window_means(block, lo, hi, beta)
    return out


def row_dots(X: np.ndarray, v: np.ndarray) -> np.ndarray:
    """<x_i, v> for every row of X, float64 (n,): each column chunk of X is widened to
    float64 before its product, so nearly orthogonal or nearly equal rows keep their true
    products (no float32 accumulation). Extra memory: one (n, CHUNK_COLUMNS) float64 block.
    On a tensor X (``v`` a tensor or an array) the products run on X's device."""
    if is_tensor(X):
        v64 = as_like(v, X, np.float64).reshape(-1)
        acc = as_like(np.zeros(X.shape[0]), X, np.float64)
        step = chunk_width(X, X.shape[0])
        for a in range(0, X.shape[1], step):
            acc += X[:, a : a + step].double() @ v64[a : a + step]
        return to_numpy(acc)
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    out = np.zeros(X.shape[0])
    with np.errstate(over="ignore", invalid="ignore"):
        for a in range(0, X.shape[1], CHUNK_COLUMNS):
            out += X[:, a : a + CHUNK_COLUMNS].astype(np.float64) @ v[a : a + CHUNK_COLUMNS]
    return out
