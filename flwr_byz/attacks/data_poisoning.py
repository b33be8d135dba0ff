"""Label flipping, the data-poisoning baseline.

The corrupted clients train honestly on relabelled data: by default label y becomes
num_classes - 1 - y (e.g. Fang et al., "Local Model Poisoning Attacks to Byzantine-Robust
Federated Learning", USENIX Security 2020; Tolpegin et al., "Data Poisoning Attacks
Against Federated Learning Systems", ESORICS 2020, use a fixed source -> target map, which
``mapping`` covers).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from . import _common
from .catalogue import register_attack

__all__ = ["flip_labels"]


@register_attack("label_flip", kind="data", knowledge="its own data", params={},
                 paper="label flipping, y -> C - 1 - y")
def flip_labels(y, num_classes: int | None = None, mapping=None) -> np.ndarray:
    """Return a relabelled copy of the integer labels ``y`` (same shape and dtype).

    Exactly one of:
        ``num_classes``: y -> num_classes - 1 - y (labels must lie in [0, num_classes));
        ``mapping``: a sequence / array of length C read as ``mapping[y]`` (a permutation
            or any map into labels; labels must lie in [0, C)), or a dict
            ``{source: target}`` where labels absent from the dict are kept.

    The number of classes is never inferred from ``y`` (a batch may miss the top class).
    Raises ``ValueError`` on non-integer labels, out-of-range labels or a bad mapping.
    """
    labels = np.asarray(y)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"flip_labels: labels must be integers, got dtype {labels.dtype}")
    if (num_classes is None) == (mapping is None):
        raise ValueError("flip_labels: give exactly one of num_classes and mapping")
    if mapping is None:
        num_classes = _common.check_int("flip_labels: num_classes", num_classes, minimum=1)
        _check_range(labels, num_classes)
        return (num_classes - 1 - labels).astype(labels.dtype, copy=False)
    if isinstance(mapping, Mapping):
        out = labels.copy()
        for src, dst in mapping.items():
            src = _common.check_int("flip_labels: mapping key", src)
            dst = _common.check_int("flip_labels: mapping value", dst)
            out[labels == src] = dst
        return out
    table = np.asarray(mapping)
    if table.ndim != 1 or table.size == 0 or table.dtype.kind not in "iu":
        raise ValueError("flip_labels: mapping must be a dict or a non-empty 1-D integer sequence")
    _check_range(labels, table.size)
    return table[labels].astype(labels.dtype, copy=False)


def _check_range(labels: np.ndarray, num_classes: int) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"flip_labels: labels must lie in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]"
        )
