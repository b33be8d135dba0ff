"""Coordinate-wise rules: median, trimmed mean and mean around the median (Meamed).

Median and trimmed mean: Yin, Chen, Ramchandran & Bartlett, "Byzantine-Robust Distributed
Learning: Towards Optimal Statistical Rates", ICML 2018; Meamed: Xie, Koyejo & Gupta 2018.
All act on every coordinate independently and sort column chunks along contiguous rows of a transposed copy (memory bounded by the chunk; see
``sorted_column_chunks`` for why a sort rather than a partition).
"""

from __future__ import annotations

from ._validate import as_update_matrix
from .backend import device_of, namespace
from .kernels import closest_to_median_mean, coordinate_median, sorted_column_chunks
from .registry import check_bound, register_rule
from .report import AggregationReport


@register_rule("median", tensor_native=True, cost="O(d n log n)", bound=(2, 1), flower="FedMedian", strategy="FedMedian", coordinate_wise=True,
               aliases=("coordinate_median",), paper="Yin, Chen, Ramchandran & Bartlett, ICML 2018")
def median(updates, *, f: int = 0, return_report: bool = False):
    """Coordinate-wise median.

    Each output coordinate is the median of the n clients' values for it (the mean of the
    two middle values when n is even). Tolerates f < n / 2 arbitrary updates: with
    ``n >= 2f + 1`` every output coordinate lies within the range of the honest values.

    Args:
        updates: (n, d) matrix of client updates.
        f: number of Byzantine clients to tolerate (only checked: n >= 2f + 1).
        return_report: also return an :class:`AggregationReport`.
    """
    X = as_update_matrix(updates)
    n = X.shape[0]
    check_bound("median", n, f)
    agg = coordinate_median(X)
    return (agg, AggregationReport("median", n, f)) if return_report else agg


@register_rule("trimmed_mean", tensor_native=True, cost="O(d n log n)", bound=(2, 1), flower="FedTrimmedAvg", strategy="FedTrimmedAvg",
               coordinate_wise=True, paper="Yin, Chen, Ramchandran & Bartlett, ICML 2018")
def trimmed_mean(updates, *, f: int, return_report: bool = False):
    """Coordinate-wise trimmed mean: drop the f largest and f smallest values, average the rest.

    Yin et al. (2018), beta-trimmed mean with beta = f / n. Needs n >= 2f + 1 so that at
    least one value survives; every output coordinate then lies within the range of the
    honest values. Same as Flower's ``FedTrimmedAvg(beta=f / n)`` (checked in the tests).

    Args:
        updates: (n, d) matrix of client updates.
        f: number of values trimmed on each side of every coordinate.
        return_report: also return an :class:`AggregationReport`.
    """
    X = as_update_matrix(updates)
    n, d = X.shape
    check_bound("trimmed_mean", n, f)
    xp = namespace(X)
    if f == 0:
        agg = xp.astype(xp.sum(X, axis=0, dtype=xp.float64) / n, X.dtype)
    else:
        agg = xp.empty(d, dtype=X.dtype, device=device_of(X))
        for a, part in sorted_column_chunks(X):
            agg[a : a + part.shape[0]] = xp.sum(part[:, f : n - f], axis=1, dtype=xp.float64) / (n - 2 * f)
    return (agg, AggregationReport("trimmed_mean", n, f, details={"trimmed_per_side": f})) if return_report else agg


@register_rule("meamed", tensor_native=True, cost="O(d n log n)", bound=(2, 1), aliases=("mean_around_median", "mean-around-median"), coordinate_wise=True,
               paper='Xie, Koyejo & Gupta, "Generalized Byzantine-tolerant SGD", arXiv:1802.10116, 2018')
def meamed(updates, *, f: int, return_report: bool = False):
    """Mean around the median (Meamed): per coordinate, the mean of the n - f values closest
    to that coordinate's median (n >= 2f + 1).

    Xie, Koyejo & Gupta (2018). Ties at equal distance from the median go to the lower
    values (ByzFL's ``Meamed`` takes whichever ``argpartition`` returns). Every output
    coordinate lies within the range of the values it averages, which hold at least
    n - 2f honest ones. Cost: one sort of each column chunk, as the median.

    Args:
        updates: (n, d) matrix of client updates.
        f: number of Byzantine clients to tolerate; n - f values are averaged per coordinate.
        return_report: also return an :class:`AggregationReport`.
    """
    X = as_update_matrix(updates)
    n = X.shape[0]
    check_bound("meamed", n, f)
    agg = closest_to_median_mean(X, None, n - f)
    return (agg, AggregationReport("meamed", n, f, details={"averaged_per_coordinate": n - f})) if return_report else agg
