"""One robust aggregation round, shared by the Message-API and the legacy strategies.

Both Flower APIs hand over the same things: the global arrays the round started from and
the clients' replies. This module turns them into the update matrix, drops bad replies with
a log line naming the client, checks the rule's f bound on what is left, runs the rule, and
returns the new global arrays plus the round's metrics. It never raises on a client's
reply: a round that cannot be aggregated is skipped (``None``) with a clear log line and
the global model is kept.
"""

from __future__ import annotations


import time
from collections import Counter
from logging import ERROR, INFO, WARNING

import numpy as np
from flwr.common.logger import log

from ..aggregation import REGISTRY, RobustAggregator
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
    """

    def __init__(self, aggregator: RobustAggregator, *, trim_fraction: float | None = None,
                 use_history_center: bool = False, server_learning_rate: float = 1.0,
                 server_momentum: float = 0.0, weighting: str | None = None, weight_cap: float = 2.0,
                 parameter_smoothing=None):
        self.aggregator = aggregator
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
        w = policy_weights([reported[c] for c in kept], self.weighting, self.weight_cap)
        try:
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
        log(INFO, "[flwr-byz] round %s: %s aggregated %d of %d replies in %.3f s%s", server_round,
            self.aggregator.rule, len(kept), len(replies), elapsed,
            f"; selected clients {entry['selected']}" if entry["selected"] is not None else "")
        return new_arrays, metrics, kept

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
                      parameter_smoothing=None) -> None:
        self.robust = RobustRound(
            RobustAggregator(rule, f=f, pre=pre, **(rule_params or {})),
            trim_fraction=self._trim_fraction, use_history_center=self._history_center,
            server_learning_rate=server_learning_rate, server_momentum=server_momentum,
            weighting=weighting, weight_cap=weight_cap, parameter_smoothing=parameter_smoothing,
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

        self.robust.aggregator = DetoxAggregator(group_size=group_size, f=f, **options)
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

    @property
    def history(self) -> list[dict]:
        """Per-round reports (client ids, dropped replies and reasons, selection, timings)."""
        return self.robust.history

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.robust.aggregator!r})"
