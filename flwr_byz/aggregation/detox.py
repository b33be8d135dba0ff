"""DETOX: redundant groups, a majority vote inside each, then robust aggregation across.

Rajput, Wang, Charles & Papailiopoulos, "DETOX: A Redundancy-based Framework for Faster and
More Robust Gradient Aggregation", NeurIPS 2019. Clients are split into groups of r (odd);
every member of a group computes the update of the *same* data with the *same* seed, so
honest members agree. Stage 1 keeps, per group, the update that a strict majority of its
members sent (a group without a majority is dropped). A Byzantine update survives stage 1
only where Byzantine members are a majority of their group, so f Byzantine clients win at
most ``f // ((r + 1) // 2)`` of the n / r groups: that is the f the later stages must
tolerate. Optional stage A0 averages (or takes the coordinate-wise median of) subsets of the
group winners; stage A1 is any rule of the core on what is left. The robust rule thus sees
n / r (or fewer) inputs instead of n: quadratic rules get about r^2 times cheaper.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ._validate import as_update_matrix
from .backend import arrays_equal, device_of, namespace, row_index, zeros
from .kernels import coordinate_median
from .distances import distances_to, pairwise_sq_distances
from .mean import weighted_mean
from .pipeline import RobustAggregator
from .registry import minimum_clients, resolve_rule
from .report import AggregationReport


def assign_groups(num_clients: int, r: int, seed=None) -> list[list[int]]:
    """Random groups of r client positions (seeded); the n mod r left over join no group."""
    if r < 1 or r % 2 == 0:
        raise ValueError(f"DETOX group size r must be odd and >= 1, got {r}")
    if num_clients < r:
        raise ValueError(f"DETOX needs at least r={r} clients, got {num_clients}")
    perm = np.random.default_rng(seed).permutation(num_clients)
    k = num_clients // r
    return [sorted(int(i) for i in perm[g * r : (g + 1) * r]) for g in range(k)]


@dataclass
class DetoxPlan:
    """One round's DETOX assignment: groups of client ids and each member's config."""

    groups: list[list]
    configs: dict


def detox_assignment(client_ids, r: int, seed: int, server_round: int) -> DetoxPlan:
    """Groups for one round (seeded by (seed, round)) and the config each member must follow:
    ``detox-group``, ``detox-shard`` (= the group), ``detox-num-shards``, ``detox-seed``.
    Clients left over (n mod r) get no config: they sit the round out."""
    ids = list(client_ids)
    if len(ids) < r:
        return DetoxPlan([], {})
    groups = assign_groups(len(ids), r, seed=(int(seed), int(server_round)))
    configs = {}
    for gi, g in enumerate(groups):
        group_seed = int(np.random.SeedSequence([int(seed), int(server_round), gi]).generate_state(1)[0])
        for i in g:
            configs[ids[i]] = {"detox-group": gi, "detox-shard": gi, "detox-num-shards": len(groups),
                               "detox-seed": group_seed}
    return DetoxPlan([[ids[i] for i in g] for g in groups], configs)


def byzantine_groups_bound(f: int, r: int) -> int:
    """Most groups that f Byzantine clients can win: each win needs (r + 1) / 2 of them."""
    return int(f) // ((r + 1) // 2)


def groups_needed(a1: str, f: int, r: int) -> tuple[int, int]:
    """``(groups, f1)``: how many group winners A1 needs to tolerate the f1 groups that f
    Byzantine clients can win, so DETOX needs at least ``groups * r`` nodes in a round."""
    f1 = byzantine_groups_bound(f, r)
    return minimum_clients(a1, f1), f1


def majority_vote(G, *, tolerance: float | None = None, group_size: int | None = None):
    """Stage 1 on one group's updates: an (r, d) matrix or a list of r row views.

    Exact mode (``tolerance=None``): the winner is a row equal to more than r / 2 rows
    (equal values: ``np.array_equal`` / ``torch.equal``, so -0.0 counts as 0.0; rows holding
    NaN never get here, the update matrix refuses them).
    Tolerance mode: rows i, j agree when |x_i - x_j| <= tolerance * max(|x_i|, |x_j|); the
    winner is the row agreeing with the most rows, if more than r / 2 (itself included); the
    returned update is the mean of the rows that agree with it.

    ``group_size`` is the group's assigned size r when some members did not reply (their
    missing votes count against every candidate); by default the number of rows.

    Returns ``(update or None, members)``: the indices of the rows that formed the majority.
    """
    rows = len(G)
    r = rows if group_size is None else int(group_size)
    if tolerance is None:
        # Bit-identity is an equivalence: compare each row with one representative per class
        # (r - 1 comparisons for a unanimous group instead of r (r - 1) / 2).
        label = np.empty(rows, dtype=int)
        reps: list[int] = []
        for i in range(rows):
            label[i] = next((k for k, j in enumerate(reps) if arrays_equal(G[i], G[j])), len(reps))
            if label[i] == len(reps):
                reps.append(i)
        agree = label[:, None] == label[None, :]
    else:
        G = namespace(G[0]).stack(G)
        norms = distances_to(G, zeros(G, G.shape[1]))
        dist = np.sqrt(pairwise_sq_distances(G))
        # A row whose norm or distances overflow agrees with no row, itself included (inf <= inf
        # would otherwise let one huge update "agree" with every member and win the vote).
        finite = np.isfinite(norms)
        agree = (finite[:, None] & finite[None, :] & np.isfinite(dist)
                 & (dist <= tolerance * np.maximum(norms[:, None], norms[None, :])))
    counts = agree.sum(axis=1)
    best = int(np.argmax(counts))
    if counts[best] * 2 <= r:
        return None, []
    members = np.flatnonzero(agree[best]).tolist()
    update = G[best] if tolerance is None else weighted_mean(G[row_index(G, members)])  # a view in exact mode
    return update, members


def detox(updates, groups, *, f: int, a1: str = "multi_krum", a1_params: dict | None = None,
          a0: str | None = None, a0_subsets: int | None = None, tolerance: float | None = None,
          pre=(), group_size: int | None = None, return_report: bool = False, a1_inputs: dict | None = None):
    """DETOX aggregation of ``updates`` whose rows are organised in ``groups``.

    Args:
        updates: (n, d) matrix; row i is client i's update.
        groups: lists of row indices, each of odd size r (from :func:`assign_groups`); a group
            may be shorter when members did not reply (give ``group_size`` = r then).
        f: number of Byzantine clients among the n.
        a1: the final robust rule (a name of :data:`RULES`), run with
            f1 = ``byzantine_groups_bound(f, r)`` (or f1 subset means for A0).
        a1_params: the rule's own parameters.
        a0: None, "mean" or "median": stage A0 over ``a0_subsets`` subsets of the winners.
        a0_subsets: number of subsets for A0 (default: 2 * f1 + 1, the fewest that keep
            a majority of clean subsets; must not exceed the number of winners).
        tolerance: None for the exact vote, or the relative distance of tolerance mode.
        pre: pre-aggregators for A1.
        group_size: r, when groups may have lost members.
        return_report: also return an :class:`AggregationReport` (``selected``: the rows
            whose group won; ``details``: group counts and stage timings).
        a1_inputs: the server-side round inputs A1 takes (``center``: centered clipping's
            and MoNNA's previous aggregate; ``history``: ClippedClustering's norms of earlier
            updates; ``global_model``: FLAME's), passed to A1 as they are.
    """
    X = as_update_matrix(updates)
    n = X.shape[0]
    groups = [list(g) for g in groups]
    if not groups or any(isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < n
                         for g in groups for i in g):
        raise ValueError(f"DETOX groups must be a non-empty list of lists of row indices in [0, {n}), got {groups!r}")
    t0 = time.perf_counter()
    r = int(group_size or max(len(g) for g in groups))
    if r % 2 == 0:
        raise ValueError(f"DETOX group size must be odd, got {r}")
    xp = namespace(X)
    W = xp.empty((len(groups), X.shape[1]), dtype=X.dtype, device=device_of(X))
    winning_rows, won_groups = [], []
    for gi, g in enumerate(groups):
        if not g:
            continue
        update, members = majority_vote([X[i] for i in g], tolerance=tolerance, group_size=r)
        if update is not None:
            W[len(won_groups)] = update
            winning_rows.extend(int(g[m]) for m in members)
            won_groups.append(gi)
    t_vote = time.perf_counter() - t0
    f1 = byzantine_groups_bound(f, r)
    if not won_groups:
        raise ValueError("DETOX: no group reached a majority: the members of a group must send identical "
                         "updates (trained on the group's shard with its seed: the detox-* train config, "
                         "docs/detox.md), or use tolerance= when training is not bit-reproducible")
    W = W[: len(won_groups)]
    t1 = time.perf_counter()
    if a0 is not None:
        k = a0_subsets or 2 * f1 + 1
        if k > W.shape[0]:
            raise ValueError(f"DETOX A0: {k} subsets but only {W.shape[0]} group winners")
        parts = np.array_split(np.arange(W.shape[0]), k)
        combine = weighted_mean if a0 == "mean" else coordinate_median
        if a0 not in ("mean", "median"):
            raise ValueError(f"DETOX A0 must be None, 'mean' or 'median', got {a0!r}")
        W = xp.stack([combine(W[row_index(W, p)]) for p in parts])
    t_a0 = time.perf_counter() - t1
    t2 = time.perf_counter()
    agg, inner = RobustAggregator(a1, f=f1, pre=pre, **(a1_params or {}))(W, **(a1_inputs or {}))
    t_a1 = time.perf_counter() - t2
    if not return_report:
        return agg
    report = AggregationReport(
        f"detox+{a1}", X.shape[0], f, selected=sorted(winning_rows),
        details={"r": r, "groups": len(groups), "groups_won": len(won_groups), "f_groups": f1,
                 "vote_time_s": t_vote, "a0_time_s": t_a0, "a1_time_s": t_a1, "a1_inputs": W.shape[0]},
    )
    report.details["won_groups"] = won_groups
    report.details["a1_selected"] = inner.selected
    if "norms" in inner.details:  # ClippedClustering's norms of the winners, for the next rounds' history
        report.details["norms"] = inner.details["norms"]
    return agg, report


A1_INPUTS = ("center", "history", "global_model")  # server-side: meaningful for the groups' winners


class DetoxAggregator:
    """DETOX as one callable, with the interface of :class:`RobustAggregator` (the strategies
    pass each round's groups as ``groups=``)."""

    def __init__(self, *, group_size: int = 3, f: int = 0, a1: str = "multi_krum", a1_params: dict | None = None,
                 a0: str | None = None, a0_subsets: int | None = None, tolerance: float | None = None, pre=()):
        if group_size < 1 or group_size % 2 == 0:
            raise ValueError(f"DETOX group size must be odd and >= 1, got {group_size}")
        spec = resolve_rule(a1)  # an unknown A1 fails here, not every round
        a1 = spec.name
        # A1 runs on the groups' winners: no per-client history and no server update reach it
        missing = [k for k in spec.round_inputs if k in spec.required_inputs or k == "client_history"]
        if missing:
            raise ValueError(f"DETOX cannot run {a1} as A1: it needs {', '.join(missing)} per client or from the "
                             f"server, and A1 sees only the groups' winning updates")
        self.rule = f"detox+{a1}"
        self.a1_spec = spec
        # the server-side inputs A1 takes: the strategy supplies them as it would to A1 alone
        self.round_inputs = tuple(k for k in spec.round_inputs if k in A1_INPUTS)
        self.group_size, self.f, self.pre = int(group_size), int(f), list(pre)
        self.options = dict(a1=a1, a1_params=a1_params, a0=a0, a0_subsets=a0_subsets, tolerance=tolerance)

    def minimum_clients(self) -> int:
        return self.group_size

    def __call__(self, X, weights=None, *, server_round: int = 0, groups=None, **round_inputs):
        if groups is None:
            raise ValueError("DETOX needs the round's groups")
        a1_inputs = {k: v for k, v in round_inputs.items() if k in A1_INPUTS and v is not None}
        return detox(X, groups, f=self.f, pre=self.pre, group_size=self.group_size, return_report=True,
                     a1_inputs=a1_inputs, **self.options)

    def __repr__(self) -> str:
        return f"DetoxAggregator(r={self.group_size}, f={self.f}, {self.options})"
