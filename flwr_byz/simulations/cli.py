"""The ``flwr-byz`` command line: simulate, sweep, plot.

``flwr-byz simulate`` with no argument runs the demo: on scikit-learn's digits (no
download), 20 clients of which 5 are corrupted, FedAvg's mean vs trimmed mean vs Krum,
without attack and under ALIE, Gaussian noise and inner-product manipulation, 8 rounds in
Flower's Simulation Engine, then prints a table. (Eight rounds are too few for ALIE's
accumulating bias to show on digits; docs/RESULTS.md has the long runs where it does.)
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import sys
import time
from pathlib import Path

from ..aggregation.registry import REGISTRY
from ..attacks import ATTACK_SPECS
from ..updates import WEIGHTINGS
from .config import RunConfig

DEMO = dict(strategies=["mean", "trimmed_mean", "krum"], attacks=["none", "alie", "gaussian", "ipm"], num_clients=[20],
            num_malicious=[5], rounds=8, local_epochs=2)


def _csv_list(kind=str):
    return lambda s: [kind(x) for x in s.split(",") if x]


DEBUG = False  # --debug: user mistakes raise with their traceback instead of one line


def usage_error(message: str):
    """A user's mistake: one line on stderr, exit code 2, no traceback (``--debug``: raise)."""
    if DEBUG:
        raise ValueError(message)
    print(f"flwr-byz: {message}", file=sys.stderr)
    raise SystemExit(2)


def json_object(text: str, option: str) -> dict:
    """A JSON-object option value, or a usage error saying what was wrong."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        usage_error(f"{option} must be a JSON object such as '{{\"z\": 1.5}}' (keys in double quotes); "
                    f"got {text!r}: {err.msg}")
    if not isinstance(value, dict):
        usage_error(f"{option} must be a JSON object, got {text!r}")
    return value


def _check_grid(strategies, attacks, num_clients, num_malicious, base: dict) -> list[str]:
    """Every name and number of a grid checked before any work starts; the strategy names
    in their canonical form (aliases such as FedMedian or multi-krum are accepted)."""
    from ..attacks.catalogue import check_attack
    from ..models import MODELS
    from ..strategies.rule_classes import canonical_strategy
    from .datasets import DATASETS, TORCHVISION

    try:
        strategies = [canonical_strategy(s) for s in strategies]
        for a in attacks:
            check_attack(a)
    except ValueError as err:
        usage_error(str(err))
    r = int(dict(base.get("strategy_params") or {}).get("group_size", 3))
    from ..strategies.options import split_strategy_params

    own, _ = split_strategy_params(base.get("strategy_params") or {})
    for s in strategies:
        unknown = sorted(set(own) - set(REGISTRY[s].params)) if not s.startswith("detox-") else []
        if unknown:
            usage_error(f"--strategy-params: {s} has no parameter(s) {unknown}; its parameters: "
                        f"{', '.join(f'{k}={v!r}' for k, v in REGISTRY[s].params.items()) or 'none'}")
    from ..aggregation.detox import DetoxAggregator

    for s in strategies:
        if s.startswith("detox-"):
            try:
                DetoxAggregator(group_size=r, a1=s.removeprefix("detox-"))  # an A1 DETOX cannot feed
            except ValueError as err:
                usage_error(f"{s}: {err}")
    for n in num_clients:
        if n < 1:
            usage_error(f"--num-clients must be >= 1, got {n}")
        for m in num_malicious:
            if not 0 <= m <= n:
                usage_error(f"--num-malicious must be between 0 and --num-clients ({n}), got {m}")
            for s in strategies:
                _check_bound(s, n, m, r)
    dataset = str(base.get("dataset", "digits"))
    if dataset not in DATASETS[:-1] and not dataset.startswith("hf:"):
        usage_error(f"unknown dataset {dataset!r}; choose from {DATASETS}")
    if dataset in TORCHVISION and not base.get("data_root"):
        usage_error(f"--dataset {dataset} needs --data-root: a torchvision root holding {TORCHVISION[dataset][0]}/ "
                    f"(e.g. --data-root ../shared/data); nothing is downloaded at run time")
    if base.get("model", "mlp") not in MODELS:
        usage_error(f"unknown model {base.get('model')!r}; choose from {MODELS}")
    return strategies


def _check_bound(strategy: str, n: int, m: int, r: int) -> None:
    """Every round would be skipped if the rule cannot tolerate f = m among n clients (f is
    0 for the plain mean); DETOX's A1 sees n // r group winners and f1 = m // ((r + 1) // 2)."""
    from ..aggregation import minimum_clients
    from ..aggregation.detox import groups_needed

    rule = strategy.removeprefix("detox-")
    f = 0 if rule == "mean" else m
    if strategy.startswith("detox-"):
        groups, f1 = groups_needed(rule, f, r)
        if n // r < groups:
            usage_error(f"{strategy}: {n} clients make {n // r} groups of {r}, but {rule} needs "
                        f"{groups} group winners to tolerate f1={f1} (m={m})")
    elif n < minimum_clients(rule, f):
        usage_error(f"{strategy} needs n >= {REGISTRY[rule].formula()} = {minimum_clients(rule, f)} clients to "
                    f"tolerate f=m={m}, but --num-clients is {n}")


def _grid(strategies, attacks, num_clients, num_malicious, base: dict, attack_params=None) -> list[RunConfig]:
    strategies = _check_grid(strategies, attacks, num_clients, num_malicious, base)
    from ..attacks.catalogue import check_attack_params

    try:
        check_attack_params(attacks, attack_params or {}, "--attack-params")
    except ValueError as err:
        usage_error(str(err))
    seeds = base.pop("seeds", None) or [base.get("seed", 0)]
    cells = []
    for seed, s, a, n, m in itertools.product(seeds, strategies, attacks, num_clients, num_malicious):
        cells.append(RunConfig(strategy=s, attack=a, num_clients=n, num_malicious=m if a != "none" else 0,
                               f=m, attack_params=dict(attack_params or {}) if a != "none" else {},
                               **{**base, "seed": int(seed)}))
    return cells


def format_table(summary: list[dict]) -> str:
    from .runner import TAIL_ROUNDS

    with_tail = any(s["rounds"] >= 2 * TAIL_ROUNDS for s in summary)  # else it averages the warm-up
    head = (f"{'strategy':<24}{'attack':<20}{'n':>4}{'m':>4}{'rounds':>8}{'final acc':>11}"
            + (f"{'last-' + str(TAIL_ROUNDS):>9}" if with_tail else "") + f"{'best acc':>10}{'agg ms':>9}")
    with_asr = any(s.get("final_asr") is not None for s in summary)
    head += f"{'ASR':>7}" if with_asr else ""
    with_skips = any(s.get("skipped_rounds") for s in summary)
    head += f"{'skipped':>9}" if with_skips else ""
    lines = [head, "-" * len(head)]
    for s in sorted(summary, key=lambda r: (r["strategy"], r["attack"])):
        agg = "" if s["mean_aggregation_time_s"] is None else f"{1000 * s['mean_aggregation_time_s']:.1f}"
        asr = "" if s.get("final_asr") is None else f"{s['final_asr']:.3f}"
        lines.append(f"{s['strategy']:<24}{s['attack']:<20}{s['num_clients']:>4}{s['num_malicious']:>4}"
                     f"{s['rounds']:>8}{s['final_accuracy']:>11.3f}"
                     + (f"{s['tail_accuracy']:>9.3f}" if with_tail else "") + f"{s['best_accuracy']:>10.3f}{agg:>9}"
                     + (f"{asr:>7}" if with_asr else "")
                     + (f"{s.get('skipped_rounds', 0):>9}" if with_skips else ""))
    return "\n".join(lines)


def write_summary_csv(summary: list[dict], path: Path) -> None:
    if not summary:
        return
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(summary[0]))
        w.writeheader()
        w.writerows(summary)


def _add_devices(p: argparse.ArgumentParser) -> None:
    p.add_argument("--client-gpus", type=float, default=None,
                   help="GPU fraction each simulated client reserves (Flower's client_resources num_gpus; 0: train "
                        "on the CPU; default: share the GPUs torch sees among the parallel clients, 0 without one)")
    p.add_argument("--server-device", default="cpu",
                   help="where the rule computes: cpu (NumPy), cuda, cuda:N or auto (a GPU when torch sees one)")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="digits",
                   help="digits (embedded), mnist, fashion-mnist, cifar10, cifar100 (need --data-root) or hf:<name>")
    p.add_argument("--data-root", default=None, help="torchvision root (e.g. ../shared/data)")
    p.add_argument("--model", default="mlp", help="mlp, cnn, resnet18, vgg13_bn or wideresnet")
    p.add_argument("--rounds", type=int, default=None, help=f"server rounds (demo: {DEMO['rounds']})")
    p.add_argument("--local-epochs", type=int, default=None, help=f"local epochs per round (demo: {DEMO['local_epochs']})")
    p.add_argument("--local-steps", type=int, default=0, help="> 0: minibatch steps per round instead of epochs")
    p.add_argument("--batch-size", type=int, default=32, help="local minibatch size")
    p.add_argument("--lr", type=float, default=0.1, help="clients' SGD learning rate")
    p.add_argument("--server-lr", type=float, default=1.0, help="server step on the aggregate (FedAvgM)")
    p.add_argument("--server-momentum", type=float, default=0.0, help="server momentum (FedAvgM; ALIE's paper: 0.9)")
    p.add_argument("--partitioning", default="iid", choices=["iid", "dirichlet"], help="how the data is split")
    p.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration (--partitioning dirichlet)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, models and attacks' noise")
    p.add_argument("--seeds", type=_csv_list(int), default=None,
                   help="comma-separated seeds: every cell runs once per seed, and the table gives the mean and "
                        "[min, max] over them (default: --seed alone)")
    p.add_argument("--out", default=None, help="results folder (default: results/<command>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--verbose", action="store_true", help="show Flower's own logs")
    p.add_argument("--debug", action="store_true", help="tracebacks instead of one-line errors for mistakes")
    p.add_argument("--engine", default="simulation", choices=["simulation", "inprocess"],
                   help="Flower's Simulation Engine (default) or the same rounds in-process, without Ray")
    _add_devices(p)
    p.add_argument("--attack-rounds", type=int, default=None,
                   help="the corrupted clients attack in rounds 1..K only, then train honestly (a backdoor's "
                        "durability; default: every round)")
    p.add_argument("--weighting", default=None, choices=list(WEIGHTINGS),
                   help="what the clients' reported numbers of examples may do (default: raw for mean, "
                        "uniform for every robust rule; docs/strategies.md)")
    p.add_argument("--weight-cap", type=float, default=None, help="c of --weighting capped (default 2)")
    p.add_argument("--strategy-params", default="{}",
                   help='JSON: the rule\'s own parameters (e.g. \'{"sub_dim": 5000}\' for dnc; `flwr-byz rules` '
                        'and docs/strategies.md list them), "pre": [{"kind": "bucketing", "s": 2}] pre-aggregators '
                        '(clip, bucketing, nnm, arc), "crfl": {"clip_norm": 10, "noise_std": 0.01}')


def _base(args) -> dict:
    policy = {k: v for k, v in (("weighting", args.weighting), ("weight_cap", args.weight_cap)) if v is not None}
    base = dict(dataset=args.dataset, data_root=args.data_root, model=args.model,
                rounds=args.rounds or DEMO["rounds"], local_epochs=args.local_epochs or DEMO["local_epochs"], local_steps=args.local_steps,
                batch_size=args.batch_size, lr=args.lr, server_lr=args.server_lr,
                server_momentum=args.server_momentum, partitioning=args.partitioning, alpha=args.alpha, seed=args.seed)
    if args.attack_rounds is not None:
        if args.attack_rounds < 1:
            usage_error(f"--attack-rounds must be >= 1, got {args.attack_rounds}")
        base["attack_rounds"] = int(args.attack_rounds)
    if getattr(args, "seeds", None):
        base["seeds"] = list(args.seeds)
    from ..strategies.options import split_strategy_params

    params = {**json_object(args.strategy_params, "--strategy-params"), **policy}
    try:
        split_strategy_params(params)
    except (TypeError, ValueError) as err:
        usage_error(f"--strategy-params: {err}")
    if params:
        base["strategy_params"] = params
    return base


def _stop_on_signals() -> None:
    """SIGINT / SIGTERM stop the run after the round being evaluated (its row written whole,
    Ray shut down by Flower's own ending); a second signal exits at once."""
    import signal

    from .runner import STOP

    def handler(signum, frame):
        if STOP.is_set():
            os._exit(128 + signum)
        STOP.set()
        print(f"flwr-byz: {signal.Signals(signum).name}: stopping after the current round "
              f"(again to exit at once)", file=sys.stderr, flush=True)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _run(cells, out: Path, args) -> list[dict]:
    from .runner import RunInterrupted, run_cells, summarize

    from ..aggregation.backend import resolve_device
    from .runner import client_resources

    try:  # before any cell: a CUDA device that is not there, a negative GPU share
        resolve_device(args.server_device)
        client_resources(1.0, args.client_gpus)
    except ValueError as err:
        usage_error(f"--server-device / --client-gpus: {err}")
    t0 = time.time()
    _stop_on_signals()
    try:
        rows = run_cells(cells, out, progress=not args.no_progress, quiet=not args.verbose,
                         engine=getattr(args, "engine", "simulation"), client_gpus=args.client_gpus,
                         server_device=args.server_device)
    except RunInterrupted:
        print(f"flwr-byz: interrupted; every finished round is in {out}/results.jsonl and a rerun of the same "
              f"command resumes the unfinished cells", file=sys.stderr, flush=True)
        return [], 130
    summary = summarize(rows, cells)
    write_summary_csv(summary, out / "summary.csv")
    print(format_table(summary))
    from .report import markdown_table, over_seeds

    grouped = over_seeds(summary)
    if any(g["runs"] > 1 for g in grouped):
        print("\nOver seeds (last-20 accuracy, mean [min, max]; `flwr-byz report` writes it as markdown):\n")
        print(markdown_table(grouped, pivot=False), end="")
    print(f"\n{len(summary)} runs in {time.time() - t0:.0f} s; results in {out}/results.jsonl, {out}/summary.csv")
    dead = [s for s in summary if s.get("skipped_rounds") and s["skipped_rounds"] >= s["rounds"]]
    for s in dead:
        print(f"flwr-byz: every round of {s['strategy']} / {s['attack']} (n={s['num_clients']}, "
              f"m={s['num_malicious']}) was skipped: too few usable replies for the rule's f bound "
              f"(see the log and results.jsonl's 'skipped')", file=sys.stderr)
    return summary, 1 if dead else 0


def cmd_simulate(args) -> int:
    if args.config:
        cells = [RunConfig.from_dict(json.loads(Path(args.config).read_text()))]
    else:
        cells = _grid(args.strategies or DEMO["strategies"], args.attacks or DEMO["attacks"],
                      args.num_clients or DEMO["num_clients"], args.num_malicious or DEMO["num_malicious"],
                      _base(args), json_object(args.attack_params, "--attack-params"))
    return _run(cells, Path(args.out or "results/simulate"), args)[1]


def cmd_sweep(args) -> int:
    base = _base(args)
    grid = dict(strategies=args.strategies, attacks=args.attacks, num_clients=args.num_clients,
                num_malicious=args.num_malicious)
    if args.grid:
        import tomllib

        spec = tomllib.loads(Path(args.grid).read_text())
        grid.update({k: spec[k] for k in grid if k in spec})
        base.update(spec.get("base", {}))
    missing = [k for k, v in grid.items() if not v]
    if missing:
        print(f"sweep: give {', '.join(missing)} (flags or the TOML grid)", file=sys.stderr)
        return 2
    cells = _grid(grid["strategies"], grid["attacks"], grid["num_clients"], grid["num_malicious"], base,
                  json_object(args.attack_params, "--attack-params"))
    return _run(cells, Path(args.out or "results/sweep"), args)[1]


def cmd_reproduce(args) -> int:
    from .reproduce import experiment

    from dataclasses import replace

    cells = experiment(args.experiment, rounds=args.rounds, data_root=args.data_root)
    if args.experiment == "matrix":
        from .reproduce import matrix_rules

        n, m = cells[0].num_clients, max(c.num_malicious for c in cells)
        for rule, why in matrix_rules(n, m)[1].items():
            print(f"flwr-byz: matrix: {rule} left out ({why})", file=sys.stderr)
    from ..attacks.catalogue import check_attack
    from ..strategies.rule_classes import canonical_strategy

    try:
        if args.strategies:
            wanted = {canonical_strategy(s) for s in args.strategies}
            cells = [c for c in cells if c.strategy in wanted]
        if args.attacks:
            for a in args.attacks:
                if a != "none":
                    check_attack(a)
            cells = [c for c in cells if c.attack in set(args.attacks)]
    except ValueError as err:
        usage_error(str(err))
    if not cells:
        usage_error("no cell of the experiment matches --strategies / --attacks")
    if args.seeds:
        cells = [replace(c, seed=int(seed)) for seed in args.seeds for c in cells]
    _, status = _run(cells, Path(args.out or f"results/{args.experiment}"), args)
    if status == 130:
        return status
    from .plots import plot_results

    for f in plot_results(Path(args.out or f"results/{args.experiment}")):
        print(f)
    return status


def cmd_plot(args) -> int:
    from .plots import plot_results

    files = plot_results(Path(args.results), Path(args.out) if args.out else None, args.forecast_rounds)
    for f in files:
        print(f)
    return 0


def cmd_report(args) -> int:
    from .report import forecast_table, report

    try:
        if args.forecast:
            text = forecast_table([Path(r) for r in args.results], tuple(args.forecast))
        else:
            text = report([Path(r) for r in args.results], pivot=not args.by_cell, metric=args.metric)
    except (FileNotFoundError, ValueError) as err:
        usage_error(str(err))
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text)
    return 0


def cmd_rules(args) -> int:
    from ..aggregation.registry import rule_table

    print(rule_table(), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flwr-byz", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn, help_ in (("simulate", cmd_simulate, "one run, or the demo with no arguments"),
                            ("sweep", cmd_sweep, "a grid of strategies x attacks x n x m")):
        p = sub.add_parser(name, help=help_, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.add_argument("--strategies", type=_csv_list(), default=None,
                       help=f"comma-separated rule names ({', '.join(sorted(REGISTRY))}), their aliases, or "
                            f"detox-<rule> (demo: {','.join(DEMO['strategies'])})")
        p.add_argument("--attacks", type=_csv_list(), default=None,
                       help=f"comma-separated: none, {', '.join(ATTACK_SPECS)} (demo: {','.join(DEMO['attacks'])})")
        p.add_argument("--num-clients", type=_csv_list(int), default=None,
                       help=f"comma-separated n (demo: {DEMO['num_clients'][0]})")
        p.add_argument("--num-malicious", type=_csv_list(int), default=None,
                       help=f"comma-separated m, the corrupted clients, also the f told to the rule "
                            f"(demo: {DEMO['num_malicious'][0]})")
        p.add_argument("--attack-params", default="{}", help='JSON, e.g. \'{"z": 1.5}\' for ALIE')
        if name == "simulate":
            p.add_argument("--config", default=None, help="a JSON file with one RunConfig")
        else:
            p.add_argument("--grid", default=None, help="a TOML file with the grid (and a [base] table)")
        _add_common(p)
        p.set_defaults(func=fn)
    p = sub.add_parser("reproduce", help="a paper's experiment (see docs/RESULTS.md)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    from .reproduce import EXPERIMENTS

    p.add_argument("experiment", choices=EXPERIMENTS,
                   help="the grid: " + ", ".join(EXPERIMENTS) + " (docs/RESULTS.md; without --data-root the "
                   "detox, matrix and alie-sensitivity grids run on the embedded digits)")
    p.add_argument("--strategies", type=_csv_list(str), default=None,
                   help="only these of the experiment's strategies (comma-separated)")
    p.add_argument("--attacks", type=_csv_list(str), default=None,
                   help="only these of the experiment's attacks (comma-separated)")
    p.add_argument("--data-root", default=None, help="torchvision root (e.g. ../shared/data)")
    p.add_argument("--rounds", type=int, default=None, help="override the paper's number of rounds")
    p.add_argument("--out", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--engine", default="simulation", choices=["simulation", "inprocess"])
    _add_devices(p)
    p.add_argument("--seeds", type=_csv_list(int), default=None,
                   help="comma-separated seeds: every cell once per seed (default: the experiment's seed 0)")
    p.set_defaults(func=cmd_reproduce)
    p = sub.add_parser("report", help="the markdown table of a results folder (mean [min, max] over seeds), "
                                      "as it goes into docs/RESULTS.md")
    p.add_argument("results", nargs="+", help="results folders (or their results.jsonl); their runs are pooled")
    p.add_argument("--by-cell", action="store_true", help="one row per cell instead of defense x attack")
    from .report import METRIC_TEXT

    p.add_argument("--metric", choices=tuple(METRIC_TEXT), default="tail_accuracy",
                   help="what the defense x attack table shows: the last-20 mean, the last round, the best round, "
                        "or a backdoor's lifespan after an --attack-rounds window")
    p.add_argument("--forecast", type=_csv_list(int), default=None,
                   help="instead: the ALIE attacker's forecast at these rounds (e.g. 1,11,25), over seeds")
    p.add_argument("--out", default=None, help="also write the table to this file")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("rules", help="every aggregation rule: paper, f bound, weights, state, cost (markdown)")
    p.set_defaults(func=cmd_rules)
    p = sub.add_parser("plot", help="PNG plots of a results.jsonl")
    p.add_argument("results", help="results.jsonl or the folder holding it")
    p.add_argument("--out", default=None)
    p.add_argument("--forecast-rounds", type=int, default=None, help="plot the forecast over the first N rounds")
    p.set_defaults(func=cmd_plot)
    return parser


def main(argv=None) -> int:
    global DEBUG
    args = build_parser().parse_args(argv)
    DEBUG = bool(getattr(args, "debug", False))
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
