"""Per-round wall time of robust strategies vs FedAvg's mean in the same simulation.

MNIST, the ALIE paper's MLP, n = 51 clients, in Flower's Simulation Engine (all cells of
the run share one Ray start). Target: the robust rule adds at most 5% per round. Printed:
the ratio of each strategy's mean round time to the mean's (noisy: Ray's scheduling moves
whole rounds by more than 5%), and what the rule itself adds, its aggregation time minus the
mean's as a share of the mean's round time (the target is judged on this one).

    .venv/bin/python benchmarks/simulation.py --data-root ../shared/data
    .venv/bin/python benchmarks/simulation.py --dataset digits --num-clients 21   # no MNIST files
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from flwr_byz.simulations.config import RunConfig
from flwr_byz.simulations.runner import run_cells


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--num-clients", type=int, default=51)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--strategies", default="mean,multi_krum,bulyan,median,trimmed_mean")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "simulation.json"))
    args = p.parse_args(argv)
    n = args.num_clients
    f = (n - 3) // 4  # the largest f Bulyan accepts
    cells = [RunConfig(strategy=s, num_clients=n, f=f, rounds=args.rounds, dataset=args.dataset,
                       data_root=args.data_root, model="mlp", local_epochs=1, batch_size=32, lr=0.1)
             for s in args.strategies.split(",")]
    # Ray actors start and load the data during the first rounds of the run: a 2-round
    # warm-up cell (not reported) takes that cost, and each cell's first round is left out
    warmup = RunConfig(strategy="mean", num_clients=n, rounds=2, dataset=args.dataset, data_root=args.data_root,
                       model="mlp", local_epochs=1, batch_size=32, lr=0.1)  # same data group: one Ray start
    with tempfile.TemporaryDirectory() as tmp:
        rows = run_cells([warmup, *cells], tmp, progress=False)
    by = {}
    for c in cells:
        rs = [r for r in rows if r["cell"] == c.cell_id() and r["round"] > 1]
        by[c.strategy] = {"round_s": float(np.mean([r["round_time_s"] for r in rs])),
                          "aggregation_s": float(np.mean([r["aggregation_time_s"] for r in rs])),
                          "accuracy": rs[-1]["accuracy"]}
    base, base_agg = by["mean"]["round_s"], by["mean"]["aggregation_s"]
    print(f"{args.dataset}, n={n}, f={f}, {args.rounds} rounds (round 1 of each left out; a warm-up cell first)")
    print(f"{'strategy':<14}{'round s':>9}{'vs mean':>9}{'agg s':>9}{'rule adds':>11}{'<= 5%':>7}")
    for s, v in by.items():
        ratio = v["round_s"] / base
        added = (v["aggregation_s"] - base_agg) / base
        v.update(ratio_to_mean=ratio, added_share=added, target_met=added <= 0.05)
        print(f"{s:<14}{v['round_s']:>9.2f}{ratio:>9.3f}{v['aggregation_s']:>9.3f}"
              f"{added:>11.2%}{'yes' if added <= 0.05 else 'no':>7}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"dataset": args.dataset, "n": n, "f": f, "rounds": args.rounds,
                                          "strategies": by}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
