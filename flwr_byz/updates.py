"""From client replies to one (n, d) float32 update matrix, and back. No Flower import.

Replies are checked one by one against the current global model (names, count, shapes,
dtypes, finiteness); a bad reply is dropped with the reason, never raised, so that one
client cannot end the round for everybody. The deltas of the good replies are written
straight into a preallocated float32 matrix (no per-client flat copy, no np.stack copy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ModelLayout:
    """Names, shapes, dtypes and flat offsets of the global model's arrays."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[np.dtype, ...]
    offsets: tuple[int, ...]  # len = len(names) + 1

    @classmethod
    def of(cls, arrays: list[np.ndarray], names: list[str] | None = None) -> "ModelLayout":
        names = [str(i) for i in range(len(arrays))] if names is None else list(names)
        sizes = [int(np.asarray(a).size) for a in arrays]
        return cls(
            tuple(names),
            tuple(tuple(np.asarray(a).shape) for a in arrays),
            tuple(np.asarray(a).dtype for a in arrays),
            tuple(int(x) for x in np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])),
        )

    @property
    def dim(self) -> int:
        return self.offsets[-1]

    def check(self, arrays, names: list[str] | None = None) -> str | None:
        """Why ``arrays`` (a client's reply) cannot be aggregated, or None when it can."""
        if names is not None and tuple(names) != self.names:
            missing = sorted(set(self.names) - set(names))
            extra = sorted(set(names) - set(self.names))
            if missing or extra:
                return f"array names differ from the global model's (missing {missing}, extra {extra})"
            return "arrays are not in the global model's order"
        if len(arrays) != len(self.shapes):
            return f"expected {len(self.shapes)} arrays, got {len(arrays)}"
        for name, a, shape, dtype in zip(self.names, arrays, self.shapes, self.dtypes):
            a = np.asarray(a)
            if a.shape != shape:
                return f"array '{name}' has shape {a.shape}, expected {shape}"
            if a.dtype != dtype:
                return f"array '{name}' has dtype {a.dtype}, expected {dtype}"
            if a.dtype.kind in "fc" and not np.isfinite(a).all():
                return f"array '{name}' holds NaN or Inf values"
        return None

    def flatten(self, arrays, out: np.ndarray | None = None) -> np.ndarray:
        """Concatenate ``arrays`` into one float32 vector (into ``out`` when given)."""
        out = np.empty(self.dim, dtype=np.float32) if out is None else out
        for a, lo, hi in zip(arrays, self.offsets[:-1], self.offsets[1:]):
            out[lo:hi] = np.asarray(a).reshape(-1)
        return out


def stack_updates(layout: ModelLayout, global_flat: np.ndarray, replies):
    """Build the update matrix from ``replies`` = [(client_id, arrays, names_or_None), ...].

    Returns ``(X, kept_ids, dropped)``: X is (len(kept_ids), d) float32 with row k equal to
    client ``kept_ids[k]``'s weights minus the global weights; ``dropped`` maps the id of
    every rejected reply to the reason.
    """
    checked, dropped = [], {}
    for cid, arrays, names in replies:
        try:
            reason = layout.check(arrays, names)
        except Exception as err:  # a reply that cannot even be inspected
            reason = f"unreadable reply ({type(err).__name__}: {err})"
        if reason is None:
            checked.append((cid, arrays))
        else:
            dropped[cid] = reason
    X = np.empty((len(checked), layout.dim), dtype=np.float32)
    kept = []
    for row, (cid, arrays) in enumerate(checked):
        layout.flatten(arrays, out=X[row])
        X[row] -= global_flat
        kept.append(cid)
    # Finite weights can still overflow float32 once the global model is subtracted.
    bad = [i for i in range(len(kept)) if not np.isfinite(X[i]).all()]
    if bad:
        for i in bad:
            dropped[kept[i]] = "update overflows float32"
        keep = np.setdiff1d(np.arange(len(kept)), bad)
        X, kept = X[keep], [kept[i] for i in keep]
    return X, kept, dropped


def apply_update(layout: ModelLayout, global_arrays, update: np.ndarray) -> list[np.ndarray]:
    """New global arrays: each global array plus its slice of ``update``, in its own dtype
    (integer buffers such as BatchNorm's ``num_batches_tracked`` are rounded)."""
    out = []
    for g, lo, hi in zip(global_arrays, layout.offsets[:-1], layout.offsets[1:]):
        g = np.asarray(g)
        delta = update[lo:hi].reshape(g.shape)
        if g.dtype.kind in "iub":
            out.append(np.rint(g + delta.astype(np.float64)).astype(g.dtype))
        else:
            out.append((g + delta.astype(g.dtype)).astype(g.dtype, copy=False))
    return out
