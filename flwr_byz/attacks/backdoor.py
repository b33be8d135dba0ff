"""Backdoor attacks: triggers, poisoned batches, model replacement, the ALIE backdoor box,
and the attack success rate. NumPy only (the training clients live in
:mod:`flwr_byz.clients.backdoor`, the server-side evaluation in
:mod:`flwr_byz.simulations.backdoor_eval`).

A backdoor attacker keeps the main task accurate while teaching the model a second rule:
inputs carrying a *trigger* are classified as the attacker's *target* label.

Triggers (image data of any shape, the last two axes being H and W):

* :class:`PixelTrigger`: a rectangle of pixels (``size``, ``position``, ``value``) stamped on
  every channel, with a target label. The ALIE paper's *pattern* backdoor is a 5x5 square
  in the top-left corner set to the maximum intensity (``PixelTrigger(5, (0, 0), max)``,
  where ``max`` is the largest value of the *normalised* data: 2.82 for MNIST normalised
  with (0.1307, 0.3081), 1.75 for flwr-byz's digits).
* :func:`dba_local_trigger`: DBA's local triggers (Xie et al., ICLR 2020): the global
  trigger cut into bands, one per attacker; the server measures the ASR with the whole.
* :func:`neurotoxin_mask`: Neurotoxin (Zhang et al., ICML 2022): the backdoor is trained
  only on the coordinates the benign gradient changes least.
* :class:`SampleBackdoor`: the ALIE paper's *sample* backdoor: a chosen set of training
  samples relabelled to the target (no trigger: the model must misclassify those very
  samples while staying accurate elsewhere).
* :class:`EdgeCaseBackdoor`: the edge-case backdoor (Wang et al., NeurIPS 2020): inputs from
  the tail of the input distribution (rare in every honest client's data) labelled as the
  target; :func:`rotated_tail` makes a documented synthetic tail from a source class.

Model-poisoning parts:

* :func:`model_replacement`: Bagdasaryan et al., "How To Backdoor Federated Learning"
  (AISTATS 2020): the attacker boosts its update (backdoored model X minus the global model
  G) by gamma = n / eta, so that the server's ``G + eta / n * sum(updates)`` lands on X
  when the honest updates roughly cancel (:func:`replacement_gamma`).
* :func:`alie_box` / :func:`alie_box_projection`: Baruch et al., "A Little Is Enough"
  (NeurIPS 2019), the backdoor variant: the corrupted clients train on the backdoor
  objective, then clip their update coordinate-wise into ``[mu - z sigma, mu + z sigma]``,
  mu and sigma being the mean and population standard deviation of their *own* honest
  updates (the same statistics as :func:`flwr_byz.attacks.alie_update`). Inside the box the
  update looks like an honest one to median / Krum / Bulyan.

Measurement: :func:`attack_success_rate`, the share of triggered inputs whose true label is
not the target that the model classifies as the target (inputs already of the target class
are left out: classifying them as the target is no success of the attack).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import _common
from .catalogue import register_attack

__all__ = [
    "EdgeCaseBackdoor", "PixelTrigger", "SampleBackdoor", "alie_box", "dba_local_trigger", "neurotoxin_mask",
    "alie_box_projection", "attack_success_rate", "edge_case_backdoor", "model_replacement", "rotated_tail", "num_poisoned", "poison_batch", "replacement_gamma",
]


def _as_rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (numbers.Integral, np.random.SeedSequence)) or (
        isinstance(rng, Sequence) and all(isinstance(v, numbers.Integral) for v in rng)
    ):
        return np.random.default_rng(rng)
    raise ValueError(f"rng must be a numpy Generator, a seed or None, got {rng!r}")


def _check_target(target, what: str) -> int:
    return _common.check_int(f"{what}: target", target, minimum=0)


def num_poisoned(batch_size: int, fraction: float) -> int:
    """How many of ``batch_size`` samples a poisoning ``fraction`` turns into backdoor samples:
    ``round(fraction * batch_size)``, halves rounded *up* (``floor(x + 0.5)``, not Python's
    round-half-to-even), so fraction 0.5 of a batch of 5 poisons 3."""
    batch_size = _common.check_int("num_poisoned: batch_size", batch_size, minimum=0)
    fraction = _common.check_finite_scalar("poisoning fraction", fraction, nonnegative=True)
    if fraction > 1:
        raise ValueError(f"poisoning fraction must lie in [0, 1], got {fraction}")
    return min(batch_size, int(np.floor(fraction * batch_size + 0.5)))


# ----------------------------------------------------------------------------------------
# Triggers
# ----------------------------------------------------------------------------------------


def _freeze(value):
    """A scalar float or a nested tuple of floats (hashable, comparable)."""
    a = np.asarray(value, dtype=np.float64)
    if a.ndim > 3:
        raise ValueError(f"PixelTrigger: value must be a scalar, (C,), (h, w) or (C, h, w), got shape {a.shape}")
    if a.size == 0 or not np.isfinite(a).all():
        raise ValueError("PixelTrigger: value must be non-empty and finite")
    return float(a) if a.ndim == 0 else _to_tuple(a.tolist())


def _to_tuple(v):
    return tuple(_to_tuple(x) for x in v) if isinstance(v, list) else float(v)


@dataclass(frozen=True)
class PixelTrigger:
    """A pixel pattern stamped on images, and the label the attacker wants for them.

    Args:
        size: the pattern's height and width in pixels, an int (a square) or ``(h, w)``.
        position: ``(row, col)`` of the pattern's top-left pixel. Negative values count
            from the bottom / right as Python indices do: ``(-3, -3)`` with size 3 is the
            bottom-right corner.
        value: what the stamped pixels are set to, in the units of the (normalised) data:
            a scalar (every channel), a 1-D sequence of one value per channel (length C, or
            1), an ``(h, w)`` pattern (every channel) or a ``(C, h, w)`` pattern.
        target: the label every triggered input should get.

    :meth:`stamp` works on ``(N, C, H, W)`` batches and single ``(C, H, W)`` images for any
    C, H, W (``(N, 1, 8, 8)`` digits, ``(N, 1, 28, 28)`` MNIST, ``(N, 3, 32, 32)`` CIFAR),
    and raises ``ValueError`` when the pattern does not fit inside the image.
    """

    size: int | tuple[int, int] = 3
    position: tuple[int, int] = (0, 0)
    value: float | tuple = 1.0
    target: int = 0

    def __post_init__(self):
        size = (self.size, self.size) if isinstance(self.size, numbers.Integral) else tuple(self.size)
        if len(size) != 2:
            raise ValueError(f"PixelTrigger: size must be an int or (h, w), got {self.size!r}")
        size = tuple(_common.check_int("PixelTrigger: size", s, minimum=1) for s in size)
        position = tuple(self.position)
        if len(position) != 2:
            raise ValueError(f"PixelTrigger: position must be (row, col), got {self.position!r}")
        position = tuple(_common.check_int("PixelTrigger: position", p) for p in position)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "position", position)
        object.__setattr__(self, "value", _freeze(self.value))
        object.__setattr__(self, "target", _check_target(self.target, "PixelTrigger"))

    # -- geometry ------------------------------------------------------------------------

    def box(self, image_shape) -> tuple[slice, slice]:
        """(rows, cols) slices of the pattern inside an image whose last two axes are (H, W);
        raises ``ValueError`` when it does not fit."""
        shape = tuple(int(s) for s in image_shape)
        if len(shape) < 2:
            raise ValueError(f"PixelTrigger: images need at least (H, W) axes, got shape {shape}")
        H, W = shape[-2:]
        (h, w), (r, c) = self.size, self.position
        r0 = r + H if r < 0 else r
        c0 = c + W if c < 0 else c
        if r0 < 0 or c0 < 0 or r0 + h > H or c0 + w > W:
            raise ValueError(
                f"PixelTrigger of size {self.size} at position {self.position} does not fit in "
                f"{H}x{W} images (rows {r0}..{r0 + h - 1}, cols {c0}..{c0 + w - 1})"
            )
        return slice(r0, r0 + h), slice(c0, c0 + w)

    def pattern(self, channels: int) -> np.ndarray:
        """The ``(C, h, w)`` float64 values written into the box."""
        h, w = self.size
        v = np.asarray(self.value, dtype=np.float64)
        if v.ndim == 1:  # one value per channel
            if v.shape[0] not in (1, channels):
                raise ValueError(f"PixelTrigger: {v.shape[0]} channel values for {channels}-channel images")
            v = v[:, None, None]
        elif v.ndim == 2 and v.shape != (h, w):
            raise ValueError(f"PixelTrigger: an (h, w) pattern must have shape {(h, w)}, got {v.shape}")
        elif v.ndim == 3 and (v.shape[1:] != (h, w) or v.shape[0] not in (1, channels)):
            raise ValueError(f"PixelTrigger: a (C, h, w) pattern must have shape {(channels, h, w)}, got {v.shape}")
        return np.broadcast_to(v, (channels, h, w))

    def mask(self, image_shape) -> np.ndarray:
        """Boolean mask of the stamped pixels for one image of shape ``(C, H, W)``."""
        rows, cols = self.box(image_shape)
        out = np.zeros(tuple(image_shape), dtype=bool)
        out[..., rows, cols] = True
        return out

    # -- application ---------------------------------------------------------------------

    def stamp(self, x) -> np.ndarray:
        """A copy of ``x`` ((N, C, H, W) or (C, H, W)) with the pattern written in; same dtype."""
        x = np.asarray(x)
        if x.ndim not in (3, 4):
            raise ValueError(f"PixelTrigger.stamp expects (N, C, H, W) or (C, H, W) images, got shape {x.shape}")
        if x.dtype.kind not in "fiu":
            raise ValueError(f"PixelTrigger.stamp expects real-valued images, got dtype {x.dtype}")
        rows, cols = self.box(x.shape)
        pattern = self.pattern(x.shape[-3])
        if x.dtype.kind in "iu":
            info = np.iinfo(x.dtype)
            if pattern.min() < info.min or pattern.max() > info.max or not np.all(pattern == np.round(pattern)):
                raise ValueError(f"PixelTrigger: value {self.value} cannot be stored in {x.dtype} images")
        out = x.copy()
        out[..., rows, cols] = pattern.astype(x.dtype)
        return out

    def apply(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """(stamped copy of every input, labels all set to the target), y's dtype kept."""
        y = np.asarray(y)
        return self.stamp(x), np.full_like(y, self.target)

    def poison(self, x, y, fraction: float, rng=None, *, return_indices: bool = False):
        """:func:`poison_batch` with this trigger."""
        return poison_batch(x, y, self, fraction, rng, return_indices=return_indices)


@register_attack("backdoor", kind="backdoor", knowledge="its own data", params={"fraction": 0.5, "trigger": {}},
                 paper="data-poisoning backdoor with a pixel trigger (docs/backdoors.md)")
def poison_batch(x, y, trigger: PixelTrigger, fraction: float, rng=None, *, return_indices: bool = False):
    """Poison exactly ``num_poisoned(len(x), fraction)`` samples of a batch.

    Those samples, drawn without replacement by ``rng`` (a Generator, a seed or None), are
    stamped with the trigger and relabelled to its target; the others are returned
    unchanged. Inputs are never modified in place. Returns ``(x', y')``, plus the sorted
    indices of the poisoned samples when ``return_indices``.
    """
    if not isinstance(trigger, PixelTrigger):
        raise TypeError(f"poison_batch needs a PixelTrigger, got {type(trigger).__name__}")
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"poison_batch expects x of shape (N, C, H, W) and y of shape (N,), got {x.shape}, {y.shape}")
    if y.dtype.kind not in "iu":
        raise ValueError(f"poison_batch: labels must be integers, got dtype {y.dtype}")
    k = num_poisoned(len(x), fraction)
    trigger.box(x.shape)  # validate the geometry even when nothing is poisoned
    idx = np.sort(_as_rng(rng).choice(len(x), size=k, replace=False)) if k else np.zeros(0, dtype=np.int64)
    xp, yp = x.copy(), y.copy()
    if k:
        xp[idx] = trigger.stamp(x[idx])
        yp[idx] = trigger.target
    return (xp, yp, idx) if return_indices else (xp, yp)


@register_attack("dba", kind="backdoor", knowledge="its own data and its part of the trigger",
                 params={"fraction": 0.5, "trigger": {}, "parts": None, "part": None},
                 paper="Xie, Huang, Chen & Li, ICLR 2020 (DBA)")
def dba_local_trigger(trigger: PixelTrigger, part: int, parts: int | None = None) -> PixelTrigger:
    """DBA's local trigger number ``part`` of ``parts``: the global trigger's pixels cut into
    ``parts`` contiguous bands along its longer side (``np.array_split`` of its rows, or of
    its columns when it is wider than tall), each band with the global pattern's own values
    and the same target (Xie, Huang, Chen & Li, "DBA: Distributed Backdoor Attacks against
    Federated Learning", ICLR 2020: each attacker poisons with one local trigger, the
    server's ASR is measured with the global one).

    Args:
        trigger: the global :class:`PixelTrigger` (an ``(h, w)`` or ``(C, h, w)`` pattern
            value is cut with it).
        part: which band, taken modulo ``parts`` (attacker k gets part k mod parts).
        parts: number of bands; ``None``: min(4, the longer side) (the paper's four local
            triggers where the trigger allows). ``ValueError`` beyond the longer side.

    The ``parts`` local triggers are disjoint and their union is the global trigger.
    """
    if not isinstance(trigger, PixelTrigger):
        raise TypeError(f"dba_local_trigger needs a PixelTrigger, got {type(trigger).__name__}")
    (h, w), (r, c) = trigger.size, trigger.position
    rows = h >= w  # cut along the longer side
    side = h if rows else w
    parts = min(4, side) if parts is None else _common.check_int("dba: parts", parts, minimum=1)
    if parts > side:
        raise ValueError(f"dba: a {h}x{w} trigger cannot be cut into {parts} parts (at most {side})")
    k = _common.check_int("dba: part", part, minimum=0) % parts
    band = np.array_split(np.arange(side), parts)[k]
    lo, size = int(band[0]), len(band)
    value = trigger.value
    v = np.asarray(value, dtype=np.float64)
    if v.ndim >= 2:  # an (h, w) or (C, h, w) pattern: its band
        v = v[..., lo:lo + size, :] if rows else v[..., :, lo:lo + size]
        value = v.tolist()
    if rows:
        return PixelTrigger(size=(size, w), position=(r + lo, c), value=value, target=trigger.target)
    return PixelTrigger(size=(h, size), position=(r, c + lo), value=value, target=trigger.target)


@register_attack("neurotoxin", kind="backdoor", knowledge="its own data (its clean gradient marks the coordinates "
                 "honest training moves most)", params={"fraction": 0.5, "trigger": {}, "ratio": 0.95,
                                                        "norm_bound": None},
                 paper="Zhang et al., ICML 2022 (Neurotoxin)")
def neurotoxin_mask(gradient, ratio: float = 0.95) -> np.ndarray:
    """Neurotoxin's coordinate mask (Zhang, Panda, Song, Yang, Mahoney, Mittal, Ramchandran &
    Gonzalez, "Neurotoxin: Durable Backdoors in Federated Learning", ICML 2022): True on the
    ``ratio`` share of coordinates where the benign gradient is smallest in magnitude, False
    on the rest (the top 1 - ratio, what honest training changes most, where a backdoor
    would be overwritten soonest). The authors' default ratio is 0.95. Ties go to the lower
    index (a stable sort), so the mask is a function of the gradient alone.

    Args:
        gradient: the benign gradient estimate, any shape (flattened).
        ratio: in (0, 1]: the share of coordinates kept (rounded down, at least one).
    """
    g = np.abs(np.asarray(gradient, dtype=np.float64).reshape(-1))
    ratio = _common.check_finite_scalar("neurotoxin: ratio", ratio, positive=True)
    if ratio > 1:
        raise ValueError(f"neurotoxin: ratio must be in (0, 1], got {ratio}")
    keep = max(int(math.floor(ratio * g.size)), 1)
    mask = np.zeros(g.size, dtype=bool)
    mask[np.argsort(g, kind="stable")[:keep]] = True
    return mask


@dataclass(frozen=True)
class SampleBackdoor:
    """The ALIE paper's sample backdoor: chosen training samples relabelled to a target.

    Args:
        indices: positions of the chosen samples in the array the backdoor is applied to
            (for a client, its local training data: see :meth:`for_partition` to turn
            dataset-wide indices into a partition's local positions).
        target: the label the model should give them (an int).

    No pattern is stamped: the attack succeeds when the model classifies those very samples
    as the target. :meth:`poison` keeps the relabelled chosen samples in the data and
    over-samples them so that a ``fraction`` of each batch is backdoor samples.
    """

    indices: tuple[int, ...]
    target: int = 0

    def __post_init__(self):
        idx = np.asarray(self.indices).reshape(-1)
        if idx.size == 0 or idx.dtype.kind not in "iu" or (idx < 0).any():
            raise ValueError("SampleBackdoor: indices must be a non-empty sequence of non-negative integers")
        if len(np.unique(idx)) != idx.size:
            raise ValueError("SampleBackdoor: indices must be distinct")
        object.__setattr__(self, "indices", tuple(int(i) for i in idx))
        object.__setattr__(self, "target", _check_target(self.target, "SampleBackdoor"))

    def _idx(self, n: int) -> np.ndarray:
        idx = np.asarray(self.indices, dtype=np.int64)
        if idx.max() >= n:
            raise ValueError(f"SampleBackdoor: index {int(idx.max())} out of range for {n} samples")
        return idx

    def relabel(self, y) -> np.ndarray:
        """A copy of ``y`` with the chosen samples' labels set to the target."""
        y = np.asarray(y)
        out = y.copy()
        out[self._idx(len(y))] = self.target
        return out

    def select(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """(the chosen inputs, their *true* labels): what the attack success rate is measured on."""
        idx = self._idx(len(y))
        return np.asarray(x)[idx], np.asarray(y)[idx]

    def for_partition(self, partition_indices) -> "SampleBackdoor | None":
        """The chosen samples that fall in a partition (given by its dataset-wide indices),
        as local positions in that partition; None when none of them is there."""
        part = np.asarray(partition_indices).reshape(-1)
        pos = {int(g): i for i, g in enumerate(part)}
        local = [pos[i] for i in self.indices if i in pos]
        return SampleBackdoor(tuple(local), self.target) if local else None

    def poison(self, x, y, fraction: float, rng=None, *, source=None, return_indices: bool = False):
        """A batch where exactly ``num_poisoned(len(x), fraction)`` samples are replaced by
        chosen samples (drawn with replacement from ``source`` = ``(x_all, y_all)``, the
        array the indices refer to) labelled as the target. With ``source=None`` the indices
        refer to the batch itself, and the chosen samples are only relabelled."""
        x, y = np.asarray(x), np.asarray(y)
        if source is None:
            yp = self.relabel(y)
            idx = self._idx(len(y))
            return (x.copy(), yp, np.sort(idx)) if return_indices else (x.copy(), yp)
        sx, sy = source
        chosen, _ = self.select(sx, sy)
        k = num_poisoned(len(x), fraction)
        gen = _as_rng(rng)
        idx = np.sort(gen.choice(len(x), size=k, replace=False)) if k else np.zeros(0, dtype=np.int64)
        xp, yp = x.copy(), y.copy()
        if k:
            xp[idx] = chosen[gen.integers(0, len(chosen), size=k)]
            yp[idx] = self.target
        return (xp, yp, idx) if return_indices else (xp, yp)


class EdgeCaseBackdoor:
    """The edge-case backdoor (Wang, Sreenivasan, Rajput, Vishwakarma, Agarwal, Sohn, Lee &
    Papailiopoulos, "Attack of the Tails: Yes, You Really Can Backdoor Federated Learning",
    NeurIPS 2020): inputs from the *tail* of the input distribution, which honest clients
    almost never hold, labelled as the attacker's target. Honest training barely pushes back
    on such inputs, so the backdoor survives defenses that look for updates unlike the
    honest ones (the paper's MNIST case: ARDIS sevens, written the European way, labelled 1).

    Args:
        x_train: the attacker's tail inputs (N, C, H, W), in the data's (normalised) units;
            they replace a ``fraction`` of every poisoned batch (:meth:`poison`).
        x_test: held-out tail inputs (M, C, H, W) the server measures the ASR on.
        target: the label the attacker wants for tail inputs.
        source: their true label when known (the synthetic tail's source class), else None.

    The ASR is the share of ``x_test`` classified as the target (all of it counts when the
    source is unknown or differs from the target).
    """

    def __init__(self, x_train, x_test, target: int, source: int | None = None):
        xs = []
        for what, x in (("x_train", x_train), ("x_test", x_test)):
            x = np.asarray(x)
            if x.ndim != 4 or len(x) == 0 or x.dtype.kind != "f" or not np.isfinite(x).all():
                raise ValueError(f"EdgeCaseBackdoor: {what} must be a non-empty finite float (N, C, H, W) array, "
                                 f"got shape {x.shape}, dtype {x.dtype}")
            xs.append(x)
        if xs[0].shape[1:] != xs[1].shape[1:]:
            raise ValueError(f"EdgeCaseBackdoor: x_train images {xs[0].shape[1:]} and x_test images "
                             f"{xs[1].shape[1:]} differ")
        self.x_train, self.x_test = xs
        self.target = _check_target(target, "EdgeCaseBackdoor")
        self.source = None if source is None else _common.check_int("EdgeCaseBackdoor: source", source, minimum=0)
        if self.source == self.target:
            raise ValueError(f"EdgeCaseBackdoor: source and target are both {self.target}: nothing to attack")

    def __repr__(self) -> str:
        return (f"EdgeCaseBackdoor({len(self.x_train)} train / {len(self.x_test)} test tail inputs of shape "
                f"{self.x_train.shape[1:]}, source={self.source}, target={self.target})")

    def select(self) -> tuple[np.ndarray, np.ndarray]:
        """(the held-out tail inputs, their true labels: the source, or -1 when unknown)."""
        return self.x_test, np.full(len(self.x_test), -1 if self.source is None else self.source, dtype=np.int64)

    def poison(self, x, y, fraction: float, rng=None, *, return_indices: bool = False):
        """A copy of the batch where exactly ``num_poisoned(len(x), fraction)`` samples, drawn
        without replacement, are replaced by tail inputs (drawn with replacement from
        ``x_train``) labelled as the target."""
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim != 4 or y.ndim != 1 or len(x) != len(y) or x.shape[1:] != self.x_train.shape[1:]:
            raise ValueError(f"EdgeCaseBackdoor.poison expects x of shape (N, *{self.x_train.shape[1:]}) and y "
                             f"of shape (N,), got {x.shape}, {y.shape}")
        k = num_poisoned(len(x), fraction)
        gen = _as_rng(rng)
        idx = np.sort(gen.choice(len(x), size=k, replace=False)) if k else np.zeros(0, dtype=np.int64)
        xp, yp = x.copy(), y.copy()
        if k:
            xp[idx] = self.x_train[gen.integers(0, len(self.x_train), size=k)].astype(x.dtype)
            yp[idx] = self.target
        return (xp, yp, idx) if return_indices else (xp, yp)


def rotated_tail(x, angle: float = 90.0) -> np.ndarray:
    """``x`` ((N, C, H, W) images) rotated by ``angle`` degrees counter-clockwise about the
    image centre: a synthetic tail of the input distribution for :class:`EdgeCaseBackdoor`.

    Multiples of 90 degrees on square images are exact pixel permutations (``np.rot90``);
    other angles use ``scipy.ndimage.rotate`` (bilinear, same size), each channel filled
    outside the source image with its own minimum (the background of normalised data).
    Returns float32.
    """
    x = np.asarray(x)
    if x.ndim != 4 or x.dtype.kind not in "fiu":
        raise ValueError(f"rotated_tail expects real (N, C, H, W) images, got shape {x.shape}, dtype {x.dtype}")
    angle = _common.check_finite_scalar("rotated_tail: angle", angle)
    quarter = angle / 90.0
    if quarter == round(quarter) and (x.shape[-1] == x.shape[-2] or round(quarter) % 2 == 0):
        return np.ascontiguousarray(np.rot90(x, k=int(round(quarter)) % 4, axes=(-2, -1)), dtype=np.float32)
    from scipy import ndimage

    out = np.empty(x.shape, dtype=np.float32)
    for c in range(x.shape[1]):
        channel = x[:, c].astype(np.float64)
        out[:, c] = ndimage.rotate(channel, angle, axes=(-1, -2), reshape=False, order=1, mode="constant",
                                   cval=float(channel.min()) if channel.size else 0.0)
    return out


@register_attack("edge_case", kind="backdoor",
                 knowledge="its own data and a set of tail inputs (the paper: collected by the attacker)",
                 params={"fraction": 0.5, "source": 7, "target": 1, "angle": 90.0, "tail": None, "norm_bound": None},
                 paper="Wang et al., NeurIPS 2020 (edge-case backdoor, 'Attack of the Tails')")
def edge_case_backdoor(x_train, y_train, x_test, y_test, *, source: int = 7, target: int = 1,
                       angle: float = 90.0) -> EdgeCaseBackdoor:
    """The synthetic edge-case backdoor of a dataset: the ``source`` class's training images
    rotated by ``angle`` degrees (:func:`rotated_tail`) are the attacker's tail inputs, its
    test images rotated the same way are the held-out set the ASR is measured on, every one
    labelled as ``target`` by the attacker (the defaults mirror the paper's MNIST case,
    sevens labelled 1). ``ValueError`` when the source class is absent from a split.
    """
    source = _common.check_int("edge_case: source", source, minimum=0)
    tails = []
    for what, x, y in (("training", x_train, y_train), ("test", x_test, y_test)):
        pick = np.asarray(y).reshape(-1) == source
        if not pick.any():
            raise ValueError(f"edge_case: no image of source class {source} in the {what} split")
        tails.append(rotated_tail(np.asarray(x)[pick], angle))
    return EdgeCaseBackdoor(tails[0], tails[1], target=target, source=source)


# ----------------------------------------------------------------------------------------
# Measurement
# ----------------------------------------------------------------------------------------


def _labels(pred) -> np.ndarray:
    p = np.asarray(pred)
    if p.ndim == 2:  # logits / scores
        return p.argmax(axis=1)
    if p.ndim != 1:
        raise ValueError(f"predictions must be labels (N,) or scores (N, C), got shape {p.shape}")
    return p


def attack_success_rate(predictions, y_true, target, inputs=None) -> float:
    """Share of the inputs whose true label is not the target that are classified as the target.

    Args:
        predictions: the model's predictions on the *triggered* inputs, as labels (N,) or
            scores (N, C) (argmax taken), or a callable ``inputs -> labels or scores``, then
            called only on the non-target rows of ``inputs``.
        y_true: the true labels (N,) of the inputs before the trigger.
        target: the attack's target label (an int, or one target per input).
        inputs: the triggered inputs, needed (only) when ``predictions`` is a callable.

    Inputs whose true label already is the target are left out of both counts. Returns NaN
    when no input is left.
    """
    y = np.asarray(y_true).reshape(-1)
    tgt = np.broadcast_to(np.asarray(target), y.shape)
    keep = y != tgt
    if callable(predictions):
        if inputs is None:
            raise ValueError("attack_success_rate: a predict function needs the (triggered) inputs")
        inputs = np.asarray(inputs)
        if len(inputs) != len(y):
            raise ValueError(f"attack_success_rate: {len(inputs)} inputs for {len(y)} labels")
        if not keep.any():
            return float("nan")
        pred = _labels(predictions(inputs[keep]))
        if len(pred) != int(keep.sum()):
            raise ValueError("attack_success_rate: the predict function returned the wrong number of predictions")
        return float(np.mean(pred == tgt[keep]))
    pred = _labels(predictions)
    if pred.shape != y.shape:
        raise ValueError(f"attack_success_rate: {pred.shape[0]} predictions for {y.shape[0]} labels")
    if not keep.any():
        return float("nan")
    return float(np.mean(pred[keep] == tgt[keep]))


# ----------------------------------------------------------------------------------------
# Model replacement and the ALIE box
# ----------------------------------------------------------------------------------------


def replacement_gamma(num_clients: int, server_lr: float = 1.0) -> float:
    """Bagdasaryan et al.'s boost gamma = n / eta (n clients per round, eta the server
    learning rate; eta = 1 is FedAvg)."""
    n = _common.check_int("replacement_gamma: num_clients", num_clients, minimum=1)
    eta = _common.check_finite_scalar("replacement_gamma: server_lr", server_lr, positive=True)
    return n / eta


@register_attack("model_replacement", kind="backdoor", knowledge="its own data, n and the server step",
                 params={"gamma": None, "fraction": 0.5, "trigger": {}}, paper="Bagdasaryan et al., AISTATS 2020")
def model_replacement(update, gamma: float) -> np.ndarray:
    """``gamma * update`` (computed in float64, returned as float32, same shape).

    With update = X - G (X the attacker's backdoored model, G the global model) and the
    server computing ``G + eta / n * sum_i update_i``, gamma = n / eta makes the global
    model X when the other updates sum to about zero (Bagdasaryan et al. 2020, Eq. 3).
    """
    u = np.asarray(update)
    if u.dtype.kind not in "fiu":
        raise ValueError(f"model_replacement: update must be real-valued, got dtype {u.dtype}")
    if u.size and not np.isfinite(u).all():
        raise ValueError("model_replacement: update holds NaN or Inf values")
    gamma = _common.check_finite_scalar("model_replacement: gamma", gamma)
    return (u.astype(np.float64) * gamma).astype(np.float32)


def alie_box(own_updates, z: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mu, lo, hi)``: the ALIE box ``[mu - z sigma, mu + z sigma]`` as float64 (d,) arrays.

    mu and sigma are the per-coordinate mean and *population* standard deviation (divide by
    m) of the m rows of ``own_updates``, the corrupted clients' own honest updates, as in
    :func:`flwr_byz.attacks.alie_update`. z must be >= 0.
    """
    X = _common.as_known_updates(own_updates, "alie_box: own_updates")
    z = _common.check_finite_scalar("alie_box: z", z, nonnegative=True)
    mu, sigma = _common.mean_std(X, ddof=0)
    sigma *= z
    return mu, mu - sigma, mu + sigma


@register_attack("alie_backdoor", kind="backdoor", colluding=True,
                 knowledge="its own data and the corrupted clients' honest updates",
                 params={"z": None, "alpha": 1.0, "fraction": 0.5, "trigger": {}},
                 paper="Baruch, Baruch & Goldberg, NeurIPS 2019 (backdoor)")
def alie_box_projection(update, own_updates, z: float, *, return_fraction: bool = False):
    """Clip ``update`` coordinate-wise into ``[mu - z sigma, mu + z sigma]`` (float32 (d,)).

    The ALIE paper's backdoor step: after training on the backdoor objective, each
    parameter is brought back into the range the robust rules accept. mu, sigma: see
    :func:`alie_box`. The clipping is done in float64; the float32 result is then nudged
    one ulp inwards where rounding would otherwise leave the box, so that
    ``lo <= result <= hi`` holds exactly in float64 wherever the box holds a float32 value
    (a box narrower than a float32 ulp, e.g. sigma = 0, gets the float32 nearest to it).
    With ``return_fraction`` also returns the share of coordinates that were clipped.
    """
    u = np.asarray(update)
    if u.ndim != 1 or u.dtype.kind not in "fiu":
        raise ValueError(f"alie_box_projection: update must be a real 1-D vector, got shape {u.shape}, dtype {u.dtype}")
    if not np.isfinite(u).all():
        raise ValueError("alie_box_projection: update holds NaN or Inf values")
    mu, lo, hi = alie_box(own_updates, z)
    if lo.shape != u.shape:
        raise ValueError(f"alie_box_projection: update has {u.shape[0]} coordinates, own_updates {lo.shape[0]}")
    u64 = u.astype(np.float64)
    clipped = np.clip(u64, lo, hi)
    out = clipped.astype(np.float32)
    # float32 rounding of a bound may step outside [lo, hi]: move such entries one ulp
    # inwards, where that lands inside (a box narrower than one float32 ulp holds no float32).
    for outside, towards in ((out.astype(np.float64) < lo, np.inf), (out.astype(np.float64) > hi, -np.inf)):
        if outside.any():
            nudged = np.nextafter(out[outside], np.float32(towards))
            n64 = nudged.astype(np.float64)
            inside = (n64 >= lo[outside]) & (n64 <= hi[outside])
            out[np.flatnonzero(outside)[inside]] = nudged[inside]
    if return_fraction:
        return out, float(np.mean(clipped != u64)) if u.size else 0.0
    return out
