"""The ServerApp of the flwr-byz Flower App (Message API).

Reads the run config, builds the robust strategy by name
(:func:`flwr_byz.app.settings.build_strategy`), evaluates the global model on the
dataset's test split before training and after every round (server side), and appends one
JSON line per evaluated round to ``<results-dir>/results.jsonl``
(:class:`flwr_byz.simulations.runner.ResultsWriter`: flushed and fsynced, so a run that
dies loses at most the round in flight). Rows carry ``run_id``; several runs may share a
results directory.

Nodes that vanish mid-round: ``round-timeout`` bounds the wait for replies; the round is
aggregated from the replies that arrived, or skipped with a WARNING (global model kept)
when they are fewer than the rule's bound for f; the next round runs either way.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from ..simulations import runner
from .settings import build_strategy, run_settings, train_config

app = ServerApp()


def malicious_partitions(entry: dict) -> set[int]:
    """Partitions whose replies reported ``attack.malicious`` (the reference attackers do;
    real ones would not: this is for measuring, not for defending)."""
    return {int(v["partition-id"]) for v in (entry or {}).get("clients", {}).values()
            if "partition-id" in v and v.get("attack.malicious")}


def round_row(settings: dict, run_id: int, server_round: int, accuracy: float, loss: float, entry: dict,
              round_time_s: float) -> dict:
    """One results.jsonl line (keys shared with ``flwr-byz simulate``'s rows where they mean the same)."""
    bad = malicious_partitions(entry)
    pid = {c: int(v["partition-id"]) for c, v in (entry or {}).get("clients", {}).items() if "partition-id" in v}
    selected = (entry or {}).get("selected")
    return {
        "cell": f"run-{run_id}", "attempt": str(run_id), "run_id": str(run_id), "round": server_round,
        "accuracy": accuracy, "loss": loss, "round_time_s": round_time_s,
        "aggregation_time_s": (entry or {}).get("aggregation_time_s"),
        "replies": (entry or {}).get("replies", 0), "kept": len((entry or {}).get("kept", [])),
        "dropped": len((entry or {}).get("dropped", {})), "dropped_reasons": (entry or {}).get("dropped", {}),
        "skipped": (entry or {}).get("skipped"),
        "partitions": sorted(pid.values()),
        "selected_partitions": None if selected is None else sorted(pid[c] for c in selected if c in pid),
        "malicious_partitions": sorted(bad),
        "attack_facts": {str(v["partition-id"]): {k: x for k, x in v.items() if k.startswith("attack.")}
                         for v in (entry or {}).get("clients", {}).values()
                         if "partition-id" in v and any(k.startswith("attack.") for k in v)},
        **runner.detection(entry, bad), **runner.forecast(entry), **runner.detox_stats(entry, bad),
        "final": server_round == int(settings["num-rounds"]),
        "cfg_strategy": settings["strategy"], "cfg_attack": settings["attack"], "cfg_dataset": settings["dataset"],
        "cfg_num_clients": (entry or {}).get("replies", 0), "cfg_num_malicious": len(bad),
        **{f"cfg_{k.replace('-', '_')}": v for k, v in settings.items()
           if k not in ("strategy", "attack", "dataset")},
    }


@app.main()
def main(grid: Grid, context: Context) -> None:
    from ..clients.honest import evaluate_model
    from ..models import get_weights, make_model, set_weights
    from ..simulations.datasets import load_dataset

    settings = run_settings(context.run_config)
    run_id = context.run_id
    results_dir = Path(str(settings["results-dir"])).expanduser()
    writer = runner.ResultsWriter(results_dir)
    log(logging.INFO, "[flwr-byz] run %s: results go to %s", run_id, writer.path.resolve())

    data = load_dataset(str(settings["dataset"]), str(settings["data-root"]) or None)
    model = make_model(str(settings["model"]), data.input_shape, data.num_classes, seed=int(settings["seed"]))
    names = list(model.state_dict().keys())
    initial = ArrayRecord(dict(zip(names, (Array(w) for w in get_weights(model)))))
    strategy = build_strategy(settings)
    clock = {"t": time.perf_counter()}

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        set_weights(model, [a.numpy() for a in arrays.values()])
        loss, acc = evaluate_model(model, data.x_test, data.y_test)
        entry = {}
        if server_round > 0 and strategy.history and strategy.history[-1].get("round") == server_round:
            entry = strategy.history[-1]
        now = time.perf_counter()
        writer.append(round_row(settings, run_id, server_round, acc, loss, entry, now - clock["t"]))
        clock["t"] = now
        return MetricRecord({"accuracy": float(acc), "loss": float(loss)})

    result = strategy.start(
        grid=grid, initial_arrays=initial, num_rounds=int(settings["num-rounds"]),
        timeout=float(settings["round-timeout"]), train_config=ConfigRecord(train_config(settings)),
        evaluate_fn=evaluate_fn,
    )
    final = result.evaluate_metrics_serverapp.get(int(settings["num-rounds"]))
    log(logging.INFO, "[flwr-byz] run %s finished: final server-side metrics %s; results in %s", run_id,
        final, writer.path.resolve())
