"""The backend seam: the core's (n, d) work runs on NumPy arrays or on torch tensors.

A rule given a NumPy matrix computes with NumPy on the CPU, as it always has. A rule given a
torch tensor (CPU or CUDA) returns a torch tensor on the same device: the kernels that read
the (n, d) matrix or write a length-d vector (:mod:`.kernels`, :mod:`.distances`,
``weighted_mean``) have a torch path next to their NumPy one, written once against the
array API standard (``array-api-compat``) where NumPy's fast path allows it, and the rules
keep their small (n,) and (n, n) quantities (scores, distances, weights) as float64 NumPy
arrays on the host, whatever the backend. So each rule is written once; only the kernels
know two backends.

The rules whose spec says ``tensor_native=True`` run on the tensor's device this way. The
others are called on a NumPy copy and their aggregate is returned as a tensor on the input's
device (:func:`via_host`): the same values, computed on the CPU (the rule table says which
rules are which).

Numerical care carries over: Gram matrices are accumulated in float64 from centred chunks,
with TF32 products switched off while they run (a TF32 product keeps 10 bits of mantissa and
would undo the centring's accuracy); distances to a point are summed in float64.
"""

from __future__ import annotations

import contextlib
import sys

import numpy as np
from array_api_compat import array_namespace, is_torch_array
from array_api_compat import device as array_device

from ._validate import CHUNK_COLUMNS

# Elements per chunk of a device kernel on CUDA (a chunk of 2**25 float32 values is 128 MiB):
# big enough that a chunk's kernels saturate the device, small enough to bound the memory.
DEVICE_CHUNK_ELEMENTS = 2**25


def device_of(x):
    """The device of ``x`` (``"cpu"`` for a NumPy array), as the array API gives it."""
    return array_device(x)


def is_tensor(x) -> bool:
    """True for a torch tensor (without importing torch)."""
    return is_torch_array(x)


def namespace(x):
    """The array API namespace of ``x`` (``array_api_compat.numpy`` or ``.torch``)."""
    return array_namespace(x)


def to_numpy(x) -> np.ndarray:
    """A NumPy array with the values of ``x`` (a tensor is copied to the host; a lazy
    conjugate or negative view is resolved first)."""
    if is_tensor(x):
        return x.detach().cpu().resolve_conj().resolve_neg().numpy()
    return np.asarray(x)


def as_like(values, X, dtype=None):
    """``values`` (a NumPy array, a tensor or a scalar) as an array of X's backend and
    device, in ``dtype`` (default: X's dtype)."""
    if not is_tensor(X):
        return np.asarray(to_numpy(values), dtype=X.dtype if dtype is None else dtype)
    import torch

    target = X.dtype if dtype is None else _torch_dtype(dtype)
    if is_tensor(values):
        return values.detach().to(device=X.device, dtype=target)
    return torch.as_tensor(np.asarray(values), device=X.device).to(target)


def _torch_dtype(dtype):
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    return {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32,
            np.dtype(np.int64): torch.int64, np.dtype(bool): torch.bool}[np.dtype(dtype)]


def zeros(X, length: int, dtype=None):
    """A zero vector of ``length`` on X's backend and device (X's dtype by default)."""
    if not is_tensor(X):
        return np.zeros(length, dtype=X.dtype if dtype is None else dtype)
    import torch

    return torch.zeros(length, dtype=X.dtype if dtype is None else _torch_dtype(dtype), device=X.device)


def copy_row(X, i: int):
    """A copy of row i of X (same backend, device and dtype)."""
    return X[i].clone() if is_tensor(X) else X[i].copy()


def arrays_equal(a, b) -> bool:
    """Whether two arrays of one backend have the same shape and values."""
    if is_tensor(a):
        import torch

        return bool(torch.equal(a, b))
    return bool(np.array_equal(a, b))


def rows_equal(X, i: int, j: int) -> bool:
    """Whether rows i and j of X are bit-for-bit equal."""
    return arrays_equal(X[i], X[j])


def row_index(X, rows):
    """``rows`` (a sequence of ints) as an index of X's backend and device."""
    rows = np.asarray(rows, dtype=np.intp)
    if not is_tensor(X):
        return rows
    import torch

    return torch.as_tensor(rows, dtype=torch.int64, device=X.device)


def chunk_width(X, rows: int, cpu_columns: int = CHUNK_COLUMNS) -> int:
    """Columns per chunk of a kernel over ``rows`` rows of X: ``cpu_columns`` on the CPU
    (tuned to its caches), at least DEVICE_CHUNK_ELEMENTS / rows on a CUDA device."""
    if is_tensor(X) and X.device.type != "cpu":
        return max(cpu_columns, DEVICE_CHUNK_ELEMENTS // max(rows, 1))
    return cpu_columns


@contextlib.contextmanager
def exact_float32_products():
    """Run float32 matrix products at full float32 precision (no TF32) inside the block,
    through torch's ``fp32_precision`` setting where it exists (torch >= 2.9; reading the
    legacy ``allow_tf32`` flag after a user set the new one raises), else the legacy flag."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        yield
        return
    matmul = torch.backends.cuda.matmul
    new_api = hasattr(matmul, "fp32_precision")
    name, value = ("fp32_precision", "ieee") if new_api else ("allow_tf32", False)
    saved = getattr(matmul, name)
    setattr(matmul, name, value)
    try:
        yield
    finally:
        setattr(matmul, name, saved)


def resolve_device(device: str | None) -> str | None:
    """A strategy's ``device`` option as the torch device its rounds aggregate on, or None
    for the NumPy path on the CPU: ``"cpu"`` (or None) -> None; ``"auto"`` -> ``"cuda"``
    when torch sees a CUDA device, else None; ``"cuda"`` / ``"cuda:N"`` as they are.
    ``ValueError`` for another name, or for CUDA when torch sees none."""
    name = "cpu" if device is None else str(device).strip().lower()
    if name == "cpu":
        return None
    try:
        import torch
    except ImportError as err:
        raise ValueError(f"device={device!r} needs torch installed") from err
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else None
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r}, but torch sees no CUDA device (use 'auto' to fall back to the CPU)")
        if name != "cuda" and int(name[5:]) >= torch.cuda.device_count():
            raise ValueError(f"device={device!r}, but torch sees {torch.cuda.device_count()} CUDA device(s)")
        return name if name == "cuda" else f"cuda:{int(name[5:])}"
    raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")


def host_inputs(kwargs: dict) -> dict:
    """``kwargs`` with every tensor value (and tensors inside a dict value, e.g. a per-client
    history) copied to a NumPy array."""
    out = {}
    for k, v in kwargs.items():
        if is_tensor(v):
            v = to_numpy(v)
        elif isinstance(v, dict) and any(is_tensor(x) for x in v.values()):
            v = {key: to_numpy(x) if is_tensor(x) else x for key, x in v.items()}
        out[k] = v
    return out


def via_host(fn, updates, kwargs: dict):
    """Call the NumPy rule ``fn`` on a host copy of the tensor ``updates`` (and of every
    tensor among its other inputs: weights, centre, histories, server update, global model);
    return its aggregate as a tensor on the updates' device (a report, when asked for, is
    returned as the rule made it). The tensor is validated first, as a native rule does."""
    import torch

    from ._validate import as_update_matrix

    kwargs = host_inputs(kwargs)
    out = fn(to_numpy(as_update_matrix(updates, check_finite=False)), **kwargs)
    if kwargs.get("return_report"):
        agg, report = out
        return torch.as_tensor(agg, device=updates.device), report
    return torch.as_tensor(out, device=updates.device)
