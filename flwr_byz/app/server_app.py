"""The ServerApp of the flwr-byz Flower App (Message API).

Reads the run config, builds the robust strategy by name
(:func:`flwr_byz.app.settings.build_strategy`), evaluates the global model on the
dataset's test split before training and after every round (server side; with the
backdoor's attack success rate when the run config's ``attack`` is a backdoor, see
:func:`backdoor_trigger`), and appends one JSON line per evaluated round to ``<results-dir>/results.jsonl``
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
from .settings import build_strategy, check_attack_settings, json_param, run_settings, train_config

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
        "cfg_num_clients": (entry or {}).get("replies", 0),
        **{f"cfg_{k.replace('-', '_')}": v for k, v in settings.items()
           if k not in ("strategy", "attack", "dataset", "num-malicious")},
        # the run config's corrupted partitions, or more when nodes (node-config attackers) say so
        "cfg_num_malicious": max(int(settings["num-malicious"]), len(bad)),
    }


def backdoor_trigger(settings: dict, data):
    """The trigger whose attack success rate the server measures every round, or None.

    Measured when the run config's ``attack`` is a backdoor (``backdoor``,
    ``model_replacement``, ``alie_backdoor``, ``dba``, ``neurotoxin``, ``edge_case``): the
    trigger (or the edge case's tail) is :func:`flwr_byz.simulations.runner.cell_backdoor` of
    the run config's ``attack-params``, the one the attacking nodes build from the same
    parameters. In a deployment whose
    backdoor nodes are chosen by their node configs, set ``attack`` (and the same
    ``attack-params``) in the run config with ``num-malicious=0``: the server then measures
    the ASR while no partition is made malicious by the run config.
    """
    if str(settings["attack"]) not in runner.BACKDOORS:
        return None
    return runner.cell_backdoor(data, str(settings["attack"]), json_param(settings["attack-params"], "attack-params"))


def results_path(results_dir) -> Path:
    """Where the run's results go: an absolute ``results-dir`` as given; a relative one under
    ``$FLWR_BYZ_RESULTS_ROOT`` (default ``~/flwr-byz``), never under whatever directory the
    SuperLink or SuperExec process happened to start in."""
    import os

    path = Path(str(results_dir)).expanduser()
    if path.is_absolute():
        return path
    root = Path(os.environ.get("FLWR_BYZ_RESULTS_ROOT") or Path.home() / "flwr-byz").expanduser()
    return root / path


class RoundEvaluation:
    """The ServerApp's ``evaluate_fn``: evaluates the global model on the test split (and,
    for a backdoor run, its attack success rate on the triggered non-target test inputs),
    appends the round's row to the results file and returns the metrics to Flower."""

    def __init__(self, settings: dict, run_id: int, data, model, strategy, writer):
        self.settings, self.run_id, self.data, self.model = settings, run_id, data, model
        self.strategy, self.writer = strategy, writer
        self.trigger = backdoor_trigger(settings, data)
        self.t = time.perf_counter()

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        from ..clients.honest import evaluate_model
        from ..models import set_weights

        set_weights(self.model, [a.numpy() for a in arrays.values()])
        extra = {}
        if self.trigger is None:
            loss, acc = evaluate_model(self.model, self.data.x_test, self.data.y_test)
        else:
            from ..simulations.backdoor_eval import evaluate_backdoor

            res = evaluate_backdoor(self.model, self.data, self.trigger)
            loss, acc, extra["asr"] = res["loss"], res["accuracy"], float(res["asr"])
            log(logging.INFO, "[flwr-byz] round %s: accuracy %.4f, backdoor ASR %.4f", server_round, acc,
                extra["asr"])
        history = self.strategy.history
        entry = history[-1] if server_round > 0 and history and history[-1].get("round") == server_round else {}
        now = time.perf_counter()
        row = round_row(self.settings, self.run_id, server_round, acc, loss, entry, now - self.t)
        if server_round == 0:
            from ..simulations.provenance import provenance

            row["provenance"] = provenance("flower-app")
        self.writer.append({**row, **extra})
        self.t = now
        return MetricRecord({"accuracy": float(acc), "loss": float(loss), **extra})


@app.main()
def main(grid: Grid, context: Context) -> None:
    from ..models import get_weights, make_model
    from ..simulations.datasets import load_dataset

    settings = run_settings(context.run_config)
    strategy = build_strategy(settings)  # names and values checked before anything is loaded or written
    check_attack_settings(settings)
    run_id = context.run_id
    results_dir = results_path(settings["results-dir"])
    writer = runner.ResultsWriter(results_dir)
    log(logging.INFO, "[flwr-byz] run %s: results go to %s", run_id, writer.path.resolve())

    data = load_dataset(str(settings["dataset"]), str(settings["data-root"]) or None)
    model = make_model(str(settings["model"]), data.input_shape, data.num_classes, seed=int(settings["seed"]))
    names = list(model.state_dict().keys())
    initial = ArrayRecord(dict(zip(names, (Array(w) for w in get_weights(model)))))
    evaluate_fn = RoundEvaluation(settings, run_id, data, model, strategy, writer)

    result = strategy.start(
        grid=grid, initial_arrays=initial, num_rounds=int(settings["num-rounds"]),
        timeout=float(settings["round-timeout"]), train_config=ConfigRecord(train_config(settings)),
        evaluate_fn=evaluate_fn,
    )
    final = result.evaluate_metrics_serverapp.get(int(settings["num-rounds"]))
    log(logging.INFO, "[flwr-byz] run %s finished: final server-side metrics %s; results in %s", run_id,
        final, writer.path.resolve())
