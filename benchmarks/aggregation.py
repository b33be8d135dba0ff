"""Aggregation benchmark: flwr-byz's core rules against Flower's own rules and a floor.

For every n (default 51 and 101), d (default 1e6, float32) and f = n // 4 it prints, per rule,

- the flwr-byz time (best of up to 3 runs after one warm-up run),
- the ratio to the rule's *floor*: one float32 ``X @ X.T`` for the distance rules (Krum,
  Multi-Krum, nearest-neighbour mixing; Bulyan adds one ``np.partition`` pass over its theta
  selected rows), one ``np.partition(X, n // 2, axis=0)`` pass for the coordinate rules
  (median, trimmed mean, signSGD), one ``X.mean(axis=0)`` for the mean, and for the iterative
  rules the passes over X that every implementation of their algorithm makes, each priced
  at one ``X.mean(axis=0)``: two per iteration (a weighted sum, then the distances to it),
  plus, for the geometric median, its coordinate-wise-median start (one ``np.partition``)
  and the distances to it (one pass),
- the speed-up over Flower's legacy implementation (``flwr.server.strategy.aggregate``) and
  over its Message-API strategy (``flwr.serverapp.strategy.*.aggregate_train``): Flower's
  time divided by flwr-byz's time (``12x`` = flwr-byz is 12 times faster),
- the peak extra memory of the flwr-byz call (tracemalloc, which sees numpy's buffers,
  measured on the warm-up run) divided by the size of the stacked input (n * d * 4 bytes),
- whether the issue's targets are met.

A last row per n, ``krum [tight cluster]``, reruns Krum on an input whose Byzantine updates
form a tight cluster, which sends flwr-byz's distance computation through a second pass
over the clustered rows. BLAS runs on one thread by default (``--blas-threads``): on a small
shared machine multi-threaded OpenBLAS calls stall for seconds now and then.

Flower's legacy Krum computes its distances with a Python double loop (n^2 norms of length
d) and its legacy Bulyan calls that Krum theta = n - 2f times on the shrinking set. A legacy
call whose predicted time exceeds ``--legacy-limit`` seconds is not run: its time is
*estimated* (marked "est." in the table, ``"estimated": true`` in the JSON) from a measured
call, as explained in benchmarks/README.md.

This is a benchmark, not a test: every ratio is taken against anchors measured in the same
run, and the script exits 0 whatever the numbers. Results go to stdout and to
``benchmarks/results/aggregation.json`` (``aggregation_quick.json`` with ``--quick``).

    .venv/bin/python benchmarks/aggregation.py            # full size (n = 51, 101; d = 1e6)
    .venv/bin/python benchmarks/aggregation.py --quick    # smoke run (n = 11, 21; d = 1e5)
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from machine_info import machine

from flwr.app import Array, ArrayRecord, Message, MessageType, Metadata, MetricRecord, RecordDict
from flwr.server.strategy.aggregate import (
    _aggregate_n_closest_weights,
    aggregate,
    aggregate_bulyan,
    aggregate_krum,
    aggregate_median,
    aggregate_trimmed_avg,
)
from flwr.serverapp.strategy import Bulyan, FedAvg, FedMedian, FedTrimmedAvg, Krum, MultiKrum

from flwr_byz.aggregation import (
    bulyan,
    caf,
    centered_clipping,
    clipped_clustering,
    clustering,
    dnc,
    flame,
    fltrust,
    foolsgold,
    geometric_median,
    krum,
    mda,
    meamed,
    mean,
    median,
    monna,
    multi_krum,
    nearest_neighbor_mixing,
    sign_majority_vote,
    signguard,
    smea,
    trimmed_mean,
)

try:  # the peer library, in the dev extra; its rows are left out without it
    import byzfl
except ImportError:  # pragma: no cover
    byzfl = None
from flwr_byz.aggregation.mda import MAX_SUBSETS as MDA_MAX_SUBSETS

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results" / "aggregation.json"
QUICK_JSON = HERE / "results" / "aggregation_quick.json"

# Targets from the issue.
FLOOR_TARGET = 1.5  # every rule within 1.5x of its floor
MEM_TARGET = 1.0  # peak extra memory at most the size of the stacked input
KRUM_SPEEDUP_TARGET = 2.0  # Krum / Multi-Krum vs Flower's fastest implementation
BULYAN_SPEEDUP_TARGET = 20.0  # Bulyan vs Flower's legacy Bulyan


# --------------------------------------------------------------------------- timing helpers


def _call(fn, setup, traced: bool):
    """One call of fn (on setup()'s output when given): (result, seconds, peak extra bytes)."""
    arg = setup() if setup is not None else None
    gc.collect()
    peak = None
    if traced:
        tracemalloc.start()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    out = fn(arg) if setup is not None else fn()
    dt = time.perf_counter() - t0
    if traced:
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
    return out, dt, peak


def bench(fn, *, setup=None, repeats: int = 3, budget: float = 20.0, warmup: bool = True,
          trace: bool = False) -> dict:
    """Best-of-k timing; the result of the last call is kept in ``"out"``.

    One warm-up call (traced with tracemalloc when ``trace``: that is where the peak extra
    memory comes from; its time is not used), then up to ``repeats`` timed calls, stopping
    early when one more call would take the timed total past ``budget`` seconds (at least one
    timed call always runs). Without warm-up, the first call is timed (and traced when asked).
    """
    res: dict = {"times": [], "peak_extra_bytes": None, "warmup_s": None, "out": None}
    if warmup:
        res["out"], res["warmup_s"], res["peak_extra_bytes"] = _call(fn, setup, trace)
    for i in range(repeats):
        if res["times"] and sum(res["times"]) + min(res["times"]) > budget:
            break
        res["out"] = None
        res["out"], dt, peak = _call(fn, setup, trace and not warmup and i == 0)
        if peak is not None:
            res["peak_extra_bytes"] = peak
        res["times"].append(dt)
    res["best_s"] = min(res["times"])
    return res


def _flat(x) -> np.ndarray:
    """A Flower or flwr-byz aggregate as one flat float64 vector."""
    if isinstance(x, tuple):
        x = x[0]
    if isinstance(x, ArrayRecord):
        x = [a.numpy() for a in x.values()]
    if isinstance(x, list):
        x = np.concatenate([np.asarray(a).ravel() for a in x])
    return np.asarray(x, dtype=np.float64).ravel()


def _max_abs_diff(a, b) -> float:
    a, b = _flat(a), _flat(b)
    return float(np.max(np.abs(a - b))) if a.shape == b.shape else float("nan")


# --------------------------------------------------------------------------- data / inputs


def make_updates(n: int, d: int, f: int, seed: int, byz_noise: float = 1.0) -> np.ndarray:
    """n float32 updates: n - f honest ones around a common direction, f sign-flipped ones.

    Honest update i = g + noise_i (g, noise ~ N(0, 1) per coordinate); Byzantine update =
    -3 g + byz_noise * noise_i (a scaled sign-flipping attack). With byz_noise = 1 the
    Byzantine updates are as spread as the honest ones; with byz_noise = 0.1 they form a tight
    cluster, whose pairwise distances the mean-centred float32 Gram matrix of
    ``flwr_byz.aggregation.distances`` does not resolve, so it recomputes the Gram matrix of
    those rows around their own mean (its second pass): the "tight cluster" rows.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d), dtype=np.float32)
    g = rng.standard_normal(d, dtype=np.float32)
    X[: n - f] += g
    if byz_noise != 1.0:
        X[n - f :] *= np.float32(byz_noise)
    X[n - f :] -= np.float32(3.0) * g
    return X


def distance_passes(X: np.ndarray) -> str:
    """Diagnostic: the centred Gram passes that flwr-byz's distance computation takes on X,
    e.g. "mean (all rows)" or "mean (all rows) + mean of 12 rows" (see
    ``flwr_byz/aggregation/distances.py``)."""
    from flwr_byz.aggregation import distances

    calls, original = [], distances._centred_gram

    def spy(X, chunk_columns, robust, rows=None):
        calls.append("median (all rows)" if robust else "mean (all rows)" if rows is None
                     else f"mean of {len(rows)} rows")
        return original(X, chunk_columns, robust, rows)

    distances._centred_gram = spy
    try:
        distances.pairwise_sq_distances(X)
    finally:
        distances._centred_gram = original
    return " + ".join(calls)


def legacy_results(X: np.ndarray) -> list:
    """Flower's legacy input: [(list_of_ndarrays, num_examples)], one layer per client."""
    return [([X[i]], 1) for i in range(X.shape[0])]


def make_message_factory(X: np.ndarray):
    """Returns build() -> fresh reply Messages (the serialized Arrays are made once).

    Flower's FedMedian / FedTrimmedAvg / Bulyan pop the arrays out of the replies, so every
    call gets new Message / RecordDict / ArrayRecord objects around the same Array objects.
    """
    arrays = [Array(X[i]) for i in range(X.shape[0])]

    def build() -> list:
        now = time.time()
        return [
            Message(
                RecordDict({"arrays": ArrayRecord({"0": a}), "metrics": MetricRecord({"num-examples": 1})}),
                metadata=Metadata(run_id=1, message_id=str(i), src_node_id=i + 1, dst_node_id=0,
                                  reply_to_message_id="0", group_id="", created_at=now, ttl=3600.0,
                                  message_type=MessageType.TRAIN),
            )
            for i, a in enumerate(arrays)
        ]

    return build


# --------------------------------------------------------------------------- one size


def run_size(n: int, d: int, f: int, args, log) -> dict:
    fb = min(f, (n - 3) // 4)  # Bulyan needs n >= 4f + 3 (f = n // 4 breaks it for n = 101)
    theta, beta_b = n - 2 * fb, n - 4 * fb
    m = n - f  # Multi-Krum: number of averaged updates (flwr-byz's default)
    trim_beta = f / n if int(f / n * n) == f else (f + 0.5) / n  # FedTrimmedAvg trims int(beta * n)
    input_bytes = n * d * 4
    R, B = args.repeats, args.budget

    log(f"\n=== n={n} d={d} f={f} (Bulyan f={fb}, theta={theta}, beta={beta_b}) ===")
    t0 = time.perf_counter()
    X = make_updates(n, d, f, args.seed)
    log(f"generated X ({input_bytes / 2**20:.0f} MiB) in {time.perf_counter() - t0:.1f}s")
    passes = distance_passes(X)
    log(f"distance passes on this input: {passes}")

    # ---- floors
    floors = {}
    floors["gram"] = bench(lambda: X @ X.T, repeats=R, budget=B)["best_s"]
    floors["partition"] = bench(lambda: np.partition(X, n // 2, axis=0), repeats=R, budget=B)["best_s"]
    Xt = X[:theta]
    floors["partition_theta"] = bench(lambda: np.partition(Xt, theta // 2, axis=0), repeats=R, budget=B)["best_s"]
    floors["pass"] = bench(lambda: X.mean(axis=0), repeats=R, budget=B)["best_s"]
    mix = np.full((n, n), 1.0 / n, dtype=np.float32)
    floors["mix_product"] = bench(lambda: mix @ X, repeats=R, budget=B)["best_s"]
    log("floors: " + ", ".join(f"{k}={v:.3f}s" for k, v in floors.items()))

    # ---- Flower inputs
    build = make_message_factory(X)
    anchors = {}
    anchors["records_to_matrix"] = bench(
        lambda msgs: np.stack([msg.content["arrays"]["0"].numpy() for msg in msgs]),
        setup=build, repeats=R, budget=B)["best_s"]
    log(f"Message API: deserializing + stacking the n replies alone takes {anchors['records_to_matrix']:.3f}s")

    rows: list[dict] = []

    def flwr_byz(name, fn, floor_s, floor_desc, **extra):
        """Time flwr-byz's fn; floor_s None: the caller sets the floor once the run is known."""
        r = bench(fn, repeats=R, budget=B, trace=True)
        out = r.pop("out")
        row = {"rule": name, "n": n, "d": d, "f": extra.pop("f_used", f), "flwr_byz_s": r["best_s"],
               "flwr_byz_times": r["times"], "floor_s": floor_s, "floor": floor_desc,
               "floor_ratio": None if floor_s is None else r["best_s"] / floor_s,
               "peak_extra_bytes": r["peak_extra_bytes"],
               "mem_ratio": r["peak_extra_bytes"] / input_bytes, "legacy": None, "message_api": None,
               "notes": [], **extra}
        log(f"flwr-byz {name}: {r['best_s']:.3f}s (runs {', '.join(f'{t:.2f}' for t in r['times'])}), "
            + ("" if floor_s is None else f"floor x{row['floor_ratio']:.2f}, ") + f"mem x{row['mem_ratio']:.2f}")
        rows.append(row)
        return row, out

    def flower(row, which, label, fn, out_ref, setup=None, predicted=None, same_expected=True):
        """Time one Flower implementation (fn) and attach it to row[which]."""
        long = predicted is not None and predicted > args.warmup_limit
        r = bench(fn, setup=setup, repeats=1 if long else R, budget=B, warmup=not long, trace=not long)
        entry = {"impl": label, "seconds": r["best_s"], "times": r["times"], "estimated": False,
                 "peak_extra_bytes": r["peak_extra_bytes"],
                 "speedup": r["best_s"] / row["flwr_byz_s"]}
        entry["max_abs_diff_vs_flwr_byz"] = _max_abs_diff(r.pop("out"), out_ref)
        entry["same_rule_expected"] = same_expected
        row[which] = entry
        log(f"  Flower {which} {label}: {r['best_s']:.3f}s -> flwr-byz {entry['speedup']:.1f}x faster"
            + f" (max |diff| {entry['max_abs_diff_vs_flwr_byz']:.2e})")
        return entry

    def estimated(row, which, label, seconds, how):
        row[which] = {"impl": label, "seconds": seconds, "estimated": True, "how": how,
                      "speedup": seconds / row["flwr_byz_s"]}
        log(f"  Flower {which} {label}: ESTIMATED {seconds:.1f}s ({how}) -> flwr-byz {row[which]['speedup']:.1f}x faster")

    def legacy_krum_prediction(size: int) -> float:
        """Time legacy aggregate_krum on the first k rows; scale by (size / k)^2."""
        k = min(size, 12)
        sub = legacy_results(X[:k])
        t = min(_call(lambda: aggregate_krum(list(sub), min(f, (k - 3) // 2), 0), None, False)[1] for _ in range(2))
        return t * (size / k) ** 2

    # ---- Krum
    row, out = flwr_byz("krum", lambda: krum(X, f=f), floors["gram"], "X @ X.T")
    pred = legacy_krum_prediction(n)
    log(f"  legacy Krum predicted from a 12-row call: {pred:.1f}s")
    if pred <= args.legacy_limit:
        e = flower(row, "legacy", "aggregate_krum(to_keep=0)",
                   lambda res: aggregate_krum(res, f, 0), out, setup=lambda: legacy_results(X), predicted=pred)
        legacy_krum_s, legacy_krum_est = e["seconds"], False
    else:
        estimated(row, "legacy", "aggregate_krum(to_keep=0)", pred, "12-row call scaled by (n/12)^2")
        legacy_krum_s, legacy_krum_est = pred, True
    flower(row, "message_api", "Krum.aggregate_train",
           lambda msgs: Krum(num_malicious_nodes=f).aggregate_train(1, msgs), out, setup=build)
    del out

    # ---- Multi-Krum
    row, out = flwr_byz("multi_krum", lambda: multi_krum(X, f=f, m=m), floors["gram"], "X @ X.T", m=m)
    if pred <= args.legacy_limit:
        flower(row, "legacy", f"aggregate_krum(to_keep={m})",
               lambda res: aggregate_krum(res, f, m), out, setup=lambda: legacy_results(X), predicted=pred)
    else:
        estimated(row, "legacy", f"aggregate_krum(to_keep={m})", pred, "12-row Krum call scaled by (n/12)^2")
    flower(row, "message_api", f"MultiKrum(num_nodes_to_select={m}).aggregate_train",
           lambda msgs: MultiKrum(num_malicious_nodes=f, num_nodes_to_select=m).aggregate_train(1, msgs),
           out, setup=build)
    del out

    # ---- Bulyan
    row, out = flwr_byz("bulyan", lambda: bulyan(X, f=fb), floors["gram"] + floors["partition_theta"],
                        f"X @ X.T + partition of {theta} rows", f_used=fb, theta=theta, beta=beta_b)
    if fb != f:
        row["notes"].append(f"f={fb}: n >= 4f+3 forbids f={f}")
    # Legacy Bulyan = theta legacy Krum calls on sets of n, n-1, ..., n-theta+1 updates, then
    # a coordinate phase on the theta selected updates.
    sizes = range(n - theta + 1, n + 1)
    scale = sum((k / n) ** 2 for k in sizes)
    sel = legacy_results(X[:theta])

    def legacy_coordinate_phase():
        med = aggregate_median(sel)
        return _aggregate_n_closest_weights(med, sel, beta_closest=beta_b)

    krum_fb = legacy_krum_s  # same n: the O(n^2 d) distance loop does not depend on f
    coord = bench(legacy_coordinate_phase, repeats=R, budget=B)["best_s"]
    pred_b = krum_fb * scale + coord
    log(f"  legacy Bulyan predicted: {theta} Krum calls = {krum_fb:.2f}s x {scale:.2f} "
        f"+ coordinate phase {coord:.2f}s = {pred_b:.1f}s")
    if pred_b <= args.legacy_limit and not legacy_krum_est:
        flower(row, "legacy", "aggregate_bulyan(aggregate_krum)",
               lambda res: aggregate_bulyan(res, fb, aggregate_krum, to_keep=0), out,
               setup=lambda: legacy_results(X), predicted=pred_b)
    else:
        estimated(row, "legacy", "aggregate_bulyan(aggregate_krum)", pred_b,
                  f"{'estimated' if legacy_krum_est else 'measured'} legacy Krum at n={n} ({krum_fb:.2f}s) "
                  f"x sum_(k={n - theta + 1}..{n}) (k/n)^2 = {scale:.2f}, + measured coordinate phase "
                  f"({coord:.2f}s); excludes _find_reference_weights / list.pop (a lower bound)")
        row["legacy"]["krum_s"], row["legacy"]["coordinate_phase_s"] = krum_fb, coord
    flower(row, "message_api", "Bulyan.aggregate_train",
           lambda msgs: Bulyan(num_malicious_nodes=fb).aggregate_train(1, msgs), out, setup=build,
           same_expected=False)
    row["notes"].append("Message-API Bulyan selects by one Krum scoring (not the paper's iterated Krum)")
    del out

    # ---- coordinate rules
    row, out = flwr_byz("median", lambda: median(X, f=f), floors["partition"], "np.partition(X, n//2, axis=0)")
    flower(row, "legacy", "aggregate_median", lambda res: aggregate_median(res), out,
           setup=lambda: legacy_results(X))
    flower(row, "message_api", "FedMedian.aggregate_train",
           lambda msgs: FedMedian().aggregate_train(1, msgs), out, setup=build)
    del out

    row, out = flwr_byz("trimmed_mean", lambda: trimmed_mean(X, f=f), floors["partition"],
                        "np.partition(X, n//2, axis=0)")
    flower(row, "legacy", f"aggregate_trimmed_avg({trim_beta:.4f})",
           lambda res: aggregate_trimmed_avg(res, trim_beta), out, setup=lambda: legacy_results(X))
    flower(row, "message_api", f"FedTrimmedAvg(beta={trim_beta:.4f}).aggregate_train",
           lambda msgs: FedTrimmedAvg(beta=trim_beta).aggregate_train(1, msgs), out, setup=build)
    del out

    row, out = flwr_byz("sign_majority_vote", lambda: sign_majority_vote(X, f=f), floors["partition"],
                        "np.partition(X, n//2, axis=0)")
    row["notes"].append("no Flower counterpart")
    del out

    def peer(row, label, make, out_ref, same_expected=True):
        """Time ByzFL's implementation of the row's rule (the peer) on the same X."""
        if byzfl is None:
            row["notes"].append("ByzFL not installed: no peer time")
            return
        flower(row, "peer", f"ByzFL {label}", lambda: make()(X), out_ref, same_expected=same_expected)

    row, out = flwr_byz("meamed", lambda: meamed(X, f=f), floors["partition"], "np.partition(X, n//2, axis=0)")
    row["notes"].append("no Flower counterpart")
    peer(row, f"Meamed({f})", lambda: byzfl.Meamed(f), out)
    del out

    # ---- exact subset searches over C(n, f) subsets; refused past MAX_SUBSETS (the reason is recorded)
    for name, fn, byz in (("mda", mda, "MDA"), ("smea", smea, "SMEA")):
        if math.comb(n, f) <= MDA_MAX_SUBSETS:
            row, out = flwr_byz(name, lambda: fn(X, f=f), floors["gram"], "X @ X.T")
            row["notes"].append(f"exact search over C({n}, {f}) = {math.comb(n, f):,} subsets")
            if name == "smea" and byzfl is not None and math.comb(n, f) > 500:
                # ByzFL's SMEA makes one pass over the subset's rows per subset: time one such
                # step as ByzFL writes it, times the number of subsets
                k = n - f
                rows_k = np.arange(k)
                u = np.random.default_rng(0).standard_normal(d).astype(np.float32)

                def one_subset():
                    S = X[rows_k]
                    diffs = S - S.mean(axis=0)
                    return (diffs * (diffs @ u)[:, None]).sum(axis=0)

                per = bench(one_subset, repeats=R, budget=B)["best_s"]
                estimated(row, "peer", f"ByzFL SMEA({f})", per * math.comb(n, f),
                          f"one subset's power step ({per:.4f}s) x C({n}, {f}) subsets")
            else:
                peer(row, f"{byz}({f})", lambda: getattr(byzfl, byz)(f), out, same_expected=name == "mda")
            row["notes"].append("the floor is one Gram matrix; the exact search's C(n, f) small eigenproblems "
                                "or diameters are the rule's own cost (stated in its docstring)")
            del out
        else:
            log(f"flwr-byz {name}: not run at n={n}, f={f}: exact search over C({n}, {f}) = {math.comb(n, f):.3g} "
                f"subsets exceeds {MDA_MAX_SUBSETS:,}")

    # ---- the defense catalogue: floors are the passes over X each cannot avoid
    pass_s = floors["pass"]
    row, out = flwr_byz("monna", lambda: monna(X, f=f, idx=0), 2 * pass_s, "2 x X.mean(axis=0)")
    row["notes"].append("pivot idx=0 (ByzFL's convention): one distance pass + one weighted mean")
    peer(row, f"MoNNA({f}, 0)", lambda: byzfl.MoNNA(f, 0), out)
    del out
    row, out = flwr_byz("caf", lambda: caf(X, f=f, return_report=True), floors["gram"], "X @ X.T")
    row["notes"].append(f"{out[1].details['steps']} filter steps on the n x n Gram matrix")
    peer(row, f"CAF({f})", lambda: byzfl.CAF(f), out[0], same_expected=False)
    del out
    row, out = flwr_byz("dnc", lambda: dnc(X, f=f, seed=0), 2 * pass_s, "2 x X.mean(axis=0)")
    row["notes"].append("5 iterations on 10,000 sampled coordinates, then one mean over the kept updates")
    del out
    row, out = flwr_byz("signguard", lambda: signguard(X, f=f, seed=0), 2 * pass_s, "2 x X.mean(axis=0)")
    row["notes"].append("norms, signs of 10% of the coordinates, one weighted mean")
    del out
    row, out = flwr_byz("clustering", lambda: clustering(X, f=f), floors["gram"] + pass_s,
                        "X @ X.T + X.mean(axis=0)")
    row["notes"].append("one Gram matrix (cosines from distances and norms, no copy of X), one mean")
    del out
    row, out = flwr_byz("clipped_clustering", lambda: clipped_clustering(X, f=f), floors["gram"] + 2 * pass_s,
                        "X @ X.T + 2 x X.mean(axis=0)")
    row["notes"].append("norms, one Gram matrix (no copy of X), one weighted mean")
    del out

    # ---- defenses with server knowledge or memory (issue 14)
    g0 = np.asarray(X[f:].mean(axis=0, dtype=np.float64))  # a stand-in for the server's root-data update
    row, out = flwr_byz("fltrust", lambda: fltrust(X, server_update=g0), 3 * pass_s, "3 x X.mean(axis=0)")
    row["notes"].append("norms, float64 dot products with g0, one weighted mean; the server's own training "
                        "(100 examples, one local epoch) is not included")
    del out
    H = X * np.float32(2.0)  # each client's sum of updates (the strategy keeps it)
    row, out = flwr_byz("foolsgold", lambda: foolsgold(X, client_history=H), floors["gram"] + pass_s,
                        "X @ X.T + X.mean(axis=0)")
    row["notes"].append("cosines of the (n, d) histories from one Gram matrix, one weighted mean of X")
    del out, H
    G = np.random.default_rng(1).standard_normal(d).astype(np.float32)
    row, out = flwr_byz("flame", lambda: flame(X, f=f, global_model=G, seed=0), floors["gram"] + 3 * pass_s,
                        "X @ X.T + 3 x X.mean(axis=0)")
    row["notes"].append("model cosines (Gram matrix, norms, dots with G), HDBSCAN on n points, one weighted mean, "
                        "Gaussian noise")
    del out, G

    # ---- mean
    row, out = flwr_byz("mean", lambda: mean(X), floors["pass"], "X.mean(axis=0)", f_used=0)
    flower(row, "legacy", "aggregate (FedAvg)", lambda res: aggregate(res), out, setup=lambda: legacy_results(X))
    flower(row, "message_api", "FedAvg.aggregate_train", lambda msgs: FedAvg().aggregate_train(1, msgs), out,
           setup=build)
    del out

    # ---- iterative rules: every iteration reads X twice (a weighted sum, then the distances
    # to it); the geometric median also starts with a coordinate-wise median and one distance
    # pass. Their floors count those passes, each at the price of one X.mean(axis=0).
    row, out = flwr_byz("geometric_median", lambda: geometric_median(X, f=f, return_report=True),
                        None, "")
    iters = int(out[1].details["iterations"])
    floor_s = floors["partition"] + (1 + 2 * iters) * floors["pass"]
    row.update(iterations=iters, floor_s=floor_s, floor=f"partition + {1 + 2 * iters} x X.mean(axis=0)",
               floor_ratio=row["flwr_byz_s"] / floor_s)
    row["notes"] += [f"{iters} iterations; the floor is the median start (one partition) + 1 distance "
                     f"pass + 2 passes per iteration", "no Flower counterpart"]
    log(f"  geometric median: {iters} iterations, floor {floor_s:.3f}s, ratio {row['floor_ratio']:.2f}")
    del out

    row, out = flwr_byz("centered_clipping", lambda: centered_clipping(X, f=f, return_report=True),
                        None, "")
    iters = int(out[1].details["iterations"])
    floor_s = 2 * iters * floors["pass"]
    row.update(iterations=iters, floor_s=floor_s, floor=f"{2 * iters} x X.mean(axis=0)",
               floor_ratio=row["flwr_byz_s"] / floor_s)
    row["notes"] += [f"{iters} iteration (tau=10, center=0): 2 passes per iteration", "no Flower counterpart"]
    del out

    # ---- pre-aggregator
    # NNM replaces every update by the mean of its n - f nearest: its unavoidable work is the
    # distances and one (n, n) @ (n, d) mixing product, and its output is itself (n, d), so
    # its memory is judged without the returned matrix
    row, out = flwr_byz("nearest_neighbor_mixing", lambda: nearest_neighbor_mixing(X, f=f),
                        floors["gram"] + floors["mix_product"], "X @ X.T + (n,n) @ (n,d)")
    row["floor_ratio_gram_only"] = row["flwr_byz_s"] / floors["gram"]
    row["mem_ratio_excluding_output"] = (row["peak_extra_bytes"] - out.nbytes) / input_bytes
    row["notes"] += [f"{row['floor_ratio_gram_only']:.2f}x X @ X.T alone",
                     f"returns an (n, d) matrix (1.0x the input); without it {row['mem_ratio_excluding_output']:.2f}x",
                     "no Flower counterpart"]
    del out

    # ---- Krum again, on input where the Byzantine updates form a tight cluster: the distance
    # computation then takes its second pass (over the clustered rows). Flower's costs do not depend on
    # the values (a fixed loop of norms / one Gram matrix), so its Krum times are reused.
    krum_row = rows[0]
    del X, Xt
    gc.collect()
    X = make_updates(n, d, f, args.seed, byz_noise=0.1)
    tight_passes = distance_passes(X)
    log(f"distance passes on the tight-cluster input: {tight_passes}")
    row, out = flwr_byz("krum [tight cluster]", lambda: krum(X, f=f), floors["gram"], "X @ X.T",
                        distance_passes=tight_passes)
    for which in ("legacy", "message_api"):
        if krum_row[which]:
            e = {k: v for k, v in krum_row[which].items() if k not in ("times", "max_abs_diff_vs_flwr_byz")}
            e.update(speedup=e["seconds"] / row["flwr_byz_s"], reused_from="krum")
            row[which] = e
    row["notes"].append(f"distance passes: {tight_passes}; Flower times reused from the krum row")
    del out

    # ---- targets
    for row in rows:
        fails = []
        if row["floor_ratio"] > FLOOR_TARGET:
            fails.append("floor")
        if row.get("mem_ratio_excluding_output", row["mem_ratio"]) > MEM_TARGET:
            fails.append("mem")
        if row["rule"] in ("krum", "multi_krum", "krum [tight cluster]"):
            fastest = min(e["seconds"] for e in (row["legacy"], row["message_api"]) if e)
            row["speedup_vs_fastest_flower"] = fastest / row["flwr_byz_s"]
            if row["speedup_vs_fastest_flower"] < KRUM_SPEEDUP_TARGET:
                fails.append("speed")
        if row["rule"] == "bulyan" and row["legacy"]["speedup"] < BULYAN_SPEEDUP_TARGET:
            fails.append("speed")
        if row.get("peer") and row["peer"]["speedup"] < 1.0:  # ahead of the peer's implementation
            fails.append("peer")
        row["target_failures"] = fails
        row["target_met"] = not fails

    del X, build
    gc.collect()
    return {"n": n, "d": d, "f": f, "f_bulyan": fb, "distance_passes_on_main_input": passes, "input_bytes": input_bytes, "floors": floors,
            "anchors": anchors, "rules": rows}


# --------------------------------------------------------------------------- report


def _speed(e) -> str:
    if not e:
        return "-"
    return f"{e['speedup']:.1f}x" + (" (est.)" if e.get("estimated") else "")


def table(sizes: list[dict]) -> str:
    head = ["rule", "n", "f", "flwr-byz s", "floor ratio", "vs Flower legacy", "vs Flower Message API",
            "vs ByzFL", "peak extra mem / input", "target met?"]
    lines = []
    for s in sizes:
        for r in s["rules"]:
            met = "yes" if r["target_met"] else "no (" + ", ".join(r["target_failures"]) + ")"
            lines.append([r["rule"], str(r["n"]), str(r["f"]), f"{r['flwr_byz_s']:.3f}", f"{r['floor_ratio']:.2f}",
                          _speed(r["legacy"]), _speed(r["message_api"]), _speed(r.get("peer")), f"{r['mem_ratio']:.2f}",
                          met])
    w = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(head)]
    fmt = lambda cells: "| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(cells)) + " |"
    out = [fmt(head), "|" + "|".join("-" * (x + 2) for x in w) + "|"] + [fmt(l) for l in lines]
    return "\n".join(out)


def anchors_table(sizes: list[dict]) -> str:
    head = ["rule", "n", "floor", "floor s", "Flower legacy s", "Flower Message API s", "ByzFL s", "notes"]
    lines = []
    for s in sizes:
        for r in s["rules"]:
            leg, msg = r["legacy"], r["message_api"]
            lines.append([
                r["rule"], str(r["n"]), r["floor"], f"{r['floor_s']:.3f}",
                "-" if not leg else f"{leg['seconds']:.2f}" + (" (est.)" if leg.get("estimated") else ""),
                "-" if not msg else f"{msg['seconds']:.2f}",
                "-" if not r.get("peer") else f"{r['peer']['seconds']:.2f}", "; ".join(r["notes"])])
    w = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(head)]
    fmt = lambda cells: "| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(cells)) + " |"
    return "\n".join([fmt(head), "|" + "|".join("-" * (x + 2) for x in w) + "|"] + [fmt(l) for l in lines])


_BLAS_LIMITER = None


def _blas_limit(threads: int) -> str:
    """Limit BLAS to ``threads`` threads for the rest of the run; describe the BLAS in use."""
    global _BLAS_LIMITER
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        return "threadpoolctl not available: BLAS threads left as they are"
    if threads > 0:
        _BLAS_LIMITER = threadpool_limits(threads, user_api="blas")
    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    return "; ".join(f"{p.get('internal_api')} {p.get('version')} ({p.get('architecture')}), "
                     f"{p.get('num_threads')} thread(s)" for p in pools) or "no BLAS pool found"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: n in {11, 21}, d = 1e5")
    p.add_argument("--n", type=int, nargs="+", help="numbers of clients (default 51 101)")
    p.add_argument("--d", type=float, help="dimension (default 1e6)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (best is kept)")
    p.add_argument("--budget", type=float, default=20.0,
                   help="stop repeating a measurement once its timed runs would exceed this many seconds")
    p.add_argument("--legacy-limit", type=float, default=60.0,
                   help="estimate (do not run) a legacy Flower call predicted to take longer (s)")
    p.add_argument("--warmup-limit", type=float, default=10.0,
                   help="a Flower call predicted longer than this runs once, without warm-up (s)")
    p.add_argument("--blas-threads", type=int, default=1,
                   help="BLAS threads for the whole run (default 1: on this 2-core machine, shared with "
                        "other jobs, multi-threaded OpenBLAS calls stall for seconds now and then); "
                        "0 leaves BLAS as it is")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None,
                   help=f"where to write the results (default {DEFAULT_JSON.name}, {QUICK_JSON.name} with --quick, "
                        "in benchmarks/results/)")
    args = p.parse_args(argv)
    ns = args.n or ([11, 21] if args.quick else [51, 101])
    d = int(args.d or (1e5 if args.quick else 1e6))
    if args.json is None:
        args.json = QUICK_JSON if args.quick else DEFAULT_JSON

    logging.getLogger("flwr").setLevel(logging.WARNING)  # Flower logs one INFO line per aggregate_train
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    info = machine()
    load0 = os.getloadavg()
    log(f"machine: {info['cpu']}, {info['cpu_count']} CPUs; load average at start {load0[0]:.2f}")
    blas = _blas_limit(args.blas_threads)
    info["blas"] = blas
    log(f"BLAS: {blas}")
    t_start = time.perf_counter()
    sizes = [run_size(n, d, n // 4, args, log) for n in ns]
    total = time.perf_counter() - t_start
    load1 = os.getloadavg()

    print(f"\nflwr-byz aggregation benchmark: d={d} float32, f=n//4, best of up to {args.repeats} runs "
          f"after one warm-up; {info['cpu_count']} CPUs ({info['cpu']}), BLAS: {info['blas']}; load average {load0[0]:.2f} at start, "
          f"{load1[0]:.2f} at end; total {total:.0f}s")
    print("speed-ups = Flower's time / flwr-byz's time; floor ratio = flwr-byz's time / floor's time "
          "(for geometric_median / centered_clipping: their passes over X, see the anchors)\n")
    print(table(sizes))
    print("\nAnchors (seconds, same run):\n")
    print(anchors_table(sizes))
    for s in sizes:
        fl = s["floors"]
        print(f"\nn={s['n']}: X @ X.T {fl['gram']:.3f}s, np.partition(X) {fl['partition']:.3f}s, "
              f"np.partition(X[:theta]) {fl['partition_theta']:.3f}s, X.mean(axis=0) {fl['pass']:.3f}s, "
              f"(n,n)@(n,d) {fl['mix_product']:.3f}s; Message-API replies -> stacked matrix "
              f"{s['anchors']['records_to_matrix']:.3f}s")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    payload = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "argv": sys.argv[1:],
               "d": d, "machine": info, "load_average_start": load0, "load_average_end": load1,
               "total_seconds": total,
               "targets": {"floor_ratio_max": FLOOR_TARGET, "mem_ratio_max": MEM_TARGET,
                           "krum_speedup_vs_fastest_flower_min": KRUM_SPEEDUP_TARGET,
                           "bulyan_speedup_vs_legacy_min": BULYAN_SPEEDUP_TARGET},
               "sizes": sizes}
    args.json.write_text(json.dumps(payload, indent=1, default=float))
    print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
