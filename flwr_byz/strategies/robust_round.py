"""One robust aggregation round, shared by the Message-API and the legacy strategies.

Both Flower APIs hand over the same things: the global arrays the round started from and
the clients' replies. This module turns them into the update matrix, drops bad replies with
a log line naming the client, checks the rule's f bound on what is left, runs the rule, and
returns the new global arrays plus the round's metrics. It never raises on a client's
reply: a round that cannot be aggregated is skipped (``None``) with a clear log line and
the global model is kept.
"""

from __future__ import annotations


import json
import time
from collections import Counter
from logging import ERROR, INFO, WARNING

import numpy as np
from flwr.common.logger import log

from ..aggregation import REGISTRY, RobustAggregator
from ..aggregation.backend import resolve_device, to_numpy
from ..updates import WEIGHTINGS, ModelLayout, apply_update, nonfinite_arrays, policy_weights, read_weight, stack_updates


def client_facts(metrics) -> dict:
    """The reply metrics kept per client in the history: ``partition-id`` and ``attack.*``
    (what simulated attackers report about themselves: known only in simulation)."""
    try:
        items = dict(metrics or {}).items()
    except (TypeError, ValueError):  # whatever a client sent as metrics
        return {}
    return {str(k): v for k, v in items if isinstance(v, (int, float, str)) and is_client_fact(k)}


def is_client_fact(key) -> bool:
    """A per-client fact (kept per client in the history), not a metric to average."""
    return key == "partition-id" or str(key).startswith("attack.")


def without_client_facts(metrics) -> dict:
    """The reply metrics minus the per-client facts (averaging partition ids or attack flags
    over clients gives numbers that mean nothing, e.g. ``partition-id: 4.49``)."""
    return {k: v for k, v in dict(metrics or {}).items() if not is_client_fact(k)}


class RobustRound:
    """The aggregation state of one strategy: the rule, the history of round reports.

    Attributes:
        aggregator: the :class:`~flwr_byz.aggregation.RobustAggregator` applied each round.
        history: one JSON-serialisable dict per aggregated (or skipped) round, with client
            ids: replies, dropped (id -> reason), selected ids, scores, timings.
        trim_fraction: when set, f is recomputed each round as int(trim_fraction * n)
            (Flower's ``FedTrimmedAvg(beta=...)`` semantics).
        use_history_center: pass the previous round's aggregate update as ``center``
            (centered clipping, MoNNA's pivot).
        norm_history: the norms of every update aggregated so far, passed as ``history`` to
            a rule that takes it (ClippedClustering's clipping threshold).
        server_learning_rate, server_momentum: the global model moves by
            ``server_learning_rate * v`` with ``v <- server_momentum * v + aggregate``
            (FedAvgM's server momentum, Hsu et al. 2019; the ALIE paper's server uses 0.9).
            Defaults (1, 0) apply the aggregate as it is.
        parameter_smoothing: a :class:`~flwr_byz.aggregation.crfl.ParameterSmoothing` (CRFL)
            applied to every new global model, or None.
        weighting, weight_cap: the weight policy (:func:`flwr_byz.updates.policy_weights`):
            what the reported numbers of examples may do. Default: ``"raw"`` for the plain
            mean (FedAvg), ``"uniform"`` for every robust rule.
        server_update_fn: ``fn(arrays) -> arrays``, the global model trained by the server
            on its root dataset (FLTrust's anchor; required by a rule taking
            ``server_update``); called once per round on a copy of the global arrays.
        reputation: a :class:`~flwr_byz.aggregation.reputation.Reputation` layer over the
            rule, or None.
        device: where the rule runs: ``"cpu"`` (NumPy, the default), ``"cuda"`` /
            ``"cuda:N"`` (torch on that GPU: the stacked update matrix is copied there once
            per round and the aggregate comes back; the rules marked native in the rule
            table compute there, the others on the host), or ``"auto"`` (CUDA when torch
            sees a GPU). ``ValueError`` at construction for CUDA without a GPU.
        client_sums: client id -> the sum of all its updates so far (kept for a rule taking
            ``client_history``: FoolsGold). Client ids are the server's (node ids in the
            Message API, ``ClientProxy.cid`` in the legacy API), never what a client claims.
    """

    def __init__(self, aggregator: RobustAggregator, *, trim_fraction: float | None = None,
                 use_history_center: bool = False, server_learning_rate: float = 1.0,
                 server_momentum: float = 0.0, weighting: str | None = None, weight_cap: float = 2.0,
                 parameter_smoothing=None, server_update_fn=None, reputation=None, device: str = "cpu"):
        self.aggregator = aggregator
        self.device = resolve_device(device)  # None: NumPy on the CPU
        self.parameter_smoothing = parameter_smoothing
        self.trim_fraction = trim_fraction
        self.use_history_center = use_history_center
        self.server_learning_rate, self.server_momentum = float(server_learning_rate), float(server_momentum)
        if not np.isfinite(self.server_learning_rate) or not np.isfinite(self.server_momentum):
            raise ValueError(f"server_learning_rate and server_momentum must be finite, got "
                             f"{server_learning_rate!r} and {server_momentum!r}")
        if weighting is None:
            weighting = "raw" if getattr(aggregator, "rule", None) == "mean" and aggregator.f == 0 else "uniform"
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; choose from {WEIGHTINGS}")
        if not (isinstance(weight_cap, (int, float)) and np.isfinite(weight_cap) and weight_cap >= 1):
            raise ValueError(f"weight_cap must be a finite number >= 1, got {weight_cap!r}")
        if weighting == "raw" and getattr(aggregator, "f", 0) > 0:
            log(WARNING, "[flwr-byz] weighting='raw' with f=%s: a client reporting a huge number of examples "
                "can capture %s (its f bound assumes equal weights)", aggregator.f, aggregator.rule)
        self.weighting, self.weight_cap = weighting, float(weight_cap)
        self.velocity: np.ndarray | None = None
        self.history: list[dict] = []
        self.last_update: np.ndarray | None = None
        # a rule whose state is the norms of all earlier updates (ClippedClustering)
        spec = REGISTRY.get(getattr(aggregator, "rule", None))
        self.keeps_norm_history = spec is not None and spec.keeps_norm_history
        self.norm_history: list[np.ndarray] = []
        self.round_inputs = spec.round_inputs if spec is not None else ()
        if "server_update" in self.round_inputs and server_update_fn is None:
            raise ValueError(f"{aggregator.rule} needs the server's own update each round: pass server_update_fn="
                             f"fn(arrays) -> arrays (the global model trained on the server's root dataset; "
                             f"flwr_byz.clients.root.RootUpdate builds one)")
        if server_update_fn is not None and not callable(server_update_fn):
            raise ValueError(f"server_update_fn must be callable, got {type(server_update_fn).__name__}")
        if "client_history" in self.round_inputs and any(p.kind == "bucketing" for p in aggregator.pre):
            raise ValueError(f"{aggregator.rule} keeps a history per client: bucketing (which mixes clients "
                             f"into buckets) cannot come before it")
        if reputation is not None and reputation.mode == "weight" and not (spec is not None and spec.weighted):
            raise ValueError(f"Reputation(mode='weight') needs a rule that takes weights; {aggregator.rule} "
                             f"ignores them (use mode='exclude')")
        self.server_update_fn, self.reputation = server_update_fn, reputation
        self.client_sums: dict = {}

    def _screen(self, replies, weights: dict):
        """Per-reply checks that need no model: one reply per id, a valid weight.
        Returns ``(readable, reported_weights, dropped)``."""
        counts = Counter(cid for cid, _, _ in replies)
        dropped, readable, reported = {}, [], {}
        for cid, arrays, names in replies:
            if counts[cid] > 1:
                dropped[cid] = f"{counts[cid]} replies under one client id (none of them is used)"
            elif arrays is None:
                dropped[cid] = names  # the reason
            else:
                try:
                    reported[cid] = read_weight(weights.get(cid, 1))
                except ValueError as err:
                    dropped[cid] = str(err)
                    continue
                readable.append((cid, arrays, names))
        return readable, reported, dropped

    def run(self, server_round: int, global_arrays, names, replies, weights: dict, extra: dict | None = None,
            groups: list[list] | None = None):
        """Aggregate one round. Never raises on what the clients sent.

        Args:
            server_round: the round number (for logs and the per-round bucketing shuffle).
            global_arrays: the arrays every client started from.
            names: their names (ArrayRecord keys) or None.
            replies: [(client_id, arrays, names_or_None), ...] of the replies that arrived;
                replies that could not be read at all are passed as ``(id, None, reason)``.
            weights: client_id -> the number of examples as reported (checked here; 1 when
                absent: the adapters drop a Message-API reply that lacks it).
            extra: client_id -> dict of per-client facts to keep in the history.
            groups: DETOX groups of client ids (mapped here to rows of the kept replies).

        Returns ``(new_arrays or None, metrics dict, kept_ids)``: None when the round is
        skipped (too few usable replies for the f bound, the rule failed, or the new global
        model would not be finite); the global model and the server momentum are then kept.
        """
        t0 = time.perf_counter()
        layout = ModelLayout.of(list(global_arrays), names)
        readable, reported, dropped = self._screen(replies, weights)
        X, kept, bad = stack_updates(layout, list(global_arrays), readable)
        dropped.update(bad)
        H = None
        if "client_history" in self.round_inputs:
            X, kept, H, overflow = self._histories(X, kept)
            dropped.update(overflow)
        for cid, reason in dropped.items():
            log(WARNING, "[flwr-byz] round %s: dropped the reply of client %s: %s", server_round, cid, reason)
        entry = {
            "round": int(server_round),
            "rule": self.aggregator.rule,
            "replies": len(replies),
            "kept": [str(c) for c in kept],
            "dropped": {str(c): r for c, r in dropped.items()},
            "selected": None,
            "skipped": None,
        }
        if extra:
            entry["clients"] = {str(c): v for c, v in extra.items()}
        metrics = {"byz.replies": len(replies), "byz.dropped": len(dropped), "byz.kept": len(kept)}
        call = {}
        if self.trim_fraction is not None:
            call["f"] = int(self.trim_fraction * len(kept))
        f = call.get("f", self.aggregator.f)
        need = self.aggregator.minimum_clients() if "f" not in call else 2 * f + 1
        seen = list(kept)
        if self.reputation is not None:
            kept, excluded = self.reputation.split(kept, need)
            if excluded:
                row = {c: i for i, c in enumerate(seen)}
                X = X[[row[c] for c in kept]]
                H = None if H is None else H[[row[c] for c in kept]]
                entry["kept"] = [str(c) for c in kept]
                entry["excluded"] = [str(c) for c in excluded]
                metrics["byz.excluded"] = len(excluded)
                metrics["byz.kept"] = len(kept)
                log(INFO, "[flwr-byz] round %s: reputation below %s excludes clients %s", server_round,
                    self.reputation.threshold, entry["excluded"])
            entry["reputation"] = {str(c): self.reputation.score(c) for c in seen}
        if len(kept) == 0 or len(kept) < need:
            return self._skip(entry, metrics, server_round,
                              f"{len(kept)} usable replies, but {self.aggregator.rule} needs at least "
                              f"{need} to tolerate f={f}; keeping the global model", t0)
        if groups is not None:
            row = {c: i for i, c in enumerate(kept)}
            call["groups"] = [[row[c] for c in g if c in row] for g in groups]
            entry["groups"] = [[str(c) for c in g] for g in groups]
        if self.use_history_center and self.last_update is not None and self.last_update.shape == (X.shape[1],):
            call["center"] = self.last_update.astype(X.dtype, copy=False)
        if self.keeps_norm_history:
            call["history"] = np.concatenate(self.norm_history) if self.norm_history else None
        try:
            call.update(self._round_inputs(layout, global_arrays, X))
            if H is not None:
                call["client_history"] = H
        except Exception as err:  # the user's server update failed or returned a bad model
            return self._skip(entry, metrics, server_round, f"the server update failed ({type(err).__name__}: {err})",
                              t0)
        if "server_update_time_s" in call:
            entry["server_update_time_s"] = call.pop("server_update_time_s")
        w = policy_weights([reported[c] for c in kept], self.weighting, self.weight_cap)
        if self.reputation is not None and self.reputation.mode == "weight":
            w = (np.ones(len(kept)) if w is None else w) * np.asarray(self.reputation.weights(kept))
            w = w if w.max() > 0 else None
        try:
            if self.device is not None:  # one copy of the matrix to the device, the aggregate back
                import torch

                agg, report = self.aggregator(torch.from_numpy(X).to(self.device), weights=w,
                                              server_round=server_round, **call)
                agg = to_numpy(agg)
            else:
                agg, report = self.aggregator(X, weights=w, server_round=server_round, **call)
        except Exception as err:  # the server must survive whatever the replies were
            log(ERROR, "[flwr-byz] round %s: %s failed (%s: %s)", server_round, self.aggregator.rule,
                type(err).__name__, err)
            return self._skip(entry, metrics, server_round, f"{type(err).__name__}: {err}", t0)
        for note in report.details.get("notes", []):
            log(WARNING, "[flwr-byz] round %s: %s", server_round, note)
        step = velocity = agg
        if self.server_momentum:
            same = self.velocity is not None and self.velocity.shape == agg.shape
            with np.errstate(over="ignore", invalid="ignore"):
                velocity = (self.server_momentum * self.velocity.astype(agg.dtype) + agg) if same else agg.copy()
            step = velocity
        if self.server_learning_rate != 1.0:
            with np.errstate(over="ignore", invalid="ignore"):
                step = self.server_learning_rate * step
        new_arrays = apply_update(layout, global_arrays, step)
        if self.parameter_smoothing is not None:  # CRFL: clip and perturb the new global model
            new_arrays, smoothing = self.parameter_smoothing.apply(new_arrays, server_round)
            report.details.update(smoothing)
        broken = nonfinite_arrays(layout, new_arrays)
        if broken or not np.isfinite(step).all():
            return self._skip(entry, metrics, server_round,
                              f"the new global model would not be finite or would not fit its dtype "
                              f"(arrays {broken[:5]}); keeping the global model and the server momentum", t0)
        self.last_update = agg
        if self.keeps_norm_history and isinstance(report.details.get("norms"), np.ndarray):
            self.norm_history.append(report.details["norms"])
        if H is not None:
            self.client_sums.update((c, H[r].copy()) for r, c in enumerate(kept))
        if self.reputation is not None:
            judged = report.selected is not None and "pre" not in report.details
            self.reputation.observe(kept if judged else [], {kept[i] for i in report.selected} if judged else set())
        if self.server_momentum:
            self.velocity = velocity
        elapsed = time.perf_counter() - t0
        if report.selected is not None and "pre" not in report.details:
            entry["selected"] = [str(kept[i]) for i in report.selected]
        if report.scores is not None and len(report.scores) == len(kept):
            entry["scores"] = {str(c): float(s) for c, s in zip(kept, report.scores)}
        entry["details"] = {k: v for k, v in report.details.items() if isinstance(v, (int, float, str, list))}
        entry["weighting"] = self.weighting
        entry["aggregation_time_s"] = elapsed
        metrics.update({k: v for k, v in report.to_metrics("byz.").items() if not isinstance(v, list)})
        if entry["selected"] is not None:
            metrics["byz.selected"] = len(entry["selected"])
        metrics["byz.aggregation-time"] = elapsed
        self.history.append(entry)
        selected = ""
        if entry["selected"] is not None:
            selected = f"; selected clients {entry['selected']}"
            # the partitions they reported (simulation), so a reader can tell which data was kept
            chosen = set(entry["selected"])
            pids = [(extra or {}).get(c, {}).get("partition-id") for c in kept if str(c) in chosen]
            if pids and all(p is not None for p in pids):
                selected += f" (partitions {sorted(pids)})"
        log(INFO, "[flwr-byz] round %s: %s aggregated %d of %d replies in %.3f s%s", server_round,
            self.aggregator.rule, len(kept), len(replies), elapsed, selected)
        return new_arrays, metrics, kept

    def _histories(self, X: np.ndarray, kept: list):
        """FoolsGold's per-client histories: each client's earlier sum plus this update.
        Returns ``(X, kept, H, dropped)``: a client whose sum would overflow the matrix's
        dtype (huge updates, round after round) is dropped for the round, its sum left as
        it was, so it cannot make every later round fail."""
        H = X.copy()
        for r, c in enumerate(kept):
            past = self.client_sums.get(c)
            if past is not None and past.shape == H[r].shape:
                with np.errstate(over="ignore", invalid="ignore"):
                    H[r] += past
        bad = [r for r in range(len(kept)) if not np.isfinite(H[r]).all()]
        if not bad:
            return X, kept, H, {}
        dropped = {kept[r]: f"its sum of updates over the rounds overflows {X.dtype}" for r in bad}
        keep = [r for r in range(len(kept)) if r not in set(bad)]
        return X[keep], [kept[r] for r in keep], H[keep], dropped

    def _round_inputs(self, layout: ModelLayout, global_arrays, X: np.ndarray) -> dict:
        """FLTrust's server update (from ``server_update_fn``, checked like a reply: names,
        shapes, dtypes, finite) and FLAME's flattened global model, for a rule that takes
        them (``spec.round_inputs``)."""
        out: dict = {}
        if "server_update" in self.round_inputs:
            t = time.perf_counter()
            trained = self.server_update_fn([np.array(a, copy=True) for a in global_arrays])
            arrays = layout.read(list(trained))
            out["server_update"] = layout.delta(arrays, global_arrays, out=np.empty(layout.dim, X.dtype))
            if not np.isfinite(out["server_update"]).all():
                raise ValueError(f"the server's update overflows {X.dtype}")
            out["server_update_time_s"] = time.perf_counter() - t
        if "global_model" in self.round_inputs:
            out["global_model"] = layout.flatten(global_arrays, out=np.empty(layout.dim, X.dtype))
        return out

    def state(self) -> tuple[dict, dict]:
        """What a resumed run needs: ``(arrays, meta)`` with the previous aggregate, the
        server momentum, the norm history, each client's update sum (arrays) and the
        reputation evidence and the round reports (``meta``, JSON data). Client ids keep
        their type (Flower's node ids are ints, legacy ``cid``s strings)."""
        arrays = {}
        if self.last_update is not None:
            arrays["last_update"] = self.last_update
        if self.velocity is not None:
            arrays["velocity"] = self.velocity
        for k, norms in enumerate(self.norm_history):
            arrays[f"norm_history_{k}"] = norms
        ids = list(self.client_sums)
        for k, cid in enumerate(ids):
            arrays[f"client_sum_{k}"] = self.client_sums[cid]
        meta = {"format": 1, "rule": self.aggregator.rule, "client_sum_ids": ids, "norm_history": len(self.norm_history),
                "reputation": self.reputation.state() if self.reputation is not None else None,
                "history": self.history}
        return arrays, meta

    def load_state(self, arrays: dict, meta: dict) -> None:
        """Restore :meth:`state`'s output (``ValueError`` when it was saved for another rule)."""
        if meta.get("format") != 1 or meta.get("rule") != self.aggregator.rule:
            raise ValueError(f"the saved state is for rule {meta.get('rule')!r} (format {meta.get('format')}), "
                             f"not {self.aggregator.rule!r}")
        self.last_update = arrays.get("last_update")
        self.velocity = arrays.get("velocity")
        self.norm_history = [arrays[f"norm_history_{k}"] for k in range(int(meta["norm_history"]))]
        self.client_sums = {cid: arrays[f"client_sum_{k}"] for k, cid in enumerate(meta["client_sum_ids"])}
        if self.reputation is not None and meta.get("reputation") is not None:
            self.reputation.load(meta["reputation"])
        self.history = list(meta.get("history", []))

    def save(self, path) -> None:
        """Write :meth:`state` to ``path`` (one ``.npz`` file; the meta as JSON inside)."""
        arrays, meta = self.state()
        with open(path, "wb") as fh:
            np.savez(fh, **arrays, meta=np.array(json.dumps(meta, default=float)))

    def load(self, path) -> None:
        """Read a file written by :meth:`save` (no pickled objects are loaded)."""
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files if k != "meta"}
            meta = json.loads(str(data["meta"]))
        self.load_state(arrays, meta)

    def _skip(self, entry, metrics, server_round, reason, t0):
        entry["skipped"] = reason
        entry["aggregation_time_s"] = time.perf_counter() - t0
        self.history.append(entry)
        log(WARNING, "[flwr-byz] round %s skipped: %s", server_round, reason)
        metrics["byz.skipped"] = 1
        return None, metrics, []


class RobustStrategyMixin:
    """What both APIs' strategy classes share: the round object and its history.

    Subclasses set ``_trim_fraction`` (FedTrimmedAvg's beta) or ``_history_center``
    (centered clipping) as class or instance attributes before calling ``_setup_robust``.
    """

    _trim_fraction: float | None = None
    _history_center = False

    def _setup_robust(self, rule: str, f: int, pre, rule_params, server_learning_rate: float,
                      server_momentum: float, weighting: str | None = None, weight_cap: float = 2.0,
                      parameter_smoothing=None, server_update_fn=None, reputation=None, device: str = "cpu") -> None:
        self.robust = RobustRound(
            RobustAggregator(rule, f=f, pre=pre, **(rule_params or {})),
            trim_fraction=self._trim_fraction, use_history_center=self._history_center,
            server_learning_rate=server_learning_rate, server_momentum=server_momentum,
            weighting=weighting, weight_cap=weight_cap, parameter_smoothing=parameter_smoothing,
            server_update_fn=server_update_fn, reputation=reputation, device=device,
        )
        self._current = None
        self._groups = None
        self._sample_checked = False

    def _check_sample(self, sampled: int, *, f_name: str, size_names: str) -> None:
        """At the first round this strategy configures: fail with one clear message when the
        nodes sampled can never satisfy the rule's f bound (every round would be skipped).
        DETOX needs enough groups of r for its A1 at f1. Later rounds only log (a node may
        be gone for a round)."""
        if self._sample_checked:
            return
        self._sample_checked = True
        agg = self.robust.aggregator
        if self.robust.trim_fraction is not None:  # FedTrimmedAvg(beta): f follows n
            return
        if hasattr(agg, "group_size"):  # DETOX
            from ..aggregation.detox import groups_needed

            a1 = agg.options["a1"]
            groups, f1 = groups_needed(a1, agg.f, agg.group_size)
            need = agg.group_size * groups
            what = f"DETOX + {a1} needs {groups} groups of {agg.group_size} for f1={f1}"
        else:
            need = agg.minimum_clients()
            what = f"{agg.rule} needs at least {need} replies for f={agg.f}"
        if sampled < need:
            raise ValueError(f"flwr-byz: {what}, but the first round samples {sampled} nodes: raise {size_names} "
                             f"(and connect that many nodes) or lower {f_name}")

    def _setup_detox(self, *, group_size: int, f: int, seed: int, **options) -> None:
        from ..aggregation.detox import DetoxAggregator

        agg = self.robust.aggregator = DetoxAggregator(group_size=group_size, f=f, **options)
        # A1's server-side round inputs, as its own strategy would supply them
        self.robust.round_inputs = agg.round_inputs
        self.robust.use_history_center = "center" in agg.round_inputs and agg.a1_spec.stateful
        self.robust.keeps_norm_history = agg.a1_spec.keeps_norm_history
        if self.robust.weighting == "raw":  # set for the placeholder "mean"; DETOX takes no weights
            self.robust.weighting = "uniform"
        self.group_size, self.seed = int(group_size), int(seed)

    def _zeros_from_replies(self, server_round: int, entries, names):
        """For ``aggregate_*`` called without a prior ``configure_*``: zeros in the layout that
        a strict majority of the readable replies share. For a translation-equivariant rule,
        aggregating the replies' differences to zero and adding them back to zero is exactly
        the rule on the replies themselves (Flower's semantics for its own robust strategies). Returns ``(arrays, names)`` or
        ``(None, reason)`` where the rule needs the round's real global model."""
        spec = REGISTRY.get(getattr(self.robust.aggregator, "rule", ""))
        if spec is None or not spec.translation_equivariant or self._groups is not None:
            return None, f"{self.robust.aggregator.rule} needs the round's global model (call configure_* first)"
        if self.robust.server_learning_rate != 1.0 or self.robust.server_momentum:
            return None, "a server learning rate or momentum needs the round's global model (call configure_* first)"
        layouts = Counter()
        for _, arrays, reply_names in entries:
            if arrays is not None:
                try:
                    layouts[tuple((str(n), np.shape(a), np.asarray(a).dtype.str) for n, a in zip(
                        reply_names if reply_names is not None else range(len(arrays)), arrays))] += 1
                except Exception:  # an unreadable reply: it is dropped by the round anyway
                    continue
        readable = sum(layouts.values())
        if not layouts or 2 * layouts.most_common(1)[0][1] <= readable:
            return None, "no strict majority of the replies shares one model layout (call configure_* first)"
        layout = layouts.most_common(1)[0][0]
        log(INFO, "[flwr-byz] round %s: no configure_* before aggregate_*: %s on the replies themselves "
            "(translation-equivariant rule, %d of %d readable replies share the layout)", server_round,
            self.robust.aggregator.rule, layouts[layout], readable)
        zeros = [np.zeros(shape, dtype=np.dtype(dt)) for _, shape, dt in layout]
        return zeros, ([n for n, _, _ in layout] if names is not None else None)

    def save_state(self, path) -> None:
        """Save what the strategy keeps across rounds (previous aggregate, server momentum,
        norm history, per-client sums, reputation, round reports) to one ``.npz`` file, so
        that a resumed run continues it (:meth:`load_state`)."""
        self.robust.save(path)

    def load_state(self, path) -> None:
        """Continue from a file written by :meth:`save_state` (same rule)."""
        self.robust.load(path)

    @property
    def history(self) -> list[dict]:
        """Per-round reports (client ids, dropped replies and reasons, selection, timings)."""
        return self.robust.history

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.robust.aggregator!r})"
