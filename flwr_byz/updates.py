"""From client replies to one (n, d) update matrix, and back. No Flower import.

This module is the server's trust boundary: everything a client sends besides its update
vector is checked here, reply by reply, against the current global model.

- **Arrays** are matched to the global model *by name* when names are given (any order;
  missing or extra names drop the reply), by position otherwise (Flower's legacy
  ``Parameters`` carry no names). Each array must have the model array's shape and dtype
  exactly; floating and complex arrays must be finite. 0-d and size-0 arrays are ordinary
  arrays here.
- **Weights** (the reported number of examples) must be a real number (``int`` or
  ``float``, NumPy scalars included; not ``bool``), finite and >= 0 (:func:`read_weight`).
  What a robust rule then does with them is the strategy's weight policy
  (:func:`policy_weights`): by default it ignores them.
- **Precision**: the update matrix is float64 when any model array is wider than float32
  (float64, longdouble, complex128), float32 otherwise; a complex array is laid out as its
  real and imaginary parts. Each update (reply minus global) is computed array by array in
  the array's precision before it is stored, so a float64 model keeps its precision and
  small updates of large weights are not lost. Integer arrays: the difference is exact,
  then stored in the matrix's precision (exact while a round's change stays below 2**24 in
  float32, 2**53 in float64: a BatchNorm counter's change is a few hundred);
  :func:`apply_update` adds the rounded aggregate to the integer value exactly, whatever
  its size (uint64 included), saturating at the dtype's range. Every array comes back in its own dtype (bool by majority),
  and :func:`nonfinite_arrays` reports a result that is not finite or does not fit it.

A bad reply is dropped with the reason, never raised, so that one client cannot end the
round for everybody.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

WEIGHTINGS = ("uniform", "capped", "raw")
"""Weight policies of the robust strategies (see :func:`policy_weights`)."""


@dataclass(frozen=True)
class ModelLayout:
    """Names, shapes, dtypes and flat offsets of the global model's arrays."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[np.dtype, ...]
    offsets: tuple[int, ...]  # len = len(names) + 1

    @classmethod
    def of(cls, arrays: list[np.ndarray], names: list[str] | None = None) -> "ModelLayout":
        names = [str(i) for i in range(len(arrays))] if names is None else [str(n) for n in names]
        sizes = [_real_view(a).size for a in arrays]  # a complex value is two coordinates
        return cls(
            tuple(names),
            tuple(tuple(np.asarray(a).shape) for a in arrays),
            tuple(np.asarray(a).dtype for a in arrays),
            tuple(int(x) for x in np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])),
        )

    @property
    def dim(self) -> int:
        return self.offsets[-1]

    @property
    def matrix_dtype(self) -> np.dtype:
        """float64 when any model array has more precision than float32 (float64, longdouble,
        complex128: its precision is kept, up to float64's), else float32."""
        wide = any(_real_dtype(dt).itemsize > 4 for dt in self.dtypes if dt.kind in "fc")
        return np.dtype(np.float64 if wide else np.float32)

    def read(self, arrays, names: list[str] | None = None) -> list[np.ndarray]:
        """A client's reply as arrays in the model's order; raises ``ValueError`` with the
        reason when it cannot be aggregated (names, count, shapes, dtypes, NaN/Inf)."""
        arrays = list(arrays)
        if names is not None:
            names = [str(n) for n in names]
            if len(names) != len(arrays):
                raise ValueError(f"{len(names)} names for {len(arrays)} arrays")
            if len(set(names)) != len(names):
                raise ValueError("array names repeat")
            missing = sorted(set(self.names) - set(names))
            extra = sorted(set(names) - set(self.names))
            if missing or extra:
                raise ValueError(f"array names differ from the global model's (missing {missing}, extra {extra})")
            by_name = dict(zip(names, arrays))
            arrays = [by_name[n] for n in self.names]
        if len(arrays) != len(self.shapes):
            raise ValueError(f"expected {len(self.shapes)} arrays, got {len(arrays)}")
        out = []
        for name, a, shape, dtype in zip(self.names, arrays, self.shapes, self.dtypes):
            if not isinstance(a, (np.ndarray, np.generic)):
                raise ValueError(f"array '{name}' is a {type(a).__name__}, not a NumPy array")
            a = np.asarray(a)
            if a.shape != shape:
                raise ValueError(f"array '{name}' has shape {a.shape}, expected {shape}")
            if a.dtype != dtype:
                raise ValueError(f"array '{name}' has dtype {a.dtype}, expected {dtype}")
            if a.dtype.kind in "fc" and not np.isfinite(a).all():
                raise ValueError(f"array '{name}' holds NaN or Inf values")
            out.append(a)
        return out

    def flatten(self, arrays, out: np.ndarray | None = None) -> np.ndarray:
        """Concatenate ``arrays`` into one float32 vector (into ``out`` when given); a complex
        array contributes its real and imaginary parts, interleaved."""
        out = np.empty(self.dim, dtype=np.float32) if out is None else out
        for a, lo, hi in zip(arrays, self.offsets[:-1], self.offsets[1:]):
            out[lo:hi] = _real_view(a)
        return out

    def delta(self, arrays, global_arrays, out: np.ndarray) -> np.ndarray:
        """Write ``arrays - global_arrays`` into the flat vector ``out``, each array's
        difference computed in its own precision (integers and bools exactly, then rounded
        once; floats in the wider of their dtype and ``out``'s) before it is stored."""
        for a, g, lo, hi in zip(arrays, global_arrays, self.offsets[:-1], self.offsets[1:]):
            a, g = _real_view(a), _real_view(g)
            if a.dtype.kind in "iub":
                out[lo:hi] = _integer_difference(a, g)
            else:
                np.subtract(a, g, out=out[lo:hi], dtype=np.promote_types(a.dtype, out.dtype), casting="unsafe")
        return out


def _real_dtype(dtype: np.dtype) -> np.dtype:
    """The real dtype of a complex one (complex128 -> float64); any other dtype itself."""
    dtype = np.dtype(dtype)
    return np.empty(0, dtype).real.dtype if dtype.kind == "c" else dtype


def _real_view(a) -> np.ndarray:
    """``a`` flattened, a complex array as its interleaved real and imaginary parts."""
    a = np.ascontiguousarray(a).reshape(-1)
    return a.view(_real_dtype(a.dtype)) if a.dtype.kind == "c" else a


def _as_int64(a: np.ndarray) -> np.ndarray | None:
    """``a`` as int64 when every value fits, else None (uint64 beyond 2**63 - 1)."""
    if a.dtype.kind == "u" and a.dtype.itemsize == 8 and a.size and int(a.max()) > np.iinfo(np.int64).max:
        return None
    return a.astype(np.int64)


def _integer_difference(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """a - g for integer or bool arrays as float64, computed exactly (in int64 where it does
    not overflow, else in Python integers) and rounded once: a float64 subtraction would
    round counters beyond 2**53 before subtracting."""
    a64, g64 = _as_int64(a), _as_int64(g)
    if a64 is not None and g64 is not None:
        diff = a64 - g64  # wraps on overflow, detected below
        if not np.any(((a64 ^ g64) & (a64 ^ diff)) < 0):
            return diff.astype(np.float64)
    return (a.astype(object) - g.astype(object)).astype(np.float64)  # exact, rounded once


def _integer_sum(g: np.ndarray, delta: np.ndarray) -> np.ndarray | None:
    """g + round(delta) in g's integer dtype, exact, saturating at the dtype's range (a
    counter at its maximum stays there rather than wrapping or stalling the model); None
    when delta is not finite."""
    with np.errstate(invalid="ignore", over="ignore"):
        step = np.rint(delta.astype(np.float64))
    if not np.isfinite(step).all():
        return None
    info = np.iinfo(g.dtype)
    step = np.clip(step, -(2.0**64), 2.0**64)  # beyond that every result saturates anyway
    g64 = _as_int64(g)
    if g64 is not None and (step.size == 0 or np.abs(step).max() < 2.0**62) and (
            g64.size == 0 or np.abs(g64).max() < 2**62):
        new = g64 + step.astype(np.int64)  # no int64 overflow possible
        return np.clip(new, info.min, info.max).astype(g.dtype)
    new = np.asarray(g.astype(object) + np.frompyfunc(int, 1, 1)(step), dtype=object)  # exact, Python ints
    return np.asarray(np.clip(new, info.min, info.max), dtype=object).astype(g.dtype)


def read_weight(value) -> float:
    """A reported weight (number of examples) as a float, or ``ValueError`` with the reason.

    Accepted: ``int`` / ``float`` (NumPy scalars included) that are finite and >= 0.
    Refused: bool, strings, None, NaN, +-Inf, negative numbers, arrays.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"the number of examples must be a real number, got {type(value).__name__} {value!r:.40}")
    try:
        w = float(value)
    except OverflowError:  # an int beyond float64
        raise ValueError(f"the number of examples {value!r:.40} does not fit a float64") from None
    if not np.isfinite(w) or w < 0:
        raise ValueError(f"the number of examples must be finite and >= 0, got {value!r:.40}")
    return w


def policy_weights(reported, weighting: str = "uniform", weight_cap: float = 2.0) -> np.ndarray | None:
    """The weights a rule receives under a weight policy, from the reported ones.

    Args:
        reported: (n,) weights that passed :func:`read_weight` (finite, >= 0).
        weighting: ``"uniform"``: None (every reply counts once; what a robust rule's f
            bound assumes). ``"capped"``: each weight clipped to ``weight_cap`` times the
            median reported weight, so one reply counts at most ``weight_cap`` medians (the
            median cannot be moved outside the honest replies' range while fewer than half
            the replies are Byzantine). ``"raw"``: the reported weights (FedAvg's semantics;
            one client can then buy any influence it likes).
        weight_cap: c >= 1 of ``"capped"``.

    Returns None (uniform) or (n,) float64 weights scaled to a maximum of 1 (their sum
    cannot overflow). All-zero weights, or a zero median under ``"capped"``, give None:
    the replies then count equally, never 0 / 0.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; choose from {WEIGHTINGS}")
    if weighting == "uniform":
        return None
    w = np.asarray(reported, dtype=np.float64).reshape(-1)
    if w.size == 0:
        return None
    if weighting == "capped":
        med = float(np.median(w))
        if not med > 0:
            return None
        w = np.minimum(w, med * float(weight_cap))  # med * cap may be inf: then nothing is clipped
    top = float(w.max())
    if not top > 0:
        return None
    return w / top


def stack_updates(layout: ModelLayout, global_arrays, replies):
    """Build the update matrix from ``replies`` = [(client_id, arrays, names_or_None), ...].

    Returns ``(X, kept_ids, dropped)``: X is (len(kept_ids), d) in ``layout.matrix_dtype``
    with row k equal to client ``kept_ids[k]``'s weights minus the global weights;
    ``dropped`` maps the id of every rejected reply to the reason.
    """
    checked, dropped = [], {}
    for cid, arrays, names in replies:
        try:
            checked.append((cid, layout.read(arrays, names)))
        except Exception as err:  # ValueError with the reason, or a reply that cannot even be inspected
            dropped[cid] = str(err) if isinstance(err, ValueError) else f"unreadable reply ({type(err).__name__}: {err})"
    X = np.empty((len(checked), layout.dim), dtype=layout.matrix_dtype)
    kept = []
    for row, (cid, arrays) in enumerate(checked):
        layout.delta(arrays, global_arrays, out=X[row])
        kept.append(cid)
    # Finite weights can still overflow the matrix's precision once the global model is subtracted.
    bad = [i for i in range(len(kept)) if not np.isfinite(X[i]).all()]
    if bad:
        for i in bad:
            dropped[kept[i]] = f"update overflows {X.dtype}"
        keep = np.setdiff1d(np.arange(len(kept)), bad)
        X, kept = X[keep], [kept[i] for i in keep]
    return X, kept, dropped


def apply_update(layout: ModelLayout, global_arrays, update: np.ndarray) -> list[np.ndarray]:
    """New global arrays: each global array plus its slice of ``update``, in its own dtype.

    Floating arrays add in the wider of their dtype and the update's, then are cast back;
    integer arrays (BatchNorm's ``num_batches_tracked``) add the rounded update exactly and
    saturate at their dtype's range;
    bool arrays are True where global + update >= 0.5. Always returns ndarrays (0-d
    included). Use :func:`nonfinite_arrays` on the result before adopting it.
    """
    out = []
    for g, lo, hi in zip(global_arrays, layout.offsets[:-1], layout.offsets[1:]):
        g = np.asarray(g)
        if g.dtype.kind == "c":  # real and imaginary parts, as laid out by ModelLayout
            real = _real_view(g)
            wide = np.promote_types(real.dtype, update.dtype)
            with np.errstate(over="ignore", invalid="ignore"):
                new = (real.astype(wide) + np.asarray(update[lo:hi]).astype(wide)).astype(real.dtype)
            out.append(new.view(g.dtype).reshape(g.shape))
            continue
        delta = np.asarray(update[lo:hi]).reshape(g.shape)
        if g.dtype.kind == "b":
            out.append(np.asarray(g.astype(np.float64) + delta >= 0.5))
        elif g.dtype.kind in "iu":
            new = _integer_sum(g, delta)
            out.append(np.full(g.shape, np.nan) if new is None else np.asarray(new))  # NaN: refused below
        else:
            wide = np.promote_types(g.dtype, delta.dtype)
            with np.errstate(over="ignore", invalid="ignore"):
                out.append(np.asarray((g.astype(wide) + delta.astype(wide)).astype(g.dtype)))
    return out


def nonfinite_arrays(layout: ModelLayout, arrays) -> list[str]:
    """Names of the arrays that are not finite or no longer have the model's dtype (an
    integer result out of its dtype's range): a model the server must not adopt."""
    bad = []
    for name, a, dtype in zip(layout.names, arrays, layout.dtypes):
        a = np.asarray(a)
        if a.dtype != dtype or (a.dtype.kind in "fc" and not np.isfinite(a).all()):
            bad.append(name)
    return bad
