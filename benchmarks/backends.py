"""Backends benchmark: the core's rules at real model sizes, NumPy on the CPU vs torch on the
CPU vs torch on CUDA, each against floors measured on the same device in the same run.

For every model size (ResNet-18 for CIFAR-10: d = 11,181,642, counted from torchvision's
``resnet18(num_classes=10)``; VGG13-BN for CIFAR-100: d = 9,462,180, torchvision's
``vgg13_bn`` convolutional part plus a 512 -> 100 head; WRN-40-4: d = 8.9M, Zagoruyko &
Komodakis 2016, Table 1) and every n (default 45, the DETOX paper's workers, and 51, the
ALIE paper's), f = n // 4 (Bulyan: the largest f with n >= 4f + 3), float32, it prints per
backend and rule:

- the time of the rule (best of ``--repeats`` after one warm-up; CUDA calls synchronised),
- the ratio to the rule's floor *on that backend*: one float32 Gram product ``X @ X.T`` for
  the distance rules (Krum, Multi-Krum; Bulyan adds one sort of its theta rows; NNM adds
  its mixing product ``M @ X`` of an (n, n) matrix with X, which writes an (n, d) result), one
  full sort of the columns (``np.partition`` at the median on NumPy, ``torch.sort`` along
  the clients on torch) for the coordinate rules (median, trimmed mean, Meamed, signSGD),
  one mean ``X.mean(0)`` for the mean, and for the iterative rules two mean-priced passes
  per iteration (the geometric median adds its median start),
- the largest difference from the NumPy result (relative to the result's largest entry),
- for torch (CUDA, and the CPU for comparison): the share of a DETOX-paper round on the same
  device: n clients x one ResNet-18 SGD step on a CIFAR-sized batch of 32 (forward,
  backward, step; timed here, best of a few steps, times n).

The targets (issue 15), reported, never enforced: on CUDA each rule within 2x of its
device floor, and the rule <= 5% of the DETOX-paper round. This is a benchmark, not a test:
it exits 0 whatever the numbers. Results: stdout and ``benchmarks/results/backends.json``.

    .venv/bin/python benchmarks/backends.py                    # every size, every backend here
    .venv/bin/python benchmarks/backends.py --models resnet18 --n 51 --backends numpy,torch-cpu
    .venv/bin/python benchmarks/backends.py --quick            # smoke run (d = 2e5)
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from machine_info import machine
import torch

from flwr_byz.aggregation import REGISTRY, nearest_neighbor_mixing

MODELS = {"resnet18": 11_181_642, "vgg13_bn_cifar100": 9_462_180, "wrn_40_4": 8_900_000}
RULES = ("mean", "median", "trimmed_mean", "meamed", "krum", "multi_krum", "bulyan", "geometric_median",
         "centered_clipping", "signsgd_majority", "nnm")
GM_MAXITER = 8  # the geometric median's Weiszfeld iterations, fixed so that every backend does the same work


def sync(backend: str) -> None:
    if backend == "torch-cuda":
        torch.cuda.synchronize()


def timed(fn, backend: str, repeats: int, budget: float) -> tuple[float, object]:
    """(best seconds, last result): one warm-up call, then up to ``repeats`` timed calls
    within ``budget`` seconds."""
    out = fn()
    sync(backend)
    times: list[float] = []
    for _ in range(repeats):
        if times and sum(times) + min(times) > budget:
            break
        out = None
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        sync(backend)
        times.append(time.perf_counter() - t0)
    return min(times), out


def floors(X, backend: str, repeats: int, budget: float) -> dict:
    """The anchors of one backend: Gram product, column sort (or partition), mean, and an
    (n, n) @ (n, d) product (NNM's mixing)."""
    n = X.shape[0]
    M = np.full((n, n), 1.0 / n, dtype=np.float32)
    if backend == "numpy":
        gram = lambda: X @ X.T  # noqa: E731
        sort = lambda: np.partition(X, n // 2, axis=0)  # noqa: E731
        mean = lambda: X.mean(axis=0)  # noqa: E731
        mix = lambda: M @ X  # noqa: E731
    else:
        Mt = torch.from_numpy(M).to(X.device)
        prev = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        gram = lambda: X @ X.T  # noqa: E731
        sort = lambda: torch.sort(X, dim=0).values  # noqa: E731
        mean = lambda: X.mean(dim=0)  # noqa: E731
        mix = lambda: Mt @ X  # noqa: E731
    out = {name: timed(fn, backend, repeats, budget)[0]
           for name, fn in (("gram", gram), ("sort", sort), ("mean", mean), ("mix", mix))}
    if backend != "numpy":
        torch.backends.cuda.matmul.allow_tf32 = prev
    return out


def rule_call(rule: str, X, f: int):
    if rule == "nnm":
        return lambda: nearest_neighbor_mixing(X, f=f)
    kwargs = {} if rule == "mean" else {"f": f}
    if rule == "geometric_median":
        kwargs.update(maxiter=GM_MAXITER, ftol=0.0)
    if rule == "signsgd_majority":
        kwargs["server_lr"] = 0.01
    fn = REGISTRY[rule].fn
    return lambda: fn(X, **kwargs)


def rule_floor(rule: str, fl: dict) -> tuple[float, str]:
    if rule in ("krum", "multi_krum"):
        return fl["gram"], "1 Gram"
    if rule == "nnm":
        return fl["gram"] + fl["mix"], "1 Gram + 1 mixing product"
    if rule == "bulyan":
        return fl["gram"] + fl["sort"], "1 Gram + 1 sort"
    if rule in ("median", "trimmed_mean", "meamed", "signsgd_majority"):
        return fl["sort"], "1 sort"
    if rule == "mean":
        return fl["mean"], "1 mean"
    if rule == "geometric_median":
        return fl["sort"] + (2 * GM_MAXITER + 1) * fl["mean"], f"1 sort + {2 * GM_MAXITER + 1} means"
    if rule == "centered_clipping":
        return 2 * fl["mean"], "2 means"
    raise KeyError(rule)


def make_updates(n: int, d: int, f: int, seed: int) -> np.ndarray:
    """n - f honest float32 updates around a common direction, f sign-flipped (as in
    benchmarks/aggregation.py), built in place to keep the peak memory at one matrix."""
    rng = np.random.default_rng(seed)
    X = np.empty((n, d), dtype=np.float32)
    g = rng.standard_normal(d, dtype=np.float32)
    for i in range(n):
        X[i] = rng.standard_normal(d, dtype=np.float32)
        X[i] += g if i < n - f else -3.0 * g
    return X


def detox_round_seconds(n: int, device: str, repeats: int = 5) -> float:
    """n clients x one ResNet-18 SGD step on a batch of 32 CIFAR images, on ``device``."""
    from flwr_byz.models import make_model

    model = make_model("resnet18", (3, 32, 32), 10, seed=0).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(32, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (32,), device=device)

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    backend = "torch-cuda" if device.startswith("cuda") else "torch-cpu"
    best, _ = timed(step, backend, repeats, budget=60.0)
    return n * best


def run(args) -> dict:
    backends = [b for b in args.backends if b != "torch-cuda" or torch.cuda.is_available()]
    skipped = sorted(set(args.backends) - set(backends))
    results = {"machine": machine(), "backends": backends, "skipped_backends": skipped, "sizes": [],
               "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "threads": args.threads}
    for model in args.models:
        d = int(args.d or MODELS[model])
        for n in args.n:
            f = n // 4
            X = make_updates(n, d, f, args.seed)
            size = {"model": model, "n": n, "d": d, "f": f, "rows": []}
            reference = {}
            for backend in backends:
                print(f"[{model} n={n}] {backend} ...", file=sys.stderr, flush=True)
                Xb = X if backend == "numpy" else torch.from_numpy(X).to("cuda" if backend == "torch-cuda" else "cpu")
                fl = floors(Xb, backend, args.repeats, args.budget)
                size.setdefault("floors", {})[backend] = fl
                round_s = None
                if backend != "numpy" and not args.no_round:  # the clients' step on the same device
                    round_s = detox_round_seconds(n, "cuda" if backend == "torch-cuda" else "cpu")
                for rule in args.rules:
                    ff = (n - 3) // 4 if rule == "bulyan" else f
                    seconds, out = timed(rule_call(rule, Xb, ff), backend, args.repeats, args.budget)
                    out = out.cpu().numpy() if torch.is_tensor(out) else np.asarray(out)
                    if backend == "numpy":
                        reference[rule] = out.astype(np.float64)
                        diff = 0.0
                    else:
                        ref = reference.get(rule)
                        scale = max(float(np.max(np.abs(ref))), 1e-30) if ref is not None else 1.0
                        diff = float(np.max(np.abs(out.astype(np.float64) - ref)) / scale) if ref is not None else None
                    floor_s, floor_desc = rule_floor(rule, fl)
                    row = {"backend": backend, "rule": rule, "f": ff, "seconds": seconds, "floor": floor_desc,
                           "floor_s": floor_s, "x_floor": seconds / floor_s, "max_rel_diff_vs_numpy": diff}
                    if round_s is not None:
                        row["detox_round_s"] = round_s
                        row["share_of_round"] = seconds / round_s
                    size["rows"].append(row)
                    print(f"  {rule:18s} {seconds:8.3f} s  {seconds / floor_s:6.2f}x floor", file=sys.stderr, flush=True)
                del Xb
                if backend == "torch-cuda":
                    torch.cuda.empty_cache()
            results["sizes"].append(size)
            del X
            gc.collect()
    return results


def table(results: dict) -> str:
    lines = []
    for size in results["sizes"]:
        lines.append(f"\n{size['model']}: n = {size['n']}, d = {size['d']:,}, f = {size['f']} (float32)\n")
        lines.append("| rule | backend | seconds | floor | x floor | vs NumPy (rel.) | share of a DETOX round |")
        lines.append("|---|---|---|---|---|---|---|")
        for r in size["rows"]:
            diff = r["max_rel_diff_vs_numpy"]
            share = f"{100 * r['share_of_round']:.1f}%" if "share_of_round" in r else ""
            lines.append(f"| {r['rule']} | {r['backend']} | {r['seconds']:.3f} | {r['floor']} ({r['floor_s']:.3f} s) "
                         f"| {r['x_floor']:.2f} | {'' if diff is None else f'{diff:.1e}'} | {share} |")
        for backend, fl in size.get("floors", {}).items():
            lines.append(f"\nfloors on {backend}: Gram {fl['gram']:.3f} s, sort {fl['sort']:.3f} s, mean {fl['mean']:.4f} s, "
                         f"(n, n) @ (n, d) {fl['mix']:.3f} s")
    if results["skipped_backends"]:
        lines.append(f"\nnot measured here (no device): {', '.join(results['skipped_backends'])}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", type=lambda s: s.split(","), default=list(MODELS),
                   help=f"comma-separated model sizes: {', '.join(f'{k} ({v:,})' for k, v in MODELS.items())}")
    p.add_argument("--n", type=lambda s: [int(v) for v in s.split(",")], default=[45, 51], help="comma-separated n")
    p.add_argument("--d", type=float, default=None, help="override d (every model)")
    p.add_argument("--backends", type=lambda s: s.split(","), default=["numpy", "torch-cpu", "torch-cuda"],
                   help="comma-separated: numpy, torch-cpu, torch-cuda (skipped without a GPU)")
    p.add_argument("--rules", type=lambda s: s.split(","), default=list(RULES), help="comma-separated rules")
    p.add_argument("--repeats", type=int, default=2, help="timed calls per measurement (best kept)")
    p.add_argument("--budget", type=float, default=30.0, help="stop repeating a measurement past this many seconds")
    p.add_argument("--threads", type=int, default=1, help="BLAS and torch CPU threads (0: leave as they are)")
    p.add_argument("--no-round", action="store_true", help="skip the DETOX-round anchor")
    p.add_argument("--quick", action="store_true", help="smoke run: d = 2e5, resnet18 only, n = 11")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None,
                   help="results file (default benchmarks/results/backends.json, backends_quick.json with --quick)")
    args = p.parse_args(argv)
    if args.quick:
        args.d, args.models, args.n = args.d or 2e5, ["resnet18"], [11]
    if args.threads > 0:
        from threadpoolctl import threadpool_limits

        global _LIMIT
        _LIMIT = threadpool_limits(args.threads)
        torch.set_num_threads(args.threads)
    unknown = sorted(set(args.models) - set(MODELS)) + sorted(set(args.rules) - set(RULES))
    if unknown or set(args.backends) - {"numpy", "torch-cpu", "torch-cuda"}:
        p.error(f"unknown model, rule or backend: {unknown or args.backends}")
    results = run(args)
    text = table(results)
    print(text)
    out = args.json or Path(__file__).parent / "results" / ("backends_quick.json" if args.quick else "backends.json")
    out.write_text(json.dumps(results, indent=1, default=lambda v: None if isinstance(v, float) and math.isnan(v) else v))
    print(f"results in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
