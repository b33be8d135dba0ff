"""DETOX aggregation time against the plain robust rule on the same n (issue: DETOX).

For n in {99, 243}, d = 1e6 float32, r = 3: the time of DETOX + Multi-Krum and DETOX +
Bulyan (vote + A1 on the n / r group winners) as a ratio to plain Multi-Krum and Bulyan on
all n updates, measured in the same run. Target: at least r^2 / 2 = 4.5 times faster.

The input is what DETOX sees in a clean round: every group's r members sent the same
(bit-identical) update, and f Byzantine clients sit in distinct groups (each loses its vote).

For Bulyan it also times its two stages apart: the quadratic one (all pairwise distances and
the iterated Krum selection) on the n updates and on the n / r group winners, where the
r^2 / 2 target applies, and the coordinate phase (closest-to-median means over theta
selected updates), linear in n, which DETOX can shrink only about r-fold.

    .venv/bin/python benchmarks/detox.py            # full size (about 2-4 minutes)
    .venv/bin/python benchmarks/detox.py --quick    # n in {27, 45}, d = 1e5
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from flwr_byz.aggregation import bulyan, multi_krum, pairwise_sq_distances
from flwr_byz.aggregation.bulyan import iterated_krum_selection
from flwr_byz.aggregation.detox import assign_groups, byzantine_groups_bound, detox


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def case(n: int, d: int, r: int, f: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    groups = assign_groups(n, r, seed=seed)
    X = np.empty((n, d), dtype=np.float32)
    for g in groups:
        X[g] = rng.standard_normal(d, dtype=np.float32)
    for g in groups[:f]:  # one Byzantine member in each of f groups: outvoted
        X[g[0]] = rng.standard_normal(d, dtype=np.float32) * 10
    return X, groups


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=None, help="JSON results (default benchmarks/results/detox.json, "
                   "or detox_quick.json with --quick)")
    args = p.parse_args(argv)
    args.out = args.out or str(Path(__file__).parent / "results" / ("detox_quick.json" if args.quick else "detox.json"))
    ns, d, r = ((27, 45), 100_000, 3) if args.quick else ((99, 243), 1_000_000, 3)
    rows = []
    print(f"{'rule':<12}{'n':>5}{'f':>4}{'plain s':>10}{'detox s':>10}{'speed-up':>10}{'target':>8}")
    for n in ns:
        f = max(1, n // 20)  # Bulyan on the n / r winners needs n / r >= 4 f1 + 3
        X, groups = case(n, d, r, f)
        for name, plain, a1 in (("multi_krum", lambda: multi_krum(X, f=f), "multi_krum"),
                                ("bulyan", lambda: bulyan(X, f=f), "bulyan")):
            plain()  # warm-up
            t_plain = best_of(plain, args.repeats)
            t_detox = best_of(lambda: detox(X, groups, f=f, a1=a1), args.repeats)
            target = r * r / 2
            rows.append({"rule": name, "n": n, "d": d, "f": f, "r": r, "plain_s": t_plain, "detox_s": t_detox,
                         "speedup": t_plain / t_detox, "target": target})
            ok = "yes" if t_plain / t_detox >= target else "no"
            print(f"{name:<12}{n:>5}{f:>4}{t_plain:>10.3f}{t_detox:>10.3f}{t_plain / t_detox:>9.1f}x{ok:>8}")
        # Bulyan's quadratic stage alone: on all n rows, and on one winner per group
        W = np.ascontiguousarray(X[[g[1] for g in groups]])
        f1 = byzantine_groups_bound(f, r)
        t_sel = best_of(lambda: iterated_krum_selection(pairwise_sq_distances(X), f, n - 2 * f), args.repeats)
        t_sel_w = best_of(lambda: iterated_krum_selection(pairwise_sq_distances(W), f1, len(W) - 2 * f1), args.repeats)
        rows.append({"rule": "bulyan: distances + selection", "n": n, "d": d, "f": f, "r": r, "plain_s": t_sel,
                     "detox_s": t_sel_w, "speedup": t_sel / t_sel_w, "target": r * r / 2})
        ok = "yes" if t_sel / t_sel_w >= r * r / 2 else "no"
        print(f"{'  stage 1':<12}{n:>5}{f:>4}{t_sel:>10.3f}{t_sel_w:>10.3f}{t_sel / t_sel_w:>9.1f}x{ok:>8}"
              "   (Bulyan's distances + iterated Krum only)")
        del X, W
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
