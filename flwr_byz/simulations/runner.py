"""Run grids of cells in Flower's Simulation Engine, writing results as they come.

All cells that share data (dataset, model, n, partitioning, seed) run inside one
``run_simulation``: its ServerApp runs the cells one after another on the same Grid with
the Message-API robust strategies (``flwr_byz.strategies``, each through its own
``start``), so Ray starts once per group. (Flower deprecates ``run_simulation`` in favour of
``flwr run``, and offers no programmatic equivalent; its deprecation warning is left as it
is. The legacy strategies, ``flwr_byz.strategies.legacy``, are exercised by the tests.)

Clients learn the cell's scenario (attack, m, hyper-parameters) from the round's train
config: a harness channel of the simulation, documented as such; in a deployment the
SuperNode's own node config chooses its role instead (``flwr_byz.app``).

Results: one JSON line per evaluated round, appended and flushed as soon as the round is
evaluated (a killed run loses at most the round in flight), in ``results.jsonl``; a cell
whose last line says ``"final": true`` is finished and skipped by a rerun.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..attacks.catalogue import attack_names, check_attack
from .config import RunConfig

LOG = logging.getLogger("flwr_byz.simulations")

# Set (by the command line's SIGINT / SIGTERM handler) to stop a run after the round that is
# being evaluated: its row is written whole, then :class:`RunInterrupted` ends the run.
STOP = threading.Event()


class RunInterrupted(Exception):
    """The run was asked to stop; every finished round is in results.jsonl."""

_CACHE: dict = {}


def load_partitioned(key: tuple):
    """(dataset, partitions) for a data key, cached per process (each Ray actor loads once)."""
    if key not in _CACHE:
        from .datasets import load_dataset
        from .partitioning import partition

        name, root, _model, n, scheme, alpha, seed = key
        data = load_dataset(name, root)
        parts = partition(data.y_train, n, scheme=scheme, alpha=alpha, seed=seed)
        _CACHE.clear()
        _CACHE[key] = (data, parts)
    return _CACHE[key]


@lru_cache(maxsize=4)
def _detox_shards(key: tuple, num_shards: int) -> list[np.ndarray]:
    from .partitioning import iid_partitions

    data, _ = load_partitioned(key)
    return iid_partitions(len(data.y_train), num_shards, seed=key[-1])


# Slices kept per process (a partition's or DETOX shard's rows), up to this many bytes; past
# it, a slice is cut on every call as before (a bound on each Ray actor's extra memory: MNIST's
# training set is 188 MB, CIFAR-10's 614 MB).
SLICE_CACHE_BYTES = 512 * 2**20


def _slice(key: tuple, which: tuple, idx_fn) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) rows ``idx_fn()`` of the training set of ``key``, cut once per process while
    the slices kept stay under :data:`SLICE_CACHE_BYTES`."""
    data, _ = load_partitioned(key)
    slices = _CACHE.setdefault((key, "slices"), {})
    if which in slices:
        return slices[which]
    idx = idx_fn()
    out = (data.x_train[idx], data.y_train[idx])
    used = _CACHE.get((key, "slice-bytes"), 0)
    size = out[0].nbytes + out[1].nbytes
    if used + size <= SLICE_CACHE_BYTES:
        slices[which] = out
        _CACHE[(key, "slice-bytes")] = used + size
    return out


def detox_shard(key: tuple, shard: int, num_shards: int):
    """DETOX shard ``shard`` of ``num_shards``: a seeded IID split of the whole training set,
    the same on every client (the data replication DETOX assumes); kept per process like
    :func:`partition_data`, and read-only to its callers."""
    return _slice(key, ("shard", num_shards, shard), lambda: _detox_shards(key, num_shards)[shard])


def partition_data(key: tuple, pid: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of partition ``pid``, cut once per process and data key (up to
    :data:`SLICE_CACHE_BYTES` of slices): a simulated client is rebuilt every round (as
    Flower's ``client_fn`` builds it), so its slice is shared, not copied again (MNIST at
    n = 51: 51 copies of 1,176 images per round). Callers treat it as read-only: the attacks
    that change data (label flipping, backdoors) work on copies."""
    return _slice(key, ("partition", int(pid)), lambda: load_partitioned(key)[1][pid])


def honest_client(key: tuple, pid: int, config: dict):
    from ..clients.honest import TorchClient

    data, _ = load_partitioned(key)
    x, y = partition_data(key, pid)
    return TorchClient(
        key[2], x, y, data.input_shape, data.num_classes, pid,
        lr=float(config.get("lr", 0.1)), momentum=float(config.get("momentum", 0.0)),
        batch_size=int(config.get("batch-size", 32)), local_epochs=int(config.get("local-epochs", 1)),
        seed=int(config.get("seed", 0)), shard_fn=lambda shard, k: detox_shard(key, shard, k),
    )


BACKDOORS = attack_names("backdoor")  # from the attack catalogue


def cell_trigger(data, params: dict):
    """The pixel trigger of a backdoor cell: ``params["trigger"]`` (PixelTrigger fields), by
    default a 3x3 (8x8 images) or 5x5 square at the top-left, white (each channel at its own
    maximum over the normalised training data: per-channel normalisation maps white to a
    different value per channel), target 0.
    Clients and the server's ASR evaluation both call this, so they agree."""
    from ..attacks.backdoor import PixelTrigger

    x = np.asarray(data.x_train)
    if x.ndim == 4 and x.shape[1] > 1:  # (N, C, H, W): white is each channel's own maximum
        white = tuple(float(v) for v in x.max(axis=(0, 2, 3)))
    else:
        white = float(x.max())
    spec = {"size": 3 if data.input_shape[-1] <= 8 else 5, "position": (0, 0),
            "value": white, "target": 0, **dict(params.get("trigger", {}))}
    return PixelTrigger(**spec)


def edge_case_tail(data, params: dict):
    """The :class:`~flwr_byz.attacks.backdoor.EdgeCaseBackdoor` of an ``edge_case`` cell.

    ``params["tail"]``: a ``.npz`` file with ``x_train`` and ``x_test`` arrays of tail images
    (N, C, H, W) in the dataset's own normalised units (a real tail, such as the paper's
    ARDIS sevens for MNIST: pixels / 255, then (x - 0.1307) / 0.3081), their true label
    unknown; without it, the synthetic tail :func:`~flwr_byz.attacks.backdoor.edge_case_backdoor`
    of ``data``: the ``source`` class (default 7) rotated by ``angle`` degrees (default 90).
    ``target`` defaults to 1 (the paper's sevens labelled 1)."""
    from ..attacks.backdoor import EdgeCaseBackdoor, edge_case_backdoor

    target = params.get("target", 1)
    if params.get("tail"):
        with np.load(str(params["tail"]), allow_pickle=False) as tail:
            missing = {"x_train", "x_test"} - set(tail.files)
            if missing:
                raise ValueError(f"edge_case: the tail file {params['tail']} lacks {sorted(missing)}")
            x_train, x_test = tail["x_train"], tail["x_test"]
        if x_train.shape[1:] != tuple(data.input_shape):
            raise ValueError(f"edge_case: tail images {x_train.shape[1:]} do not match the dataset's "
                             f"{tuple(data.input_shape)}")
        return EdgeCaseBackdoor(x_train.astype(np.float32), x_test.astype(np.float32), target=target)
    return edge_case_backdoor(data.x_train, data.y_train, data.x_test, data.y_test, source=params.get("source", 7),
                              target=target, angle=params.get("angle", 90.0))


_BACKDOORS_MADE: dict = {}


def cell_backdoor(data, attack: str, params: dict):
    """What a backdoor cell's attackers plant and the server measures the ASR of: the tail
    of :func:`edge_case_tail` for ``edge_case``, the trigger of :func:`cell_trigger` for
    every other backdoor. Made once per dataset object, attack and parameters in a process
    (every attacker of every round, and the server's evaluation each round, ask again; the
    default trigger scans the whole training set, the edge case rotates a class)."""
    key = (id(data), attack, json.dumps(params, sort_keys=True, default=str))
    made = _BACKDOORS_MADE.get(key)
    if made is None or made[0] is not data:  # (data, backdoor): the id is only valid while data lives
        if any(d is not data for d, _ in _BACKDOORS_MADE.values()):
            _BACKDOORS_MADE.clear()  # another dataset now: keep one, as load_partitioned does
        backdoor = edge_case_tail(data, params) if attack == "edge_case" else cell_trigger(data, params)
        made = _BACKDOORS_MADE[key] = (data, backdoor)
    return made[1]


def backdoor_client(client, attack: str, params: dict, data, *, collusion, num_clients: int, num_malicious: int,
                    server_lr: float = 1.0):
    """``client`` (honest) turned into the backdoor attacker ``attack`` (one of
    :data:`BACKDOORS`) with the trigger (or tail) :func:`cell_backdoor` of ``data`` and ``params``
    (``trigger``, ``fraction`` = 0.5, ``gamma``, ``z``, ``alpha`` = 1.0, DBA's ``parts`` and
    ``part``, Neurotoxin's ``ratio`` and ``norm_bound``, the edge case's ``source``,
    ``target``, ``angle``, ``tail`` and ``norm_bound``; ``weight_factor`` /
    ``weight_value`` add weight inflation). Simulation cells and the Flower App's backdoor
    SuperNodes both build their attackers here."""
    from ..clients.malicious import WeightInflationClient

    inflate = {k: params[k] for k in ("weight_factor", "weight_value") if k in params}
    attacker = _backdoor_attacker(client, attack, params, data, collusion=collusion, num_clients=num_clients,
                                  num_malicious=num_malicious, server_lr=server_lr)
    if not inflate:
        return attacker
    return WeightInflationClient(attacker, factor=inflate.get("weight_factor"), value=inflate.get("weight_value"))


def _backdoor_attacker(client, attack: str, params: dict, data, *, collusion, num_clients: int,
                       num_malicious: int, server_lr: float):
    from ..clients.backdoor import AlieBackdoorClient, BackdoorClient, ModelReplacementClient

    fraction = float(params.get("fraction", 0.5))
    trig = cell_backdoor(data, attack, params)  # the edge case's tail, or the cell's pixel trigger
    if attack == "edge_case":
        return BackdoorClient(client, trig, fraction=fraction, norm_bound=params.get("norm_bound"))
    if attack == "backdoor":
        return BackdoorClient(client, trig, fraction=fraction)
    if attack == "model_replacement":
        return ModelReplacementClient(client, trig, gamma=params.get("gamma"), num_clients=num_clients,
                                      server_lr=server_lr, fraction=fraction)
    if attack == "dba":  # attacker k poisons with local trigger k mod parts (its partition id by default)
        from ..attacks.backdoor import dba_local_trigger

        part = params.get("part")
        part = int(getattr(client, "partition_id", 0)) if part is None else part
        return BackdoorClient(client, dba_local_trigger(trig, part, params.get("parts")), fraction=fraction)
    if attack == "neurotoxin":
        from ..clients.backdoor import NeurotoxinClient

        return NeurotoxinClient(client, trig, fraction=fraction, ratio=float(params.get("ratio", 0.95)),
                                norm_bound=params.get("norm_bound"))
    if attack == "alie_backdoor":
        return AlieBackdoorClient(client, trig, collusion=collusion, z=params.get("z"), num_clients=num_clients,
                                  num_malicious=num_malicious, fraction=fraction, alpha=params.get("alpha", 1.0))
    raise ValueError(f"unknown backdoor attack {attack!r}; choose from {BACKDOORS}")


def scenario_fit(key: tuple, pid: int, parameters, config: dict):
    """What client ``pid`` replies in the round described by ``config``."""
    from ..clients.collusion import Collusion
    from ..clients.malicious import MaliciousClient

    client = honest_client(key, pid, config)
    m = int(config.get("num-malicious", 0))
    attack = str(config.get("attack", "none"))
    last = int(config.get("attack-rounds", 0) or 0)  # the attack's last round (durability runs)
    if last and int(config.get("server-round", 0)) > last:
        attack = "none"
    if attack != "none" and pid < m:
        params = json.loads(str(config.get("attack-params", "{}")))
        n = int(config.get("num-clients", key[3]))
        collusion = Collusion(range(m), lambda p: honest_client(key, p, config), label=str(config.get("cell", "")),
                              store_dir=config.get("collusion-dir") or None)
        if attack in BACKDOORS:
            client = backdoor_client(client, attack, params, load_partitioned(key)[0], collusion=collusion,
                                     num_clients=n, num_malicious=m, server_lr=float(config.get("server-lr", 1.0)))
        else:
            params.setdefault("num_clients", n)
            params.setdefault("num_malicious", m)
            spec = check_attack(attack)
            if "seed" in spec.params and params.get("seed") is None:
                # the attack's noise follows the run's seed (one independent draw per client
                # and round): the same command gives the same numbers, in either engine
                params["seed"] = int(config.get("seed", 0))
            if "rule" in spec.params and params.get("rule") is None:
                # the adaptive attacker knows the server's rule (DETOX: its A1 after the vote)
                params["rule"] = str(config.get("strategy", "mean")).removeprefix("detox-")
            client = MaliciousClient(client, attack, collusion=collusion, **params)
    return client.fit(parameters, config)


def make_client_app(key: tuple):
    """The Message-API ClientApp of a data group: each node (``partition-id``) replies what
    :func:`scenario_fit` says for the round's train config."""
    from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(msg, context):
        pid = int(context.node_config["partition-id"])
        arrays = next(iter(msg.content.array_records.values()))
        config = dict(next(iter(msg.content.config_records.values()), {}))
        new, num_examples, metrics = scenario_fit(key, pid, arrays.to_numpy_ndarrays(), config)
        reply = {"num-examples": num_examples, "partition-id": pid}
        reply.update({k: v for k, v in (metrics or {}).items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool)})
        names = list(arrays.keys())
        return Message(RecordDict({"arrays": ArrayRecord(dict(zip(names, (Array(np.asarray(a)) for a in new)))),
                                   "metrics": MetricRecord(reply)}), reply_to=msg)

    return app


def fit_config(cell: RunConfig, collusion_dir: str | None = None):
    """The round's fit config for ``cell`` (hyper-parameters plus the harness's scenario;
    ``collusion_dir``: the run's own store for the colluding clients)."""

    def on_fit_config(server_round: int) -> dict:
        return {"collusion-dir": collusion_dir or "",
            "server-round": server_round, "local-epochs": cell.local_epochs, "local-steps": cell.local_steps,
            "server-lr": cell.server_lr,
            "batch-size": cell.batch_size,
            "lr": cell.lr, "momentum": cell.momentum, "seed": cell.seed, "attack": cell.attack,
            "num-malicious": cell.num_malicious if cell.attacked else 0, "num-clients": cell.num_clients,
            "attack-rounds": cell.attack_rounds or 0,  # 0: every round; else honest after it
            "attack-params": json.dumps(cell.attack_params), "cell": cell.cell_id(),
            "strategy": cell.strategy,  # what a rule-aware attacker targets (alie_optimal, ipm_optimal)
        }

    return on_fit_config


def detection(entry: dict, malicious: set[int]) -> dict:
    """Precision / recall of 'not selected' (or excluded by the reputation layer) as a
    detector of the known malicious partitions; with a reputation layer, also the mean
    score of the malicious and of the honest clients and how many of each were excluded."""
    if not entry or "clients" not in entry:
        return {}
    pid = {c: int(v["partition-id"]) for c, v in entry["clients"].items() if "partition-id" in v}
    excluded = [c for c in entry.get("excluded", []) if c in pid]
    out: dict = {}
    scores = entry.get("reputation")
    if scores:
        bad_scores = [s for c, s in scores.items() if c in pid and pid[c] in malicious]
        good_scores = [s for c, s in scores.items() if c in pid and pid[c] not in malicious]
        out.update({"reputation_malicious": float(np.mean(bad_scores)) if bad_scores else None,
                    "reputation_honest": float(np.mean(good_scores)) if good_scores else None,
                    "excluded_malicious": sum(pid[c] in malicious for c in excluded),
                    "excluded_honest": sum(pid[c] not in malicious for c in excluded)})
    if entry.get("selected") is None:
        return out
    judged = [c for c in entry["kept"] if c in pid] + excluded
    selected = set(entry["selected"])
    flagged = {pid[c] for c in judged if c not in selected}
    bad = {pid[c] for c in judged if pid[c] in malicious}
    hit = len(flagged & bad)
    return {**out, "detection_precision": hit / len(flagged) if flagged else 1.0,
            "detection_recall": hit / len(bad) if bad else 1.0}


def detox_stats(entry: dict, malicious: set[int]) -> dict:
    """Groups formed / won, and the groups won by a Byzantine majority (known in simulation)."""
    details = (entry or {}).get("details", {})
    if "groups_won" not in details:
        return {}
    pid = {c: int(v["partition-id"]) for c, v in entry.get("clients", {}).items() if "partition-id" in v}
    groups = entry.get("groups", [])
    r = details.get("r", 1)
    byz_won = [gi for gi in details.get("won_groups", [])
               if gi < len(groups) and 2 * sum(pid.get(c, -1) in malicious for c in groups[gi]) > r]
    return {"detox_groups": details.get("groups"), "detox_groups_won": details["groups_won"],
            "detox_byzantine_groups_won": len(byz_won), "detox_vote_time_s": details.get("vote_time_s"),
            "detox_a1_time_s": details.get("a1_time_s")}


def forecast(entry: dict) -> dict:
    """The ALIE attacker's forecast for the round, as reported by the corrupted clients."""
    out: dict = {}
    for v in (entry or {}).get("clients", {}).values():
        for k, x in v.items():
            if k.startswith("attack.forecast-"):
                out[k.replace("attack.forecast-", "forecast_")] = float(x)
    return out


class ResultsWriter:
    """Append-only JSON Lines results with resume support."""

    def __init__(self, out_dir: str | os.PathLike):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "results.jsonl"
        self._repair()

    def _repair(self) -> None:
        """End a last line cut by a crash, so that the next row starts a line of its own
        (the cut line itself is skipped by :meth:`rows`)."""
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb+") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a crash
                continue
        return out

    def finished(self) -> set[str]:
        return {r["cell"] for r in self.rows() if r.get("final")}

    def append(self, row: dict) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row, default=float) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def result_row(cell: RunConfig, attempt: str, server_round: int, accuracy: float, loss: float,
               round_time: float, entry: dict, extra: dict | None = None) -> dict:
    """One line of results.jsonl: the round's evaluation, its aggregation report, the cell."""
    malicious = set(range(cell.num_malicious)) if cell.attacking(server_round) else set()
    return {"cell": cell.cell_id(), "attempt": attempt, "round": server_round, "accuracy": accuracy,
            "loss": loss, "round_time_s": round_time, "aggregation_time_s": entry.get("aggregation_time_s"),
            "kept": len(entry.get("kept", [])), "dropped": len(entry.get("dropped", {})),
            "skipped": entry.get("skipped"), **detection(entry, malicious), **forecast(entry),
            **detox_stats(entry, malicious), **(extra or {}), "final": server_round == cell.rounds,
            **{f"cfg_{k}": v for k, v in cell.to_dict().items()}}


class CellRecorder:
    """Evaluates the global model of a cell after every round and appends the row."""

    def __init__(self, cell: RunConfig, key: tuple, writer: ResultsWriter, progress, engine: str = "simulation"):
        from ..models import make_model
        from .provenance import provenance

        self.cell, self.writer = cell, writer
        self.provenance = provenance(engine)
        self.data, _ = load_partitioned(key)
        self.model = make_model(cell.model, self.data.input_shape, self.data.num_classes, seed=cell.seed)
        self.attempt = uuid.uuid4().hex[:8]
        self.t = time.perf_counter()
        self.position = getattr(progress, "position", None)  # (k, total) of this cell in the run
        self.desc = f"{cell.strategy} / {cell.attack}"
        if self.position:
            self.desc = f"[{self.position[0]}/{self.position[1]}] {self.desc}"
        self.bar = progress(total=cell.rounds, desc=self.desc) if progress else None
        self.started = time.perf_counter()

    def __call__(self, server_round: int, ndarrays, entry: dict) -> tuple[float, dict]:
        """Evaluate, append the row; returns (loss, metrics: accuracy and, for backdoors, asr)."""
        from ..clients.honest import evaluate_model
        from ..models import set_weights

        set_weights(self.model, ndarrays)
        loss, acc = evaluate_model(self.model, self.data.x_test, self.data.y_test)
        extra = {}
        if self.cell.attack in BACKDOORS:  # server-side attack success rate, every round
            from .backdoor_eval import evaluate_backdoor

            res = evaluate_backdoor(self.model, self.data,
                                    cell_backdoor(self.data, self.cell.attack, self.cell.attack_params))
            extra["asr"] = res["asr"]
            LOG.info("round %s: accuracy %.4f, backdoor ASR %.4f", server_round, acc, res["asr"])
        now = time.perf_counter()
        row = result_row(self.cell, self.attempt, server_round, acc, loss, now - self.t, entry, extra)
        self.writer.append({**row, "provenance": self.provenance} if server_round == 0 else row)
        self.t = now
        if self.bar is not None and server_round > 0:
            self.bar.update(1)
            self.bar.set_postfix(acc=f"{acc:.3f}")
        if self.bar is not None and server_round == self.cell.rounds:
            self.bar.close()
            # one line per finished cell, also where no bar is drawn (logs, CI, a pipe)
            c = self.cell
            print(f"{self.desc} n={c.num_clients} m={c.num_malicious}: accuracy {acc:.3f} after {c.rounds} "
                  f"rounds ({time.perf_counter() - self.started:.0f} s)", file=sys.stderr, flush=True)
        if STOP.is_set():
            if self.bar is not None:
                self.bar.close()
            raise RunInterrupted(f"stopped after round {server_round} of {self.cell.cell_id()}")
        return loss, {"accuracy": acc, **extra}


def make_strategy(cell: RunConfig, device: str = "cpu"):
    """The flwr-byz Message-API strategy a cell names (``detox-<rule>`` or a rule name); the
    cell's ``strategy_params`` are the rule's, except the strategy's own options (``pre``,
    ``crfl``, ``weighting``, ``weight_cap``: :func:`~flwr_byz.strategies.options.split_strategy_params`); a rule with its own randomness gets the cell's seed unless the
    parameters give one. ``device``: where the rule computes (the strategies' ``device``)."""
    from .. import strategies
    from ..aggregation import REGISTRY
    from ..strategies.options import server_update_for, split_strategy_params

    params, options = split_strategy_params(cell.strategy_params)  # pre, crfl, reputation, the weight policy
    server_update_for(cell.strategy.removeprefix("detox-"), options, dataset=cell.dataset, data_root=cell.data_root,
                      model=cell.model, seed=cell.seed,
                      training=dict(lr=cell.lr, momentum=cell.momentum, batch_size=cell.batch_size,
                                    local_epochs=cell.local_epochs, local_steps=cell.local_steps))
    common = dict(num_malicious_nodes=cell.tolerated, server_learning_rate=cell.server_lr,
                  server_momentum=cell.server_momentum, fraction_train=1.0, fraction_evaluate=0.0,
                  min_train_nodes=cell.num_clients, min_available_nodes=cell.num_clients, device=device, **options)
    flwr_logger = logging.getLogger("flwr")
    flwr_logger.addFilter(_NO_FEDERATED_EVALUATION_NOTE)  # the harness evaluates on the server, by design
    rule = cell.strategy.removeprefix("detox-")
    if "seed" in REGISTRY[rule].params:  # a randomised rule (DnC, SignGuard) draws per (seed, round)
        own = params.setdefault("a1_params", {}) if rule != cell.strategy else params
        if own.get("seed") is None:
            own["seed"] = cell.seed
    try:
        if cell.strategy.startswith("detox-"):
            return strategies.Detox(a1=rule, **params, **common)
        return strategies.RobustFedAvg(rule=cell.strategy, rule_params=params, **common)
    finally:
        flwr_logger.removeFilter(_NO_FEDERATED_EVALUATION_NOTE)


class _DropFederatedEvaluationNote(logging.Filter):
    """Flower's FedAvg warns that fraction_evaluate = 0 skips federated evaluation; the
    simulation harness evaluates centrally every round, so the note would only be noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith("fraction_evaluate is set to 0.0")


_NO_FEDERATED_EVALUATION_NOTE = _DropFederatedEvaluationNote()


def _group_main(cells, key, writer: ResultsWriter, progress, collusion_dir: str | None = None,
                server_device: str = "cpu"):
    """The ServerApp main of one data group: every cell in turn, on the same Grid, through
    the Message-API strategy's own ``start`` (Flower's round loop)."""
    from flwr.app import ArrayRecord, ConfigRecord, MetricRecord

    from ..models import get_weights

    def main(grid, context):
        for cell in cells:
            if progress is not None:
                progress.next_cell()
            record = CellRecorder(cell, key, writer, progress)
            strategy = make_strategy(cell, server_device)

            def evaluate_fn(server_round, arrays, record=record, strategy=strategy):
                hist = strategy.history
                _, metrics = record(server_round, arrays.to_numpy_ndarrays(), hist[-1] if server_round > 0 and hist else {})
                return MetricRecord(metrics)

            config = fit_config(cell, collusion_dir)(0)
            config.pop("server-round")  # Flower's strategy sets it each round
            strategy.start(grid=grid, initial_arrays=ArrayRecord(get_weights(record.model)), num_rounds=cell.rounds,
                           train_config=ConfigRecord(config), evaluate_fn=evaluate_fn)

    return main


def run_cell_inprocess(cell: RunConfig, writer: ResultsWriter, progress, collusion_dir: str | None = None,
                       server_device: str = "cpu") -> None:
    """The same round as the Simulation Engine's, in this process, without Ray or messages.

    Clients (honest and malicious, with the same collusion) are called one after another and
    their replies go through the strategy's own round object (checks, f bound, rule, server
    momentum, history), so results match the engine's up to client scheduling. A client that
    raises is left out of its round with a warning, as Flower's engines treat a failed
    client (say an attacker whose statistics are not finite once the model has diverged). For quick
    research sweeps and the long reproductions on a laptop.
    """
    from ..aggregation.detox import detox_assignment
    from ..models import get_weights
    from ..strategies.robust_round import client_facts

    key = cell.data_key()
    record = CellRecorder(cell, key, writer, progress, engine="inprocess")
    weights = get_weights(record.model)
    strategy = make_strategy(cell, server_device)
    record(0, weights, {})
    on_fit_config = fit_config(cell, collusion_dir)
    for server_round in range(1, cell.rounds + 1):
        base = on_fit_config(server_round)
        configs = {pid: dict(base) for pid in range(cell.num_clients)}
        groups = None
        if cell.strategy.startswith("detox-"):
            plan = detox_assignment(list(configs), strategy.group_size, strategy.seed, server_round)
            configs = {pid: {**base, **extra} for pid, extra in plan.configs.items()}
            groups = plan.groups
        entries, sizes, facts = [], {}, {}
        for pid, config in configs.items():
            try:
                new, num_examples, metrics = scenario_fit(key, pid, [w.copy() for w in weights], config)
            except Exception as exc:  # as in Flower's engines: a failed client is a failure, not the run's end
                LOG.warning("round %s: client %s failed (%s: %s); the round goes on without it", server_round, pid,
                            type(exc).__name__, exc)
                continue
            entries.append((pid, new, None))
            sizes[pid], facts[pid] = num_examples, client_facts(metrics)
        new_weights, _, _ = strategy.robust.run(server_round, weights, None, entries, sizes, facts, groups=groups)
        if new_weights is not None:
            weights = new_weights
        record(server_round, weights, strategy.history[-1])


class _Progress:
    """A tqdm factory that also knows which cell of the run is being drawn: ``position`` is
    (k, total), advanced by :meth:`next_cell` as each cell starts."""

    def __init__(self, tqdm, total: int):
        self.tqdm, self.total, self.done = tqdm, total, 0
        self.position = None

    def next_cell(self) -> None:
        self.done += 1
        self.position = (self.done, self.total)

    def __call__(self, **kwargs):
        return self.tqdm(disable=None, **kwargs)


def client_resources(client_cpus: float = 1.0, client_gpus: float | None = None) -> dict:
    """Flower's ``client_resources`` for the Simulation Engine's client actors.

    ``client_gpus``: the fraction of a GPU each client actor reserves (Flower's
    ``num_gpus``; 0.25 lets four clients share one GPU). None (the default) uses the GPUs
    when torch sees one: the CPU-bound number of parallel actors (cores / ``client_cpus``)
    share them, so Ray runs as many clients at once as without GPUs; 0 without a GPU.
    Ray hides the GPUs from an actor that reserves none, so 0 means CPU training.
    """
    for name, value in (("client CPUs", client_cpus), ("client GPUs", client_gpus)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(float(client_cpus)) and float(client_cpus) > 0):
        raise ValueError(f"client CPUs must be a finite number > 0, got {client_cpus!r}")
    if client_gpus is None:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        client_gpus = min(1.0, gpus * float(client_cpus) / max(os.cpu_count() or 1, 1)) if gpus else 0.0
    if not (0.0 <= float(client_gpus) and math.isfinite(float(client_gpus))):
        raise ValueError(f"client GPUs must be a finite fraction >= 0, got {client_gpus!r}")
    if float(client_gpus) > 1 and float(client_gpus) != int(client_gpus):
        raise ValueError(f"client GPUs above 1 must be whole GPUs (Ray's rule), got {client_gpus!r}")
    return {"num_cpus": float(client_cpus), "num_gpus": float(client_gpus)}


def run_cells(cells: list[RunConfig], out_dir: str | os.PathLike, *, progress: bool = True,
              client_cpus: float = 1.0, quiet: bool = True, engine: str = "simulation",
              client_gpus: float | None = None, server_device: str = "cpu") -> list[dict]:
    """Run every unfinished cell; returns the rows of ``results.jsonl`` (all cells).

    ``engine="simulation"`` (default): Flower's Simulation Engine, one ``run_simulation`` per
    data group, its client actors reserving :func:`client_resources` (``client_gpus``: a
    GPU fraction per client, by default a share of the GPUs torch sees).
    ``engine="inprocess"``: :func:`run_cell_inprocess`, no Ray (clients train on the GPU
    when there is one). ``server_device``: where the rule computes (``"cpu"``, ``"cuda"``,
    ``"auto"``; the strategies' ``device``). The colluding
    clients share the round's honest updates in a store of this run alone (a private temp
    folder, mode 0700, removed at the end), never another run's.
    """
    if engine not in ("simulation", "inprocess"):
        raise ValueError(f"unknown engine {engine!r}; choose 'simulation' or 'inprocess'")
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from ..aggregation.backend import resolve_device

    resolve_device(server_device)  # a CUDA device that is not there fails before any cell
    resources = client_resources(client_cpus, client_gpus)
    writer = ResultsWriter(out_dir)
    done = writer.finished()
    todo = [c for c in cells if c.cell_id() not in done]
    groups: "OrderedDict[tuple, list[RunConfig]]" = OrderedDict()
    for c in todo:
        groups.setdefault(c.data_key(), []).append(c)
    bar_factory = None
    if progress:
        from tqdm.auto import tqdm

        bar_factory = _Progress(tqdm, len(todo))  # no bars when not on a terminal (CI logs)
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    flwr_logger = logging.getLogger("flwr")
    old_level = flwr_logger.level
    if quiet:
        flwr_logger.setLevel(logging.WARNING)
    collusion_dir = tempfile.mkdtemp(prefix="flwr-byz-collusion-")  # 0700, this run's alone
    try:
        for key, group in groups.items():
            if engine == "inprocess":
                for cell in group:
                    if bar_factory is not None:
                        bar_factory.next_cell()
                    run_cell_inprocess(cell, writer, bar_factory, collusion_dir, server_device)
                continue
            from .reaper import start_reaper

            start_reaper()  # Ray's agents outlive a killed run: the watchdog stops them
            server = ServerApp()
            server.main()(_group_main(group, key, writer, bar_factory, collusion_dir, server_device))  # Message API
            try:
                run_simulation(server_app=server, client_app=make_client_app(key), num_supernodes=key[3],
                               backend_config={"client_resources": resources},
                               verbose_logging=False)
            except Exception as err:  # the ServerApp thread's RunInterrupted comes back wrapped
                if STOP.is_set():
                    raise RunInterrupted(str(err)) from err
                raise
            if STOP.is_set():
                raise RunInterrupted("stopped")
    finally:
        flwr_logger.setLevel(old_level)
        shutil.rmtree(collusion_dir, ignore_errors=True)
    return writer.rows()


def attack_label(row: dict) -> str:
    """The attack of a results row, with its parameters when it has any: ``alie(z=1.5)``."""
    params = row.get("cfg_attack_params") or {}
    if isinstance(params, str):  # the Flower App stores the run config's JSON text
        try:
            params = json.loads(params or "{}")
        except json.JSONDecodeError:
            params = {"params": params}
        params = params if isinstance(params, dict) else {"params": params}
    inner = ",".join(f"{k}={v}" for k, v in sorted(params.items()))
    label = f"{row['cfg_attack']}({inner})" if inner else row["cfg_attack"]
    if row.get("cfg_attack_rounds") is not None:
        label += f" [rounds 1-{row['cfg_attack_rounds']}]"
    return label


TAIL_ROUNDS = 20


def _setting(row: dict) -> str:
    """A short hash of a run's configuration without its seed: the runs of one experiment
    cell over several seeds share it (:func:`flwr_byz.simulations.report.over_seeds`)."""
    import hashlib

    config = {k: row[k] for k in sorted(row) if k.startswith("cfg_") and k != "cfg_seed"}
    return hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:10]


def defense_label(row: dict) -> str:
    """The defense a results row ran: its strategy plus the strategy options that change
    what it does (``"multi_krum + reputation"``, ``"median + bucketing"``, ``"mean + crfl"``),
    so that tables and summaries do not show two different defenses under one name."""
    params = row.get("cfg_strategy_params") or {}
    if isinstance(params, str):
        try:
            params = json.loads(params or "{}")
        except json.JSONDecodeError:
            params = {}
    extras = [str(p.get("kind")) for p in params.get("pre", []) if isinstance(p, dict)] if isinstance(
        params.get("pre"), list) else []
    extras += [k for k in ("crfl", "reputation") if params.get(k) is not None]
    return " + ".join([str(row["cfg_strategy"]), *extras])


LIFESPAN_ASR = 0.5  # a backdoor "lives" while its ASR is at least this (Neurotoxin's durability)


def backdoor_lifespan(rows: list[dict], attack_rounds: int | None) -> dict:
    """For a backdoor cell with an attack window (rounds 1..``attack_rounds``): the ASR at
    the window's last round (``attack_end_asr``) and ``asr_lifespan``, the number of rounds
    after it during which the ASR stays at or above :data:`LIFESPAN_ASR` without a break
    (Zhang et al., "Neurotoxin", ICML 2022, measure durability this way). A backdoor still
    alive at the run's last round has the rounds that were left (the run was too short to
    see it die); ``asr_lifespan_censored`` says so. Empty for other cells."""
    if not attack_rounds:
        return {}
    asr = {r["round"]: r.get("asr") for r in rows if r.get("asr") is not None}
    if attack_rounds not in asr:
        return {}
    after = [k for k in sorted(asr) if k > attack_rounds]
    alive = 0
    for k in after:
        if asr[k] < LIFESPAN_ASR:
            break
        alive += 1
    return {"attack_end_asr": asr[attack_rounds], "asr_lifespan": alive,
            "asr_lifespan_censored": alive == len(after)}


def summarize(rows: list[dict], cells: list[RunConfig] | None = None) -> list[dict]:
    """One summary per finished cell of its latest attempt: final and best accuracy, and
    ``tail_accuracy``, the mean over the last :data:`TAIL_ROUNDS` evaluated rounds (under
    ALIE the accuracy swings by tens of points from round to round: the last round alone is
    a noisy verdict)."""
    by_cell: dict[str, list[dict]] = {}
    for r in rows:
        by_cell.setdefault(r["cell"], []).append(r)
    wanted = None if cells is None else {c.cell_id() for c in cells}
    out = []
    for cid, rs in by_cell.items():
        if wanted is not None and cid not in wanted:
            continue
        finals = [r for r in rs if r.get("final")]
        if not finals:
            continue
        attempt = finals[-1]["attempt"]
        rs = sorted((r for r in rs if r["attempt"] == attempt), key=lambda r: r["round"])
        last = rs[-1]
        agg = [r["aggregation_time_s"] for r in rs if r.get("aggregation_time_s") is not None]
        prov = next((r["provenance"] for r in rs if r["round"] == 0 and "provenance" in r), {})
        out.append({
            "cell": cid, "strategy": defense_label(last), "attack": attack_label(last),
            "num_clients": last["cfg_num_clients"], "num_malicious": last["cfg_num_malicious"],
            "dataset": last["cfg_dataset"], "rounds": last["round"], "final_accuracy": last["accuracy"],
            "best_accuracy": max(r["accuracy"] for r in rs),
            "tail_accuracy": float(np.mean([r["accuracy"] for r in rs if r["round"] > 0][-TAIL_ROUNDS:] or [last["accuracy"]])),
            "final_asr": last.get("asr"),
            **backdoor_lifespan(rs, last.get("cfg_attack_rounds")),
            "mean_aggregation_time_s": float(np.mean(agg)) if agg else None,
            "mean_round_time_s": float(np.mean([r["round_time_s"] for r in rs if r["round"] > 0])),
            "skipped_rounds": sum(1 for r in rs if r["round"] > 0 and r.get("skipped")),
            "seed": last.get("cfg_seed"), "partitioning": last.get("cfg_partitioning"),
            "setting": _setting(last), "engine": prov.get("engine"), "code_version": prov.get("code_version"),
            "flwr": prov.get("flwr"), "torch": prov.get("torch"), "numpy": prov.get("numpy"),
            "threads": prov.get("threads"), "environment": prov.get("environment"), "command": prov.get("command"),
        })
    return out
